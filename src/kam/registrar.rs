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

/// Puts the contacts registered in `table` for `uri` (or for the request's R-URI) into the
/// process's destination set, for `msg` (a transaction's own copy of its INVITE). True when at
/// least one contact was found.
pub fn lookup_to_dset(msg: crate::kam::msg::Msg, table: &std::ffi::CStr, uri: Option<&[u8]>) -> bool {
    let api = &REGISTRAR.get().expect("registrar API used before mod_init bound it").0;
    // usrloc finds the table by its NUL-terminated name.
    let mut table = sys::str_ { s: table.as_ptr() as *mut _, len: table.to_bytes().len() as i32 };
    let mut uri = uri.map(crate::kam::str::borrowed);
    let uri_ptr = uri.as_mut().map_or(std::ptr::null_mut(), |u| u as *mut sys::str_);
    // SAFETY: a live message (Msg); the strs outlive the call.
    unsafe { api.lookup_to_dset.unwrap()(msg.as_ptr(), &mut table, uri_ptr) == 1 }
}

/// The registrar's settings that shape an AoR, as it reads them when it names one (its cfg
/// group `registrar`, variables `case_sensitive` and `realm_pref`, the modparams
/// `case_sensitive` and `realm_prefix`). Without the registrar: case-sensitive, no prefix (the
/// key is then the user as written).
pub struct AorSettings {
    pub case_sensitive: bool,
    pub realm_prefix: Vec<u8>,
}

pub fn aor_settings() -> AorSettings {
    use crate::kam::cfg::CfgVar;
    // Looked up on first use, in a worker: the registrar declares its group in its mod_init.
    static VARS: OnceCell<Option<(CfgVar, CfgVar)>> = OnceCell::new();
    let vars = VARS.get_or_init(|| Some((CfgVar::lookup(c"registrar", c"case_sensitive")?, CfgVar::lookup(c"registrar", c"realm_pref")?)));
    match vars {
        Some((case, prefix)) => AorSettings { case_sensitive: case.int() != 0, realm_prefix: prefix.string() },
        None => AorSettings { case_sensitive: true, realm_prefix: Vec::new() },
    }
}
