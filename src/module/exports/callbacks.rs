//! Every callback Kamailio, TM and usrloc call (registered in mod_init, or by ts_store for
//! TMCB_DESTROY): each guards against panics and hands over to the logic.

use crate::module::{auto_append, config, route_frames, store, sweep_misses as sweep};
use crate::kam::guard::guard;
use crate::kam::script_cb;
use crate::kam::usrloc;
use crate::silo::StoredTransaction;
use crate::sys;
use std::ffi::{c_int, c_uint, c_void};
use std::ptr::NonNull;

/// TMCB_DESTROY of a stored transaction, in whichever process frees it (usually TM's timer):
/// its parameter is the silo's own shm entry, which leaves the silo.
pub unsafe extern "C" fn on_destroy(_t: *mut sys::cell, kind: c_int, params: *mut sys::tmcb_params) {
    guard((), || {
        // SAFETY: a plain query of the core's shutdown state.
        if kind as u32 & sys::TMCB_DESTROY == 0 || unsafe { sys::destroy_modules_phase() } != 0 {
            return; // at shutdown the whole silo is freed by destroy()
        }
        // SAFETY: TM passes back the parameter registered in ts_store: our entry's address.
        let Some(handle) = (unsafe { params.as_ref() })
            .and_then(|p| unsafe { p.param.as_ref() })
            .and_then(|p| NonNull::new(*p as *mut StoredTransaction))
        else {
            lm_dbg!("TMCB_DESTROY without a parameter");
            return;
        };
        // SAFETY: the handle was stored by ts_store and TM runs TMCB_DESTROY once per transaction.
        unsafe { store::forget(handle) };
    })
}

/// TMCB_REQUEST_IN, in the process creating transaction `t`, under TM's lock of its hash slot.
pub unsafe extern "C" fn on_request_in(t: *mut sys::cell, _kind: c_int, params: *mut sys::tmcb_params) {
    guard((), || {
        if !config::births() || t.is_null() || params.is_null() {
            return;
        }
        // SAFETY: TM's parameters for this callback; `req` is the request being processed.
        let req = unsafe { (*params).req };
        if req.is_null() {
            return;
        }
        // SAFETY: TM computed the request's hash index (the slot it is inserting the cell
        // into; the cell's own field is set only then).
        let index = unsafe { (*req).hash_index };
        route_frames::transaction_created(index, t as usize);
    })
}

/// The core's pre-script callback of request and failure routes.
pub unsafe extern "C" fn on_route_start(_msg: *mut sys::sip_msg, flags: c_uint, _param: *mut c_void) -> c_int {
    guard(1, || {
        if let Some(kind) = script_cb::kind(flags) {
            route_frames::route_started(kind);
        }
        1 // go on with the route
    })
}

/// The core's post-script callback of request and failure routes.
pub unsafe extern "C" fn on_route_end(_msg: *mut sys::sip_msg, flags: c_uint, _param: *mut c_void) -> c_int {
    guard(1, || {
        if let Some(kind) = script_cb::kind(flags) {
            route_frames::route_ended(kind);
        }
        1
    })
}

/// usrloc's callback for an inserted or updated contact, in whichever process changed it,
/// under usrloc's record lock.
pub unsafe extern "C" fn on_contact(c: *mut sys::ucontact, _kind: c_int, _param: *mut c_void) {
    guard((), || {
        // SAFETY: usrloc passes the contact it is inserting or updating.
        if let Some(ev) = unsafe { usrloc::event(c) } {
            auto_append::contact_changed(&ev);
        }
    })
}

/// The core's timer, every second, in the timer process.
pub unsafe extern "C" fn sweep_misses(_ticks: u32, _param: *mut c_void) {
    guard((), sweep)
}
