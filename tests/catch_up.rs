//! A store's catch-up adds what the append it missed would have added, no more. The INVITE's
//! route sleeps between its start and ts_store(), so that a device's REGISTER, appending by
//! contact from another worker meanwhile, finds nothing stored (a miss); when the route is over
//! the store catches up. With RFC 8599 devices (examples/) the by-contact append's table also
//! holds bindings of other devices that are asleep, at stale addresses: they must not ring.
//! Likewise appends deferred to the end of a storing route, of different tables, each add their
//! own table's contacts (one process carries them out in a row, with one lookup cache).

mod harness;
use harness::*;

const CFG: &str = r#"#!KAMAILIO
debug=2
log_stderror=yes
children=4
listen=udp:127.0.0.1:{PORT}
auto_aliases=no
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "cfgutils.so"
loadmodule "ctl.so"
loadmodule "kex.so"
loadmodule "tsilo.so"
modparam("ctl", "binrpc", "unix:{CTL}")
modparam("usrloc", "db_mode", 0)
#!ifdef SUSPEND
modparam("tsilo", "resume_route", "RESUME")
#!endif
#!ifdef ONE_SLOT
modparam("tsilo", "hash_size", 1)
#!endif

request_route {
	if (is_method("CANCEL")) {
		if (t_check_trans()) {
			t_relay();
		}
		exit;
	}
	if (has_totag()) {
		if (is_method("ACK") && t_check_trans()) {
			t_relay();
		}
		exit;
	}
	if (is_method("REGISTER")) {
		# Devices woken by a push live in "parked"; the call is relayed to "location" only.
		if ($hdr(X-Table) == "parked") {
			save("parked");
			$var(rc) = ts_append_by_contact("parked", "$tu", "$(ct{nameaddr.uri})");
		} else {
			save("location");
			$var(rc) = ts_append("location", "$tu");
		}
		xlog("L_INFO", "REGISTER $ct: append $var(rc)\n");
		exit;
	}
	t_newtran();
#!ifdef SUSPEND
	# Nobody to relay to yet: stored and suspended, in flight until the route ends.
	ts_store();
	t_suspend();
	usleep("400000");
	exit;
#!endif
#!ifdef DEFER
	ts_store();
	if (!lookup("location")) {
		t_reply("404", "Not Found");
		exit;
	}
	t_relay();
	# Stored and relayed, in flight until the route ends: appends meanwhile are deferred to its end.
	usleep("400000");
#!else
	# The test's REGISTER comes in now and finds nothing stored.
	usleep("400000");
	ts_store();
	if (!lookup("location")) {
		t_reply("404", "Not Found");
		exit;
	}
	t_relay();
#!endif
}

route[RESUME] {
	if (!lookup("location")) {
		t_reply("480", "Temporarily Unavailable");
		exit;
	}
	t_relay();
}
"#;

#[test]
fn a_missed_by_contact_append_is_caught_up_for_its_device_only() {
    let k = Kamailio::start(CFG);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let asleep = Ua::new("bob", k.port);
    let woken = Ua::new("bob", k.port);
    assert_eq!(phone.register("").status(), Some(200));
    assert_eq!(asleep.register("X-Table: parked\r\n").status(), Some(200));
    settle(); // else the asleep device's own late append is what the call catches up

    let call = alice.invite("bob");
    std::thread::sleep(MS(100)); // inside the INVITE's usleep
    assert_eq!(woken.register("X-Table: parked\r\n").status(), Some(200));
    assert!(k.wait_log(&format!("REGISTER <{}>: append -2", woken.contact_uri()), SECS(2)), "the REGISTER did not miss the call:\n{}", k.log_tail(20));

    let phone_inv = phone.expect_request("INVITE", SECS(5));
    let inv = woken.expect_request("INVITE", SECS(5));
    assert_eq!(inv.call_id(), call.call_id);
    assert_eq!(k.stat("tsilo:store_catch_up"), 1);
    asleep.expect_no_request("INVITE", MS(300));
    woken.expect_no_request("INVITE", MS(100));

    phone.reply(&phone_inv, 180, "Ringing");
    woken.reply(&inv, 180, "Ringing");
    alice.cancel(&call);
    phone.answer_cancel(&phone_inv, SECS(5));
    woken.answer_cancel(&inv, SECS(5));
    let r = alice.final_reply("INVITE", SECS(5));
    assert_eq!(r.status(), Some(487));
    alice.ack(&call, &r);
    k.expect_stat("tsilo:added_branches", 1);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
    asleep.expect_no_request("INVITE", MS(100));
}

#[test]
fn deferred_appends_of_two_tables_each_add_their_own_contacts() {
    let k = Kamailio::start(&format!("#!define DEFER\n{CFG}"));
    let alice = Ua::new("alice", k.port);
    // bob: the "location" append is left first, then the "parked" one; ann: the other order.
    for (user, parked_first) in [("bob", false), ("ann", true)] {
        let phone = Ua::new(user, k.port);
        let asleep = Ua::new(user, k.port);
        let desk = Ua::new(user, k.port);
        let tablet = Ua::new(user, k.port);
        assert_eq!(phone.register("").status(), Some(200));
        assert_eq!(asleep.register("X-Table: parked\r\n").status(), Some(200));
        settle();
        let call = alice.invite(user);
        // Relayed: the route sleeps now, with the call in flight.
        let phone_inv = phone.expect_request("INVITE", SECS(5));
        phone.reply(&phone_inv, 180, "Ringing");
        let order: [(&Ua, &str); 2] = if parked_first { [(&tablet, "X-Table: parked\r\n"), (&desk, "")] } else { [(&desk, ""), (&tablet, "X-Table: parked\r\n")] };
        for (ua, table) in order {
            assert_eq!(ua.register(table).status(), Some(200));
            assert!(k.wait_log(&format!("REGISTER <{}>: append 1", ua.contact_uri()), SECS(2)), "{}", k.log_tail(20));
        }
        let mut invs = Vec::new();
        for ua in [&desk, &tablet] {
            let inv = ua.expect_request("INVITE", SECS(5));
            assert_eq!(inv.call_id(), call.call_id, "{user}");
            ua.reply(&inv, 180, "Ringing");
            invs.push(inv);
        }
        asleep.expect_no_request("INVITE", MS(300));
        alice.cancel(&call);
        for (ua, inv) in [&desk, &tablet].into_iter().zip(&invs) {
            ua.answer_cancel(inv, SECS(5));
        }
        phone.answer_cancel(&phone_inv, SECS(5));
        let r = alice.final_reply("INVITE", SECS(5));
        assert_eq!(r.status(), Some(487));
        alice.ack(&call, &r);
    }
    assert!(k.stat("tsilo:append_deferred") >= 4, "the appends were not deferred: {}", k.stat("tsilo:append_deferred"));
    k.expect_stat("tsilo:added_branches", 4);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
}

