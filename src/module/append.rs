//! Late forking: append branches to stored transactions when a device of their AoR registers.
//!
//! ts_append(table, ruri), ts_append_to(tindex, tlabel, table[, uri]),
//! ts_append_by_contact(table, ruri[, contact]), ts_append_branches(uri).
//!
//! The ids of an AoR's transactions are copied under the silo lock, and TM is called after the
//! lock is released: TM may destroy a transaction inside these calls, and the destroy callback
//! takes the same lock.

use super::store::aor_key;
use super::{flight, silo};
use crate::kam::dset::{self, DsetSnapshot};
use crate::kam::str::show;
use crate::kam::{registrar, tm};
use crate::silo::{Claim, Counters, TransactionId};
use crate::sys;
use std::ffi::{CStr, CString, c_int};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

// ts_append_to's return codes, as in the C module.
pub const NOT_FOUND: c_int = -1;
pub const CANCELED: c_int = -2;
pub const ANSWERED: c_int = -3;
pub const LOOKUP_FAILED: c_int = -4;

// ts_append*'s return codes.
pub const OK: c_int = 1;
pub const ERROR: c_int = -1;
/// The AoR has no stored transaction: normal for most REGISTERs, so logged at debug level only.
pub const NOTHING_STORED: c_int = -2;

/// The route that resumes a suspended stored call instead of appending to it (modparam
/// resume_route): TM drops replies to a suspended transaction, so a branch alone would ring a
/// device whose answer never reaches the caller.
static RESUME_ROUTE: once_cell::sync::OnceCell<crate::kam::route::Continue> = once_cell::sync::OnceCell::new();

pub fn set_resume_route(route: crate::kam::route::Continue) {
    let _ = RESUME_ROUTE.set(route);
}

/// Where the new branches come from.
pub enum Branches<'a> {
    /// The contacts registered in `table` for `uri` (default: the transaction's R-URI).
    Lookup { table: &'a CStr, uri: Option<&'a [u8]> },
    /// The destination set the script built for the current request.
    Dset(&'a DsetSnapshot),
}

/// Which of the contacts found an append adds.
#[derive(Clone, Copy)]
pub enum Only<'a> {
    /// Every one (that has no branch yet).
    Every,
    /// Those TM's filter matches: `contact` is a substring of the contact URI (ts_append_by_contact).
    Matching(&'a CStr),
    /// The one whose URI has this `silo::contact_hash`: a store's catch-up of a by-contact
    /// append that found nothing stored (the silo keeps the contact's hash, not the contact).
    Hashed(u32),
}

impl<'a> From<Option<&'a CStr>> for Only<'a> {
    fn from(contact: Option<&'a CStr>) -> Only<'a> {
        contact.map_or(Only::Every, Only::Matching)
    }
}

impl Only<'_> {
    fn admits(&self, uri: &[u8]) -> bool {
        match *self {
            Only::Every => true,
            Only::Matching(c) => c.is_empty() || uri.windows(c.to_bytes().len()).any(|w| w == c.to_bytes()),
            Only::Hashed(h) => crate::silo::contact_hash(uri) == h,
        }
    }

    /// The contact the silo remembers when this append finds nothing stored.
    fn missed_contact(&self) -> Option<&[u8]> {
        match self {
            Only::Matching(c) if !c.is_empty() => Some(c.to_bytes()),
            _ => None,
        }
    }
}

/// A registrar lookup's result kept for the next appends: with the same table, URI and request
/// method the lookup cannot differ, and TM empties the set after each append, so it is put back
/// from here instead of looked up again. One process may carry out appends of several tables
/// and URIs in a row (a route's deferred appends and catch-ups): the key holds all three.
#[derive(Default)]
pub struct LookupCache(Option<CachedLookup>);

struct CachedLookup {
    method: u32,
    table: CString,
    uri: Vec<u8>,
    set: DsetSnapshot,
}

/// Appends branches to one transaction, or leaves the append for the process that stored it
/// while that process may still be relaying it (see `flight`). Returns the number of branches
/// sent (at least 1 on success: also when the append was deferred, or every contact found has
/// a branch already), or a negative code (NOT_FOUND, CANCELED, ANSWERED, LOOKUP_FAILED, ERROR).
pub fn append_to(id: TransactionId, branches: &Branches, contact: Option<&CStr>) -> c_int {
    append_cached(id, branches, contact.into(), &mut LookupCache::default())
}

