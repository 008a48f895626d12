//! Late forking: append branches to stored transactions when a device of their AoR registers.
//!
//! ts_append(table, ruri), ts_append_to(tindex, tlabel, table[, uri]),
//! ts_append_by_contact(table, ruri[, contact]), ts_append_branches(uri), and the appends of
//! ts.append and auto_append. An append holds its transaction while it asks TM (`Held`);
//! what it finds held by another process or route it leaves there as a request
//! (request.rs), which the holder carries out here (`run_left`) when it lets go.
//!
//! The ids of an AoR's transactions are copied under the silo lock, and TM is called after the
//! lock is released: TM may destroy a transaction inside these calls, and the destroy callback
//! takes the same lock.

use super::aor::aor_key;
use super::request::{Branches, Only, contact_filter, contact_of_register, decode, encode};
use super::{config, silo};
use crate::kam::dset::{self, DsetSnapshot};
use crate::kam::msg::Msg;
use crate::kam::process::monotonic_ms;
use crate::kam::str::show;
use crate::kam::uri::SipUri;
use crate::kam::{registrar, tm};
use crate::silo::{Claim, Counters, FlightHandle, TransactionId};
use std::ffi::{CStr, CString, c_int};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

// ts_append_to's return codes, as in the C module.
pub const NOT_FOUND: c_int = -1;
pub const CANCELED: c_int = -2;
pub const ANSWERED: c_int = -3;
pub const LOOKUP_FAILED: c_int = -4;
/// Not in the C module (which passes TM's own codes on, colliding with the ones above): TM
/// could not add or send the branches, shared memory ran out, or the request was refused.
pub const FAILED: c_int = -5;
/// What the C module returns (TM's E_UNSPEC) when every contact has a branch already.
pub const NOTHING_NEW: c_int = -1;

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

/// A registrar lookup's result kept for the next appends: with the same table, URI and request
/// method the lookup cannot differ, and TM empties the set after each append, so it is put back
/// from here instead of looked up again. One process may carry out appends of several tables
/// and URIs in a row (a route's deferred appends and catch-ups): the key holds all three.
/// `default()` keeps the result; `once()` does not (one append: the copy would be wasted).
pub struct LookupCache(Option<CachedLookup>, bool);

impl Default for LookupCache {
    fn default() -> Self {
        LookupCache(None, true)
    }
}

impl LookupCache {
    /// For a single append.
    pub fn once() -> Self {
        LookupCache(None, false)
    }
}

struct CachedLookup {
    method: u32,
    table: CString,
    uri: Vec<u8>,
    set: DsetSnapshot,
}

/// What one append to a transaction did; Err carries ts_append_to's negative code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// TM sent this many new branches (> 0).
    Sent(c_int),
    /// Left for the process that holds the transaction (it carries it out when it is done), or
    /// for the route that resumes it.
    Deferred,
    /// Every contact found has a branch already.
    NothingNew,
    /// It was suspended: resumed through resume_route.
    Resumed,
}

// ---- the script functions (native and KEMI alike: exports/) ----

/// ts_append(table, ruri): the contacts of `ruri` in `table` to every call stored for its AoR.
pub fn ts_append(table: &CStr, ruri: &[u8]) -> c_int {
    append_to_aor(ruri, &Branches::Lookup { table, uri: Some(ruri) }, None)
}

/// ts_append_to(tindex, tlabel, table[, uri]): the contacts of `uri` (default: the
/// transaction's R-URI) to the transaction with that index and label.
pub fn ts_append_to(index: c_int, label: c_int, table: &CStr, uri: Option<&[u8]>) -> c_int {
    // TM's index and label are unsigned; scripts hold them as ints.
    let id = TransactionId { index: index as u32, label: label as u32 };
    if let Some(uri) = uri {
        if SipUri::parse(uri).is_none() {
            lm_err!("bad uri [{}]", show(uri));
            return ERROR;
        }
    }
    append_to(id, &Branches::Lookup { table, uri }, None)
}

