//! Late forking through real Kamailio and real SIP: a device that registers while a call is
//! pending gets its own branch of the stored INVITE (ts_append, ts_append_to,
//! ts_append_by_contact, ts_append_branches), and never a branch of a call that is over.

mod harness;
use harness::*;

const CFG: &str = include_str!("configs/tsilo.cfg");

fn config(fr_inv_ms: u32) -> String {
    CFG.replace("{FR_INV}", &fr_inv_ms.to_string()).replace("{USE_DOMAIN}", "0")
}

fn start(fr_inv_ms: u32) -> Kamailio {
    Kamailio::start(&config(fr_inv_ms))
}

fn tagged(tag: &str, append: &str) -> String {
    format!("X-Tag: {tag}\r\nX-Append: {append}\r\n")
}

/// A REGISTER's headers asking the test config for ts_append_to(index, label, ...) (`append`:
/// "to3", or "to4" with an X-Uri among `extra`).
fn tagged_to(tag: &str, append: &str, (index, label): (&str, &str), extra: &str) -> String {
    format!("{}X-Tindex: {index}\r\nX-Tlabel: {label}\r\n{extra}", tagged(tag, append))
}

/// The return code the test config logged for the REGISTER tagged `tag`.
fn append_rc(k: &Kamailio, tag: &str) -> i32 {
    let needle = format!("append[{tag}] rc=");
    assert!(k.wait_log(&needle, SECS(5)), "no append log for {tag}:\n{}", k.log_tail(30));
    let log = k.log();
    let line = log.lines().find(|l| l.contains(&needle)).unwrap();
    line.split_once(&needle).unwrap().1.trim().parse().unwrap()
}

/// alice calls bob; bob's phone (registered) rings. Returns the call and the phone's INVITE.
fn ringing_call(alice: &Ua, phone: &Ua) -> (Call, SipMsg) {
    let call = alice.invite("bob");
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");
    alice.recv_matching(SECS(5), |m| m.status() == Some(180)).expect("180 relayed to the caller");
    (call, inv)
}

fn stored_id(k: &Kamailio, aor: &str) -> (String, String) {
    let out = k.kamcmd(&["ts.lookup", aor]).unwrap();
    let field = |key: &str| out.lines().find_map(|l| l.trim().strip_prefix(key)).unwrap().trim().to_string();
    (field("Tindex:"), field("Tlabel:"))
}

/// One full late-fork call: the phone rings, the tablet and the laptop register and ring too,
/// the laptop answers, the other two are cancelled, the call ends.
fn three_device_call(k: &Kamailio, alice: &Ua, phone: &Ua, tablet: &Ua, laptop: &Ua, round: u32) {
    let (call, phone_inv) = ringing_call(alice, phone);
    tablet.register(&tagged(&format!("tablet{round}"), "append"));
    assert_eq!(append_rc(k, &format!("tablet{round}")), 1);
    let tablet_inv = tablet.expect_request("INVITE", SECS(5));
    tablet.reply(&tablet_inv, 180, "Ringing");
    laptop.register(&tagged(&format!("laptop{round}"), "append"));
    let laptop_inv = laptop.expect_request("INVITE", SECS(5));
    laptop.reply(&laptop_inv, 180, "Ringing");
    // Same call, three branches.
    assert_eq!(tablet_inv.call_id(), phone_inv.call_id());
    assert_eq!(laptop_inv.call_id(), phone_inv.call_id());

    laptop.reply(&laptop_inv, 200, "OK");
    phone.answer_cancel(&phone_inv, SECS(5));
    tablet.answer_cancel(&tablet_inv, SECS(5));
    let ok = alice.final_reply("INVITE", SECS(5));
    assert_eq!(ok.status(), Some(200));
    alice.ack(&call, &ok);
    laptop.expect_request("ACK", SECS(5));
    alice.in_dialog(&call, &ok, "BYE", call.cseq + 1);
    let bye = laptop.expect_request("BYE", SECS(5));
    laptop.reply(&bye, 200, "OK");
    alice.final_reply("BYE", SECS(5));
}

