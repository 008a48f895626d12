//! Transactions "in flight": stored by a route that has not finished yet, so the storing process
//! may still be inside TM's `t_relay()`, which adds branches without TM's reply lock. An append
//! from another process at that moment would build into the same branch slot (KAMAILIO-NOTES,
//! "TM and concurrency"), so appends to such a transaction are not sent: they are left here as
//! opaque requests, and the storing process carries them out when its route has finished.
//!
//! Few transactions are in flight at once (one or two per worker), so each of a few shards (by
//! TM's hash index) is one short list under its own lock: processes working on different
//! transactions rarely meet on a lock.
//!
//! A flight may also be *parked*: an append found its transaction suspended by the script, with
//! no `resume_route` to resume it (TM drops replies to a suspended transaction, so a branch now
//! would ring a device whose answer never reaches the caller). The append leaves its request
//! and nobody holds the flight; the next route that runs on the transaction (the one the
//! script's or another module's `t_continue()` runs) takes it over with `begin` and carries the
//! requests out when it ends, after its own relay. TMCB_DESTROY drops a flight left parked.

use super::{ShmAlloc, ShmMutex, TransactionId};
use core::cell::UnsafeCell;
use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU32, Ordering::SeqCst};

/// Shards of the flight list (a power of two).
const SHARDS: usize = 16;

/// Requests one flight keeps at most (a REGISTER flood while a storing route runs must not grow
/// shm without bound: beyond it a request is refused, and counted).
pub const MAX_PENDING: u32 = 64;

#[repr(C)]
pub struct Flights {
    shards: [Shard; SHARDS],
}

#[repr(C)]
struct Shard {
    lock: ShmMutex,
    /// Entries in `first`, for ts.stats; written under the lock.
    count: AtomicU32,
    first: UnsafeCell<*mut Flight>,
}

#[repr(C)]
pub struct Flight {
    next: *mut Flight,
    id: TransactionId,
    /// Deferred appends, oldest first.
    pending: *mut Pending,
    pending_count: u32,
    /// Nobody holds it (see the module doc).
    parked: bool,
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
/// the process that holds the transaction (or for the route that resumes it).
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    Mine(FlightHandle),
    Deferred,
    /// The same request was left already: it will be carried out once.
    Duplicate,
    /// `MAX_PENDING` requests are waiting already.
    Refused,
    NoMemory,
}

impl Flights {
    pub const fn new() -> Self {
        const SHARD: Shard = Shard { lock: ShmMutex::new(), count: AtomicU32::new(0), first: UnsafeCell::new(ptr::null_mut()) };
        Flights { shards: [SHARD; SHARDS] }
    }

    fn shard(&self, id: TransactionId) -> &Shard {
        &self.shards[id.index as usize & (SHARDS - 1)]
    }

    pub fn in_flight(&self) -> u32 {
        self.shards.iter().map(|s| s.count.load(SeqCst)).sum()
    }

    /// Marks `id` in flight. Call it before the transaction becomes visible in the silo: whoever
    /// then finds the transaction there also finds it here (the slot lock orders the two). A
    /// parked flight of `id` is taken over (with the requests on it) instead.
    pub fn begin<A: ShmAlloc>(&self, alloc: A, id: TransactionId) -> Option<FlightHandle> {
        let f = NonNull::new(alloc.alloc(size_of::<Flight>()) as *mut Flight)?;
        let shard = self.shard(id);
        {
            let _guard = shard.lock.lock();
            // SAFETY: the list is read and changed only under the shard's lock, held here.
            unsafe {
                let mut link = shard.first.get();
                while !(*link).is_null() {
                    if (**link).id == id && (**link).parked {
                        (**link).parked = false;
                        let adopted = NonNull::new_unchecked(*link);
                        drop(_guard);
                        alloc.free(f.as_ptr() as *mut u8);
                        return Some(adopted);
                    }
                    link = &raw mut (**link).next;
                }
                // At the tail, so `claim` finds the oldest flight of a transaction first.
                f.as_ptr().write(Flight::new(id));
                *link = f.as_ptr();
            }
            shard.count.fetch_add(1, SeqCst);
        }
        Some(f)
    }

    /// Takes the transaction for an append: if nobody holds it (a route that stored it, or
    /// another append), it becomes in flight for the caller, who appends and then ends the
    /// flight; else the request `make()` builds is left for the holder. So two appends never
    /// ask TM about one transaction at once (TM would add a contact both found new twice, or
    /// log that it found nothing to add), and nobody waits.
    pub fn claim<A: ShmAlloc>(&self, alloc: A, id: TransactionId, make: impl FnOnce() -> Vec<u8>) -> Claim {
        let Some(mine) = NonNull::new(alloc.alloc(size_of::<Flight>()) as *mut Flight) else { return Claim::NoMemory };
        let shard = self.shard(id);
        let claim = {
            let _guard = shard.lock.lock();
            // SAFETY: the list is read and changed under the shard's lock, held here.
            unsafe {
                let mut link = shard.first.get();
                while !(*link).is_null() && (**link).id != id {
                    link = &raw mut (**link).next;
                }
                if (*link).is_null() {
                    mine.as_ptr().write(Flight::new(id));
                    *link = mine.as_ptr();
                    shard.count.fetch_add(1, SeqCst);
                    return Claim::Mine(mine);
                }
                Self::leave(alloc, *link, &make())
            }
        };
        // SAFETY: the block was not linked anywhere.
        unsafe { alloc.free(mine.as_ptr() as *mut u8) };
        claim
    }

