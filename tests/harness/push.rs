//! An HTTP push gateway stub standing in for APNs/FCM: records each push body, answers a
//! fixed status.

use super::{Kamailio, Ua, MS, SECS};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// An HTTP push gateway stub: records each push body, answers `status`.
pub struct PushStub {
    pub port: u16,
    pushes: Arc<Mutex<Vec<String>>>,
}

impl PushStub {
    pub fn start() -> PushStub {
        PushStub::answering(200)
    }

    pub fn answering(status: u16) -> PushStub {
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
                    let reply = format!("HTTP/1.1 {status} Status\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
                    let _ = stream.write_all(reply.as_bytes());
                }
            }
        });
        PushStub { port, pushes }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/push", self.port)
    }

    pub fn count(&self, user: &str) -> usize {
        let needle = format!("\"user\":\"{user}\"");
        self.pushes.lock().unwrap().iter().filter(|p| p.contains(&needle)).count()
    }

    pub fn wait_push(&self, user: &str) -> bool {
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

/// The demo's first call, on a Kamailio running an example config with `push` as its gateway:
/// bob's phone is registered and rings; the push wakes his tablet, which registers, gets a branch
/// of the same call (one appended branch) and answers; the call ends and leaves the silo.
pub fn woken_device_answers(k: &Kamailio, push: &PushStub) {
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    assert_eq!(phone.register("").status(), Some(200));
    let call = alice.invite("bob");
    let phone_inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&phone_inv, 180, "Ringing");
    assert!(push.wait_push("bob"), "no push for bob");
    assert!(k.wait_stat("tsilo:stored_transactions", 1, SECS(5)));
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
}