#[test]
fn late_fork_to_a_second_and_third_device_and_the_answer_cancels_the_others() {
    let k = start(30000);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    let laptop = Ua::new("bob", k.port);
    phone.register(&tagged("phone", "append"));
    assert_eq!(append_rc(&k, "phone"), -2, "nothing stored for bob yet");

    three_device_call(&k, &alice, &phone, &tablet, &laptop, 1);
    k.expect_stat("tsilo:added_branches", 2);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)), "silo not emptied");
    let baseline = k.shm_used_idle();

    // The same again, the tablet and laptop asleep (unregistered) each time: shm comes back.
    for round in 2..=4 {
        tablet.unregister();
        laptop.unregister();
        three_device_call(&k, &alice, &phone, &tablet, &laptop, round);
    }
    k.expect_stat("tsilo:added_branches", 8);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
    assert_eq!(k.stat("tsilo:stored_ruris"), 0);
    let after = k.shm_used_idle();
    eprintln!("shm used: baseline {baseline}, after 3 more late-fork calls {after}");
    assert!(after <= baseline + 512, "shm grew from {baseline} to {after}");
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
}

/// pkg memory in use, summed over every process (kamcmd pkg.stats).
fn pkg_used_total(k: &Kamailio) -> i64 {
    let out = k.kamcmd(&["pkg.stats"]).unwrap();
    out.lines().filter_map(|l| l.trim().strip_prefix("used:")).map(|v| v.trim().parse::<i64>().unwrap()).sum()
}

#[test]
fn hundreds_of_late_forks_leave_shm_and_pkg_where_they_were() {
    // A leak of one small block per call shows over 300 calls: the silo's own 24-byte entry
    // left unfreed grows shm by 8.6 KB; nothing moves otherwise (measured: 0 bytes).
    let k = start(30000);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    phone.register(&tagged("phone", "none"));
    let call_once = || {
        tablet.unregister();
        let (call, inv) = ringing_call(&alice, &phone);
        tablet.register(&tagged("t", "append"));
        let tinv = tablet.expect_request("INVITE", SECS(5));
        tablet.reply(&tinv, 200, "OK");
        phone.answer_cancel(&inv, SECS(5));
        let ok = alice.final_reply("INVITE", SECS(5));
        alice.hangup_via(&call, &ok, &tablet);
    };
    // Warm up: each worker's first calls allocate what it keeps (parsers, caches).
    for _ in 0..30 {
        call_once();
    }
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
    let (shm, pkg) = (k.shm_used_idle() as i64, pkg_used_total(&k));
    for i in 0..300 {
        call_once();
        // Ended calls stay stored until TM frees them (wt_timer): keep bob under
        // max_transactions_per_aor (100).
        if i % 50 == 49 {
            assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
        }
    }
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
    assert_eq!(k.stat("tsilo:stored_ruris"), 0);
    let (shm_after, pkg_after) = (k.shm_used_idle() as i64, pkg_used_total(&k));
    eprintln!("300 late forks: shm {shm} -> {shm_after}, pkg (all processes) {pkg} -> {pkg_after}");
    assert!(shm_after - shm < 4 * 1024, "shm grew from {shm} to {shm_after} over 300 calls");
    assert!(pkg_after - pkg < 4 * 1024, "pkg grew from {pkg} to {pkg_after} over 300 calls");
    k.expect_stat("tsilo:added_branches", 330);
}

