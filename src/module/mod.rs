//! What Kamailio loads: the version symbols, `exports` (script functions, parameters, RPC),
//! `mod_register` (KEMI), and the module's life cycle (mod_init before fork, destroy at exit).

mod aor;
mod append;
mod auto_append;
mod kemi;
mod config;
mod on_destroy;
mod request;
mod route_frames;
mod rpc;
mod script;
mod stats;
mod store;

use crate::kam::export::{CStrPtr, CTable};
use crate::kam::guard::{guard, install_panic_hook};
use crate::kam::shm::KamShm;
use crate::kam::{registrar, tm};
use crate::silo::{Limits, Silo, sanitize_hash_size};
use crate::sys;
use once_cell::sync::OnceCell;
use std::ffi::{c_char, c_int, c_void};
use std::ptr::{NonNull, null_mut};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering::Relaxed};

// ---- the loader's version check (core/sr_module.c) ----

#[unsafe(no_mangle)]
pub static module_version: CStrPtr = CStrPtr(sys::version::FULL_VERSION.as_ptr());
#[unsafe(no_mangle)]
pub static module_flags: CStrPtr = CStrPtr(sys::version::COMPILE_FLAGS.as_ptr());
#[unsafe(no_mangle)]
pub static module_interface_ver: u32 = sys::version::INTERFACE_VER;

// ---- parameters (modparam writes them, in the main process, before mod_init) ----

static HASH_SIZE: AtomicI32 = AtomicI32::new(2048);
static USE_DOMAIN: AtomicI32 = AtomicI32::new(0);
// Bounds (README, section 3): beyond them ts_store returns -3. A pending INVITE costs TM 5 to
// 13 KB of shm, so a million is beyond any shm size in use (the global bound is a backstop);
// 100 ringing calls for one user is a flood, not a person (the bound that bites).
static MAX_TRANSACTIONS: AtomicI32 = AtomicI32::new(1_000_000);
static MAX_TRANSACTIONS_PER_AOR: AtomicI32 = AtomicI32::new(100);
/// auto_append: the usrloc table whose new contacts get branches without ts_append() (off: null).
static AUTO_APPEND: AtomicPtr<c_char> = AtomicPtr::new(null_mut());
/// resume_route: the route an append runs (t_continue) on a suspended stored call (off: null).
static RESUME_ROUTE: AtomicPtr<c_char> = AtomicPtr::new(null_mut());

/// Whether AoRs are keyed by the whole URI (`use_domain`), or by its user part.
pub fn use_domain() -> bool {
    USE_DOMAIN.load(Relaxed) != 0
}

const fn int_param(name: &'static std::ffi::CStr, value: &'static AtomicI32) -> sys::param_export_t {
    sys::param_export_t { name: name.as_ptr() as *mut c_char, type_: sys::PARAM_INT, param_pointer: value.as_ptr() as *mut c_void }
}

static PARAMS: CTable<[sys::param_export_t; 7]> = CTable([
    int_param(c"hash_size", &HASH_SIZE),
    int_param(c"use_domain", &USE_DOMAIN),
    int_param(c"max_transactions", &MAX_TRANSACTIONS),
    int_param(c"max_transactions_per_aor", &MAX_TRANSACTIONS_PER_AOR),
    sys::param_export_t {
        name: c"auto_append".as_ptr() as *mut c_char,
        type_: sys::PARAM_STRING,
        param_pointer: AUTO_APPEND.as_ptr() as *mut c_void,
    },
    sys::param_export_t {
        name: c"resume_route".as_ptr() as *mut c_char,
        type_: sys::PARAM_STRING,
        param_pointer: RESUME_ROUTE.as_ptr() as *mut c_void,
    },
    sys::param_export_t { name: null_mut(), type_: 0, param_pointer: null_mut() },
]);

// ---- script functions ----

const ROUTES: u32 = sys::REQUEST_ROUTE | sys::FAILURE_ROUTE;

type Fixup = unsafe extern "C" fn(*mut *mut c_void, c_int) -> c_int;

