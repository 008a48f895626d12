//! Collisions between an INVITE inside t_relay() in one Kamailio worker and a REGISTER of a new
//! device of the same user appending a branch from another worker (or from the auto-append
//! process, or from another node over DMQ). TM adds t_relay()'s branches without its reply lock
//! while t_append_branches() takes it: unless the module serialises the two, the new device's
//! branch is lost, a device rings twice, TM logs "buffer rewrite attempt" / "BUG: retransmission
//! already started", or a worker crashes (KAMAILIO-NOTES.md, "TM and concurrency").
//!
//! Each round: device 1 of a fresh user is registered; the caller INVITEs the user; device 2
//! REGISTERs at an offset of a few hundred microseconds (swept over the rounds) from separate
//! sockets, so the two packets are taken by different workers. Every device must get exactly one
//! INVITE of the call (distinct top-Via branches; a retransmission repeats its branch). The caller
//! then CANCELs and must get a final reply; the silo must be empty at the end.
//!
//! Environment: TSILO_COLLISIONS (rounds per variant, default 150), TSILO_COLLISION_THREADS
//! (rounds in flight, default 3), TSILO_COLLISION_OFFSETS="min:max" in microseconds (REGISTER
//! sent that long after the INVITE; negative: before), overriding each variant's window.

mod harness;
use harness::*;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CFG: &str = include_str!("configs/collision.cfg");

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    /// t_newtran(); ts_store(); lookup(); t_relay(); REGISTER: save(); ts_append().
    StoreBeforeRelay,
    /// lookup(); t_relay(); ts_store("$tu"); REGISTER: save(); ts_append().
    StoreAfterRelay,
    /// ts_store() before t_relay(); modparam auto_append, the REGISTER route only save()s.
    AutoAppend,
    /// ts_store() before t_relay(); REGISTER: save(); ts_append_by_contact("location", "$tu").
    AppendByContact,
    /// Two nodes (examples/cluster/node.cfg): INVITE to A, device 2 REGISTERs at B, A's
    /// auto_append appends the contact DMQ replicated.
    Cluster,
    /// Store before relay; device 2 sends two REGISTERs at once, after the relay: two workers
    /// append the same new contact to the same call at the same moment.
    TwoRegisters,
    /// The C module's documented order, `lookup(); t_relay(); ts_store();` (no argument: keyed
    /// by the R-URI lookup() rewrote to device 1's contact), usrloc keyed by user only.
    Original,
    /// The same with usrloc keyed by user@domain, the users' domain not the contacts' host.
    OriginalByDomain,
    /// The same in KEMI (Lua), usrloc keyed by domain.
    OriginalKemi,
    /// The same in a failure route, after a first relay got a 486, usrloc keyed by domain.
    FailureRoute,
    /// ts_store(); async_ms_route("RESUME", 5): the async module's process resumes the stored
    /// call (t_continue) and relays it while device 2's REGISTER appends.
    ForeignContinue,
    /// Never stored: the INVITE route publishes its transaction's id in an htable, then
    /// lookup(); t_relay(); REGISTER: save(); ts_append_to(index, label, "location").
    AppendTo,
    /// ts_store(); t_suspend() with resume_route: nobody is registered; devices 1 and 2 register
    /// at once and both appends try to resume the call.
    TwoResumers,
}

impl Variant {
    /// The users' domain in R-URIs and To headers: not the contacts' host (127.0.0.1) where
    /// usrloc keys by domain.
    fn domain(self) -> &'static str {
        match self {
            Variant::OriginalByDomain | Variant::OriginalKemi | Variant::FailureRoute => "example.com",
            _ => "127.0.0.1",
        }
    }

    /// Whether its device 2 is caught up by the store (a store after the relay) rather than
    /// deferred to the end of the storing route.
    fn stores_after_relay(self) -> bool {
        matches!(self, Variant::StoreAfterRelay | Variant::Original | Variant::OriginalByDomain | Variant::OriginalKemi | Variant::FailureRoute)
    }
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The nodes of a variant; `nodes[0]` gets the INVITE (and device 1), `reg_node` device 2.
struct Setup {
    nodes: Vec<Kamailio>,
    reg_node: usize,
}

