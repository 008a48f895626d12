//! The SIP message being processed.

use crate::kam::str::bytes;
use crate::sys;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// The message Kamailio passed to the running script function (or KEMI function): valid, and
/// this process's own, for as long as that call runs (`'a`).
#[derive(Clone, Copy)]
pub struct Msg<'a>(NonNull<sys::sip_msg>, PhantomData<&'a mut sys::sip_msg>);

impl<'a> Msg<'a> {
    /// None for a null pointer.
    ///
    /// # Safety
    /// `msg` is the message Kamailio passed to the calling entry point, and `'a` does not
    /// outlive that call.
    pub unsafe fn from_ptr(msg: *mut sys::sip_msg) -> Option<Self> {
        NonNull::new(msg).map(|m| Msg(m, PhantomData))
    }

    pub fn as_ptr(self) -> *mut sys::sip_msg {
        self.0.as_ptr()
    }

    /// The request URI as the script sees it now: the new R-URI if the script changed it, else
    /// the one received.
    pub fn request_uri(self) -> &'a [u8] {
        // SAFETY: a live message (see `from_ptr`); both strs point into its buffers.
        unsafe {
            let m = self.0.as_ref();
            if !m.new_uri.s.is_null() && m.new_uri.len > 0 {
                bytes(&m.new_uri)
            } else {
                bytes(&m.first_line.u.request.uri)
            }
        }
    }

    /// The URI of the first Contact of a request (a REGISTER), or why there is none usable.
    pub fn first_contact_uri(self) -> Result<&'a [u8], &'static str> {
        let msg = self.as_ptr();
        // SAFETY: a live message (see `from_ptr`); the parsers fill fields of this message.
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
}
