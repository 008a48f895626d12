//! RPC commands: ts.dump [brief|full] [offset [count]], ts.lookup <uri>, with the C module's
//! reply structure; ts.stats and ts.append.

use crate::module::append::{NOTHING_STORED, append_all};
use crate::module::request::Branches;
use super::stats::STATS;
use crate::module::silo;
use crate::module::aor::key_of_uri;
use crate::kam::export::CTable;
use crate::kam::guard::guard;
use crate::kam::rpc::{Rpc, RpcFailed, RpcStruct};
use crate::kam::str::clipped;
use crate::kam::uri::SipUri;
use crate::silo::TransactionId;
use crate::sys;
use std::ffi::{c_char, c_void};
use std::ptr::null_mut;

static DUMP_DOC: CTable<[*const c_char; 2]> = CTable([c"Dump tsilo transactions table".as_ptr(), std::ptr::null()]);
static LOOKUP_DOC: CTable<[*const c_char; 2]> =
    CTable([c"Lookup one R-URI in the tsilo transactions table".as_ptr(), std::ptr::null()]);

static STATS_DOC: CTable<[*const c_char; 2]> =
    CTable([c"tsilo counters and the table's load (slots used, longest chain, busiest AoR)".as_ptr(), std::ptr::null()]);
static APPEND_DOC: CTable<[*const c_char; 2]> =
    CTable([c"Append branches now to the calls stored for an AoR: ts.append <uri> [table]".as_ptr(), std::ptr::null()]);

pub static METHODS: CTable<[sys::rpc_export_t; 5]> = CTable([
    sys::rpc_export_t { name: c"ts.dump".as_ptr(), function: Some(rpc_dump), doc_str: DUMP_DOC.0.as_ptr() as *mut _, flags: 0 },
    sys::rpc_export_t { name: c"ts.lookup".as_ptr(), function: Some(rpc_lookup), doc_str: LOOKUP_DOC.0.as_ptr() as *mut _, flags: 0 },
    sys::rpc_export_t { name: c"ts.stats".as_ptr(), function: Some(rpc_stats), doc_str: STATS_DOC.0.as_ptr() as *mut _, flags: 0 },
    sys::rpc_export_t { name: c"ts.append".as_ptr(), function: Some(rpc_append), doc_str: APPEND_DOC.0.as_ptr() as *mut _, flags: 0 },
    sys::rpc_export_t { name: std::ptr::null(), function: None, doc_str: null_mut(), flags: 0 },
]);

fn add_transaction(parent: &RpcStruct, id: TransactionId) -> Result<(), RpcFailed> {
    let t = parent.sub_struct(c"Transaction")?;
    t.int(c"Tindex", i64::from(id.index))?;
    t.int(c"Tlabel", i64::from(id.label))
}

// ts.dump answers a page of AoRs at a time, in the C module's layout. The limits are ctl's and
// kamcmd's with their stock settings: ctl builds each structure of a binrpc reply in a buffer of
// its own of binrpc_struct_max_body_size (8 KB, malloc'ed in the RPC process), and kamcmd reads
// at most 128 KB of reply ("ERROR: reply too big"). The `R-URIs` structure holds about 40 bytes
// per AoR plus its key, so about 200 AoRs fill it (the C module's dump fails from there); with
// that limit raised, kamcmd still cannot read a dump of 2,000 AoRs (measured: 1,000 is 119 KB of
// text). A page stays well inside both; `Next-Offset` says where the next one starts.

/// AoRs on a page unless the caller asks for fewer.
const PAGE_AORS: usize = 100;
/// Bytes the AoRs of a page may take in the `R-URIs` structure (ctl's limit: 8 KB).
const PAGE_BYTES: usize = 6 * 1024;
/// Structures a page may create: each AoR and each transaction is one, and costs ctl 8 KB.
const PAGE_STRUCTS: usize = 300;
/// An AoR longer than this is shown cut, with its length (a whole 256 KB key fits no reply).
const SHOWN_KEY: usize = 1024;

