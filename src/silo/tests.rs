use super::*;
use super::table::find_record;
use core::sync::atomic::{AtomicI64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};

/// The process heap, counting live blocks so tests can prove nothing leaks.
#[derive(Clone, Copy)]
pub(crate) struct CountingHeap(&'static AtomicI64);

impl CountingHeap {
    pub(crate) fn new() -> Self {
        CountingHeap(Box::leak(Box::new(AtomicI64::new(0))))
    }
    pub(crate) fn live(&self) -> i64 {
        self.0.load(SeqCst)
    }
}

impl ShmAlloc for CountingHeap {
    fn alloc(&self, size: usize) -> *mut u8 {
        self.0.fetch_add(1, SeqCst);
        // SAFETY: plain malloc; glibc aligns to 16.
        unsafe { libc::malloc(size) as *mut u8 }
    }
    unsafe fn free(&self, p: *mut u8) {
        self.0.fetch_sub(1, SeqCst);
        // SAFETY: p came from malloc above.
        unsafe { libc::free(p as *mut libc::c_void) }
    }
}

fn id(index: u32, label: u32) -> TransactionId {
    TransactionId { index, label }
}

fn ids_of<A: ShmAlloc>(silo: &Silo<A>, key: &[u8]) -> Option<Vec<TransactionId>> {
    let mut v = Vec::new();
    silo.transactions_of(key, &mut v).then_some(v)
}

fn stored(r: Result<Stored, StoreError>) -> TxHandle {
    match r {
        Ok(Stored::New(h)) => h,
        other => panic!("expected a new entry, got {other:?}"),
    }
}

#[test]
fn store_lookup_remove() {
    let heap = CountingHeap::new();
    let ptr = Silo::create(heap, 8, Limits::default()).unwrap();
    let silo = unsafe { ptr.as_ref() };
    assert_eq!(ids_of(silo, b"alice"), None);

    let a = stored(silo.store(b"alice", id(1, 10)));
    let b = stored(silo.store(b"alice", id(2, 20)));
    let c = stored(silo.store(b"bob", id(3, 30)));
    assert_eq!(ids_of(silo, b"alice"), Some(vec![id(1, 10), id(2, 20)]));
    assert_eq!(ids_of(silo, b"bob"), Some(vec![id(3, 30)]));
    assert_eq!(silo.counters.stored_ruris.load(SeqCst), 2);
    assert_eq!(silo.counters.stored_transactions.load(SeqCst), 3);

    unsafe { silo.remove(a) };
    assert_eq!(ids_of(silo, b"alice"), Some(vec![id(2, 20)]));
    unsafe { silo.remove(b) };
    assert_eq!(ids_of(silo, b"alice"), None, "an AoR disappears with its last transaction");
    unsafe { silo.remove(c) };
    assert_eq!(silo.counters.stored_ruris.load(SeqCst), 0);
    assert_eq!(silo.counters.stored_transactions.load(SeqCst), 0);
    assert_eq!(silo.counters.total_ruris.load(SeqCst), 2, "one record each for alice and bob");
    assert_eq!(silo.counters.total_transactions.load(SeqCst), 3);
    assert_eq!(heap.live(), 3, "only the silo, its slots and its flight pool remain");
    unsafe { Silo::destroy(ptr) };
    assert_eq!(heap.live(), 0);
}

#[test]
fn duplicate_store_keeps_one_entry() {
    let heap = CountingHeap::new();
    let ptr = Silo::create(heap, 4, Limits::default()).unwrap();
    let silo = unsafe { ptr.as_ref() };
    let h = stored(silo.store(b"alice", id(5, 6)));
    assert_eq!(silo.store(b"alice", id(5, 6)), Ok(Stored::Duplicate));
    assert_eq!(ids_of(silo, b"alice"), Some(vec![id(5, 6)]));
    assert_eq!(silo.counters.stored_transactions.load(SeqCst), 1);
    // The same transaction for another AoR is a separate entry (a forked INVITE to two users).
    let other = stored(silo.store(b"bob", id(5, 6)));
    unsafe {
        silo.remove(h);
        silo.remove(other);
    }
    assert_eq!(heap.live(), 3, "the refused duplicate's block was freed");
    unsafe { Silo::destroy(ptr) };
}

#[test]
fn collisions_in_one_slot() {
    let heap = CountingHeap::new();
    let ptr = Silo::create(heap, 1, Limits::default()).unwrap();
    let silo = unsafe { ptr.as_ref() };
    let keys: Vec<String> = (0..50).map(|i| format!("user{i}")).collect();
    let handles: Vec<TxHandle> =
        keys.iter().enumerate().map(|(i, k)| stored(silo.store(k.as_bytes(), id(i as u32, 1)))).collect();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(ids_of(silo, k.as_bytes()), Some(vec![id(i as u32, 1)]));
    }
    let mut seen = 0;
    let totals = silo.dump(|r| {
        seen += 1;
        assert_eq!(r.hash, key_hash(&r.key));
    });
    assert_eq!(seen, 50);
    assert_eq!(totals, DumpTotals { records: 50, max_records_per_slot: 50, transactions: 50 });
    // Remove from the middle, the head and the tail of the chain.
    for i in [25, 49, 0] {
        unsafe { silo.remove(handles[i]) };
        assert_eq!(ids_of(silo, keys[i].as_bytes()), None);
    }
    assert_eq!(silo.dump(|_| {}).records, 47);
    unsafe { Silo::destroy(ptr) };
    assert_eq!(heap.live(), 0, "destroy frees what is still stored");
}

