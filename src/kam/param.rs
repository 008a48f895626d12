//! Script function parameters after Kamailio's fixups (fixup_spve_null, fixup_igp_null):
//! static strings or pseudo-variables, evaluated per message.

use crate::kam::str::bytes;
use crate::sys;
use std::ffi::c_char;

/// The string value of a `fixup_spve_*` parameter for `msg`; None if it cannot be evaluated.
///
/// # Safety
/// `param` is the fixed-up parameter Kamailio passed to the script function along with `msg`.
pub unsafe fn string<'a>(msg: *mut sys::sip_msg, param: *mut c_char) -> Option<&'a [u8]> {
    if param.is_null() {
        return None;
    }
    let mut value = sys::str_::default();
    // SAFETY: the caller's contract; the value points into the message or a PV buffer valid for
    // the rest of this call. (fixup_get_svalue is a macro over get_str_fparam.)
    match unsafe { sys::get_str_fparam(&mut value, msg, param as *mut sys::fparam_t) } {
        // SAFETY: on success `value` describes the evaluated string (see above).
        0 => Some(unsafe { bytes(&value) }),
        _ => None,
    }
}

/// The integer value of a `fixup_igp_*` parameter; None for a value that is not a number.
///
/// # Safety
/// As for `string`.
pub unsafe fn int(msg: *mut sys::sip_msg, param: *mut c_char) -> Option<i32> {
    if param.is_null() {
        return None;
    }
    let mut value = 0;
    // SAFETY: the caller's contract. (fixup_get_ivalue is a macro over get_int_fparam.)
    match unsafe { sys::get_int_fparam(&mut value, msg, param as *mut sys::fparam_t) } {
        0 => Some(value),
        _ => None,
    }
}
