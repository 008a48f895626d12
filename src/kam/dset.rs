//! The process's destination set (the branches `append_branch()`/`lookup()` add for the request
//! being processed): copied out and put back, so one set can be appended to several stored
//! transactions (TM clears it after each append).

use crate::sys;

pub struct DsetSnapshot(Vec<sys::branch_t>);

impl DsetSnapshot {
    pub fn take() -> Self {
        // SAFETY: reads this process's branch array; each branch_t is plain data.
        let n = unsafe { sys::nr_branches } as i32;
        let branches = (0..n).filter_map(|i| unsafe { sys::get_sip_branch(i).as_ref() }.copied()).collect();
        DsetSnapshot(branches)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Makes the destination set exactly the snapshot again.
    pub fn restore(&self) {
        // SAFETY: `nr_branches` counts the valid entries of the core's fixed branch array, which
        // has room for at least as many as were there when the snapshot was taken.
        unsafe {
            sys::nr_branches = self.0.len() as u32;
            for (i, b) in self.0.iter().enumerate() {
                if let Some(slot) = sys::get_sip_branch(i as i32).as_mut() {
                    *slot = *b;
                }
            }
        }
    }
}
