//! The Debian package (make deb) as an operator meets it: the example config, unchanged
//! (`loadmodule "tsilo.so"`, Kamailio's default module path), loads our module while the package
//! is installed and Debian's C module once it is removed, and a late-forked call works either way.
//! Run by `make test-deb` around `apt install` / `apt remove` (packaging/test-deb.sh), which sets
//! TSILO_PACKAGE; it needs root and changes the machine's packages, so `make test` skips it.

mod harness;
use harness::push::{woken_device_answers, PushStub};
use harness::*;

#[test]
#[ignore = "installs packages: run by make test-deb (TSILO_PACKAGE=installed|removed)"]
fn the_stock_config_loads_the_packaged_module() {
    let state = std::env::var("TSILO_PACKAGE").expect("TSILO_PACKAGE=installed|removed (make test-deb sets it)");
    let ours = match state.as_str() {
        "installed" => true,
        "removed" => false,
        other => panic!("TSILO_PACKAGE={other}: expected installed or removed"),
    };
    let push = PushStub::start();
    let k = Kamailio::start_unchanged(&manifest_path("examples/kamailio.cfg"), &[format!("PUSH_URL=\"{}\"", push.url())]);

    // Kamailio mapped the tsilo.so at the stock path: ours (the diversion) or Debian's again.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", k.pid)).unwrap();
    let mapped: std::collections::BTreeSet<_> = maps.lines().filter_map(|l| l.split_whitespace().nth(5)).filter(|p| p.ends_with("/tsilo.so")).collect();
    assert_eq!(mapped.into_iter().collect::<Vec<_>>(), [format!("{STOCK_MODULES}/tsilo.so")]);
    let banner = k.log().lines().any(|l| l.contains("tsilo (Rust) ") && l.contains(" for Kamailio "));
    assert_eq!(banner, ours, "TSILO_PACKAGE={state}: our start-up line {} the log", if ours { "missing from" } else { "in" });

    woken_device_answers(&k, &push);
}
