//! A SIP load generator for late-forking calls, on three UDP sockets and one thread: callers,
//! the devices awake when the call starts (d1), and the devices that register while it rings
//! (d2). Every user `u<N>` has one d1 and one d2 contact; messages are told apart by Call-ID.
//!
//! One late-fork call: caller INVITE -> d1 rings (180) -> d2 REGISTERs (the push woke it) ->
//! Kamailio appends a branch -> d2 answers 200 -> Kamailio cancels d1 -> caller ACK, BYE ->
//! d2 un-registers (so the next call to that user finds it asleep again).

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// d2 registers after d1 rings, gets the appended branch and answers; caller hangs up.
    LateFork,
    /// Like LateFork, but d1 re-registers (refresh) first: it must not get a second branch.
    ReRegister,
    /// The caller cancels while d1 rings, before anyone registers: 487, no branch.
    CallerCancel,
    /// Nobody answers: the caller gets 408 when fr_inv_timer fires.
    Timeout,
    /// d1 rings until the test cancels it (for memory and append-scaling measurements).
    Hold,
    /// Two LateFork calls to the same user at once: one REGISTER appends to both.
    Pair,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Pending,
    Done,
    Failed(String),
}

struct CallState {
    aor: usize,
    scenario: Scenario,
    started: Instant,
    branch: String,
    d1_branches: HashSet<String>,
    d1_invite: Option<String>,
    d2_invite: Option<String>,
    d2_register_sent: Option<Instant>,
    rung: bool,
    cancel_sent: bool,
    outcome: Outcome,
}

