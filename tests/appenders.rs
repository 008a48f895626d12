//! Appends from every kind of process (a SIP worker's ts_append, the auto-append process, the
//! RPC process's ts.append, a resume route run from the auto-append process), with a config like
//! a deployment's: the branch route queries a database through sqlops, which only works in a
//! process where sqlops' child_init ran. And what one append leaves in a process must never
//! reach the next: the destination set, XAVPs, memory.

mod harness;
use harness::*;

const CFG: &str = include_str!("configs/appenders.cfg");

/// A db_text database with one table, `tags`, whose one row the branch route reads.
fn database(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("version"), "table_name(str) table_version(int)\ntags:1\n").unwrap();
    std::fs::write(dir.join("tags"), "id(int,auto) tag(str)\n1:from-db\n").unwrap();
}

fn start(defines: &[&str], use_domain: bool) -> Kamailio {
    let db = std::env::temp_dir().join(format!("tsilo-db-{}-{}", std::process::id(), free_port()));
    database(&db);
    let head: String = defines.iter().map(|d| format!("#!define {d}\n")).collect();
    let cfg = CFG.replace("{DIR}/db", db.to_str().unwrap()).replace("{USE_DOMAIN}", if use_domain { "1" } else { "0" });
    Kamailio::start(&(head + &cfg))
}

/// Lines a healthy run never logs.
fn trouble(k: &Kamailio) -> Vec<String> {
    k.log()
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("CRITICAL") || l.contains("BUG") || l.contains("no database answer"))
        .map(String::from)
        .collect()
}

fn assert_tagged(inv: &SipMsg, who: &str) {
    assert_eq!(inv.header("X-Tag"), Some("from-db"), "{who}: the branch route's database query did not run:\n{}", inv.raw);
}

const QUIET: &str = "X-Append: none\r\n";

#[test]
fn every_appender_runs_the_branch_route_in_an_initialised_process() {
    // A SIP worker (ts_append in the REGISTER route), then the RPC process (ts.append).
    let mut k = start(&[], false);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    let desk = Ua::new("bob", k.port);
    phone.register("");
    settle(); // else the phone's own ts_append, if late, rings the desk registered below
    let call = alice.invite("bob");
    let inv = phone.expect_request("INVITE", SECS(5));
    assert_tagged(&inv, "relay from a SIP worker");
    phone.reply(&inv, 180, "Ringing");
    tablet.register("");
    let tinv = tablet.expect_request("INVITE", SECS(5));
    assert_tagged(&tinv, "ts_append in a SIP worker");
    tablet.reply(&tinv, 180, "Ringing");
    desk.register(QUIET);
    desk.expect_no_request("INVITE", MS(300));
    k.kamcmd(&["ts.append", "sip:bob@127.0.0.1"]).unwrap();
    let dinv = desk.expect_request("INVITE", SECS(5));
    assert_tagged(&dinv, "ts.append in the RPC process");
    desk.reply(&dinv, 180, "Ringing");
    alice.cancel(&call);
    for (ua, inv) in [(&phone, &inv), (&tablet, &tinv), (&desk, &dinv)] {
        ua.answer_cancel(inv, SECS(5));
    }
    assert_eq!(alice.final_reply("INVITE", SECS(5)).status(), Some(487));
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
    assert!(k.alive());
    assert!(trouble(&k).is_empty(), "{:#?}", trouble(&k));

    // The auto-append process: a branch, and a resume route (t_continue) of a suspended call.
    let mut k = start(&["AUTO_APPEND", "WITH_RESUME"], false);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("carol", k.port);
    let tablet = Ua::new("carol", k.port);
    let _call = alice.invite("carol");
    assert!(k.wait_log("suspended", SECS(5)), "{}", k.log_tail(20));
    phone.register("");
    let inv = phone.expect_request("INVITE", SECS(5));
    assert_tagged(&inv, "resume route run by the auto-append process");
    phone.reply(&inv, 180, "Ringing");
    tablet.register("");
    let tinv = tablet.expect_request("INVITE", SECS(5));
    assert_tagged(&tinv, "auto_append");
    tablet.reply(&tinv, 486, "Busy Here");
    phone.reply(&inv, 486, "Busy Here");
    assert_eq!(alice.final_reply("INVITE", SECS(5)).status(), Some(486));
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
    let ps = k.kamcmd(&["core.psx"]).unwrap();
    assert!(ps.contains("tsilo auto-append"), "{ps}");
    assert!(k.alive());
    assert!(trouble(&k).is_empty(), "{:#?}", trouble(&k));
}

