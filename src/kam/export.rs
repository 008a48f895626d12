//! Tables Kamailio reads from us (exports, cmds, params, RPC, KEMI) hold raw pointers, which
//! Rust statics may only hold behind a `Sync` wrapper.

/// A C table in a Rust static. Kamailio only reads these (or writes the int params through
/// their own atomics), so sharing them is sound.
#[repr(transparent)]
pub struct CTable<T>(pub T);

// SAFETY: see above: immutable after load, read by Kamailio in one process before fork.
unsafe impl<T> Sync for CTable<T> {}

/// A `char *` symbol the loader reads (`module_version`, `module_flags`).
#[repr(transparent)]
pub struct CStrPtr(pub *const std::ffi::c_char);

// SAFETY: points to a 'static C string literal.
unsafe impl Sync for CStrPtr {}

/// A `&'static CStr` of a literal built with `concat!(..., "\0")` (in a macro, where `c"..."`
/// cannot be built); panics at compile time if it is not one.
pub const fn c_str(s: &'static str) -> &'static std::ffi::CStr {
    match std::ffi::CStr::from_bytes_with_nul(s.as_bytes()) {
        Ok(c) => c,
        Err(_) => panic!("not a NUL-terminated string without inner NULs"),
    }
}
