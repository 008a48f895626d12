//! The process's destination set (the branches `append_branch()`/`lookup()` add for the request
//! being processed): copied out and put back, so one set can be appended to several stored
//! transactions (TM clears it after each append), kept as bytes for a deferred append, and
//! isolated around an append so nothing of the caller's set reaches TM and nothing of ours stays.

use crate::sys;
use core::mem::size_of;

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

    /// The branches as bytes (plain data: fixed arrays, numbers, and a socket pointer that is
    /// the same in every process, sockets being made before fork).
    pub fn to_bytes(&self) -> Vec<u8> {
        // SAFETY: a slice of plain-data structs seen as bytes.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const u8, self.0.len() * size_of::<sys::branch_t>()) }.to_vec()
    }

    /// The snapshot `to_bytes` made (in any process of the same Kamailio); None if malformed.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let size = size_of::<sys::branch_t>();
        if bytes.len() % size != 0 {
            return None;
        }
        let branches = bytes
            .chunks_exact(size)
            // SAFETY: each chunk is a branch_t's bytes (read unaligned: a Vec<u8> is not aligned for it).
            .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr() as *const sys::branch_t) })
            .collect();
        Some(DsetSnapshot(branches))
    }
}

/// Empties the destination set. Only the branches: unlike the core's clear_branches(), the
/// R-URI's own q value and branch flags, which the caller's script may have set, stay.
pub fn clear() {
    // SAFETY: this process's branch counter; the entries above it are never read.
    unsafe { sys::nr_branches = 0 }
}

/// Keeps only the branches for which `keep(uri)` is true, in order; returns how many remain.
/// In place: a branch is copied (some KB each) only to close a gap a dropped one left.
pub fn retain(mut keep: impl FnMut(&[u8]) -> bool) -> usize {
    // SAFETY: `nr_branches` counts the valid entries of this process's branch array; entries
    // are moved down only over ones already dropped.
    unsafe {
        let n = sys::nr_branches as i32;
        let mut kept = 0;
        for i in 0..n {
            let Some(b) = sys::get_sip_branch(i).as_ref() else { continue };
            let uri = &b.uri[..(b.len as usize).min(b.uri.len())];
            // c_char and u8 have the same layout.
            if !keep(&*(uri as *const [std::ffi::c_char] as *const [u8])) {
                continue;
            }
            if kept != i {
                if let Some(to) = sys::get_sip_branch(kept).as_mut() {
                    *to = *b;
                }
            }
            kept += 1;
        }
        sys::nr_branches = kept as u32;
        kept as usize
    }
}

/// The R-URI's own forking state in this process: its q value, branch flags (branch 0) and
/// whether it is "new" (t_relay() forks to the R-URI only then). TM's t_append_branches()
/// resets all three (clear_branches(), faked_env()) for the message of whichever process calls
/// it, which is the caller's own message when a script appends.
struct RuriState {
    q: sys::qvalue_t,
    bflags: sys::flag_t,
    is_new: std::ffi::c_int,
}

impl RuriState {
    fn save() -> Self {
        let mut bflags = 0;
        // SAFETY: this process's R-URI globals; branch 0 is the R-URI, always valid.
        unsafe {
            sys::getbflagsval(0, &mut bflags);
            RuriState { q: sys::get_ruri_q(), bflags, is_new: sys::ruri_is_new }
        }
    }

    fn restore(&self) {
        // SAFETY: as in `save`.
        unsafe {
            sys::set_ruri_q(self.q);
            sys::setbflagsval(0, self.bflags);
            sys::ruri_is_new = self.is_new;
        }
    }
}

/// The caller's destination set and R-URI state (q, branch flags, "new" mark), put aside while
/// an append uses the set, and put back (exactly, whatever the append or TM left) when this is
/// dropped: a script that appends and then relays relays what it built.
pub struct Isolated(DsetSnapshot, RuriState);

impl Isolated {
    pub fn new() -> Self {
        let (saved, ruri) = (DsetSnapshot::take(), RuriState::save());
        clear();
        Isolated(saved, ruri)
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        clear();
        self.0.restore();
        self.1.restore();
    }
}
