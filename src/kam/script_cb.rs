//! The core's pre- and post-script callbacks: run in the process that runs a route, right before
//! it starts and right after it has finished (core/script_cb.h).

use crate::sys;
use std::ffi::{c_int, c_uint, c_void};

pub use crate::routes::RouteKind;

pub type Callback = unsafe extern "C" fn(msg: *mut sys::sip_msg, flags: c_uint, param: *mut c_void) -> c_int;

/// Registers `before` and `after` around request and failure routes (mod_init, before fork).
pub fn register(before: Callback, after: Callback) -> bool {
    let kinds = sys::script_cb_flag_REQUEST_CB | sys::script_cb_flag_FAILURE_CB;
    // SAFETY: plain registrations; the core keeps the function pointers for the process's life.
    unsafe {
        sys::register_script_cb(Some(before), sys::PRE_SCRIPT_CB | kinds, std::ptr::null_mut()) == 0
            && sys::register_script_cb(Some(after), sys::POST_SCRIPT_CB | kinds, std::ptr::null_mut()) == 0
    }
}

/// The kind of route a callback's `flags` are about.
pub fn kind(flags: c_uint) -> Option<RouteKind> {
    if flags & sys::script_cb_flag_REQUEST_CB != 0 {
        Some(RouteKind::Request)
    } else if flags & sys::script_cb_flag_FAILURE_CB != 0 {
        Some(RouteKind::Failure)
    } else {
        None
    }
}
