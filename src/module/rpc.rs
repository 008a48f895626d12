//! RPC commands: ts.dump [brief], ts.lookup <uri>, with the C module's reply structure.

use super::{silo, use_domain};
use crate::kam::export::CTable;
use crate::kam::guard::guard;
use crate::kam::rpc::{Rpc, RpcFailed, RpcStruct};
use crate::kam::uri::SipUri;
use crate::silo::TransactionId;
use crate::sys;
use std::ffi::{c_char, c_void};
use std::ptr::null_mut;

static DUMP_DOC: CTable<[*const c_char; 2]> = CTable([c"Dump tsilo transactions table".as_ptr(), std::ptr::null()]);
static LOOKUP_DOC: CTable<[*const c_char; 2]> =
    CTable([c"Lookup one R-URI in the tsilo transactions table".as_ptr(), std::ptr::null()]);

pub static METHODS: CTable<[sys::rpc_export_t; 3]> = CTable([
    sys::rpc_export_t { name: c"ts.dump".as_ptr(), function: Some(rpc_dump), doc_str: DUMP_DOC.0.as_ptr() as *mut _, flags: 0 },
    sys::rpc_export_t { name: c"ts.lookup".as_ptr(), function: Some(rpc_lookup), doc_str: LOOKUP_DOC.0.as_ptr() as *mut _, flags: 0 },
    sys::rpc_export_t { name: std::ptr::null(), function: None, doc_str: null_mut(), flags: 0 },
]);

fn add_transaction(parent: &RpcStruct, id: TransactionId) -> Result<(), RpcFailed> {
    let t = parent.sub_struct(c"Transaction")?;
    t.int(c"Tindex", i64::from(id.index))?;
    t.int(c"Tlabel", i64::from(id.label))
}

unsafe extern "C" fn rpc_dump(api: *mut sys::rpc_t, ctx: *mut c_void) {
    guard((), || {
        // SAFETY: Kamailio's arguments to this RPC function.
        let rpc = unsafe { Rpc::new(api, ctx) };
        let Some(silo) = silo() else { return rpc.fault(500, "tsilo is not initialised") };
        let brief = rpc.optional_string().is_some_and(|a| a == b"brief");
        let build = || -> Result<(), RpcFailed> {
            let top = rpc.add_struct()?;
            top.int(c"Size", i64::from(silo.size()))?;
            let ruris = if brief { None } else { Some(top.sub_struct(c"R-URIs")?) };
            let mut failed = Ok(());
            let totals = silo.dump(|record| {
                let Some(ruris) = &ruris else { return };
                if failed.is_err() {
                    return;
                }
                failed = (|| {
                    ruris.string(c"R-URI", &record.key)?;
                    // Printed as the C module does (an unsigned hash through "%d").
                    ruris.int(c"Hash", i64::from(record.hash as i32))?;
                    let txs = ruris.sub_struct(c"Transactions")?;
                    record.transactions.iter().try_for_each(|&id| add_transaction(&txs, id))
                })();
            });
            failed?;
            let stats = top.sub_struct(c"Stats")?;
            stats.int(c"RURIs", totals.records as i64)?;
            stats.int(c"Max-Slots", i64::from(totals.max_records_per_slot))?;
            stats.int(c"Transactions", totals.transactions as i64)
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
        // The stored key is the user part unless use_domain is on: accept a full SIP URI too.
        let key: &[u8] = match SipUri::parse(&arg) {
            Some(uri) if !use_domain() && arg.contains(&b':') && !uri.user().is_empty() => uri.user(),
            _ => &arg,
        };
        let mut ids = Vec::new();
        if !silo.transactions_of(key, &mut ids) {
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
