//! Another module's settings in Kamailio's configuration framework (`cfg_get()` in C): read
//! from this process's copy of the group, the one that module itself reads, which the core
//! refreshes (cfg_update) before each message, so a runtime `cfg.set` is followed as it is there.

use crate::kam::str::{borrowed, bytes};
use crate::sys;
use std::ffi::{CStr, c_void};

/// One variable of a configuration group.
#[derive(Clone, Copy)]
pub struct CfgVar {
    /// The group's per-process handle: points to this process's current block of values.
    handle: *mut *mut c_void,
    offset: usize,
}
// SAFETY: only a location in this process's (forked) image; each process reads its own copy.
unsafe impl Send for CfgVar {}
unsafe impl Sync for CfgVar {}

impl CfgVar {
    /// The variable `name` of group `group` (a module's name), if that module declared it.
    /// Groups are declared in the modules' mod_init: look up after that (not from ours, which
    /// may run first).
    pub fn lookup(group: &CStr, name: &CStr) -> Option<CfgVar> {
        let (mut gname, mut vname) = (borrowed(group.to_bytes()), borrowed(name.to_bytes()));
        let (mut g, mut v) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: the names are only read; on success g and v point to the framework's records,
        // which live as long as Kamailio.
        if unsafe { sys::cfg_lookup_var(&mut gname, &mut vname, &mut g, &mut v) } != 0 {
            return None;
        }
        // SAFETY: set by cfg_lookup_var on success (above).
        let (g, v) = unsafe { (g.as_ref()?, v.as_ref()?) };
        (!g.handle.is_null()).then_some(CfgVar { handle: g.handle, offset: usize::try_from(v.offset).ok()? })
    }

    fn at<T>(&self) -> *const T {
        // SAFETY: the handle is a static of the declaring module; it points to a block that
        // holds the group's variables, this one at `offset`.
        unsafe { (*self.handle as *const u8).add(self.offset) as *const T }
    }

    /// An integer variable (CFG_VAR_INT).
    pub fn int(&self) -> i32 {
        // SAFETY: see `at`; the caller looked up an integer variable.
        unsafe { self.at::<i32>().read() }
    }

    /// A string variable (CFG_VAR_STR), copied (the block may be replaced by the next cfg_update).
    pub fn string(&self) -> Vec<u8> {
        // SAFETY: see `at`; the caller looked up a string variable, a `str` in the block.
        unsafe { bytes(&*self.at::<sys::str_>()).to_vec() }
    }
}
