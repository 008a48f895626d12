//! Microbenchmark of the silo core alone (`src/silo`): no Kamailio, no TM, one thread, memory from
//! the process heap (libc malloc/free behind the module's `ShmAlloc` trait).
//!
//! For tables already holding N AoRs (one transaction each), it measures, in ns per operation:
//! - `store`:  a new transaction for a new AoR (allocates the transaction and the AoR record,
//!   walks the slot's chain to find no match, links both);
//! - `lookup`: `transactions_of` on an existing AoR (random order), reusing one `Vec`;
//! - `remove`: removing a transaction stored by `store` (its AoR goes with it), so N is back.
//!
//! once with the module's default 2048 slots, and once (`@sized`) with one slot per entry,
//! the entry count rounded *up* to a power of two (what a matching `hash_size` buys).
//!
//! Each figure is the median of several batches. `store` and `remove` are timed in chunks of
//! `CHUNK` operations (store CHUNK new AoRs, then remove them), so the table never holds more than
//! N + CHUNK AoRs; the cost of reading the clock (calibrated at start) is subtracted per chunk.
//! `lookup` batches are timed whole. Building the tables is setup, not timed: the default-slot
//! table grows in place from one size to the next, the sized ones are built per size.

#[path = "../../src/silo/mod.rs"]
#[allow(dead_code, unused_imports)]
mod silo;

use silo::{Limits, ShmAlloc, Silo, Stored, TransactionId, TxHandle};
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct MicroResult {
    pub op: &'static str,
    pub entries: usize,
    pub ns_per_op: f64,
}

/// The module's default `hash_size`.
const DEFAULT_SLOTS: u32 = 2048;
const SIZES: [usize; 4] = [1, 1_000, 100_000, 1_000_000];
const SMOKE_SIZES: [usize; 2] = [1, 1_000];
/// Stores (then removes) timed together: small, so the table stays close to N AoRs.
const CHUNK: usize = 8;

/// The process heap as the silo's "shared" memory: enough for one process.
#[derive(Clone, Copy)]
struct Heap;

impl ShmAlloc for Heap {
    fn alloc(&self, size: usize) -> *mut u8 {
        // SAFETY: plain malloc; glibc returns 16-byte aligned blocks (the trait asks for 8).
        unsafe { libc::malloc(size) as *mut u8 }
    }
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: the caller guarantees `p` came from `alloc` above.
        unsafe { libc::free(p as *mut libc::c_void) }
    }
}

/// Keys packed in one buffer, so reading them in a timed loop is sequential and cheap.
struct Keys {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Keys {
    fn new() -> Self {
        Keys { buf: Vec::new(), ends: Vec::new() }
    }
    fn push(&mut self, key: &str) {
        self.buf.extend_from_slice(key.as_bytes());
        self.ends.push(self.buf.len());
    }
    fn len(&self) -> usize {
        self.ends.len()
    }
    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }
}

/// Batch shape for one table.
#[derive(Clone, Copy)]
struct Plan {
    batches: usize,
    ops: usize,
}

fn plan(entries: usize, slots: u32, smoke: bool) -> Plan {
    if smoke {
        return Plan { batches: 3, ops: 1_000 };
    }
    // With long chains (1M AoRs in 2048 slots: ~490 records a slot) each store walks a whole
    // chain of cache misses: fewer operations, or this alone would take minutes.
    let chain = entries / slots as usize;
    let ops = if chain >= 256 {
        1_000
    } else if chain >= 32 {
        4_000
    } else {
        10_000
    };
    Plan { batches: 7, ops }
}

struct Table {
    silo: NonNull<Silo<Heap>>,
    /// AoRs `user0..user{len}` are stored, one transaction each.
    len: usize,
}

impl Table {
    fn new(slots: u32) -> Self {
        Table { silo: Silo::create(Heap, slots, Limits::default()).expect("malloc failed"), len: 0 }
    }

    fn silo(&self) -> &Silo<Heap> {
        // SAFETY: alive until `drop`, which only `Table` calls.
        unsafe { self.silo.as_ref() }
    }