#[test]
fn nothing_of_one_append_reaches_the_next() {
    let k = start(&["WITH_RESUME"], false);
    let alice = Ua::new("alice", k.port);

    // The script's own destination set is not a branch of a stored call.
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    let stray = Ua::new("stray", k.port);
    phone.register("");
    settle();
    let call = alice.invite("bob");
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");
    tablet.register(&format!("X-Dirty: {}\r\n", stray.contact_uri()));
    let tinv = tablet.expect_request("INVITE", SECS(5));
    tablet.reply(&tinv, 180, "Ringing");
    stray.expect_no_request("INVITE", MS(300));

    // ts.append resumes X's suspended call in the RPC process: its resume route's lookup() fills
    // that process's destination set with X's other device. The next ts.append, for Y, must ring
    // Y's devices only.
    let x1 = Ua::new("xavier", k.port);
    let x2 = Ua::new("xavier", k.port);
    let _xcall = alice.invite("xavier");
    assert!(k.wait_log("suspended", SECS(5)));
    x1.register(QUIET);
    x2.register(QUIET);
    k.kamcmd(&["ts.append", "sip:xavier@127.0.0.1"]).unwrap();
    for x in [&x1, &x2] {
        let xi = x.expect_request("INVITE", SECS(5));
        x.reply(&xi, 180, "Ringing");
    }
    let desk = Ua::new("bob", k.port);
    desk.register(QUIET);
    k.kamcmd(&["ts.append", "sip:bob@127.0.0.1"]).unwrap();
    let dinv = desk.expect_request("INVITE", SECS(5));
    assert_eq!(dinv.call_id(), call.call_id);
    desk.reply(&dinv, 180, "Ringing");
    for x in [&x1, &x2] {
        x.expect_no_request("INVITE", MS(300));
    }
    stray.expect_no_request("INVITE", MS(100));
    alice.cancel(&call);
    for (ua, inv) in [(&phone, &inv), (&tablet, &tinv), (&desk, &dinv)] {
        ua.answer_cancel(inv, SECS(5));
    }
}

/// pkg memory in use by the process whose description contains `what` (core.psx, pkg.stats).
fn pkg_used(k: &Kamailio, what: &str) -> i64 {
    let ps = k.kamcmd(&["core.psx"]).unwrap();
    let pid = ps
        .split("{")
        .find(|p| p.contains(what))
        .and_then(|p| p.lines().find_map(|l| l.trim().strip_prefix("PID:").map(|v| v.trim().to_string())))
        .unwrap_or_else(|| panic!("no process {what} in {ps}"));
    let stats = k.kamcmd(&["pkg.stats", "pid", &pid]).unwrap();
    stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("used:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no used: in {stats}"))
}