#[test]
fn with_use_domain_a_register_appends_to_the_calls_of_its_own_domain_only() {
    // usrloc keys by user here (its own use_domain is off): both calls ring bob's phone; tsilo's
    // keys are bob@127.0.0.1 and bob@other.example, from each INVITE's R-URI (ts_store()).
    let k = Kamailio::start(&CFG.replace("{FR_INV}", "30000").replace("{USE_DOMAIN}", "1"));
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    phone.register(&tagged("phone", "none"));
    let here = alice.call_uri("INVITE", "sip:bob@127.0.0.1", "");
    let inv1 = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv1, 180, "Ringing");
    let there = alice.call_uri("INVITE", "sip:bob@other.example", "");
    let inv2 = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv2, 180, "Ringing");
    assert!(k.kamcmd(&["ts.lookup", "bob@127.0.0.1"]).is_ok());
    assert!(k.kamcmd(&["ts.lookup", "sip:bob@other.example"]).is_ok());
    // The tablet registers as bob@127.0.0.1: ts_append("location", "$tu") reaches that call only.
    tablet.register(&tagged("tablet", "append"));
    assert_eq!(append_rc(&k, "tablet"), 1);
    let tinv = tablet.expect_request("INVITE", SECS(5));
    assert_eq!(tinv.call_id(), here.call_id);
    tablet.reply(&tinv, 180, "Ringing");
    tablet.expect_no_request("INVITE", MS(300));
    k.expect_stat("tsilo:added_branches", 1);
    for (call, ua_invs) in [(&here, vec![(&phone, &inv1), (&tablet, &tinv)]), (&there, vec![(&phone, &inv2)])] {
        alice.cancel(call);
        for (ua, inv) in ua_invs {
            ua.answer_cancel(inv, SECS(5));
        }
        let r = alice.final_reply("INVITE", SECS(5));
        alice.ack(call, &r);
    }
    assert!(k.wait_stat("tsilo:stored_ruris", 0, SECS(10)));
}

#[test]
fn a_message_reaches_a_device_that_registers_during_its_transaction() {
    let k = start(10000);
    let alice = Ua::new("alice", k.port);
    let asleep = Ua::new("bob", k.port); // registered, but its socket is dead: never answers
    let woken = Ua::new("bob", k.port);
    asleep.register(&tagged("asleep", "none"));
    let _msg = alice.call("MESSAGE", "bob", "");
    asleep.expect_request("MESSAGE", SECS(5));
    assert!(k.wait_stat("tsilo:stored_transactions", 1, SECS(5)));
    woken.register(&tagged("woken", "append"));
    let m = woken.expect_request("MESSAGE", SECS(5));
    assert_eq!(m.body, "hello");
    woken.reply(&m, 200, "OK");
    let r = alice.final_reply("MESSAGE", SECS(5));
    assert_eq!(r.status(), Some(200), "{}", r.raw);
}

#[test]
fn no_branch_after_the_caller_cancels() {
    let k = start(30000);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    phone.register(&tagged("phone", "none"));
    let (call, inv) = ringing_call(&alice, &phone);
    alice.cancel(&call);
    phone.answer_cancel(&inv, SECS(5));
    let r = alice.final_reply("INVITE", SECS(5));
    assert_eq!(r.status(), Some(487));
    alice.ack(&call, &r);
    // The transaction may still be stored (TM's wait timer): it must not get a branch.
    tablet.register(&tagged("tablet", "append"));
    assert!([1, -2].contains(&append_rc(&k, "tablet")));
    tablet.expect_no_request("INVITE", SECS(1));
    assert_eq!(k.stat("tsilo:added_branches"), 0);
}

#[test]
fn a_cancelled_call_still_waiting_for_its_487_gets_no_branch() {
    // The CANCEL has arrived, the phone has not answered it yet: no final reply, but cancelled.
    // Only the cancelled guard stands between this call and a new branch.
    let k = start(30000);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    let laptop = Ua::new("bob", k.port);
    phone.register(&tagged("phone", "none"));
    let (call, inv) = ringing_call(&alice, &phone);
    let (index, label) = stored_id(&k, "bob");
    alice.cancel(&call);
    let cancel = phone.expect_request("CANCEL", SECS(5));
    tablet.register(&tagged("tablet", "append"));
    assert_eq!(append_rc(&k, "tablet"), 1, "ts_append: the AoR had a stored call");
    laptop.register(&tagged_to("laptop", "to3", (&index, &label), ""));
    assert_eq!(append_rc(&k, "laptop"), -2, "ts_append_to on a cancelled transaction");
    assert_eq!(k.stat("tsilo:append_canceled"), 2);
    assert_eq!(k.stat("tsilo:added_branches"), 0);
    tablet.expect_no_request("INVITE", MS(300));
    laptop.expect_no_request("INVITE", MS(100));
    phone.reply(&cancel, 200, "OK");
    phone.reply(&inv, 487, "Request Terminated");
    assert_eq!(alice.final_reply("INVITE", SECS(5)).status(), Some(487));
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)), "cleaned up after the CANCEL");
    assert_eq!(k.stat("tsilo:stored_ruris"), 0);
}

