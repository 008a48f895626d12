//! The example configs (native script and Lua/KEMI) run the RFC 8599 push flow end to end: a
//! push gateway stub stands in for APNs/FCM and records each push; devices with pn-provider /
//! pn-prid / pn-param in their Contact are pushed, wake and register again from a new address.

mod harness;
use harness::push::{woken_device_answers, Device, PushStub};
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

/// The demo's first call: the phone rings now, the pushed tablet when it wakes.
fn push_wakes_a_late_device(flavour: Flavour) {
    let push = PushStub::start();
    let k = Kamailio::start(&example(flavour, &push.url()));
    woken_device_answers(&k, &push);
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
    // The phone's REGISTER found nothing stored (-2): normal, not a failure to report.
    let log = k.log();
    assert!(!log.contains("ts_append failed") && !log.contains("ts_store failed"), "{flavour:?}:\n{log}");
}

/// The user: three devices, one reachable without pn parameters, two asleep with pn
/// parameters of different providers (one with +sip.instance, one without). Exactly two pushes,
/// each with its device's provider, prid and param; the first to wake rings once, at its new
/// address only, and its old binding is gone; the call is answered there; the second wakes after
/// the answer: nothing rings, and its old binding is replaced too.
fn each_pushable_device_is_pushed_and_rings_once_woken(flavour: Flavour) {
    let push = PushStub::start();
    let k = Kamailio::start(&example(flavour, &push.url()));
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Device::new("bob", k.port, "apns", "a1b2c3", "TEAM.com.example.voip", Some("00000000-0000-4000-8000-00000000b0b1"));
    let laptop = Device::new("bob", k.port, "fcm", "fcm-token-9", "", None);
    for ua in [&phone, &tablet.ua, &laptop.ua] {
        assert_eq!(ua.register("").status(), Some(200));
    }
    settle();
    let call = alice.invite("bob");
    let phone_inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&phone_inv, 180, "Ringing");
    let pushes = push.wait_pushes("bob", 2);
    assert_eq!(pushes.len(), 2, "{flavour:?}: {pushes:?}");
    assert!(pushes.iter().any(|p| tablet.is_pushed_by(p, &call.call_id)), "{flavour:?}: {pushes:?}");
    assert!(pushes.iter().any(|p| laptop.is_pushed_by(p, &call.call_id)), "{flavour:?}: {pushes:?}");

    // The tablet wakes and registers from a new address.
    let tablet_now = tablet.wake();
    assert_eq!(tablet_now.ua.register("").status(), Some(200));
    let inv = tablet_now.ua.expect_request("INVITE", SECS(5));
    assert_eq!(inv.call_id(), call.call_id);
    tablet_now.ua.expect_no_request("INVITE", MS(300));
    let dump = k.kamcmd(&["ul.dump"]).unwrap();
    assert!(!dump.contains(&format!("127.0.0.1:{};", tablet.ua.port)), "{flavour:?}: the tablet's old binding stayed:\n{dump}");
    assert!(dump.contains(&tablet_now.ua.contact_uri()), "{dump}");
    tablet_now.ua.reply(&inv, 200, "OK");
    phone.answer_cancel(&phone_inv, SECS(5));
    let ok = alice.final_reply("INVITE", SECS(5));
    assert_eq!(ok.status(), Some(200), "{}", ok.raw);
    alice.ack(&call, &ok);
    tablet_now.ua.expect_request("ACK", SECS(5));
    // The phone's 487 (its branch cancelled by the answer) stays at the proxy: Kamailio 6.1's TM
    // no longer matches it (reply_matching), the example's reply_route drops it.
    let late = alice.recv_matching(MS(300), |m| m.cseq_method() == "INVITE" && m.status().is_some_and(|s| s >= 300));
    assert!(late.is_none(), "{flavour:?}: the caller got a final reply after its 200:\n{}", late.unwrap().raw);

    // The laptop wakes after the answer: no branch for an answered call.
    let laptop_now = laptop.wake();
    assert_eq!(laptop_now.ua.register("").status(), Some(200));
    laptop_now.ua.expect_no_request("INVITE", MS(500));
    let dump = k.kamcmd(&["ul.dump"]).unwrap();
    assert!(!dump.contains(&format!("127.0.0.1:{};", laptop.ua.port)), "{flavour:?}: the laptop's old binding stayed:\n{dump}");
    assert!(dump.contains(&laptop_now.ua.contact_uri()), "{dump}");
    // Stale bindings never got anything.
    tablet.ua.expect_no_request("INVITE", MS(100));
    laptop.ua.expect_no_request("INVITE", MS(100));
    assert_eq!(push.pushes_for("bob").len(), 2);
    k.expect_stat("tsilo:added_branches", 1);
    alice.in_dialog(&call, &ok, "BYE", call.cseq + 1);
    let bye = tablet_now.ua.expect_request("BYE", SECS(5));
    tablet_now.ua.reply(&bye, 200, "OK");
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(15)));
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
}

