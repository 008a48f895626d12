//! Route frames: the routes this process is running (the core's pre- and post-script
//! callbacks), each with the transactions it holds in flight, and what is carried out when it
//! ends. No append while the storing process may be relaying (README, "Design": the relay race).
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

use super::{append, config, silo};
use crate::kam::guard::guard;
use crate::kam::tm;
use crate::kam::script_cb::{self, RouteKind};
use crate::routes::Routes;
use crate::silo::{FlightHandle, TransactionId};
use crate::sys;
use std::cell::RefCell;
use std::ffi::{c_int, c_uint, c_void};

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

/// mod_init: have the core tell us when request and failure routes start and end, and TM when
/// it creates a transaction.
pub fn register() -> bool {
    script_cb::register(on_route_start, on_route_end) && tm::on_request_in(on_request_in)
}

/// TMCB_REQUEST_IN, in the process creating transaction `t`, under TM's lock of its hash slot
/// (flight locks are leaves: nothing here calls TM). The birth ends with the running route.
unsafe extern "C" fn on_request_in(t: *mut sys::cell, _kind: c_int, params: *mut sys::tmcb_params) {
    guard((), || {
        if !config::births() || t.is_null() || params.is_null() {
            return;
        }
        // SAFETY: TM's parameters for this callback; `req` is the request being processed.
        let req = unsafe { (*params).req };
        if req.is_null() {
            return;
        }
        let Some(silo) = silo() else { return };
        FRAMES.with_borrow_mut(|frames| {
            // Outside a route no end would come to close it: such a transaction has no birth.
            let Some(top) = frames.top_mut() else { return };
            // SAFETY: TM computed the request's hash index (the slot it is inserting the cell
            // into; the cell's own field is set only then).
            let index = unsafe { (*req).hash_index };
            match silo.begin_birth(index, t as usize) {
                Some(handle) => top.births.push(handle),
                None => lm_err!("out of shared memory holding a new transaction for its route"),
            }
        });
    })
}

unsafe extern "C" fn on_route_start(_msg: *mut sys::sip_msg, flags: c_uint, _param: *mut c_void) -> c_int {
    guard(1, || {
        let (Some(kind), Some(silo)) = (script_cb::kind(flags), silo()) else { return 1 };
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
        1 // go on with the route
    })
}

unsafe extern "C" fn on_route_end(_msg: *mut sys::sip_msg, flags: c_uint, _param: *mut c_void) -> c_int {
    guard(1, || {
        let Some(kind) = script_cb::kind(flags) else { return 1 };
        let ended = FRAMES.with_borrow_mut(|frames| frames.end(kind));
        for frame in ended {
            land(frame);
        }
        1
    })
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

