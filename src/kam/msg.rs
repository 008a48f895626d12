//! Reading the SIP message being processed.

use crate::kam::str::bytes;
use crate::sys;

/// The request URI as the script sees it now: the new R-URI if the script changed it, else the
/// one received.
///
/// # Safety
/// `msg` is the live request passed to the current script function.
pub unsafe fn request_uri<'a>(msg: *mut sys::sip_msg) -> &'a [u8] {
    // SAFETY: the caller's contract; both strs point into the message's buffers.
    unsafe {
        let m = &*msg;
        if !m.new_uri.s.is_null() && m.new_uri.len > 0 {
            bytes(&m.new_uri)
        } else {
            bytes(&m.first_line.u.request.uri)
        }
    }
}
