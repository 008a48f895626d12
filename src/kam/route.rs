//! Routing-script blocks by name, for running one from the module (t_continue).

use crate::sys;
use std::ffi::CStr;

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
