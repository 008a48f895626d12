//! The example configs (native script and Lua/KEMI) run the push flow end to end: a push
//! gateway stub stands in for APNs/FCM, devices register after their push.

mod harness;
use harness::push::{woken_device_answers, PushStub};
use harness::*;

#[derive(Clone, Copy, Debug)]
enum Flavour {
    Native,
    Lua,
}

/// The example config, with the harness's port and RPC socket and the given push URL.
fn example(flavour: Flavour, push_url: &str) -> String {
    let mut defines = "#!define LISTEN udp:127.0.0.1:{PORT}\n#!define CTL_SOCK \"unix:{CTL}\"\n".to_string();
    let file = match flavour {
        Flavour::Native => {
            defines += &format!("#!define PUSH_URL \"{push_url}\"\n");
            "examples/kamailio.cfg"
        }
        Flavour::Lua => {
            defines += &format!("#!define PUSH_SHV \"push_url=s:{push_url}\"\n");
            defines += &format!("#!define LUA_SCRIPT \"{}\"\n", manifest_path("examples/tsilo.lua").display());
            "examples/kamailio-lua.cfg"
        }
    };
    defines + &std::fs::read_to_string(manifest_path(file)).unwrap()
}

fn push_wakes_a_late_device(flavour: Flavour) {
    let push = PushStub::start();
    let k = Kamailio::start(&example(flavour, &push.url()));
    woken_device_answers(&k, &push);
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
    assert_eq!(push.count("bob"), 1, "{flavour:?}: one push per call");
    // The phone's REGISTER found nothing stored (-2): normal, not a failure to report.
    let log = k.log();
    assert!(!log.contains("ts_append failed") && !log.contains("ts_store failed"), "{flavour:?}:\n{log}");
}

fn suspended_call_resumes_when_the_first_device_registers(flavour: Flavour) {
    let push = PushStub::start();
    let k = Kamailio::start(&example(flavour, &push.url()));
    let alice = Ua::new("alice", k.port);
    let carol = Ua::new("carol", k.port);
    let call = alice.invite("carol");
    assert!(push.wait_push("carol"), "{flavour:?}: no push for carol");
    alice.recv_matching(SECS(5), |m| m.status() == Some(100)).expect("100 Trying while suspended");
    assert!(k.wait_stat("tsilo:stored_transactions", 1, SECS(5)), "the suspended call is stored");
    carol.register("");
    let inv = carol.expect_request("INVITE", SECS(5));
    carol.reply(&inv, 180, "Ringing");
    carol.reply(&inv, 200, "OK");
    let ok = alice.final_reply("INVITE", SECS(5));
    assert_eq!(ok.status(), Some(200), "{}", ok.raw);
    alice.hangup_via(&call, &ok, &carol);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(15)));
}

fn a_failed_push_is_answered_480(flavour: Flavour, gateway: Option<&PushStub>) {
    // No gateway: nothing listens on the port, the push cannot be delivered.
    let url = gateway.map(|g| g.url()).unwrap_or_else(|| format!("http://127.0.0.1:{}/push", free_port()));
    let k = Kamailio::start(&example(flavour, &url));
    let alice = Ua::new("alice", k.port);
    let dave = Ua::new("dave", k.port);
    let call = alice.invite("dave");
    let r = alice.final_reply("INVITE", SECS(10));
    assert_eq!(r.status(), Some(480), "{}", r.raw);
    alice.ack(&call, &r);
    assert!(k.wait_log("push for dave failed", SECS(2)), "{flavour:?}: {}", k.log_tail(20));
    if let Some(g) = gateway {
        assert_eq!(g.count("dave"), 1, "{flavour:?}: the gateway was asked once");
    }
    // The answered call leaves the silo, and was never suspended: dave's device, waking
    // anyway, gets no INVITE.
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)), "{flavour:?}: the failed call stays stored");
    assert_eq!(dave.register("").status(), Some(200));
    dave.expect_no_request("INVITE", MS(500));
    assert_eq!(k.stat("tsilo:added_branches"), 0);
    assert!(!k.log().contains("resuming call"), "{flavour:?}: a failed call was left suspended");
}

/// The caller gives up while the call waits for a device: 487, the silo empties, and the
/// device registering after the transaction is gone gets nothing (the example notices that the
/// call cannot be resumed).
fn a_suspended_call_cancelled_before_any_device_registers(flavour: Flavour) {
    let push = PushStub::start();
    let k = Kamailio::start(&example(flavour, &push.url()));
    let alice = Ua::new("alice", k.port);
    let erin = Ua::new("erin", k.port);
    let call = alice.invite("erin");
    assert!(push.wait_push("erin"), "{flavour:?}: no push for erin");
    alice.recv_matching(SECS(5), |m| m.status() == Some(100)).expect("100 Trying while suspended");
    alice.cancel(&call);
    let r = alice.final_reply("INVITE", SECS(5));
    assert_eq!(r.status(), Some(487), "{}", r.raw);
    alice.ack(&call, &r);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(15)), "{flavour:?}: the cancelled call stays stored");
    assert_eq!(erin.register("").status(), Some(200));
    erin.expect_no_request("INVITE", MS(500));
    assert!(k.wait_log("could not be resumed", SECS(2)), "{flavour:?}: {}", k.log_tail(20));
    assert_eq!(k.stat("tsilo:added_branches"), 0);
}

#[test]
fn native_push_wakes_a_late_device() {
    push_wakes_a_late_device(Flavour::Native);
}
#[test]
fn native_suspended_call_resumes() {
    suspended_call_resumes_when_the_first_device_registers(Flavour::Native);
}
#[test]
fn native_failed_push() {
    a_failed_push_is_answered_480(Flavour::Native, None);
    a_failed_push_is_answered_480(Flavour::Native, Some(&PushStub::answering(503)));
}
#[test]
fn native_suspended_call_cancelled() {
    a_suspended_call_cancelled_before_any_device_registers(Flavour::Native);
}
#[test]
fn lua_push_wakes_a_late_device() {
    push_wakes_a_late_device(Flavour::Lua);
}
#[test]
fn lua_suspended_call_resumes() {
    suspended_call_resumes_when_the_first_device_registers(Flavour::Lua);
}
#[test]
fn lua_failed_push() {
    a_failed_push_is_answered_480(Flavour::Lua, None);
    a_failed_push_is_answered_480(Flavour::Lua, Some(&PushStub::answering(503)));
}
#[test]
fn lua_suspended_call_cancelled() {
    a_suspended_call_cancelled_before_any_device_registers(Flavour::Lua);
}

#[test]
fn example_configs_pass_kamailio_check() {
    for file in ["examples/kamailio.cfg", "examples/kamailio-lua.cfg"] {
        let (ok, out) = check_config(&manifest_path(file));
        assert!(ok, "kamailio -c -f {file}:\n{out}");
    }
}