#[test]
fn an_answered_call_gets_no_branch_and_ts_append_to_says_so() {
    let k = start(30000);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    phone.register(&tagged("phone", "none"));
    let (call, inv) = ringing_call(&alice, &phone);
    let (index, label) = stored_id(&k, "bob");
    phone.reply(&inv, 200, "OK");
    let ok = alice.final_reply("INVITE", SECS(5));
    tablet.register(&tagged_to("tablet", "to3", (&index, &label), ""));
    assert_eq!(append_rc(&k, "tablet"), -3);
    assert_eq!(k.stat("tsilo:append_answered"), 1);
    tablet.expect_no_request("INVITE", MS(300));
    alice.hangup_via(&call, &ok, &phone);
}

#[test]
fn no_branch_after_fr_inv_timer_expiry() {
    let k = start(1500);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    phone.register(&tagged("phone", "none"));
    let (call, _inv) = ringing_call(&alice, &phone);
    let r = alice.final_reply("INVITE", SECS(5));
    assert_eq!(r.status(), Some(408), "{}", r.raw);
    alice.ack(&call, &r);
    tablet.register(&tagged("tablet", "append"));
    tablet.expect_no_request("INVITE", SECS(1));
    assert_eq!(k.stat("tsilo:added_branches"), 0);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
}

#[test]
fn ts_append_to_with_three_and_four_parameters() {
    let k = start(30000);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    let laptop = Ua::new("bob", k.port);
    phone.register(&tagged("phone", "none"));
    let (_call, _inv) = ringing_call(&alice, &phone);
    let (index, label) = stored_id(&k, "bob");

    tablet.register(&tagged_to("tablet", "to3", (&index, &label), ""));
    assert_eq!(append_rc(&k, "tablet"), 1, "one branch sent");
    let tinv = tablet.expect_request("INVITE", SECS(5));
    tablet.reply(&tinv, 180, "Ringing");
    // Again: each of bob's contacts has a branch now. -1, as the C module returns, but TM is not
    // asked (the C module's TM logs "failure to add branches").
    tablet.register(&tagged_to("tablet-again", "to3", (&index, &label), ""));
    assert_eq!(append_rc(&k, "tablet-again"), -1, "every contact has a branch already");
    tablet.expect_no_request("INVITE", MS(200));
    assert!(!k.log().contains("failure to add branches"), "{}", k.log_tail(20));

    // The 4th parameter names whose contacts to look up: carol's desk gets bob's call (a
    // call pickup), bob's laptop does not.
    let desk = Ua::new("carol", k.port);
    desk.register(&tagged("desk", "none"));
    laptop.register(&tagged_to("laptop", "to4", (&index, &label), "X-Uri: sip:carol@127.0.0.1\r\n"));
    assert_eq!(append_rc(&k, "laptop"), 1);
    let dinv = desk.expect_request("INVITE", SECS(5));
    desk.reply(&dinv, 180, "Ringing");
    laptop.expect_no_request("INVITE", MS(300));
    tablet.expect_no_request("INVITE", MS(100));
    k.expect_stat("tsilo:added_branches", 2);
    // No contact for the URI: -4.
    laptop.register(&tagged_to("laptop2", "to4", (&index, &label), "X-Uri: sip:nobody@127.0.0.1\r\n"));
    assert_eq!(append_rc(&k, "laptop2"), -4);
    assert_eq!(k.stat("tsilo:append_lookup_failed"), 1);
}

