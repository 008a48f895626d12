//! The usrloc module's API: only what auto-append needs (contact callbacks).

use crate::kam::str::bytes;
use crate::sys;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// One contact usrloc just inserted or updated: its AoR (`user`, or `user@domain` with usrloc's
/// use_domain) and its URI.
pub struct ContactEvent<'a> {
    pub aor: &'a [u8],
    pub uri: &'a [u8],
}

/// usrloc's use_domain (known once `on_contact_insert_or_update` bound usrloc).
static USE_DOMAIN: AtomicBool = AtomicBool::new(false);

/// Whether usrloc names AoRs `user@domain` (its modparam use_domain), not `user`.
pub fn use_domain() -> bool {
    USE_DOMAIN.load(Relaxed)
}

pub type ContactCallback = unsafe extern "C" fn(*mut sys::ucontact, c_int, *mut std::ffi::c_void);

/// Binds usrloc and registers `f` for contact inserts and updates (mod_init, before fork).
pub fn on_contact_insert_or_update(f: ContactCallback) -> Result<(), &'static str> {
    // SAFETY: looks up usrloc's exported bind function by name (0 if usrloc is not loaded).
    let bind = unsafe { sys::find_export(c"ul_bind_usrloc".as_ptr() as *mut _, 1, 0) };
    if bind.is_none() {
        return Err("cannot find usrloc's API: load the usrloc module before tsilo");
    }
    // SAFETY: ul_bind_usrloc has the bind_usrloc_t signature.
    let bind: unsafe extern "C" fn(*mut sys::usrloc_api_t) -> c_int = unsafe { std::mem::transmute(bind) };
    let mut api = sys::usrloc_api_t::default();
    // SAFETY: fills the API struct.
    if unsafe { bind(&mut api) } < 0 {
        return Err("cannot bind usrloc's API");
    }
    USE_DOMAIN.store(api.use_domain != 0, Relaxed);
    let register = api.register_ulcb.ok_or("usrloc has no register_ulcb")?;
    let types = (sys::UL_CONTACT_INSERT | sys::UL_CONTACT_UPDATE) as c_int;
    // SAFETY: usrloc keeps the function pointer; no parameter.
    if unsafe { register(types, Some(f), std::ptr::null_mut()) } < 0 {
        return Err("cannot register the usrloc contact callback");
    }
    Ok(())
}

/// The event behind a callback's contact pointer.
///
/// # Safety
/// `c` is the contact usrloc passed to the callback, valid during it.
pub unsafe fn event<'a>(c: *mut sys::ucontact) -> Option<ContactEvent<'a>> {
    // SAFETY: the caller's contract; the strings live in usrloc's record for the callback.
    unsafe {
        let c = c.as_ref()?;
        let aor = c.aor.as_ref().map(|a| bytes(a))?;
        Some(ContactEvent { aor, uri: bytes(&c.c) })
    }
}
