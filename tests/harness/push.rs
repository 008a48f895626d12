//! An HTTP push gateway stub standing in for APNs/FCM: records each push body, answers a
//! fixed status.

use super::{settle, Kamailio, Ua, MS, SECS};
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

    /// The pushes asked for `user`, in order.
    pub fn pushes_for(&self, user: &str) -> Vec<String> {
        let needle = format!("\"user\":\"{user}\"");
        self.pushes.lock().unwrap().iter().filter(|p| p.contains(&needle)).cloned().collect()
    }

    /// Waits until `n` pushes were asked for `user`; returns them (fewer after 5 s).
    pub fn wait_pushes(&self, user: &str, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + SECS(5);
        while self.pushes_for(user).len() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(MS(20));
        }
        self.pushes_for(user)
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

/// A device of an RFC 8599 app: it registers with its push provider, token (pn-prid) and
/// pn-param in its Contact URI and, if given, a +sip.instance. `wake` is the same device after a
/// push, registering from a new address (a new socket), as a woken app does.
pub struct Device {
    pub ua: Ua,
    pub provider: String,
    pub prid: String,
    pub param: String,
    pub instance: Option<String>,
}

impl Device {
    pub fn new(user: &str, proxy: u16, provider: &str, prid: &str, param: &str, instance: Option<&str>) -> Device {
        let uri = format!(";pn-provider={provider};pn-prid={prid}{}", if param.is_empty() { String::new() } else { format!(";pn-param={param}") });
        let header = instance.map(|i| format!(";+sip.instance=\"<urn:uuid:{i}>\"")).unwrap_or_default();
        Device {
            ua: Ua::with_contact(user, proxy, &uri, &header),
            provider: provider.into(),
            prid: prid.into(),
            param: param.into(),
            instance: instance.map(str::to_string),
        }
    }

    /// This device at a new address: same user, provider, prid, param and instance.
    pub fn wake(&self) -> Device {
        Device::new(&self.ua.user, self.ua.proxy, &self.provider, &self.prid, &self.param, self.instance.as_deref())
    }

    /// Whether `push` (a push body) is for this device, with its provider, prid and param, for
    /// the call `call_id`.
    pub fn is_pushed_by(&self, push: &str, call_id: &str) -> bool {
        [("provider", &self.provider), ("prid", &self.prid), ("param", &self.param), ("call_id", &call_id.to_string())]
            .iter()
            .all(|(k, v)| push.contains(&format!("\"{k}\":\"{v}\"")))
    }
}

/// The demo's first call on an example config with `push` as its gateway: bob's phone (no pn
/// parameters) is reachable and rings; his tablet (pn parameters) is asleep, is pushed once,
/// wakes, registers from a new address, gets one branch of the call there (none at its old
/// address) and answers; the call ends and leaves the silo.
pub fn woken_device_answers(k: &Kamailio, push: &PushStub) {
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Device::new("bob", k.port, "apns", "tablet-token", "team.app.voip", Some("6e5b3c43-bob-tablet"));
    assert_eq!(phone.register("").status(), Some(200));
    assert_eq!(tablet.ua.register("").status(), Some(200));
    settle();
    let call = alice.invite("bob");
    let phone_inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&phone_inv, 180, "Ringing");
    let pushes = push.wait_pushes("bob", 1);
    assert!(pushes.len() == 1 && tablet.is_pushed_by(&pushes[0], &call.call_id), "{pushes:?}");
    assert!(k.wait_stat("tsilo:stored_transactions", 1, SECS(5)));
    let woken = tablet.wake();
    assert_eq!(woken.ua.register("").status(), Some(200));
    let inv = woken.ua.expect_request("INVITE", SECS(5));
    assert_eq!(inv.call_id(), call.call_id);
    woken.ua.reply(&inv, 200, "OK");
    phone.answer_cancel(&phone_inv, SECS(5));
    let ok = alice.final_reply("INVITE", SECS(5));
    assert_eq!(ok.status(), Some(200));
    alice.hangup_via(&call, &ok, &woken.ua);
    tablet.ua.expect_no_request("INVITE", MS(100));
    assert_eq!(push.pushes_for("bob").len(), 1);
    k.expect_stat("tsilo:added_branches", 1);
    assert!(k.wait_stat("tsilo:stored_transactions", 0, SECS(15)));
}
