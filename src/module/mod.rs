//! What Kamailio loads, in layers that import one way only:
//!
//! - `exports/`: the C-facing side: the tables Kamailio reads (script functions, parameters,
//!   RPC, KEMI, statistics), the life cycle (mod_init, child_init, destroy) and every callback
//!   Kamailio, TM and usrloc call. Each entry point catches panics and calls into:
//! - `store.rs` (ts_store and a stored transaction's end), `auto_append.rs` (appends of new
//!   usrloc contacts), `route_frames.rs` (the routes running in this process and what they
//!   hold), which call
//! - `append.rs` (appending to stored transactions), which uses
//! - `request.rs` (what an append asks for) and `aor.rs` (the key of a URI);
//! - `config.rs` (modparams and switches) and `silo()` (below) are used by all of them.

mod aor;
mod append;
mod auto_append;
mod config;
mod exports;
mod request;
mod route_frames;
mod store;

use crate::kam::shm::KamShm;
use crate::silo::{Silo, sanitize_hash_size};
use once_cell::sync::OnceCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

struct SiloRef(NonNull<Silo<KamShm>>);
// SAFETY: the silo lives in shm and synchronises itself (per-slot cross-process locks, atomics).
unsafe impl Send for SiloRef {}
unsafe impl Sync for SiloRef {}

/// Set in mod_init, before fork: every child inherits the pointer.
static SILO: OnceCell<SiloRef> = OnceCell::new();
/// Set once destroy() has freed the silo: late TM callbacks must not touch it.
static SILO_GONE: AtomicBool = AtomicBool::new(false);

/// The silo shared by every process (None before mod_init and after destroy).
pub fn silo() -> Option<&'static Silo<KamShm>> {
    if SILO_GONE.load(Relaxed) {
        return None;
    }
    // SAFETY: created in mod_init, freed only at shutdown (after which SILO_GONE is set).
    SILO.get().map(|s| unsafe { s.0.as_ref() })
}

/// mod_init: creates the silo with the configured size and limits; Err says why not.
fn create_silo() -> Result<(), String> {
    let (size, warning) = sanitize_hash_size(config::hash_size());
    if let Some(w) = warning {
        lm_warn!("{w}");
    }
    // A table larger than the shared memory left is refused here, with the numbers the
    // operator needs: shm_malloc's failure alone does not say that hash_size is the cause.
    let needed = Silo::<KamShm>::table_bytes(size);
    let free = crate::kam::shm::available();
    if needed > free {
        return Err(table_too_big(size, needed, free));
    }
    let Some(silo) = Silo::create(KamShm, size, config::limits()) else {
        // Free memory in pieces none of which is large enough.
        return Err(table_too_big(size, needed, crate::kam::shm::available()));
    };
    SILO.set(SiloRef(silo)).map_err(|_| "mod_init called twice".to_string())?;
    lm_dbg!("table created with {size} slots");
    Ok(())
}

/// Why the table cannot be created: hash_size, what its table needs and what `-m` gives.
fn table_too_big(size: u32, needed: usize, free: usize) -> String {
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let total = crate::kam::shm::total();
    format!(
        "hash_size {size}: the table needs {needed} bytes ({:.1} MiB) of shared memory, more than the {free} bytes \
         ({:.1} MiB) free of the {total} bytes ({:.1} MiB) that -m gives: lower hash_size or raise -m",
        mib(needed),
        mib(free),
        mib(total)
    )
}

/// destroy (at exit): frees the silo, once.
fn destroy_silo() {
    let Some(s) = SILO.get() else { return };
    if SILO_GONE.swap(true, Relaxed) {
        return;
    }
    // SAFETY: at destroy time the workers are gone; TMCB_DESTROY callbacks check SILO_GONE
    // (and destroy_modules_phase) before touching the silo.
    unsafe { Silo::destroy(s.0) };
}

/// Every second, in the timer process: frees the misses kept longer than their TTL (silo/miss.rs),
/// and says when misses had to be dropped (a REGISTER flood of AoRs with nothing stored).
fn sweep_misses() {
    static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let Some(silo) = silo() else { return };
    silo.prune_misses(crate::kam::process::monotonic_ms());
    let (_, _, dropped) = silo.miss_totals();
    let before = DROPPED.swap(dropped, Relaxed);
    if dropped > before {
        lm_warn!(
            "{} append(s) that found no stored call were not remembered for a catch-up ({} KB of misses kept at most)",
            dropped - before,
            crate::silo::MISS_MAX_BYTES / 1024
        );
    }
}
