//! KEMI exports (module `tsilo`), for Lua/Python/JS routing scripts: the same functions as the
//! native script, with `str*` and `int` parameters. One line each in `register` below, from
//! which `kemi_functions!` writes the `extern "C"` function KEMI calls (its panic guard and
//! the conversion of each argument) and its entry in KEMI's table.

use crate::kam::export::c_str;
use crate::kam::guard::guard;
use crate::kam::msg::Msg;
use crate::kam::str::bytes;
use crate::module::append::{self, ts_append, ts_append_branches, ts_append_by_contact, ts_append_to};
use crate::module::request::table_name;
use crate::module::store::ts_store;
use crate::sys;
use std::ffi::{CStr, CString, c_int, c_void};

/// An argument's kind: what KEMI passes, its KEMI type, and its value for the call.
trait Arg {
    type Raw;
    type Value<'a>;
    const KIND: c_int;
    /// None after logging why the argument cannot be used.
    unsafe fn value<'a>(raw: Self::Raw) -> Option<Self::Value<'a>>;
}

/// A string, valid for the call (null reads as empty).
struct Str;
impl Arg for Str {
    type Raw = *mut sys::str_;
    type Value<'a> = &'a [u8];
    const KIND: c_int = sys::SR_KEMIP_STR as c_int;
    unsafe fn value<'a>(raw: *mut sys::str_) -> Option<Self::Value<'a>> {
        // SAFETY: KEMI passes valid str pointers (or null) for the call.
        Some(unsafe { raw.as_ref().map_or(&[][..], |s| bytes(s)) })
    }
}

/// An integer.
struct Int;
impl Arg for Int {
    type Raw = c_int;
    type Value<'a> = c_int;
    const KIND: c_int = sys::SR_KEMIP_INT as c_int;
    unsafe fn value<'a>(raw: c_int) -> Option<Self::Value<'a>> {
        Some(raw)
    }
}

/// A usrloc table name (a string, not empty), NUL-terminated for usrloc.
struct Table;
impl Arg for Table {
    type Raw = *mut sys::str_;
    type Value<'a> = CString;
    const KIND: c_int = sys::SR_KEMIP_STR as c_int;
    unsafe fn value<'a>(raw: *mut sys::str_) -> Option<Self::Value<'a>> {
        // SAFETY: as for Str.
        table_name(unsafe { Str::value(raw) }?)
    }
}

fn kstr(s: &'static CStr) -> sys::str_ {
    sys::str_ { s: s.as_ptr() as *mut _, len: s.to_bytes().len() as c_int }
}

fn export(name: &'static CStr, func: *mut c_void, params: &[c_int]) -> sys::sr_kemi_t {
    let mut ptypes = [sys::SR_KEMIP_NONE as c_int; 6];
    for (p, &kind) in ptypes.iter_mut().zip(params) {
        *p = kind;
    }
    sys::sr_kemi_t { mname: kstr(c"tsilo"), fname: kstr(name), rtype: sys::SR_KEMIP_INT as c_int, func, ptypes }
}

/// KEMI's table entries: one per line `name => fn(msg, arg: Kind, ...) { body }`, each
/// argument bound to its value for the call.
macro_rules! kemi_functions {
    ($($name:ident => fn($msg:ident $(, $a:ident: $ka:ident)*) $body:block)*) => {
        vec![$({
            unsafe extern "C" fn function(msg: *mut sys::sip_msg $(, $a: <$ka as Arg>::Raw)*) -> c_int {
                guard(-1, || {
                    // SAFETY: KEMI passes the message being processed, for this call.
                    let Some($msg) = (unsafe { Msg::from_ptr(msg) }) else { return append::ERROR };
                    $(
                        // SAFETY: KEMI's argument of this kind, valid for the call.
                        let Some($a) = (unsafe { <$ka as Arg>::value($a) }) else { return append::ERROR };
                    )*
                    $body
                })
            }
            export(
                c_str(concat!(stringify!($name), "\0")),
                function as *mut c_void,
                &[$(<$ka as Arg>::KIND),*],
            )
        },)*]
    };
}


/// Adds the exports to Kamailio's KEMI registry (from mod_register); the table lives forever.
pub fn register() -> c_int {
    let mut table = kemi_functions! {
        ts_store => fn(msg) { ts_store(msg, None) }
        ts_store_uri => fn(msg, uri: Str) { ts_store(msg, Some(uri)) }
        ts_append => fn(_msg, table: Table, ruri: Str) { ts_append(&table, ruri) }
        ts_append_to => fn(_msg, index: Int, label: Int, table: Table) { ts_append_to(index, label, &table, None) }
        ts_append_to_uri => fn(_msg, index: Int, label: Int, table: Table, uri: Str) {
            ts_append_to(index, label, &table, Some(uri))
        }
        ts_append_by_contact => fn(msg, table: Table, ruri: Str) { ts_append_by_contact(msg, &table, ruri, None) }
        ts_append_by_contact_uri => fn(msg, table: Table, ruri: Str, contact: Str) {
            ts_append_by_contact(msg, &table, ruri, Some(contact))
        }
        ts_append_branches => fn(_msg, uri: Str) { ts_append_branches(uri) }
    };
    table.push(sys::sr_kemi_t::default());
    let table = table.leak();
    // SAFETY: a terminated table that outlives the process's use of it.
    unsafe { sys::sr_kemi_modules_add(table.as_mut_ptr()) }
}
