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
