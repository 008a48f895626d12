//! A thin safe layer over Kamailio's C API: each file wraps one concern, and nothing above this
//! layer touches `sys` except to name types.

#[macro_use]
pub mod log;
pub mod cfg;
pub mod dset;
pub mod export;
pub mod guard;
pub mod msg;
pub mod param;
pub mod process;
pub mod registrar;
pub mod route;
pub mod script_cb;
pub mod rpc;
pub mod shm;
pub mod str;
pub mod tm;
pub mod uri;
pub mod usrloc;