/// A device registers while the route that suspended its call is still running: the append is
/// deferred to that route's end, where, the call being suspended, it runs the resume route (from
/// the core's post-script callback, in the process that suspended the call).
#[test]
fn an_append_deferred_to_a_route_that_suspended_the_call_resumes_it() {
    let k = Kamailio::start(&format!("#!define SUSPEND\n{CFG}"));
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let call = alice.invite("bob");
    assert!(k.wait_stat("tsilo:stored_transactions", 1, SECS(2)));
    assert_eq!(phone.register("").status(), Some(200)); // inside the INVITE's usleep
    assert!(k.wait_log(&format!("REGISTER <{}>: append 1", phone.contact_uri()), SECS(2)), "{}", k.log_tail(20));
    let inv = phone.expect_request("INVITE", SECS(5));
    assert_eq!(inv.call_id(), call.call_id);
    assert!(k.stat("tsilo:append_deferred") >= 1);
    phone.reply(&inv, 200, "OK");
    let ok = alice.final_reply("INVITE", SECS(5));
    assert_eq!(ok.status(), Some(200), "{}", ok.raw);
    alice.ack(&call, &ok); // (no record-route here: the dialog goes on without the proxy)
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
}

/// Misses are kept per AoR, not per hash slot: with one slot every AoR is a neighbour, and
/// another user's device registering by contact while bob's call is being stored is no miss of
/// bob's call (it used to stand for every contact of bob's in that table: bob's sleeping device
/// rang at its stale address; with nobody of bob's there, an ERROR and append_lookup_failed).
#[test]
fn a_neighbours_miss_is_not_caught_up_by_another_aor() {
    let k = Kamailio::start(&format!("#!define ONE_SLOT\n{CFG}"));
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let asleep = Ua::new("bob", k.port);
    let ann = Ua::new("ann", k.port);
    assert_eq!(phone.register("").status(), Some(200));
    assert_eq!(asleep.register("X-Table: parked\r\n").status(), Some(200));
    settle();

    let call = alice.invite("bob");
    std::thread::sleep(MS(100)); // inside the INVITE's usleep
    assert_eq!(ann.register("X-Table: parked\r\n").status(), Some(200));
    assert!(k.wait_log(&format!("REGISTER <{}>: append -2", ann.contact_uri()), SECS(2)), "{}", k.log_tail(20));

    let phone_inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&phone_inv, 180, "Ringing");
    asleep.expect_no_request("INVITE", MS(600));
    assert_eq!(k.stat("tsilo:store_catch_up"), 0);
    alice.cancel(&call);
    phone.answer_cancel(&phone_inv, SECS(5));
    let r = alice.final_reply("INVITE", SECS(5));
    assert_eq!(r.status(), Some(487));
    alice.ack(&call, &r);
    assert_eq!(k.stat("tsilo:added_branches"), 0);
    assert_eq!(k.stat("tsilo:append_lookup_failed"), 0);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
}

/// ts.append to a call whose storing route is still running: held back, and the reply says so
/// (Deferred), not as a branch sent; the device rings when the route ends.
#[test]
fn ts_append_reports_a_held_back_append_as_deferred() {
    let k = Kamailio::start(&format!("#!define DEFER\n{CFG}"));
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    assert_eq!(phone.register("").status(), Some(200));
    settle();
    let call = alice.invite("bob");
    let inv = phone.expect_request("INVITE", SECS(5)); // relayed: the route sleeps now
    phone.reply(&inv, 180, "Ringing");
    let desk = Ua::new("bob", k.port);
    assert_eq!(desk.register("X-Table: none\r\n").status(), Some(200));
    let out = k.kamcmd(&["ts.append", "sip:bob@127.0.0.1"]).unwrap();
    let field = |name: &str| out.lines().find_map(|l| l.trim().strip_prefix(name)).map(|v| v.trim().to_string());
    assert_eq!(field("Transactions:").as_deref(), Some("1"), "{out}");
    assert_eq!(field("Branches:").as_deref(), Some("0"), "{out}");
    assert_eq!(field("Deferred:").as_deref(), Some("1"), "{out}");
    let dinv = desk.expect_request("INVITE", SECS(5));
    assert_eq!(dinv.call_id(), call.call_id);
    desk.reply(&dinv, 180, "Ringing");
    alice.cancel(&call);
    phone.answer_cancel(&inv, SECS(5));
    desk.answer_cancel(&dinv, SECS(5));
    let r = alice.final_reply("INVITE", SECS(5));
    assert_eq!(r.status(), Some(487));
    alice.ack(&call, &r);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
}
