//! Integration-test harness: real Kamailio instances with the built tsilo.so, each with its own
//! port, RPC socket and directory, stopped by pid when dropped (also when a test panics), and a
//! small SIP user agent over UDP on loopback.
#![allow(dead_code)]

pub mod push;

use std::collections::VecDeque;
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The installed Kamailio's own modules: Debian's, or an upstream build's (`make test
/// KAMAILIO=6.1.4` sets TSILO_KAMAILIO_MODULES).
pub fn stock_modules() -> String {
    std::env::var("TSILO_KAMAILIO_MODULES").unwrap_or_else(|_| "/usr/lib/x86_64-linux-gnu/kamailio/modules".to_string())
}

/// Whether the installed Kamailio has module `name` (an upstream build here carries only the
/// modules the project needs: kamailio-headers/upstream.sh).
pub fn has_stock_module(name: &str) -> bool {
    std::path::Path::new(&stock_modules()).join(format!("{name}.so")).is_file()
}

/// The `kamailio` binary first on PATH (the one the tests run).
pub fn kamailio_binary() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join("kamailio")).find(|p| p.is_file()))
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/kamailio"))
}

/// Where `make` left tsilo.so (TSILO_MODULE_DIR overrides).
pub fn module_dir() -> PathBuf {
    std::env::var_os("TSILO_MODULE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("build"))
}

/// Our directory first: Kamailio takes the first tsilo.so on the path, shadowing Debian's C one.
pub fn mpath() -> String {
    format!("{}:{}", module_dir().display(), stock_modules())
}

pub fn manifest_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether a Kamailio's life is judged when it stops (tests: yes). The benchmark turns it off:
/// it also runs the C module, which with 100k parked calls outlives exit_timeout at shutdown.
pub static JUDGE_SHUTDOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Ports handed out to this process's tests: below Linux's ephemeral range (32768 and up, where
/// the user agents' own sockets land), each reserved for the whole test process by a lock file
/// that other test processes see, so no two tests, and no test and user agent, share one.
const PORTS: std::ops::Range<u16> = 10000..32000;

/// A loopback port free right now, reserved for this process.
pub fn free_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("tsilo-test-ports");
    fs::create_dir_all(&dir).unwrap();
    let span = u32::from(PORTS.end - PORTS.start);
    // Start somewhere else in each process: fewer lock files to step over.
    let start = std::process::id().wrapping_mul(2654435761) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(n < span, "no free port left in {PORTS:?}");
        let port = PORTS.start + ((start + n) % span) as u16;
        let Ok(file) = fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(port.to_string())) else { continue };
        // SAFETY: flock on a file we own; released when this process exits.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue; // another test process holds it
        }
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().unwrap().push(file);
            return port;
        }
    }
}

fn unique_dir() -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("tsilo-test-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Kamailio {
    child: Child,
    /// A config that must be refused: its exit and log are the test's business, not a failure.
    expect_failure: bool,
    pub pid: u32,
    pub dir: PathBuf,
    pub port: u16,
    /// `unix:/.../ctl.sock`, for kamcmd -s.
    pub ctl: String,
    /// Log lines containing one of these are expected (a failpoint's panic), not judged.
    pub tolerate: Vec<String>,
}

impl Kamailio {
    fn spawn(cfg: &str) -> Kamailio {
        Kamailio::spawn_sized(cfg, 64)
    }

    fn spawn_sized(cfg: &str, shm_mb: u32) -> Kamailio {
        Kamailio::spawn_with(cfg, shm_mb, Some(mpath()))
    }

    /// `cfg` written to this instance's directory, run with module path `mpath` (None:
    /// Kamailio's default, where Debian's packages put their modules).
    fn spawn_with(cfg: &str, shm_mb: u32, mpath: Option<String>) -> Kamailio {
        Kamailio::spawn_env(cfg, shm_mb, mpath, &[])
    }