fn start(variant: Variant) -> Setup {
    let define = match variant {
        Variant::StoreBeforeRelay | Variant::TwoRegisters => "",
        Variant::StoreAfterRelay => "#!define STORE_AFTER\n",
        Variant::AutoAppend => "#!define AUTO_APPEND\n",
        Variant::AppendByContact => "#!define APPEND_CONTACT\n",
        Variant::Original => "#!define ORIGINAL\n",
        Variant::OriginalByDomain => "#!define ORIGINAL\n#!define USE_DOMAIN\n",
        Variant::OriginalKemi => "#!define KEMI\n#!define USE_DOMAIN\n",
        Variant::FailureRoute => "#!define FAILURE\n#!define USE_DOMAIN\n",
        Variant::ForeignContinue => "#!define FOREIGN_CONTINUE\n",
        Variant::TwoResumers => "#!define TWO_RESUMERS\n",
        Variant::AppendTo => "#!define APPEND_TO\n",
        Variant::Cluster => {
            let a = cluster_node(None);
            let b = cluster_node(Some(a.port));
            wait_knows(&a, b.port);
            wait_knows(&b, a.port);
            return Setup { nodes: vec![a, b], reg_node: 1 };
        }
    };
    let lua = manifest_path("tests/configs/collision.lua");
    let cfg = format!("{define}{CFG}").replace("{LUA}", lua.to_str().unwrap());
    Setup { nodes: vec![Kamailio::start(&cfg)], reg_node: 0 }
}

// ---------------- one round ----------------

