//! Cluster-wide late forking over DMQ: two Kamailio nodes (examples/cluster/node.cfg) replicate
//! registrations with dmq_usrloc; an INVITE waiting on node A rings a device that registered on
//! node B, from A.

mod harness;
use harness::*;

/// Two nodes that know each other.
fn cluster() -> (Kamailio, Kamailio) {
    let a = cluster_node(None);
    let b = cluster_node(Some(a.port));
    wait_knows(&a, b.port);
    wait_knows(&b, a.port);
    (a, b)
}

fn via_port(m: &SipMsg) -> u16 {
    let via = m.header("Via").unwrap();
    via.split_whitespace().nth(1).and_then(|h| h.split(';').next()).and_then(|h| h.rsplit(':').next()).unwrap().parse().unwrap()
}

#[test]
fn a_device_registering_on_b_gets_the_invite_waiting_on_a() {
    let (a, b) = cluster();
    let alice = Ua::new("alice", a.port);
    let phone = Ua::new("bob", a.port);
    let tablet = Ua::new("bob", b.port);
    phone.register("");
    let call = alice.invite("bob");
    let phone_inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&phone_inv, 180, "Ringing");

    // The push woke the tablet; its REGISTER lands on node B.
    tablet.register("");
    let tablet_inv = tablet.expect_request("INVITE", SECS(5));
    assert_eq!(tablet_inv.call_id(), phone_inv.call_id());
    assert_eq!(via_port(&tablet_inv), a.port, "the branch leaves from node A");
    assert_eq!(tablet_inv.from_port, a.port);
    tablet.reply(&tablet_inv, 200, "OK");
    phone.answer_cancel(&phone_inv, SECS(5));
    let ok = alice.final_reply("INVITE", SECS(5));
    assert_eq!(ok.status(), Some(200), "{}", ok.raw);
    alice.hangup_via(&call, &ok, &tablet);
    a.expect_stat("tsilo:added_branches", 1);
    assert_eq!(b.stat("tsilo:added_branches"), 0, "B stores no call, appends nothing");
    assert!(a.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
    assert!(a.module_errors().is_empty() && b.module_errors().is_empty());
}