const fn cmd(name: &'static std::ffi::CStr, function: *const (), params: c_int, fixup: Option<Fixup>, free: Option<Fixup>) -> sys::cmd_export_t {
    sys::cmd_export_t {
        name: name.as_ptr() as *mut c_char,
        // SAFETY: Kamailio calls a function with as many `char*` parameters as `param_no` says;
        // each wrapper is declared with exactly that many.
        function: unsafe { std::mem::transmute::<*const (), sys::cmd_function>(function) },
        param_no: params,
        fixup,
        free_fixup: free,
        flags: ROUTES,
    }
}

static CMDS: CTable<[sys::cmd_export_t; 9]> = CTable([
    cmd(c"ts_store", script::w_ts_store0 as *const (), 0, None, None),
    cmd(c"ts_store", script::w_ts_store1 as *const (), 1, Some(sys::fixup_spve_null), Some(sys::fixup_free_spve_null)),
    cmd(c"ts_append", script::w_ts_append as *const (), 2, Some(script::fixup_table_spve), Some(script::fixup_free_table_spve)),
    cmd(c"ts_append_to", script::w_ts_append_to3 as *const (), 3, Some(script::fixup_append_to), Some(script::fixup_free_append_to)),
    cmd(c"ts_append_to", script::w_ts_append_to4 as *const (), 4, Some(script::fixup_append_to), Some(script::fixup_free_append_to)),
    cmd(c"ts_append_by_contact", script::w_ts_append_by_contact2 as *const (), 2, Some(script::fixup_table_spve), Some(script::fixup_free_table_spve)),
    cmd(c"ts_append_by_contact", script::w_ts_append_by_contact3 as *const (), 3, Some(script::fixup_table_spve), Some(script::fixup_free_table_spve)),
    cmd(c"ts_append_branches", script::w_ts_append_branches as *const (), 1, Some(sys::fixup_spve_null), Some(sys::fixup_free_spve_null)),
    sys::cmd_export_t { name: null_mut(), function: None, param_no: 0, fixup: None, free_fixup: None, flags: 0 },
]);

