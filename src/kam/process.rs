//! A process of the module's own, forked by the main process like Kamailio's own extra workers
//! (dmq workers, async task workers): every module's child_init runs in it, so the script code
//! it runs (branch routes of appended branches, resume routes) finds each module initialised
//! for this process (database handles, rtpengine's node list, ...).

use crate::sys;
use std::ffi::{CStr, c_int};

/// The rank Kamailio's own extra workers get: child_init of every module, as an RPC-type
/// process (no SIP listener of its own; it sends through the shared sockets).
const RANK: c_int = sys::PROC_RPC as c_int;

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
pub fn spawn(desc: &'static CStr, body: fn()) -> bool {
    // SAFETY: a plain query, before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: forks through Kamailio so the process is known to it (pt table, sockets), and
    // runs every module's child_init in the child.
    let pid = unsafe { sys::fork_process(RANK, desc.as_ptr() as *mut _, 1) };
    // SAFETY: as above.
    let in_child = pid == 0 || (pid < 0 && unsafe { libc::getpid() } != parent);
    if !in_child {
        return pid >= 0;
    }
    let name = desc.to_string_lossy();
    if pid < 0 {
        // fork_process returns -1 in the child when a module's child_init failed there: the
        // child must not go back into the main process's start-up code.
        lm_crit!("a module's child_init failed in the {name} process: it exits");
        // SAFETY: leaves the child at once, as a process Kamailio started.
        unsafe { libc::_exit(-1) };
    }
    // SAFETY: gives the child its own config handle, as Kamailio's own processes do.
    if unsafe { sys::cfg_child_init() } != 0 {
        lm_crit!("cfg_child_init failed in the {name} process: it exits");
        // SAFETY: as above.
        unsafe { libc::_exit(-1) };
    }
    // `body` loops forever; a panic out of it (its per-item work is guarded) ends the process
    // here, never unwinding into Kamailio's child_init code.
    let _ = std::panic::catch_unwind(body);
    lm_crit!("the {name} process stopped on a panic: it exits");
    // SAFETY: as above.
    unsafe { libc::_exit(-1) }
}

/// Picks up config changes: call at the top of each round of the process's loop.
pub fn cfg_update() {
    // SAFETY: the process did cfg_child_init.
    unsafe { sys::tsilo_shim_cfg_update() }
}

/// Forgets the per-message state a SIP worker resets after every message (AVPs, XAVPs and
/// their kin: ksr_msg_env_reset): for a process that runs no message of its own.
pub fn reset_message_env() {
    // SAFETY: frees this process's AVP/XAVP lists; nothing of ours points into them.
    unsafe { sys::ksr_msg_env_reset() }
}

/// Milliseconds of the system's monotonic clock: the same in every process, never set back.
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: fills a local timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}
