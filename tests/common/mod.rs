//! Shared integration-test harness (`mod common;` in each test file).
//!
//! - `Kamailio`: a real Kamailio 5.6 instance running a test config with our tsilo.so first on the
//!   module path. Each instance has its own port, temp dir and binrpc socket, and is stopped by pid
//!   when dropped, also when the test panics.
//! - `Ua`: a minimal SIP user agent over UDP on 127.0.0.1, enough to REGISTER, call, answer,
//!   CANCEL, ACK and BYE through the proxy.
//!
//! Every wait is bounded (start 15 s, stop 10 s, kamcmd 5 s, SIP receives by the caller's timeout),
//! so no test can hang.
#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const KAMAILIO: &str = "/usr/sbin/kamailio";
pub const KAMCMD: &str = "/usr/sbin/kamcmd";
/// Debian's modules, including its C tsilo.so (which ours shadows).
pub const STOCK_MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";

const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const KAMCMD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `Ua::register` and `Ua::options` wait for the reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many log lines panic messages quote.
const TAIL: usize = 60;

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

// ------------------------------------------------------------------------------------------------
// Paths
// ------------------------------------------------------------------------------------------------

/// Where our tsilo.so is: `TSILO_MODULE_DIR`, else `<crate>/build` (where `make` puts it).
pub fn module_dir() -> PathBuf {
    match std::env::var_os("TSILO_MODULE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("build"),
    }
}

/// The `-L` value: Kamailio takes the first match in a ':' list, so our tsilo.so shadows the C
/// one, and every other module comes from Debian. With a module dir that has no tsilo.so (e.g.
/// `TSILO_MODULE_DIR=/nonexistent`) the tests run against Debian's C module.
pub fn mpath() -> String {
    format!("{}:{STOCK_MODULES}", module_dir().display())
}

/// A file of this crate, e.g. `manifest_path("examples/kamailio.cfg")`.
pub fn manifest_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The tsilo.so Kamailio should map: ours if the module dir has one, else Debian's.
pub fn expected_tsilo_so() -> PathBuf {
    let ours = module_dir().join("tsilo.so");
    if ours.exists() {
        ours.canonicalize().unwrap_or(ours)
    } else {
        PathBuf::from(STOCK_MODULES).join("tsilo.so")
    }
}

// ------------------------------------------------------------------------------------------------
// Ports and directories
// ------------------------------------------------------------------------------------------------

static PORT_COUNTER: AtomicU32 = AtomicU32::new(0);
static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Ports handed to Kamailio come from 20000..32000: below the kernel's ephemeral range
/// (32768..60999 here), where `Ua` sockets (bound to port 0) land, so a Ua can never take a port
/// between our check and Kamailio's bind.
const PORT_LO: u32 = 20000;
const PORT_SPAN: u32 = 12000;

/// A loopback port that is free for UDP and TCP right now. Threads of one test binary never get
/// the same port (atomic counter); test binaries start at different offsets (derived from the
/// pid), and a port still held by anything else fails the bind check and is skipped.
pub fn free_port() -> u16 {
    let base = std::process::id().wrapping_mul(7919) % PORT_SPAN;
    for _ in 0..PORT_SPAN {
        let n = PORT_COUNTER.fetch_add(1, Ordering::SeqCst);
        let port = (PORT_LO + (base + n) % PORT_SPAN) as u16;
        // Both sockets are closed again at the end of the statement.
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORT_LO}..{}", PORT_LO + PORT_SPAN);
}

/// A fresh `<tmp>/tsilo-test-<pid>-<n>` directory.
fn unique_dir() -> PathBuf {
    let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("tsilo-test-{}-{n}", std::process::id()));
    // Left over from an earlier process with the same pid (TSILO_KEEP_TEST_DIRS).
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn keep_dirs() -> bool {
    std::env::var_os("TSILO_KEEP_TEST_DIRS").is_some()
}

