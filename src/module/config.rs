//! The module's settings: the modparams (Kamailio writes them in the main process, before
//! mod_init) and the switches mod_init and the fixups set, all before the workers fork
//! (children inherit them).

use crate::silo::Limits;
use std::ffi::{CStr, c_char};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering::Relaxed};

// ---- modparams (exports/mod.rs hands their addresses to Kamailio) ----

pub(super) static HASH_SIZE: AtomicI32 = AtomicI32::new(2048);
pub(super) static USE_DOMAIN: AtomicI32 = AtomicI32::new(0);
// Bounds (README, section 3): beyond them ts_store returns -3. A pending INVITE costs TM 5 to
// 13 KB of shm, so a million is beyond any shm size in use (the global bound is a backstop);
// 100 ringing calls for one user is a flood, not a person (the bound that bites).
pub(super) static MAX_TRANSACTIONS: AtomicI32 = AtomicI32::new(1_000_000);
pub(super) static MAX_TRANSACTIONS_PER_AOR: AtomicI32 = AtomicI32::new(100);
/// auto_append: the usrloc table whose new contacts get branches without ts_append() (off: null).
pub(super) static AUTO_APPEND: AtomicPtr<c_char> = AtomicPtr::new(null_mut());
/// resume_route: the route an append runs (t_continue) on a suspended stored call (off: null).
pub(super) static RESUME_ROUTE: AtomicPtr<c_char> = AtomicPtr::new(null_mut());

/// Whether AoRs are keyed by the whole URI (`use_domain`), or by its user part.
pub fn use_domain() -> bool {
    USE_DOMAIN.load(Relaxed) != 0
}

/// `hash_size` as given (the silo rounds and bounds it).
pub fn hash_size() -> i64 {
    i64::from(HASH_SIZE.load(Relaxed))
}

/// `max_transactions` and `max_transactions_per_aor` (a negative value: no transaction at all).
pub fn limits() -> Limits {
    Limits {
        max_transactions: u64::try_from(MAX_TRANSACTIONS.load(Relaxed)).unwrap_or(0),
        max_per_aor: u32::try_from(MAX_TRANSACTIONS_PER_AOR.load(Relaxed)).unwrap_or(0),
    }
}

/// A string modparam's value, if it was set.
fn string(p: &AtomicPtr<c_char>) -> Option<&'static CStr> {
    let p = p.load(Relaxed);
    // SAFETY: modparam stored a NUL-terminated string that lives for the process (or nothing).
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) })
}

/// `auto_append`'s table, if set.
pub fn auto_append() -> Option<&'static CStr> {
    string(&AUTO_APPEND)
}

/// `resume_route`'s route name, if set.
pub fn resume_route() -> Option<&'static CStr> {
    string(&RESUME_ROUTE)
}

// ---- switches ----

/// Whether transactions are births while their route runs: set before the workers fork, when
/// the script may call ts_append_to().
static BIRTHS: AtomicBool = AtomicBool::new(false);

/// ts_append_to() may be called (its fixup ran, or a KEMI script may call it): from now on
/// transactions are in flight while the route that creates them runs.
pub fn enable_births() {
    BIRTHS.store(true, Relaxed);
}

/// Whether they are (see `enable_births`).
pub fn births() -> bool {
    BIRTHS.load(Relaxed)
}
