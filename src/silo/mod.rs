//! The silo: stored transactions, by AoR, in memory shared by every Kamailio process.
//!
//! Pure Rust, no FFI: the memory comes from a [`ShmAlloc`] (Kamailio's shm in the module, the
//! heap or a shared mapping in unit tests) and each hash slot has its own cross-process
//! [`ShmMutex`]. Nothing here calls TM or the registrar, so no silo lock is ever held across them:
//! callers take a snapshot of transaction ids, and call TM after the lock is gone.
//!
//! Layout, all in shared memory (addresses are the same in every forked process):
//! `Silo` -> `slots[size]` -> chain of `AorRecord` (key bytes inline) -> list of `StoredTransaction`.
//! A `StoredTransaction` lives exactly as long as TM's TMCB_DESTROY callback that removes it, so
//! its address is the callback's parameter.

mod flight;
mod lock;
mod miss;
pub mod queue;
mod table;

pub use flight::{Claim, FlightHandle, MAX_PENDING};
pub use lock::{ShmMutex, ShmMutexGuard};
pub use miss::{MAX_BYTES as MISS_MAX_BYTES, TTL_MS as MISS_TTL_MS};
pub use table::{DumpTotals, RecordSnapshot, StoreError, Stored, StoredTransaction, TableLoad, TxHandle, key_hash, sanitize_hash_size};

use table::Slot;

use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::AtomicU64;

/// Memory every process using the silo can see. Returned blocks are aligned to 8 bytes.
pub trait ShmAlloc: Copy {
    /// A block of `size` bytes, or null when memory is exhausted.
    fn alloc(&self, size: usize) -> *mut u8;
    /// # Safety
    /// `p` came from `alloc` of this allocator and is not used afterwards.
    unsafe fn free(&self, p: *mut u8);
}

/// TM's identity of a transaction: `$T(id_index)`, `$T(id_label)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct TransactionId {
    pub index: u32,
    pub label: u32,
}

/// Live and lifetime totals, exported as Kamailio statistics (group `tsilo`).
#[derive(Default)]
pub struct Counters {
    pub stored_ruris: AtomicU64,
    pub stored_transactions: AtomicU64,
    pub total_ruris: AtomicU64,
    pub total_transactions: AtomicU64,
    pub added_branches: AtomicU64,
    /// ts_store refused by a limit (`max_transactions`, `max_transactions_per_aor`).
    pub store_rejected: AtomicU64,
    // Appends that found their transaction gone, cancelled, answered, or no contact to add.
    pub append_not_found: AtomicU64,
    pub append_canceled: AtomicU64,
    pub append_answered: AtomicU64,
    pub append_lookup_failed: AtomicU64,
    /// Appends left for the storing process because their transaction was being relayed.
    pub append_deferred: AtomicU64,
    /// Appends refused because `MAX_PENDING` waited on their transaction already.
    pub append_refused: AtomicU64,
    /// Stores that found an append had missed them (`t_relay(); ts_store();`) and looked the
    /// AoR up again after their route.
    pub store_catch_up: AtomicU64,
}

/// Bounds on what the silo holds (0 = no bound).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Transactions in the whole table (checked without a global lock: concurrent stores in
    /// several processes may pass it by a few).
    pub max_transactions: u64,
    /// Transactions stored for one AoR (exact: checked under the AoR's slot lock).
    pub max_per_aor: u32,
}

#[repr(C)]
pub struct Silo<A: ShmAlloc> {
    alloc: A,
    size: u32,
    slots: *mut Slot,
    pub limits: Limits,
    pub counters: Counters,
    flights: flight::Flights,
    /// Ticks once per append that found nothing stored (see `miss.rs`).
    miss_clock: AtomicU64,
    misses: miss::Budget,
}

// SAFETY: every mutable part is reached only under its slot's ShmMutex; counters are atomics.
unsafe impl<A: ShmAlloc> Sync for Silo<A> {}
unsafe impl<A: ShmAlloc> Send for Silo<A> {}

impl<A: ShmAlloc> Silo<A> {
    /// The memory `create` takes for `size` slots, before anything is stored: mod_init checks it
    /// against the free shared memory, to name hash_size when the table cannot fit.
    pub fn table_bytes(size: u32) -> usize {
        size as usize * size_of::<Slot>() + size_of::<Silo<A>>() + flight::Flights::pool_bytes()
    }