/// What an AoR takes in the `R-URIs` structure (bytes, as binrpc encodes its three members) and
/// in structures (its `Transactions` and one per transaction).
fn page_cost(key_len: usize, transactions: usize) -> (usize, usize) {
    (40 + key_len.min(SHOWN_KEY + 24), 1 + transactions)
}

/// ts.dump [brief|full] [offset [count]]: `Size`, the AoRs from `offset` on (`R-URIs`, unless
/// brief), `Stats` of the whole table, and `Next-Offset` when AoRs are left after this page.
/// Offsets count AoRs in table order, which AoRs stored or removed between two pages shift.
unsafe extern "C" fn rpc_dump(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard((), || {
        // SAFETY: Kamailio's arguments to this RPC function.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let Some(silo) = silo() else { return rpc.fault(500, "tsilo is not initialised") };
        // As the C module: "brief", or anything else (or nothing) for the full dump.
        let brief = rpc.optional_string().is_some_and(|a| a == b"brief");
        let offset = rpc.optional_int().unwrap_or(0);
        let count = rpc.optional_int().unwrap_or(PAGE_AORS as i64);
        if offset < 0 || count < 1 {
            return rpc.fault(400, "offset must be 0 or more, count 1 or more");
        }
        let (offset, count) = (offset as usize, count as usize);
        // The page's AoRs are copied out of the table (slot by slot, under each slot's lock),
        // and the reply is built afterwards, holding no lock.
        let mut page = Vec::new();
        let (mut seen, mut bytes, mut structs) = (0usize, 0usize, 0usize);
        let mut next = None;
        let totals = silo.dump(|record| {
            let at = seen;
            seen += 1;
            if brief || at < offset || next.is_some() {
                return;
            }
            let (b, s) = page_cost(record.key.len(), record.transactions.len());
            // A page has at least one AoR, however large, so that paging always moves on.
            if page.len() == count || (!page.is_empty() && (bytes + b > PAGE_BYTES || structs + s > PAGE_STRUCTS)) {
                next = Some(at);
                return;
            }
            bytes += b;
            structs += s;
            page.push((clipped(&record.key, SHOWN_KEY).into_owned(), record.hash, record.transactions.clone()));
        });
        let build = || -> Result<(), RpcFailed> {
            let top = rpc.add_struct()?;
            top.int(c"Size", i64::from(silo.size()))?;
            if !brief {
                let ruris = top.sub_struct(c"R-URIs")?;
                for (key, hash, transactions) in &page {
                    ruris.string(c"R-URI", key)?;
                    // Printed as the C module does (an unsigned hash through "%d").
                    ruris.int(c"Hash", i64::from(*hash as i32))?;
                    let txs = ruris.sub_struct(c"Transactions")?;
                    transactions.iter().try_for_each(|&id| add_transaction(&txs, id))?;
                }
            }
            let stats = top.sub_struct(c"Stats")?;
            stats.int(c"RURIs", totals.records as i64)?;
            stats.int(c"Max-Slots", i64::from(totals.max_records_per_slot))?;
            stats.int(c"Transactions", totals.transactions as i64)?;
            // Only on a partial dump: a table that fits one page is dumped as the C module does.
            if let Some(next) = next {
                top.int(c"Next-Offset", next as i64)?;
            }
            Ok(())
        };
        if build().is_err() {
            rpc.fault(500, "Internal error building the reply");
        }
    })
}

unsafe extern "C" fn rpc_lookup(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard((), || {
        // SAFETY: Kamailio's arguments to this RPC function.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let Some(silo) = silo() else { return rpc.fault(500, "tsilo is not initialised") };
        let Some(arg) = rpc.optional_string().filter(|a| !a.is_empty()) else {
            return rpc.fault(500, "No RURI to lookup specified");
        };
        // A SIP URI is reduced to its key (the user part, or user@host with use_domain); anything
        // else is taken as a key already.
        let key = match key_of_uri(&arg) {
            Ok(key) if arg.contains(&b':') => key,
            _ => std::borrow::Cow::Borrowed(&arg[..]),
        };
        let mut ids = Vec::new();
        if !silo.transactions_of(&key, &mut ids) {
            return rpc.fault(404, "RURI not found in tsilo table");
        }
        let build = || -> Result<(), RpcFailed> {
            let top = rpc.add_struct()?;
            ids.iter().try_for_each(|&id| add_transaction(&top, id))
        };
        if build().is_err() {
            rpc.fault(500, "Internal error building the reply");
        }
    })
}