    /// As `spawn_with`, with `env` added to Kamailio's environment.
    fn spawn_env(cfg: &str, shm_mb: u32, mpath: Option<String>, env: &[(&str, &str)]) -> Kamailio {
        let dir = unique_dir();
        let port = free_port();
        let sock = dir.join("ctl.sock");
        let text = cfg
            .replace("{DMQ_IP}", &dmq_ip(port))
            .replace("{PORT}", &port.to_string())
            .replace("{CTL}", sock.to_str().unwrap())
            .replace("{DIR}", dir.to_str().unwrap());
        let cfg_path = dir.join("kamailio.cfg");
        fs::write(&cfg_path, text).unwrap();
        let mut cmd = Command::new("kamailio");
        cmd.args(["-m", &shm_mb.to_string(), "-f"]).arg(&cfg_path);
        if let Some(path) = mpath {
            cmd.arg("-L").arg(path);
        }
        cmd.envs(env.iter().copied());
        Kamailio::run(cmd, dir, port)
    }

    /// Runs `cmd` (kamailio with its config and module path) in `dir`, logging to kamailio.log.
    fn run(mut cmd: Command, dir: PathBuf, port: u16) -> Kamailio {
        let sock = dir.join("ctl.sock");
        let log = fs::File::create(dir.join("kamailio.log")).unwrap();
        let child = cmd
            .args(["-DD", "-E", "-M", "8"])
            .arg("-Y")
            .arg(&dir)
            .arg("-w")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot run kamailio (make deps installs it)");
        let pid = child.id();
        Kamailio { child, expect_failure: false, pid, dir, port, ctl: format!("unix:{}", sock.display()), tolerate: Vec::new() }
    }

    /// As `start`, with Kamailio's default module path: the tsilo.so installed there.
    pub fn start_stock(cfg: &str) -> Kamailio {
        Kamailio::spawn_with(cfg, 64, None).ready()
    }

    /// Starts Kamailio on `cfg_file` as it is, with Kamailio's default module path (no -L: the
    /// installed package's tsilo.so, or Debian's), LISTEN and CTL_SOCK given as -A defines
    /// (the example configs take them so), plus `defines`.
    pub fn start_unchanged(cfg_file: &std::path::Path, defines: &[String]) -> Kamailio {
        let dir = unique_dir();
        let port = free_port();
        let mut cmd = Command::new("kamailio");
        cmd.args(["-m", "64", "-f"]).arg(cfg_file);
        cmd.arg("-A").arg(format!("LISTEN=udp:127.0.0.1:{port}"));
        cmd.arg("-A").arg(format!("CTL_SOCK=\"unix:{}\"", dir.join("ctl.sock").display()));
        for d in defines {
            cmd.arg("-A").arg(d);
        }
        Kamailio::run(cmd, dir, port).ready()
    }

    /// Starts Kamailio with `cfg` ({PORT}, {CTL}, {DIR} filled in) and waits until it answers RPC.
    pub fn start(cfg: &str) -> Kamailio {
        Kamailio::start_sized(cfg, 64)
    }

    /// As `start`, with `env` added to Kamailio's environment (a failpoint, TSILO_FAILPOINT).
    pub fn start_env(cfg: &str, env: &[(&str, &str)]) -> Kamailio {
        Kamailio::spawn_env(cfg, 64, Some(mpath()), env).ready()
    }

    /// As `start`, with `shm_mb` MB of shared memory.
    pub fn start_sized(cfg: &str, shm_mb: u32) -> Kamailio {
        Kamailio::spawn_sized(cfg, shm_mb).ready()
    }

