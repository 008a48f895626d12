//! No panic may unwind into Kamailio's C frames: every `extern "C"` entry point runs its body in
//! `guard`, which catches the panic and returns an error value; the hook logs where it happened.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

/// Logs panics through Kamailio (critical level, with the location), instead of stderr.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            // A panic message may quote a caller's value (a str slice out of bounds prints it).
            let msg = crate::kam::str::show(msg.as_bytes());
            lm_crit!("BUG: panic at {at}: {msg} (caught; the call returns an error)");
        }));
    });
}

/// Runs `f`; if it panics, returns `fallback` (the hook has logged the panic).
pub fn guard<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}
