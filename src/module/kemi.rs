//! KEMI exports (module `tsilo`), for Lua/Python/JS routing scripts: the same functions as the
//! native script, with `str*` and `int` parameters.

use super::store::ts_store;
use crate::kam::guard::guard;
use crate::kam::str::bytes;
use crate::sys;
use std::ffi::{CStr, c_int, c_void};

const NONE: c_int = sys::SR_KEMIP_NONE as c_int;
const STR: c_int = sys::SR_KEMIP_STR as c_int;

fn kstr(s: &'static CStr) -> sys::str_ {
    sys::str_ { s: s.as_ptr() as *mut _, len: s.to_bytes().len() as c_int }
}

fn export(name: &'static CStr, func: *mut c_void, params: &[c_int]) -> sys::sr_kemi_t {
    let mut ptypes = [NONE; 6];
    ptypes[..params.len()].copy_from_slice(params);
    sys::sr_kemi_t { mname: kstr(c"tsilo"), fname: kstr(name), rtype: sys::SR_KEMIP_INT as c_int, func, ptypes }
}

unsafe extern "C" fn ki_ts_store(msg: *mut sys::sip_msg) -> c_int {
    // SAFETY: KEMI passes the message being processed.
    guard(-1, || unsafe { ts_store(msg, None) })
}

unsafe extern "C" fn ki_ts_store_uri(msg: *mut sys::sip_msg, uri: *mut sys::str_) -> c_int {
    // SAFETY: KEMI passes the message and a valid str for the call's duration.
    guard(-1, || unsafe {
        match uri.as_ref() {
            Some(u) => ts_store(msg, Some(bytes(u))),
            None => -1,
        }
    })
}

/// Adds the exports to Kamailio's KEMI registry (from mod_register); the table lives forever.
pub fn register() -> c_int {
    let table = vec![
        export(c"ts_store", ki_ts_store as *mut c_void, &[]),
        export(c"ts_store_uri", ki_ts_store_uri as *mut c_void, &[STR]),
        sys::sr_kemi_t::default(),
    ]
    .leak();
    // SAFETY: a terminated table that outlives the process's use of it.
    unsafe { sys::sr_kemi_modules_add(table.as_mut_ptr()) }
}
