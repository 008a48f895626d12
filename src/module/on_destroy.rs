//! TM's TMCB_DESTROY callback: a destroyed transaction leaves the silo.
//! It runs in whichever process frees the transaction (usually TM's timer), so its parameter is
//! the silo's own shm entry.

use crate::kam::guard::guard;
use crate::silo::{StoredTransaction, TxHandle};
use crate::sys;
use std::ffi::c_int;
use std::ptr::NonNull;

pub unsafe extern "C" fn ts_on_destroy(_t: *mut sys::cell, kind: c_int, params: *mut sys::tmcb_params) {
    guard((), || {
        // SAFETY: a plain query of the core's shutdown state.
        if kind as u32 & sys::TMCB_DESTROY == 0 || unsafe { sys::destroy_modules_phase() } != 0 {
            return; // at shutdown the whole silo is freed by destroy()
        }
        let Some(silo) = super::silo() else { return };
        // SAFETY: TM passes back the parameter registered in ts_store: our entry's address.
        let Some(handle) = (unsafe { params.as_ref() })
            .and_then(|p| unsafe { p.param.as_ref() })
            .and_then(|p| NonNull::new(*p as *mut StoredTransaction))
        else {
            lm_dbg!("TMCB_DESTROY without a parameter");
            return;
        };
        let handle: TxHandle = handle;
        // SAFETY: the handle was stored by ts_store and TM runs TMCB_DESTROY once per transaction.
        let id = unsafe { handle.as_ref() }.id;
        lm_dbg!("transaction {}:{} destroyed, removing it", id.index, id.label);
        // SAFETY: as above: stored once, removed here once.
        unsafe { silo.remove(handle) };
        // Appends left for a route that never resumed it (it was suspended) go with it.
        if let Some(dropped) = silo.take_parked(id) {
            lm_dbg!("transaction {}:{} destroyed while suspended: {} append(s) left on it dropped", id.index, id.label, dropped.len());
        }
    })
}