/// `append_to` with a lookup cache shared by several calls (one AoR's transactions).
pub fn append_to_cached(id: TransactionId, branches: &Branches, only: Only, cache: &mut LookupCache) -> c_int {
    append_cached(id, branches, only, cache)
}

fn append_cached(id: TransactionId, branches: &Branches, only: Only, cache: &mut LookupCache) -> c_int {
    let Some(silo) = silo() else { return ERROR };
    match silo.claim(id, || flight::encode(branches, only)) {
        Claim::Mine(held) => {
            let rc = append_now(id, branches, only, cache);
            // What others left while this process appended: carried out the same way.
            flight::land_appends(held, id);
            rc
        }
        Claim::Deferred => {
            silo.counters.append_deferred.fetch_add(1, Relaxed);
            lm_dbg!("transaction [{}:{}] is being relayed or appended to: append left to that process", id.index, id.label);
            OK
        }
        Claim::NoMemory => {
            lm_err!("out of shared memory appending to transaction [{}:{}]", id.index, id.label);
            ERROR
        }
    }
}

/// Appends branches to one transaction now: the caller holds it (`claim`). The caller's
/// destination set is left as it was.
fn append_now(id: TransactionId, branches: &Branches, only: Only, cache: &mut LookupCache) -> c_int {
    let _restore = tm::CurrentRestore::save();
    let _dset = dset::Isolated::new();
    let count = |c: fn(&Counters) -> &AtomicU64| {
        if let Some(silo) = silo() {
            c(&silo.counters).fetch_add(1, Relaxed);
        }
    };
    let Some(t) = tm::lookup(id) else {
        lm_err!("transaction [{}:{}] not found", id.index, id.label);
        count(|c| &c.append_not_found);
        return NOT_FOUND;
    };
    let cell = t.cell();
    if cell.is_canceled() {
        lm_dbg!("transaction [{}:{}] was cancelled", id.index, id.label);
        count(|c| &c.append_canceled);
        return CANCELED;
    }
    if cell.uas_status() >= 200 {
        lm_dbg!("transaction [{}:{}] sent a final reply already ({})", id.index, id.label, cell.uas_status());
        count(|c| &c.append_answered);
        return ANSWERED;
    }
    if let (true, Some(route)) = (cell.is_suspended(), RESUME_ROUTE.get()) {
        drop(t);
        let ok = tm::resume(id, route);
        lm_info!("transaction [{}:{}] was suspended: resumed it (resume_route) -> {ok}", id.index, id.label);
        return if ok { OK } else { ERROR };
    }
    match branches {
        Branches::Lookup { table, uri } => match &cache.0 {
            Some(c) if c.method == cell.method() && c.table.as_c_str() == *table && *uri == Some(c.uri.as_slice()) => c.set.restore(),
            _ => {
                // SAFETY: the transaction's own request, alive while we hold the reference.
                if !unsafe { registrar::lookup_to_dset(cell.request(), table, *uri) } {
                    lm_err!("transaction [{}:{}]: no contact found in table {}", id.index, id.label, show(table.to_bytes()));
                    count(|c| &c.append_lookup_failed);
                    return LOOKUP_FAILED;
                }
                if let Some(u) = uri {
                    let (method, table, uri) = (cell.method(), (*table).to_owned(), u.to_vec());
                    cache.0 = Some(CachedLookup { method, table, uri, set: DsetSnapshot::take() });
                }
            }
        },
        Branches::Dset(set) => set.restore(),
    }
    // Only what TM would add: a contact that matches the filter (TM: strstr) and has no branch
    // (TM: same ruid and uri). Asking TM for nothing makes it log an error.
    // A catch-up of a by-contact append knows the contact by its hash; a script that filtered by
    // a part of the URI (TM's substring test) matches no whole URI: then every contact, as
    // before contacts were remembered, rather than losing the device.
    let only = match only {
        Only::Hashed(h) if !dset_has(|uri| crate::silo::contact_hash(uri) == h) => Only::Every,
        o => o,
    };
    let new = dset::retain(|uri, ruid| only.admits(uri) && !cell.has_branch(uri, ruid));
    if new == 0 {
        lm_dbg!("transaction [{}:{}] has a branch to every contact found already", id.index, id.label);
        return OK;
    }
    let sent = tm::append_branches(match only {
        Only::Matching(c) => Some(c),
        _ => None,
    });
    if sent > 0 {
        if let Some(silo) = silo() {
            silo.counters.added_branches.fetch_add(sent as u64, Relaxed);
        }
        lm_dbg!("transaction [{}:{}]: {sent} branch(es) appended", id.index, id.label);
    }
    sent
    // `t` is dropped (unreferenced) here, then the caller's set and transaction are put back.
}

