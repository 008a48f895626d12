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

pub use flight::{Claim, FlightHandle, MAX_PENDING};
pub use lock::{ShmMutex, ShmMutexGuard};
pub use miss::{MAX_BYTES as MISS_MAX_BYTES, TTL_MS as MISS_TTL_MS};

use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};

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
pub struct StoredTransaction {
    next: *mut StoredTransaction,
    record: *mut AorRecord,
    pub id: TransactionId,
}

/// The silo's handle on one stored transaction (TMCB_DESTROY's parameter).
pub type TxHandle = NonNull<StoredTransaction>;

#[repr(C)]
struct AorRecord {
    next: *mut AorRecord,
    transactions: *mut StoredTransaction,
    hash: u32,
    key_len: u32,
    /// Transactions in `transactions`, for the per-AoR limit and the load report.
    count: u32,
    // `key_len` bytes of key follow the struct.
}

impl AorRecord {
    /// # Safety
    /// `rec` points to a live record.
    unsafe fn key<'a>(rec: *const AorRecord) -> &'a [u8] {
        // SAFETY: the key was copied right behind the struct at creation and never changes.
        unsafe { core::slice::from_raw_parts((rec as *const u8).add(size_of::<AorRecord>()), (*rec).key_len as usize) }
    }
}

#[repr(C)]
struct Slot {
    lock: ShmMutex,
    records: u32,
    first: *mut AorRecord,
    /// Appends for keys of this slot that found no transaction (see `miss.rs`).
    misses: miss::Misses,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// Newly stored: register the removal callback with this handle.
    New(TxHandle),
    /// This transaction was already stored for this AoR: nothing changed.
    Duplicate,
}

#[derive(Debug, PartialEq, Eq)]
pub enum StoreError {
    NoMemory,
    KeyTooLong,
    /// `max_transactions` reached.
    TableFull,
    /// `max_transactions_per_aor` reached for this AoR.
    AorFull,
    /// The callback that would remove it could not be registered: it was not kept.
    WatchFailed,
}

/// How full the table is, for `ts.stats`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TableLoad {
    pub slots_used: u32,
    pub longest_chain: u32,
    pub max_transactions_per_aor: u32,
}

/// One AoR as seen by `dump`.
pub struct RecordSnapshot {
    pub key: Vec<u8>,
    pub hash: u32,
    pub transactions: Vec<TransactionId>,
}

/// Totals gathered by `dump`, as `ts.dump` reports them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DumpTotals {
    pub records: u64,
    pub max_records_per_slot: u32,
    pub transactions: u64,
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

/// The hash table size Kamailio's C tsilo would use for `requested`: at least 1, rounded down to
/// a power of two. Returns the size and, when it differs, a warning for the log.
pub fn sanitize_hash_size(requested: i64) -> (u32, Option<String>) {
    if requested < 1 {
        return (1, Some(format!("hash_size is smaller than 1 -> rounding from {requested} to 1")));
    }
    let capped = requested.min(1 << 30) as u32;
    let size = 1u32 << (31 - capped.leading_zeros());
    if i64::from(size) != requested {
        (size, Some(format!("hash_size is not a power of 2 as it should be -> rounding from {requested} to {size}")))
    } else {
        (size, None)
    }
}

