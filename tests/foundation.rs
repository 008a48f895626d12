//! Foundation: Kamailio starts with our tsilo.so (shadowing Debian's C one), answers SIP and RPC,
//! relays a call, refuses a config without tm with tsilo's own error, and the example config passes
//! `kamailio -c`.
//!
//! Against Debian's C module: `TSILO_MODULE_DIR=/nonexistent cargo test --test foundation`.

mod common;
use common::*;

#[test]
fn kamailio_starts_with_module_and_answers() {
    let k = Kamailio::start(BASE_CFG);
    let ua = Ua::new("alice");
    let reply = ua.options(k.port).unwrap_or_else(|| panic!("no reply to OPTIONS; log tail:\n{}", k.log_tail(40)));
    assert_eq!(reply.status(), Some(200), "OPTIONS: {reply}");

    let version = k.kamcmd(&["core.version"]).unwrap();
    assert!(version.contains("kamailio 5.6.3"), "core.version: {version}");
    let modules = k.kamcmd(&["core.modules"]).unwrap();
    assert!(modules.lines().any(|l| l.trim() == "tsilo"), "tsilo not in core.modules:\n{modules}");

    // The tsilo.so mapped is the one the module path should select (ours, unless absent).
    let mapped = k.mapped_module("tsilo.so").expect("no tsilo.so in /proc/<pid>/maps");
    assert_eq!(mapped, expected_tsilo_so(), "wrong tsilo.so loaded (module path {})", mpath());

    assert!(k.tsilo_errors().is_empty(), "errors in the log: {:#?}", k.tsilo_errors());
}

#[test]
fn config_without_tm_fails_with_tsilo_error() {
    // start_expect_failure already asserts a non-zero exit that is not a signal.
    let log = Kamailio::start_expect_failure(BASE_CFG_NO_TM);
    // A line from tsilo naming tm, e.g. the C module's "tsilo [tsilo.c:143]: mod_init(): can't
    // load TM API". "tm" must be a word of its own ("html" or "tmp" do not count).
    let names_tm = |l: &str| l.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w.eq_ignore_ascii_case("tm"));
    assert!(
        log.lines().any(|l| l.contains("tsilo") && names_tm(l)),
        "no tsilo line about tm in the log:\n{log}"
    );
    for bad in ["segfault", "SIGSEGV", "core dumped", "Segmentation fault"] {
        assert!(!log.contains(bad), "{bad} in the log:\n{log}");
    }
}

#[test]
fn register_then_invite_is_relayed() {
    let mut k = Kamailio::start(BASE_CFG);
    let bob = Ua::new("bob");
    let alice = Ua::new("alice");

    let reg = bob.register(k.port, "bob", 300);
    assert_eq!(reg.status(), Some(200), "REGISTER: {reg}");

    let call = alice.invite(k.port, "bob");
    let inv = bob.expect_request("INVITE", secs(5));
    // It came through Kamailio, rewritten to bob's contact, with Kamailio's Via on top.
    assert_eq!(inv.call_id(), Some(call.call_id.as_str()));
    assert_eq!(inv.ruri(), Some(bob.contact_uri().as_str()));
    assert_eq!(inv.from.port(), k.port);
    assert_eq!(inv.header_values("Via").len(), 2, "Vias: {inv}");
    assert!(inv.header("Record-Route").is_some(), "no Record-Route: {inv}");
    assert!(inv.body.contains("m=audio"), "SDP lost: {inv}");

    bob.reply(&inv, 180, "Ringing");
    let ringing = call.expect_reply(&alice, 180, secs(5));
    bob.reply(&inv, 200, "OK");
    let ok = call.final_reply(&alice, secs(5)).expect("no final reply to the INVITE");
    assert_eq!(ok.status(), Some(200), "final reply: {ok}");
    assert_eq!(ok.to_tag(), ringing.to_tag(), "180 and 200 of one dialog carry the same to-tag");

    // ACK for the 2xx, then BYE, both along the recorded route.
    call.ack(&alice, &ok);
    let ack = bob.expect_request("ACK", secs(5));
    assert_eq!(ack.call_id(), Some(call.call_id.as_str()));
    call.bye(&alice, &ok);
    let bye = bob.expect_request("BYE", secs(5));
    bob.reply(&bye, 200, "OK");
    let bye_ok = alice.expect("200 to BYE", secs(5), |m| m.status().is_some() && m.cseq_method() == "BYE");
    assert_eq!(bye_ok.status(), Some(200), "BYE reply: {bye_ok}");

    assert!(k.tsilo_errors().is_empty(), "errors in the log: {:#?}", k.tsilo_errors());
    // A clean shutdown: the main process exits on SIGTERM and takes all its workers with it.
    k.stop().unwrap_or_else(|e| panic!("unclean stop: {e}"));
}

#[test]
fn example_config_checks() {
    let path = manifest_path("examples/kamailio.cfg");
    let Ok(text) = std::fs::read_to_string(&path) else {
        panic!("{} does not exist (yet): it is the example config the module ships with", path.display());
    };
    // Our own port and RPC socket instead of the example's defaults (5060, /tmp/tsilo_demo_ctl),
    // defined after the first line (#!KAMAILIO) so the example's #!ifndef defaults give way.
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let cfg = format!("{first}\n#!define LISTEN udp:127.0.0.1:{{PORT}}\n#!define CTL_SOCK \"unix:{{CTL}}\"\n{rest}");
    let (ok, out) = check_config(&cfg);
    assert!(ok, "kamailio -c failed on {} with -L {}:\n{out}", path.display(), mpath());
    assert!(out.contains("config file ok"), "{out}");
}