#[test]
fn memory_of_the_rpc_and_auto_append_processes_stays_flat() {
    // Every lookup puts the contact's attributes (usrloc xavp_contact) into the process's XAVPs
    // (in shm); a SIP worker drops them after each message, our processes after each append.
    let k = start(&["AUTO_APPEND"], false);
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    phone.register("");
    let _call = alice.invite("bob");
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");

    // Each refresh is a usrloc update: the auto-append process looks bob up again (and finds
    // the phone rung already).
    let refresh = |n: usize| {
        for _ in 0..n {
            phone.register("");
        }
        let drained = || k.kamcmd(&["ts.stats"]).unwrap().lines().any(|l| l.trim() == "auto_append_queue: 0");
        let deadline = std::time::Instant::now() + SECS(10);
        while !drained() {
            assert!(std::time::Instant::now() < deadline, "the auto-append queue does not drain");
            std::thread::sleep(MS(20));
        }
    };
    refresh(200);
    let (before, shm_before) = (pkg_used(&k, "auto-append"), k.shm_used());
    refresh(3000);
    let (after, shm_after) = (pkg_used(&k, "auto-append"), k.shm_used());
    assert!(after - before < 16 * 1024, "auto-append process pkg: {before} -> {after} bytes over 3000 appends");
    // XAVPs live in shm: a leak of one per lookup is ~160 bytes x 3000 (timers and usrloc move
    // a few KB meanwhile).
    assert!(shm_after as i64 - (shm_before as i64) < 48 * 1024, "shm: {shm_before} -> {shm_after} bytes over 3000 auto-appends");

    let rpc_appends = |n: usize| {
        for _ in 0..n {
            k.kamcmd(&["ts.append", "sip:bob@127.0.0.1"]).unwrap();
        }
    };
    rpc_appends(50);
    let (before, shm_before) = (pkg_used(&k, "ctl handler"), k.shm_used());
    rpc_appends(1000);
    let (after, shm_after) = (pkg_used(&k, "ctl handler"), k.shm_used());
    assert!(after - before < 16 * 1024, "RPC process pkg: {before} -> {after} bytes over 1000 appends");
    assert!(shm_after as i64 - (shm_before as i64) < 48 * 1024, "shm: {shm_before} -> {shm_after} bytes over 1000 ts.append");
    phone.expect_no_request("INVITE", MS(100));
    assert!(trouble(&k).is_empty(), "{:#?}", trouble(&k));
}

#[test]
fn auto_append_uses_the_aor_usrloc_reports_whatever_the_stored_request_uri() {
    for (defines, ruri) in [
        // use_domain: the call is stored under bob@example.com from an R-URI with a port and
        // parameters.
        (&[][..], "sip:bob@example.com:5060;transport=udp"),
        // t_relay() creates the transaction after lookup(): its request's R-URI is the phone's.
        (&["LATE_TRANSACTION"][..], "sip:bob@example.com"),
    ] {
        let defines = [&["AUTO_APPEND"][..], defines].concat();
        let k = start(&defines, true);
        let alice = Ua::new("alice", k.port);
        let phone = Ua::new("bob", k.port);
        let tablet = Ua::new("bob", k.port);
        phone.register_in("example.com", "");
        let call = alice.call_uri("INVITE", ruri, "");
        let inv = phone.expect_request("INVITE", SECS(5));
        phone.reply(&inv, 180, "Ringing");
        // With LATE_TRANSACTION ts_store() runs after t_relay(): the phone may ring first.
        let deadline = std::time::Instant::now() + SECS(2);
        while k.kamcmd(&["ts.lookup", "sip:bob@example.com"]).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(MS(10));
        }
        assert!(k.kamcmd(&["ts.lookup", "sip:bob@example.com"]).is_ok(), "{defines:?}: not stored as bob@example.com");
        tablet.register_in("example.com", "");
        let tinv = tablet.expect_request("INVITE", SECS(5));
        assert_eq!(tinv.call_id(), call.call_id, "{defines:?}");
        tablet.reply(&tinv, 486, "Busy Here");
        phone.reply(&inv, 486, "Busy Here");
        assert_eq!(alice.final_reply("INVITE", SECS(5)).status(), Some(486));
        assert!(trouble(&k).is_empty(), "{defines:?}: {:#?}", trouble(&k));
    }
}

#[test]
fn a_device_whose_address_extends_another_ones_still_rings() {
    // sip:bob@127.0.0.1:5xxx and sip:bob@127.0.0.1:5xxx0: the first is a prefix of the second.
    let k = start(&["AUTO_APPEND"], false);
    let (tablet, phone) = (5000..6500u16)
        .find_map(|p| Some((Ua::on_port("bob", k.port, p)?, Ua::on_port("bob", k.port, p * 10)?)))
        .expect("no free pair of ports P, 10P");
    let alice = Ua::new("alice", k.port);
    phone.register("");
    let _call = alice.invite("bob");
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");
    tablet.register("");
    let tinv = tablet.expect_request("INVITE", SECS(5));
    assert_eq!(tinv.call_id(), inv.call_id());
    tablet.reply(&tinv, 486, "Busy Here");
    phone.reply(&inv, 486, "Busy Here");
    assert_eq!(alice.final_reply("INVITE", SECS(5)).status(), Some(486));
}
