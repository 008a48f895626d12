//! Statistics in group `tsilo` (kamcmd stats.get_statistics tsilo:). They are computed from the
//! silo's own shared counters (STAT_IS_FUNC), so the silo core needs no Kamailio counter API.

use super::silo;
use crate::sys;
use std::ffi::{CStr, c_char};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

fn read(counter: impl Fn(&crate::silo::Counters) -> &AtomicU64) -> sys::counter_val_t {
    silo().map_or(0, |s| counter(&s.counters).load(Relaxed) as sys::counter_val_t)
}

/// One `extern "C" fn() -> counter_val_t` per counter (Kamailio calls them with no argument; an
/// atomic load cannot panic), and the table of names and functions.
macro_rules! stats {
    ($($name:ident),* $(,)?) => {
        $(extern "C" fn $name() -> sys::counter_val_t {
            read(|c| &c.$name)
        })*
        /// The C module's five first, then ours.
        pub const STATS: [(&CStr, extern "C" fn() -> sys::counter_val_t); [$(stringify!($name)),*].len()] =
            [$((c_str(concat!(stringify!($name), "\0")), $name)),*];
    };
}

const fn c_str(s: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(s.as_bytes()) {
        Ok(c) => c,
        Err(_) => panic!("statistic name"),
    }
}

stats!(
    stored_ruris,
    stored_transactions,
    total_ruris,
    total_transactions,
    added_branches,
    store_rejected,
    append_not_found,
    append_canceled,
    append_answered,
    append_lookup_failed,
    append_deferred,
    append_refused,
    store_catch_up,
);

/// Registers the statistics (mod_init, before fork). Kamailio keeps the table's pointers.
pub fn register() -> bool {
    let mut table: Vec<sys::stat_export_t> = STATS
        .iter()
        .map(|&(name, f)| sys::stat_export_t {
            name: name.as_ptr() as *mut c_char,
            flags: (sys::STAT_NO_RESET | sys::STAT_IS_FUNC) as i32,
            // With STAT_IS_FUNC the core takes this field as the function to call.
            stat_pointer: f as *mut *mut sys::stat_var,
        })
        .collect();
    table.push(sys::stat_export_t { name: std::ptr::null_mut(), flags: 0, stat_pointer: std::ptr::null_mut() });
    let table = table.leak();
    // SAFETY: a NULL-terminated table that lives for the process's life.
    unsafe { sys::register_module_stats(c"tsilo".as_ptr() as *mut c_char, table.as_mut_ptr()) == 0 }
}