/// Fills the placeholders `{PORT}`, `{CTL}` (binrpc socket path, without `unix:`) and `{DIR}`.
fn fill(cfg: &str, port: u16, dir: &Path) -> String {
    let sock = dir.join("ctl.sock");
    // sun_path holds 107 bytes plus the NUL: a longer path fails inside ctl with a vague error.
    assert!(sock.as_os_str().len() < 100, "control socket path too long (TMPDIR?): {}", sock.display());
    cfg.replace("{PORT}", &port.to_string())
        .replace("{CTL}", sock.to_str().expect("non-UTF-8 temp dir"))
        .replace("{DIR}", dir.to_str().expect("non-UTF-8 temp dir"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a short command with a time limit (killing it, by its pid, on timeout).
/// Returns (exit status or None on timeout, stdout, stderr).
fn run_bounded(cmd: &mut Command, timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Read the pipes in threads so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(ms(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let err = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    (status, out, err)
}

/// Pids whose parent is `ppid` (from /proc/*/stat).
fn children_of(ppid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| proc_ppid(*pid) == Some(ppid))
        .collect()
}

/// The parent pid of a live (non-zombie) process.
fn proc_ppid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.next()?.parse().ok()
}

// ------------------------------------------------------------------------------------------------
// Kamailio
// ------------------------------------------------------------------------------------------------

/// A Kamailio instance started by a test. Dropping it stops it (SIGTERM, then SIGKILL after 10 s,
/// only ever to the pid we started) and removes its directory unless `TSILO_KEEP_TEST_DIRS` is set.
pub struct Kamailio {
    pub pid: u32,
    /// Temp dir with kamailio.cfg, kamailio.log, ctl.sock and the run dir.
    pub dir: PathBuf,
    /// The SIP UDP port on 127.0.0.1.
    pub port: u16,
    /// `unix:<dir>/ctl.sock`, for `kamcmd -s`.
    pub ctl: String,
    child: Mutex<Child>,
    stopped: bool,
}

impl Kamailio {
    /// Writes the config (placeholders filled) and spawns Kamailio in the foreground.
    fn spawn(cfg: &str) -> Kamailio {
        let dir = unique_dir();
        let port = free_port();
        let cfg_path = dir.join("kamailio.cfg");
        fs::write(&cfg_path, fill(cfg, port, &dir)).unwrap();
        let log = fs::File::create(dir.join("kamailio.log")).unwrap();
        let child = Command::new(KAMAILIO)
            .arg("-DD") // foreground, no daemon: the pid we get is the main process
            .arg("-E") // log to stderr, i.e. kamailio.log
            .arg("-f")
            .arg(&cfg_path)
            .arg("-Y")
            .arg(&dir)
            .args(["-m", "64", "-M", "8"])
            .arg("-L")
            .arg(mpath())
            .arg("-w")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {KAMAILIO}: {e}"));
        Kamailio {
            pid: child.id(),
            ctl: format!("unix:{}", dir.join("ctl.sock").display()),
            dir,
            port,
            child: Mutex::new(child),
            stopped: false,
        }
    }

    /// Starts Kamailio on `cfg` (with `{PORT}`, `{CTL}`, `{DIR}` filled in) and waits until it
    /// answers `core.version` on its binrpc socket. Panics, with the log tail, if it exits or is
    /// not ready within 15 s.
    pub fn start(cfg: &str) -> Kamailio {
        let k = Kamailio::spawn(cfg);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = k.exit_status() {
                panic!("kamailio exited during start-up ({status}); log tail:\n{}", k.log_tail(TAIL));
            }
            if k.kamcmd(&["core.version"]).is_ok() {
                return k;
            }
            if Instant::now() > deadline {
                // Dropping `k` stops it.
                panic!("kamailio not ready (no RPC answer) within {START_TIMEOUT:?}; log tail:\n{}", k.log_tail(TAIL));
            }
            std::thread::sleep(ms(100));
        }
    }

    /// Starts a config Kamailio must refuse: waits (15 s at most) for it to exit non-zero and
    /// returns its log. Panics if it exits 0, dies from a signal, or keeps running (it is killed).
    pub fn start_expect_failure(cfg: &str) -> String {
        let k = Kamailio::spawn(cfg);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = k.exit_status() {
                let log = k.log();
                if let Some(sig) = status.signal() {
                    panic!("kamailio died from signal {sig} instead of refusing the config; log tail:\n{}", tail(&log, TAIL));
                }
                assert!(!status.success(), "kamailio exited 0 on a config it should refuse; log tail:\n{}", tail(&log, TAIL));
                return log;
            }
            if Instant::now() > deadline {
                panic!("kamailio kept running on a config it should refuse; log tail:\n{}", k.log_tail(TAIL));
            }
            std::thread::sleep(ms(100));
        }
    }

    /// The exit status, if the main process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().ok().flatten()
    }

    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// `kamcmd -s <ctl> args...` (5 s limit). Ok(stdout) on success; Err(stdout + stderr) on a
    /// non-zero exit, a timeout, or an RPC error (kamcmd prints "error: ..." and still exits 0).
    pub fn kamcmd(&self, args: &[&str]) -> Result<String, String> {
        let (status, out, err) = run_bounded(Command::new(KAMCMD).arg("-s").arg(&self.ctl).args(args), KAMCMD_TIMEOUT);
        match status {
            Some(s) if s.success() && !out.starts_with("error:") => Ok(out),
            Some(s) => Err(format!("kamcmd {args:?} ({s}): {out}{err}")),
            None => Err(format!("kamcmd {args:?} timed out after {KAMCMD_TIMEOUT:?}: {out}{err}")),
        }
    }

    /// The whole log so far (stdout and stderr of Kamailio).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }

    /// Waits until the log contains `needle`; false on timeout.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(ms(50));
        }
    }

    /// Log lines that are errors from tsilo, or crash reports from anyone.
    pub fn tsilo_errors(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                let lower = l.to_ascii_lowercase();
                (lower.contains("tsilo") && (l.contains("ERROR") || l.contains("CRITICAL") || l.contains("BUG") || l.contains("ALERT")))
                    || lower.contains("segfault")
                    || l.contains("SIGSEGV")
                    || lower.contains("core dumped")
            })
            .map(String::from)
            .collect()
    }

    /// Shared memory in use: `used` of `kamcmd core.shmmem`.
    pub fn shm_used(&self) -> u64 {
        let out = self.kamcmd(&["core.shmmem"]).unwrap_or_else(|e| panic!("core.shmmem: {e}"));
        // "real_used:" and "max_used:" also end in "used:": match the whole key.
        out.lines()
            .find_map(|l| l.trim().strip_prefix("used:").and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no `used:` in core.shmmem output:\n{out}"))
    }

    /// The file a loaded shared object `name` (e.g. "tsilo.so") is mapped from, per /proc/<pid>/maps.
    pub fn mapped_module(&self, name: &str) -> Option<PathBuf> {
        let maps = fs::read_to_string(format!("/proc/{}/maps", self.pid)).ok()?;
        let suffix = format!("/{name}");
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.ends_with(&suffix))
            .map(PathBuf::from)
    }

    /// Stops Kamailio: SIGTERM to the main pid, up to 10 s for it to exit, then SIGKILL to that
    /// pid. Err describes an unclean stop: SIGKILL was needed, or worker processes outlived the
    /// main process (they would be left as orphans). Idempotent; `Drop` calls it.
    pub fn stop(&mut self) -> Result<ExitStatus, String> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(Some(status)) = child.try_wait() {
            self.stopped = true;
            return Ok(status);
        }
        // Kamailio's workers are its children: note them now, to check they went away too.
        let workers = children_of(self.pid);
        // SAFETY: kill(2) on the pid of the process this test spawned and has not yet reaped,
        // so the pid cannot have been reused.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut problems = Vec::new();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(ms(50)),
                _ => {
                    problems.push(format!("main process {} still running {STOP_TIMEOUT:?} after SIGTERM: sent SIGKILL", self.pid));
                    let _ = child.kill(); // SIGKILL to the same pid
                    break child.wait().unwrap_or_else(|e| panic!("wait for kamailio {}: {e}", self.pid));
                }
            }
        };
        self.stopped = true;
        // Workers now belong to init; one still alive with our config is a leak worth reporting.
        let cfg = self.dir.join("kamailio.cfg");
        let left: Vec<u32> = workers
            .into_iter()
            .filter(|w| proc_ppid(*w).is_some())
            .filter(|w| fs::read(format!("/proc/{w}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(cfg.to_str().unwrap())))
            .collect();
        if !left.is_empty() {
            problems.push(format!("worker processes still running after the main process exited: {left:?}"));
        }
        if problems.is_empty() {
            Ok(status)
        } else {
            Err(format!("{}; log tail:\n{}", problems.join("; "), self.log_tail(TAIL)))
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if !self.stopped
            && let Err(e) = self.stop()
        {
            // No panic here: we may already be unwinding from a failed assertion.
            eprintln!("kamailio {} (dir {}): unclean stop: {e}", self.pid, self.dir.display());
        }
        if !keep_dirs() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `kamailio -c` (check the config and exit) on `cfg` after placeholder substitution (in a temp
/// dir of its own). Returns (success, stdout + stderr).
pub fn check_config(cfg: &str) -> (bool, String) {
    let dir = unique_dir();
    let path = dir.join("kamailio.cfg");
    fs::write(&path, fill(cfg, free_port(), &dir)).unwrap();
    let (status, out, err) = run_bounded(Command::new(KAMAILIO).arg("-c").arg("-f").arg(&path).arg("-L").arg(mpath()), START_TIMEOUT);
    if !keep_dirs() {
        let _ = fs::remove_dir_all(&dir);
    }
    let text = format!("{out}{err}");
    match status {
        Some(s) => (s.success(), text),
        None => (false, format!("kamailio -c timed out after {START_TIMEOUT:?}\n{text}")),
    }
}

// ------------------------------------------------------------------------------------------------
// Configs
// ------------------------------------------------------------------------------------------------

/// A plain proxy + registrar with tsilo loaded (not used by the script). Placeholders: {PORT}, {CTL}.
/// Module order: tm before sl, usrloc before registrar, tm and registrar before tsilo.
pub const BASE_CFG: &str = r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
listen=udp:127.0.0.1:{PORT}
auto_aliases=no
# Workers that hang at shutdown get killed by Kamailio itself before the harness gives up (10 s).
exit_timeout=5

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "ctl.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tsilo.so"

modparam("ctl", "binrpc", "unix:{CTL}")
modparam("tm", "wt_timer", 1000)
modparam("usrloc", "db_mode", 0)

request_route {
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	if (is_method("OPTIONS")) {
		sl_send_reply("200", "OK");
		exit;
	}
	if (is_method("CANCEL")) {
		# Relayed only if it matches an INVITE transaction.
		if (t_check_trans()) {
			t_relay();
		}
		exit;
	}
	if (has_totag()) {
		if (loose_route()) {
			# ACK for a 2xx, BYE, re-INVITE: along the recorded route.
			t_relay();
		} else if (is_method("ACK")) {
			# ACK for a non-2xx: tm absorbs it (t_check_trans ends the script).
			if (t_check_trans()) {
				t_relay();
			}
		} else {
			sl_send_reply("404", "Not Here");
		}
		exit;
	}
	if (is_method("ACK")) {
		exit;
	}
	if (is_method("REGISTER")) {
		if (!save("location")) {
			sl_reply_error();
		}
		exit;
	}
	if (is_method("INVITE")) {
		record_route();
	}
	if (!lookup("location")) {
		sl_send_reply("404", "Not Found");
		exit;
	}
	if (!t_relay()) {
		sl_reply_error();
	}
	exit;
}
"#;

/// BASE_CFG without tm and without the script that needs it (registrar loads without tm, so only
/// tm is missing): tsilo must refuse to start. Placeholders: {PORT}, {CTL}.
pub const BASE_CFG_NO_TM: &str = r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
listen=udp:127.0.0.1:{PORT}
auto_aliases=no
exit_timeout=5

loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "ctl.so"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tsilo.so"

modparam("ctl", "binrpc", "unix:{CTL}")
modparam("usrloc", "db_mode", 0)

request_route {
	if (is_method("OPTIONS")) {
		sl_send_reply("200", "OK");
		exit;
	}
	sl_send_reply("404", "Not Found");
	exit;
}
"#;

// ------------------------------------------------------------------------------------------------
// SIP messages
// ------------------------------------------------------------------------------------------------

/// A received SIP message.
#[derive(Clone, Debug)]
pub struct SipMsg {
    pub first_line: String,
    /// In order, names as received (compact forms not expanded).
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Where the datagram came from.
    pub from: SocketAddr,
}

/// The full lowercase name for a header name, expanding RFC 3261 compact forms.
fn canonical_header(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let full = match lower.as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        "s" => "subject",
        "e" => "content-encoding",
        "o" => "event",
        "u" => "allow-events",
        "r" => "refer-to",
        "b" => "referred-by",
        "x" => "session-expires",
        _ => return lower,
    };
    full.to_string()
}

/// Splits a header value at commas outside <...> and "..." (Via, Record-Route, Contact lists).
fn split_list(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut angle, mut quote) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quote = !quote,
            '<' if !quote => angle = true,
            '>' if !quote => angle = false,
            ',' if !quote && !angle => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The `tag` parameter of a From/To value.
fn tag_param(value: &str) -> Option<&str> {
    // Parameters after the URI; the URI itself may be inside <...> with its own ';' params.
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    params.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("tag").then(|| v.trim())
    })
}

/// The URI inside <...>, or the value up to its first ';' when there are no brackets.
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

impl SipMsg {
    /// Parses a datagram; None if it does not look like SIP.
    pub fn parse(data: &[u8], from: SocketAddr) -> Option<SipMsg> {
        let text = String::from_utf8_lossy(data);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.split("\r\n");
        let first_line = lines.next()?.trim().to_string();
        if !first_line.starts_with("SIP/2.0 ") && !first_line.ends_with(" SIP/2.0") {
            return None;
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // Folded continuation of the previous header.
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        Some(SipMsg { first_line, headers, body: body.to_string(), from })
    }

    /// The method of a request; None for a reply.
    pub fn method(&self) -> Option<&str> {
        if self.first_line.starts_with("SIP/2.0 ") {
            None
        } else {
            self.first_line.split(' ').next()
        }
    }

    /// The status code of a reply; None for a request.
    pub fn status(&self) -> Option<u16> {
        self.first_line.strip_prefix("SIP/2.0 ")?.split(' ').next()?.parse().ok()
    }

    /// The reason phrase of a reply.
    pub fn reason(&self) -> &str {
        self.first_line.splitn(3, ' ').nth(2).unwrap_or("")
    }

    /// The Request-URI of a request.
    pub fn ruri(&self) -> Option<&str> {
        self.method()?;
        self.first_line.split(' ').nth(1)
    }

    /// The first header of that name (case-insensitive, compact forms match their full names).
    pub fn header(&self, name: &str) -> Option<&str> {
        let want = canonical_header(name);
        self.headers.iter().find(|(k, _)| canonical_header(k) == want).map(|(_, v)| v.as_str())
    }

    /// Every value of that header, comma-separated lists split (Via, Record-Route, Contact...).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let want = canonical_header(name);
        self.headers
            .iter()
            .filter(|(k, _)| canonical_header(k) == want)
            .flat_map(|(_, v)| split_list(v))
            .collect()
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }

    /// CSeq as (number, method).
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let mut it = self.header("CSeq")?.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?))
    }

    /// The method named in CSeq ("" if none): what a reply answers.
    pub fn cseq_method(&self) -> &str {
        self.cseq().map(|(_, m)| m).unwrap_or("")
    }

    /// The tag of the From header (a SIP name, not a conversion).
    #[allow(clippy::wrong_self_convention)]
    pub fn from_tag(&self) -> Option<&str> {
        tag_param(self.header("From")?)
    }

    pub fn to_tag(&self) -> Option<&str> {
        tag_param(self.header("To")?)
    }

    /// The branch parameter of the top Via.
    pub fn top_branch(&self) -> Option<&str> {
        let via = *self.header_values("Via").first()?;
        via.split(';').skip(1).find_map(|p| p.trim().strip_prefix("branch="))
    }

    /// Is this a final reply (>= 200) to `method` in call `call_id`?
    pub fn is_final_reply_to(&self, method: &str, call_id: &str) -> bool {
        self.status().is_some_and(|s| s >= 200) && self.cseq_method() == method && self.call_id() == Some(call_id)
    }

    /// Identifies a message up to retransmission: a retransmitted request or reply has the same key.
    /// To is part of it so replies from different forked branches (different to-tags) differ.
    fn retransmission_key(&self) -> String {
        let h = |n| self.header(n).unwrap_or("");
        format!("{}|{}|{}|{}|{}|{}", self.first_line, h("Via"), h("From"), h("To"), h("Call-ID"), h("CSeq"))
    }

    /// One line, for messages in panics.
    pub fn summary(&self) -> String {
        format!("{} (Call-ID {}, CSeq {})", self.first_line, self.call_id().unwrap_or("-"), self.header("CSeq").unwrap_or("-"))
    }
}

