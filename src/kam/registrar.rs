//! The registrar module's API (registrar_api_t), bound once in mod_init.

use crate::sys;
use once_cell::sync::OnceCell;

struct Binds(sys::registrar_api_t);
// SAFETY: only function pointers, written once before fork and read-only afterwards.
unsafe impl Send for Binds {}
unsafe impl Sync for Binds {}

static REGISTRAR: OnceCell<Binds> = OnceCell::new();

/// Binds the registrar's API; fails (with the registrar's own log line) when it is not loaded.
pub fn load() -> bool {
    REGISTRAR
        .get_or_try_init(|| {
            let mut api = sys::registrar_api_t::default();
            // SAFETY: fills the struct through registrar's exported `bind_registrar`.
            match unsafe { sys::tsilo_shim_load_registrar_api(&mut api) } {
                0 => Ok(Binds(api)),
                _ => Err(()),
            }
        })
        .is_ok()
}