#[test]
fn ts_append_by_contact_adds_exactly_one_branch() {
    let k = start(30000);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    let laptop = Ua::new("bob", k.port);
    let watch = Ua::new("bob", k.port);
    phone.register(&tagged("phone", "none"));
    let (_call, _inv) = ringing_call(&alice, &phone);

    // The tablet registers without any append: it is in the location table, not ringing.
    tablet.register(&tagged("tablet", "none"));
    // The laptop's REGISTER appends by its own Contact: only the laptop rings.
    laptop.register(&tagged("laptop", "contact2"));
    assert_eq!(append_rc(&k, "laptop"), 1);
    laptop.expect_request("INVITE", SECS(5));
    tablet.expect_no_request("INVITE", MS(500));
    k.expect_stat("tsilo:added_branches", 1);

    // The watch's REGISTER names the tablet's contact: only the tablet rings.
    watch.register(&format!("{}X-Contact: {}\r\n", tagged("watch", "contact3"), tablet.contact_uri()));
    assert_eq!(append_rc(&k, "watch"), 1);
    tablet.expect_request("INVITE", SECS(5));
    watch.expect_no_request("INVITE", MS(500));
    k.expect_stat("tsilo:added_branches", 2);
}

#[test]
fn ts_append_branches_sends_the_destination_set_the_script_built() {
    let k = start(30000);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let desk = Ua::new("bob", k.port); // never registers: reached only through append_branch()
    let tablet = Ua::new("bob", k.port);
    phone.register(&tagged("phone", "none"));
    let (_call, _inv) = ringing_call(&alice, &phone);
    tablet.register(&format!("{}X-Contact: {}\r\n", tagged("tablet", "branches"), desk.contact_uri()));
    assert_eq!(append_rc(&k, "tablet"), 1);
    desk.expect_request("INVITE", SECS(5));
    tablet.expect_no_request("INVITE", MS(500));
    k.expect_stat("tsilo:added_branches", 1);
}

#[test]
fn bad_input_gives_the_documented_codes_and_a_log_line() {
    let mut k = start(30000);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let dev = Ua::new("bob", k.port);
    phone.register(&tagged("phone", "none"));
    let (_call, _inv) = ringing_call(&alice, &phone);

    let cases: [(&str, &str, i32, &str); 5] = [
        ("b1", "X-Append: uri\r\nX-Uri: bogus\r\n", -1, "bad uri [bogus]"),
        ("b2", "X-Append: to3\r\nX-Tindex: 1\r\nX-Tlabel: 1\r\n", -1, "transaction [1:1] not found"),
        ("b3", "X-Append: to3-raw\r\nX-Tindex: abc\r\nX-Tlabel: 1\r\n", -1, "cannot get transaction index"),
        ("b4", "X-Append: uri\r\nX-Uri: sip:nobody@127.0.0.1\r\n", -2, "append[b4]"),
        ("b5", "X-Append: to3\r\nX-Tindex: 99999999\r\nX-Tlabel: 1\r\n", -1, "transaction [99999999:1] not found"),
    ];
    for (tag, headers, rc, log) in cases {
        dev.register(&format!("X-Tag: {tag}\r\n{headers}"));
        assert_eq!(append_rc(&k, tag), rc, "{tag}");
        assert!(k.wait_log(log, SECS(2)), "{tag}: no '{log}' in the log:\n{}", k.log_tail(20));
    }
    // A de-registration (Contact: *) names no contact to append by.
    let star = format!(
        "REGISTER sip:127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{d};branch=z9hG4bKstar1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@127.0.0.1>;tag=s1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: star-1\r\n\
         CSeq: 1 REGISTER\r\nContact: *\r\nExpires: 0\r\nX-Tag: b6\r\nX-Append: contact2\r\nContent-Length: 0\r\n\r\n",
        p = k.port,
        d = dev.port
    );
    dev.send(&star);
    dev.final_reply("REGISTER", SECS(5));
    assert_eq!(append_rc(&k, "b6"), -1);
    assert!(k.wait_log("Contact: * (a de-registration)", SECS(2)));
    dev.expect_no_request("INVITE", MS(300));
    // A REGISTER without Contact (asking for the bindings) names no contact either (upstream
    // added the NULL check of the parsed Contact after 6.0.1).
    let query = star.replace("Contact: *\r\nExpires: 0\r\n", "").replace("X-Tag: b6", "X-Tag: b7").replace("star1", "star2").replace("CSeq: 1", "CSeq: 2");
    dev.send(&query);
    dev.final_reply("REGISTER", SECS(5));
    assert_eq!(append_rc(&k, "b7"), -1);
    dev.expect_no_request("INVITE", MS(300));
    // Still up and answering.
    assert_eq!(alice.options().and_then(|r| r.status()), Some(200));
    assert!(k.alive());
    assert!(!k.log().contains("BUG: panic"));
}