/// The message as text (headers as received).
impl fmt::Display for SipMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\r\n", self.first_line)?;
        for (k, v) in &self.headers {
            write!(f, "{k}: {v}\r\n")?;
        }
        write!(f, "\r\n{}", self.body)
    }
}

/// 16 random hex digits (branch suffixes, tags, Call-IDs).
pub fn random_hex() -> String {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into the local buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    assert_eq!(n, 8, "getrandom failed");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A new RFC 3261 branch (magic cookie + random).
pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_hex())
}

const SDP_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
const SDP_ANSWER: &str = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

// ------------------------------------------------------------------------------------------------
// User agent
// ------------------------------------------------------------------------------------------------

/// A SIP user agent on its own UDP socket (127.0.0.1, ephemeral port). It can be shared by
/// reference between threads.
///
/// Received messages that a `recv_matching` does not want stay queued for later calls. Exact
/// retransmissions (e.g. tm resending an INVITE before the 1xx, or a 487 before the ACK) of a
/// message already received are dropped, so a later wait for "an INVITE" cannot pick up a
/// retransmission of an earlier one.
pub struct Ua {
    pub user: String,
    pub port: u16,
    sock: UdpSocket,
    queue: Mutex<VecDeque<SipMsg>>,
    seen: Mutex<HashSet<String>>,
    cseq: AtomicU32,
}