/// ts_append_by_contact(table, ruri[, contact]): as ts_append, only the contact given (default:
/// the request's Contact, for a REGISTER).
pub fn ts_append_by_contact(msg: Msg, table: &CStr, ruri: &[u8], contact: Option<&[u8]>) -> c_int {
    let Some(contact) = (match contact {
        Some(c) => contact_filter(c),
        None => contact_of_register(msg),
    }) else {
        return ERROR;
    };
    append_to_aor(ruri, &Branches::Lookup { table, uri: Some(ruri) }, Some(&contact))
}

/// ts_append_branches(uri): the branches the script put in the current destination set are
/// appended to every stored transaction of `uri`; the set is left as the script built it.
pub fn ts_append_branches(uri: &[u8]) -> c_int {
    let set = DsetSnapshot::take();
    if set.is_empty() {
        lm_err!("no branch in the destination set (use append_branch() first)");
        return ERROR;
    }
    // Each append puts the script's set back after itself (dset::Isolated).
    append_to_aor(uri, &Branches::Dset(&set), None)
}

/// ts_append_to's return code for an append's outcome: C's where C has one.
pub fn append_code(outcome: Result<Appended, c_int>) -> c_int {
    match outcome {
        Ok(Appended::Sent(n)) => n,
        Ok(Appended::Deferred | Appended::Resumed) => OK,
        Ok(Appended::NothingNew) => NOTHING_NEW,
        Err(code) => code,
    }
}

/// ts_append_to: appends branches to one transaction (see `append_to_cached`); its return code.
pub fn append_to(id: TransactionId, branches: &Branches, contact: Option<&CStr>) -> c_int {
    // The id may come from a route still creating (and relaying) the transaction: its birth is
    // found by the cell's address (route_frames.rs).
    let cell = match config::births() {
        true => {
            let _restore = tm::CurrentRestore::save();
            tm::lookup(id).map_or(0, |t| t.cell().as_ptr() as usize)
        }
        false => 0,
    };
    append_code(append_to_at(id, cell, true, branches, contact.into(), &mut LookupCache::once()))
}

/// Appends branches to one transaction, or leaves the append for the process that holds it
/// (the route that stored it may still be relaying it, see route_frames.rs), and says what it did.
/// `cache` is shared by the appends to one AoR's transactions.
pub fn append_to_cached(id: TransactionId, branches: &Branches, only: Only, cache: &mut LookupCache) -> Result<Appended, c_int> {
    append_to_at(id, 0, false, branches, only, cache)
}

/// Test hook (tests/late_fork.rs): with TSILO_FAILPOINT=append-panic in Kamailio's environment,
/// the first append (of any process: the one that creates the file `failpoint-append-panic` in
/// Kamailio's working directory) panics while it holds its transaction, which the drop guard
/// must release.
static FAILPOINT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// mod_init: reads TSILO_FAILPOINT (see FAILPOINT).
pub fn arm_failpoints() {
    if std::env::var("TSILO_FAILPOINT").as_deref() == Ok("append-panic") {
        lm_warn!("TSILO_FAILPOINT=append-panic: the first append will panic (a test hook)");
        FAILPOINT.store(true, Relaxed);
    }
}

fn failpoint_fires() -> bool {
    FAILPOINT.load(Relaxed) && std::fs::OpenOptions::new().write(true).create_new(true).open("failpoint-append-panic").is_ok()
}

