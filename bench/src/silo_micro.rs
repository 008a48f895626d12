//! Microbenchmark of the silo core alone (no Kamailio): store, lookup and remove with 1 to 1M
//! AoRs already stored, in the module's default 2048 slots and in a table sized to the load.

#[path = "../../src/silo/mod.rs"]
#[allow(dead_code)]
mod silo;

use silo::{ShmAlloc, Silo, Stored, TransactionId};
use std::hint::black_box;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct MicroResult {
    pub op: &'static str,
    pub entries: usize,
    pub ns_per_op: f64,
}

#[derive(Clone, Copy)]
struct Heap;

impl ShmAlloc for Heap {
    fn alloc(&self, size: usize) -> *mut u8 {
        // SAFETY: plain malloc.
        unsafe { libc::malloc(size) as *mut u8 }
    }
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: p came from malloc.
        unsafe { libc::free(p as *mut libc::c_void) }
    }
}

fn id(i: usize) -> TransactionId {
    TransactionId { index: i as u32, label: 7 }
}

/// Median of `batches` timings of `ops` operations, in ns per operation.
fn measure(batches: usize, ops: usize, mut batch: impl FnMut(usize)) -> f64 {
    let mut t: Vec<f64> = (0..batches)
        .map(|b| {
            let start = Instant::now();
            batch(b);
            start.elapsed().as_nanos() as f64 / ops as f64
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[t.len() / 2]
}

fn bench_size(entries: usize, slots: u32, suffix: &'static str, ops: usize, out: &mut Vec<MicroResult>) {
    let ptr = Silo::create(Heap, slots).expect("silo");
    // SAFETY: created above, destroyed at the end of this function, used by this thread only.
    let silo = unsafe { ptr.as_ref() };
    let keys: Vec<String> = (0..entries).map(|i| format!("user{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        silo.store(k.as_bytes(), id(i)).unwrap();
    }
    let fresh: Vec<String> = (0..ops).map(|i| format!("new-user{i}")).collect();
    let mut handles = Vec::with_capacity(ops);
    let (mut store_ns, mut remove_ns) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        // Store `ops` new AoRs, then remove them: the table stays at `entries`.
        let t = Instant::now();
        for (i, k) in fresh.iter().enumerate() {
            if let Ok(Stored::New(h)) = silo.store(black_box(k.as_bytes()), id(i)) {
                handles.push(h);
            }
        }
        store_ns.push(t.elapsed().as_nanos() as f64 / ops as f64);
        let t = Instant::now();
        for h in handles.drain(..) {
            // SAFETY: each handle was stored just above and is removed once.
            unsafe { silo.remove(h) };
        }
        remove_ns.push(t.elapsed().as_nanos() as f64 / ops as f64);
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let mut ids = Vec::with_capacity(4);
    let lookup = measure(7, ops, |b| {
        for i in 0..ops {
            ids.clear();
            let k = &keys[(i * 7919 + b) % entries];
            black_box(silo.transactions_of(black_box(k.as_bytes()), &mut ids));
        }
    });
    let name = |op: &'static str| -> &'static str {
        match (op, suffix) {
            ("store", "") => "store",
            ("lookup", "") => "lookup",
            ("remove", "") => "remove",
            ("store", _) => "store@sized",
            ("lookup", _) => "lookup@sized",
            _ => "remove@sized",
        }
    };
    out.push(MicroResult { op: name("store"), entries, ns_per_op: med(store_ns) });
    out.push(MicroResult { op: name("lookup"), entries, ns_per_op: lookup });
    out.push(MicroResult { op: name("remove"), entries, ns_per_op: med(remove_ns) });
    // SAFETY: no handle of this silo is used after this.
    unsafe { Silo::destroy(ptr) };
}

pub fn run(smoke: bool) -> Vec<MicroResult> {
    let sizes: &[usize] = if smoke { &[1, 1_000] } else { &[1, 1_000, 100_000, 1_000_000] };
    let ops = if smoke { 1_000 } else { 10_000 };
    let mut out = Vec::new();
    for &n in sizes {
        bench_size(n, 2048, "", ops, &mut out);
        bench_size(n, (n.max(1) as u32).next_power_of_two(), "@sized", ops, &mut out);
    }
    out
}

pub fn to_table(results: &[MicroResult]) -> String {
    let mut sizes: Vec<usize> = results.iter().map(|r| r.entries).collect();
    sizes.dedup();
    sizes.sort();
    sizes.dedup();
    let label = |n: usize| match n {
        n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 => format!("{}k", n / 1_000),
        n => n.to_string(),
    };
    let mut s = format!(
        "| op | {} |\n|---|{}\n",
        sizes.iter().map(|&n| label(n)).collect::<Vec<_>>().join(" | "),
        "---:|".repeat(sizes.len())
    );
    for op in ["store", "lookup", "remove", "store@sized", "lookup@sized", "remove@sized"] {
        let cells: Vec<String> = sizes
            .iter()
            .map(|&n| results.iter().find(|r| r.op == op && r.entries == n).map_or("-".into(), |r| format!("{:.0}", r.ns_per_op)))
            .collect();
        s += &format!("| {op} | {} |\n", cells.join(" | "));
    }
    s
}