#[test]
fn an_append_leaves_the_scripts_current_transaction_as_it_was() {
    // Upstream fixed this in ts_append_branches after 6.0.1 (a transaction not found left TM's
    // current transaction changed); ours restores it on every path of every append.
    let mut k = start(30000);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    phone.register(&tagged("phone", "none"));
    let (first, inv) = ringing_call(&alice, &phone);
    // A second call, whose route (current transaction: its own) appends to a transaction that
    // does not exist, then to bob's calls (the first, and itself, held by its own route).
    let second = alice.call_uri("INVITE", "sip:bob@127.0.0.1", "X-Restore: sip:bob@127.0.0.1\r\nX-Tindex: 1\r\nX-Tlabel: 1\r\n");
    let needle = format!("restore[{}] ", second.call_id);
    assert!(k.wait_log(&needle, SECS(5)), "{}", k.log_tail(30));
    let log = k.log();
    let ids: Vec<&str> = log.lines().find_map(|l| l.split_once(&needle)).unwrap().1.split_whitespace().collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids[0].contains(':') && !ids[0].starts_with(':'), "no current transaction before: {ids:?}");
    assert!(ids.iter().all(|id| *id == ids[0]), "the current transaction changed: {ids:?}");
    assert!(k.wait_log("transaction [1:1] not found", SECS(2)));
    let inv2 = phone.expect_request("INVITE", SECS(5));
    assert_eq!(inv2.call_id(), second.call_id, "the second call is relayed as usual");
    phone.reply(&inv2, 180, "Ringing");
    for (call, inv) in [(&first, &inv), (&second, &inv2)] {
        alice.cancel(call);
        phone.answer_cancel(inv, SECS(5));
    }
    assert!(k.alive());
}

#[test]
fn a_panic_inside_an_append_releases_its_transaction() {
    // TSILO_FAILPOINT=append-panic: the first append panics while it holds the call. The panic
    // is caught (a BUG line, the function returns an error), and the hold ends with it (a drop
    // guard): the next append is not left on a transaction nobody holds any more.
    let mut k = Kamailio::start_env(&config(30000), &[("TSILO_FAILPOINT", "append-panic")]);
    k.tolerate.push("failpoint append-panic".to_string());
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    let laptop = Ua::new("bob", k.port);
    phone.register(&tagged("phone", "none"));
    let (call, inv) = ringing_call(&alice, &phone);
    tablet.register(&tagged("tablet", "append"));
    assert!(append_rc(&k, "tablet") < 0);
    assert!(k.wait_log("BUG: panic at", SECS(2)), "{}", k.log_tail(20));
    tablet.expect_no_request("INVITE", MS(200));
    // The laptop's append goes through at once, and rings the tablet too (registered, no branch).
    laptop.register(&tagged("laptop", "append"));
    assert_eq!(append_rc(&k, "laptop"), 1);
    for ua in [&tablet, &laptop] {
        let late = ua.expect_request("INVITE", SECS(5));
        assert_eq!(late.call_id(), call.call_id);
        ua.reply(&late, 180, "Ringing");
    }
    assert_eq!(k.kamcmd(&["ts.stats"]).unwrap().lines().find(|l| l.contains("in_flight")).map(str::trim), Some("in_flight: 0"));
    alice.cancel(&call);
    phone.answer_cancel(&inv, SECS(5));
    assert!(k.alive());
}

#[test]
fn an_empty_table_name_stops_kamailio_at_startup() {
    let cfg = config(30000).replace(
        "\t\tts_append(\"location\", \"$tu\");\n\t\t$var(rc) = $rc;\n\t}",
        "\t\tts_append(\"\", \"$tu\");\n\t\t$var(rc) = $rc;\n\t}",
    );
    assert!(cfg.contains("ts_append(\"\""), "the replacement must apply");
    let log = Kamailio::start_expect_failure(&cfg);
    assert!(log.contains("tsilo") && log.contains("empty table name"), "{log}");
    assert!(!log.contains("SIGSEGV") && !log.contains("BUG"), "{log}");
}
