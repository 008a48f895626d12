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
//!
//! A *birth* is the flight of a transaction its route is creating, begun when TM creates it
//! (TMCB_REQUEST_IN), before it has a label: found by the cell's address, not by id, by a
//! ts_append_to() that knows the transaction's id (the script published it) before the route
//! that creates it has relayed it. The first such append writes the id in, for the creator.

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

/// Flight nodes each shard keeps ready (a store or an append takes one and gives it back without
/// asking the shm allocator, whose lock every process shares); beyond them, nodes are allocated.
const POOL_PER_SHARD: usize = 32;

#[repr(C)]
pub struct Flights {
    shards: [Shard; SHARDS],
    /// The pool's block (`SHARDS * POOL_PER_SHARD` nodes, shard by shard); null without one.
    pool: *mut Flight,
}

#[repr(C)]
struct Shard {
    lock: ShmMutex,
    /// Entries in `first`, for ts.stats; written under the lock.
    count: AtomicU32,
    first: UnsafeCell<*mut Flight>,
    /// Unused nodes of this shard's part of the pool, linked by `next`.
    free: UnsafeCell<*mut Flight>,
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
    /// A birth: the cell's address (0: an ordinary flight). `id.label` is known only once an
    /// append wrote it (`id_known`).
    born: usize,
    id_known: bool,
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
        // A template: the array below gets a fresh copy of it per shard.
        #[allow(clippy::declare_interior_mutable_const)]
        const SHARD: Shard = Shard {
            lock: ShmMutex::new(),
            count: AtomicU32::new(0),
            first: UnsafeCell::new(ptr::null_mut()),
            free: UnsafeCell::new(ptr::null_mut()),
        };
        Flights { shards: [SHARD; SHARDS], pool: ptr::null_mut() }
    }

    /// Bytes `init_pool` asks for.
    pub const fn pool_bytes() -> usize {
        SHARDS * POOL_PER_SHARD * size_of::<Flight>()
    }

    /// Allocates the node pool (before any other process uses the flights); without memory for
    /// it, every node is allocated on its own.
    pub fn init_pool<A: ShmAlloc>(&mut self, alloc: A) {
        let pool = alloc.alloc(Self::pool_bytes()) as *mut Flight;
        if pool.is_null() {
            return;
        }
        self.pool = pool;
        for (i, shard) in self.shards.iter_mut().enumerate() {
            for j in 0..POOL_PER_SHARD {
                // SAFETY: inside the fresh block; nodes are plain data, written before use.
                unsafe {
                    let node = pool.add(i * POOL_PER_SHARD + j);
                    node.write(Flight::new(TransactionId { index: 0, label: 0 }));
                    (*node).next = *shard.free.get_mut();
                    *shard.free.get_mut() = node;
                }
            }
        }
    }

    fn shard(&self, id: TransactionId) -> &Shard {
        &self.shards[id.index as usize & (SHARDS - 1)]
    }

    /// A node for a flight of `id`, from the shard's pool or the allocator.
    ///
    /// # Safety
    /// The caller holds the shard's lock.
    unsafe fn node<A: ShmAlloc>(shard: &Shard, alloc: A, id: TransactionId) -> Option<*mut Flight> {
        // SAFETY: the free list is the caller's to change (the lock).
        unsafe {
            let mut f = *shard.free.get();
            if f.is_null() {
                f = alloc.alloc(size_of::<Flight>()) as *mut Flight;
                if f.is_null() {
                    return None;
                }
            } else {
                *shard.free.get() = (*f).next;
            }
            f.write(Flight::new(id));
            Some(f)
        }
    }

    /// Gives an unlinked node back: to its shard's pool, or to the allocator (`Some`: the caller
    /// frees it, outside the lock).
    ///
    /// # Safety
    /// The caller holds the lock of the shard `f` belongs to; `f` is on no list.
    unsafe fn release(&self, shard: &Shard, f: *mut Flight) -> Option<*mut Flight> {
        let in_pool = !self.pool.is_null() && {
            let (start, end) = (self.pool as usize, self.pool as usize + Self::pool_bytes());
            (start..end).contains(&(f as usize))
        };
        if !in_pool {
            return Some(f);
        }
        // SAFETY: the caller's contract.
        unsafe {
            (*f).next = *shard.free.get();
            *shard.free.get() = f;
        }
        None
    }

    pub fn in_flight(&self) -> u32 {
        self.shards.iter().map(|s| s.count.load(SeqCst)).sum()
    }

    /// Marks `id` in flight. Call it before the transaction becomes visible in the silo: whoever
    /// then finds the transaction there also finds it here (the slot lock orders the two). A
    /// parked flight of `id` is taken over (with the requests on it) instead.
    pub fn begin<A: ShmAlloc>(&self, alloc: A, id: TransactionId) -> Option<FlightHandle> {
        let shard = self.shard(id);
        let _guard = shard.lock.lock();
        // SAFETY: the list is read and changed only under the shard's lock, held here.
        unsafe {
            let mut link = shard.first.get();
            while !(*link).is_null() {
                if (**link).id == id && (**link).parked && (**link).born == 0 {
                    (**link).parked = false;
                    return Some(NonNull::new_unchecked(*link));
                }
                link = &raw mut (**link).next;
            }
            // At the tail, so `claim` finds the oldest flight of a transaction first.
            let f = Self::node(shard, alloc, id)?;
            *link = f;
            shard.count.fetch_add(1, SeqCst);
            Some(NonNull::new_unchecked(f))
        }
    }

    /// Marks the transaction TM is creating at `cell` (hash index `index`, no label yet) in
    /// flight: see "birth" in the module doc.
    pub fn begin_birth<A: ShmAlloc>(&self, alloc: A, index: u32, cell: usize) -> Option<FlightHandle> {
        let id = TransactionId { index, label: 0 };
        let shard = self.shard(id);
        let _guard = shard.lock.lock();
        // SAFETY: the list is read and changed only under the shard's lock, held here.
        unsafe {
            let mut link = shard.first.get();
            while !(*link).is_null() {
                link = &raw mut (**link).next;
            }
            let f = Self::node(shard, alloc, id)?;
            (*f).born = cell;
            (*f).id_known = false;
            *link = f;
            shard.count.fetch_add(1, SeqCst);
            Some(NonNull::new_unchecked(f))
        }
    }

    /// Takes the transaction for an append: if nobody holds it (a route that stored it, or
    /// another append), it becomes in flight for the caller, who appends and then ends the
    /// flight; else the request `make()` builds is left for the holder. So two appends never
    /// ask TM about one transaction at once (TM would add a contact both found new twice, or
    /// log that it found nothing to add), and nobody waits.
    /// `cell`: the transaction's address, to find its birth too (0: do not look for one).
    pub fn claim<A: ShmAlloc>(&self, alloc: A, id: TransactionId, cell: usize, make: impl FnOnce() -> Vec<u8>) -> Claim {
        let shard = self.shard(id);
        let _guard = shard.lock.lock();
        // SAFETY: the list is read and changed under the shard's lock, held here.
        unsafe {
            let mut link = shard.first.get();
            while !(*link).is_null() && !(**link).holds(id, cell) {
                link = &raw mut (**link).next;
            }
            if !(*link).is_null() {
                let f = *link;
                if (*f).born != 0 {
                    (*f).id = id;
                    (*f).id_known = true;
                }
                return Self::leave(alloc, f, &make());
            }
            let Some(f) = Self::node(shard, alloc, id) else { return Claim::NoMemory };
            *link = f;
            shard.count.fetch_add(1, SeqCst);
            Claim::Mine(NonNull::new_unchecked(f))
        }
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
        // SAFETY: the caller's contract.
        unsafe { self.end_with_id(alloc, handle).1 }
    }

    /// `end` for a birth: also the transaction's id, if an append left a request (and wrote it).
    ///
    /// # Safety
    /// As for `end`; `handle` came from `begin_birth`.
    pub unsafe fn end_birth<A: ShmAlloc>(&self, alloc: A, handle: FlightHandle) -> (Option<TransactionId>, Vec<Vec<u8>>) {
        // SAFETY: the caller's contract.
        unsafe { self.end_with_id(alloc, handle) }
    }

    /// # Safety
    /// As for `end`.
    unsafe fn end_with_id<A: ShmAlloc>(&self, alloc: A, handle: FlightHandle) -> (Option<TransactionId>, Vec<Vec<u8>>) {
        let f = handle.as_ptr();
        // SAFETY: `f` is on its shard's list (the caller's contract); unlinked under the lock.
        let (id, mut requests, freed) = unsafe {
            let shard = self.shard((*f).id);
            let _guard = shard.lock.lock();
            let id = ((*f).born == 0 || (*f).id_known).then_some((*f).id);
            let mut link = shard.first.get();
            while *link != f {
                link = &raw mut (**link).next;
            }
            *link = (*f).next;
            shard.count.fetch_sub(1, SeqCst);
            let mut requests = vec![Self::take_requests(f)];
            let mut freed = [self.release(shard, f), None];
            // An append that saw the transaction suspended, and parked its request after this
            // route took the transaction over: it is this route's to carry out.
            if let Some(p) = id.and_then(|id| Self::unlink_parked(shard, id)) {
                requests.push(Self::take_requests(p));
                freed[1] = self.release(shard, p);
            }
            (id, requests, freed)
        };
        // SAFETY: unlinked above: no other process can reach these any more.
        (id, unsafe { Self::free_blocks(alloc, &mut requests, freed) })
    }

    /// Takes the parked flight of `id`, if any: its requests, for the caller to carry out or
    /// drop (its transaction is gone).
    pub fn take_parked<A: ShmAlloc>(&self, alloc: A, id: TransactionId) -> Option<Vec<Vec<u8>>> {
        let shard = self.shard(id);
        let (mut requests, freed) = {
            let _guard = shard.lock.lock();
            // SAFETY: the list is read and changed under the shard's lock, held here.
            unsafe {
                let f = Self::unlink_parked(shard, id)?;
                (vec![Self::take_requests(f)], [self.release(shard, f), None])
            }
        };
        // SAFETY: unlinked above.
        Some(unsafe { Self::free_blocks(alloc, &mut requests, freed) })
    }

    /// Unlinks the parked flight of `id`, if any.
    ///
    /// # Safety
    /// The caller holds the shard's lock.
    unsafe fn unlink_parked(shard: &Shard, id: TransactionId) -> Option<*mut Flight> {
        // SAFETY: the caller's contract.
        unsafe {
            let mut link = shard.first.get();
            while let Some(f) = (*link).as_ref() {
                if f.id == id && f.parked && f.born == 0 {
                    break;
                }
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

    /// Detaches the requests of an unlinked flight (their blocks are freed by `free_blocks`).
    ///
    /// # Safety
    /// The caller holds the shard's lock; `f` was just unlinked.
    unsafe fn take_requests(f: *mut Flight) -> *mut Pending {
        // SAFETY: the caller's contract.
        unsafe { core::mem::replace(&mut (*f).pending, ptr::null_mut()) }
    }

    /// Copies out and frees the request lists (oldest flight first), then frees the nodes
    /// `release` gave back to the allocator; returns the requests in order.
    ///
    /// # Safety
    /// No other process can reach these blocks any more; each came from `alloc`.
    unsafe fn free_blocks<A: ShmAlloc>(alloc: A, lists: &mut Vec<*mut Pending>, nodes: [Option<*mut Flight>; 2]) -> Vec<Vec<u8>> {
        let mut requests = Vec::new();
        // SAFETY: the caller's contract.
        unsafe {
            for &first in lists.iter() {
                let mut p = first;
                while !p.is_null() {
                    let next = (*p).next;
                    requests.push(Pending::bytes(p).to_vec());
                    alloc.free(p as *mut u8);
                    p = next;
                }
            }
            for f in nodes.into_iter().flatten() {
                alloc.free(f as *mut u8);
            }
        }
        lists.clear();
        requests
    }

    /// Frees every flight and request, without locking.
    ///
    /// # Safety
    /// No other process uses the flights any more (module shutdown).
    pub unsafe fn destroy<A: ShmAlloc>(&mut self, alloc: A) {
        for i in 0..SHARDS {
            // SAFETY: exclusive access (the caller's contract); every block came from `alloc`.
            unsafe {
                let shard: *const Shard = &self.shards[i];
                let mut f = *(*shard).first.get();
                while !f.is_null() {
                    let next = (*f).next;
                    let freed = self.release(&*shard, f);
                    Self::free_blocks(alloc, &mut vec![Self::take_requests(f)], [freed, None]);
                    f = next;
                }
            }
            let shard = &mut self.shards[i];
            *shard.first.get_mut() = ptr::null_mut();
            *shard.free.get_mut() = ptr::null_mut();
            shard.count.store(0, SeqCst);
        }
        if !self.pool.is_null() {
            // SAFETY: no node of the pool is in use any more.
            unsafe { alloc.free(self.pool as *mut u8) };
            self.pool = ptr::null_mut();
        }
    }
}

impl Flight {
    fn new(id: TransactionId) -> Self {
        Flight { next: ptr::null_mut(), id, pending: ptr::null_mut(), pending_count: 0, parked: false, born: 0, id_known: true }
    }

    /// Whether an append to `id` (at `cell`, 0 if unknown) finds this flight: an ordinary one
    /// by id, a birth by the cell's address.
    fn holds(&self, id: TransactionId, cell: usize) -> bool {
        if self.born == 0 { self.id == id } else { cell != 0 && self.born == cell }
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
