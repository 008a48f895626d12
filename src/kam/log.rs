//! Kamailio's logger, at its levels, with the module prefix (`tsilo [file.rs:line]: `).
//! The level is checked before formatting, and the text is always passed as "%s": user input
//! never becomes a printf format.

use crate::sys;
use std::ffi::{CString, c_int};
use std::fmt;

pub const CRIT: c_int = sys::L_CRIT;
pub const ERR: c_int = sys::L_ERR;
pub const WARN: c_int = sys::L_WARN as c_int;
#[allow(dead_code)]
pub const INFO: c_int = sys::L_INFO as c_int;
pub const DBG: c_int = sys::L_DBG as c_int;

pub fn enabled(level: c_int) -> bool {
    // SAFETY: reads Kamailio's per-process debug level.
    unsafe { sys::tsilo_shim_log_enabled(level) != 0 }
}

pub fn emit(level: c_int, file: &str, line: u32, args: fmt::Arguments) {
    let file = file.rsplit('/').next().unwrap_or(file);
    let location = CString::new(format!("tsilo [{file}:{line}]: ")).unwrap_or_default();
    let text = CString::new(args.to_string().replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: both are valid C strings for the duration of the call; no function name is given.
    unsafe { sys::tsilo_shim_log(level, location.as_ptr(), std::ptr::null(), text.as_ptr()) };
}

macro_rules! lm_log {
    ($level:expr, $($arg:tt)*) => {
        if $crate::kam::log::enabled($level) {
            $crate::kam::log::emit($level, file!(), line!(), format_args!($($arg)*));
        }
    };
}
macro_rules! lm_crit { ($($arg:tt)*) => { lm_log!($crate::kam::log::CRIT, $($arg)*) }; }
macro_rules! lm_err { ($($arg:tt)*) => { lm_log!($crate::kam::log::ERR, $($arg)*) }; }
macro_rules! lm_warn { ($($arg:tt)*) => { lm_log!($crate::kam::log::WARN, $($arg)*) }; }
#[allow(unused_macros)]
macro_rules! lm_info { ($($arg:tt)*) => { lm_log!($crate::kam::log::INFO, $($arg)*) }; }
macro_rules! lm_dbg { ($($arg:tt)*) => { lm_log!($crate::kam::log::DBG, $($arg)*) }; }

/// At most one log line per `PERIOD_S` seconds per process for a repeated event: `due()` says
/// when to log, with how many occurrences were not logged since. A flood must not flood the log.
pub struct RateLimit {
    last: std::sync::atomic::AtomicU64,
    quiet: std::sync::atomic::AtomicU64,
}

impl RateLimit {
    const PERIOD_S: u64 = 10;

    pub const fn new() -> Self {
        RateLimit { last: std::sync::atomic::AtomicU64::new(0), quiet: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Some(count not logged since the last line) when this one is to be logged.
    pub fn due(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let last = self.last.load(Relaxed);
        if now >= last + Self::PERIOD_S && self.last.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
            Some(self.quiet.swap(0, Relaxed))
        } else {
            self.quiet.fetch_add(1, Relaxed);
            None
        }
    }
}
