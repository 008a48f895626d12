//! ts_store([uri]): remember the current transaction under the AoR of `uri` (default: the R-URI).

use super::aor::aor_key;
use super::{route_frames, silo};
use crate::kam::log::RateLimit;
use crate::kam::msg::Msg;
use crate::kam::str::show;
use crate::kam::tm;
use crate::silo::{StoreError, Stored, TxHandle};
use once_cell::sync::OnceCell;
use std::ffi::c_int;
use std::sync::atomic::Ordering::Relaxed;

/// ts_store's return code when a limit refused the transaction.
pub const LIMIT_REACHED: c_int = -3;

/// The TMCB_DESTROY callback ts_store registers (exports/callbacks.rs), which calls `forget`.
static ON_DESTROY: OnceCell<tm::Callback> = OnceCell::new();

/// mod_init: which callback TM is to call when a stored transaction is destroyed.
pub fn set_destroy_callback(callback: tm::Callback) {
    let _ = ON_DESTROY.set(callback);
}

/// Logs a refusal, rate-limited: a flood must not flood the log too.
fn report_refusal(what: &str, key: &[u8]) {
    static REFUSALS: RateLimit = RateLimit::new();
    if let Some(quiet) = REFUSALS.due() {
        lm_warn!("ts_store refused for {}: {what} reached ({quiet} more refused since the last report)", show(key));
    }
}

/// Stores the current transaction for the AoR of `uri`, or of the request URI when `uri` is None
/// or empty. 1 on success (also when it was stored already), LIMIT_REACHED when a limit refused
/// it, -1 on other errors.
pub fn ts_store(msg: Msg, uri: Option<&[u8]>) -> c_int {
    let uri = match uri {
        Some(u) if !u.is_empty() => u,
        _ => msg.request_uri(),
    };
    let Some(key) = aor_key(uri) else { return -1 };
    let key = &*key;
    let Some(t) = tm::current() else {
        lm_err!("no transaction defined for {} (call t_newtran() or t_relay() first)", show(key));
        return -1;
    };
    let Some(silo) = silo() else { return -1 };
    let id = t.id();
    // In flight from before it is visible in the silo until the route is over (route_frames.rs).
    let clock = route_frames::route_clock();
    let in_flight = clock.and_then(|_| {
        let f = silo.begin_flight(id);
        if f.is_none() {
            lm_err!("out of shared memory marking transaction {}:{} in flight", id.index, id.label);
        }
        f
    });
    let mut catch_up = Vec::new();
    // TM's TMCB_DESTROY removes the entry; without it, the entry is not kept.
    let Some(&on_destroy) = ON_DESTROY.get() else { return -1 };
    let watch = |handle: TxHandle| tm::on_destroy(msg.as_ptr(), t, on_destroy, handle.as_ptr().cast());
    let rc = match silo.store_watched(key, id, watch) {
        Ok(Stored::New(_)) => {
            lm_dbg!("transaction {}:{} stored for {}", id.index, id.label, show(key));
            // Appends that found nothing since this route started: carried out when it ends.
            catch_up = clock.map(|since| silo.missed_since(key, since)).unwrap_or_default();
            if !catch_up.is_empty() {
                lm_dbg!("{} append(s) for {} found nothing since this route started: caught up after it", catch_up.len(), show(key));
                silo.counters.store_catch_up.fetch_add(1, Relaxed);
            }
            1
        }
        Err(StoreError::WatchFailed) => {
            lm_err!("failed to register the TM callback for transaction {}:{}: not stored", id.index, id.label);
            -1
        }
        Ok(Stored::Duplicate) => {
            lm_dbg!("transaction {}:{} already stored for {}", id.index, id.label, show(key));
            1
        }
        Err(StoreError::NoMemory) => {
            lm_err!("out of shared memory storing transaction {}:{} for {}", id.index, id.label, show(key));
            -1
        }
        Err(StoreError::KeyTooLong) => {
            lm_err!("aor too long ({} bytes)", key.len());
            -1
        }
        Err(StoreError::TableFull) => {
            report_refusal("max_transactions", key);
            LIMIT_REACHED
        }
        Err(StoreError::AorFull) => {
            report_refusal("max_transactions_per_aor", key);
            LIMIT_REACHED
        }
    };
    if let Some(f) = in_flight {
        route_frames::track(f, id, catch_up);
    }
    rc
}

/// TM destroyed a stored transaction: its entry leaves the silo, and appends left on it for a
/// route that never resumed it (it was suspended) go with it.
///
/// # Safety
/// `handle` is the entry ts_store registered with the transaction's TMCB_DESTROY, which TM
/// runs once.
pub unsafe fn forget(handle: TxHandle) {
    let Some(silo) = silo() else { return };
    // SAFETY: the caller's contract.
    let id = unsafe { handle.as_ref() }.id;
    lm_dbg!("transaction {}:{} destroyed, removing it", id.index, id.label);
    // SAFETY: as above: stored once, removed here once.
    unsafe { silo.remove(handle) };
    if let Some(dropped) = silo.take_parked(id) {
        lm_dbg!("transaction {}:{} destroyed while suspended: {} append(s) left on it dropped", id.index, id.label, dropped.len());
    }
}