pub struct Engine {
    proxy: SocketAddr,
    /// Where d2 (the late device) registers: another node of a cluster, or the same proxy.
    pub d2_registrar: SocketAddr,
    caller: UdpSocket,
    d1: UdpSocket,
    d2: UdpSocket,
    run: u32,
    calls: Vec<CallState>,
    active_per_aor: Vec<u32>,
    pending: usize,
    /// REGISTER of d2 sent -> appended INVITE received at d2.
    pub latencies: Vec<Duration>,
    /// Every INVITE d2 received, with its arrival time (append-scaling measurement).
    pub d2_invites: Vec<(usize, Instant)>,
    pub register_failures: u64,
    pub registers_ok: u64,
    pub call_timeout: Duration,
    /// Per user and device: usrloc wants a growing CSeq for one Call-ID.
    register_cseq: Vec<[u32; 2]>,
    /// Parked INVITEs (stored and suspended by the bench config) that got their 100.
    pub parked: usize,
    /// d2 REGISTERs to send: (when, call). A device wakes a while after its push; registering
    /// within microseconds of the relay would race TM's own t_relay in another worker.
    wakes: std::collections::VecDeque<(Instant, usize)>,
    pub wake_delay: Duration,
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_nonblocking(true).unwrap();
    let size: libc::c_int = 8 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: sets a socket option on our own fd with a valid int.
        unsafe {
            libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, opt, &size as *const _ as *const libc::c_void, 4);
        }
    }
    s
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or(msg);
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn headers<'a>(msg: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let head = msg.split("\r\n\r\n").next().unwrap_or(msg);
    head.split("\r\n").skip(1).filter_map(move |l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn status(msg: &str) -> Option<u16> {
    msg.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

fn method(msg: &str) -> &str {
    msg.split(' ').next().unwrap_or("")
}

fn cseq_method(msg: &str) -> &str {
    header(msg, "CSeq").and_then(|c| c.split_whitespace().nth(1)).unwrap_or("")
}

fn via_branch(msg: &str) -> String {
    header(msg, "Via").and_then(|v| v.split(";branch=").nth(1)).map(|b| b.split(';').next().unwrap().to_string()).unwrap_or_default()
}

impl Engine {
    pub fn new(proxy_port: u16, users: usize, run: u32) -> Engine {
        Engine {
            proxy: SocketAddr::from(([127, 0, 0, 1], proxy_port)),
            d2_registrar: SocketAddr::from(([127, 0, 0, 1], proxy_port)),
            caller: socket(),
            d1: socket(),
            d2: socket(),
            run,
            calls: Vec::new(),
            active_per_aor: vec![0; users],
            pending: 0,
            latencies: Vec::new(),
            d2_invites: Vec::new(),
            register_failures: 0,
            registers_ok: 0,
            call_timeout: Duration::from_secs(20),
            register_cseq: vec![[0; 2]; users],
            parked: 0,
            wakes: Default::default(),
            wake_delay: Duration::from_millis(20),
        }
    }

    pub fn users(&self) -> usize {
        self.active_per_aor.len()
    }

    fn port(s: &UdpSocket) -> u16 {
        s.local_addr().unwrap().port()
    }

    fn send(&self, sock: &UdpSocket, text: &str) {
        self.send_to(sock, text, self.proxy);
    }

    fn send_to(&self, sock: &UdpSocket, text: &str, to: SocketAddr) {
        // Loopback with big buffers: a full buffer is brief, so wait it out rather than lose it.
        for _ in 0..10_000 {
            match sock.send_to(text.as_bytes(), to) {
                Ok(_) => return,
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("send: {e}"),
            }
        }
    }

    fn register(&mut self, device: u8, aor: usize, expires: u32) {
        self.register_cseq[aor][device as usize - 1] += 1;
        let n = self.register_cseq[aor][device as usize - 1];
        let (sock, tag) = if device == 1 { (&self.d1, "d1") } else { (&self.d2, "d2") };
        let port = Self::port(sock);
        let text = format!(
            "REGISTER sip:127.0.0.1:{pp} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{tag}r{aor}x{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:u{aor}@127.0.0.1>;tag={tag}{aor}\r\nTo: <sip:u{aor}@127.0.0.1>\r\n\
             Call-ID: reg-{tag}-{aor}-{run}\r\nCSeq: {n} REGISTER\r\nContact: <sip:u{aor}@127.0.0.1:{port}>\r\n\
             Expires: {expires}\r\nContent-Length: 0\r\n\r\n",
            pp = self.proxy.port(),
            run = self.run,
        );
        let to = if device == 2 { self.d2_registrar } else { self.proxy };
        self.send_to(sock, &text, to);
    }

    /// Registers every user's d1 (awake device); returns when all are confirmed.
    pub fn register_all_d1(&mut self, per_second: f64) -> Result<(), String> {
        let start = Instant::now();
        let target = self.registers_ok + self.users() as u64;
        let mut sent = 0;
        while self.registers_ok + self.register_failures < target {
            let due = (start.elapsed().as_secs_f64() * per_second) as usize;
            while sent < self.users() && sent <= due {
                self.register(1, sent, 3600);
                sent += 1;
            }
            self.pump(Duration::from_millis(1));
            if start.elapsed() > Duration::from_secs(120) {
                return Err("registrations did not complete".into());
            }
        }
        if self.register_failures > 0 {
            return Err(format!("{} registrations failed", self.register_failures));
        }
        Ok(())
    }

    /// Starts a call to user `aor`.
    pub fn start_call(&mut self, aor: usize, scenario: Scenario, store: bool) -> usize {
        let n = self.calls.len();
        let branch = format!("z9hG4bKc{n}x{}", self.run);
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let text = format!(
            "INVITE sip:u{aor}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=c{n}\r\nTo: <sip:u{aor}@127.0.0.1>\r\n\
             Call-ID: call-{n}-{run}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{port}>\r\n\
             X-Store: {store}\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            port = Self::port(&self.caller),
            run = self.run,
            store = if store { "yes" } else { "no" },
            len = sdp.len()
        );
        self.calls.push(CallState {
            aor,
            scenario,
            started: Instant::now(),
            branch,
            d1_branches: HashSet::new(),
            d1_invite: None,
            d2_invite: None,
            d2_register_sent: None,
            rung: false,
            cancel_sent: false,
            outcome: Outcome::Pending,
        });
        self.active_per_aor[aor] += 1;
        self.pending += 1;
        self.send(&self.caller, &text);
        n
    }

    pub fn is_busy(&self, aor: usize) -> bool {
        self.active_per_aor[aor] > 0
    }

    pub fn rung(&self, call: usize) -> bool {
        self.calls[call].rung
    }

    fn finish(&mut self, call: usize, outcome: Outcome) {
        let c = &mut self.calls[call];
        if c.outcome != Outcome::Pending {
            return;
        }
        c.outcome = outcome;
        self.active_per_aor[c.aor] -= 1;
        self.pending -= 1;
    }

    /// The caller cancels a ringing call (Hold calls at the end of a measurement).
    pub fn cancel(&mut self, call: usize) {
        let c = &mut self.calls[call];
        if c.cancel_sent || c.outcome != Outcome::Pending {
            return;
        }
        c.cancel_sent = true;
        let text = format!(
            "CANCEL sip:u{aor}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=c{call}\r\nTo: <sip:u{aor}@127.0.0.1>\r\n\
             Call-ID: call-{call}-{run}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
            aor = c.aor,
            port = Self::port(&self.caller),
            branch = c.branch,
            run = self.run
        );
        self.send(&self.caller, &text);
    }

    /// Parks `count` INVITEs to users `p<i>` (no device): the bench config stores and suspends
    /// them, so they fill the silo without any SIP peer. Returns when all are parked.
    pub fn park(&mut self, count: usize, per_second: f64) -> Result<(), String> {
        let start = Instant::now();
        let port = Self::port(&self.caller);
        let target = self.parked + count;
        for i in 0..count {
            let text = format!(
                "INVITE sip:p{i}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKp{i}x{run};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=p{i}\r\nTo: <sip:p{i}@127.0.0.1>\r\n\
                 Call-ID: park-{i}-{run}\r\nCSeq: 1 INVITE\r\nX-Park: yes\r\nContent-Length: 0\r\n\r\n",
                run = self.run
            );
            self.send(&self.caller, &text);
            let due = start + Duration::from_secs_f64(i as f64 / per_second);
            while Instant::now() < due {
                self.pump(Duration::from_millis(1));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.parked < target {
            if Instant::now() > deadline {
                return Err(format!("only {} of {count} INVITEs parked", self.parked + count - target));
            }
            self.pump(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Sends d2's REGISTER for a user now (append-scaling measurement).
    pub fn wake_d2(&mut self, aor: usize) -> Instant {
        self.register(2, aor, 3600);
        Instant::now()
    }

    pub fn unregister_d2(&mut self, aor: usize) {
        self.register(2, aor, 0);
    }

    fn call_of(&self, msg: &str) -> Option<usize> {
        let id = header(msg, "Call-ID")?.strip_prefix("call-")?;
        let (n, run) = id.split_once('-')?;
        (run.parse::<u32>().ok()? == self.run).then_some(())?;
        let n: usize = n.parse().ok()?;
        (n < self.calls.len()).then_some(n)
    }

    fn reply(&self, sock: &UdpSocket, req: &str, code: u16, reason: &str, totag: &str, contact_port: u16, aor: usize) {
        let mut text = format!("SIP/2.0 {code} {reason}\r\n");
        for v in headers(req, "Via") {
            text += &format!("Via: {v}\r\n");
        }
        for name in ["From", "Call-ID", "CSeq"] {
            text += &format!("{name}: {}\r\n", header(req, name).unwrap_or(""));
        }
        let to = header(req, "To").unwrap_or("");
        if code > 100 && !to.contains("tag=") {
            text += &format!("To: {to};tag={totag}\r\n");
        } else {
            text += &format!("To: {to}\r\n");
        }
        if code == 200 && method(req) == "INVITE" {
            for rr in headers(req, "Record-Route") {
                text += &format!("Record-Route: {rr}\r\n");
            }
        }
        text += &format!("Contact: <sip:u{aor}@127.0.0.1:{contact_port}>\r\nContent-Length: 0\r\n\r\n");
        self.send(sock, &text);
    }

    /// Receives and handles whatever arrived, waiting up to `wait` for the first packet.
    pub fn pump(&mut self, wait: Duration) {
        let mut fds = [&self.caller, &self.d1, &self.d2].map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        // SAFETY: polls our own three sockets.
        unsafe { libc::poll(fds.as_mut_ptr(), 3, wait.as_millis() as i32) };
        let mut buf = vec![0u8; 65536];
        for which in 0..3 {
            loop {
                let sock = [&self.caller, &self.d1, &self.d2][which];
                let n = match sock.recv(&mut buf) {
                    Ok(n) => n,
                    Err(_) => break,
                };
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                match which {
                    0 => self.on_caller(&msg),
                    1 => self.on_device(1, &msg),
                    _ => self.on_device(2, &msg),
                }
            }
        }
        self.wake_due();
        self.expire();
    }

    /// Sends the d2 REGISTERs that are due.
    fn wake_due(&mut self) {
        let now = Instant::now();
        while let Some(&(due, call)) = self.wakes.front() {
            if due > now {
                break;
            }
            self.wakes.pop_front();
            let aor = self.calls[call].aor;
            self.calls[call].d2_register_sent = Some(Instant::now());
            self.register(2, aor, 3600);
        }
    }

    fn expire(&mut self) {
        if self.pending == 0 {
            return;
        }
        let timeout = self.call_timeout;
        let late: Vec<usize> = self
            .calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.outcome == Outcome::Pending && c.scenario != Scenario::Hold && c.started.elapsed() > timeout)
            .map(|(i, _)| i)
            .collect();
        for i in late {
            let c = &self.calls[i];
            let why = format!(
                "no final outcome in time (d1 rang: {}, d2 registered: {}, d2 got INVITE: {}, cancel sent: {})",
                c.rung,
                c.d2_register_sent.is_some(),
                c.d2_invite.is_some(),
                c.cancel_sent
            );
            self.finish(i, Outcome::Failed(why));
        }
    }

    fn on_caller(&mut self, msg: &str) {
        if header(msg, "Call-ID").is_some_and(|c| c.starts_with("park-")) {
            if status(msg) == Some(100) && msg.starts_with("SIP/2.0 100 Parked") {
                self.parked += 1;
            }
            return;
        }
        let Some(call) = self.call_of(msg) else { return };
        let Some(code) = status(msg) else { return };
        let port = Self::port(&self.caller);
        match cseq_method(msg) {
            "INVITE" if code == 180 => {
                if self.calls[call].scenario == Scenario::CallerCancel && !self.calls[call].cancel_sent {
                    self.cancel(call);
                }
            }
            "INVITE" if code == 200 => {
                // ACK and BYE along the Record-Route, to the answering device.
                let c = &self.calls[call];
                let to = header(msg, "To").unwrap_or("");
                let target = header(msg, "Contact").unwrap_or("").trim_start_matches('<').split('>').next().unwrap_or("").to_string();
                let route: Vec<&str> = headers(msg, "Record-Route").collect();
                let route = if route.is_empty() { String::new() } else { format!("Route: {}\r\n", route.join(", ")) };
                for (cseq, m) in [(1, "ACK"), (2, "BYE")] {
                    let text = format!(
                        "{m} {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{m}{call}x{run};rport\r\n\
                         Max-Forwards: 70\r\n{route}From: <sip:caller@127.0.0.1>;tag=c{call}\r\nTo: {to}\r\n\
                         Call-ID: call-{call}-{run}\r\nCSeq: {cseq} {m}\r\nContent-Length: 0\r\n\r\n",
                        run = self.run
                    );
                    self.send(&self.caller, &text);
                }
                let _ = c;
            }
            "INVITE" if code >= 300 => {
                // Hop-by-hop ACK for a negative final reply.
                let c = &self.calls[call];
                let text = format!(
                    "ACK sip:u{aor}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=c{call}\r\nTo: {to}\r\n\
                     Call-ID: call-{call}-{run}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                    aor = c.aor,
                    branch = c.branch,
                    to = header(msg, "To").unwrap_or(""),
                    run = self.run
                );
                self.send(&self.caller, &text);
                let expected = match c.scenario {
                    Scenario::CallerCancel | Scenario::Hold => code == 487,
                    Scenario::Timeout => code == 408,
                    Scenario::LateFork | Scenario::ReRegister | Scenario::Pair => false,
                };
                let outcome = if expected { Outcome::Done } else { Outcome::Failed(format!("final {code}")) };
                self.finish(call, outcome);
            }
            "BYE" if code >= 200 => {
                let c = &self.calls[call];
                let outcome = if code != 200 {
                    Outcome::Failed(format!("BYE {code}"))
                } else if c.scenario == Scenario::ReRegister && c.d1_branches.len() != 1 {
                    Outcome::Failed(format!("d1 got {} INVITE branches", c.d1_branches.len()))
                } else {
                    Outcome::Done
                };
                let aor = c.aor;
                self.finish(call, outcome);
                // The device goes back to sleep once no call to its user is left (a Pair's
                // second call may still be waiting for its branch).
                if self.active_per_aor[aor] == 0 {
                    self.unregister_d2(aor);
                }
            }
            _ => {}
        }
    }

    fn on_device(&mut self, device: u8, msg: &str) {
        let port = Self::port(if device == 1 { &self.d1 } else { &self.d2 });
        if let Some(code) = status(msg) {
            if cseq_method(msg) == "REGISTER" && code >= 200 {
                if code == 200 {
                    self.registers_ok += 1;
                } else {
                    self.register_failures += 1;
                }
            }
            return;
        }
        let m = method(msg).to_string();
        let sock = if device == 1 { &self.d1 } else { &self.d2 };
        let Some(call) = self.call_of(msg) else {
            if m != "ACK" {
                self.reply(sock, msg, 481, "Call Does Not Exist", "x", port, 0);
            }
            return;
        };
        let aor = self.calls[call].aor;
        let tag = if device == 1 { "d1" } else { "d2" };
        match m.as_str() {
            "INVITE" if device == 1 => {
                self.reply(sock, msg, 180, "Ringing", tag, port, aor);
                let branch = via_branch(msg);
                let c = &mut self.calls[call];
                let first = c.d1_invite.is_none();
                c.d1_branches.insert(branch);
                c.d1_invite = Some(msg.to_string());
                c.rung = true;
                if first {
                    match c.scenario {
                        Scenario::LateFork | Scenario::Pair => self.wakes.push_back((Instant::now() + self.wake_delay, call)),
                        Scenario::ReRegister => {
                            self.register(1, aor, 3600);
                            self.wakes.push_back((Instant::now() + self.wake_delay, call));
                        }
                        _ => {}
                    }
                }
            }
            "INVITE" => {
                let now = Instant::now();
                self.d2_invites.push((call, now));
                let c = &mut self.calls[call];
                if let (None, Some(sent)) = (&c.d2_invite, c.d2_register_sent) {
                    self.latencies.push(now - sent);
                }
                c.d2_invite = Some(msg.to_string());
                let answer = matches!(c.scenario, Scenario::LateFork | Scenario::ReRegister | Scenario::Pair);
                self.reply(sock, msg, 180, "Ringing", tag, port, aor);
                if answer {
                    self.reply(sock, msg, 200, "OK", tag, port, aor);
                }
            }
            "CANCEL" => {
                self.reply(sock, msg, 200, "OK", tag, port, aor);
                let c = &self.calls[call];
                let invite = if device == 1 { c.d1_invite.clone() } else { c.d2_invite.clone() };
                if let Some(inv) = invite {
                    self.reply(sock, &inv, 487, "Request Terminated", tag, port, aor);
                }
            }
            "BYE" => self.reply(sock, msg, 200, "OK", tag, port, aor),
            _ => {} // ACK
        }
    }

    /// Offers `total` calls at `rate` per second, over users not already in a call; pumps until
    /// every call has an outcome. `pick` chooses each call's scenario.
    pub fn run_load(&mut self, rate: f64, total: usize, store: bool, pick: impl Fn(usize) -> Scenario) -> LoadResult {
        let first = self.calls.len();
        let start = Instant::now();
        let mut started = 0;
        let mut next_aor = 0;
        let users = self.users();
        while started < total || self.pending > 0 {
            let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(total);
            while started < due {
                let mut tries = 0;
                while self.is_busy(next_aor % users) && tries < users {
                    next_aor += 1;
                    tries += 1;
                }
                if tries == users {
                    break; // every user is in a call: offer more when one ends
                }
                let scenario = pick(started);
                self.start_call(next_aor % users, scenario, store);
                if scenario == Scenario::Pair && started + 1 < total {
                    self.start_call(next_aor % users, scenario, store);
                    started += 1;
                }
                next_aor += 1;
                started += 1;
            }
            self.pump(Duration::from_millis(1));
            if start.elapsed() > Duration::from_secs(3600) {
                break;
            }
        }
        let elapsed = start.elapsed();
        let calls = &self.calls[first..];
        let mut failures: Vec<String> = calls
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match &c.outcome {
                Outcome::Failed(why) => Some(format!("call {} ({:?}): {why}", first + i, c.scenario)),
                _ => None,
            })
            .collect();
        failures.truncate(20);
        LoadResult {
            completed: calls.iter().filter(|c| c.outcome == Outcome::Done).count(),
            failed: calls.iter().filter(|c| matches!(c.outcome, Outcome::Failed(_))).count(),
            elapsed,
            failures,
        }
    }

    /// Starts `n` calls that ring until cancelled, and waits until all ring.
    pub fn hold_calls(&mut self, aors: impl Iterator<Item = usize>, store: bool, per_second: f64) -> Result<Vec<usize>, String> {
        let start = Instant::now();
        let mut ids = Vec::new();
        for aor in aors {
            ids.push(self.start_call(aor, Scenario::Hold, store));
            let due = start + Duration::from_secs_f64(ids.len() as f64 / per_second);
            while Instant::now() < due {
                self.pump(Duration::from_millis(1));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while ids.iter().any(|&c| !self.rung(c)) {
            if Instant::now() > deadline {
                return Err("held calls did not all ring".into());
            }
            self.pump(Duration::from_millis(5));
        }
        Ok(ids)
    }

    /// Cancels held calls and waits for their 487s.
    pub fn release(&mut self, ids: &[usize]) -> Result<(), String> {
        for (i, &c) in ids.iter().enumerate() {
            self.cancel(c);
            if i % 200 == 199 {
                self.pump(Duration::from_millis(1));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while ids.iter().any(|&c| self.calls[c].outcome == Outcome::Pending) {
            if Instant::now() > deadline {
                return Err("held calls were not all released".into());
            }
            self.pump(Duration::from_millis(5));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct LoadResult {
    pub completed: usize,
    pub failed: usize,
    pub elapsed: Duration,
    pub failures: Vec<String>,
}