/// `append_to_cached` for the transaction at `cell` (0: unknown), whose birth it also finds;
/// `named`: the caller gave its id (ts_append_to), rather than the silo or a left request.
fn append_to_at(id: TransactionId, cell: usize, named: bool, branches: &Branches, only: Only, cache: &mut LookupCache) -> Result<Appended, c_int> {
    let silo = silo().ok_or(FAILED)?;
    let held = match silo.claim_at(id, cell, || encode(branches, only)) {
        Claim::Mine(held) => Held::new(held, id),
        other => return left(id, other),
    };
    if failpoint_fires() {
        panic!("failpoint append-panic");
    }
    // This process may be running the route on it (an append left to the end of that route).
    let ours = tm::current().is_some_and(|t| t.id() == id);
    for _ in 0..3 {
        match append_now(id, branches, only, cache, !ours, named) {
            Now::Done(outcome) => return outcome,
            // Another process's t_continue() runs a route on it now, which may relay: wait for
            // the end of that route (it never waits on an append, so this cannot deadlock) and
            // look again; one that has run for that long gets the request left to its end.
            // (Never for a route this process runs: it would wait for itself.)
            Now::Continuing if !ours && wait_while(id, |f| f.continuing) => continue,
            Now::Continuing | Now::Suspended => break,
        }
    }
    // Suspended (or continued by another process for too long): left to the route that resumes it.
    let outcome = left(id, held.park(&encode(branches, only)));
    // Parked for the route that resumes the transaction. If such a route ran, to its end,
    // between what this append saw and its parking, nobody takes the request: carry it out now.
    if !ours && wait_while(id, |f| f.continuing && !f.suspended) && flags(id).is_some_and(|f| !f.suspended) {
        if let Some(requests) = silo.take_parked(id) {
            run_requests(id, requests.iter());
        }
    }
    outcome
    // `held` (if not parked) ends here: what others left meanwhile is carried out now.
}

/// How long an append waits for a route that another process's t_continue() runs.
const CONTINUE_WAIT_MS: u32 = 2000;

/// A transaction's suspend state, as TM's flags say now.
struct Flags {
    suspended: bool,
    continuing: bool,
}

/// The flags of transaction `id`; None if it is gone.
fn flags(id: TransactionId) -> Option<Flags> {
    let _restore = tm::CurrentRestore::save();
    let t = tm::lookup(id)?;
    Some(Flags { suspended: t.cell().is_suspended(), continuing: t.cell().is_continuing() })
}

