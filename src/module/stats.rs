//! Statistics in group `tsilo` (kamcmd stats.get_statistics tsilo:). They are computed from the
//! silo's own shared counters (STAT_IS_FUNC), so the silo core needs no Kamailio counter API.

use super::silo;
use crate::sys;
use std::ffi::{CStr, c_char};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

fn read(counter: impl Fn(&crate::silo::Counters) -> &AtomicU64) -> sys::counter_val_t {
    silo().map_or(0, |s| counter(&s.counters).load(Relaxed) as sys::counter_val_t)
}

// Kamailio calls these with no argument; each must not unwind (a plain atomic load cannot panic).
extern "C" fn stored_ruris() -> sys::counter_val_t {
    read(|c| &c.stored_ruris)
}
extern "C" fn stored_transactions() -> sys::counter_val_t {
    read(|c| &c.stored_transactions)
}
extern "C" fn total_ruris() -> sys::counter_val_t {
    read(|c| &c.total_ruris)
}
extern "C" fn total_transactions() -> sys::counter_val_t {
    read(|c| &c.total_transactions)
}
extern "C" fn added_branches() -> sys::counter_val_t {
    read(|c| &c.added_branches)
}

extern "C" fn store_rejected() -> sys::counter_val_t {
    read(|c| &c.store_rejected)
}
extern "C" fn append_not_found() -> sys::counter_val_t {
    read(|c| &c.append_not_found)
}
extern "C" fn append_canceled() -> sys::counter_val_t {
    read(|c| &c.append_canceled)
}
extern "C" fn append_answered() -> sys::counter_val_t {
    read(|c| &c.append_answered)
}
extern "C" fn append_lookup_failed() -> sys::counter_val_t {
    read(|c| &c.append_lookup_failed)
}

/// The C module's five, then ours.
pub const STATS: [(&CStr, extern "C" fn() -> sys::counter_val_t); 10] = [
    (c"stored_ruris", stored_ruris),
    (c"stored_transactions", stored_transactions),
    (c"total_ruris", total_ruris),
    (c"total_transactions", total_transactions),
    (c"added_branches", added_branches),
    (c"store_rejected", store_rejected),
    (c"append_not_found", append_not_found),
    (c"append_canceled", append_canceled),
    (c"append_answered", append_answered),
    (c"append_lookup_failed", append_lookup_failed),
];

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
