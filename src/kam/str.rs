//! Kamailio's `str` (pointer + length, not NUL-terminated) <-> byte slices.

use crate::sys::str_;
use std::borrow::Cow;

/// The bytes of a Kamailio `str`; empty for a null pointer or a non-positive length.
///
/// # Safety
/// `s` describes readable memory that outlives `'a`.
pub unsafe fn bytes<'a>(s: &str_) -> &'a [u8] {
    if s.s.is_null() || s.len <= 0 {
        return &[];
    }
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(s.s as *const u8, s.len as usize) }
}

/// A `str` borrowing `b` (Kamailio APIs take `str*` even where they only read).
pub fn borrowed(b: &[u8]) -> str_ {
    str_ { s: b.as_ptr() as *mut _, len: b.len() as i32 }
}

/// Most bytes of a value `show` puts in a log line: a caller controls URIs and headers (a
/// 256 KB AoR fits in a script variable), and one log line must not carry all of it.
pub const SHOWN_MAX: usize = 256;

/// `b`, or its first `max` bytes followed by `...(<length> bytes)` when it is longer.
pub fn clipped(b: &[u8], max: usize) -> Cow<'_, [u8]> {
    if b.len() <= max {
        return Cow::Borrowed(b);
    }
    let mut v = b[..max].to_vec();
    v.extend_from_slice(format!("...({} bytes)", b.len()).as_bytes());
    Cow::Owned(v)
}

/// For log lines: at most `SHOWN_MAX` bytes of `b` (see `clipped`), invalid UTF-8 shown lossily.
/// Every log line that carries bytes a caller controls goes through here.
pub fn show(b: &[u8]) -> Cow<'_, str> {
    match clipped(b, SHOWN_MAX) {
        Cow::Borrowed(b) => String::from_utf8_lossy(b),
        Cow::Owned(v) => Cow::Owned(String::from_utf8_lossy(&v).into_owned()),
    }
}
