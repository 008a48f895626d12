//! The example configs (native script and Lua/KEMI) run the push flow end to end: a push
//! gateway stub stands in for APNs/FCM, devices register after their push.

mod harness;
use harness::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// An HTTP push gateway stub: records each push body, answers 200.
struct PushStub {
    port: u16,
    pushes: Arc<Mutex<Vec<String>>>,
}

impl PushStub {
    fn start() -> PushStub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pushes = Arc::new(Mutex::new(Vec::new()));
        let seen = pushes.clone();
        // Lives as long as the test binary; it only ever answers on loopback.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                stream.set_read_timeout(Some(SECS(2))).ok();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let Ok(n) = stream.read(&mut chunk) else { break None };
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                            .unwrap_or(0);
                        if body.len() >= len {
                            break Some(body.to_string());
                        }
                    }
                };
                if let Some(body) = body {
                    seen.lock().unwrap().push(body);
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
                }
            }
        });
        PushStub { port, pushes }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/push", self.port)
    }

    fn wait_push(&self, user: &str) -> bool {
        let needle = format!("\"user\":\"{user}\"");
        let deadline = std::time::Instant::now() + SECS(5);
        while std::time::Instant::now() < deadline {
            if self.pushes.lock().unwrap().iter().any(|p| p.contains(&needle)) {
                return true;
            }
            std::thread::sleep(MS(20));
        }
        false
    }
}

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
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    phone.register("");
    let call = alice.invite("bob");
    let phone_inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&phone_inv, 180, "Ringing");
    assert!(push.wait_push("bob"), "{flavour:?}: no push for bob");
    assert!(k.wait_stat("tsilo:stored_transactions", 1, SECS(5)));
    // The push woke the tablet: it registers and gets its branch.
    tablet.register("");
    let tablet_inv = tablet.expect_request("INVITE", SECS(5));
    assert_eq!(tablet_inv.call_id(), phone_inv.call_id());
    tablet.reply(&tablet_inv, 200, "OK");
    phone.answer_cancel(&phone_inv, SECS(5));
    let ok = alice.final_reply("INVITE", SECS(5));
    assert_eq!(ok.status(), Some(200));
    alice.hangup_via(&call, &ok, &tablet);
    assert_eq!(k.stat("tsilo:added_branches"), 1);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(15)));
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
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

fn a_failed_push_is_answered_480(flavour: Flavour) {
    // Nothing listens on this port: the push cannot be delivered.
    let dead = format!("http://127.0.0.1:{}/push", free_port());
    let k = Kamailio::start(&example(flavour, &dead));
    let alice = Ua::new("alice", k.port);
    let call = alice.invite("dave");
    let r = alice.final_reply("INVITE", SECS(10));
    assert_eq!(r.status(), Some(480), "{}", r.raw);
    alice.ack(&call, &r);
    assert!(k.wait_log("push for dave failed", SECS(2)) || matches!(flavour, Flavour::Lua) && k.log().contains("push for dave failed"));
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
    a_failed_push_is_answered_480(Flavour::Native);
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
    a_failed_push_is_answered_480(Flavour::Lua);
}

#[test]
fn example_configs_pass_kamailio_check() {
    for file in ["examples/kamailio.cfg", "examples/kamailio-lua.cfg"] {
        let (ok, out) = check_config(&manifest_path(file));
        assert!(ok, "kamailio -c -f {file}:\n{out}");
    }
}