/// Whether a contact of the destination set satisfies `pred` (the set stays as it is).
fn dset_has(pred: impl Fn(&[u8]) -> bool) -> bool {
    let mut found = false;
    dset::retain(|uri, _| {
        found |= pred(uri);
        true
    });
    found
}

/// What appending to an AoR did.
pub struct AppendSummary {
    pub transactions: usize,
    pub branches: u64,
}

/// Appends branches to every transaction stored for the AoR of `ruri`: Ok with what was done
/// (each transaction's outcome is logged), Err(NOTHING_STORED) if it had none, Err(ERROR) for a
/// bad URI.
pub fn append_all(ruri: &[u8], branches: &Branches, contact: Option<&CStr>) -> Result<AppendSummary, c_int> {
    let key = aor_key(ruri).ok_or(ERROR)?;
    let key = &*key;
    let silo = silo().ok_or(ERROR)?;
    let table = match branches {
        Branches::Lookup { table, .. } => silo.table_id(table.to_bytes()),
        Branches::Dset(_) => 0,
    };
    let mut ids = Vec::new();
    if !silo.transactions_for_append(key, table, Only::from(contact).missed_contact(), &mut ids) {
        lm_dbg!("no transaction stored for {}", show(key));
        return Err(NOTHING_STORED);
    }
    let mut summary = AppendSummary { transactions: ids.len(), branches: 0 };
    let mut cache = LookupCache::default();
    for id in ids {
        lm_dbg!("transaction {}:{} found for {}, appending branches", id.index, id.label, show(key));
        summary.branches += append_cached(id, branches, contact.into(), &mut cache).max(0) as u64;
    }
    Ok(summary)
}

/// `append_all` as the script functions return it: OK, NOTHING_STORED or ERROR.
pub fn append_to_aor(ruri: &[u8], branches: &Branches, contact: Option<&CStr>) -> c_int {
    append_all(ruri, branches, contact).map_or_else(|code| code, |_| OK)
}

/// `ts_append_by_contact`: the contact must be a SIP URI; TM matches it as a substring of each
/// registered contact, so it is passed NUL-terminated.
pub fn contact_filter(contact: &[u8]) -> Option<CString> {
    if crate::kam::uri::SipUri::parse(contact).is_none() {
        lm_err!("bad contact uri [{}]", show(contact));
        return None;
    }
    match CString::new(contact) {
        Ok(c) => Some(c),
        Err(_) => {
            lm_err!("contact uri contains a NUL byte");
            None
        }
    }
}

/// ts_append_branches(uri): the branches the script put in the current destination set are
/// appended to every stored transaction of `uri`; the set is left as the script built it.
pub fn append_dset_to_aor(uri: &[u8]) -> c_int {
    let set = DsetSnapshot::take();
    if set.is_empty() {
        lm_err!("no branch in the destination set (use append_branch() first)");
        return ERROR;
    }
    // Each append puts the script's set back after itself (dset::Isolated).
    append_to_aor(uri, &Branches::Dset(&set), None)
}

/// A table name from the script or KEMI, NUL-terminated for usrloc; None (logged) if empty.
pub fn table_name(table: &[u8]) -> Option<CString> {
    match CString::new(table) {
        Ok(t) if !t.is_empty() => Some(t),
        _ => {
            lm_err!("invalid table name [{}]", show(table));
            None
        }
    }
}

/// Script and KEMI share these: `msg` is unused by the appends themselves (they work on each
/// stored transaction's own request), but the contact may come from it.
///
/// # Safety
/// `msg` is the request being processed.
pub unsafe fn contact_of_register(msg: *mut sys::sip_msg) -> Option<CString> {
    // SAFETY: the caller's contract.
    match unsafe { crate::kam::msg::first_contact_uri(msg) } {
        Ok(uri) => contact_filter(uri),
        Err(why) => {
            lm_warn!("ts_append_by_contact: {why}");
            None
        }
    }
}
