//! SIP URI parsing with Kamailio's own parser, so "valid" means what it means to the core.

use crate::kam::str::bytes;
use crate::sys;
use std::marker::PhantomData;

pub struct SipUri<'a> {
    parsed: sys::sip_uri,
    _buf: PhantomData<&'a [u8]>,
}

impl<'a> SipUri<'a> {
    /// None if Kamailio's parser rejects `uri`.
    pub fn parse(uri: &'a [u8]) -> Option<SipUri<'a>> {
        let len = i32::try_from(uri.len()).ok()?;
        let mut parsed = sys::sip_uri::default();
        // SAFETY: parse_uri only reads `len` bytes of the buffer; the parsed fields point into it,
        // which the lifetime 'a ties to `uri`.
        let rc = unsafe { sys::parse_uri(uri.as_ptr() as *mut _, len, &mut parsed) };
        (rc == 0).then_some(SipUri { parsed, _buf: PhantomData })
    }

    pub fn user(&self) -> &'a [u8] {
        // SAFETY: points into the parsed buffer, alive for 'a.
        unsafe { bytes(&self.parsed.user) }
    }

    pub fn host(&self) -> &'a [u8] {
        // SAFETY: as above.
        unsafe { bytes(&self.parsed.host) }
    }
}
