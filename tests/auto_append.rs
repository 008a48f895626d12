//! auto_append: usrloc's contact callbacks append branches with no tsilo call in the script,
//! through the module's own process.

mod harness;
use harness::*;

const CFG: &str = include_str!("configs/tsilo.cfg");

fn start() -> Kamailio {
    let cfg = CFG.replace("{FR_INV}", "30000").replace("{USE_DOMAIN}", "0");
    Kamailio::start(&format!("#!define AUTO_APPEND\n{cfg}"))
}

/// The script appends nothing on REGISTER: everything below is auto-append.
const QUIET: &str = "X-Append: none\r\n";

#[test]
fn new_devices_get_branches_without_script_calls_and_a_reregister_gets_none() {
    let k = start();
    let ps = k.kamcmd(&["core.psx"]).unwrap();
    assert!(ps.contains("tsilo auto-append"), "no auto-append process:\n{ps}");
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    let laptop = Ua::new("bob", k.port);
    phone.register(QUIET);
    let call = alice.invite("bob");
    let phone_inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&phone_inv, 180, "Ringing");

    tablet.register(QUIET);
    let tablet_inv = tablet.expect_request("INVITE", SECS(5));
    assert_eq!(tablet_inv.call_id(), phone_inv.call_id());
    tablet.reply(&tablet_inv, 180, "Ringing");
    // The tablet refreshes its registration while ringing (usrloc UPDATE): no second branch.
    tablet.register(QUIET);
    phone.register(QUIET);
    tablet.expect_no_request("INVITE", MS(500));
    phone.expect_no_request("INVITE", MS(100));
    k.expect_stat("tsilo:added_branches", 1);

    laptop.register(QUIET);
    let laptop_inv = laptop.expect_request("INVITE", SECS(5));
    k.expect_stat("tsilo:added_branches", 2);
    laptop.reply(&laptop_inv, 200, "OK");
    phone.answer_cancel(&phone_inv, SECS(5));
    tablet.answer_cancel(&tablet_inv, SECS(5));
    let ok = alice.final_reply("INVITE", SECS(5));
    assert_eq!(ok.status(), Some(200));
    alice.hangup_via(&call, &ok, &laptop);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(10)));
    assert!(!k.log().contains("failure to add branches"), "TM was asked for a branch that exists");
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
}

#[test]
fn many_concurrent_calls_and_registrations_no_deadlock() {
    let k = start();
    let port = k.port;
    let users = 12;
    let threads: Vec<_> = (0..users)
        .map(|u| {
            std::thread::spawn(move || {
                let user = format!("user{u}");
                let alice = Ua::new("alice", port);
                let phone = Ua::new(&user, port);
                let tablet = Ua::new(&user, port);
                phone.register(QUIET);
                for _ in 0..3 {
                    tablet.unregister();
                    let call = alice.invite(&user);
                    let inv = phone.expect_request("INVITE", SECS(10));
                    phone.reply(&inv, 180, "Ringing");
                    tablet.register(QUIET);
                    let tinv = tablet.expect_request("INVITE", SECS(10));
                    tablet.reply(&tinv, 200, "OK");
                    phone.answer_cancel(&inv, SECS(10));
                    let ok = alice.final_reply("INVITE", SECS(10));
                    assert_eq!(ok.status(), Some(200), "{user}");
                    alice.hangup_via(&call, &ok, &tablet);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a caller thread failed");
    }
    assert!(k.kamcmd(&["core.version"]).is_ok(), "Kamailio stopped answering");
    k.expect_stat("tsilo:added_branches", 3 * users);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(15)));
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
}

#[test]
fn a_contact_added_by_a_process_without_a_script_gets_its_branch() {
    // ul.add runs in the RPC process: no routing script, no REGISTER. The callback fires there.
    let k = start();
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let desk = Ua::new("bob", k.port);
    phone.register(QUIET);
    let _call = alice.invite("bob");
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");
    let contact = desk.contact_uri();
    k.kamcmd(&["ul.add", "location", "bob", &contact, "3600", "1.0", "s:0", "0", "0", "0"]).unwrap();
    let dinv = desk.expect_request("INVITE", SECS(5));
    assert_eq!(dinv.call_id(), inv.call_id());
    k.expect_stat("tsilo:added_branches", 1);
}
