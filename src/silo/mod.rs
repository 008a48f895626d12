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
pub mod queue;

pub use flight::{Claim, FlightHandle};
pub use lock::{ShmMutex, ShmMutexGuard};

use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};

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
    /// The last appends that found no transaction for a key of this slot: a transaction stored
    /// after its relay, by a route that started before such a miss, may have missed that device.
    /// Each is remembered with its table and contact, so that the store's catch-up adds what the
    /// missed append would have added and nothing more (a by-contact append rings one device, not
    /// its user's other, maybe stale, bindings); older misses fold into `overflow`, which stands
    /// for every contact of its table.
    misses: [Miss; MISSES],
    overflow: Miss,
}

/// Misses remembered exactly per slot (see `Slot::misses`).
const MISSES: usize = 2;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C)]
struct Miss {
    /// The silo's miss clock when it happened (0: never).
    clock: u64,
    /// The usrloc table it would have looked in (a `table_id`).
    table: u8,
    /// `contact_hash` of the one contact it would have added; 0: every contact found.
    contact: u32,
}

impl Miss {
    const NEVER: Miss = Miss { clock: 0, table: 0, contact: 0 };
}

/// An append that found nothing, as `missed_since` reports it: its usrloc table (a `table_id`)
/// and, for an append of one contact, that contact's `contact_hash`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Missed {
    pub table: u8,
    pub contact: Option<u32>,
}

/// A contact URI's hash as misses remember it (never 0, which stands for "every contact").
pub fn contact_hash(uri: &[u8]) -> u32 {
    key_hash(uri).max(1)
}

/// usrloc table names seen by appends that found nothing, so a miss is one byte in its slot.
#[repr(C)]
struct TableNames {
    lock: ShmMutex,
    count: AtomicU32,
    lens: [u8; MAX_TABLES],
    names: [[u8; MAX_TABLE_NAME]; MAX_TABLES],
}

const MAX_TABLES: usize = 8;
const MAX_TABLE_NAME: usize = 64;

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
    /// Ticks once per append that found nothing stored (see `Slot::misses`).
    miss_clock: AtomicU64,
    tables: core::cell::UnsafeCell<TableNames>,
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

/// Remembers a miss in its slot: the same table and contact as a remembered one moves that one's
/// clock; else it takes the place of the oldest, which folds into the overflow (every contact).
fn note_miss(slot: &mut Slot, miss: Miss) {
    if let Some(same) = slot.misses.iter_mut().find(|m| m.clock != 0 && m.table == miss.table && m.contact == miss.contact) {
        same.clock = miss.clock;
        return;
    }
    let oldest = (0..MISSES).min_by_key(|&i| slot.misses[i].clock).unwrap_or(0);
    let old = std::mem::replace(&mut slot.misses[oldest], miss);
    if old.clock != 0 {
        slot.overflow = Miss { clock: old.clock.max(slot.overflow.clock), table: old.table, contact: 0 };
    }
}

