//! Kamailio's `str` (pointer + length, not NUL-terminated) <-> byte slices.

use crate::sys::str_;

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

/// For log lines: invalid UTF-8 shown lossily.
pub fn show(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}
