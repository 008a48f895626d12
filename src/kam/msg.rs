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

/// The URI of the first Contact of a request (a REGISTER), or why there is none usable.
///
/// # Safety
/// As for `request_uri`.
pub unsafe fn first_contact_uri<'a>(msg: *mut sys::sip_msg) -> Result<&'a [u8], &'static str> {
    // SAFETY: the caller's contract; the parsers fill fields of this message.
    unsafe {
        if (*msg).contact.is_null() && sys::parse_headers(msg, 1 << sys::_hdr_types_t_HDR_CONTACT_T, 0) != 0 {
            return Err("cannot parse the message headers");
        }
        let hdr = (*msg).contact;
        if hdr.is_null() {
            return Err("no Contact header");
        }
        if sys::parse_contact(hdr) < 0 {
            return Err("malformed Contact header");
        }
        let body = (*hdr).parsed as *const sys::contact_body_t;
        if body.is_null() || (*body).star != 0 {
            return Err("Contact: * (a de-registration) names no contact");
        }
        let first = (*body).contacts;
        if first.is_null() {
            return Err("empty Contact header");
        }
        Ok(bytes(&(*first).uri))
    }
}
