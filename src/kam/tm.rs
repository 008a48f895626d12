//! The TM module's API (struct tm_binds), bound once in mod_init and inherited by the workers.

use crate::silo::TransactionId;
use crate::sys;
use once_cell::sync::OnceCell;
use std::ffi::{c_int, c_void};
use std::ptr::NonNull;

struct Binds(sys::tm_binds);
// SAFETY: only function pointers, written once before fork and read-only afterwards.
unsafe impl Send for Binds {}
unsafe impl Sync for Binds {}

static TM: OnceCell<Binds> = OnceCell::new();

/// Binds TM's API; fails (with TM's own log line) when tm is not loaded before us.
pub fn load() -> bool {
    TM.get_or_try_init(|| {
        let mut binds = sys::tm_binds::default();
        // SAFETY: fills the struct through TM's exported `load_tm` function.
        match unsafe { sys::tsilo_shim_load_tm_api(&mut binds) } {
            0 => Ok(Binds(binds)),
            _ => Err(()),
        }
    })
    .is_ok()
}

fn api() -> &'static sys::tm_binds {
    &TM.get().expect("TM API used before mod_init bound it").0
}

/// A transaction TM handed us; only valid while TM keeps it alive (see the callers).
#[derive(Clone, Copy)]
pub struct Cell(NonNull<sys::cell>);

impl Cell {
    pub fn as_ptr(self) -> *mut sys::cell {
        self.0.as_ptr()
    }
    pub fn id(self) -> TransactionId {
        // SAFETY: the cell is alive (caller's contract on Cell); these fields never change.
        unsafe { TransactionId { index: (*self.as_ptr()).hash_index, label: (*self.as_ptr()).label } }
    }
    pub fn is_canceled(self) -> bool {
        // SAFETY: as above; a plain flag read, as the C module does.
        unsafe { u32::from((*self.as_ptr()).flags) & sys::T_CANCELED != 0 }
    }
    pub fn uas_status(self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.as_ptr()).uas.status }
    }
    /// The request that created the transaction (TM's shm clone).
    pub fn request(self) -> *mut sys::sip_msg {
        // SAFETY: as above.
        unsafe { (*self.as_ptr()).uas.request }
    }
}

/// The transaction of the message being processed (t_newtran/t_relay), if any.
pub fn current() -> Option<Cell> {
    // SAFETY: t_gett reads this process's current-transaction global.
    let t = unsafe { api().t_gett.unwrap()() };
    // SAFETY: T_UNDEFINED is a constant sentinel pointer.
    if t.is_null() || t == unsafe { sys::tsilo_shim_t_undefined() } {
        return None;
    }
    NonNull::new(t).map(Cell)
}

/// A TM callback (`transaction_cb`).
pub type Callback = unsafe extern "C" fn(*mut sys::cell, c_int, *mut sys::tmcb_params);

/// Registers `f(param)` to run when TM destroys `t` (in whichever process frees it).
pub fn on_destroy(msg: *mut sys::sip_msg, t: Cell, f: Callback, param: *mut c_void) -> bool {
    // SAFETY: `t` is the current, live transaction; `param` is the silo's shm entry.
    unsafe { api().register_tmcb.unwrap()(msg, t.as_ptr(), sys::TMCB_DESTROY as c_int, Some(f), param, None) >= 0 }
}

/// Registers `f` to run whenever TM creates a transaction (TMCB_REQUEST_IN, in the creating
/// process, before the transaction has a label). mod_init only.
pub fn on_request_in(f: Callback) -> bool {
    // SAFETY: a global callback (no message, no transaction, no parameter).
    unsafe {
        api().register_tmcb.unwrap()(std::ptr::null_mut(), std::ptr::null_mut(), sys::TMCB_REQUEST_IN as c_int, Some(f), std::ptr::null_mut(), None) >= 0
    }
}

/// A transaction found by id, referenced (TM keeps it alive) until dropped, and made TM's
/// current transaction for this process meanwhile.
pub struct TmRef(Cell);

impl TmRef {
    pub fn cell(&self) -> Cell {
        self.0
    }

    /// The request that created the transaction (TM's shm clone), alive while referenced; None
    /// if it has none.
    pub fn request(&self) -> Option<crate::kam::msg::Msg<'_>> {
        // SAFETY: the referenced cell keeps its request until it is freed, after our unref.
        unsafe { crate::kam::msg::Msg::from_ptr(self.0.request()) }
    }
}

impl Drop for TmRef {
    fn drop(&mut self) {
        // SAFETY: drops the reference t_lookup_ident took. This may free the transaction and run
        // its TMCB_DESTROY callbacks, which take silo locks: callers hold none here.
        unsafe { api().unref_cell.unwrap()(self.0.as_ptr()) };
    }
}

