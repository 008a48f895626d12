//! tsilo: Kamailio's transaction storage for late parallel forking, in Rust.
//!
//! Layers, bottom up: `sys` (generated bindings), `kam` (a thin safe layer over Kamailio's C
//! API), `silo` (the pure-Rust shared-memory store), `module` (the module's logic, and in
//! `module/exports/` everything Kamailio calls: script functions, KEMI, RPC, statistics,
//! callbacks). `aor` and `routes` are pure Rust the module uses, unit-tested without Kamailio.

pub mod aor;
pub mod routes;
pub mod silo;
mod sys;

// Code that calls into Kamailio is left out of unit-test builds: a test executable cannot
// resolve the kamailio binary's symbols (they resolve only when Kamailio dlopen()s us).
#[cfg(not(test))]
#[macro_use]
mod kam;
#[cfg(not(test))]
mod module;
