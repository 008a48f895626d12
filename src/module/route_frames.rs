//! Route frames: the routes this process is running (the core's pre- and post-script
//! callbacks), each with the transactions it holds in flight, and what is carried out when it
//! ends. No append while the storing process may be relaying (docs/design.md: the relay race).
//!
//! TM's `t_relay()` adds branches without TM's reply lock; `t_append_branches()` from another
//! process at that moment builds into the same branch slot. So a transaction that `ts_store()`
//! stores from a route is "in flight" until that route has finished (the core's post-script
//! callback, in the same process, after `t_relay()` returned): appends from any process find it
//! in flight and leave their request on it (`silo::Claim`), and the storing process carries
//! them out here when its route is over. An append holds its transaction the same way while it
//! asks TM, and carries out what others left meanwhile (`append::Held`).
//!
//! The other order (`t_relay(); ts_store();`) has the opposite hole: a device saved after the
//! relay's `lookup()` whose append ran before `ts_store()` found nothing to append to. Appends
//! that find nothing leave their request in the silo as a "miss" (silo/miss.rs); a store that
//! finds misses of its AoR newer than the start of its route carries them out when the route
//! is over ("catch-up"), like deferred appends: exactly what the missed append would have added.
//!
//! `ts_append_to()` needs no store to find its transaction: the script may publish an id before
//! the route that creates the transaction relays it. Where the script can call it (a native
//! script that uses it, any KEMI script), every transaction is in flight from its creation
//! (TMCB_REQUEST_IN) to the end of the route that created it: a "birth" (silo/flight.rs).

use super::{append, silo};
use crate::kam::tm;
use crate::routes::{RouteKind, Routes};
use crate::silo::{FlightHandle, TransactionId};
use std::cell::RefCell;

/// A route running in this process (routes.rs keeps them).
struct Frame {
    /// The silo's miss clock when the route started.
    clock: u64,
    flights: Vec<Flying>,
    /// Transactions this route created (births, see the module doc).
    births: Vec<FlightHandle>,
}

/// A transaction this route stored, in flight until the route ends.
struct Flying {
    handle: FlightHandle,
    id: TransactionId,
    /// Requests to carry out when the route ends besides the deferred ones (catch-ups).
    catch_up: Vec<Vec<u8>>,
}

thread_local! {
    /// Kamailio's processes are single-threaded: this is the process's own stack of routes.
    static FRAMES: RefCell<Routes<Frame>> = const { RefCell::new(Routes::new()) };
}

/// TMCB_REQUEST_IN (with births on): TM is creating the transaction at `cell`, in hash slot
/// `index`, under its lock of that slot (flight locks are leaves: nothing here calls TM). The
/// birth ends with the running route.
pub fn transaction_created(index: u32, cell: usize) {
    let Some(silo) = silo() else { return };
    FRAMES.with_borrow_mut(|frames| {
        // Outside a route no end would come to close it: such a transaction has no birth.
        let Some(top) = frames.top_mut() else { return };
        match silo.begin_birth(index, cell) {
            Some(handle) => top.births.push(handle),
            None => lm_err!("out of shared memory holding a new transaction for its route"),
        }
    });
}

/// A request or failure route starts in this process.
pub fn route_started(kind: RouteKind) {
    let Some(silo) = silo() else { return };
    // A failure route, or the route t_continue() runs (from the script, resume_route, or any
    // module): it may relay its transaction, which holds it like a storing route (appends
    // meanwhile are left to its end, when they see what it relayed), and takes over the
    // appends left on it while it was suspended.
    let mut flights = Vec::new();
    if kind == RouteKind::Failure {
        if let Some(t) = tm::current() {
            let id = t.id();
            match silo.begin_flight(id) {
                Some(handle) => flights.push(Flying { handle, id, catch_up: Vec::new() }),
                None => lm_err!("out of shared memory holding transaction [{}:{}] for its route", id.index, id.label),
            }
        }
    }
    let frame = Frame { clock: silo.miss_clock(), flights, births: Vec::new() };
    let stale = FRAMES.with_borrow_mut(|frames| frames.start(kind, frame));
    // Landed outside the borrow: an append may run a route, which comes back here.
    for frame in stale {
        land(frame);
    }
}

/// A request or failure route has ended in this process.
pub fn route_ended(kind: RouteKind) {
    let ended = FRAMES.with_borrow_mut(|frames| frames.end(kind));
    for frame in ended {
        land(frame);
    }
}

/// The miss clock of the route running now, if a route is running (None: no post-script
/// callback will come, so nothing can be deferred to it).
pub fn route_clock() -> Option<u64> {
    FRAMES.with_borrow(|frames| frames.top().map(|f| f.clock))
}

/// Keeps a flight begun by ts_store() for the end of the running route; `catch_up`: the
/// requests to carry out then besides the deferred ones.
pub fn track(handle: FlightHandle, id: TransactionId, catch_up: Vec<Vec<u8>>) {
    let orphan = FRAMES.with_borrow_mut(|frames| match frames.top_mut() {
        Some(top) => {
            top.flights.push(Flying { handle, id, catch_up });
            None
        }
        None => Some(Flying { handle, id, catch_up }),
    });
    // Only begun inside a route (route_clock() was Some); ended at once if that changed.
    if let Some(f) = orphan {
        land(Frame { clock: 0, flights: vec![f], births: Vec::new() });
    }
}

/// The route is over: its transactions stop being in flight, then what was deferred to them
/// (and each catch-up) is appended, in this process, with the relay done.
fn land(frame: Frame) {
    for f in frame.flights {
        append::run_left(f.handle, f.id, &f.catch_up);
    }
    let Some(silo) = silo() else { return };
    for birth in frame.births {
        // SAFETY: begun by on_request_in in this process, ended once (the frame is gone).
        let (id, requests) = unsafe { silo.end_birth(birth) };
        if let Some(id) = id {
            append::run_requests(id, requests.iter());
        }
    }
}

