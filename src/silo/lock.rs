//! A mutex that works across processes: its whole state is one `u32` in shared memory, and
//! waiters sleep on a *shared* futex (no `FUTEX_PRIVATE_FLAG`), so an unlock in one Kamailio
//! worker wakes a waiter in another. parking_lot and std park waiters in process-private state
//! and would hang here (see shared/STYLE.md).

use core::sync::atomic::{AtomicU32, Ordering};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// Locked, and someone may be sleeping on the futex: unlock must wake.
const CONTENDED: u32 = 2;
/// Critical sections here are a few pointer hops: spin a little before sleeping.
const SPINS: u32 = 100;

#[repr(transparent)]
#[derive(Default)]
pub struct ShmMutex {
    state: AtomicU32,
}

impl ShmMutex {
    pub const fn new() -> Self {
        ShmMutex { state: AtomicU32::new(UNLOCKED) }
    }

    pub fn lock(&self) -> ShmMutexGuard<'_> {
        if self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        ShmMutexGuard { mutex: self }
    }

    #[cold]
    fn lock_contended(&self) {
        for _ in 0..SPINS {
            core::hint::spin_loop();
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return;
            }
        }
        // Drepper's "Futexes are tricky", mutex 2: mark contended, sleep while it stays so.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex_wait(&self.state, CONTENDED);
        }
    }

    fn unlock(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex_wake_one(&self.state);
        }
    }
}

pub struct ShmMutexGuard<'a> {
    mutex: &'a ShmMutex,
}

impl Drop for ShmMutexGuard<'_> {
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT only reads the word; a spurious or EAGAIN return is handled by the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            core::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1);
    }
}
