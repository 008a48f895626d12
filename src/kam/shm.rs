//! Kamailio's shared memory, as the silo's allocator.

use crate::silo::ShmAlloc;
use crate::sys;

/// shm_malloc/shm_free: one segment mapped before fork, at the same address in every process.
#[derive(Clone, Copy)]
pub struct KamShm;

impl ShmAlloc for KamShm {
    fn alloc(&self, size: usize) -> *mut u8 {
        // SAFETY: plain allocation; Kamailio's shm allocators align to at least 8 bytes.
        unsafe { sys::tsilo_shim_shm_malloc(size) as *mut u8 }
    }
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: the caller passes a block from `alloc`.
        unsafe { sys::tsilo_shim_shm_free(p as *mut _) }
    }
}

/// The whole shared memory pool, as `-m` sized it, in bytes.
pub fn total() -> usize {
    // SAFETY: reads the pool's counters (mod_init runs after shm is set up).
    unsafe { sys::tsilo_shim_shm_total() as usize }
}

/// Shared memory free now, in bytes.
pub fn available() -> usize {
    // SAFETY: as `total`.
    unsafe { sys::tsilo_shim_shm_available() as usize }
}
