//! Routing-script blocks by name, for running one from the module (t_continue).

use crate::sys;
use std::ffi::{CStr, CString};

/// Where a resumed transaction goes on (TM's t_continue): a `route[NAME]` block of the native
/// script, or, with a KEMI config (`cfgengine "lua"`, ...), the script's function NAME.
pub enum Continue {
    Native(Route),
    Kemi(CString),
}

impl Continue {
    /// `name` in the config's routing engine; None if the native script has no such route (a
    /// KEMI script's functions cannot be checked before the script runs).
    pub fn find(name: &CStr) -> Option<Continue> {
        // SAFETY: the engine is chosen while the config is parsed, before modules initialise.
        if unsafe { sys::sr_kemi_eng_get() }.is_null() {
            Route::find(name).map(Continue::Native)
        } else {
            Some(Continue::Kemi(name.to_owned()))
        }
    }
}

/// A `route[NAME]` block of the native script.
#[derive(Clone, Copy)]
pub struct Route(*mut sys::action);

// SAFETY: the actions are built at config parse time and never change afterwards.
unsafe impl Send for Route {}
unsafe impl Sync for Route {}

impl Route {
    /// The block `route[name]`, if the script defines it (after the config is parsed).
    pub fn find(name: &CStr) -> Option<Route> {
        // SAFETY: reads the core's request-route table, complete once the config is parsed.
        unsafe {
            let rt = &raw mut sys::main_rt;
            let idx = sys::route_lookup(rt, name.as_ptr() as *mut _);
            if idx < 0 || idx >= (*rt).entries {
                return None;
            }
            let actions = *(*rt).rlist.add(idx as usize);
            (!actions.is_null()).then_some(Route(actions))
        }
    }

    pub fn actions(self) -> *mut sys::action {
        self.0
    }
}
