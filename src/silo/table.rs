//! The hash table: AoR keys hashed to slots, each slot a chain of `AorRecord`s under its own
//! `ShmMutex`, each record the list of `StoredTransaction`s stored for that AoR. Here are storing,
//! removing and looking up by AoR, and what `ts.dump` and `ts.stats` read of the table; the
//! silo's creation and destruction (which lay out and free the slots) stay in `mod.rs`.

use super::{ShmAlloc, ShmMutex, ShmMutexGuard, Silo, TransactionId, miss};
use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering::{Relaxed, SeqCst};

#[repr(C)]
pub struct StoredTransaction {
    pub(super) next: *mut StoredTransaction,
    record: *mut AorRecord,
    pub id: TransactionId,
}

/// The silo's handle on one stored transaction (TMCB_DESTROY's parameter).
pub type TxHandle = NonNull<StoredTransaction>;

#[repr(C)]
pub(super) struct AorRecord {
    pub(super) next: *mut AorRecord,
    pub(super) transactions: *mut StoredTransaction,
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
pub(super) struct Slot {
    pub(super) lock: ShmMutex,
    pub(super) records: u32,
    pub(super) first: *mut AorRecord,
    /// Appends for keys of this slot that found no transaction (see `miss.rs`).
    pub(super) misses: miss::Misses,
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
    /// The slot for `hash`: a raw pointer, since its chain is changed by whoever holds its lock.
    pub(super) fn slot(&self, hash: u32) -> *mut Slot {
        // SAFETY: size is a power of two, so the masked index is in bounds.
        unsafe { self.slots.add((hash & (self.size - 1)) as usize) }
    }

    pub(super) fn lock(&self, slot: *mut Slot) -> ShmMutexGuard<'_> {
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
pub(super) unsafe fn find_record(slot: *mut Slot, hash: u32, key: &[u8]) -> *mut AorRecord {
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