fn rand_hex() -> String {
    let mut b = [0u8; 8];
    // SAFETY: fills a local buffer.
    unsafe { libc::getrandom(b.as_mut_ptr() as *mut _, 8, 0) };
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn register_text(ua: &Ua, cseq: u32, domain: &str) -> String {
    format!(
        "REGISTER sip:127.0.0.1:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{b};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@{domain}>;tag=r{port}\r\nTo: <sip:{user}@{domain}>\r\n\
         Call-ID: reg-{port}-{user}\r\nCSeq: {cseq} REGISTER\r\nContact: <{contact}>\r\nExpires: 600\r\n\
         Content-Length: 0\r\n\r\n",
        proxy = ua.proxy,
        port = ua.port,
        b = rand_hex(),
        user = ua.user,
        contact = ua.contact_uri()
    )
}

/// An INVITE from `caller` to `user`, built but not sent.
fn invite_text(caller: &Ua, user: &str, domain: &str) -> Call {
    let ruri = format!("sip:{user}@{domain}");
    let to = format!("<{ruri}>");
    let call_id = format!("coll-{}", rand_hex());
    let from_tag = rand_hex();
    let branch = format!("z9hG4bK{}", rand_hex());
    let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let request = format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:{cu}@127.0.0.1>;tag={from_tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <{contact}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{body}",
        port = caller.port,
        cu = caller.user,
        contact = caller.contact_uri(),
        len = body.len()
    );
    Call { request, call_id, from_tag, cseq: 1, branch, ruri, to }
}

fn send_to(sock: &UdpSocket, port: u16, text: &str) {
    sock.send_to(text.as_bytes(), SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
}

fn spin_until(t: Instant) {
    while Instant::now() < t {
        std::hint::spin_loop();
    }
}

fn top_branch(m: &SipMsg) -> String {
    let via = m.header("Via").unwrap_or("");
    let via = via.split(',').next().unwrap_or("");
    via.split(';').find_map(|p| p.trim().strip_prefix("branch=")).unwrap_or("").to_string()
}

/// Waits up to `timeout` for a message on any of `socks`; (index, message).
fn poll_recv(socks: &[&UdpSocket], timeout: Duration) -> Option<(usize, SipMsg)> {
    let mut fds: Vec<libc::pollfd> = socks.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: fds is a valid array of pollfd of the given length.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return None;
    }
    let i = fds.iter().position(|f| f.revents != 0)?;
    let mut buf = [0u8; 65535];
    let (len, from) = socks[i].recv_from(&mut buf).ok()?;
    let m = SipMsg::parse(&String::from_utf8_lossy(&buf[..len]))?;
    Some((i, SipMsg { from_port: from.port(), ..m }))
}

/// A device in a round: the INVITEs of the call it received, by top-Via branch.
#[derive(Default)]
struct Device {
    invites: HashMap<String, SipMsg>,
    /// Branches whose CANCEL it answered.
    cancelled: Vec<String>,
    /// INVITEs of other calls (never expected: users are fresh each round).
    foreign: usize,
}

#[derive(Debug, Default, Clone)]
struct RoundResult {
    round: usize,
    offset_us: i64,
    /// Distinct INVITE branches of the call at device 1 and device 2.
    dev1: usize,
    dev2: usize,
    foreign: usize,
    reg2_status: Option<u16>,
    caller_final: Option<u16>,
    /// The proxy did not answer device 1's REGISTER: it is down.
    proxy_down: bool,
    /// ms from the INVITE leaving the caller to device 1 / device 2 receiving theirs.
    inv1_ms: Option<f64>,
    inv2_ms: Option<f64>,
    /// How long the round took, ms.
    took_ms: u64,
}

impl RoundResult {
    fn ok(&self) -> bool {
        !self.proxy_down && self.dev1 == 1 && self.dev2 == 1 && self.foreign == 0 && self.reg2_status == Some(200) && self.caller_final.is_some()
    }
}

/// Per-round timing: how long device 2 may take to ring after both requests left.
struct Timing {
    ring: Duration,
    /// Device 2 sends its REGISTER twice, back to back.
    twice: bool,
    /// The users' domain.
    domain: &'static str,
    /// Device 1 registers only once the call waits (suspended), at the same time as device 2.
    late_dev1: bool,
}

/// One collision round for user `u{round}`: INVITE to `inv_port`, device 2 REGISTERs at
/// `reg_port` `offset_us` after the INVITE (before it if negative).
fn round(round: usize, inv_port: u16, reg_port: u16, offset_us: i64, timing: &Timing) -> RoundResult {
    let user = format!("u{round}");
    let mut res = RoundResult { round, offset_us, ..Default::default() };
    let caller = Ua::new("caller", inv_port);
    let dev1 = Ua::new(&user, inv_port);
    let dev2 = Ua::new(&user, reg_port);
    let socks = [&caller.sock, &dev1.sock, &dev2.sock];

    // Device 1 registers (and its REGISTER's reply is the proxy's sign of life).
    if !timing.late_dev1 {
        send_to(&dev1.sock, inv_port, &register_text(&dev1, 1, timing.domain));
        let deadline = Instant::now() + SECS(3);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match poll_recv(&socks[1..2], left) {
                Some((_, m)) if m.cseq_method() == "REGISTER" && m.status().is_some_and(|s| s >= 200) => break,
                Some(_) => continue,
                None => {
                    res.proxy_down = true;
                    return res;
                }
            }
        }
        // save() replies before the REGISTER route's ts_append() (or auto_append) has run: let
        // that finish, so that only device 2's REGISTER meets the INVITE.
        std::thread::sleep(MS(10));
    }

    let call = invite_text(&caller, &user, timing.domain);
    let reg2 = register_text(&dev2, 1, timing.domain);
    let t0;
    if timing.late_dev1 {
        // The call waits, suspended, for a device: devices 1 and 2 register `offset_us` apart.
        send_to(&caller.sock, inv_port, &call.request);
        std::thread::sleep(MS(20));
        t0 = Instant::now();
        send_to(&dev1.sock, inv_port, &register_text(&dev1, 1, timing.domain));
        spin_until(t0 + Duration::from_micros(offset_us.unsigned_abs()));
        send_to(&dev2.sock, reg_port, &reg2);
    } else if offset_us >= 0 {
        t0 = Instant::now();
        send_to(&caller.sock, inv_port, &call.request);
        spin_until(t0 + Duration::from_micros(offset_us as u64));
        send_to(&dev2.sock, reg_port, &reg2);
        if timing.twice {
            send_to(&dev2.sock, reg_port, &register_text(&dev2, 2, timing.domain));
        }
    } else {
        let tr = Instant::now();
        send_to(&dev2.sock, reg_port, &reg2);
        t0 = tr + Duration::from_micros((-offset_us) as u64);
        spin_until(t0);
        send_to(&caller.sock, inv_port, &call.request);
    }

    let mut devs = [Device::default(), Device::default()];
    let mut cancel_sent: Option<Instant> = None;
    let ring_deadline = Instant::now() + timing.ring;
    let mut settle: Option<Instant> = None;
    let mut tail: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if cancel_sent.is_none() {
            let both = !devs[0].invites.is_empty() && !devs[1].invites.is_empty() && res.reg2_status.is_some();
            if both && settle.is_none() {
                settle = Some(now + MS(10));
            }
            if settle.is_some_and(|s| now >= s) || now >= ring_deadline {
                caller.cancel(&call);
                cancel_sent = Some(now);
            }
        } else {
            // After the caller's final reply: 20 ms for stray requests once every branch was
            // cancelled, at most 300 ms for CANCELs that a broken branch never gets.
            let all_cancelled = devs.iter().all(|d| d.invites.keys().all(|b| d.cancelled.contains(b)));
            if res.caller_final.is_some() && tail.is_none() {
                tail = Some(now + MS(300));
            }
            if all_cancelled && tail.is_some_and(|t| t > now + MS(20)) {
                tail = Some(now + MS(20));
            }
            if tail.is_some_and(|t| now >= t) || now >= cancel_sent.unwrap() + SECS(6) {
                break;
            }
        }
        let Some((i, m)) = poll_recv(&socks, MS(5)) else { continue };
        match i {
            0 => {
                if m.cseq_method() == "INVITE" && m.status().is_some_and(|s| s >= 200) {
                    res.caller_final.get_or_insert(m.status().unwrap());
                    caller.ack(&call, &m);
                }
            }
            _ => {
                let ua = if i == 1 { &dev1 } else { &dev2 };
                let d = &mut devs[i - 1];
                match m.method() {
                    Some("INVITE") if m.call_id() == call.call_id => {
                        let b = top_branch(&m);
                        if !d.invites.contains_key(&b) {
                            let ms = t0.elapsed().as_secs_f64() * 1000.0;
                            let slot = if i == 1 { &mut res.inv1_ms } else { &mut res.inv2_ms };
                            slot.get_or_insert(ms);
                        }
                        ua.reply(&m, 180, "Ringing");
                        d.invites.insert(b, m);
                    }
                    Some("INVITE") => {
                        d.foreign += 1;
                        ua.reply(&m, 486, "Busy Here");
                    }
                    Some("CANCEL") => {
                        ua.reply(&m, 200, "OK");
                        let b = top_branch(&m);
                        if let Some(inv) = d.invites.get(&b) {
                            ua.reply(inv, 487, "Request Terminated");
                        }
                        if !d.cancelled.contains(&b) {
                            d.cancelled.push(b);
                        }
                    }
                    Some(_) => {}
                    None => {
                        // Two REGISTERs at once: the older CSeq may be refused once the newer is
                        // saved; one 200 is what counts.
                        if i == 2 && m.cseq_method() == "REGISTER" && m.status().is_some_and(|s| s >= 200) && res.reg2_status != Some(200) {
                            res.reg2_status = m.status();
                        }
                    }
                }
            }
        }
    }
    res.took_ms = t0.elapsed().as_millis() as u64;
    res.dev1 = devs[0].invites.len();
    res.dev2 = devs[1].invites.len();
    res.foreign = devs[0].foreign + devs[1].foreign;
    res
}