/// Nobody reachable, two devices pushable: the call waits suspended; the first device to wake
/// registers from a new address and the call rings it there (and not the other's stale binding);
/// the second wakes while it rings and gets its branch at its new address.
fn suspended_call_resumes_when_the_first_device_registers(flavour: Flavour) {
    let push = PushStub::start();
    let k = Kamailio::start(&example(flavour, &push.url()));
    let alice = Ua::new("alice", k.port);
    let phone = Device::new("carol", k.port, "fcm", "carol-phone", "", Some("00000000-0000-4000-8000-0000000ca201"));
    let tablet = Device::new("carol", k.port, "apns", "carol-tablet", "TEAM.app", None);
    assert_eq!(phone.ua.register("").status(), Some(200));
    assert_eq!(tablet.ua.register("").status(), Some(200));
    settle();
    let call = alice.invite("carol");
    let pushes = push.wait_pushes("carol", 2);
    assert_eq!(pushes.len(), 2, "{flavour:?}: {pushes:?}");
    assert!(pushes.iter().any(|p| phone.is_pushed_by(p, &call.call_id)) && pushes.iter().any(|p| tablet.is_pushed_by(p, &call.call_id)), "{pushes:?}");
    alice.recv_matching(SECS(5), |m| m.status() == Some(100)).expect("100 Trying while suspended");
    assert!(k.wait_stat("tsilo:stored_transactions", 1, SECS(5)), "the suspended call is stored");
    let phone_now = phone.wake();
    assert_eq!(phone_now.ua.register("").status(), Some(200));
    let inv = phone_now.ua.expect_request("INVITE", SECS(5));
    phone_now.ua.reply(&inv, 180, "Ringing");
    tablet.ua.expect_no_request("INVITE", MS(300));
    let tablet_now = tablet.wake();
    assert_eq!(tablet_now.ua.register("").status(), Some(200));
    let tablet_inv = tablet_now.ua.expect_request("INVITE", SECS(5));
    assert_eq!(tablet_inv.call_id(), call.call_id);
    // TM cancels a branch only once it has a provisional reply: let the caller see both 180s.
    tablet_now.ua.reply(&tablet_inv, 180, "Ringing");
    for _ in 0..2 {
        alice.recv_matching(SECS(5), |m| m.status() == Some(180)).expect("180 from each device");
    }
    phone_now.ua.reply(&inv, 200, "OK");
    tablet_now.ua.answer_cancel(&tablet_inv, SECS(5));
    let ok = alice.final_reply("INVITE", SECS(5));
    assert_eq!(ok.status(), Some(200), "{}", ok.raw);
    alice.hangup_via(&call, &ok, &phone_now.ua);
    for stale in [&phone.ua, &tablet.ua] {
        stale.expect_no_request("INVITE", MS(100));
    }
    k.expect_stat("tsilo:added_branches", 1);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(15)));
}

