//! The Debian package (make deb) as an operator meets it: with Kamailio's default module path
//! and `loadmodule "tsilo.so"`, the example config, unchanged, loads our module while the package
//! is installed, and a config the C module understands too loads ours, or Debian's C module once
//! the package is removed; a late-forked call works each time.
//! Run by `make test-deb` around `apt install` / `apt remove` (packaging/test-deb.sh), which sets
//! TSILO_PACKAGE; it needs root and changes the machine's packages, so `make test` skips it.

mod harness;
use harness::push::{woken_device_answers, PushStub};
use harness::*;

/// The tsilo.so mapped into Kamailio `pid`: its path, and whether it said it is ours.
fn mapped_tsilo(k: &Kamailio) -> (Vec<String>, bool) {
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", k.pid)).unwrap();
    let mut mapped: Vec<String> = maps.lines().filter_map(|l| l.split_whitespace().nth(5)).filter(|p| p.ends_with("/tsilo.so")).map(str::to_string).collect();
    mapped.dedup();
    let banner = k.log().lines().any(|l| l.contains("tsilo (Rust) ") && l.contains(" for Kamailio "));
    (mapped, banner)
}

fn state() -> bool {
    match std::env::var("TSILO_PACKAGE").expect("TSILO_PACKAGE=installed|removed (make test-deb sets it)").as_str() {
        "installed" => true,
        "removed" => false,
        other => panic!("TSILO_PACKAGE={other}: expected installed or removed"),
    }
}

#[test]
#[ignore = "installs packages: run by make test-deb (TSILO_PACKAGE=installed|removed)"]
fn the_stock_config_loads_the_packaged_module() {
    // The example uses resume_route, which Debian's C module lacks (the next test covers it).
    assert!(state(), "the example config needs this module: run with TSILO_PACKAGE=installed");
    let push = PushStub::start();
    let k = Kamailio::start_unchanged(&manifest_path("examples/kamailio.cfg"), &[format!("PUSH_URL=\"{}\"", push.url())]);
    // Kamailio mapped the tsilo.so at the stock path, and it is ours (the diversion).
    assert_eq!(mapped_tsilo(&k), (vec![format!("{}/tsilo.so", stock_modules())], true));
    woken_device_answers(&k, &push);
}

/// A config the C module understands too (the benchmark's, bench/bench.cfg), on the stock module path:
/// ours while the package is installed, Debian's C module once it is removed; either late-forks.
#[test]
#[ignore = "installs packages: run by make test-deb (TSILO_PACKAGE=installed|removed)"]
fn a_c_compatible_config_late_forks_with_whichever_module_is_installed() {
    let ours = state();
    let cfg = include_str!("../bench/bench.cfg").replace("{TSILO_SO}", "tsilo.so").replace("{CHILDREN}", "4").replace("{FR_INV}", "30000").replace("\ndebug=1\n", "\ndebug=2\n"); // INFO: the start-up line
    let k = Kamailio::start_stock(&cfg);
    assert_eq!(mapped_tsilo(&k), (vec![format!("{}/tsilo.so", stock_modules())], ours));
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    assert_eq!(phone.register("").status(), Some(200));
    settle();
    let call = alice.invite("bob");
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");
    assert!(k.wait_stat("tsilo:stored_transactions", 1, SECS(5)));
    assert_eq!(tablet.register("").status(), Some(200));
    let tinv = tablet.expect_request("INVITE", SECS(5));
    assert_eq!(tinv.call_id(), call.call_id);
    tablet.reply(&tinv, 200, "OK");
    phone.answer_cancel(&inv, SECS(5));
    let ok = alice.final_reply("INVITE", SECS(5));
    assert_eq!(ok.status(), Some(200));
    alice.hangup_via(&call, &ok, &tablet);
    k.expect_stat("tsilo:added_branches", 1);
}