impl<A: ShmAlloc> Silo<A> {
    /// The memory `create` takes for `size` slots, before anything is stored: mod_init checks it
    /// against the free shared memory, to name hash_size when the table cannot fit.
    pub fn table_bytes(size: u32) -> usize {
        size as usize * size_of::<Slot>() + size_of::<Silo<A>>()
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
                slots.add(i).write(Slot { lock: ShmMutex::new(), records: 0, first: ptr::null_mut(), misses: [Miss::NEVER; MISSES], overflow: Miss::NEVER });
            }
            let tables = TableNames {
                lock: ShmMutex::new(),
                count: AtomicU32::new(0),
                lens: [0; MAX_TABLES],
                names: [[0; MAX_TABLE_NAME]; MAX_TABLES],
            };
            silo.write(Silo {
                alloc,
                size,
                slots,
                limits,
                counters: Counters::default(),
                flights: flight::Flights::new(),
                miss_clock: AtomicU64::new(0),
                tables: core::cell::UnsafeCell::new(tables),
            });
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
                let mut rec = (*(*silo).slots.add(i)).first;
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
        self.collect(key, None, out)
    }

    /// As `transactions_of`, for an append from usrloc `table` (a `table_id`) of every contact
    /// found, or of the one `contact`: when the AoR has nothing stored, the miss is remembered
    /// in its slot (see `missed_since`).
    pub fn transactions_for_append(&self, key: &[u8], table: u8, contact: Option<&[u8]>, out: &mut Vec<TransactionId>) -> bool {
        self.collect(key, Some((table, contact.map_or(0, contact_hash))), out)
    }

    fn collect(&self, key: &[u8], miss: Option<(u8, u32)>, out: &mut Vec<TransactionId>) -> bool {
        let hash = key_hash(key);
        let slot = self.slot(hash);
        let _guard = self.lock(slot);
        // SAFETY: read (and a miss written) under the slot lock.
        unsafe {
            let rec = find_record(slot, hash, key);
            if rec.is_null() {
                if let Some((table, contact)) = miss {
                    let clock = self.miss_clock.fetch_add(1, SeqCst) + 1;
                    note_miss(&mut *slot, Miss { clock, table, contact });
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

    /// The appends for keys of `key`'s slot that found nothing stored after the miss clock read
    /// `since` (empty: none): what a store's catch-up must add. An append of every contact of a
    /// table stands for the by-contact ones of that table. Hash neighbours share a slot, so this
    /// may name another AoR's misses: the caller's catch-up append finds nothing new then.
    pub fn missed_since(&self, key: &[u8], since: u64) -> Vec<Missed> {
        let slot = self.slot(key_hash(key));
        let (misses, overflow) = {
            let _guard = self.lock(slot);
            // SAFETY: read under the slot lock.
            unsafe { ((*slot).misses, (*slot).overflow) }
        };
        let recent: Vec<Miss> = misses.iter().chain([&overflow]).filter(|m| m.clock > since).copied().collect();
        let mut out: Vec<Missed> = Vec::new();
        for m in &recent {
            let every = recent.iter().any(|o| o.table == m.table && o.contact == 0);
            let missed = Missed { table: m.table, contact: (!every).then_some(m.contact) };
            if !out.contains(&missed) {
                out.push(missed);
            }
        }
        out
    }

    /// A small number for a usrloc table name (1..=8), or 0 when the name is too long or the
    /// registry is full (the caller falls back to a default table).
    pub fn table_id(&self, name: &[u8]) -> u8 {
        if name.is_empty() || name.len() > MAX_TABLE_NAME {
            return 0;
        }
        let tables = self.tables.get();
        // SAFETY: entries below `count` are written once, before `count` is raised (SeqCst).
        let find = |upto: usize| unsafe {
            (0..upto).find(|&i| table_entry(tables, i) == name).map(|i| i as u8 + 1)
        };
        // SAFETY: `count` is an atomic in the silo's memory.
        let known = unsafe { (*tables).count.load(SeqCst) } as usize;
        if let Some(id) = find(known) {
            return id;
        }
        // SAFETY: new entries are written under the registry's lock.
        unsafe {
            let _guard = (*tables).lock.lock();
            let n = (*tables).count.load(SeqCst) as usize;
            if let Some(id) = find(n) {
                return id;
            }
            if n == MAX_TABLES {
                return 0;
            }
            (&mut (*tables).names)[n][..name.len()].copy_from_slice(name);
            (*tables).lens[n] = name.len() as u8;
            (*tables).count.store(n as u32 + 1, SeqCst);
            n as u8 + 1
        }
    }

    /// The name `table_id` gave `id`.
    pub fn table_name(&self, id: u8) -> Option<Vec<u8>> {
        let tables = self.tables.get();
        let i = usize::from(id).checked_sub(1)?;
        // SAFETY: as in `table_id`: entries below `count` never change.
        unsafe { (i < (*tables).count.load(SeqCst) as usize).then(|| table_entry(tables, i).to_vec()) }
    }

    /// Marks a transaction in flight (its storing route has not finished): see `flight.rs`.
    /// None when out of memory.
    pub fn begin_flight(&self, id: TransactionId) -> Option<FlightHandle> {
        self.flights.begin(self.alloc, id)
    }

    /// Takes `id` for an append, or leaves the request `make` builds for whoever holds it
    /// (see `flight.rs`).
    pub fn claim(&self, id: TransactionId, make: impl FnOnce() -> Vec<u8>) -> Claim {
        self.flights.claim(self.alloc, id, make)
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
/// Entry `i` of `tables` is written (below its `count`).
unsafe fn table_entry<'a>(tables: *const TableNames, i: usize) -> &'a [u8] {
    // SAFETY: the caller's contract; written entries never change.
    unsafe { &(&(*tables).names)[i][..usize::from((*tables).lens[i])] }
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