    /// Waits until this Kamailio answers RPC; panics with its log if it exits or does not.
    fn ready(mut self) -> Kamailio {
        let k = &mut self;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = k.child.try_wait() {
                panic!("kamailio exited at start ({status}):\n{}", k.log_tail(60));
            }
            if k.kamcmd(&["core.version"]).is_ok() {
                return self;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("kamailio did not answer RPC within 20 s:\n{}", k.log_tail(60));
    }

    /// Starts a config that must be refused; returns Kamailio's log.
    pub fn start_expect_failure(cfg: &str) -> String {
        let mut k = Kamailio::spawn(cfg);
        k.expect_failure = true;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = k.child.try_wait() {
                assert!(!status.success(), "kamailio exited 0 on a config it should refuse");
                return k.log();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("kamailio kept running on a config it should refuse:\n{}", k.log_tail(40));
    }

    pub fn kamcmd(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("kamcmd").arg("-s").arg(&self.ctl).args(args).output().map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && !stdout.starts_with("error:") {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("kamailio.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A statistic's value, by `group:name` (read from `kamcmd stats.get_statistics group:`).
    pub fn stat(&self, name: &str) -> i64 {
        let group = format!("{}:", name.split(':').next().unwrap());
        let out = self.kamcmd(&["stats.get_statistics", &group]).unwrap_or_else(|e| panic!("stats {name}: {e}"));
        out.lines()
            .find_map(|l| l.split_once(" = ").filter(|(k, _)| k.trim() == name).map(|(_, v)| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no statistic {name} in {out}"))
    }

    /// Asserts that a statistic reaches `value` within 3 s. An append counts its branches once
    /// TM has sent them, so a device may see its INVITE a moment before the counter moves (an
    /// append carried out at the end of a route most of all).
    #[track_caller]
    pub fn expect_stat(&self, name: &str, value: i64) {
        if !self.wait_stat(name, value, Duration::from_secs(3)) {
            panic!("{name} is {}, expected {value}:\n{}", self.stat(name), self.log_tail(20));
        }
    }

    /// Waits until a statistic has `value`; false on timeout.
    pub fn wait_stat(&self, name: &str, value: i64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stat(name) == value {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Shared memory in use once TM holds no transaction any more (`tm.stats` current 0, at
    /// most 15 s): a transaction on its wait timer (a BYE's, a CANCEL's) holds its shm until
    /// then, and when the last one goes differs between Kamailio releases.
    pub fn shm_used_idle(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let stats = self.kamcmd(&["tm.stats"]).unwrap_or_default();
            let current = stats.lines().find_map(|l| l.trim().strip_prefix("current:").and_then(|v| v.trim().parse::<u64>().ok()));
            if current == Some(0) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.shm_used()
    }

    /// Shared memory in use (`core.shmmem` used).
    pub fn shm_used(&self) -> u64 {
        let out = self.kamcmd(&["core.shmmem"]).unwrap();
        out.lines()
            .find_map(|l| l.trim().strip_prefix("used:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no used: in {out}"))
    }

    /// Lines of the log from our module at ERROR level or worse, plus any crash report.
    pub fn module_errors(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| (l.contains("tsilo") && (l.contains("ERROR") || l.contains("CRITICAL") || l.contains("BUG"))) || l.contains("SIGSEGV") || l.contains("core dumped"))
            .map(String::from)
            .collect()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Kamailio's processes: the main one and its children (workers, timers, RPC).
fn workers_of(main: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(main) {
            pids.push(pid);
        }
    }
    pids
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let workers = workers_of(self.pid);
        // SAFETY: signals only the process this test started.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut killed = false;
        if let Ok(None) = self.child.try_wait() {
            eprintln!("kamailio {} did not stop within 10 s of SIGTERM: killing it", self.pid);
            let _ = self.child.kill();
            let _ = self.child.wait();
            killed = true;
        }
        let status = self.child.try_wait().ok().flatten();
        // A worker that outlived its main process would be orphaned forever: stop it too, by
        // the pid we saw it under (and only if it still runs this instance's config).
        for pid in workers {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(self.dir.to_str().unwrap()) {
                eprintln!("kamailio worker {pid} outlived its main process: killing it");
                // SAFETY: a process this test started (a child of our Kamailio, same config).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        // However the test went, Kamailio must have lived and ended well: no crash, no core, no
        // CRITICAL line, at any moment up to and including its shutdown (destroy()).
        let judged = !self.expect_failure && !std::thread::panicking() && JUDGE_SHUTDOWN.load(Ordering::Relaxed);
        let trouble = if judged { self.shutdown_trouble(status, killed) } else { Vec::new() };
        if std::env::var_os("TSILO_KEEP_TEST_DIRS").is_none() && !std::thread::panicking() && trouble.is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        }
        if !trouble.is_empty() {
            panic!("kamailio {} (in {}): {}\n{}", self.pid, self.dir.display(), trouble.join("; "), self.log_tail(30));
        }
    }
}

impl Kamailio {
    /// What went wrong in this Kamailio's life, judged after it stopped.
    fn shutdown_trouble(&self, status: Option<std::process::ExitStatus>, killed: bool) -> Vec<String> {
        use std::os::unix::process::ExitStatusExt;
        let mut trouble = Vec::new();
        if let Some(sig) = status.and_then(|s| s.signal()).filter(|_| !killed) {
            trouble.push(format!("exited on signal {sig}"));
        }
        let cores: Vec<_> = fs::read_dir(&self.dir).into_iter().flatten().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("core")).collect();
        if !cores.is_empty() {
            trouble.push(format!("left {} core file(s)", cores.len()));
        }
        let log = self.log();
        // One CRITICAL line is Kamailio's own at shutdown: TCP main reading EOF from a child
        // that exited before it ("receive_fd(): EOF on N", then "dead child ... shutting down?").
        let stopping = log.find("signal 15 received").unwrap_or(log.len());
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("CRITICAL") || l.contains("SIGSEGV") || l.contains(" BUG:"))
            .filter(|l| !(l.contains("receive_fd(): EOF on") && log.find(*l).is_some_and(|at| at > stopping)))
            .filter(|l| !self.tolerate.iter().any(|t| l.contains(t.as_str())))
            .collect();
        if !bad.is_empty() {
            trouble.push(format!("logged {} CRITICAL/BUG line(s), first: {}", bad.len(), bad[0]));
        }
        trouble
    }
}

/// The loopback address a cluster node on SIP `port` uses for DMQ: one of its own (dmq takes
/// nodes on one IP address for one node since Kamailio 5.8), derived from the port, which the
/// harness keeps unique, so peers can name it.
pub fn dmq_ip(port: u16) -> String {
    format!("127.{}.{}.2", port >> 8, port & 0xff)
}

/// A node of examples/cluster/node.cfg on loopback; its DMQ peer is the node on SIP port
/// `peer` (none for the first node).
pub fn cluster_node(peer: Option<u16>) -> Kamailio {
    // From the bench crate (bench/), the example is one directory up.
    let path = [manifest_path("examples/cluster/node.cfg"), manifest_path("../examples/cluster/node.cfg")].into_iter().find(|p| p.exists()).unwrap();
    let cfg = fs::read_to_string(path).unwrap();
    // The port is known once the harness picked it: {PORT} and {DMQ_IP} are filled in then.
    let peer = peer.map_or_else(|| "sip:{DMQ_IP}:{PORT}".to_string(), |p| format!("sip:{}:{p}", dmq_ip(p)));
    let defines = format!(
        "#!define LISTEN udp:127.0.0.1:{{PORT}}\n#!define DMQ_LISTEN udp:{{DMQ_IP}}:{{PORT}}\n\
         #!define DMQ_SELF \"sip:{{DMQ_IP}}:{{PORT}}\"\n#!define DMQ_PEER \"{peer}\"\n#!define CTL_SOCK \"unix:{{CTL}}\"\n"
    );
    Kamailio::start(&(defines + &cfg))
}

/// Waits until node `k` lists the node on `port` among its DMQ peers.
pub fn wait_knows(k: &Kamailio, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !k.kamcmd(&["dmq.list_nodes"]).unwrap_or_default().contains(&port.to_string()) {
        assert!(Instant::now() < deadline, "node {} does not know node {port}", k.port);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The installed Kamailio's version line, e.g. `kamailio 6.0.1 (x86_64/linux)` (`kamailio -V`).
pub fn installed_version() -> String {
    let out = Command::new("kamailio").arg("-V").output().expect("kamailio -V");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find_map(|l| l.strip_prefix("version: ")).map(|v| v.trim().to_string()).unwrap_or_else(|| panic!("no version in:\n{text}"))
}

/// The installed Kamailio's version as (major, minor).
pub fn installed_release() -> (u32, u32) {
    static RELEASE: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *RELEASE.get_or_init(|| {
        let v = installed_version(); // "kamailio 6.1.4 (x86_64/linux)"
        let mut n = v.split_whitespace().nth(1).unwrap_or("").split('.').map(|x| x.parse::<u32>().unwrap_or(0));
        (n.next().unwrap_or(0), n.next().unwrap_or(0))
    })
}

/// Whether TM still matches replies of a transaction that is over (before 6.1's
/// `reply_matching`): it then absorbs and ACKs a late 487.
pub fn late_replies_matched() -> bool {
    installed_release() < (6, 1)
}

/// `kamailio -c` on a config (placeholders filled with dummies); (ok, output).
pub fn check_config(path: &std::path::Path) -> (bool, String) {
    let out = Command::new("kamailio").arg("-c").arg("-f").arg(path).arg("-L").arg(mpath()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

// ---------------- SIP ----------------

#[derive(Clone, Debug)]
pub struct SipMsg {
    pub first_line: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub raw: String,
    /// The UDP port it came from (0 if unknown): replies go back there.
    pub from_port: u16,
}

impl SipMsg {
    pub fn parse(raw: &str) -> Option<SipMsg> {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
        let mut lines = head.split("\r\n");
        let first_line = lines.next()?.to_string();
        let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
        Some(SipMsg { first_line, headers, body: body.to_string(), raw: raw.to_string(), from_port: 0 })
    }
    pub fn method(&self) -> Option<&str> {
        (!self.first_line.starts_with("SIP/2.0")).then(|| self.first_line.split(' ').next().unwrap())
    }
    pub fn status(&self) -> Option<u16> {
        self.first_line.strip_prefix("SIP/2.0 ").and_then(|s| s.split(' ').next()?.parse().ok())
    }
    pub fn reason(&self) -> &str {
        self.first_line.splitn(3, ' ').nth(2).unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        let compact = match name.to_ascii_lowercase().as_str() {
            "via" => "v",
            "from" => "f",
            "to" => "t",
            "call-id" => "i",
            "contact" => "m",
            "content-length" => "l",
            _ => "",
        };
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name) || (!compact.is_empty() && k.eq_ignore_ascii_case(compact)))
            .map(|(_, v)| v.as_str())
    }
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or("")
    }
    pub fn cseq_method(&self) -> &str {
        self.header("CSeq").and_then(|c| c.split_whitespace().nth(1)).unwrap_or("")
    }
}

fn rand_hex() -> String {
    let mut b = [0u8; 8];
    // SAFETY: fills a local buffer.
    unsafe { libc::getrandom(b.as_mut_ptr() as *mut _, 8, 0) };
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A SIP user agent on its own UDP socket, talking to one proxy.
pub struct Ua {
    pub user: String,
    pub sock: UdpSocket,
    pub port: u16,
    pub proxy: u16,
    queue: std::cell::RefCell<VecDeque<SipMsg>>,
    cseq: std::cell::Cell<u32>,
    /// Parameters of the Contact URI (RFC 8599: ";pn-provider=..;pn-prid=..") and of the
    /// Contact header (";+sip.instance=..."), in every request this UA sends.
    pub uri_params: String,
    pub contact_params: String,
}

/// An INVITE (or MESSAGE) this UA sent.
pub struct Call {
    pub request: String,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
    pub branch: String,
    pub ruri: String,
    pub to: String,
}

impl Ua {
    pub fn new(user: &str, proxy: u16) -> Ua {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        Ua { user: user.into(), sock, port, proxy, queue: Default::default(), cseq: std::cell::Cell::new(0), uri_params: String::new(), contact_params: String::new() }
    }

    /// A UA whose Contact carries `uri_params` in its URI and `contact_params` after it.
    pub fn with_contact(user: &str, proxy: u16, uri_params: &str, contact_params: &str) -> Ua {
        Ua { uri_params: uri_params.into(), contact_params: contact_params.into(), ..Ua::new(user, proxy) }
    }

    /// A UA on a given loopback port, if it is free.
    pub fn on_port(user: &str, proxy: u16, port: u16) -> Option<Ua> {
        let sock = UdpSocket::bind(("127.0.0.1", port)).ok()?;
        Some(Ua { user: user.into(), sock, port, proxy, queue: Default::default(), cseq: std::cell::Cell::new(0), uri_params: String::new(), contact_params: String::new() })
    }

    pub fn contact_uri(&self) -> String {
        format!("sip:{}@127.0.0.1:{}{}", self.user, self.port, self.uri_params)
    }

    pub fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), SocketAddr::from(([127, 0, 0, 1], self.proxy))).unwrap();
    }

    fn next_cseq(&self) -> u32 {
        self.cseq.set(self.cseq.get() + 1);
        self.cseq.get()
    }

    /// Builds and sends a request; returns (text, branch).
    pub fn request(&self, method: &str, ruri: &str, to: &str, call_id: &str, from_tag: &str, cseq: u32, extra: &str, body: &str) -> (String, String) {
        let branch = format!("z9hG4bK{}", rand_hex());
        let text = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{user}@127.0.0.1>;tag={from_tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <{contact}>{params}\r\n{extra}Content-Length: {len}\r\n\r\n{body}",
            port = self.port,
            user = self.user,
            contact = self.contact_uri(),
            params = self.contact_params,
            len = body.len()
        );
        self.send(&text);
        (text, branch)
    }

    /// Receives the next message, or None after `timeout`.
    fn recv_raw(&self, timeout: Duration) -> Option<SipMsg> {
        self.sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).unwrap();
        let mut buf = [0u8; 65535];
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => SipMsg::parse(&String::from_utf8_lossy(&buf[..n])).map(|m| SipMsg { from_port: from.port(), ..m }),
            Err(_) => None,
        }
    }

    /// The first message matching `pred` within `timeout`; others stay queued for later calls.
    pub fn recv_matching(&self, timeout: Duration, pred: impl Fn(&SipMsg) -> bool) -> Option<SipMsg> {
        {
            let mut q = self.queue.borrow_mut();
            if let Some(i) = q.iter().position(&pred) {
                return q.remove(i);
            }
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let Some(m) = self.recv_raw(deadline.saturating_duration_since(Instant::now())) else { break };
            if pred(&m) {
                return Some(m);
            }
            self.queue.borrow_mut().push_back(m);
        }
        None
    }

    /// Waits for a request of `method`; panics with `context` if none comes.
    pub fn expect_request(&self, method: &str, timeout: Duration) -> SipMsg {
        self.recv_matching(timeout, |m| m.method() == Some(method))
            .unwrap_or_else(|| panic!("{}: no {method} within {timeout:?}", self.user))
    }

    /// Asserts that no request of `method` arrives within `wait`.
    pub fn expect_no_request(&self, method: &str, wait: Duration) {
        if let Some(m) = self.recv_matching(wait, |m| m.method() == Some(method)) {
            panic!("{}: unexpected {method}:\n{}", self.user, m.raw);
        }
    }

    /// Waits for a final (>= 200) reply to `method`, answering nothing else.
    pub fn final_reply(&self, method: &str, timeout: Duration) -> SipMsg {
        self.recv_matching(timeout, |m| m.status().is_some_and(|s| s >= 200) && m.cseq_method() == method)
            .unwrap_or_else(|| panic!("{}: no final reply to {method} within {timeout:?}", self.user))
    }

    /// REGISTERs this UA's contact for its user; returns the final reply.
    pub fn register(&self, extra_headers: &str) -> SipMsg {
        self.register_in("127.0.0.1", extra_headers)
    }

    /// As `register`, for the AoR `user@domain`.
    pub fn register_in(&self, domain: &str, extra_headers: &str) -> SipMsg {
        let cseq = self.next_cseq();
        let to = format!("<sip:{}@{domain}>", self.user);
        self.request("REGISTER", &format!("sip:127.0.0.1:{}", self.proxy), &to, &format!("reg-{}-{}", self.port, self.user), &format!("r{}", self.port), cseq, &format!("Expires: 600\r\n{extra_headers}"), "");
        self.final_reply("REGISTER", Duration::from_secs(5))
    }

    /// Removes this UA's contact (Expires: 0); returns the final reply.
    pub fn unregister(&self) -> SipMsg {
        let cseq = self.next_cseq();
        let to = format!("<sip:{}@127.0.0.1>", self.user);
        self.request("REGISTER", &format!("sip:127.0.0.1:{}", self.proxy), &to, &format!("reg-{}-{}", self.port, self.user), &format!("r{}", self.port), cseq, "Expires: 0\r\nX-Append: none\r\n", "");
        self.final_reply("REGISTER", Duration::from_secs(5))
    }

    pub fn options(&self) -> Option<SipMsg> {
        let cseq = self.next_cseq();
        let target = format!("sip:127.0.0.1:{}", self.proxy);
        self.request("OPTIONS", &target, &format!("<{target}>"), &format!("opt-{}", rand_hex()), "o1", cseq, "", "");
        self.recv_matching(Duration::from_secs(5), |m| m.cseq_method() == "OPTIONS" && m.status().is_some())
    }

    /// Starts an INVITE (or MESSAGE, ...) to `user` via the proxy.
    pub fn call(&self, method: &str, user: &str, extra: &str) -> Call {
        self.call_uri(method, &format!("sip:{user}@127.0.0.1"), extra)
    }

    /// As `call`, to any Request-URI (To: the same URI without parameters).
    pub fn call_uri(&self, method: &str, ruri: &str, extra: &str) -> Call {
        let cseq = self.next_cseq();
        let ruri = ruri.to_string();
        let to = format!("<{}>", ruri.split(';').next().unwrap());
        let call_id = format!("call-{}", rand_hex());
        let from_tag = rand_hex();
        let body = if method == "INVITE" {
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        } else {
            "hello"
        };
        let ctype = if method == "INVITE" { "application/sdp" } else { "text/plain" };
        let (request, branch) = self.request(method, &ruri, &to, &call_id, &from_tag, cseq, &format!("Content-Type: {ctype}\r\n{extra}"), body);
        Call { request, call_id, from_tag, cseq, branch, ruri, to }
    }

    pub fn invite(&self, user: &str) -> Call {
        self.call("INVITE", user, "")
    }

    /// A request on the INVITE's own branch (CANCEL, or the ACK of a non-2xx: RFC 3261 9.1, 17.1.1.3).
    fn on_invite_branch(&self, call: &Call, method: &str, to: &str) {
        let text = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{user}@127.0.0.1>;tag={tag}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            ruri = call.ruri,
            port = self.port,
            branch = call.branch,
            user = self.user,
            tag = call.from_tag,
            cid = call.call_id,
            cseq = call.cseq
        );
        self.send(&text);
    }

    /// CANCEL for a pending INVITE.
    pub fn cancel(&self, call: &Call) {
        self.on_invite_branch(call, "CANCEL", &call.to);
    }

    /// ACK for a final reply: same branch for a non-2xx (hop by hop), a new one along the route
    /// for a 2xx.
    pub fn ack(&self, call: &Call, reply: &SipMsg) {
        if reply.status().unwrap_or(0) >= 300 {
            self.on_invite_branch(call, "ACK", reply.header("To").unwrap_or(&call.to));
        } else {
            self.in_dialog(call, reply, "ACK", call.cseq);
        }
    }

    /// A request inside the dialog a 2xx established (ACK, BYE), sent via the proxy's route.
    pub fn in_dialog(&self, call: &Call, ok: &SipMsg, method: &str, cseq: u32) {
        let to = ok.header("To").unwrap_or(&call.to);
        let target = ok.header("Contact").unwrap_or("").trim_matches(|c| c == '<' || c == '>').split('>').next().unwrap().to_string();
        let routes: Vec<&str> = ok.headers_named("Record-Route").collect();
        let route = if routes.is_empty() { String::new() } else { format!("Route: {}\r\n", routes.join(", ")) };
        self.request(method, &target, to, &call.call_id, &call.from_tag, cseq, &route, "");
    }

    /// ACK then BYE for an answered call, waiting for the BYE's 200.
    pub fn hangup(&self, call: &Call, ok: &SipMsg) {
        self.ack(call, ok);
        self.in_dialog(call, ok, "BYE", call.cseq + 1);
        let r = self.final_reply("BYE", Duration::from_secs(5));
        assert_eq!(r.status(), Some(200), "BYE: {}", r.raw);
    }

    /// ACK then BYE for a call answered by `callee`, which receives them and answers the BYE.
    pub fn hangup_via(&self, call: &Call, ok: &SipMsg, callee: &Ua) {
        self.ack(call, ok);
        callee.expect_request("ACK", Duration::from_secs(5));
        self.in_dialog(call, ok, "BYE", call.cseq + 1);
        let bye = callee.expect_request("BYE", Duration::from_secs(5));
        callee.reply(&bye, 200, "OK");
        let r = self.final_reply("BYE", Duration::from_secs(5));
        assert_eq!(r.status(), Some(200), "BYE: {}", r.raw);
    }

    /// Replies to a request it received (copies Via/From/To/Call-ID/CSeq, adds a To tag).
    pub fn reply(&self, req: &SipMsg, code: u16, reason: &str) {
        let mut text = format!("SIP/2.0 {code} {reason}\r\n");
        for (k, v) in &req.headers {
            let lk = k.to_ascii_lowercase();
            if ["via", "v", "from", "f", "call-id", "i", "cseq", "record-route"].contains(&lk.as_str()) {
                text += &format!("{k}: {v}\r\n");
            } else if lk == "to" || lk == "t" {
                if code > 100 && !v.contains("tag=") {
                    text += &format!("{k}: {v};tag=to{}\r\n", self.port);
                } else {
                    text += &format!("{k}: {v}\r\n");
                }
            }
        }
        text += &format!("Contact: <{}>\r\nContent-Length: 0\r\n\r\n", self.contact_uri());
        // Back to where the request came from (a proxy other than ours, in a cluster).
        let to = if req.from_port != 0 { req.from_port } else { self.proxy };
        self.sock.send_to(text.as_bytes(), SocketAddr::from(([127, 0, 0, 1], to))).unwrap();
    }

    /// A device's side of a CANCEL: 200 to the CANCEL, 487 to the INVITE, and the proxy's ACK
    /// of the 487 taken in, where one comes.
    pub fn answer_cancel(&self, invite: &SipMsg, timeout: Duration) {
        let cancel = self.expect_request("CANCEL", timeout);
        self.reply(&cancel, 200, "OK");
        self.reply(invite, 487, "Request Terminated");
        // From 6.1 TM does not match (nor ACK) a reply of a transaction that is over: the 487
        // of a branch cancelled because another answered (the configs' reply_route drops it).
        let wait = if late_replies_matched() { Duration::from_secs(2) } else { Duration::from_millis(20) };
        let _ = self.recv_matching(wait, |m| m.method() == Some("ACK"));
    }
}

/// Lets the REGISTER routes of devices that just registered finish. save() sends the 200 before
/// the route's ts_append*() runs: a call arriving in between gets those devices too (caught up,
/// or appended late: rightly, a device registering as the call comes in is awake), which tests
/// that count on which device rings when must not provoke. Nothing to wait on is visible from
/// outside, hence the pause.
pub fn settle() {
    std::thread::sleep(MS(50));
}

pub const SECS: fn(u64) -> Duration = Duration::from_secs;
pub const MS: fn(u64) -> Duration = Duration::from_millis;