#[test]
fn a_suspended_call_on_a_is_resumed_when_a_device_registers_on_b() {
    let (a, b) = cluster();
    let alice = Ua::new("alice", a.port);
    let carol = Ua::new("carol", b.port);
    let call = alice.invite("carol");
    assert!(a.wait_stat("tsilo:stored_transactions", 1, SECS(5)), "stored and suspended on A");
    carol.register("");
    let inv = carol.expect_request("INVITE", SECS(5));
    assert_eq!(inv.from_port, a.port, "relayed by A");
    carol.reply(&inv, 180, "Ringing");
    carol.reply(&inv, 200, "OK");
    let ok = alice.final_reply("INVITE", SECS(5));
    assert_eq!(ok.status(), Some(200), "{}", ok.raw);
    alice.hangup_via(&call, &ok, &carol);
    assert!(a.wait_log("resumed it (resume_route)", SECS(2)));
    assert!(a.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
    drop(b);
}

/// Waits until node `k`'s usrloc has `contact` for `user` (replicated or local).
fn wait_contact(k: &Kamailio, user: &str, contact: &str) -> bool {
    let deadline = std::time::Instant::now() + SECS(10);
    while std::time::Instant::now() < deadline {
        if k.kamcmd(&["ul.lookup", "location", user]).is_ok_and(|out| out.contains(contact)) {
            return true;
        }
        std::thread::sleep(MS(50));
    }
    false
}

#[test]
fn node_b_stopping_does_not_disturb_node_a() {
    let (a, b) = cluster();
    let alice = Ua::new("alice", a.port);
    let phone = Ua::new("dave", a.port);
    let tablet = Ua::new("dave", a.port);
    // B is in the middle of things when it stops: a call waits on A, a device of its user
    // registers at B, B replicates it to A, A rings it.
    let watch = Ua::new("dave", b.port);
    phone.register("");
    let call = alice.invite("dave");
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");
    watch.register("");
    assert!(wait_contact(&a, "dave", &watch.contact_uri()), "A never got the contact B saved");
    let winv = watch.expect_request("INVITE", SECS(5));
    watch.reply(&winv, 180, "Ringing");
    let baseline = a.shm_used_idle();
    drop(b); // stopped mid-call
    watch.reply(&winv, 486, "Busy Here");
    phone.reply(&inv, 486, "Busy Here");
    let r = alice.final_reply("INVITE", SECS(5));
    assert_eq!(r.status(), Some(486));
    alice.ack(&call, &r);
    // The watch went with B: forget its contact on A.
    a.kamcmd(&["ul.rm_contact", "location", "dave", &watch.contact_uri()]).unwrap();
    for _ in 0..3 {
        tablet.unregister();
        let call = alice.invite("dave");
        let inv = phone.expect_request("INVITE", SECS(5));
        phone.reply(&inv, 180, "Ringing");
        tablet.register("");
        let tinv = tablet.expect_request("INVITE", SECS(5));
        tablet.reply(&tinv, 200, "OK");
        phone.answer_cancel(&inv, SECS(5));
        let ok = alice.final_reply("INVITE", SECS(5));
        assert_eq!(ok.status(), Some(200));
        alice.hangup_via(&call, &ok, &tablet);
    }
    assert!(a.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
    assert!(a.kamcmd(&["core.version"]).is_ok());
    // Nothing of ours leaks on A: three calls' entries would be gone, and the registrations of
    // dave's two devices and DMQ's view of B are all that may remain (well under 64 KiB).
    let after = a.shm_used_idle();
    eprintln!("node A shm used: {baseline} before B stopped, {after} after three calls");
    assert!(after <= baseline + 65536, "node A shm grew from {baseline} to {after}");
    assert_eq!(a.stat("tsilo:stored_ruris"), 0);
}

#[test]
fn three_nodes_a_device_registering_on_c_rings_the_call_on_a() {
    let (a, b) = cluster();
    let c = cluster_node(Some(a.port));
    wait_knows(&a, c.port);
    let alice = Ua::new("alice", a.port);
    let phone = Ua::new("erin", b.port);
    let laptop = Ua::new("erin", c.port);
    phone.register("");
    // The phone registered on B: A relays the call to it; then the laptop registers on C.
    let call = alice.invite("erin");
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");
    laptop.register("");
    let linv = laptop.expect_request("INVITE", SECS(5));
    assert_eq!(linv.from_port, a.port);
    laptop.reply(&linv, 200, "OK");
    phone.answer_cancel(&inv, SECS(5));
    let ok = alice.final_reply("INVITE", SECS(5));
    assert_eq!(ok.status(), Some(200));
    alice.hangup_via(&call, &ok, &laptop);
}

#[test]
fn a_node_joining_late_causes_no_stale_appends() {
    let (a, b) = cluster();
    let alice = Ua::new("alice", a.port);
    let phone = Ua::new("fred", a.port);
    phone.register("");
    let _call = alice.invite("fred");
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");
    // Node C joins now and syncs every contact (fred's phone included) from the cluster.
    let c = cluster_node(Some(b.port));
    wait_knows(&c, a.port);
    // C has the phone's contact (DMQ's sync inserted it there, running usrloc's callbacks).
    assert!(wait_contact(&c, "fred", &phone.contact_uri()), "node C never got fred's contact");
    // No node appended anything: the phone rings once, from A, and C stores no call.
    phone.expect_no_request("INVITE", MS(500));
    for k in [&a, &b, &c] {
        assert_eq!(k.stat("tsilo:added_branches"), 0);
    }
    assert_eq!(c.stat("tsilo:stored_transactions"), 0);
}
