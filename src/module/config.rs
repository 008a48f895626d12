//! Module-wide switches, set in the main process before the workers fork (children inherit
//! them).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// Whether transactions are births while their route runs: set before the workers fork, when
/// the script may call ts_append_to().
static BIRTHS: AtomicBool = AtomicBool::new(false);

/// ts_append_to() may be called (its fixup ran, or a KEMI script may call it): from now on
/// transactions are in flight while the route that creates them runs.
pub fn enable_births() {
    BIRTHS.store(true, Relaxed);
}

/// Whether they are (see `enable_births`).
pub fn births() -> bool {
    BIRTHS.load(Relaxed)
}
