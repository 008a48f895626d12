//! Appends that found nothing stored ("misses"), kept a few seconds for the store that comes
//! after its relay (`lookup(); t_relay(); ts_store();`): a device saved after the relay's
//! `lookup()` whose append ran before `ts_store()` found no call to append to. A store whose
//! route started before such a miss carries out the missed append itself (the "catch-up").
//!
//! Each miss keeps its AoR key and the append's own request (the same opaque bytes a deferred
//! append leaves on a flight), so a catch-up adds exactly what the missed append would have:
//! its table, its lookup URI, its contact filter, or its destination set. A miss only matters
//! while a route that started before it has not reached `ts_store()` yet (the time of one
//! `t_relay()`): misses older than `TTL_MS` are freed, and all of them together never take
//! more than `MAX_BYTES` of shared memory (beyond that a miss is dropped and counted).
//!
//! The silo's miss clock ticks once per miss: a route reads it when it starts, and its store asks
//! for the misses after that reading. Here are the silo's miss methods and each slot's list; the
//! append's lookup that notes a miss is `Silo::transactions_for_append` (in `table.rs`).

use super::{ShmAlloc, Silo, key_hash};
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};

/// How long a miss is kept (ms): far longer than a relay takes, DNS look-ups included.
pub const TTL_MS: u64 = 5_000;
/// The most shared memory all misses may take (a REGISTER flood of unknown AoRs).
pub const MAX_BYTES: u64 = 2 << 20;

impl<A: ShmAlloc> Silo<A> {
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
}

#[repr(C)]
struct Miss {
    next: *mut Miss,
    /// The silo's miss clock when it happened (newest, when the same append missed again).
    clock: u64,
    /// When it happened (the caller's monotonic ms), for the TTL.
    at_ms: u64,
    key_len: u32,
    request_len: u32,
    // `key_len` bytes of key, then `request_len` bytes of request, follow the struct.
}

impl Miss {
    fn size(key: usize, request: usize) -> usize {
        size_of::<Miss>() + key + request
    }

    /// # Safety
    /// `m` points to a live miss.
    unsafe fn key<'a>(m: *const Miss) -> &'a [u8] {
        // SAFETY: written right behind the struct at creation, never changed.
        unsafe { core::slice::from_raw_parts((m as *const u8).add(size_of::<Miss>()), (*m).key_len as usize) }
    }

    /// # Safety
    /// `m` points to a live miss.
    unsafe fn request<'a>(m: *const Miss) -> &'a [u8] {
        // SAFETY: as `key`, right behind it.
        unsafe {
            let at = (m as *const u8).add(size_of::<Miss>() + (*m).key_len as usize);
            core::slice::from_raw_parts(at, (*m).request_len as usize)
        }
    }
}

/// Shared-memory totals of every slot's misses.
pub struct Budget {
    pub bytes: AtomicU64,
    pub count: AtomicU64,
    /// Misses not kept because `MAX_BYTES` was reached.
    pub dropped: AtomicU64,
}

impl Budget {
    pub const fn new() -> Self {
        Budget { bytes: AtomicU64::new(0), count: AtomicU64::new(0), dropped: AtomicU64::new(0) }
    }
}

/// One hash slot's misses, newest first. Every method needs the slot's lock.
#[repr(C)]
pub struct Misses {
    first: *mut Miss,
}

impl Misses {
    pub const fn new() -> Self {
        Misses { first: ptr::null_mut() }
    }

    /// Remembers that the append `request` for `key` found nothing, at `clock` and `now_ms`.
    /// The same append missing again only moves its clock. False when not kept (no memory).
    ///
    /// # Safety
    /// The caller holds the slot's lock.
    pub unsafe fn note<A: ShmAlloc>(&mut self, alloc: A, budget: &Budget, key: &[u8], request: &[u8], clock: u64, now_ms: u64) -> bool {
        // SAFETY: the caller's contract.
        unsafe {
            self.prune(alloc, budget, now_ms);
            let mut m = self.first;
            while !m.is_null() {
                if Miss::key(m) == key && Miss::request(m) == request {
                    (*m).clock = clock;
                    (*m).at_ms = now_ms;
                    return true;
                }
                m = (*m).next;
            }
            let size = Miss::size(key.len(), request.len());
            if budget.bytes.load(Relaxed) + size as u64 > MAX_BYTES {
                budget.dropped.fetch_add(1, Relaxed);
                return false;
            }
            let m = alloc.alloc(size) as *mut Miss;
            if m.is_null() {
                budget.dropped.fetch_add(1, Relaxed);
                return false;
            }
            m.write(Miss { next: self.first, clock, at_ms: now_ms, key_len: key.len() as u32, request_len: request.len() as u32 });
            let tail = (m as *mut u8).add(size_of::<Miss>());
            ptr::copy_nonoverlapping(key.as_ptr(), tail, key.len());
            ptr::copy_nonoverlapping(request.as_ptr(), tail.add(key.len()), request.len());
            self.first = m;
            budget.bytes.fetch_add(size as u64, Relaxed);
            budget.count.fetch_add(1, Relaxed);
        }
        true
    }

    /// The requests of `key`'s misses newer than `since`, oldest first.
    ///
    /// # Safety
    /// The caller holds the slot's lock.
    pub unsafe fn since(&self, key: &[u8], since: u64) -> Vec<Vec<u8>> {
        let mut found = Vec::new();
        // SAFETY: the list is stable under the caller's lock.
        unsafe {
            let mut m = self.first;
            while !m.is_null() {
                if (*m).clock > since && Miss::key(m) == key {
                    found.push(((*m).clock, Miss::request(m).to_vec()));
                }
                m = (*m).next;
            }
        }
        found.sort_unstable_by_key(|(clock, _)| *clock);
        found.into_iter().map(|(_, request)| request).collect()
    }

    /// Frees the misses older than `TTL_MS` at `now_ms`.
    ///
    /// # Safety
    /// The caller holds the slot's lock (or has exclusive access).
    pub unsafe fn prune<A: ShmAlloc>(&mut self, alloc: A, budget: &Budget, now_ms: u64) {
        // SAFETY: the list is the caller's to change; each freed block came from `alloc`.
        unsafe {
            let mut link = &raw mut self.first;
            while !(*link).is_null() {
                let m = *link;
                if now_ms.saturating_sub((*m).at_ms) >= TTL_MS {
                    *link = (*m).next;
                    budget.bytes.fetch_sub(Miss::size((*m).key_len as usize, (*m).request_len as usize) as u64, Relaxed);
                    budget.count.fetch_sub(1, Relaxed);
                    alloc.free(m as *mut u8);
                } else {
                    link = &raw mut (*m).next;
                }
            }
        }
    }

    /// Frees every miss.
    ///
    /// # Safety
    /// Exclusive access (shutdown).
    pub unsafe fn free_all<A: ShmAlloc>(&mut self, alloc: A, budget: &Budget) {
        // SAFETY: the caller's contract; at u64::MAX every miss is older than the TTL.
        unsafe { self.prune(alloc, budget, u64::MAX) };
    }
}