/// An INVITE (or other request starting a transaction) this UA sent.
pub struct Call {
    pub proxy_port: u16,
    pub method: String,
    pub ruri: String,
    /// Full From and To header values as sent (To without tag).
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
    /// Branch of the request's Via (CANCEL and non-2xx ACK reuse it).
    pub branch: String,
    /// The request as sent.
    pub request: String,
    /// Next CSeq for in-dialog requests (BYE...).
    next_cseq: AtomicU32,
}

impl Ua {
    pub fn new(user: &str) -> Ua {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
        let port = sock.local_addr().unwrap().port();
        Ua {
            user: user.to_string(),
            port,
            sock,
            queue: Mutex::new(VecDeque::new()),
            seen: Mutex::new(HashSet::new()),
            cseq: AtomicU32::new(1),
        }
    }

    /// `sip:user@127.0.0.1:port`.
    pub fn contact_uri(&self) -> String {
        format!("sip:{}@127.0.0.1:{}", self.user, self.port)
    }

    /// Sends raw text to 127.0.0.1:`to`.
    pub fn send(&self, to: u16, text: &str) {
        self.send_to(SocketAddr::from(([127, 0, 0, 1], to)), text);
    }

    pub fn send_to(&self, to: SocketAddr, text: &str) {
        self.sock.send_to(text.as_bytes(), to).unwrap_or_else(|e| panic!("{}: send to {to}: {e}", self.user));
    }

