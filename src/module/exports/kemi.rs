//! KEMI exports (module `tsilo`), for Lua/Python/JS routing scripts: the same functions as the
//! native script, with `str*` and `int` parameters.

use crate::module::append::{self, append_dset_to_aor, append_to, append_to_aor};
use crate::module::request::{Branches, contact_filter, contact_of_register, table_name};
use crate::module::store::ts_store;
use crate::kam::guard::guard;
use crate::kam::str::bytes;
use crate::silo::TransactionId;
use crate::sys;
use std::ffi::{CStr, c_int, c_void};

const NONE: c_int = sys::SR_KEMIP_NONE as c_int;
const INT: c_int = sys::SR_KEMIP_INT as c_int;
const STR: c_int = sys::SR_KEMIP_STR as c_int;

type Msg = *mut sys::sip_msg;
type S = *mut sys::str_;

fn kstr(s: &'static CStr) -> sys::str_ {
    sys::str_ { s: s.as_ptr() as *mut _, len: s.to_bytes().len() as c_int }
}

fn export(name: &'static CStr, func: *mut c_void, params: &[c_int]) -> sys::sr_kemi_t {
    let mut ptypes = [NONE; 6];
    ptypes[..params.len()].copy_from_slice(params);
    sys::sr_kemi_t { mname: kstr(c"tsilo"), fname: kstr(name), rtype: sys::SR_KEMIP_INT as c_int, func, ptypes }
}

/// A KEMI string argument (valid for the call).
unsafe fn arg<'a>(s: S) -> &'a [u8] {
    // SAFETY: KEMI passes valid str pointers (or null, read as empty).
    unsafe { s.as_ref().map_or(&[][..], |s| bytes(s)) }
}

fn id(index: c_int, label: c_int) -> TransactionId {
    TransactionId { index: index as u32, label: label as u32 }
}

unsafe extern "C" fn ki_ts_store(msg: Msg) -> c_int {
    // SAFETY: KEMI passes the message being processed.
    guard(-1, || unsafe { ts_store(msg, None) })
}

unsafe extern "C" fn ki_ts_store_uri(msg: Msg, uri: S) -> c_int {
    // SAFETY: as above, with valid arguments for the call.
    guard(-1, || unsafe { ts_store(msg, Some(arg(uri))) })
}

unsafe extern "C" fn ki_ts_append(_msg: Msg, table: S, ruri: S) -> c_int {
    // SAFETY: as above.
    guard(-1, || unsafe {
        let Some(table) = table_name(arg(table)) else { return append::ERROR };
        let ruri = arg(ruri);
        append_to_aor(ruri, &Branches::Lookup { table: &table, uri: Some(ruri) }, None)
    })
}

unsafe extern "C" fn ki_ts_append_to(_msg: Msg, index: c_int, label: c_int, table: S) -> c_int {
    // SAFETY: as above.
    guard(-1, || unsafe {
        let Some(table) = table_name(arg(table)) else { return append::ERROR };
        append_to(id(index, label), &Branches::Lookup { table: &table, uri: None }, None)
    })
}

unsafe extern "C" fn ki_ts_append_to_uri(_msg: Msg, index: c_int, label: c_int, table: S, uri: S) -> c_int {
    // SAFETY: as above.
    guard(-1, || unsafe {
        let Some(table) = table_name(arg(table)) else { return append::ERROR };
        let uri = arg(uri);
        if crate::kam::uri::SipUri::parse(uri).is_none() {
            lm_err!("bad uri [{}]", crate::kam::str::show(uri));
            return append::ERROR;
        }
        append_to(id(index, label), &Branches::Lookup { table: &table, uri: Some(uri) }, None)
    })
}

unsafe extern "C" fn ki_ts_append_by_contact(msg: Msg, table: S, ruri: S) -> c_int {
    // SAFETY: as above.
    guard(-1, || unsafe {
        let Some(table) = table_name(arg(table)) else { return append::ERROR };
        let Some(contact) = contact_of_register(msg) else { return append::ERROR };
        let ruri = arg(ruri);
        append_to_aor(ruri, &Branches::Lookup { table: &table, uri: Some(ruri) }, Some(&contact))
    })
}

unsafe extern "C" fn ki_ts_append_by_contact_uri(_msg: Msg, table: S, ruri: S, contact: S) -> c_int {
    // SAFETY: as above.
    guard(-1, || unsafe {
        let Some(table) = table_name(arg(table)) else { return append::ERROR };
        let Some(contact) = contact_filter(arg(contact)) else { return append::ERROR };
        let ruri = arg(ruri);
        append_to_aor(ruri, &Branches::Lookup { table: &table, uri: Some(ruri) }, Some(&contact))
    })
}

unsafe extern "C" fn ki_ts_append_branches(_msg: Msg, uri: S) -> c_int {
    // SAFETY: as above.
    guard(-1, || unsafe { append_dset_to_aor(arg(uri)) })
}

/// Adds the exports to Kamailio's KEMI registry (from mod_register); the table lives forever.
pub fn register() -> c_int {
    let table = vec![
        export(c"ts_store", ki_ts_store as *mut c_void, &[]),
        export(c"ts_store_uri", ki_ts_store_uri as *mut c_void, &[STR]),
        export(c"ts_append", ki_ts_append as *mut c_void, &[STR, STR]),
        export(c"ts_append_to", ki_ts_append_to as *mut c_void, &[INT, INT, STR]),
        export(c"ts_append_to_uri", ki_ts_append_to_uri as *mut c_void, &[INT, INT, STR, STR]),
        export(c"ts_append_by_contact", ki_ts_append_by_contact as *mut c_void, &[STR, STR]),
        export(c"ts_append_by_contact_uri", ki_ts_append_by_contact_uri as *mut c_void, &[STR, STR, STR]),
        export(c"ts_append_branches", ki_ts_append_branches as *mut c_void, &[STR]),
        sys::sr_kemi_t::default(),
    ]
    .leak();
    // SAFETY: a terminated table that outlives the process's use of it.
    unsafe { sys::sr_kemi_modules_add(table.as_mut_ptr()) }
}
