//! Every KEMI export, called from a Lua routing script (tests/configs/kemi.lua), with the return
//! codes the README documents and the effect on the silo and the devices.

mod harness;
use harness::*;

fn start() -> Kamailio {
    let lua = manifest_path("tests/configs/kemi.lua");
    Kamailio::start(&include_str!("configs/kemi.cfg").replace("{LUA}", lua.to_str().unwrap()))
}

/// REGISTERs `ua` calling KEMI function `f` (extra headers too); returns the logged code.
fn kemi(k: &Kamailio, ua: &Ua, tag: &str, f: &str, extra: &str) -> i64 {
    ua.register(&format!("X-Tag: {tag}\r\nX-Kemi: {f}\r\n{extra}"));
    let needle = format!("kemi[{tag}] rc=");
    assert!(k.wait_log(&needle, SECS(5)), "{f}: no return code logged:\n{}", k.log_tail(20));
    let log = k.log();
    log.lines().find_map(|l| l.split_once(&needle)).unwrap().1.trim().parse().unwrap()
}

fn ring(ua: &Ua) -> SipMsg {
    let inv = ua.expect_request("INVITE", SECS(5));
    ua.reply(&inv, 180, "Ringing");
    inv
}

#[test]
fn every_kemi_export_does_what_the_readme_says() {
    let k = start();
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    phone.register("");
    // ts_store(): stored under bob.
    let call = alice.invite("bob");
    let inv = ring(&phone);
    assert!(k.wait_log("store rc=1", SECS(5)));
    let out = k.kamcmd(&["ts.lookup", "bob"]).unwrap();
    let field = |key: &str| out.lines().find_map(|l| l.trim().strip_prefix(key)).unwrap().trim().to_string();
    let (index, label) = (field("Tindex:"), field("Tlabel:"));
    let ids = format!("X-Tindex: {index}\r\nX-Tlabel: {label}\r\n");

    // ts_append: a new device rings; an AoR with nothing stored: -2; an empty table: -1.
    let tablet = Ua::new("bob", k.port);
    assert_eq!(kemi(&k, &tablet, "t1", "ts_append", ""), 1);
    let tinv = ring(&tablet);
    assert_eq!(tinv.call_id(), call.call_id);
    let carol = Ua::new("carol", k.port);
    assert_eq!(kemi(&k, &carol, "t2", "ts_append", ""), -2);
    assert_eq!(kemi(&k, &Ua::new("dave", k.port), "t3", "ts_append_empty_table", ""), -1);
    assert!(k.wait_log("invalid table name", SECS(2)));

    // ts_append_to(index, label, table): the new device rings; ts_append_to_uri with carol's
    // URI rings carol's desk (registered above) with bob's call.
    let laptop = Ua::new("bob", k.port);
    assert_eq!(kemi(&k, &laptop, "t4", "ts_append_to", &ids), 1);
    let linv = ring(&laptop);
    assert_eq!(kemi(&k, &Ua::new("dave", k.port), "t5", "ts_append_to_uri", &format!("{ids}X-Uri: sip:carol@127.0.0.1\r\n")), 1);
    let cinv = ring(&carol);
    assert_eq!(cinv.call_id(), call.call_id);
    assert_eq!(kemi(&k, &Ua::new("dave", k.port), "t6", "ts_append_to", "X-Tindex: 1\r\nX-Tlabel: 1\r\n"), -1);

    // ts_append_by_contact(table, ruri): only the registering device; with a contact URI, only
    // that one.
    let watch = Ua::new("bob", k.port);
    let desk = Ua::new("bob", k.port);
    desk.register("");
    assert_eq!(kemi(&k, &watch, "t7", "ts_append_by_contact", ""), 1);
    let winv = ring(&watch);
    desk.expect_no_request("INVITE", MS(200));
    assert_eq!(kemi(&k, &Ua::new("bob", k.port), "t8", "ts_append_by_contact_uri", &format!("X-Contact: {}\r\n", desk.contact_uri())), 1);
    let dinv = ring(&desk);

    // ts_append_branches(uri): the script's own branch.
    let pager = Ua::new("pager", k.port);
    assert_eq!(kemi(&k, &Ua::new("bob", k.port), "t9", "ts_append_branches", &format!("X-Contact: {}\r\n", pager.contact_uri())), 1);
    let pinv = ring(&pager);
    assert_eq!(pinv.call_id(), call.call_id);

    // Phone, tablet, laptop, carol, watch, desk, pager: six appended branches.
    k.expect_stat("tsilo:added_branches", 6);
    alice.cancel(&call);
    for (ua, inv) in [(&phone, &inv), (&tablet, &tinv), (&laptop, &linv), (&carol, &cinv), (&watch, &winv), (&desk, &dinv), (&pager, &pinv)] {
        ua.answer_cancel(inv, SECS(5));
    }
    assert_eq!(alice.final_reply("INVITE", SECS(5)).status(), Some(487));
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));

    // ts_store_uri(uri): stored under the URI's AoR, not the R-URI's.
    let _call = alice.call("INVITE", "bob", "X-Store-Uri: sip:robert@127.0.0.1\r\n");
    let _ = ring(&phone);
    assert!(k.kamcmd(&["ts.lookup", "robert"]).is_ok());
    assert!(k.kamcmd(&["ts.lookup", "bob"]).is_err());
}
