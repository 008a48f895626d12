//! The native script functions: one line each in `CMDS` below, from which `script_functions!`
//! writes the `extern "C"` function Kamailio calls (its panic guard, the evaluation of each
//! fixed-up parameter for the message) and the fixups for its parameters' kinds.

use crate::kam::export::{CTable, c_str};
use crate::kam::guard::guard;
use crate::kam::msg::Msg;
use crate::kam::param;
use crate::module::append::{self, ts_append, ts_append_branches, ts_append_by_contact, ts_append_to};
use crate::module::{config, store::ts_store};
use crate::sys;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr::null_mut;

type P = *mut c_char;
type Fixup = unsafe extern "C" fn(*mut *mut c_void, c_int) -> c_int;
type ParamFixup = unsafe fn(*mut *mut c_void) -> c_int;

/// What the script functions return for a parameter they cannot use (as C's do).
const BAD_PARAM: c_int = append::ERROR;

/// A parameter's kind: how Kamailio fixes it up at startup, and its value for one call.
trait Param {
    type Value;
    /// Fixes up one parameter (`param` holds the script's text).
    unsafe fn fixup(param: *mut *mut c_void) -> c_int;
    unsafe fn free(param: *mut *mut c_void) -> c_int;
    /// The value for `msg`; None after logging why (`what`: the parameter's name).
    unsafe fn value(msg: Msg, p: P, what: &str) -> Option<Self::Value>;
}

/// A string or pseudo-variable, evaluated per call: non-empty, and copied (a pseudo-variable's
/// value lives in a buffer that the branch route of an appended branch may reuse).
struct Str;
impl Param for Str {
    type Value = Vec<u8>;
    unsafe fn fixup(param: *mut *mut c_void) -> c_int {
        // SAFETY: Kamailio's own arguments; `1`: fixup_spve_null fixes the first parameter only.
        unsafe { sys::fixup_spve_null(param, 1) }
    }
    unsafe fn free(param: *mut *mut c_void) -> c_int {
        // SAFETY: as above.
        unsafe { sys::fixup_free_spve_null(param, 1) }
    }
    unsafe fn value(msg: Msg, p: P, what: &str) -> Option<Vec<u8>> {
        // SAFETY: `p` is the fixed-up parameter of this call.
        match unsafe { param::string(msg.as_ptr(), p) } {
            Some(v) if !v.is_empty() => Some(v.to_vec()),
            _ => {
                lm_err!("invalid {what} parameter (empty or not evaluable)");
                None
            }
        }
    }
}

/// An integer or pseudo-variable, evaluated per call.
struct Int;
impl Param for Int {
    type Value = i32;
    unsafe fn fixup(param: *mut *mut c_void) -> c_int {
        // SAFETY: as for Str.
        unsafe { sys::fixup_igp_null(param, 1) }
    }
    unsafe fn free(param: *mut *mut c_void) -> c_int {
        // SAFETY: as for Str.
        unsafe { sys::fixup_free_igp_null(param, 1) }
    }
    unsafe fn value(msg: Msg, p: P, what: &str) -> Option<i32> {
        // SAFETY: `p` is the fixed-up parameter of this call.
        let v = unsafe { param::int(msg.as_ptr(), p) };
        if v.is_none() {
            lm_err!("cannot get {what} (not a number?)");
        }
        v
    }
}

/// A usrloc table name: a static string, checked non-empty at startup and kept as it is.
struct Table;
impl Param for Table {
    type Value = &'static CStr;
    unsafe fn fixup(param: *mut *mut c_void) -> c_int {
        // SAFETY: Kamailio passes the address of the parameter's string.
        match unsafe { (*param as *const c_char).as_ref().map(|p| CStr::from_ptr(p)) } {
            Some(t) if !t.is_empty() => 0,
            _ => {
                lm_err!("empty table name (give the usrloc table, e.g. \"location\")");
                -1
            }
        }
    }
    unsafe fn free(_param: *mut *mut c_void) -> c_int {
        0
    }
    unsafe fn value(_msg: Msg, p: P, _what: &str) -> Option<&'static CStr> {
        // SAFETY: checked non-empty by the fixup; a static string for the process's life.
        Some(unsafe { CStr::from_ptr(p) })
    }
}

/// Runs the fixup of parameter `param_no` (1-based) from `fixups`.
unsafe fn fixup_nth(fixups: &[ParamFixup], param: *mut *mut c_void, param_no: c_int) -> c_int {
    match usize::try_from(param_no).ok().and_then(|n| fixups.get(n.wrapping_sub(1))) {
        // SAFETY: Kamailio's own arguments, for a parameter of this kind.
        Some(f) => unsafe { f(param) },
        None => -1,
    }
}

/// A parameter's name in error messages: its `("description")` if it has one, else its own name.
macro_rules! name_of {
    ($what:literal, $arg:ident) => {
        $what
    };
    (, $arg:ident) => {
        stringify!($arg)
    };
}