#[unsafe(no_mangle)]
pub static exports: CTable<sys::module_exports> = CTable(sys::module_exports {
    name: c"tsilo".as_ptr() as *mut c_char,
    dlflags: sys::DEFAULT_DLFLAGS,
    cmds: CMDS.0.as_ptr() as *mut _,
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

// ---- the silo, shared by every process ----

struct SiloRef(NonNull<Silo<KamShm>>);
// SAFETY: the silo lives in shm and synchronises itself (per-slot cross-process locks, atomics).
unsafe impl Send for SiloRef {}
unsafe impl Sync for SiloRef {}

/// Set in mod_init, before fork: every child inherits the pointer.
static SILO: OnceCell<SiloRef> = OnceCell::new();
/// Set once destroy() has freed the silo: late TM callbacks must not touch it.
static SILO_GONE: AtomicBool = AtomicBool::new(false);

pub fn silo() -> Option<&'static Silo<KamShm>> {
    if SILO_GONE.load(Relaxed) {
        return None;
    }
    // SAFETY: created in mod_init, freed only at shutdown (after which SILO_GONE is set).
    SILO.get().map(|s| unsafe { s.0.as_ref() })
}

extern "C" fn mod_init() -> c_int {
    guard(-1, || {
        // Tells the operator which tsilo this is (the package replaces the C one in place).
        lm_info!("{}", banner());
        if !tm::load() {
            lm_err!("cannot load the TM API: load the tm module before tsilo");
            return -1;
        }
        if !registrar::load() {
            lm_err!("cannot load the REGISTRAR API: load the registrar module before tsilo");
            return -1;
        }
        let (size, warning) = sanitize_hash_size(i64::from(HASH_SIZE.load(Relaxed)));
        if let Some(w) = warning {
            lm_warn!("{w}");
        }
        let limits = Limits {
            max_transactions: u64::try_from(MAX_TRANSACTIONS.load(Relaxed)).unwrap_or(0),
            max_per_aor: u32::try_from(MAX_TRANSACTIONS_PER_AOR.load(Relaxed)).unwrap_or(0),
        };
        // A table larger than the shared memory left is refused here, with the numbers the
        // operator needs: shm_malloc's failure alone does not say that hash_size is the cause.
        let needed = Silo::<KamShm>::table_bytes(size);
        let free = crate::kam::shm::available();
        if needed > free {
            lm_err!("{}", table_too_big(size, needed, free));
            return -1;
        }
        let Some(silo) = Silo::create(KamShm, size, limits) else {
            // Free memory in pieces none of which is large enough.
            lm_err!("{}", table_too_big(size, needed, crate::kam::shm::available()));
            return -1;
        };
        if SILO.set(SiloRef(silo)).is_err() {
            lm_err!("mod_init called twice");
            return -1;
        }
        append::arm_failpoints();
        if !route_frames::register() {
            lm_err!("failed to register the script and TM callbacks");
            return -1;
        }
        // SAFETY: the engine is chosen while the config is parsed, before modules initialise.
        if !unsafe { sys::sr_kemi_eng_get() }.is_null() {
            // A KEMI script may call ts_append_to() (a native one says so in its fixup).
            config::enable_births();
        }
        // SAFETY: a core registration before fork; the timer process calls `sweep_misses`.
        if unsafe { sys::register_timer(Some(sweep_misses), null_mut(), 1) } < 0 {
            lm_err!("failed to register the timer that frees old misses");
            return -1;
        }
        if !stats::register() {
            lm_err!("failed to register the statistics");
            return -1;
        }
        let resume = RESUME_ROUTE.load(Relaxed);
        if !resume.is_null() {
            // SAFETY: modparam stored a NUL-terminated string that lives for the process.
            let name = unsafe { std::ffi::CStr::from_ptr(resume) };
            let Some(route) = crate::kam::route::Continue::find(name) else {
                lm_err!("resume_route: route[{}] is not defined in the script", crate::kam::str::show(name.to_bytes()));
                return -1;
            };
            append::set_resume_route(route);
        }
        let auto = AUTO_APPEND.load(Relaxed);
        if !auto.is_null() {
            // SAFETY: modparam stored a NUL-terminated string that lives for the process.
            let table = unsafe { std::ffi::CStr::from_ptr(auto) }.to_bytes();
            if table.is_empty() {
                lm_err!("auto_append: empty table name");
                return -1;
            }
            if let Err(e) = auto_append::init(table) {
                lm_err!("{e}");
                return -1;
            }
            lm_info!("auto_append on: new contacts in {} get branches of stored calls", crate::kam::str::show(table));
        }
        lm_dbg!("table created with {size} slots");
        0
    })
}

/// Every second, in the timer process: frees the misses kept longer than their TTL (silo/miss.rs),
/// and says when misses had to be dropped (a REGISTER flood of AoRs with nothing stored).
unsafe extern "C" fn sweep_misses(_ticks: u32, _param: *mut c_void) {
    static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    guard((), || {
        let Some(silo) = silo() else { return };
        silo.prune_misses(crate::kam::process::monotonic_ms());
        let (_, _, dropped) = silo.miss_totals();
        let before = DROPPED.swap(dropped, Relaxed);
        if dropped > before {
            lm_warn!(
                "{} append(s) that found no stored call were not remembered for a catch-up ({} KB of misses kept at most)",
                dropped - before,
                crate::silo::MISS_MAX_BYTES / 1024
            );
        }
    })
}

/// Why the table cannot be created: hash_size, what its table needs and what `-m` gives.
fn table_too_big(size: u32, needed: usize, free: usize) -> String {
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let total = crate::kam::shm::total();
    format!(
        "hash_size {size}: the table needs {needed} bytes ({:.1} MiB) of shared memory, more than the {free} bytes \
         ({:.1} MiB) free of the {total} bytes ({:.1} MiB) that -m gives: lower hash_size or raise -m",
        mib(needed),
        mib(free),
        mib(total)
    )
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
    guard((), || {
        let Some(s) = SILO.get() else { return };
        if SILO_GONE.swap(true, Relaxed) {
            return;
        }
        // SAFETY: at destroy time the workers are gone; TMCB_DESTROY callbacks check SILO_GONE
        // (and destroy_modules_phase) before touching the silo.
        unsafe { Silo::destroy(s.0) };
    })
}