    /// Reads one new datagram from the socket within `timeout` (retransmissions skipped).
    fn read_socket(&self, timeout: Duration) -> Option<SipMsg> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else { return None };
            let Some(msg) = SipMsg::parse(&buf[..n], from) else { continue };
            if self.seen.lock().unwrap().insert(msg.retransmission_key()) {
                return Some(msg);
            }
        }
    }

    /// The next message (queued ones first), or None after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<SipMsg> {
        self.recv_matching(timeout, |_| true)
    }

    /// The first message (queued ones first) for which `pred` holds, waiting up to `timeout`.
    /// Other messages stay queued, in order, for later calls.
    pub fn recv_matching(&self, timeout: Duration, pred: impl Fn(&SipMsg) -> bool) -> Option<SipMsg> {
        {
            let mut queue = self.queue.lock().unwrap();
            if let Some(i) = queue.iter().position(&pred) {
                return queue.remove(i);
            }
        }
        let deadline = Instant::now() + timeout;
        while let Some(msg) = self.read_socket(deadline.saturating_duration_since(Instant::now())) {
            if pred(&msg) {
                return Some(msg);
            }
            self.queue.lock().unwrap().push_back(msg);
        }
        None
    }

    /// As `recv_matching`, but panics (naming `what` and listing what did arrive) on timeout.
    pub fn expect(&self, what: &str, timeout: Duration, pred: impl Fn(&SipMsg) -> bool) -> SipMsg {
        self.recv_matching(timeout, pred).unwrap_or_else(|| {
            let queued: Vec<String> = self.queue.lock().unwrap().iter().map(|m| m.summary()).collect();
            panic!("{} (port {}): no {what} within {timeout:?}; other messages received: {queued:#?}", self.user, self.port)
        })
    }

    /// Waits for a request of `method`; panics on timeout.
    pub fn expect_request(&self, method: &str, timeout: Duration) -> SipMsg {
        self.expect(method, timeout, |m| m.method() == Some(method))
    }

    /// Messages received but not yet taken by any recv.
    pub fn pending(&self) -> Vec<SipMsg> {
        self.queue.lock().unwrap().iter().cloned().collect()
    }

    fn next_cseq(&self) -> u32 {
        self.cseq.fetch_add(1, Ordering::SeqCst)
    }

    /// Text of a request from this UA, with Via (this UA, `branch`, rport), Max-Forwards 70,
    /// From `<sip:user@127.0.0.1>;tag=from_tag`, the given To, Call-ID, CSeq, Contact and
    /// Content-Length. `extra` is inserted as is (each header ending in CRLF).
    #[allow(clippy::too_many_arguments)]
    pub fn request_text(&self, method: &str, ruri: &str, to: &str, call_id: &str, from_tag: &str, cseq: u32, branch: &str, extra: &str, body: &str) -> String {
        format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@127.0.0.1>;tag={from_tag}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <{contact}>\r\n\
             {extra}\
             Content-Length: {len}\r\n\r\n{body}",
            port = self.port,
            user = self.user,
            contact = self.contact_uri(),
            len = body.len(),
        )
    }

    /// REGISTERs this UA's contact for `aor_user` (`sip:aor_user@127.0.0.1`) and returns the
    /// final reply; panics if none comes within 5 s. `expires` 0 removes the contact.
    pub fn register(&self, proxy_port: u16, aor_user: &str, expires: u32) -> SipMsg {
        self.register_with(proxy_port, aor_user, expires, "")
    }

    /// `register` with extra headers (each ending in CRLF).
    pub fn register_with(&self, proxy_port: u16, aor_user: &str, expires: u32, extra: &str) -> SipMsg {
        // Same Call-ID for every REGISTER of this UA and AoR, as a real UA would (RFC 3261 10.2).
        let call_id = format!("reg-{}-{}-{aor_user}", self.port, self.user);
        let cseq = self.next_cseq();
        let aor = format!("<sip:{aor_user}@127.0.0.1>");
        // The From tag must be the AoR's own URI for REGISTER: request_text puts this UA's user
        // in From, so a different aor_user goes through a hand-made From.
        let mut text = self.request_text(
            "REGISTER",
            &format!("sip:127.0.0.1:{proxy_port}"),
            &aor,
            &call_id,
            &format!("r{}", self.port),
            cseq,
            &new_branch(),
            &format!("Expires: {expires}\r\n{extra}"),
            "",
        );
        if aor_user != self.user {
            text = text.replacen(&format!("From: <sip:{}@127.0.0.1>", self.user), &format!("From: {aor}"), 1);
        }
        self.send(proxy_port, &text);
        self.expect(&format!("final reply to REGISTER {aor_user}"), REPLY_TIMEOUT, |m| {
            m.is_final_reply_to("REGISTER", &call_id) && m.cseq().map(|(n, _)| n) == Some(cseq)
        })
    }

    /// Sends OPTIONS sip:127.0.0.1:port to the proxy; its final reply, or None after 5 s.
    pub fn options(&self, proxy_port: u16) -> Option<SipMsg> {
        let target = format!("sip:127.0.0.1:{proxy_port}");
        let call_id = format!("opt-{}", random_hex());
        let text = self.request_text("OPTIONS", &target, &format!("<{target}>"), &call_id, &random_hex(), self.next_cseq(), &new_branch(), "", "");
        self.send(proxy_port, &text);
        self.recv_matching(REPLY_TIMEOUT, |m| m.is_final_reply_to("OPTIONS", &call_id))
    }

    /// Sends INVITE sip:to_user@127.0.0.1 (with an SDP offer) to the proxy.
    pub fn invite(&self, proxy_port: u16, to_user: &str) -> Call {
        self.start_call(proxy_port, "INVITE", to_user, "", "application/sdp", SDP_OFFER)
    }

    /// `invite` with extra headers (each ending in CRLF).
    pub fn invite_with(&self, proxy_port: u16, to_user: &str, extra: &str) -> Call {
        self.start_call(proxy_port, "INVITE", to_user, extra, "application/sdp", SDP_OFFER)
    }

    /// Sends MESSAGE sip:to_user@127.0.0.1 with a text/plain body.
    pub fn message(&self, proxy_port: u16, to_user: &str, text: &str) -> Call {
        self.start_call(proxy_port, "MESSAGE", to_user, "", "text/plain", text)
    }

    /// Sends a dialog-less request `method` to `sip:to_user@127.0.0.1` via the proxy.
    pub fn start_call(&self, proxy_port: u16, method: &str, to_user: &str, extra: &str, content_type: &str, body: &str) -> Call {
        let ruri = format!("sip:{to_user}@127.0.0.1");
        let to = format!("<{ruri}>");
        let call_id = format!("{}-{}", method.to_ascii_lowercase(), random_hex());
        let from_tag = random_hex();
        let cseq = self.next_cseq();
        let branch = new_branch();
        let extra = if body.is_empty() { extra.to_string() } else { format!("Content-Type: {content_type}\r\n{extra}") };
        let request = self.request_text(method, &ruri, &to, &call_id, &from_tag, cseq, &branch, &extra, body);
        self.send(proxy_port, &request);
        Call {
            proxy_port,
            method: method.to_string(),
            from: format!("<sip:{}@127.0.0.1>;tag={from_tag}", self.user),
            ruri,
            to,
            call_id,
            from_tag,
            cseq,
            branch,
            request,
            next_cseq: AtomicU32::new(cseq + 1),
        }
    }

    /// Replies to a request this UA received (sent back to where it came from, i.e. the proxy).
    /// Copies Via(s), From, To (adding a to-tag for codes > 100), Call-ID, CSeq, and for 1xx/2xx
    /// Record-Route; adds Contact and an SDP answer to a 2xx for INVITE. The to-tag is the same
    /// for every reply of this UA to one request, as a dialog needs.
    pub fn reply(&self, req: &SipMsg, code: u16, reason: &str) {
        let (ctype, body) = if req.method() == Some("INVITE") && (200..300).contains(&code) {
            ("application/sdp", SDP_ANSWER)
        } else {
            ("", "")
        };
        self.reply_with(req, code, reason, "", ctype, body);
    }

    /// `reply` with extra headers (each ending in CRLF) and a body of its own.
    pub fn reply_with(&self, req: &SipMsg, code: u16, reason: &str, extra: &str, content_type: &str, body: &str) {
        let mut text = format!("SIP/2.0 {code} {reason}\r\n");
        // Copy Vias in order (all of them: the proxy's on top, then the caller's).
        for (k, v) in req.headers.iter().filter(|(k, _)| canonical_header(k) == "via") {
            text += &format!("{k}: {v}\r\n");
        }
        if (101..300).contains(&code) {
            for v in req.headers.iter().filter(|(k, _)| canonical_header(k) == "record-route").map(|(_, v)| v) {
                text += &format!("Record-Route: {v}\r\n");
            }
        }
        text += &format!("From: {}\r\n", req.header("From").unwrap_or(""));
        let to = req.header("To").unwrap_or("");
        if code > 100 && tag_param(to).is_none() {
            text += &format!("To: {to};tag={}\r\n", self.to_tag_for(req));
        } else {
            text += &format!("To: {to}\r\n");
        }
        text += &format!("Call-ID: {}\r\n", req.call_id().unwrap_or(""));
        text += &format!("CSeq: {}\r\n", req.header("CSeq").unwrap_or(""));
        if req.method() == Some("INVITE") && (101..300).contains(&code) {
            text += &format!("Contact: <{}>\r\n", self.contact_uri());
        }
        text += extra;
        if !body.is_empty() {
            text += &format!("Content-Type: {content_type}\r\n");
        }
        text += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
        self.send_to(req.from, &text);
    }

    /// A stable to-tag per (this UA, dialog): 180, 200 and 487 to one INVITE share it.
    fn to_tag_for(&self, req: &SipMsg) -> String {
        let mut h = DefaultHasher::new();
        (self.port, req.call_id(), req.from_tag()).hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// The callee side of a CANCEL: waits for a CANCEL of `invite`, answers it 200 and the INVITE
    /// 487, then takes the ACK for the 487 (up to 2 s). False if no CANCEL came within `timeout`.
    pub fn answer_cancel(&self, invite: &SipMsg, timeout: Duration) -> bool {
        let call_id = invite.call_id().unwrap_or("").to_string();
        let Some(cancel) = self.recv_matching(timeout, |m| m.method() == Some("CANCEL") && m.call_id() == Some(&call_id)) else {
            return false;
        };
        self.reply(&cancel, 200, "OK");
        self.reply(invite, 487, "Request Terminated");
        let _ = self.recv_matching(secs(2), |m| m.method() == Some("ACK") && m.call_id() == Some(&call_id));
        true
    }
}