/// Offsets (µs) for `n` rounds spread over [min, max] by a low-discrepancy sequence, so that
/// any prefix of the rounds (and each thread's share) covers the whole window.
fn offsets(n: usize, min: i64, max: i64) -> Vec<i64> {
    const PHI: f64 = 0.618_033_988_749_894_9;
    (0..n).map(|i| min + ((i as f64 * PHI).fract() * (max - min) as f64).round() as i64).collect()
}

fn window_override() -> Option<(i64, i64)> {
    let v = std::env::var("TSILO_COLLISION_OFFSETS").ok()?;
    let (a, b) = v.split_once(':')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// tsilo:stored_transactions, -1 if the node does not answer RPC.
fn stored(k: &Kamailio) -> i64 {
    match k.kamcmd(&["stats.get_statistics", "tsilo:"]) {
        Ok(out) => out
            .lines()
            .find_map(|l| l.split_once(" = ").filter(|(k, _)| k.trim() == "tsilo:stored_transactions").and_then(|(_, v)| v.trim().parse().ok()))
            .unwrap_or(-1),
        Err(_) => -1,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Lines of a node's log that show TM or the module in trouble.
fn bad_lines(log: &str) -> Vec<String> {
    // Includes TM's "failure to add branches (-1)": TM asked to add only contacts that have a
    // branch already. The module never asks that (docs/design.md, the relay race).
    log.lines()
        .filter(|l| {
            l.contains("CRITICAL")
                || l.replace("DEBUG", "").contains("BUG")
                || l.contains("buffer rewrite")
                || l.contains("already added")
                || l.contains("failure to add branches")
                || (l.contains("ERROR") && l.contains("tm ["))
                || l.contains("SIGSEGV")
                || l.contains("signal 11")
                || l.contains("core dumped")
                || l.contains("core was generated")
                || (l.contains("ERROR") && l.contains("tsilo"))
        })
        .map(String::from)
        .collect()
}

fn run(variant: Variant) {
    let n = env_num("TSILO_COLLISIONS", 150);
    let threads = env_num("TSILO_COLLISION_THREADS", 3).max(1);
    let started = Instant::now();
    let mut setup = start(variant);
    let inv_port = setup.nodes[0].port;
    let reg_port = setup.nodes[setup.reg_node].port;
    let cluster = variant == Variant::Cluster;
    let twice = variant == Variant::TwoRegisters;
    let late_dev1 = variant == Variant::TwoResumers;
    let timing = Timing { ring: if cluster { MS(1500) } else { MS(800) }, twice, domain: variant.domain(), late_dev1 };

    // Calibration: where the two requests' effects land. With a large negative offset device 2
    // is registered (and replicated) long before the INVITE: inv2 - inv1 is then the relay skew;
    // with a large positive one its branch is an append: inv2 - offset is the append latency.
    let (min, max) = if let Some(w) = window_override() {
        w
    } else if cluster {
        // REGISTER 20 ms after the INVITE: device 2's branch is an append, `append` after its
        // REGISTER left. REGISTER 20 ms before: both devices ring from t_relay(), `relay` after
        // the INVITE left (device 1's INVITE is timed only then: the wait precedes the receive).
        let (mut append, mut relay) = (Vec::new(), Vec::new());
        for i in 0..6 {
            let r = round(1_000_000 + 2 * i, inv_port, reg_port, 20_000, &timing);
            append.extend(r.inv2_ms.map(|x| x - 20.0));
            let r = round(1_000_001 + 2 * i, inv_port, reg_port, -20_000, &timing);
            relay.extend(r.inv1_ms);
        }
        assert!(!append.is_empty() && !relay.is_empty(), "calibration: no device rang in the cluster:\n{}", setup.nodes[0].log_tail(40));
        // They meet when the REGISTER leaves append - relay before the INVITE.
        let (append, relay) = (median(append), median(relay));
        let center = ((relay - append) * 1000.0) as i64;
        eprintln!("cluster calibration: append {append:.3} ms after REGISTER, relay {relay:.3} ms after INVITE: center {center} us");
        (center - 1000, center + 1000)
    } else if twice {
        // After the INVITE's route: the two REGISTERs meet each other, not the relay.
        (3000, 3400)
    } else if variant == Variant::FailureRoute {
        // The failure route runs after the first relay's 486 came back through the proxy.
        (0, 1200)
    } else if variant == Variant::ForeignContinue {
        // The async module resumes the call 5 ms (on its 1 ms timer) after the INVITE.
        (3000, 8000)
    } else {
        (0, 400)
    };
    let offs = offsets(n, min, max);
    let stored_before = stored(&setup.nodes[0]);
    let down = Arc::new(AtomicBool::new(false));

    // Rounds in flight: thread t takes rounds t, t + threads, ...
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let offs = offs.clone();
            let down = down.clone();
            let timing = Timing { ring: timing.ring, twice: timing.twice, domain: timing.domain, late_dev1: timing.late_dev1 };
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in (t..n).step_by(threads) {
                    if down.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = round(i, inv_port, reg_port, offs[i], &timing);
                    if r.proxy_down {
                        down.store(true, Ordering::Relaxed);
                    }
                    out.push(r);
                }
                out
            })
        })
        .collect();
    let mut results: Vec<RoundResult> = workers.into_iter().flat_map(|w| w.join().expect("round thread panicked")).collect();
    results.sort_by_key(|r| r.round);

    let alive: Vec<bool> = setup.nodes.iter_mut().map(|k| k.alive()).collect();
    let all_alive = alive.iter().all(|a| *a);
    let drained = all_alive && {
        let deadline = Instant::now() + SECS(10);
        while stored(&setup.nodes[0]) != 0 && Instant::now() < deadline {
            std::thread::sleep(MS(100));
        }
        stored(&setup.nodes[0]) == 0
    };
    let stored_after = if all_alive { stored(&setup.nodes[0]) } else { -1 };
    let dump = if all_alive { setup.nodes[0].kamcmd(&["ts.dump"]).unwrap_or_else(|e| e) } else { String::new() };
    let deferred = if all_alive { setup.nodes[0].stat("tsilo:append_deferred") } else { -1 };
    let caught_up = if all_alive { setup.nodes[0].stat("tsilo:store_catch_up") } else { -1 };
    let bad: Vec<(usize, String)> = setup.nodes.iter().enumerate().flat_map(|(i, k)| bad_lines(&k.log()).into_iter().map(move |l| (i, l))).collect();

    let lost: Vec<&RoundResult> = results.iter().filter(|r| !r.proxy_down && r.dev2 == 0).collect();
    let lost1: Vec<&RoundResult> = results.iter().filter(|r| !r.proxy_down && r.dev1 == 0).collect();
    let doubled: Vec<&RoundResult> = results.iter().filter(|r| r.dev1 > 1 || r.dev2 > 1).collect();
    let no_final: Vec<&RoundResult> = results.iter().filter(|r| !r.proxy_down && r.caller_final.is_none()).collect();
    let reg_failed: Vec<&RoundResult> = results.iter().filter(|r| !r.proxy_down && r.reg2_status != Some(200)).collect();
    let foreign: usize = results.iter().map(|r| r.foreign).sum();
    let ran = results.iter().filter(|r| !r.proxy_down).count();
    let failed: Vec<&RoundResult> = results.iter().filter(|r| !r.ok()).collect();

    let offsets_of = |v: &[&RoundResult]| v.iter().take(20).map(|r| format!("u{}@{}us", r.round, r.offset_us)).collect::<Vec<_>>().join(" ");
    let mut summary = format!(
        "{variant:?}: {ran}/{n} rounds ran ({threads} in flight), offsets {min}..{max} us, {:.1} s\n\
         nodes alive: {alive:?}\n\
         device 2 lost (no INVITE): {} [{}]\n\
         device 1 lost (no INVITE): {} [{}]\n\
         a device rang twice: {} [{}]\n\
         caller got no final reply: {} [{}]\n\
         device 2's REGISTER not 200: {}\n\
         INVITEs of other calls: {foreign}\n\
         stored_transactions: {stored_before} before, {stored_after} after (drained: {drained})\n\
         appends deferred to the end of the storing route: {deferred}, stores that caught up: {caught_up}\n\
         suspicious log lines: {}\n",
        started.elapsed().as_secs_f64(),
        lost.len(),
        offsets_of(&lost),
        lost1.len(),
        offsets_of(&lost1),
        doubled.len(),
        offsets_of(&doubled),
        no_final.len(),
        offsets_of(&no_final),
        reg_failed.len(),
        bad.len(),
    );
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for (_, l) in &bad {
        // Group by the text after the pid/level prefix, without numbers.
        let text = l.split_once(": ").map_or(l.as_str(), |x| x.1);
        let key: String = text.split(' ').map(|w| if w.starts_with("0x") { "0x.." } else { w }).collect::<Vec<_>>().join(" ");
        let key: String = key.chars().filter(|c| !c.is_ascii_digit()).take(120).collect();
        *kinds.entry(key).or_default() += 1;
    }
    for (k, c) in &kinds {
        summary += &format!("  {c:5} x {k}\n");
    }
    let inv2: Vec<f64> = results.iter().filter_map(|r| r.inv2_ms.map(|x| x - r.offset_us as f64 / 1000.0)).collect();
    if !inv2.is_empty() {
        summary += &format!("device 2's INVITE, median {:.3} ms after its REGISTER\n", median(inv2));
    }
    eprintln!("{summary}");
    if std::env::var_os("TSILO_COLLISION_VERBOSE").is_some() {
        for r in &results {
            eprintln!("{r:?}");
        }
    }

    // Some REGISTER must have met the INVITE inside its route, or the run proved nothing (a
    // smaller TSILO_COLLISIONS may legitimately miss: only the default run insists).
    let collided = n < 150 || if variant.stores_after_relay() { caught_up > 0 } else { deferred > 0 };
    let pass = all_alive && failed.is_empty() && bad.is_empty() && drained && stored_after == 0 && ran == n && collided;
    if !pass {
        for (i, k) in setup.nodes.iter().enumerate() {
            eprintln!("---- node {i} (port {}) offending lines (first 30) ----", k.port);
            for (_, l) in bad.iter().filter(|(j, _)| *j == i).take(30) {
                eprintln!("{l}");
            }
            eprintln!("---- node {i} log tail ----\n{}", k.log_tail(40));
        }
        if !dump.is_empty() && stored_after != 0 {
            eprintln!("---- ts.dump ----\n{}", dump.chars().take(3000).collect::<String>());
        }
        panic!("collisions broke late forking:\n{summary}");
    }
}

#[test]
fn store_before_relay() {
    run(Variant::StoreBeforeRelay);
}

#[test]
fn store_after_relay() {
    run(Variant::StoreAfterRelay);
}

#[test]
fn auto_append() {
    run(Variant::AutoAppend);
}

#[test]
fn append_by_contact() {
    run(Variant::AppendByContact);
}

#[test]
fn cluster() {
    run(Variant::Cluster);
}

#[test]
fn two_registers_at_once() {
    run(Variant::TwoRegisters);
}

#[test]
fn original_order() {
    run(Variant::Original);
}

#[test]
fn original_order_usrloc_by_domain() {
    run(Variant::OriginalByDomain);
}

#[test]
fn original_order_kemi() {
    run(Variant::OriginalKemi);
}

#[test]
fn original_order_in_a_failure_route() {
    run(Variant::FailureRoute);
}

#[test]
fn a_foreign_t_continue_relays_while_appends_arrive() {
    run(Variant::ForeignContinue);
}

#[test]
fn two_appenders_resume_one_suspended_call() {
    run(Variant::TwoResumers);
}

#[test]
fn ts_append_to_a_transaction_never_stored_while_it_is_relayed() {
    run(Variant::AppendTo);
}