/// A woken device refreshes its registration while it rings (same contact, same +sip.instance:
/// apps do right after waking): it must not get a second INVITE of the call, neither when its
/// branch came from resuming a suspended call (relayed with `$ru` set by the script: TM's branch
/// has no usrloc record id) nor when it was appended to a ringing call.
fn a_woken_device_refreshing_while_it_rings_gets_one_invite(flavour: Flavour) {
    let push = PushStub::start();
    let k = Kamailio::start(&example(flavour, &push.url()));
    let alice = Ua::new("alice", k.port);
    // Resumed: nobody reachable, the call waits suspended for carol's phone.
    let phone = Device::new("carol", k.port, "fcm", "carol-refresh", "", Some("00000000-0000-4000-8000-0000000ca203"));
    assert_eq!(phone.ua.register("").status(), Some(200));
    // Appended: bob's desk rings at once, his tablet when it wakes.
    let desk = Ua::new("bob", k.port);
    let tablet = Device::new("bob", k.port, "apns", "bob-refresh", "TEAM.app", Some("00000000-0000-4000-8000-00000000b0b3"));
    assert_eq!(desk.register("").status(), Some(200));
    assert_eq!(tablet.ua.register("").status(), Some(200));
    settle();
    let to_carol = alice.invite("carol");
    assert_eq!(push.wait_pushes("carol", 1).len(), 1, "{flavour:?}");
    let to_bob = alice.invite("bob");
    let desk_inv = desk.expect_request("INVITE", SECS(5));
    desk.reply(&desk_inv, 180, "Ringing");
    assert_eq!(push.wait_pushes("bob", 1).len(), 1, "{flavour:?}");

    let mut ringing = Vec::new();
    for (device, call) in [(phone, &to_carol), (tablet, &to_bob)] {
        let woken = device.wake();
        assert_eq!(woken.ua.register("").status(), Some(200));
        let inv = woken.ua.expect_request("INVITE", SECS(5));
        assert_eq!(inv.call_id(), call.call_id);
        woken.ua.reply(&inv, 180, "Ringing");
        // The refresh, twice, as the first INVITE rings.
        for _ in 0..2 {
            assert_eq!(woken.ua.register("").status(), Some(200));
        }
        woken.ua.expect_no_request("INVITE", MS(500));
        ringing.push((woken, inv));
    }
    for ((woken, inv), call) in ringing.iter().zip([&to_carol, &to_bob]) {
        alice.cancel(call);
        woken.ua.answer_cancel(inv, SECS(5));
        if call.call_id == to_bob.call_id {
            desk.answer_cancel(&desk_inv, SECS(5));
        }
        let r = alice.final_reply("INVITE", SECS(5));
        assert_eq!(r.status(), Some(487), "{flavour:?}: {}", r.raw);
        alice.ack(call, &r);
        woken.ua.expect_no_request("INVITE", MS(100));
    }
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(15)));
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
}

/// A MESSAGE takes the same way: the reachable phone gets it at once, the pushed tablet when it
/// wakes, at its new address; the tablet answers.
fn message_reaches_the_woken_device(flavour: Flavour) {
    let push = PushStub::start();
    let k = Kamailio::start(&example(flavour, &push.url()));
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Device::new("bob", k.port, "fcm", "bob-tablet-msg", "", None);
    assert_eq!(phone.register("").status(), Some(200));
    assert_eq!(tablet.ua.register("").status(), Some(200));
    settle();
    let msg = alice.call("MESSAGE", "bob", "");
    phone.expect_request("MESSAGE", SECS(5)); // it never answers
    let pushes = push.wait_pushes("bob", 1);
    assert!(pushes.len() == 1 && tablet.is_pushed_by(&pushes[0], &msg.call_id), "{flavour:?}: {pushes:?}");
    let woken = tablet.wake();
    assert_eq!(woken.ua.register("").status(), Some(200));
    let m = woken.ua.expect_request("MESSAGE", SECS(5));
    assert_eq!(m.call_id(), msg.call_id);
    woken.ua.reply(&m, 200, "OK");
    assert_eq!(alice.final_reply("MESSAGE", SECS(5)).status(), Some(200));
    tablet.ua.expect_no_request("MESSAGE", MS(100));
    k.expect_stat("tsilo:added_branches", 1);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(15)));
}

