//! Building RPC replies (kamcmd, jsonrpc) through Kamailio's `rpc_t` callbacks.

use crate::kam::str::borrowed;
use crate::sys;
use std::ffi::{CStr, CString, c_int, c_void};

/// The request being answered.
pub struct Rpc {
    api: *mut sys::rpc_t,
    ctx: *mut c_void,
}

/// A structure inside the reply, to which named members are added.
pub struct RpcStruct {
    api: *mut sys::rpc_t,
    handle: *mut c_void,
}

/// The reply could not be built; a fault has been sent already.
pub struct RpcFailed;

impl Rpc {
    /// # Safety
    /// `api` and `ctx` are what Kamailio passed to the RPC function, used only during it.
    pub unsafe fn new(api: *mut sys::rpc_t, ctx: *mut c_void) -> Self {
        Rpc { api, ctx }
    }

    fn api(&self) -> &sys::rpc_t {
        // SAFETY: valid for the duration of the RPC call (constructor's contract).
        unsafe { &*self.api }
    }

    pub fn fault(&self, code: c_int, msg: &str) {
        let msg = CString::new(msg).unwrap_or_default();
        // SAFETY: "%s" with a valid C string.
        unsafe { self.api().fault.unwrap()(self.ctx, code, c"%s".as_ptr() as *mut _, msg.as_ptr()) };
    }

    /// The next string argument, if one was given.
    pub fn optional_string(&self) -> Option<Vec<u8>> {
        let mut s = sys::str_::default();
        // SAFETY: "*S" makes the argument optional (no fault when absent) and fills `s`.
        let n = unsafe { self.api().scan.unwrap()(self.ctx, c"*S".as_ptr() as *mut _, &mut s as *mut sys::str_) };
        // SAFETY: on success `s` points into the request, alive during the call.
        (n == 1).then(|| unsafe { crate::kam::str::bytes(&s) }.to_vec())
    }

    /// The next argument as an integer, if one was given ("100" as a string too: jsonrpc
    /// clients send what they were typed as strings).
    pub fn optional_int(&self) -> Option<i64> {
        let mut v: c_int = 0;
        // SAFETY: "*" makes the argument optional, "." converts a string; "d" fills an int.
        let n = unsafe { self.api().scan.unwrap()(self.ctx, c"*.d".as_ptr() as *mut _, &mut v as *mut c_int) };
        (n == 1).then_some(i64::from(v))
    }

    /// The reply's top-level structure.
    pub fn add_struct(&self) -> Result<RpcStruct, RpcFailed> {
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: "{" adds a structure and returns its handle.
        let rc = unsafe { self.api().add.unwrap()(self.ctx, c"{".as_ptr() as *mut _, &mut handle as *mut *mut c_void) };
        self.checked(rc, "creating the reply")?;
        Ok(RpcStruct { api: self.api, handle })
    }

    fn checked(&self, rc: c_int, what: &str) -> Result<(), RpcFailed> {
        if rc < 0 {
            self.fault(500, &format!("Internal error {what}"));
            return Err(RpcFailed);
        }
        Ok(())
    }
}

impl RpcStruct {
    fn struct_add(&self) -> unsafe extern "C" fn(*mut c_void, *mut std::ffi::c_char, ...) -> c_int {
        // SAFETY: the rpc_t outlives the reply being built.
        unsafe { (*self.api).struct_add.unwrap() }
    }

    pub fn int(&self, name: &CStr, value: i64) -> Result<(), RpcFailed> {
        // "d" is a C int; larger values are clamped rather than wrapped.
        let v = value.clamp(c_int::MIN as i64, c_int::MAX as i64) as c_int;
        // SAFETY: "d" takes a name and an int.
        let rc = unsafe { self.struct_add()(self.handle, c"d".as_ptr() as *mut _, name.as_ptr(), v) };
        if rc < 0 { Err(RpcFailed) } else { Ok(()) }
    }

    pub fn string(&self, name: &CStr, value: &[u8]) -> Result<(), RpcFailed> {
        let mut s = borrowed(value);
        // SAFETY: "S" takes a name and a str*; the RPC layer copies the value.
        let rc = unsafe { self.struct_add()(self.handle, c"S".as_ptr() as *mut _, name.as_ptr(), &mut s as *mut sys::str_) };
        if rc < 0 { Err(RpcFailed) } else { Ok(()) }
    }

    pub fn sub_struct(&self, name: &CStr) -> Result<RpcStruct, RpcFailed> {
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: "{" takes a name and returns the new structure's handle.
        let rc = unsafe {
            self.struct_add()(self.handle, c"{".as_ptr() as *mut _, name.as_ptr(), &mut handle as *mut *mut c_void)
        };
        if rc < 0 { Err(RpcFailed) } else { Ok(RpcStruct { api: self.api, handle }) }
    }
}