/// The `extern "C"` function for a script function with these parameters: Kamailio passes two
/// `char*` for functions of up to two parameters, else as many as the function has.
macro_rules! wrapper {
    ($msg:ident, [], $body:block) => {
        unsafe extern "C" fn function(msg: *mut sys::sip_msg, _: P, _: P) -> c_int {
            wrapper!(@body msg, $msg, [], $body)
        }
    };
    ($msg:ident, [$a:ident: $ka:ident $(($wa:literal))?], $body:block) => {
        unsafe extern "C" fn function(msg: *mut sys::sip_msg, $a: P, _: P) -> c_int {
            wrapper!(@body msg, $msg, [$a: $ka $(($wa))?], $body)
        }
    };
    ($msg:ident, [$($a:ident: $ka:ident $(($wa:literal))?),+], $body:block) => {
        unsafe extern "C" fn function(msg: *mut sys::sip_msg, $($a: P),+) -> c_int {
            wrapper!(@body msg, $msg, [$($a: $ka $(($wa))?),+], $body)
        }
    };
    (@body $raw:ident, $msg:ident, [$($a:ident: $ka:ident $(($wa:literal))?),*], $body:block) => {
        guard(-1, || {
            // SAFETY: Kamailio passes the message being processed, for this call.
            let Some($msg) = (unsafe { Msg::from_ptr($raw) }) else { return BAD_PARAM };
            $(
                // SAFETY: the fixed-up parameter of this call, of this kind.
                let Some($a) = (unsafe { <$ka as Param>::value($msg, $a, name_of!($($wa)?, $a)) }) else { return BAD_PARAM };
            )*
            $body
        })
    };
}

/// The `cmd_export_t` table: one entry per line `"name" [uses: expr] => fn(msg, param: Kind,
/// ...) { body }`, where `uses` runs when the script uses the function (its fixup), and each
/// parameter is bound to its value for the call (a `("description")` names it in errors).
macro_rules! script_functions {
    ($table:ident = [$($name:literal $(uses: $hook:expr)? => fn($msg:ident $(, $a:ident: $ka:ident $(($wa:literal))?)*) $body:block)*]) => {
        pub(super) static $table: CTable<[sys::cmd_export_t; [$($name),*].len() + 1]> = CTable([
            $({
                wrapper!($msg, [$($a: $ka $(($wa))?),*], $body);
                const FIXUPS: &[ParamFixup] = &[$(<$ka as Param>::fixup),*];
                const FREES: &[ParamFixup] = &[$(<$ka as Param>::free),*];
                unsafe extern "C" fn fixup(param: *mut *mut c_void, param_no: c_int) -> c_int {
                    guard(-1, || {
                        $($hook;)?
                        // SAFETY: Kamailio's own arguments.
                        unsafe { fixup_nth(FIXUPS, param, param_no) }
                    })
                }
                unsafe extern "C" fn free(param: *mut *mut c_void, param_no: c_int) -> c_int {
                    // SAFETY: as above.
                    guard(-1, || unsafe { fixup_nth(FREES, param, param_no) })
                }
                let params = FIXUPS.len();
                // A function without parameters has no fixup (Kamailio would call it with none).
                let (fixup, free) = if params == 0 { (None, None) } else { (Some(fixup as Fixup), Some(free as Fixup)) };
                cmd(c_str(concat!($name, "\0")), function as *const (), params as c_int, fixup, free)
            },)*
            sys::cmd_export_t { name: null_mut(), function: None, param_no: 0, fixup: None, free_fixup: None, flags: 0 },
        ]);
    };
}

/// Where the functions may be called from: request and failure routes, as the C module's.
const ROUTES: u32 = sys::REQUEST_ROUTE | sys::FAILURE_ROUTE;

const fn cmd(name: &'static CStr, function: *const (), params: c_int, fixup: Option<Fixup>, free: Option<Fixup>) -> sys::cmd_export_t {
    sys::cmd_export_t {
        name: name.as_ptr() as *mut c_char,
        // SAFETY: Kamailio calls a function with as many `char*` parameters as `param_no` says
        // (two for up to two); `wrapper!` declares each with exactly that many.
        function: unsafe { std::mem::transmute::<*const (), sys::cmd_function>(function) },
        param_no: params,
        fixup,
        free_fixup: free,
        flags: ROUTES,
    }
}


script_functions!(CMDS = [
    "ts_store" => fn(msg) { ts_store(msg, None) }
    "ts_store" => fn(msg, uri: Str) { ts_store(msg, Some(&uri)) }
    "ts_append" => fn(_msg, table: Table, ruri: Str) { ts_append(table, &ruri) }
    // The script appends by id: transactions are in flight from their creation (route_frames.rs).
    "ts_append_to" uses: config::enable_births() => fn(_msg, tindex: Int("transaction index"), tlabel: Int("transaction label"), table: Table) {
        ts_append_to(tindex, tlabel, table, None)
    }
    "ts_append_to" uses: config::enable_births() => fn(_msg, tindex: Int("transaction index"), tlabel: Int("transaction label"), table: Table, uri: Str) {
        ts_append_to(tindex, tlabel, table, Some(&uri))
    }
    "ts_append_by_contact" => fn(msg, table: Table, ruri: Str) { ts_append_by_contact(msg, table, &ruri, None) }
    "ts_append_by_contact" => fn(msg, table: Table, ruri: Str, contact: Str) { ts_append_by_contact(msg, table, &ruri, Some(&contact)) }
    "ts_append_branches" => fn(_msg, uri: Str) { ts_append_branches(&uri) }
]);
