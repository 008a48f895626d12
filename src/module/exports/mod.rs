//! What Kamailio loads: the version symbols, `exports` (script functions, parameters, RPC),
//! `mod_register` (KEMI), and the module's life cycle (mod_init before fork, destroy at exit).
//! Everything Kamailio calls is in this directory; each entry point goes through `guard`.

mod callbacks;
mod kemi;
mod rpc;
mod script;
mod stats;

use super::{append, auto_append, config, create_silo, destroy_silo, store};
use crate::kam::export::{CStrPtr, CTable};
use crate::kam::guard::{guard, install_panic_hook};
use crate::kam::str::show;
use crate::kam::{registrar, script_cb, tm, usrloc};
use crate::sys;
use std::ffi::{c_char, c_int, c_void};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicI32, AtomicPtr};

// ---- the loader's version check (core/sr_module.c) ----

#[unsafe(no_mangle)]
pub static module_version: CStrPtr = CStrPtr(sys::version::FULL_VERSION.as_ptr());
#[unsafe(no_mangle)]
pub static module_flags: CStrPtr = CStrPtr(sys::version::COMPILE_FLAGS.as_ptr());
#[unsafe(no_mangle)]
pub static module_interface_ver: u32 = sys::version::INTERFACE_VER;

// ---- parameters (modparam writes them, in the main process, before mod_init) ----

const fn int_param(name: &'static std::ffi::CStr, value: &'static AtomicI32) -> sys::param_export_t {
    sys::param_export_t { name: name.as_ptr() as *mut c_char, type_: sys::PARAM_INT, param_pointer: value.as_ptr() as *mut c_void }
}

/// modparam stores a pointer to its (pkg-copied, NUL-terminated) string here.
const fn string_param(name: &'static std::ffi::CStr, value: &'static AtomicPtr<c_char>) -> sys::param_export_t {
    sys::param_export_t { name: name.as_ptr() as *mut c_char, type_: sys::PARAM_STRING, param_pointer: value.as_ptr() as *mut c_void }
}

static PARAMS: CTable<[sys::param_export_t; 7]> = CTable([
    int_param(c"hash_size", &config::HASH_SIZE),
    int_param(c"use_domain", &config::USE_DOMAIN),
    int_param(c"max_transactions", &config::MAX_TRANSACTIONS),
    int_param(c"max_transactions_per_aor", &config::MAX_TRANSACTIONS_PER_AOR),
    string_param(c"auto_append", &config::AUTO_APPEND),
    string_param(c"resume_route", &config::RESUME_ROUTE),
    sys::param_export_t { name: null_mut(), type_: 0, param_pointer: null_mut() },
]);

#[unsafe(no_mangle)]
pub static exports: CTable<sys::module_exports> = CTable(sys::module_exports {
    name: c"tsilo".as_ptr() as *mut c_char,
    dlflags: sys::DEFAULT_DLFLAGS,
    cmds: script::CMDS.0.as_ptr() as *mut _,
    params: PARAMS.0.as_ptr() as *mut _,
    rpc_methods: rpc::METHODS.0.as_ptr() as *mut _,
    pv_items: null_mut(),
    response_f: None,
    init_mod_f: Some(mod_init),
    init_child_f: Some(child_init),
    destroy_mod_f: Some(destroy),
});

/// Called at load time, before mod_init: the place to register KEMI functions.
#[unsafe(no_mangle)]
pub extern "C" fn mod_register(_path: *mut c_char, _dlflags: *mut c_int, _p1: *mut c_void, _p2: *mut c_void) -> c_int {
    install_panic_hook();
    guard(-1, kemi::register)
}

// ---- the life cycle ----

extern "C" fn mod_init() -> c_int {
    guard(-1, || match init() {
        Ok(()) => 0,
        Err(e) => {
            lm_err!("{e}");
            -1
        }
    })
}

fn init() -> Result<(), String> {
    // Tells the operator which tsilo this is (the package replaces the C one in place).
    lm_info!("{}", banner());
    if !tm::load() {
        return Err("cannot load the TM API: load the tm module before tsilo".into());
    }
    if !registrar::load() {
        return Err("cannot load the REGISTRAR API: load the registrar module before tsilo".into());
    }
    create_silo()?;
    append::arm_failpoints();
    store::set_destroy_callback(callbacks::on_destroy);
    if !script_cb::register(callbacks::on_route_start, callbacks::on_route_end) || !tm::on_request_in(callbacks::on_request_in) {
        return Err("failed to register the script and TM callbacks".into());
    }
    // SAFETY: the engine is chosen while the config is parsed, before modules initialise.
    if !unsafe { sys::sr_kemi_eng_get() }.is_null() {
        // A KEMI script may call ts_append_to() (a native one says so in its fixup).
        config::enable_births();
    }
    // SAFETY: a core registration before fork; the timer process calls `sweep_misses`.
    if unsafe { sys::register_timer(Some(callbacks::sweep_misses), null_mut(), 1) } < 0 {
        return Err("failed to register the timer that frees old misses".into());
    }
    if !stats::register() {
        return Err("failed to register the statistics".into());
    }
    if let Some(name) = config::resume_route() {
        let Some(route) = crate::kam::route::Continue::find(name) else {
            return Err(format!("resume_route: route[{}] is not defined in the script", show(name.to_bytes())));
        };
        append::set_resume_route(route);
    }
    if let Some(table) = config::auto_append() {
        if table.is_empty() {
            return Err("auto_append: empty table name".into());
        }
        auto_append::init(table.to_bytes())?;
        usrloc::on_contact_insert_or_update(callbacks::on_contact)?;
        lm_info!("auto_append on: new contacts in {} get branches of stored calls", show(table.to_bytes()));
    }
    Ok(())
}

/// `tsilo (Rust) 0.1.0 for Kamailio 5.6.3`: the Kamailio version is the one built against, which
/// the loader has just checked is the one running.
fn banner() -> String {
    let full = sys::version::FULL_VERSION.to_string_lossy();
    let kamailio = full.split_whitespace().nth(1).unwrap_or("?");
    format!("tsilo (Rust) {} for Kamailio {kamailio}", env!("CARGO_PKG_VERSION"))
}

extern "C" fn child_init(rank: c_int) -> c_int {
    guard(-1, || {
        if rank == sys::PROC_MAIN as c_int && !auto_append::start() {
            lm_err!("cannot start the auto-append process");
            return -1;
        }
        0
    })
}

extern "C" fn destroy() {
    guard((), destroy_silo)
}