/// Two calls wait, suspended, for the same user's only device: when it wakes, both ring it (each
/// is resumed by the append of the device's REGISTER), and both are answered.
fn two_suspended_calls_ring_the_first_device_to_wake(flavour: Flavour) {
    let push = PushStub::start();
    let k = Kamailio::start(&example(flavour, &push.url()));
    let alice = Ua::new("alice", k.port);
    let carol = Device::new("carol", k.port, "apns", "carol-only", "TEAM.app", Some("00000000-0000-4000-8000-0000000ca202"));
    assert_eq!(carol.ua.register("").status(), Some(200));
    settle();
    let calls = [alice.invite("carol"), alice.invite("carol")];
    assert_eq!(push.wait_pushes("carol", 2).len(), 2, "{flavour:?}: one push per call");
    assert!(k.wait_stat("tsilo:stored_transactions", 2, SECS(5)));
    let woken = carol.wake();
    assert_eq!(woken.ua.register("").status(), Some(200));
    let mut rung = Vec::new();
    for _ in 0..2 {
        let inv = woken.ua.expect_request("INVITE", SECS(5));
        woken.ua.reply(&inv, 200, "OK");
        rung.push(inv.call_id().to_string());
    }
    rung.sort();
    let mut placed: Vec<String> = calls.iter().map(|c| c.call_id.clone()).collect();
    placed.sort();
    assert_eq!(rung, placed, "{flavour:?}: each waiting call rings the woken device once");
    for _ in 0..2 {
        let ok = alice.final_reply("INVITE", SECS(5));
        assert_eq!(ok.status(), Some(200));
        let call = calls.iter().find(|c| c.call_id == ok.call_id()).unwrap();
        alice.ack(call, &ok);
    }
    carol.ua.expect_no_request("INVITE", MS(100));
    assert!(k.wait_log("(resume_route)", SECS(1)));
}

/// Nobody reachable and nobody pushable: 480 at once, no push. dave's only device (no pn
/// parameters) has unregistered; erin never registered.
fn nobody_reachable_nobody_pushable_is_480(flavour: Flavour) {
    let push = PushStub::start();
    let k = Kamailio::start(&example(flavour, &push.url()));
    let alice = Ua::new("alice", k.port);
    let dave = Ua::new("dave", k.port);
    assert_eq!(dave.register("").status(), Some(200));
    assert_eq!(dave.unregister().status(), Some(200));
    for user in ["dave", "erin"] {
        let call = alice.invite(user);
        let r = alice.final_reply("INVITE", SECS(5));
        assert_eq!(r.status(), Some(480), "{flavour:?}: {}", r.raw);
        alice.ack(&call, &r);
    }
    assert_eq!(push.pushes_for("dave").len() + push.pushes_for("erin").len(), 0);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
}

fn a_failed_push_is_answered_480(flavour: Flavour, gateway: Option<&PushStub>) {
    // No gateway: nothing listens on the port, the push cannot be delivered.
    let url = gateway.map(|g| g.url()).unwrap_or_else(|| format!("http://127.0.0.1:{}/push", free_port()));
    let k = Kamailio::start(&example(flavour, &url));
    let alice = Ua::new("alice", k.port);
    let dave = Device::new("dave", k.port, "apns", "dave-token", "p", None);
    assert_eq!(dave.ua.register("").status(), Some(200));
    settle();
    let call = alice.invite("dave");
    let r = alice.final_reply("INVITE", SECS(10));
    assert_eq!(r.status(), Some(480), "{}", r.raw);
    alice.ack(&call, &r);
    assert!(k.wait_log("push for dave to device dave-token failed", SECS(2)), "{flavour:?}: {}", k.log_tail(20));
    if let Some(g) = gateway {
        assert_eq!(g.count("dave"), 1, "{flavour:?}: the gateway was asked once");
    }
    // The answered call leaves the silo, and was never suspended: dave's device, waking
    // anyway, gets no INVITE.
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)), "{flavour:?}: the failed call stays stored");
    let woken = dave.wake();
    assert_eq!(woken.ua.register("").status(), Some(200));
    woken.ua.expect_no_request("INVITE", MS(500));
    assert_eq!(k.stat("tsilo:added_branches"), 0);
    assert!(!k.log().contains("(resume_route)"), "{flavour:?}: a failed call was left suspended");
}