#[test]
fn hash_size_rounding() {
    assert_eq!(sanitize_hash_size(2048), (2048, None));
    assert_eq!(sanitize_hash_size(1), (1, None));
    assert_eq!(sanitize_hash_size(1000).0, 512);
    assert!(sanitize_hash_size(1000).1.unwrap().contains("rounding from 1000 to 512"));
    assert_eq!(sanitize_hash_size(3).0, 2);
    assert_eq!(sanitize_hash_size(0).0, 1);
    assert_eq!(sanitize_hash_size(-5).0, 1);
    assert!(sanitize_hash_size(-5).1.unwrap().contains("smaller than 1"));
}

#[test]
fn table_bytes_is_what_create_takes() {
    // Sums the sizes asked for (and leaks: the test only creates).
    #[derive(Clone, Copy)]
    struct Summing(&'static AtomicUsize);
    impl ShmAlloc for Summing {
        fn alloc(&self, size: usize) -> *mut u8 {
            self.0.fetch_add(size, SeqCst);
            // SAFETY: plain malloc; glibc aligns to 16.
            unsafe { libc::malloc(size) as *mut u8 }
        }
        unsafe fn free(&self, _: *mut u8) {}
    }
    let heap = Summing(Box::leak(Box::new(AtomicUsize::new(0))));
    Silo::create(heap, 1024, Limits::default()).unwrap();
    assert_eq!(heap.0.load(SeqCst), Silo::<Summing>::table_bytes(1024));
    // README: a slot costs 24 bytes (the flight pool is the same for any size).
    assert_eq!(Silo::<Summing>::table_bytes(2048) - Silo::<Summing>::table_bytes(1024), 1024 * 24);
}

#[test]
fn keys_are_exact_bytes() {
    // With use_domain the module keys by the whole URI, without it by the user part: the silo
    // itself must treat keys as exact byte strings.
    let heap = CountingHeap::new();
    let ptr = Silo::create(heap, 16, Limits::default()).unwrap();
    let silo = unsafe { ptr.as_ref() };
    let a = stored(silo.store(b"sip:alice@a.example", id(1, 1)));
    let b = stored(silo.store(b"sip:alice@b.example", id(2, 2)));
    assert_eq!(ids_of(silo, b"sip:alice@a.example"), Some(vec![id(1, 1)]));
    assert_eq!(ids_of(silo, b"sip:alice@b.example"), Some(vec![id(2, 2)]));
    assert_eq!(ids_of(silo, b"alice"), None);
    assert_eq!(ids_of(silo, b"ALICE"), None);
    unsafe {
        silo.remove(a);
        silo.remove(b);
        Silo::destroy(ptr);
    }
}

#[test]
fn out_of_memory_is_an_error_not_a_crash() {
    #[derive(Clone, Copy)]
    struct Budget(&'static AtomicI64, CountingHeap);
    impl ShmAlloc for Budget {
        fn alloc(&self, size: usize) -> *mut u8 {
            if self.0.fetch_sub(1, SeqCst) <= 0 { ptr::null_mut() } else { self.1.alloc(size) }
        }
        unsafe fn free(&self, p: *mut u8) {
            unsafe { self.1.free(p) }
        }
    }
    let heap = CountingHeap::new();
    let budget = Budget(Box::leak(Box::new(AtomicI64::new(4))), heap);
    let ptr = Silo::create(budget, 4, Limits::default()).unwrap(); // 3 blocks (slots, silo, flight pool)
    let silo = unsafe { ptr.as_ref() };
    // One block left: the transaction gets it, the new record does not.
    assert_eq!(silo.store(b"alice", id(1, 1)), Err(StoreError::NoMemory));
    assert_eq!(ids_of(silo, b"alice"), None);
    assert_eq!(silo.store(b"alice", id(1, 1)), Err(StoreError::NoMemory));
    assert_eq!(heap.live(), 3, "failed stores leave nothing behind");
    // Flights still work from the pool.
    let f = silo.begin_flight(id(1, 1)).expect("a pooled node needs no allocation");
    assert!(unsafe { silo.end_flight(f) }.is_empty());
    assert_eq!(heap.live(), 3);
    unsafe { Silo::destroy(ptr) };
}

// ---- several processes on one shared mapping ----

/// A bump allocator over a MAP_SHARED mapping: what one forked process allocates, all see.
#[derive(Clone, Copy)]
struct SharedArena(*mut ArenaHeader);

struct ArenaHeader {
    next: AtomicUsize,
    end: usize,
    live: AtomicI64,
}

// SAFETY: the header is only touched through atomics.
unsafe impl Send for SharedArena {}
unsafe impl Sync for SharedArena {}

impl SharedArena {
    fn new(bytes: usize) -> Self {
        // SAFETY: a fresh anonymous shared mapping; checked for failure.
        unsafe {
            let p = libc::mmap(
                ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let header = p as *mut ArenaHeader;
            let start = p as usize + size_of::<ArenaHeader>().next_multiple_of(16);
            header.write(ArenaHeader { next: AtomicUsize::new(start), end: p as usize + bytes, live: AtomicI64::new(0) });
            SharedArena(header)
        }
    }
    fn live(&self) -> i64 {
        unsafe { (*self.0).live.load(SeqCst) }
    }
}

impl ShmAlloc for SharedArena {
    fn alloc(&self, size: usize) -> *mut u8 {
        // SAFETY: the header lives in the mapping for the whole test.
        let h = unsafe { &*self.0 };
        let at = h.next.fetch_add(size.next_multiple_of(16), SeqCst);
        if at + size > h.end {
            return ptr::null_mut();
        }
        h.live.fetch_add(1, SeqCst);
        at as *mut u8
    }
    unsafe fn free(&self, _p: *mut u8) {
        unsafe { (*self.0).live.fetch_sub(1, SeqCst) };
    }
}

/// Runs `work(child_number)` in `n` forked children and checks they all exit 0.
fn in_children(n: u32, work: impl Fn(u32) -> bool) {
    let mut pids = Vec::new();
    for c in 0..n {
        // SAFETY: the child only touches the shared mapping (no heap, no locks of this process)
        // and leaves with _exit, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(c))).unwrap_or(false);
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pids.push(pid);
    }
    for pid in pids {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child {pid} failed: {status}");
    }
}

#[test]
fn shm_mutex_excludes_across_processes() {
    const CHILDREN: u32 = 4;
    const ROUNDS: u64 = 50_000;
    let arena = SharedArena::new(1 << 16);
    let lock = arena.alloc(size_of::<ShmMutex>()) as *mut ShmMutex;
    let counter = arena.alloc(size_of::<u64>()) as *mut u64;
    // SAFETY: fresh, aligned blocks of the shared mapping.
    unsafe {
        lock.write(ShmMutex::new());
        counter.write(0);
    }
    let (lock_addr, counter_addr) = (lock as usize, counter as usize);
    in_children(CHILDREN, |_| {
        let lock = unsafe { &*(lock_addr as *const ShmMutex) };
        for _ in 0..ROUNDS {
            let _g = lock.lock();
            // A non-atomic read-modify-write: only mutual exclusion keeps the count exact.
            unsafe {
                let p = counter_addr as *mut u64;
                let v = ptr::read_volatile(p);
                std::hint::spin_loop();
                ptr::write_volatile(p, v + 1);
            }
        }
        true
    });
    assert_eq!(unsafe { *counter }, u64::from(CHILDREN) * ROUNDS);
}

#[test]
fn forked_processes_share_one_silo() {
    const CHILDREN: u32 = 4;
    const PER_CHILD: u32 = 3_000;
    let arena = SharedArena::new(64 << 20);
    // Two slots: every process hammers the same locks and chains.
    let ptr = Silo::create(arena, 2, Limits::default()).unwrap();
    let baseline = arena.live();
    let addr = ptr.as_ptr() as usize;
    let keys: [&[u8]; 6] = [b"alice", b"bob", b"carol", b"dave", b"erin", b"frank"];

    // Each child stores its own transactions over shared AoRs, then removes every other one.
    in_children(CHILDREN, |c| {
        let silo = unsafe { &*(addr as *const Silo<SharedArena>) };
        let mut handles = [None; PER_CHILD as usize];
        for i in 0..PER_CHILD {
            let key = keys[(i % 6) as usize];
            match silo.store(key, id(c, i)) {
                Ok(Stored::New(h)) => handles[i as usize] = Some(h),
                _ => return false,
            }
        }
        for i in (0..PER_CHILD).step_by(2) {
            unsafe { silo.remove(handles[i as usize].unwrap()) };
        }
        true
    });

    let silo = unsafe { ptr.as_ref() };
    let kept = u64::from(CHILDREN * PER_CHILD / 2);
    assert_eq!(silo.counters.stored_transactions.load(SeqCst), kept);
    assert_eq!(silo.counters.total_transactions.load(SeqCst), u64::from(CHILDREN * PER_CHILD));
    let mut all = Vec::new();
    for k in keys {
        silo.transactions_of(k, &mut all);
    }
    assert_eq!(all.len() as u64, kept, "nothing lost, nothing duplicated");
    all.sort_by_key(|t| (t.index, t.label));
    all.dedup();
    assert_eq!(all.len() as u64, kept);
    assert!(all.iter().all(|t| t.label % 2 == 1), "exactly the odd ones remain");

    // Now remove the rest from other processes than the ones that stored them.
    let mut rest = Vec::new();
    silo.dump(|_| {});
    for k in keys {
        let hash = key_hash(k);
        let slot = silo.slot(hash);
        let _g = silo.lock(slot);
        unsafe {
            let rec = find_record(slot, hash, k);
            if rec.is_null() {
                continue; // keys whose every transaction had an even label are gone
            }
            let mut tx = (*rec).transactions;
            while !tx.is_null() {
                rest.push(tx as usize);
                tx = (*tx).next;
            }
        }
    }
    let rest_ref = &rest;
    in_children(CHILDREN, |c| {
        let silo = unsafe { &*(addr as *const Silo<SharedArena>) };
        for (i, &h) in rest_ref.iter().enumerate() {
            if i as u32 % CHILDREN == c {
                unsafe { silo.remove(NonNull::new_unchecked(h as *mut StoredTransaction)) };
            }
        }
        true
    });
    assert_eq!(silo.counters.stored_transactions.load(SeqCst), 0);
    assert_eq!(silo.counters.stored_ruris.load(SeqCst), 0);
    assert_eq!(silo.dump(|_| {}), DumpTotals::default());
    assert_eq!(arena.live(), baseline, "every block allocated by a child was freed");
}

#[test]
fn limits_refuse_and_count_and_free_what_they_refuse() {
    let heap = CountingHeap::new();
    let ptr = Silo::create(heap, 4, Limits { max_transactions: 5, max_per_aor: 3 }).unwrap();
    let silo = unsafe { ptr.as_ref() };
    let bob: Vec<TxHandle> = (0..3).map(|i| stored(silo.store(b"bob", id(i, 0)))).collect();
    assert_eq!(silo.store(b"bob", id(3, 0)), Err(StoreError::AorFull));
    assert_eq!(silo.store(b"bob", id(0, 0)), Ok(Stored::Duplicate), "a duplicate is not a new entry");
    let alice: Vec<TxHandle> = (0..2).map(|i| stored(silo.store(b"alice", id(i, 1)))).collect();
    assert_eq!(silo.store(b"carol", id(9, 9)), Err(StoreError::TableFull));
    assert_eq!(silo.counters.store_rejected.load(SeqCst), 2);
    assert_eq!(silo.load().max_transactions_per_aor, 3);
    assert_eq!(heap.live(), 3 + 2 + 5, "silo, slots, flight pool, two AoRs, five transactions: refused blocks freed");
    // Room again once transactions leave.
    unsafe { silo.remove(bob[0]) };
    let again = stored(silo.store(b"bob", id(3, 0)));
    for h in bob[1..].iter().chain(&alice).chain([&again]) {
        unsafe { silo.remove(*h) };
    }
    assert_eq!(silo.load(), TableLoad::default());
    unsafe { Silo::destroy(ptr) };
    assert_eq!(heap.live(), 0);
}

#[test]
fn load_reports_slots_chains_and_the_busiest_aor() {
    let heap = CountingHeap::new();
    let ptr = Silo::create(heap, 1, Limits::default()).unwrap();
    let silo = unsafe { ptr.as_ref() };
    let mut handles = vec![stored(silo.store(b"a", id(1, 1))), stored(silo.store(b"b", id(2, 2)))];
    handles.extend((0..4).map(|i| stored(silo.store(b"c", id(10 + i, 3)))));
    assert_eq!(silo.load(), TableLoad { slots_used: 1, longest_chain: 3, max_transactions_per_aor: 4 });
    for h in handles {
        unsafe { silo.remove(h) };
    }
    unsafe { Silo::destroy(ptr) };
}

#[test]
fn an_entry_whose_removal_callback_cannot_be_registered_is_not_kept() {
    // Upstream fixed this after 6.0.1 (the C module kept the entry, and leaked it, when TM
    // refused the callback).
    let heap = CountingHeap::new();
    let ptr = Silo::create(heap, 8, Limits::default()).unwrap();
    let silo = unsafe { ptr.as_ref() };
    let baseline = heap.live();
    assert_eq!(silo.store_watched(b"alice", id(1, 1), |_| false), Err(StoreError::WatchFailed));
    let mut ids = Vec::new();
    assert!(!silo.transactions_of(b"alice", &mut ids) && ids.is_empty(), "not kept: {ids:?}");
    assert_eq!(silo.counters.stored_transactions.load(Relaxed), 0);
    assert_eq!(heap.live(), baseline, "entry and record freed");
    // Beside another entry of the same AoR: only the new one goes.
    let kept = stored(silo.store_watched(b"alice", id(2, 2), |_| true));
    assert_eq!(silo.store_watched(b"alice", id(3, 3), |_| false), Err(StoreError::WatchFailed));
    assert!(silo.transactions_of(b"alice", &mut ids));
    assert_eq!(ids, [id(2, 2)]);
    // A duplicate is not watched twice.
    assert_eq!(silo.store_watched(b"alice", id(2, 2), |_| panic!("already watched")), Ok(Stored::Duplicate));
    unsafe { silo.remove(kept) };
    assert_eq!(heap.live(), baseline);
    unsafe { Silo::destroy(ptr) };
    assert_eq!(heap.live(), 0);
}

// ---- transactions in flight, misses ----

#[test]
fn appends_to_a_transaction_in_flight_wait_for_the_end_of_its_route() {
    let heap = CountingHeap::new();
    let ptr = Silo::create(heap, 8, Limits::default()).unwrap();
    let silo = unsafe { ptr.as_ref() };
    let baseline = heap.live();
    // Nobody holds it: the caller does, until it ends the flight; no request is built.
    let Claim::Mine(mine) = silo.claim(id(1, 1), || panic!("no request built when nobody holds it")) else { panic!() };
    assert_eq!(silo.claim(id(1, 1), || b"meanwhile".to_vec()), Claim::Deferred, "a second appender leaves its request");
    assert_eq!(unsafe { silo.end_flight(mine) }, vec![b"meanwhile".to_vec()]);

    let flight = silo.begin_flight(id(1, 1)).unwrap();
    let handle = stored(silo.store(b"alice", id(1, 1)));
    assert_eq!(silo.in_flight(), 1);
    assert_eq!(silo.claim(id(1, 1), || b"first".to_vec()), Claim::Deferred);
    let Claim::Mine(other) = silo.claim(id(2, 2), || b"other".to_vec()) else { panic!("another transaction is free") };
    assert!(unsafe { silo.end_flight(other) }.is_empty());
    assert_eq!(silo.claim(id(1, 1), || b"second".to_vec()), Claim::Deferred);

    // SAFETY: begun above, ended once.
    let requests = unsafe { silo.end_flight(flight) };
    assert_eq!(requests, vec![b"first".to_vec(), b"second".to_vec()], "in arrival order");
    assert_eq!(silo.in_flight(), 0);
    let Claim::Mine(late) = silo.claim(id(1, 1), || b"late".to_vec()) else { panic!("after the route: append at once") };
    assert!(unsafe { silo.end_flight(late) }.is_empty());

    unsafe { silo.remove(handle) };
    assert_eq!(heap.live(), baseline, "flights and requests are freed");

    // Two flights of one transaction (stored twice in nested routes): the oldest collects.
    let outer = silo.begin_flight(id(3, 3)).unwrap();
    let inner = silo.begin_flight(id(3, 3)).unwrap();
    assert_eq!(silo.claim(id(3, 3), || b"x".to_vec()), Claim::Deferred);
    assert!(unsafe { silo.end_flight(inner) }.is_empty());
    assert_eq!(unsafe { silo.end_flight(outer) }, vec![b"x".to_vec()]);

    // Shutdown with a flight still open frees it too.
    let open = silo.begin_flight(id(4, 4)).unwrap();
    assert_eq!(silo.claim(id(4, 4), || vec![0; 100]), Claim::Deferred);
    let _ = open;
    unsafe { Silo::destroy(ptr) };
    assert_eq!(heap.live(), 0);
}

#[test]
fn requests_left_on_a_transaction_are_bounded_and_parked_ones_go_to_the_route_that_resumes_it() {
    let heap = CountingHeap::new();
    let ptr = Silo::create(heap, 8, Limits::default()).unwrap();
    let silo = unsafe { ptr.as_ref() };
    let baseline = heap.live();

    // The same request twice is kept once; beyond MAX_PENDING a request is refused.
    let f = silo.begin_flight(id(1, 1)).unwrap();
    assert_eq!(silo.claim(id(1, 1), || b"same".to_vec()), Claim::Deferred);
    assert_eq!(silo.claim(id(1, 1), || b"same".to_vec()), Claim::Duplicate);
    for i in 1..MAX_PENDING {
        assert_eq!(silo.claim(id(1, 1), || format!("r{i}").into_bytes()), Claim::Deferred);
    }
    assert_eq!(silo.claim(id(1, 1), || b"one too many".to_vec()), Claim::Refused);
    assert_eq!(unsafe { silo.end_flight(f) }.len(), MAX_PENDING as usize);
    assert_eq!(heap.live(), baseline);

    // An append finds the transaction suspended: it parks its claim with its request. Appends
    // meanwhile leave theirs on it; the route that resumes the transaction takes it over.
    let Claim::Mine(held) = silo.claim(id(2, 2), || panic!()) else { panic!() };
    assert_eq!(unsafe { silo.park(held, b"parked") }, Claim::Deferred);
    assert_eq!(silo.in_flight(), 1);
    assert_eq!(silo.claim(id(2, 2), || b"later".to_vec()), Claim::Deferred, "nobody holds it, but it is parked");
    let route = silo.begin_flight(id(2, 2)).unwrap();
    assert_eq!(silo.in_flight(), 1, "taken over, not a second flight");
    assert_eq!(silo.claim(id(2, 2), || b"during".to_vec()), Claim::Deferred);
    assert_eq!(unsafe { silo.end_flight(route) }, [b"parked".to_vec(), b"later".to_vec(), b"during".to_vec()]);
    assert_eq!(silo.in_flight(), 0);

    // An append claimed it just before a route began on it, and parks after: the route's end
    // carries the request out too.
    let Claim::Mine(late) = silo.claim(id(3, 3), || panic!()) else { panic!() };
    let route = silo.begin_flight(id(3, 3)).unwrap();
    assert_eq!(unsafe { silo.park(late, b"late") }, Claim::Deferred);
    assert_eq!(unsafe { silo.end_flight(route) }, [b"late".to_vec()]);
    assert_eq!(silo.take_parked(id(3, 3)), None);

    // Parked and never resumed: taken back (or dropped with the transaction).
    let Claim::Mine(held) = silo.claim(id(4, 4), || panic!()) else { panic!() };
    assert_eq!(unsafe { silo.park(held, b"orphan") }, Claim::Deferred);
    assert_eq!(silo.take_parked(id(4, 4)), Some(vec![b"orphan".to_vec()]));
    assert_eq!(silo.take_parked(id(4, 4)), None);
    assert_eq!(silo.in_flight(), 0);
    assert_eq!(heap.live(), baseline, "every flight and request freed");

    // Transactions in different shards are held apart.
    let a = silo.begin_flight(id(5, 1)).unwrap();
    let Claim::Mine(b) = silo.claim(id(6, 1), || panic!()) else { panic!("another transaction is free") };
    assert_eq!(silo.in_flight(), 2);
    unsafe {
        silo.end_flight(a);
        silo.end_flight(b);
    }
    unsafe { Silo::destroy(ptr) };
    assert_eq!(heap.live(), 0);
}

#[test]
fn a_transaction_being_created_is_found_by_its_address_by_appends_that_know_its_id() {
    let heap = CountingHeap::new();
    let ptr = Silo::create(heap, 8, Limits::default()).unwrap();
    let silo = unsafe { ptr.as_ref() };
    let baseline = heap.live();
    let (cell, other_cell) = (0x1000usize, 0x2000usize);

    // A birth has no label yet: no append by id alone finds it, one that knows its address does
    // (and writes the id in); an append to another transaction of that index does not.
    let birth = silo.begin_birth(7, cell).unwrap();
    assert_eq!(silo.in_flight(), 1);
    let Claim::Mine(by_id) = silo.claim(id(7, 0), || panic!("no birth matches an id")) else { panic!() };
    assert!(unsafe { silo.end_flight(by_id) }.is_empty());
    let Claim::Mine(neighbour) = silo.claim_at(id(7, 9), other_cell, || panic!()) else { panic!("another cell is free") };
    assert!(unsafe { silo.end_flight(neighbour) }.is_empty());
    assert_eq!(silo.claim_at(id(7, 42), cell, || b"first".to_vec()), Claim::Deferred);
    assert_eq!(silo.claim_at(id(7, 42), cell, || b"second".to_vec()), Claim::Deferred);
    assert_eq!(unsafe { silo.end_birth(birth) }, (Some(id(7, 42)), vec![b"first".to_vec(), b"second".to_vec()]));
    assert_eq!(silo.in_flight(), 0);

    // Nobody appended: the creator learns no id, and nothing is left.
    let quiet = silo.begin_birth(7, cell).unwrap();
    assert_eq!(unsafe { silo.end_birth(quiet) }, (None, Vec::new()));
    let Claim::Mine(after) = silo.claim_at(id(7, 42), cell, || panic!()) else { panic!("after its route: at once") };
    assert!(unsafe { silo.end_flight(after) }.is_empty());
    assert_eq!(heap.live(), baseline, "births and their requests are freed");
    unsafe { Silo::destroy(ptr) };
    assert_eq!(heap.live(), 0);
}

#[test]
fn an_append_that_finds_nothing_leaves_its_request_for_routes_started_before_it() {
    let heap = CountingHeap::new();
    let ptr = Silo::create(heap, 1, Limits::default()).unwrap(); // one slot: every key shares it
    let silo = unsafe { ptr.as_ref() };
    let baseline = heap.live();
    let mut ids = Vec::new();
    let miss = |key: &[u8], request: &[u8], now| {
        let r = request.to_vec();
        !silo.transactions_for_append(key, now, move || r, &mut Vec::new())
    };

    let before = silo.miss_clock();
    assert!(miss(b"bob", b"location sip:bob@example.com", 0));
    let after = silo.miss_clock();
    assert!(after > before);
    assert_eq!(silo.missed_since(b"bob", before), [b"location sip:bob@example.com".to_vec()], "a route that started before the miss");
    assert_eq!(silo.missed_since(b"bob", after), Vec::<Vec<u8>>::new(), "a route that started after it");
    // Exactly the AoR's own misses: a hash neighbour's (here every key shares the slot) is not
    // caught up by another AoR's store.
    assert!(miss(b"ann", b"location_pn sip:ann@example.com contact", 0));
    assert_eq!(silo.missed_since(b"bob", before), [b"location sip:bob@example.com".to_vec()]);
    assert_eq!(silo.missed_since(b"ann", before), [b"location_pn sip:ann@example.com contact".to_vec()]);
    // Every request of the AoR, oldest first; the same append again moves its clock only.
    assert!(miss(b"bob", b"other table", 0));
    let later = silo.miss_clock();
    assert!(miss(b"bob", b"location sip:bob@example.com", 0));
    assert_eq!(silo.missed_since(b"bob", before), [b"other table".to_vec(), b"location sip:bob@example.com".to_vec()]);
    assert_eq!(silo.missed_since(b"bob", later), [b"location sip:bob@example.com".to_vec()]);
    assert_eq!(silo.miss_totals().0, 3);

    // transactions_of (ts.lookup, dumps) is no append: it leaves no miss.
    let clock = silo.miss_clock();
    assert!(!silo.transactions_of(b"carol", &mut ids));
    assert_eq!(silo.miss_clock(), clock);
    // A stored AoR is no miss, and its request is never built.
    let h = stored(silo.store(b"bob", id(1, 1)));
    assert!(silo.transactions_for_append(b"bob", 0, || panic!("no request built when found"), &mut ids));
    assert_eq!(silo.miss_clock(), clock);
    unsafe { silo.remove(h) };

    // Misses live MISS_TTL_MS: a later miss in the slot, or the sweep, frees the old ones.
    assert!(miss(b"dan", b"x", MISS_TTL_MS - 1));
    assert_eq!(silo.miss_totals().0, 4);
    assert!(miss(b"eve", b"y", MISS_TTL_MS));
    assert_eq!(silo.miss_totals().0, 2, "bob's two and ann's went, dan's and eve's stay");
    assert_eq!(silo.missed_since(b"bob", before), Vec::<Vec<u8>>::new());
    silo.prune_misses(3 * MISS_TTL_MS);
    assert_eq!(silo.miss_totals(), (0, 0, 0));
    assert_eq!(heap.live(), baseline, "every miss freed");

    // All misses together stay under MISS_MAX_BYTES: beyond it one is dropped, and counted.
    let big = vec![7u8; 64 * 1024];
    let fits = (MISS_MAX_BYTES as usize) / (big.len() + 64);
    for i in 0..fits + 2 {
        miss(format!("u{i}").as_bytes(), &big, 0);
    }
    let (count, bytes, dropped) = silo.miss_totals();
    assert!(bytes <= MISS_MAX_BYTES && count as usize >= fits - 1 && dropped >= 2, "{count} {bytes} {dropped}");
    // Shutdown frees what is kept.
    unsafe { Silo::destroy(ptr) };
    assert_eq!(heap.live(), 0);
}

#[test]
fn misses_are_kept_per_slot() {
    let heap = CountingHeap::new();
    let ptr = Silo::create(heap, 8, Limits::default()).unwrap();
    let silo = unsafe { ptr.as_ref() };
    let start = silo.miss_clock();
    for user in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"] {
        assert!(!silo.transactions_for_append(user.as_bytes(), 0, || user.as_bytes().to_vec(), &mut Vec::new()));
    }
    for user in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"] {
        assert_eq!(silo.missed_since(user.as_bytes(), start), [user.as_bytes().to_vec()]);
    }
    unsafe { Silo::destroy(ptr) };
    assert_eq!(heap.live(), 0);
    assert_eq!(size_of::<Slot>(), 24, "README (hash_size) says what a slot costs");
}

#[test]
fn no_deferred_append_is_lost_when_the_route_ends_in_another_process() {
    // Child 0 plays the storing worker: flight, store, end, remove, over and over. The others
    // append at the same time: each append is either deferred (and must come back from exactly
    // one end_flight) or told to go ahead; none vanishes, none comes back twice.
    const ROUNDS: u32 = 3_000;
    const APPENDERS: u32 = 3;
    let arena = SharedArena::new(64 << 20);
    let ptr = Silo::create(arena, 2, Limits::default()).unwrap();
    let addr = ptr.as_ptr() as usize;
    let shared = arena.alloc(size_of::<[AtomicU64; 4]>()) as *mut [AtomicU64; 4];
    unsafe { shared.write(Default::default()) };
    let shared_addr = shared as usize;
    in_children(1 + APPENDERS, |c| {
        let silo = unsafe { &*(addr as *const Silo<SharedArena>) };
        let [current, deferred, landed, done] = unsafe { &*(shared_addr as *const [AtomicU64; 4]) };
        if c == 0 {
            for round in 1..=ROUNDS {
                let tid = id(round, round);
                let flight = silo.begin_flight(tid).unwrap();
                let h = match silo.store(b"bob", tid) {
                    Ok(Stored::New(h)) => h,
                    _ => return false,
                };
                current.store(u64::from(round), SeqCst);
                for _ in 0..200 {
                    std::hint::spin_loop();
                }
                let got = unsafe { silo.end_flight(flight) };
                if got.iter().any(|r| r[..4] != round.to_ne_bytes()) {
                    return false; // a request of another transaction
                }
                landed.fetch_add(got.len() as u64, SeqCst);
                unsafe { silo.remove(h) };
            }
            done.store(1, SeqCst);
            true
        } else {
            let mut ids = Vec::new();
            let mut n = 0u32;
            while done.load(SeqCst) == 0 {
                ids.clear();
                if !silo.transactions_of(b"bob", &mut ids) {
                    continue;
                }
                for &tid in &ids {
                    // Each request its own (the same one twice is kept once).
                    n += 1;
                    let request = [tid.index.to_ne_bytes(), c.to_ne_bytes(), n.to_ne_bytes()].concat();
                    match silo.claim(tid, || request) {
                        Claim::Deferred => {
                            deferred.fetch_add(1, SeqCst);
                        }
                        // MAX_PENDING waiting: refused, carried out by nobody.
                        Claim::Refused => {}
                        Claim::Duplicate => return false,
                        // Nobody held it: this appender does, briefly, as an append would, and
                        // carries out what others left meanwhile.
                        Claim::Mine(h) => {
                            landed.fetch_add(unsafe { silo.end_flight(h) }.len() as u64, SeqCst);
                        }
                        Claim::NoMemory => return false,
                    }
                }
            }
            let _ = current;
            true
        }
    });
    let [_, deferred, landed, _] = unsafe { &*shared };
    assert!(deferred.load(SeqCst) > 0, "the appenders never met a flight: the test proves nothing");
    assert_eq!(deferred.load(SeqCst), landed.load(SeqCst));
    let silo = unsafe { ptr.as_ref() };
    assert_eq!(silo.in_flight(), 0);
}
