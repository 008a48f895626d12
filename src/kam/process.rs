//! A process of the module's own, forked by the main process like Kamailio's timers.

use crate::sys;
use std::ffi::CStr;

/// Reserves one process slot and a config handle for it (mod_init).
pub fn reserve_one() -> bool {
    // SAFETY: plain registrations, before fork.
    unsafe {
        sys::cfg_register_child(1);
        sys::register_procs(1) == 0
    }
}

/// Forks the reserved process (child_init of PROC_MAIN); the child runs `body` and never
/// returns. False if the fork failed.
pub fn spawn(desc: &'static CStr, body: fn() -> !) -> bool {
    // SAFETY: forks through Kamailio so the process is known to it (pt table, sockets).
    let pid = unsafe { sys::fork_process(sys::PROC_NOCHLDINIT, desc.as_ptr() as *mut _, 1) };
    if pid < 0 {
        return false;
    }
    if pid == 0 {
        // SAFETY: gives the child its own config handle, as Kamailio's own processes do.
        if unsafe { sys::cfg_child_init() } != 0 {
            lm_err!("cfg_child_init failed in {}", desc.to_string_lossy());
            std::process::exit(-1);
        }
        body();
    }
    true
}

/// Picks up config changes: call at the top of each round of the process's loop.
pub fn cfg_update() {
    // SAFETY: the process did cfg_child_init.
    unsafe { sys::tsilo_shim_cfg_update() }
}
