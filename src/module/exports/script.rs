//! The native script functions: Kamailio calls these with the fixed-up `char*` parameters.
//! Each evaluates its parameters for the message and calls the shared implementation.

use crate::module::append::{self, append_dset_to_aor, append_to, append_to_aor};
use crate::module::request::{Branches, contact_filter, contact_of_register};
use crate::module::store::ts_store;
use crate::kam::guard::guard;
use crate::kam::param;
use crate::silo::TransactionId;
use crate::sys;
use std::ffi::{CStr, c_char, c_int, c_void};

type Msg = *mut sys::sip_msg;
type P = *mut c_char;

/// Fixup of a table-name parameter: a non-empty static string, kept as it is.
pub unsafe extern "C" fn fixup_table(param: *mut *mut c_void, _param_no: c_int) -> c_int {
    guard(-1, || {
        // SAFETY: Kamailio passes the address of the parameter's string.
        let table = unsafe { (*param as *const c_char).as_ref().map(|p| CStr::from_ptr(p)) };
        match table {
            Some(t) if !t.is_empty() => 0,
            _ => {
                lm_err!("empty table name (give the usrloc table, e.g. \"location\")");
                -1
            }
        }
    })
}

/// Per-function fixups: which parameter is a table, an int or a string.
pub unsafe extern "C" fn fixup_table_spve(param: *mut *mut c_void, param_no: c_int) -> c_int {
    // SAFETY: forwarding Kamailio's own arguments.
    unsafe { if param_no == 1 { fixup_table(param, param_no) } else { sys::fixup_spve_null(param, 1) } }
}
pub unsafe extern "C" fn fixup_free_table_spve(param: *mut *mut c_void, param_no: c_int) -> c_int {
    // SAFETY: as above; the table string needs no freeing.
    unsafe { if param_no == 1 { 0 } else { sys::fixup_free_spve_null(param, 1) } }
}
pub unsafe extern "C" fn fixup_append_to(param: *mut *mut c_void, param_no: c_int) -> c_int {
    // The script appends by id: transactions are in flight from their creation (route_frames.rs).
    crate::module::config::enable_births();
    // SAFETY: as above.
    unsafe {
        match param_no {
            1 | 2 => sys::fixup_igp_null(param, 1),
            3 => fixup_table(param, param_no),
            _ => sys::fixup_spve_null(param, 1),
        }
    }
}
pub unsafe extern "C" fn fixup_free_append_to(param: *mut *mut c_void, param_no: c_int) -> c_int {
    // SAFETY: as above.
    unsafe {
        match param_no {
            1 | 2 => sys::fixup_free_igp_null(param, 1),
            3 => 0,
            _ => sys::fixup_free_spve_null(param, 1),
        }
    }
}

/// A string parameter's value, copied (a pseudo-variable's value lives in a buffer that the
/// branch route of an appended branch may reuse), or None after logging which one could not be
/// evaluated.
unsafe fn string(msg: Msg, p: P, what: &str) -> Option<Vec<u8>> {
    // SAFETY: `p` is the fixed-up parameter of this call.
    let v = unsafe { param::string(msg, p) };
    match v {
        Some(v) if !v.is_empty() => Some(v.to_vec()),
        _ => {
            lm_err!("invalid {what} parameter (empty or not evaluable)");
            None
        }
    }
}

unsafe fn table<'a>(p: P) -> &'a CStr {
    // SAFETY: checked non-empty by fixup_table; a static string for the process's life.
    unsafe { CStr::from_ptr(p) }
}

unsafe fn transaction_id(msg: Msg, index: P, label: P) -> Option<TransactionId> {
    // SAFETY: fixed-up parameters of this call.
    let (i, l) = unsafe { (param::int(msg, index), param::int(msg, label)) };
    match (i, l) {
        // TM's index and label are unsigned; the script holds them as ints.
        (Some(i), Some(l)) => Some(TransactionId { index: i as u32, label: l as u32 }),
        (None, _) => {
            lm_err!("cannot get transaction index (not a number?)");
            None
        }
        (_, None) => {
            lm_err!("cannot get transaction label (not a number?)");
            None
        }
    }
}

pub unsafe extern "C" fn w_ts_store0(msg: Msg, _: P, _: P) -> c_int {
    // SAFETY: Kamailio passes the message being processed.
    guard(-1, || unsafe { ts_store(msg, None) })
}

pub unsafe extern "C" fn w_ts_store1(msg: Msg, uri: P, _: P) -> c_int {
    // SAFETY: as above, with the fixed-up parameter.
    guard(-1, || unsafe {
        let Some(uri) = string(msg, uri, "uri") else { return -1 };
        ts_store(msg, Some(&uri))
    })
}

pub unsafe extern "C" fn w_ts_append(msg: Msg, tbl: P, ruri: P) -> c_int {
    // SAFETY: as above.
    guard(-1, || unsafe {
        let Some(ruri) = string(msg, ruri, "ruri") else { return append::ERROR };
        append_to_aor(&ruri, &Branches::Lookup { table: table(tbl), uri: Some(&ruri) }, None)
    })
}

pub unsafe extern "C" fn w_ts_append_to3(msg: Msg, index: P, label: P, tbl: P) -> c_int {
    // SAFETY: as above.
    guard(-1, || unsafe {
        let Some(id) = transaction_id(msg, index, label) else { return append::ERROR };
        append_to(id, &Branches::Lookup { table: table(tbl), uri: None }, None)
    })
}

pub unsafe extern "C" fn w_ts_append_to4(msg: Msg, index: P, label: P, tbl: P, uri: P) -> c_int {
    // SAFETY: as above.
    guard(-1, || unsafe {
        let Some(id) = transaction_id(msg, index, label) else { return append::ERROR };
        let Some(uri) = string(msg, uri, "uri") else { return append::ERROR };
        if crate::kam::uri::SipUri::parse(&uri).is_none() {
            lm_err!("bad uri [{}]", crate::kam::str::show(&uri));
            return append::ERROR;
        }
        append_to(id, &Branches::Lookup { table: table(tbl), uri: Some(&uri) }, None)
    })
}

pub unsafe extern "C" fn w_ts_append_by_contact2(msg: Msg, tbl: P, ruri: P) -> c_int {
    // SAFETY: as above.
    guard(-1, || unsafe {
        let Some(ruri) = string(msg, ruri, "ruri") else { return append::ERROR };
        let Some(contact) = contact_of_register(msg) else { return append::ERROR };
        append_to_aor(&ruri, &Branches::Lookup { table: table(tbl), uri: Some(&ruri) }, Some(&contact))
    })
}

pub unsafe extern "C" fn w_ts_append_by_contact3(msg: Msg, tbl: P, ruri: P, contact: P) -> c_int {
    // SAFETY: as above.
    guard(-1, || unsafe {
        let Some(ruri) = string(msg, ruri, "ruri") else { return append::ERROR };
        let Some(contact) = string(msg, contact, "contact") else { return append::ERROR };
        let Some(contact) = contact_filter(&contact) else { return append::ERROR };
        append_to_aor(&ruri, &Branches::Lookup { table: table(tbl), uri: Some(&ruri) }, Some(&contact))
    })
}

pub unsafe extern "C" fn w_ts_append_branches(msg: Msg, uri: P, _: P) -> c_int {
    // SAFETY: as above.
    guard(-1, || unsafe {
        let Some(uri) = string(msg, uri, "uri") else { return append::ERROR };
        append_dset_to_aor(&uri)
    })
}