/// FNV-1a: short keys (user parts), cheap, well spread in the low bits we mask with.
pub fn key_hash(key: &[u8]) -> u32 {
    key.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

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

    /// The slot for `hash`: a raw pointer, since its chain is changed by whoever holds its lock.
    fn slot(&self, hash: u32) -> *mut Slot {
        // SAFETY: size is a power of two, so the masked index is in bounds.
        unsafe { self.slots.add((hash & (self.size - 1)) as usize) }
    }

    fn lock(&self, slot: *mut Slot) -> ShmMutexGuard<'_> {
        // SAFETY: slots live as long as the silo; the lock is only used through shared references.
        unsafe { (*slot).lock.lock() }
    }

    /// `store`, then `watch(handle)` for a new entry (the caller registers what removes it when
    /// its transaction goes, TM's TMCB_DESTROY): if that fails, the entry is removed again, so
    /// nothing stays that no callback would ever remove.
    pub fn store_watched(&self, key: &[u8], id: TransactionId, watch: impl FnOnce(TxHandle) -> bool) -> Result<Stored, StoreError> {
        let stored = self.store(key, id)?;
        if let Stored::New(handle) = stored {
            if !watch(handle) {
                // SAFETY: just stored, and nothing else knows the handle.
                unsafe { self.remove(handle) };
                return Err(StoreError::WatchFailed);
            }
        }
        Ok(stored)
    }

    /// Stores `id` for the AoR `key`, creating the AoR's record if it is the first.
    pub fn store(&self, key: &[u8], id: TransactionId) -> Result<Stored, StoreError> {
        let key_len = u32::try_from(key.len()).map_err(|_| StoreError::KeyTooLong)?;
        let max = self.limits.max_transactions;
        if max > 0 && self.counters.stored_transactions.load(Relaxed) >= max {
            self.counters.store_rejected.fetch_add(1, Relaxed);
            return Err(StoreError::TableFull);
        }
        let hash = key_hash(key);
        let slot = self.slot(hash);
        // Allocate before taking the lock: shm_malloc has a lock of its own, keep ours short.
        let tx = self.alloc.alloc(size_of::<StoredTransaction>()) as *mut StoredTransaction;
        if tx.is_null() {
            return Err(StoreError::NoMemory);
        }
        let guard = self.lock(slot);
        // SAFETY: the slot's chain is only read or changed under its lock, held here.
        unsafe {
            let mut rec = find_record(slot, hash, key);
            if rec.is_null() {
                rec = self.alloc.alloc(size_of::<AorRecord>() + key.len()) as *mut AorRecord;
                if rec.is_null() {
                    drop(guard);
                    self.alloc.free(tx as *mut u8);
                    return Err(StoreError::NoMemory);
                }
                rec.write(AorRecord { next: (*slot).first, transactions: ptr::null_mut(), hash, key_len, count: 0 });
                ptr::copy_nonoverlapping(key.as_ptr(), (rec as *mut u8).add(size_of::<AorRecord>()), key.len());
                (*slot).first = rec;
                (*slot).records += 1;
                self.counters.stored_ruris.fetch_add(1, Relaxed);
                self.counters.total_ruris.fetch_add(1, Relaxed);
            } else {
                let mut cur = (*rec).transactions;
                while !cur.is_null() {
                    if (*cur).id == id {
                        drop(guard);
                        self.alloc.free(tx as *mut u8);
                        return Ok(Stored::Duplicate);
                    }
                    cur = (*cur).next;
                }
                let per_aor = self.limits.max_per_aor;
                if per_aor > 0 && (*rec).count >= per_aor {
                    drop(guard);
                    self.alloc.free(tx as *mut u8);
                    self.counters.store_rejected.fetch_add(1, Relaxed);
                    return Err(StoreError::AorFull);
                }
            }
            // Append, so appends and dumps see transactions in arrival order.
            tx.write(StoredTransaction { next: ptr::null_mut(), record: rec, id });
            let mut link = &mut (*rec).transactions as *mut *mut StoredTransaction;
            while !(*link).is_null() {
                link = &mut (**link).next;
            }
            *link = tx;
            (*rec).count += 1;
        }
        drop(guard);
        self.counters.stored_transactions.fetch_add(1, Relaxed);
        self.counters.total_transactions.fetch_add(1, Relaxed);
        // SAFETY: checked non-null above.
        Ok(Stored::New(unsafe { NonNull::new_unchecked(tx) }))
    }

    /// Removes a stored transaction (TM destroyed it), and its AoR with its last transaction.
    ///
    /// # Safety
    /// `handle` came from `store` on this silo and was not removed before.
    pub unsafe fn remove(&self, handle: TxHandle) {
        let tx = handle.as_ptr();
        // SAFETY: `record` and the record's hash never change after creation, and the record
        // outlives its transactions, so reading them before locking is sound.
        let rec = unsafe { (*tx).record };
        let slot = self.slot(unsafe { (*rec).hash });
        let mut free_record = false;
        {
            let _guard = self.lock(slot);
            // SAFETY: lists are changed only under the slot lock, held here.
            unsafe {
                let mut link = &mut (*rec).transactions as *mut *mut StoredTransaction;
                while !(*link).is_null() && *link != tx {
                    link = &mut (**link).next;
                }
                debug_assert!(!(*link).is_null(), "removing a transaction that is not stored");
                if !(*link).is_null() {
                    *link = (*tx).next;
                    (*rec).count -= 1;
                }
                if (*rec).transactions.is_null() {
                    let mut rlink = &mut (*slot).first as *mut *mut AorRecord;
                    while *rlink != rec {
                        rlink = &mut (**rlink).next;
                    }
                    *rlink = (*rec).next;
                    (*slot).records -= 1;
                    free_record = true;
                }
            }
        }
        self.counters.stored_transactions.fetch_sub(1, Relaxed);
        // SAFETY: both are unlinked, and no one else holds their address.
        unsafe {
            self.alloc.free(tx as *mut u8);
            if free_record {
                self.counters.stored_ruris.fetch_sub(1, Relaxed);
                self.alloc.free(rec as *mut u8);
            }
        }
    }

    /// The ids stored for `key`, in arrival order, appended to `out`; false if the AoR is unknown.
    pub fn transactions_of(&self, key: &[u8], out: &mut Vec<TransactionId>) -> bool {
        self.collect(key, None::<(u64, fn() -> Vec<u8>)>, out)
    }

    /// As `transactions_of`, for an append: when the AoR has nothing stored, the append's
    /// `request` (built only then) is remembered as a miss at `now_ms` (see `missed_since`).
    pub fn transactions_for_append(&self, key: &[u8], now_ms: u64, request: impl FnOnce() -> Vec<u8>, out: &mut Vec<TransactionId>) -> bool {
        self.collect(key, Some((now_ms, request)), out)
    }

    fn collect(&self, key: &[u8], miss: Option<(u64, impl FnOnce() -> Vec<u8>)>, out: &mut Vec<TransactionId>) -> bool {
        let hash = key_hash(key);
        let slot = self.slot(hash);
        let _guard = self.lock(slot);
        // SAFETY: read (and a miss written) under the slot lock.
        unsafe {
            let rec = find_record(slot, hash, key);
            if rec.is_null() {
                if let Some((now_ms, request)) = miss {
                    let clock = self.miss_clock.fetch_add(1, SeqCst) + 1;
                    (*slot).misses.note(self.alloc, &self.misses, key, &request(), clock, now_ms);
                }
                return false;
            }
            let mut tx = (*rec).transactions;
            while !tx.is_null() {
                out.push((*tx).id);
                tx = (*tx).next;
            }
        }
        true
    }

    /// The miss clock now: a route reads it when it starts, to ask `missed_since` later.
    pub fn miss_clock(&self) -> u64 {
        self.miss_clock.load(SeqCst)
    }

    /// The requests of the appends for `key` that found nothing stored after the miss clock
    /// read `since`, oldest first: what a store's catch-up carries out.
    pub fn missed_since(&self, key: &[u8], since: u64) -> Vec<Vec<u8>> {
        // No append missed anywhere since: nothing to look for (and no lock to take).
        if self.miss_clock() == since {
            return Vec::new();
        }
        let slot = self.slot(key_hash(key));
        let _guard = self.lock(slot);
        // SAFETY: read under the slot lock.
        unsafe { (*slot).misses.since(key, since) }
    }

    /// Frees the misses older than `MISS_TTL_MS` at `now_ms`, slot by slot (a timer's sweep;
    /// appends also prune the slot they miss in).
    pub fn prune_misses(&self, now_ms: u64) {
        for i in 0..self.size {
            let slot = self.slot(i);
            let _guard = self.lock(slot);
            // SAFETY: changed under the slot lock.
            unsafe { (*slot).misses.prune(self.alloc, &self.misses, now_ms) };
        }
    }

    /// Misses kept now, their bytes, and how many were dropped (`MISS_MAX_BYTES`) so far.
    pub fn miss_totals(&self) -> (u64, u64, u64) {
        (self.misses.count.load(Relaxed), self.misses.bytes.load(Relaxed), self.misses.dropped.load(Relaxed))
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

    /// Calls `f` for every AoR, slot by slot; each slot is copied under its lock and `f` runs
    /// after the lock is released.
    pub fn dump(&self, mut f: impl FnMut(&RecordSnapshot)) -> DumpTotals {
        let mut totals = DumpTotals::default();
        let mut records = Vec::new();
        for i in 0..self.size {
            let slot = self.slot(i);
            {
                let _guard = self.lock(slot);
                // SAFETY: read under the slot lock.
                unsafe {
                    totals.max_records_per_slot = totals.max_records_per_slot.max((*slot).records);
                    let mut rec = (*slot).first;
                    while !rec.is_null() {
                        let mut transactions = Vec::new();
                        let mut tx = (*rec).transactions;
                        while !tx.is_null() {
                            transactions.push((*tx).id);
                            tx = (*tx).next;
                        }
                        records.push(RecordSnapshot { key: AorRecord::key(rec).to_vec(), hash: (*rec).hash, transactions });
                        rec = (*rec).next;
                    }
                }
            }
            for r in records.drain(..) {
                totals.records += 1;
                totals.transactions += r.transactions.len() as u64;
                f(&r);
            }
        }
        totals
    }
}