    /// Allocates and initialises the silo with `size` slots (a power of two) in `alloc`'s memory.
    pub fn create(alloc: A, size: u32, limits: Limits) -> Option<NonNull<Silo<A>>> {
        assert!(size.is_power_of_two(), "silo size must be a power of two");
        let slots = alloc.alloc(size as usize * size_of::<Slot>()) as *mut Slot;
        if slots.is_null() {
            return None;
        }
        let silo = alloc.alloc(size_of::<Silo<A>>()) as *mut Silo<A>;
        if silo.is_null() {
            // SAFETY: just allocated above, unused.
            unsafe { alloc.free(slots as *mut u8) };
            return None;
        }
        // SAFETY: both blocks are fresh, large enough and aligned for these types.
        unsafe {
            for i in 0..size as usize {
                slots.add(i).write(Slot { lock: ShmMutex::new(), records: 0, first: ptr::null_mut(), misses: miss::Misses::new() });
            }
            silo.write(Silo {
                alloc,
                size,
                slots,
                limits,
                counters: Counters::default(),
                flights: flight::Flights::new(),
                miss_clock: AtomicU64::new(0),
                misses: miss::Budget::new(),
            });
            (*silo).flights.init_pool(alloc);
            Some(NonNull::new_unchecked(silo))
        }
    }

    /// Frees the silo and everything in it, without locking.
    ///
    /// # Safety
    /// No other process uses the silo any more (module shutdown), and `this` came from `create`.
    pub unsafe fn destroy(this: NonNull<Silo<A>>) {
        // SAFETY: the caller guarantees exclusive access; every pointer was allocated by `alloc`.
        unsafe {
            let silo = this.as_ptr();
            let alloc = (*silo).alloc;
            for i in 0..(*silo).size as usize {
                let slot = (*silo).slots.add(i);
                (*slot).misses.free_all(alloc, &(*silo).misses);
                let mut rec = (*slot).first;
                while !rec.is_null() {
                    let next_rec = (*rec).next;
                    let mut tx = (*rec).transactions;
                    while !tx.is_null() {
                        let next_tx = (*tx).next;
                        alloc.free(tx as *mut u8);
                        tx = next_tx;
                    }
                    alloc.free(rec as *mut u8);
                    rec = next_rec;
                }
            }
            (*silo).flights.destroy(alloc);
            alloc.free((*silo).slots as *mut u8);
            alloc.free(silo as *mut u8);
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// Marks a transaction in flight (its storing route has not finished): see `flight.rs`.
    /// None when out of memory.
    pub fn begin_flight(&self, id: TransactionId) -> Option<FlightHandle> {
        self.flights.begin(self.alloc, id)
    }

    /// Takes `id` for an append, or leaves the request `make` builds for whoever holds it
    /// (see `flight.rs`).
    pub fn claim(&self, id: TransactionId, make: impl FnOnce() -> Vec<u8>) -> Claim {
        self.flights.claim(self.alloc, id, 0, make)
    }

    /// `claim`, also finding the birth of the transaction at `cell` (see `flight.rs`).
    pub fn claim_at(&self, id: TransactionId, cell: usize, make: impl FnOnce() -> Vec<u8>) -> Claim {
        self.flights.claim(self.alloc, id, cell, make)
    }

    /// Marks the transaction TM is creating at `cell` in flight until its route ends (a birth,
    /// see `flight.rs`).
    pub fn begin_birth(&self, index: u32, cell: usize) -> Option<FlightHandle> {
        self.flights.begin_birth(self.alloc, index, cell)
    }

    /// Ends a birth: the transaction's id (if an append left a request) and the requests.
    ///
    /// # Safety
    /// `handle` came from `begin_birth` on this silo and was not ended before.
    pub unsafe fn end_birth(&self, handle: FlightHandle) -> (Option<TransactionId>, Vec<Vec<u8>>) {
        // SAFETY: the caller's contract.
        unsafe { self.flights.end_birth(self.alloc, handle) }
    }

    /// Parks the caller's claim of a suspended transaction with `request` on it, for the route
    /// that resumes it (see `flight.rs`).
    ///
    /// # Safety
    /// `held` came from `claim` on this silo and was not ended or parked before.
    pub unsafe fn park(&self, held: FlightHandle, request: &[u8]) -> Claim {
        // SAFETY: the caller's contract.
        unsafe { self.flights.park(self.alloc, held, request) }
    }

    /// Takes what was parked for `id` (for the route that resumes it): the requests, for the
    /// caller to carry out, or to drop when the transaction is gone.
    pub fn take_parked(&self, id: TransactionId) -> Option<Vec<Vec<u8>>> {
        self.flights.take_parked(self.alloc, id)
    }

    /// Ends a flight; returns the appends deferred meanwhile.
    ///
    /// # Safety
    /// `handle` came from `begin_flight` on this silo and was not ended before.
    pub unsafe fn end_flight(&self, handle: FlightHandle) -> Vec<Vec<u8>> {
        // SAFETY: the caller's contract.
        unsafe { self.flights.end(self.alloc, handle) }
    }

    /// Transactions in flight now (for `ts.stats`).
    pub fn in_flight(&self) -> u32 {
        self.flights.in_flight()
    }
}

#[cfg(test)]
mod tests;