impl Call {
    /// Waits for the final reply (>= 200) to this request; None on timeout.
    pub fn final_reply(&self, ua: &Ua, timeout: Duration) -> Option<SipMsg> {
        ua.recv_matching(timeout, |m| m.is_final_reply_to(&self.method, &self.call_id) && m.cseq().map(|(n, _)| n) == Some(self.cseq))
    }

    /// Waits for a reply with this status to this request; panics on timeout.
    pub fn expect_reply(&self, ua: &Ua, status: u16, timeout: Duration) -> SipMsg {
        ua.expect(&format!("{status} to {} {}", self.method, self.call_id), timeout, |m| {
            m.status() == Some(status) && m.call_id() == Some(&self.call_id) && m.cseq() == Some((self.cseq, &self.method))
        })
    }

    /// CANCEL for the pending INVITE: same R-URI, Call-ID, From, To, CSeq number and Via branch
    /// (RFC 3261 9.1), sent to the proxy.
    pub fn cancel(&self, ua: &Ua) {
        let text = ua.request_text("CANCEL", &self.ruri, &self.to, &self.call_id, &self.from_tag, self.cseq, &self.branch, "", "");
        ua.send(self.proxy_port, &text);
    }

    /// ACK for a final reply to the INVITE. For a non-2xx it belongs to the INVITE transaction
    /// (same branch, R-URI and CSeq, To with the reply's tag); for a 2xx it is a new transaction
    /// inside the dialog, sent along the route set to the callee's Contact.
    pub fn ack(&self, ua: &Ua, final_reply: &SipMsg) {
        let status = final_reply.status().expect("ack: not a reply");
        let to = final_reply.header("To").unwrap_or(&self.to);
        if status >= 300 {
            let text = ua.request_text("ACK", &self.ruri, to, &self.call_id, &self.from_tag, self.cseq, &self.branch, "", "");
            ua.send(self.proxy_port, &text);
        } else {
            self.send_in_dialog(ua, final_reply, "ACK", self.cseq, "", "");
        }
    }

