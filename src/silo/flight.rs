//! Transactions "in flight": stored by a route that has not finished yet, so the storing process
//! may still be inside TM's `t_relay()`, which adds branches without TM's reply lock. An append
//! from another process at that moment would build into the same branch slot (KAMAILIO-NOTES,
//! "TM and concurrency"), so appends to such a transaction are not sent: they are left here as
//! opaque requests, and the storing process carries them out when its route has finished.
//!
//! Few transactions are in flight at once (at most one or two per worker), so they are one list
//! under one lock; `count` is what ts.stats reports.

use super::{ShmAlloc, ShmMutex, TransactionId};
use core::cell::UnsafeCell;
use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU32, Ordering::SeqCst};

#[repr(C)]
pub struct Flights {
    lock: ShmMutex,
    /// Entries in `first`; written under the lock, read without it as a hint.
    count: AtomicU32,
    first: UnsafeCell<*mut Flight>,
}

#[repr(C)]
pub struct Flight {
    next: *mut Flight,
    id: TransactionId,
    /// Deferred appends, oldest first.
    pending: *mut Pending,
}

#[repr(C)]
struct Pending {
    next: *mut Pending,
    len: usize,
    // `len` bytes of request follow the struct.
}

/// The storing process's handle on its flight (given back to `end`).
pub type FlightHandle = NonNull<Flight>;

/// What `claim` did: the caller appends now (and ends the flight), or its request was left for
/// the process that holds the transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    Mine(FlightHandle),
    Deferred,
    NoMemory,
}

impl Flights {
    pub const fn new() -> Self {
        Flights { lock: ShmMutex::new(), count: AtomicU32::new(0), first: UnsafeCell::new(ptr::null_mut()) }
    }

    pub fn in_flight(&self) -> u32 {
        self.count.load(SeqCst)
    }

    /// Marks `id` in flight. Call it before the transaction becomes visible in the silo: whoever
    /// then finds the transaction there also finds it here (the slot lock orders the two).
    pub fn begin<A: ShmAlloc>(&self, alloc: A, id: TransactionId) -> Option<FlightHandle> {
        let f = alloc.alloc(size_of::<Flight>()) as *mut Flight;
        let f = NonNull::new(f)?;
        let _guard = self.lock.lock();
        // SAFETY: a fresh block; the list is changed only under the lock, held here. Appended at
        // the tail, so `defer` finds the oldest flight of a transaction first.
        unsafe {
            f.as_ptr().write(Flight { next: ptr::null_mut(), id, pending: ptr::null_mut() });
            let mut link = self.first.get();
            while !(*link).is_null() {
                link = &raw mut (**link).next;
            }
            *link = f.as_ptr();
        }
        self.count.fetch_add(1, SeqCst);
        Some(f)
    }

    /// Takes the transaction for an append: if nobody holds it (a route that stored it, or
    /// another append), it becomes in flight for the caller, who appends and then ends the
    /// flight; else the request `make()` builds is left for the holder. So two appends never
    /// ask TM about one transaction at once (TM would add a contact both found new twice, or
    /// log that it found nothing to add), and nobody waits.
    pub fn claim<A: ShmAlloc>(&self, alloc: A, id: TransactionId, make: impl FnOnce() -> Vec<u8>) -> Claim {
        let Some(mine) = NonNull::new(alloc.alloc(size_of::<Flight>()) as *mut Flight) else { return Claim::NoMemory };
        let claim = {
            let _guard = self.lock.lock();
            // SAFETY: the list is read and changed under the lock, held here.
            unsafe {
                let mut link = self.first.get();
                while !(*link).is_null() && (**link).id != id {
                    link = &raw mut (**link).next;
                }
                if (*link).is_null() {
                    mine.as_ptr().write(Flight { next: ptr::null_mut(), id, pending: ptr::null_mut() });
                    *link = mine.as_ptr();
                    self.count.fetch_add(1, SeqCst);
                    return Claim::Mine(mine);
                }
                Self::leave(alloc, *link, make())
            }
        };
        // SAFETY: the block was not linked anywhere.
        unsafe { alloc.free(mine.as_ptr() as *mut u8) };
        claim
    }

    /// Appends `request` to flight `f`'s pending list.
    ///
    /// # Safety
    /// The caller holds the lock and `f` is on the list.
    unsafe fn leave<A: ShmAlloc>(alloc: A, f: *mut Flight, request: Vec<u8>) -> Claim {
        let p = alloc.alloc(size_of::<Pending>() + request.len()) as *mut Pending;
        if p.is_null() {
            return Claim::NoMemory;
        }
        // SAFETY: a fresh block; the list is the caller's to change (the lock).
        unsafe {
            p.write(Pending { next: ptr::null_mut(), len: request.len() });
            ptr::copy_nonoverlapping(request.as_ptr(), (p as *mut u8).add(size_of::<Pending>()), request.len());
            let mut link = &raw mut (*f).pending;
            while !(*link).is_null() {
                link = &raw mut (**link).next;
            }
            *link = p;
        }
        Claim::Deferred
    }

    /// Ends a flight: from now on appends to the transaction are sent at once. Returns the
    /// requests deferred meanwhile, oldest first, for the caller to carry out.
    ///
    /// # Safety
    /// `handle` came from `begin` on these flights and was not ended before.
    pub unsafe fn end<A: ShmAlloc>(&self, alloc: A, handle: FlightHandle) -> Vec<Vec<u8>> {
        let f = handle.as_ptr();
        let mut pending;
        {
            let _guard = self.lock.lock();
            // SAFETY: the list is changed under the lock; `f` is on it (the caller's contract).
            unsafe {
                let mut link = self.first.get();
                while *link != f {
                    link = &raw mut (**link).next;
                }
                *link = (*f).next;
                pending = (*f).pending;
            }
            self.count.fetch_sub(1, SeqCst);
        }
        let mut requests = Vec::new();
        // SAFETY: unlinked above: no other process can reach `f` or its requests any more.
        unsafe {
            while !pending.is_null() {
                let next = (*pending).next;
                let bytes = (pending as *const u8).add(size_of::<Pending>());
                requests.push(core::slice::from_raw_parts(bytes, (*pending).len).to_vec());
                alloc.free(pending as *mut u8);
                pending = next;
            }
            alloc.free(f as *mut u8);
        }
        requests
    }

    /// Frees every flight and request, without locking.
    ///
    /// # Safety
    /// No other process uses the flights any more (module shutdown).
    pub unsafe fn destroy<A: ShmAlloc>(&mut self, alloc: A) {
        // SAFETY: exclusive access (the caller's contract); every block came from `alloc`.
        unsafe {
            let mut f = *self.first.get();
            while !f.is_null() {
                let mut p = (*f).pending;
                while !p.is_null() {
                    let next = (*p).next;
                    alloc.free(p as *mut u8);
                    p = next;
                }
                let next = (*f).next;
                alloc.free(f as *mut u8);
                f = next;
            }
        }
        *self.first.get_mut() = ptr::null_mut();
        self.count.store(0, SeqCst);
    }
}