/// Waits (1 ms steps) while transaction `id` exists and `busy` says so; false after
/// CONTINUE_WAIT_MS.
fn wait_while(id: TransactionId, busy: impl Fn(&Flags) -> bool) -> bool {
    for _ in 0..CONTINUE_WAIT_MS {
        if !flags(id).is_some_and(|f| busy(&f)) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// An append left on a flight (`claim` or `park` said so).
fn left(id: TransactionId, claim: Claim) -> Result<Appended, c_int> {
    let Some(silo) = silo() else { return Err(FAILED) };
    match claim {
        Claim::Deferred | Claim::Duplicate => {
            silo.counters.append_deferred.fetch_add(1, Relaxed);
            lm_dbg!("transaction [{}:{}] is held (relayed, appended to, or suspended): append left to its holder", id.index, id.label);
            Ok(Appended::Deferred)
        }
        Claim::Refused => {
            silo.counters.append_refused.fetch_add(1, Relaxed);
            static REFUSED: crate::kam::log::RateLimit = crate::kam::log::RateLimit::new();
            if let Some(more) = REFUSED.due() {
                lm_warn!(
                    "transaction [{}:{}] has {} appends waiting already: append refused ({more} more refused since the last report)",
                    id.index,
                    id.label,
                    crate::silo::MAX_PENDING
                );
            }
            Err(FAILED)
        }
        Claim::NoMemory => {
            lm_err!("out of shared memory appending to transaction [{}:{}]", id.index, id.label);
            Err(FAILED)
        }
        Claim::Mine(_) => unreachable!("a claim of our own is never left"),
    }
}

/// What `append_now` did: an outcome; or the transaction is suspended with no resume_route to
/// resume it; or another process's t_continue() runs a route on it.
enum Now {
    Done(Result<Appended, c_int>),
    Suspended,
    Continuing,
}

/// Appends branches to one transaction now: the caller holds it (`claim`). The caller's
/// destination set is left as it was. `others`: a t_continue() running on it is another
/// process's (else this process runs that route: the append goes on). `named`: the caller gave
/// the id (a transaction gone is then an error, not a race with its end).
fn append_now(id: TransactionId, branches: &Branches, only: Only, cache: &mut LookupCache, others: bool, named: bool) -> Now {
    let _restore = tm::CurrentRestore::save();
    let _dset = dset::Isolated::new();
    let count = |c: fn(&Counters) -> &AtomicU64| {
        if let Some(silo) = silo() {
            c(&silo.counters).fetch_add(1, Relaxed);
        }
    };
    let Some(t) = tm::lookup(id) else {
        if named {
            lm_err!("transaction [{}:{}] not found", id.index, id.label);
        } else {
            // Found in the silo a moment ago: TM ended it since (it leaves TM's table before its
            // destroy callback takes it out of the silo). Not an error.
            lm_dbg!("transaction [{}:{}] ended meanwhile", id.index, id.label);
        }
        count(|c| &c.append_not_found);
        return Now::Done(Err(NOT_FOUND));
    };
    let cell = t.cell();
    if cell.is_canceled() {
        lm_dbg!("transaction [{}:{}] was cancelled", id.index, id.label);
        count(|c| &c.append_canceled);
        return Now::Done(Err(CANCELED));
    }
    if cell.uas_status() >= 200 {
        lm_dbg!("transaction [{}:{}] sent a final reply already ({})", id.index, id.label, cell.uas_status());
        count(|c| &c.append_answered);
        return Now::Done(Err(ANSWERED));
    }
    if others && cell.is_continuing() {
        return Now::Continuing;
    }
    if cell.is_suspended() {
        let Some(route) = RESUME_ROUTE.get() else {
            lm_dbg!("transaction [{}:{}] is suspended: append left to the route that resumes it", id.index, id.label);
            return Now::Suspended;
        };
        drop(t);
        if tm::resume(id, route) {
            lm_info!("transaction [{}:{}] was suspended: resumed it (resume_route)", id.index, id.label);
            return Now::Done(Ok(Appended::Resumed));
        }
        // Someone else resumes it now (the script's or another module's t_continue()): once
        // that route is over, append as to any transaction.
        lm_info!("transaction [{}:{}] was suspended, and resuming it failed: appending instead", id.index, id.label);
        return Now::Continuing;
    }
    match branches {
        Branches::Lookup { table, uri } => match &cache.0 {
            Some(c) if c.method == cell.method() && c.table.as_c_str() == *table && *uri == Some(c.uri.as_slice()) => c.set.restore(),
            _ => {
                if !t.request().is_some_and(|req| registrar::lookup_to_dset(req, table, *uri)) {
                    lm_err!("transaction [{}:{}]: no contact found in table {}", id.index, id.label, show(table.to_bytes()));
                    count(|c| &c.append_lookup_failed);
                    return Now::Done(Err(LOOKUP_FAILED));
                }
                if let (Some(u), true) = (uri, cache.1) {
                    let (method, table, uri) = (cell.method(), (*table).to_owned(), u.to_vec());
                    cache.0 = Some(CachedLookup { method, table, uri, set: DsetSnapshot::take() });
                }
            }
        },
        Branches::Dset(set) => set.restore(),
    }
    // Only a contact that matches the filter (TM: strstr) and has no branch to its URI yet (no
    // device rings twice). Asking TM for nothing makes it log an error.
    let new = dset::retain(|uri| only.admits(uri) && !cell.has_branch(uri));
    if new == 0 {
        lm_dbg!("transaction [{}:{}] has a branch to every contact found already", id.index, id.label);
        return Now::Done(Ok(Appended::NothingNew));
    }
    let sent = tm::append_branches(match only {
        Only::Matching(c) => Some(c),
        Only::Every => None,
    });
    if sent <= 0 {
        lm_err!("transaction [{}:{}]: TM could not add or send the branches ({sent})", id.index, id.label);
        return Now::Done(Err(FAILED));
    }
    if let Some(silo) = silo() {
        silo.counters.added_branches.fetch_add(sent as u64, Relaxed);
    }
    lm_dbg!("transaction [{}:{}]: {sent} branch(es) appended", id.index, id.label);
    Now::Done(Ok(Appended::Sent(sent)))
    // `t` is dropped (unreferenced) here, then the caller's set and transaction are put back.
}

/// What appending to an AoR did.
pub struct AppendSummary {
    pub transactions: usize,
    /// Branches sent now.
    pub branches: u64,
    /// Transactions whose append was left to their holder (sent later, or not at all).
    pub deferred: usize,
}

/// Appends branches to every transaction stored for the AoR of `ruri`: Ok with what was done
/// (each transaction's outcome is logged), Err(NOTHING_STORED) if it had none, Err(ERROR) for a
/// bad URI.
pub fn append_all(ruri: &[u8], branches: &Branches, contact: Option<&CStr>) -> Result<AppendSummary, c_int> {
    let key = aor_key(ruri).ok_or(ERROR)?;
    let key = &*key;
    let silo = silo().ok_or(ERROR)?;
    let mut ids = Vec::new();
    // Found nothing: the request is kept as a miss, for a store that relayed before it (route_frames.rs).
    if !silo.transactions_for_append(key, monotonic_ms(), || encode(branches, contact.into()), &mut ids) {
        lm_dbg!("no transaction stored for {}", show(key));
        return Err(NOTHING_STORED);
    }
    let mut summary = AppendSummary { transactions: ids.len(), branches: 0, deferred: 0 };
    let mut cache = if ids.len() > 1 { LookupCache::default() } else { LookupCache::once() };
    for id in ids {
        lm_dbg!("transaction {}:{} found for {}, appending branches", id.index, id.label, show(key));
        match append_to_cached(id, branches, contact.into(), &mut cache) {
            Ok(Appended::Sent(n)) => summary.branches += n as u64,
            Ok(Appended::Deferred) => summary.deferred += 1,
            _ => {}
        }
    }
    Ok(summary)
}

/// `append_all` as the script functions return it: OK, NOTHING_STORED or ERROR.
pub fn append_to_aor(ruri: &[u8], branches: &Branches, contact: Option<&CStr>) -> c_int {
    append_all(ruri, branches, contact).map_or_else(|code| code, |_| OK)
}


/// An append's hold on its transaction (`silo::Claim::Mine`): when dropped, also on a panic or
/// an early return, the hold ends and what other processes left meanwhile is appended.
pub struct Held(Option<(FlightHandle, TransactionId)>);

impl Held {
    pub fn new(handle: FlightHandle, id: TransactionId) -> Self {
        Held(Some((handle, id)))
    }

    /// Leaves `request` on the transaction for the route that resumes it (it is suspended):
    /// the hold ends without carrying anything out.
    pub fn park(mut self, request: &[u8]) -> Claim {
        let (Some((handle, _)), Some(silo)) = (self.0.take(), silo()) else { return Claim::NoMemory };
        // SAFETY: our own claim, not ended: taken out of `self`, so never ended twice.
        unsafe { silo.park(handle, request) }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some((handle, id)) = self.0.take() else { return };
        // Never unwinds out of a drop (it may run while a panic unwinds).
        let landed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_left(handle, id, &[])));
        if landed.is_err() {
            lm_crit!("BUG: panic carrying out the appends left on transaction [{}:{}]", id.index, id.label);
        }
    }
}

/// Ends the flight `held` of `id` and carries out the requests left on it, then `extra`. Each
/// goes through `append::append_to_cached`, which takes the transaction again (or leaves the
/// request to whoever took it first): nobody asks TM about it while another process does.
pub fn run_left(held: FlightHandle, id: TransactionId, extra: &[Vec<u8>]) {
    let Some(silo) = silo() else { return };
    // SAFETY: begun in this process (ts_store's begin_flight or an append's claim), ended once.
    let requests = unsafe { silo.end_flight(held) };
    run_requests(id, requests.iter().chain(extra));
}

/// Carries out requests left on transaction `id`, in order.
pub fn run_requests<'a>(id: TransactionId, requests: impl Iterator<Item = &'a Vec<u8>>) {
    let mut cache = LookupCache::default();
    for bytes in requests.map(Vec::as_slice) {
        let Some(request) = decode(bytes) else {
            lm_crit!("BUG: malformed deferred append for transaction [{}:{}]", id.index, id.label);
            continue;
        };
        let outcome = append_to_cached(id, &request.branches(), request.only(), &mut cache);
        lm_dbg!("deferred append to transaction [{}:{}] -> {outcome:?}", id.index, id.label);
    }
}