/// The caller gives up while the call waits for a device: 487, the silo empties, and the
/// device registering after the transaction is gone gets nothing.
fn a_suspended_call_cancelled_before_any_device_registers(flavour: Flavour) {
    let push = PushStub::start();
    let k = Kamailio::start(&example(flavour, &push.url()));
    let alice = Ua::new("alice", k.port);
    let erin = Device::new("erin", k.port, "fcm", "erin-token", "", None);
    assert_eq!(erin.ua.register("").status(), Some(200));
    settle();
    let call = alice.invite("erin");
    assert_eq!(push.wait_pushes("erin", 1).len(), 1, "{flavour:?}: no push for erin");
    alice.recv_matching(SECS(5), |m| m.status() == Some(100)).expect("100 Trying while suspended");
    alice.cancel(&call);
    let r = alice.final_reply("INVITE", SECS(5));
    assert_eq!(r.status(), Some(487), "{}", r.raw);
    alice.ack(&call, &r);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(15)), "{flavour:?}: the cancelled call stays stored");
    let woken = erin.wake();
    assert_eq!(woken.ua.register("").status(), Some(200));
    woken.ua.expect_no_request("INVITE", MS(500));
    assert_eq!(k.stat("tsilo:added_branches"), 0);
    assert!(!k.log().contains("(resume_route)"), "{flavour:?}: a cancelled call was resumed");
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
fn native_each_pushable_device_is_pushed_and_rings_once_woken() {
    each_pushable_device_is_pushed_and_rings_once_woken(Flavour::Native);
}
#[test]
fn native_message_reaches_the_woken_device() {
    message_reaches_the_woken_device(Flavour::Native);
}
#[test]
fn native_two_suspended_calls_ring_the_first_device_to_wake() {
    two_suspended_calls_ring_the_first_device_to_wake(Flavour::Native);
}
#[test]
fn native_nobody_reachable_nobody_pushable_is_480() {
    nobody_reachable_nobody_pushable_is_480(Flavour::Native);
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
fn lua_each_pushable_device_is_pushed_and_rings_once_woken() {
    each_pushable_device_is_pushed_and_rings_once_woken(Flavour::Lua);
}
#[test]
fn lua_message_reaches_the_woken_device() {
    message_reaches_the_woken_device(Flavour::Lua);
}
#[test]
fn lua_two_suspended_calls_ring_the_first_device_to_wake() {
    two_suspended_calls_ring_the_first_device_to_wake(Flavour::Lua);
}
#[test]
fn lua_nobody_reachable_nobody_pushable_is_480() {
    nobody_reachable_nobody_pushable_is_480(Flavour::Lua);
}
#[test]
fn lua_suspended_call_cancelled() {
    a_suspended_call_cancelled_before_any_device_registers(Flavour::Lua);
}

#[test]
fn native_a_woken_device_refreshing_while_it_rings_gets_one_invite() {
    a_woken_device_refreshing_while_it_rings_gets_one_invite(Flavour::Native);
}

#[test]
fn lua_a_woken_device_refreshing_while_it_rings_gets_one_invite() {
    a_woken_device_refreshing_while_it_rings_gets_one_invite(Flavour::Lua);
}

#[test]
fn example_configs_pass_kamailio_check() {
    for file in ["examples/kamailio.cfg", "examples/kamailio-lua.cfg"] {
        let (ok, out) = check_config(&manifest_path(file));
        assert!(ok, "kamailio -c -f {file}:\n{out}");
    }
}
