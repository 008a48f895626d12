//! The R-URI is as the script left it after an append: TM's t_append_branches() resets the
//! current R-URI's q, branch flags and "new" mark (clear_branches(), faked_env()), and an
//! append runs in the caller's process, so the script's own next t_relay() would lose its R-URI
//! branch (or its flags) unless the module puts them back.

mod harness;
use harness::*;

const CFG: &str = r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
listen=udp:127.0.0.1:{PORT}
auto_aliases=no
exit_timeout=5

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "ctl.so"
loadmodule "kex.so"
loadmodule "tsilo.so"

modparam("ctl", "binrpc", "unix:{CTL}")
modparam("usrloc", "db_mode", 0)
modparam("tm", "wt_timer", 1000)

request_route {
	if (is_method("CANCEL")) {
		if (t_check_trans()) t_relay();
		exit;
	}
	if (has_totag()) {
		if (is_method("ACK") && t_check_trans()) t_relay();
		exit;
	}
	if (is_method("REGISTER")) {
		save("location");
		exit;
	}
	t_newtran();
	ts_store();
	if (!lookup("location")) {
		t_reply("404", "Not Found");
		exit;
	}
	if (is_present_hf("X-Append-For")) {
		# The request route appends to another user's calls, then relays its own R-URI.
		setbflag(5);
		ts_append("location", "$hdr(X-Append-For)");
		xlog("L_NOTICE", "ts_append rc=$rc\n");
	}
	t_on_failure("NEXT");
	t_on_branch("MARK");
	if (!t_relay()) {
		xlog("L_ERR", "relay to $ru failed\n");
	}
	exit;
}

# The first device is busy: ring whoever X-Next names, with branch flag 5, after appending the
# devices of the called user that registered meanwhile.
failure_route[NEXT] {
	if (t_is_canceled()) exit;
	$ru = $hdr(X-Next);
	setbflag(5);
	ts_append("location", "$tu");
	xlog("L_NOTICE", "ts_append rc=$rc\n");
	t_on_branch("MARK");
	if (!t_relay()) {
		xlog("L_ERR", "relay to $ru failed\n");
	}
}

branch_route[MARK] {
	if (isbflagset(5)) {
		append_hf("X-Bflag: 5\r\n");
	}
}
"#;

#[test]
fn a_failure_route_relays_its_r_uri_with_its_branch_flag_after_an_append() {
    let k = Kamailio::start(CFG);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    let carol = Ua::new("carol", k.port);
    phone.register("");
    alice.call("INVITE", "bob", &format!("X-Next: {}\r\n", carol.contact_uri()));
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");
    // Registered without an append: the failure route's ts_append() finds it new.
    tablet.register("");
    settle();
    phone.reply(&inv, 486, "Busy Here");

    let tinv = tablet.expect_request("INVITE", SECS(5));
    assert_eq!(tinv.call_id(), inv.call_id());
    assert_eq!(tinv.header("X-Bflag"), None, "the appended contact has its own flags");
    let Some(cinv) = carol.recv_matching(SECS(3), |m| m.method() == Some("INVITE")) else {
        panic!("the failure route's R-URI was not relayed after ts_append():\n{}", k.log_tail(20));
    };
    assert_eq!(cinv.call_id(), inv.call_id());
    assert_eq!(cinv.header("X-Bflag"), Some("5"), "the R-URI branch lost its branch flag:\n{}", cinv.raw);
    assert!(k.log().contains("ts_append rc=1"), "{}", k.log_tail(20));
    assert!(!k.log().contains("relay to"), "{}", k.log_tail(20));
    tablet.reply(&tinv, 180, "Ringing");
    carol.reply(&cinv, 180, "Ringing");
    k.expect_stat("tsilo:added_branches", 1);
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
}

#[test]
fn a_request_route_relays_its_r_uri_with_its_branch_flag_after_an_append() {
    let k = Kamailio::start(CFG);
    let alice = Ua::new("alice", k.port);
    let dave = Ua::new("dave", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    let carol = Ua::new("carol", k.port);
    phone.register("");
    carol.register("");
    alice.invite("bob");
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");
    tablet.register("");
    settle();
    // Dave's call to carol appends bob's new tablet to alice's call on its way.
    dave.call("INVITE", "carol", "X-Append-For: sip:bob@127.0.0.1\r\n");
    let tinv = tablet.expect_request("INVITE", SECS(5));
    assert_eq!(tinv.call_id(), inv.call_id());
    tablet.reply(&tinv, 180, "Ringing");
    let Some(cinv) = carol.recv_matching(SECS(3), |m| m.method() == Some("INVITE")) else {
        panic!("the request route's R-URI was not relayed after ts_append():\n{}", k.log_tail(20));
    };
    carol.reply(&cinv, 180, "Ringing");
    assert_eq!(cinv.header("X-Bflag"), Some("5"), "the R-URI branch lost its branch flag:\n{}", cinv.raw);
    assert!(k.log().contains("ts_append rc=1"), "{}", k.log_tail(20));
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
}