    fn grow_to(&mut self, entries: usize) {
        while self.len < entries {
            let key = format!("user{}", self.len);
            let id = TransactionId { index: self.len as u32, label: 1 };
            match self.silo().store(key.as_bytes(), id) {
                Ok(Stored::New(_)) => {}
                other => panic!("setup store of {key}: {other:?}"),
            }
            self.len += 1;
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: created by `Silo::create`, used by nobody else now.
        unsafe { Silo::destroy(self.silo) }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// What reading the clock twice around nothing costs, in ns (median of many).
fn clock_overhead_ns() -> f64 {
    let samples: Vec<f64> = (0..20_001)
        .map(|_| {
            let t = Instant::now();
            black_box(());
            t.elapsed().as_nanos() as f64
        })
        .collect();
    median(samples)
}

/// xorshift64*: a fixed pseudo-random sequence, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize % n
    }
}

/// (store, lookup, remove) in ns per op on `table`.
fn measure(table: &Table, plan: Plan, new_keys: &Keys, overhead: f64) -> (f64, f64, f64) {
    let silo = table.silo();
    let ops = plan.ops.min(new_keys.len());

    // Lookups: existing AoRs in a random order, fixed before timing.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ table.len as u64);
    let mut lookup_keys = Keys::new();
    for _ in 0..ops {
        lookup_keys.push(&format!("user{}", rng.below(table.len)));
    }

    let mut handles: Vec<TxHandle> = Vec::with_capacity(CHUNK);
    let mut out = Vec::with_capacity(4);
    let (mut stores, mut lookups, mut removes) = (Vec::new(), Vec::new(), Vec::new());
    // One batch more than reported: the first one warms caches and the allocator up.
    for batch in 0..=plan.batches {
        let (mut store_ns, mut remove_ns) = (0.0, 0.0);
        let mut i = 0;
        while i < ops {
            let end = (i + CHUNK).min(ops);
            let t = Instant::now();
            for k in i..end {
                let id = TransactionId { index: k as u32, label: 2 };
                match silo.store(black_box(new_keys.get(k)), id) {
                    Ok(Stored::New(h)) => handles.push(h),
                    other => panic!("store of a new AoR: {other:?}"),
                }
            }
            store_ns += t.elapsed().as_nanos() as f64 - overhead;
            let t = Instant::now();
            for h in handles.drain(..) {
                // SAFETY: stored just above on this silo, removed once.
                unsafe { silo.remove(black_box(h)) };
            }
            remove_ns += t.elapsed().as_nanos() as f64 - overhead;
            i = end;
        }

        let t = Instant::now();
        for k in 0..ops {
            out.clear();
            black_box(silo.transactions_of(black_box(lookup_keys.get(k)), &mut out));
            black_box(&out);
        }
        let lookup_ns = t.elapsed().as_nanos() as f64;

        if batch > 0 {
            stores.push((store_ns / ops as f64).max(0.0));
            removes.push((remove_ns / ops as f64).max(0.0));
            lookups.push(lookup_ns / ops as f64);
        }
    }
    (median(stores), median(lookups), median(removes))
}

/// Runs the microbenchmark; `smoke`: sizes 1 and 1k only, few iterations (well under 2 s).
pub fn run(smoke: bool) -> Vec<MicroResult> {
    let sizes: &[usize] = if smoke { &SMOKE_SIZES } else { &SIZES };
    let overhead = clock_overhead_ns();
    let max_ops = sizes.iter().map(|&n| plan(n, DEFAULT_SLOTS, smoke).ops.max(plan(n, slots_for(n), smoke).ops)).max().unwrap_or(0);
    let mut new_keys = Keys::new();
    for j in 0..max_ops {
        new_keys.push(&format!("new{j}"));
    }

    let mut default_rows = Vec::new();
    let mut sized_rows = Vec::new();
    // The default-slot table grows from one size to the next: built once, up to 1M AoRs.
    let mut default_table = Table::new(DEFAULT_SLOTS);
    for &n in sizes {
        default_table.grow_to(n);
        let r = measure(&default_table, plan(n, DEFAULT_SLOTS, smoke), &new_keys, overhead);
        default_rows.push((n, r));

        let slots = slots_for(n);
        let mut sized = Table::new(slots);
        sized.grow_to(n);
        let r = measure(&sized, plan(n, slots, smoke), &new_keys, overhead);
        sized_rows.push((n, r));
    }
    drop(default_table);

    let mut results = Vec::new();
    for (rows, names) in [(&default_rows, ["store", "lookup", "remove"]), (&sized_rows, ["store@sized", "lookup@sized", "remove@sized"])] {
        for (i, op) in names.into_iter().enumerate() {
            for &(entries, (s, l, r)) in rows.iter() {
                let ns_per_op = [s, l, r][i];
                results.push(MicroResult { op, entries, ns_per_op });
            }
        }
    }
    results
}

/// One slot per entry: the entry count rounded up to a power of two.
fn slots_for(entries: usize) -> u32 {
    (entries.max(1).next_power_of_two()).min(1 << 30) as u32
}

fn size_label(n: usize) -> String {
    match n {
        _ if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        _ if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        _ => n.to_string(),
    }
}

fn ns_label(ns: f64) -> String {
    if !ns.is_finite() {
        "—".into()
    } else if ns < 10.0 {
        format!("{ns:.2}")
    } else if ns < 1_000.0 {
        format!("{ns:.1}")
    } else {
        format!("{ns:.0}")
    }
}

/// A markdown table: one row per op, one column per table size (AoRs stored), ns per op.
pub fn to_table(results: &[MicroResult]) -> String {
    let mut ops: Vec<&'static str> = Vec::new();
    let mut sizes: Vec<usize> = Vec::new();
    for r in results {
        if !ops.contains(&r.op) {
            ops.push(r.op);
        }
        if !sizes.contains(&r.entries) {
            sizes.push(r.entries);
        }
    }
    sizes.sort_unstable();
    let mut s = String::from("| op |");
    for &n in &sizes {
        s += &format!(" {} |", size_label(n));
    }
    s += "\n|---|";
    s += &"---:|".repeat(sizes.len());
    s += "\n";
    for op in ops {
        s += &format!("| {op} |");
        for &n in &sizes {
            let cell = results.iter().find(|r| r.op == op && r.entries == n).map_or("—".into(), |r| ns_label(r.ns_per_op));
            s += &format!(" {cell} |");
        }
        s += "\n";
    }
    s
}