    /// BYE in the dialog the 2xx `ok` established (new CSeq, along the route set).
    pub fn bye(&self, ua: &Ua, ok: &SipMsg) {
        let cseq = self.next_cseq.fetch_add(1, Ordering::SeqCst);
        self.send_in_dialog(ua, ok, "BYE", cseq, "", "");
    }

    /// Sends an in-dialog request for the dialog of the 2xx `ok`: R-URI = the callee's Contact,
    /// Route = the reply's Record-Route in reverse (the UAC's route set), To with the callee's
    /// tag. It goes to the proxy (the first hop of the route set here).
    pub fn send_in_dialog(&self, ua: &Ua, ok: &SipMsg, method: &str, cseq: u32, extra: &str, body: &str) {
        let target = ok.header("Contact").map(uri_of).expect("2xx without Contact").to_string();
        let to = ok.header("To").unwrap_or(&self.to);
        let mut routes = ok.header_values("Record-Route");
        routes.reverse();
        let route = if routes.is_empty() { String::new() } else { format!("Route: {}\r\n", routes.join(", ")) };
        let text = ua.request_text(method, &target, to, &self.call_id, &self.from_tag, cseq, &new_branch(), &format!("{route}{extra}"), body);
        ua.send(self.proxy_port, &text);
    }
}