unsafe extern "C" fn rpc_stats(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard((), || {
        // SAFETY: Kamailio's arguments to this RPC function.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let Some(silo) = silo() else { return rpc.fault(500, "tsilo is not initialised") };
        let load = silo.load();
        let build = || -> Result<(), RpcFailed> {
            let top = rpc.add_struct()?;
            for (name, read) in STATS {
                // counter_val_t is C's long: i64 here, i32 on 32-bit targets.
                #[allow(clippy::useless_conversion)]
                top.int(name, i64::from(read()))?;
            }
            let table = top.sub_struct(c"table")?;
            table.int(c"slots", i64::from(silo.size()))?;
            table.int(c"slots_used", i64::from(load.slots_used))?;
            table.int(c"longest_chain", i64::from(load.longest_chain))?;
            table.int(c"max_transactions_per_aor_now", i64::from(load.max_transactions_per_aor))?;
            table.int(c"max_transactions", silo.limits.max_transactions as i64)?;
            table.int(c"max_transactions_per_aor", i64::from(silo.limits.max_per_aor))?;
            table.int(c"in_flight", i64::from(silo.in_flight()))?;
            let (misses, miss_bytes, _) = silo.miss_totals();
            table.int(c"misses", misses as i64)?;
            table.int(c"miss_bytes", miss_bytes as i64)?;
            if let Some(n) = super::auto_append::queued() {
                top.int(c"auto_append_queue", i64::from(n))?;
            }
            Ok(())
        };
        if build().is_err() {
            rpc.fault(500, "Internal error building the reply");
        }
    })
}

/// ts.append <uri> [table]: what a push gateway or an operator triggers when a device is known
/// to be reachable again. Runs the same append as ts_append(), from the RPC process.
unsafe extern "C" fn rpc_append(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard((), || {
        // SAFETY: Kamailio's arguments to this RPC function.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let Some(uri) = rpc.optional_string().filter(|u| !u.is_empty()) else {
            return rpc.fault(400, "Missing AoR (a SIP URI)");
        };
        if SipUri::parse(&uri).is_none() || !uri.contains(&b':') {
            return rpc.fault(400, "Bad AoR: give a SIP URI such as sip:alice@example.com");
        }
        let table = rpc.optional_string().unwrap_or_else(|| b"location".to_vec());
        let Ok(table) = std::ffi::CString::new(table).map_err(drop).and_then(|t| if t.is_empty() { Err(()) } else { Ok(t) }) else {
            return rpc.fault(400, "Bad table name");
        };
        let done = append_all(&uri, &Branches::Lookup { table: &table, uri: Some(&uri) }, None);
        // Run by the RPC process (no message of its own): nothing of this append (XAVPs the
        // lookup or a branch route added) may reach the next. Over HTTP (jsonrpcs in a SIP
        // worker) a message's route is running: its state is its own.
        if crate::module::route_frames::route_clock().is_none() {
            crate::kam::process::reset_message_env();
        }
        match done {
            Ok(done) => {
                let build = || -> Result<(), RpcFailed> {
                    let top = rpc.add_struct()?;
                    top.int(c"Transactions", done.transactions as i64)?;
                    top.int(c"Branches", done.branches as i64)?;
                    top.int(c"Deferred", done.deferred as i64)
                };
                if build().is_err() {
                    rpc.fault(500, "Internal error building the reply");
                }
            }
            Err(NOTHING_STORED) => rpc.fault(404, "No transaction stored for this AoR"),
            Err(_) => rpc.fault(400, "Bad AoR"),
        }
    })
}
