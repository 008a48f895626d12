//! Statistics in group `tsilo` (kamcmd stats.get_statistics tsilo:). They are computed from the
//! silo's own shared counters (STAT_IS_FUNC), so the silo core needs no Kamailio counter API.

use crate::module::silo;
use crate::kam::export::c_str;
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

/// Registers the statistics (mod_init, before fork); a core built without STATISTICS has none
/// to register (an INFO line says so; ts.stats still answers). False on an error.
pub fn register() -> bool {
    let names: Vec<*const c_char> = STATS.iter().map(|(name, _)| name.as_ptr()).collect();
    let reads: Vec<extern "C" fn() -> sys::counter_val_t> = STATS.iter().map(|&(_, f)| f).collect();
    // SAFETY: both arrays hold STATS.len() items; the names are 'static, the shim copies the rest.
    let rc = unsafe {
        sys::tsilo_shim_register_stats(c"tsilo".as_ptr(), names.as_ptr(), reads.as_ptr() as *const Option<unsafe extern "C" fn() -> sys::counter_val_t>, STATS.len() as i32)
    };
    if rc == 1 {
        lm_info!("this Kamailio was built without statistics (STATISTICS): tsilo has none; ts.stats still answers");
    }
    rc >= 0
}