/// Finds a live transaction by its id (`t_lookup_ident`). It becomes the process's current
/// transaction: keep a `CurrentRestore` alive across the call to undo that.
pub fn lookup(id: TransactionId) -> Option<TmRef> {
    let mut t: *mut sys::cell = std::ptr::null_mut();
    // SAFETY: TM checks the index range itself and references the cell it returns.
    let rc = unsafe { api().t_lookup_ident.unwrap()(&mut t, id.index, id.label) };
    if rc < 0 {
        return None;
    }
    NonNull::new(t).map(|t| TmRef(Cell(t)))
}

/// Restores the process's current transaction and branch (what the script was working on, e.g.
/// `$T_branch` in a branch or reply route) when dropped.
pub struct CurrentRestore(*mut sys::cell, c_int);

impl CurrentRestore {
    pub fn save() -> Self {
        // SAFETY: reads this process's current-transaction globals (the cell may be null or
        // T_UNDEFINED, both of which t_sett accepts back).
        unsafe { CurrentRestore(api().t_gett.unwrap()(), api().t_gett_branch.unwrap()()) }
    }
}

impl Drop for CurrentRestore {
    fn drop(&mut self) {
        // SAFETY: puts back the values t_gett and t_gett_branch returned.
        unsafe { api().t_sett.unwrap()(self.0, self.1) };
    }
}

/// Sends branches for the current destination set on the current transaction
/// (`t_append_branches`); with `contact`, only to destinations whose URI contains it.
/// Returns how many branches were sent, or TM's negative error.
pub fn append_branches(contact: Option<&std::ffi::CStr>) -> c_int {
    // TM compares with strstr(), so the contact must be NUL-terminated; an empty str means all.
    let mut c = match contact {
        Some(c) => sys::str_ { s: c.as_ptr() as *mut _, len: c.to_bytes().len() as c_int },
        None => sys::str_::default(),
    };
    // SAFETY: runs on the transaction made current by `lookup`; `c` outlives the call.
    unsafe { api().t_append_branches.unwrap()(&mut c) }
}

impl Cell {
    /// Whether the transaction has a branch to `uri` already, whichever usrloc record (if any) it
    /// came from. TM's own test ("branch already added") also wants the same record id, so a
    /// branch the script relayed with `$ru` set by hand (no record id) would ring the device
    /// again when it refreshes its registration. Read without TM's reply lock, by an append
    /// that holds the transaction (claim): no other append adds branches meanwhile.
    pub fn has_branch(self, uri: &[u8]) -> bool {
        // SAFETY: the cell is alive (referenced); `uac` has `nr_of_outgoings` built entries.
        unsafe {
            let t = &*self.as_ptr();
            (0..t.nr_of_outgoings.max(0) as usize).any(|i| {
                let uac = &*t.uac.add(i);
                crate::kam::str::bytes(&uac.uri) == uri
            })
        }
    }

    /// The request's method (METHOD_INVITE, ...): what a registrar lookup may filter on.
    pub fn method(self) -> u32 {
        // SAFETY: the cell and its request are alive (referenced); a number read.
        unsafe { (*self.request()).first_line.u.request.method_value as u32 }
    }
}

impl Cell {
    /// Suspended by t_suspend(): TM drops its replies until t_continue() resumes it.
    pub fn is_suspended(self) -> bool {
        // SAFETY: the cell is alive (referenced); a flag read.
        unsafe { u32::from((*self.as_ptr()).flags) & sys::T_ASYNC_SUSPENDED != 0 }
    }

    /// A t_continue() is running on it now (set before its route starts, cleared after it ends).
    pub fn is_continuing(self) -> bool {
        // SAFETY: as above.
        unsafe { u32::from((*self.as_ptr()).flags) & sys::T_ASYNC_CONTINUE != 0 }
    }
}

/// Resumes a suspended transaction (t_continue), running `route` on it in this process.
pub fn resume(id: TransactionId, to: &crate::kam::route::Continue) -> bool {
    use crate::kam::route::Continue;
    match to {
        // SAFETY: TM looks the transaction up itself; the route's actions live for the process.
        Continue::Native(route) => unsafe { api().t_continue.unwrap()(id.index, id.label, route.actions()) >= 0 },
        Continue::Kemi(name) => {
            let mut name = sys::str_ { s: name.as_ptr() as *mut _, len: name.as_bytes().len() as i32 };
            // SAFETY: TM keeps nothing of `name`, which outlives the call; no callback parameter.
            unsafe { api().t_continue_cb.unwrap()(id.index, id.label, &mut name, std::ptr::null_mut()) >= 0 }
        }
    }
}
