//! ts_store([uri]): remember the current transaction under the AoR of `uri` (default: the R-URI).

use super::on_destroy::ts_on_destroy;
use super::{flight, silo, use_domain};
use crate::kam::str::show;
use crate::kam::uri::SipUri;
use crate::kam::{msg, tm};
use crate::silo::{StoreError, Stored};
use crate::sys;
use std::ffi::{CString, c_int};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// ts_store's return code when a limit refused the transaction.
pub const LIMIT_REACHED: c_int = -3;

/// Logs a refusal at most once per 10 s per process, with how many were not logged: a flood
/// must not flood the log too.
fn report_refusal(what: &str, key: &[u8]) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static QUIET: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = LAST.load(Relaxed);
    if now >= last + 10 && LAST.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
        let quiet = QUIET.swap(0, Relaxed);
        lm_warn!("ts_store refused for {}: {what} reached ({quiet} more refused since the last report)", show(key));
    } else {
        QUIET.fetch_add(1, Relaxed);
    }
}

/// The silo key of a URI: its user part, or the whole URI with `use_domain`.
/// None (after logging why) for a URI Kamailio cannot parse or an empty key.
pub fn aor_key(uri: &[u8]) -> Option<&[u8]> {
    let Some(parsed) = SipUri::parse(uri) else {
        lm_err!("bad uri [{}]", show(uri));
        return None;
    };
    let key = if use_domain() { uri } else { parsed.user() };
    if key.is_empty() {
        lm_err!("malformed aor from uri [{}]: no user part", show(uri));
        return None;
    }
    Some(key)
}

/// Stores the current transaction for the AoR of `uri`, or of the request URI when `uri` is None
/// or empty. 1 on success (also when it was stored already), LIMIT_REACHED when a limit refused
/// it, -1 on other errors.
///
/// # Safety
/// `msg` is the request being processed by the calling script function.
pub unsafe fn ts_store(msg: *mut sys::sip_msg, uri: Option<&[u8]>) -> c_int {
    let uri = match uri {
        Some(u) if !u.is_empty() => u,
        // SAFETY: the caller's contract.
        _ => unsafe { msg::request_uri(msg) },
    };
    let Some(key) = aor_key(uri) else { return -1 };
    let Some(t) = tm::current() else {
        lm_err!("no transaction defined for {} (call t_newtran() or t_relay() first)", show(key));
        return -1;
    };
    let Some(silo) = silo() else { return -1 };
    let id = t.id();
    // In flight from before it is visible in the silo until the route is over (flight.rs).
    let clock = flight::route_clock();
    let in_flight = clock.and_then(|_| {
        let f = silo.begin_flight(id);
        if f.is_none() {
            lm_err!("out of shared memory marking transaction {}:{} in flight", id.index, id.label);
        }
        f
    });
    let mut catch_up = None;
    let rc = match silo.store(key, id) {
        Ok(Stored::New(handle)) => {
            if !tm::on_destroy(msg, t, ts_on_destroy, handle.as_ptr().cast()) {
                lm_err!("failed to register the TM callback for transaction {}:{}", id.index, id.label);
                // SAFETY: just stored, and no callback will ever remove it.
                unsafe { silo.remove(handle) };
                -1
            } else {
                lm_dbg!("transaction {}:{} stored for {}", id.index, id.label, show(key));
                catch_up = clock.and_then(|since| silo.missed_since(key, since)).map(|table| {
                    silo.counters.store_catch_up.fetch_add(1, Relaxed);
                    let table = silo.table_name(table).and_then(|t| CString::new(t).ok()).unwrap_or_else(|| c"location".into());
                    lm_dbg!("an append for {} found nothing since this route started: catch-up in {:?}", show(key), table);
                    flight::catch_up(&table, uri)
                });
                1
            }
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
        flight::track(f, id, catch_up);
    }
    rc
}
