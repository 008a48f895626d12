//! modparam("tsilo", "auto_append", "location"): a contact that usrloc inserts or updates gets
//! a branch of every call stored for its AoR, with no ts_append() in the script, whichever
//! process inserted it (a SIP worker's save(), a timer, a replication worker).
//!
//! usrloc runs its callbacks while holding its record lock, so the callback only queues the
//! contact (in shm); the module's own "tsilo auto-append" process takes it from the queue and
//! calls TM and the registrar, holding no lock at all.

use super::aor::{key_of_uri, lookup_uri};
use super::append::append_to_aor;
use super::request::{Branches, Only, encode};
use super::silo;
use crate::kam::guard::guard;
use crate::kam::log::RateLimit;
use crate::kam::process::{self, monotonic_ms};
use crate::kam::shm::KamShm;
use crate::kam::str::show;
use crate::kam::usrloc::ContactEvent;
use crate::silo::queue::{PushError, ShmQueue};
use once_cell::sync::OnceCell;
use std::ffi::CString;
use std::ptr::NonNull;

/// Contacts waiting for the auto-append process; beyond this, new ones are dropped (logged).
const QUEUE_CAPACITY: u32 = 10_000;

struct Shared {
    queue: NonNull<ShmQueue<KamShm>>,
    table: CString,
}
// SAFETY: the queue lives in shm and locks itself; the table name is read-only after mod_init.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn queue(&self) -> &ShmQueue<KamShm> {
        // SAFETY: created in mod_init, never freed while Kamailio runs.
        unsafe { self.queue.as_ref() }
    }
}

static SHARED: OnceCell<Shared> = OnceCell::new();

/// mod_init: create the queue, reserve the process (exports/ then binds usrloc's callback).
pub fn init(table: &[u8]) -> Result<(), String> {
    let table = CString::new(table).map_err(|_| "auto_append: bad table name".to_string())?;
    let queue = ShmQueue::create(KamShm, QUEUE_CAPACITY).ok_or("auto_append: out of shared memory")?;
    if !process::reserve_one() {
        return Err("auto_append: cannot reserve a process".into());
    }
    SHARED.set(Shared { queue, table }).map_err(|_| "auto_append: initialised twice".to_string())
}

/// Contacts waiting for the auto-append process (None: auto_append is off).
pub fn queued() -> Option<u32> {
    SHARED.get().map(|s| s.queue().waiting())
}

/// child_init of the main process: start the auto-append process.
pub fn start() -> bool {
    SHARED.get().is_none() || process::spawn(c"tsilo auto-append", run)
}

/// usrloc inserted or updated a contact (its callback, in whichever process changed it, under
/// usrloc's record lock): queue only, and only for AoRs with stored calls.
pub fn contact_changed(ev: &ContactEvent) {
    let (Some(shared), Some(silo)) = (SHARED.get(), silo()) else { return };
    let uri = lookup_uri(ev.aor);
    let Ok(key) = key_of_uri(&uri) else { return };
    let Ok(contact) = CString::new(ev.uri) else { return };
    let mut ids = Vec::new();
    // Nothing stored: the append this would have been stays a while as a miss (store.rs).
    let request = || encode(&Branches::Lookup { table: &shared.table, uri: Some(&uri) }, Only::Matching(&contact));
    if !silo.transactions_for_append(&key, monotonic_ms(), request, &mut ids) {
        return;
    }
    match shared.queue().push(ev.aor, ev.uri) {
        Ok(()) => lm_dbg!("queued contact {} of {} for auto-append", show(ev.uri), show(ev.aor)),
        Err(PushError::Full) => {
            static FULL: RateLimit = RateLimit::new();
            if let Some(more) = FULL.due() {
                lm_warn!("auto-append queue full: contact {} of {} gets no branch ({more} more dropped since the last report)", show(ev.uri), show(ev.aor));
            }
        }
        Err(PushError::NoMemory) => lm_err!("out of shared memory queueing contact {}", show(ev.uri)),
    }
}

/// The auto-append process: appends each queued contact to its AoR's stored calls.
fn run() {
    let shared = SHARED.get().expect("auto_append initialised in mod_init");
    let queue = shared.queue();
    loop {
        process::cfg_update();
        let seen = queue.seq();
        while let Some((aor, contact)) = queue.pop() {
            guard((), || append_contact(&shared.table, &aor, &contact));
            // This process runs no message of its own: nothing of one append (XAVPs the lookup
            // or a route added) may reach the next.
            process::reset_message_env();
        }
        queue.wait(seen, 1000);
    }
}

/// Appends `contact` of usrloc's `aor` to the AoR's stored calls, looked up as the script's
/// `ts_append(table, "sip:" + aor)` would, whatever Request-URI the calls were stored with.
fn append_contact(table: &CString, aor: &[u8], contact: &[u8]) {
    let Ok(filter) = CString::new(contact) else { return };
    let uri = lookup_uri(aor);
    // Only this contact gets a branch, and not where it has one already (a re-REGISTER while
    // ringing).
    let rc = append_to_aor(&uri, &Branches::Lookup { table, uri: Some(&uri) }, Some(&filter));
    lm_dbg!("auto-append of {} for {} -> {rc}", show(contact), show(aor));
}