    /// Parks the caller's flight `held` with `request` on it: nobody holds it until a route on
    /// its transaction takes it over (`begin`) or the transaction is destroyed (`drop_parked`).
    ///
    /// # Safety
    /// `held` came from `claim` (Mine) on these flights and was not ended.
    pub unsafe fn park<A: ShmAlloc>(&self, alloc: A, held: FlightHandle, request: &[u8]) -> Claim {
        let f = held.as_ptr();
        // SAFETY: `f` is on its shard's list (the caller's contract); changed under the lock.
        unsafe {
            let _guard = self.shard((*f).id).lock.lock();
            (*f).parked = true;
            Self::leave(alloc, f, request)
        }
    }

    /// Appends `request` to flight `f`'s pending list, unless the same request waits there
    /// already or `MAX_PENDING` do.
    ///
    /// # Safety
    /// The caller holds the shard's lock and `f` is on its list.
    unsafe fn leave<A: ShmAlloc>(alloc: A, f: *mut Flight, request: &[u8]) -> Claim {
        // SAFETY: the list is the caller's to read and change (the lock).
        unsafe {
            let mut link = &raw mut (*f).pending;
            while !(*link).is_null() {
                if Pending::bytes(*link) == request {
                    return Claim::Duplicate;
                }
                link = &raw mut (**link).next;
            }
            if (*f).pending_count >= MAX_PENDING {
                return Claim::Refused;
            }
            let p = alloc.alloc(size_of::<Pending>() + request.len()) as *mut Pending;
            if p.is_null() {
                return Claim::NoMemory;
            }
            p.write(Pending { next: ptr::null_mut(), len: request.len() });
            ptr::copy_nonoverlapping(request.as_ptr(), (p as *mut u8).add(size_of::<Pending>()), request.len());
            *link = p;
            (*f).pending_count += 1;
        }
        Claim::Deferred
    }

    /// Ends a flight: from now on appends to the transaction are sent at once. Returns the
    /// requests deferred meanwhile, oldest first, for the caller to carry out.
    ///
    /// # Safety
    /// `handle` came from `begin` or `claim` on these flights and was not ended (or parked)
    /// before.
    pub unsafe fn end<A: ShmAlloc>(&self, alloc: A, handle: FlightHandle) -> Vec<Vec<u8>> {
        let f = handle.as_ptr();
        // SAFETY: `f` is on its shard's list (the caller's contract); unlinked under the lock.
        let parked = unsafe {
            let shard = self.shard((*f).id);
            let _guard = shard.lock.lock();
            let mut link = shard.first.get();
            while *link != f {
                link = &raw mut (**link).next;
            }
            *link = (*f).next;
            shard.count.fetch_sub(1, SeqCst);
            // An append that saw the transaction suspended, and parked its request after this
            // route took the transaction over: it is this route's to carry out.
            Self::unlink_parked(shard, (*f).id)
        };
        // SAFETY: unlinked above: no other process can reach them or their requests any more.
        unsafe {
            let mut requests = Self::free(alloc, f);
            if let Some(p) = parked {
                requests.extend(Self::free(alloc, p));
            }
            requests
        }
    }

    /// Takes the parked flight of `id`, if any: its requests, for the caller to carry out or
    /// drop (its transaction is gone).
    pub fn take_parked<A: ShmAlloc>(&self, alloc: A, id: TransactionId) -> Option<Vec<Vec<u8>>> {
        let shard = self.shard(id);
        let f = {
            let _guard = shard.lock.lock();
            // SAFETY: the list is read and changed under the shard's lock, held here.
            unsafe { Self::unlink_parked(shard, id)? }
        };
        // SAFETY: unlinked above.
        Some(unsafe { Self::free(alloc, f) })
    }

    /// Unlinks the parked flight of `id`, if any.
    ///
    /// # Safety
    /// The caller holds the shard's lock.
    unsafe fn unlink_parked(shard: &Shard, id: TransactionId) -> Option<*mut Flight> {
        // SAFETY: the caller's contract.
        unsafe {
            let mut link = shard.first.get();
            while !(*link).is_null() && !((**link).id == id && (**link).parked) {
                link = &raw mut (**link).next;
            }
            let f = *link;
            if f.is_null() {
                return None;
            }
            *link = (*f).next;
            shard.count.fetch_sub(1, SeqCst);
            Some(f)
        }
    }

    /// Frees an unlinked flight; returns its requests.
    ///
    /// # Safety
    /// `f` is on no list and every block came from `alloc`.
    unsafe fn free<A: ShmAlloc>(alloc: A, f: *mut Flight) -> Vec<Vec<u8>> {
        let mut requests = Vec::new();
        // SAFETY: the caller's contract.
        unsafe {
            let mut p = (*f).pending;
            while !p.is_null() {
                let next = (*p).next;
                requests.push(Pending::bytes(p).to_vec());
                alloc.free(p as *mut u8);
                p = next;
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
        for shard in &mut self.shards {
            // SAFETY: exclusive access (the caller's contract); every block came from `alloc`.
            unsafe {
                let mut f = *shard.first.get();
                while !f.is_null() {
                    let next = (*f).next;
                    Self::free(alloc, f);
                    f = next;
                }
            }
            *shard.first.get_mut() = ptr::null_mut();
            shard.count.store(0, SeqCst);
        }
    }
}

impl Flight {
    fn new(id: TransactionId) -> Self {
        Flight { next: ptr::null_mut(), id, pending: ptr::null_mut(), pending_count: 0, parked: false }
    }
}

impl Pending {
    /// # Safety
    /// `p` points to a live request.
    unsafe fn bytes<'a>(p: *const Pending) -> &'a [u8] {
        // SAFETY: `len` bytes were copied right behind the struct at creation.
        unsafe { core::slice::from_raw_parts((p as *const u8).add(size_of::<Pending>()), (*p).len) }
    }
}