impl<A: ShmAlloc> Silo<A> {
    /// Slots in use, the longest chain and the most transactions on one AoR (one slot locked
    /// at a time).
    pub fn load(&self) -> TableLoad {
        let mut load = TableLoad::default();
        for i in 0..self.size {
            let slot = self.slot(i);
            let _guard = self.lock(slot);
            // SAFETY: read under the slot lock.
            unsafe {
                if (*slot).records > 0 {
                    load.slots_used += 1;
                }
                load.longest_chain = load.longest_chain.max((*slot).records);
                let mut rec = (*slot).first;
                while !rec.is_null() {
                    load.max_transactions_per_aor = load.max_transactions_per_aor.max((*rec).count);
                    rec = (*rec).next;
                }
            }
        }
        load
    }
}

/// # Safety
/// The caller holds `slot`'s lock.
unsafe fn find_record(slot: *mut Slot, hash: u32, key: &[u8]) -> *mut AorRecord {
    // SAFETY: the chain is stable under the caller's lock.
    unsafe {
        let mut rec = (*slot).first;
        while !rec.is_null() {
            if (*rec).hash == hash && AorRecord::key(rec) == key {
                return rec;
            }
            rec = (*rec).next;
        }
    }
    ptr::null_mut()
}

#[cfg(test)]
mod tests;
