//! Measuring (CPU from /proc, percentiles, an RPC liveness monitor) and reporting (table, JSON,
//! the performance report, docs/performance.md).

use crate::silo_micro::{self, MicroResult};
use crate::{Module, Round};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// CPU seconds (user + system) of a process and its direct children: Kamailio's workers.
pub fn process_tree_cpu(main: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the command name, which may contain spaces, closed by the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid: u32 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        if pid == main || ppid == main {
            let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
            let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
            total += utime + stime;
        }
    }
    total as f64 / ticks
}

/// CPU seconds used by this generator so far.
pub fn self_cpu() -> f64 {
    // SAFETY: getrusage fills a local struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

pub fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v: Vec<Duration> = samples.to_vec();
    v.sort();
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn median(v: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Asks Kamailio `core.version` every second from another thread: a deadlocked proxy shows as
/// failures or a slow answer.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Duration, u64)>,
}

impl Monitor {
    pub fn start(ctl: &str) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ctl = ctl.to_string();
        let thread = std::thread::spawn(move || {
            let (mut checks, mut worst, mut failures) = (0u64, Duration::ZERO, 0u64);
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = Command::new("timeout")
                    .args(["10", "kamcmd", "-s", &ctl, "core.version"])
                    .output()
                    .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("kamailio"));
                worst = worst.max(t.elapsed());
                checks += 1;
                failures += u64::from(!ok);
                std::thread::sleep(Duration::from_secs(1));
            }
            (checks, worst, failures)
        });
        Monitor { stop, thread }
    }

    /// (checks, slowest answer, failures)
    pub fn stop(self) -> (u64, Duration, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

pub struct Report {
    pub smoke: bool,
    pub rounds: Vec<(Module, Round)>,
    pub scale: Vec<(Module, Vec<(usize, f64, f64)>)>,
    pub fan: Vec<(Module, Vec<(usize, f64, f64)>)>,
    pub micro: Vec<MicroResult>,
    /// Ours: (p50, p99) ms of REGISTER -> appended INVITE, [script ts_append, auto_append].
    pub auto: [(f64, f64); 2],
    /// Ours, two nodes over DMQ: (p50, p99) ms of REGISTER at B -> INVITE from A.
    pub cluster: (f64, f64),
    /// In-server (p50, mean) µs of [ts_store, ts_append], per module.
    pub functions: Vec<(Module, [(f64, f64); 2])>,
    pub elapsed: Duration,
    pub plan_rate: f64,
    pub plan_calls: usize,
    pub users: usize,
}

struct Metric {
    name: &'static str,
    get: fn(&Round) -> f64,
    digits: usize,
}

const METRICS: [Metric; 9] = [
    Metric { name: "completed calls", get: |r| r.completed as f64, digits: 0 },
    Metric { name: "failed calls", get: |r| r.failed as f64, digits: 0 },
    Metric { name: "calls/s at the offered rate", get: |r| r.calls_per_sec, digits: 0 },
    Metric { name: "Kamailio CPU s per 1000 calls", get: |r| r.cpu_per_1000, digits: 2 },
    Metric { name: "REGISTER -> appended INVITE p50 (ms)", get: |r| r.p50_ms, digits: 3 },
    Metric { name: "REGISTER -> appended INVITE p99 (ms)", get: |r| r.p99_ms, digits: 3 },
    Metric { name: "shm bytes per stored transaction", get: |r| r.shm_per_tx, digits: 0 },
    Metric { name: "highest offered rate with 0 failures (calls/s)", get: |r| r.max_rate, digits: 0 },
    Metric { name: "generator CPU s per 1000 calls", get: |r| r.generator_cpu_per_1000, digits: 2 },
];

impl Report {
    fn median_of(&self, module: Module, get: fn(&Round) -> f64) -> f64 {
        median(self.rounds.iter().filter(|(m, _)| *m == module).map(|(_, r)| get(r)))
    }

    fn machine() -> String {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
            .unwrap_or_default();
        // SAFETY: sysconf has no preconditions.
        let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        format!("{cores} cores, {cpu}")
    }

    fn date() -> String {
        Command::new("date").arg("-u").arg("+%Y-%m-%d").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    }

    /// The markdown summary (medians over rounds).
    pub fn table(&self) -> String {
        let mut s = String::new();
        let rounds = self.rounds.len() / 2;
        let _ = writeln!(
            s,
            "{}: measured {} on {} ({}{} interleaved rounds per module; {} late-fork calls per round at {:.0} calls/s over {} users; medians).\n",
            crate::harness::installed_version().trim_end(),
            Self::date(),
            Self::machine(),
            if self.smoke { "SMOKE run, numbers not meaningful; " } else { "" },
            rounds,
            self.plan_calls,
            self.plan_rate,
            self.users
        );
        let _ = writeln!(s, "| metric | C tsilo | Rust tsilo | ours/C |\n|---|---:|---:|---:|");
        for m in &METRICS {
            let (c, ours) = (self.median_of(Module::C, m.get), self.median_of(Module::Ours, m.get));
            let ratio = if c != 0.0 && c.is_finite() && ours.is_finite() { format!("{:.2}", ours / c) } else { "-".into() };
            let _ = writeln!(s, "| {} | {:.*} | {:.*} | {} |", m.name, m.digits, c, m.digits, ours, ratio);
        }
        let _ = writeln!(s, "\nCost as the silo grows (parked transactions, one per AoR), for one late-fork call:\n");
        let _ = writeln!(s, "| transactions stored | C: CPU ms/call | Rust: CPU ms/call | C: p50 ms | Rust: p50 ms |\n|---:|---:|---:|---:|---:|");
        let fills = self.scale.first().map_or(0, |(_, v)| v.len());
        for i in 0..fills {
            let get = |m: Module| self.scale.iter().find(|(x, _)| *x == m).map(|(_, v)| v[i]).unwrap_or((0, f64::NAN, f64::NAN));
            let (c, r) = (get(Module::C), get(Module::Ours));
            let _ = writeln!(s, "| {} | {:.3} | {:.3} | {:.3} | {:.3} |", c.0, c.1, r.1, c.2, r.2);
        }
        let _ = writeln!(s, "\nAppending to every transaction of one AoR: REGISTER -> last appended INVITE (ms), and per transaction.\n");
        let _ = writeln!(s, "| transactions on the AoR | C: total | Rust: total | C: per tx | Rust: per tx |\n|---:|---:|---:|---:|---:|");
        for i in 0..self.fan.first().map_or(0, |f| f.1.len()) {
            let get = |m: Module| self.fan.iter().find(|(x, _)| *x == m).map(|(_, v)| v[i]).unwrap_or((0, f64::NAN, f64::NAN));
            let (c, r) = (get(Module::C), get(Module::Ours));
            let _ = writeln!(s, "| {} | {:.3} | {:.3} | {:.4} | {:.4} |", c.0, c.1, r.1, c.2, r.2);
        }
        let _ = writeln!(s, "\nTime inside the script functions, per call (Kamailio's benchmark module around each call; µs, its resolution):\n");
        let _ = writeln!(s, "| function | C: p50 | Rust: p50 | C: mean | Rust: mean | ours/C (mean) |\n|---|---:|---:|---:|---:|---:|");
        for (i, name) in ["ts_store()", "ts_append() (late fork: TM sends the branch)"].iter().enumerate() {
            let get = |m: Module| self.functions.iter().find(|(x, _)| *x == m).map(|(_, v)| v[i]).unwrap_or((f64::NAN, f64::NAN));
            let (c, r) = (get(Module::C), get(Module::Ours));
            let _ = writeln!(s, "| {name} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |", c.0, r.0, c.1, r.1, r.1 / c.1);
        }
        let _ = writeln!(s, "\nOurs, REGISTER -> appended INVITE: `ts_append()` in the script vs `auto_append` (no script call):\n");
        let _ = writeln!(s, "| | script ts_append | auto_append | difference |\n|---|---:|---:|---:|");
        let [(sp50, sp99), (ap50, ap99)] = self.auto;
        let _ = writeln!(s, "| p50 (ms) | {sp50:.3} | {ap50:.3} | {:+.3} |", ap50 - sp50);
        let _ = writeln!(s, "| p99 (ms) | {sp99:.3} | {ap99:.3} | {:+.3} |", ap99 - sp99);
        let _ = writeln!(
            s,
            "\nOurs, two nodes over DMQ (examples/cluster): REGISTER sent to node B -> INVITE from node A: p50 {:.3} ms, p99 {:.3} ms.",
            self.cluster.0, self.cluster.1
        );
        let _ = writeln!(s, "\nSilo core alone (ns per operation, heap memory, 2048 slots unless `@sized`):\n");
        s += &silo_micro::to_table(&self.micro);
        s
    }

    pub fn json(&self) -> String {
        let round = |m: &Module, r: &Round| {
            format!(
                "{{\"module\":\"{}\",\"completed\":{},\"failed\":{},\"calls_per_sec\":{:.2},\"cpu_s_per_1000_calls\":{:.4},\
                 \"generator_cpu_s_per_1000_calls\":{:.4},\"register_to_invite_p50_ms\":{:.4},\"register_to_invite_p99_ms\":{:.4},\
                 \"shm_bytes_per_stored_transaction\":{:.1},\"max_rate_zero_failures\":{:.0}}}",
                m.name(),
                r.completed,
                r.failed,
                r.calls_per_sec,
                r.cpu_per_1000,
                r.generator_cpu_per_1000,
                r.p50_ms,
                r.p99_ms,
                r.shm_per_tx,
                r.max_rate
            )
        };
        let ratios: Vec<String> = METRICS
            .iter()
            .map(|m| {
                let (c, o) = (self.median_of(Module::C, m.get), self.median_of(Module::Ours, m.get));
                let r = if c != 0.0 && c.is_finite() && o.is_finite() { format!("{:.4}", o / c) } else { "null".into() };
                format!("\"{}\":{r}", m.name)
            })
            .collect();
        let series = |v: &Vec<(Module, Vec<(usize, f64, f64)>)>, a: &str, b: &str| {
            v.iter()
                .map(|(m, xs)| {
                    let pts: Vec<String> = xs.iter().map(|x| format!("{{\"n\":{},\"{a}\":{:.4},\"{b}\":{:.4}}}", x.0, x.1, x.2)).collect();
                    format!("\"{}\":[{}]", m.name(), pts.join(","))
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let micro: Vec<String> =
            self.micro.iter().map(|r| format!("{{\"op\":\"{}\",\"entries\":{},\"ns_per_op\":{:.1}}}", r.op, r.entries, r.ns_per_op)).collect();
        format!(
            "{{\"date\":\"{}\",\"machine\":\"{}\",\"smoke\":{},\"elapsed_s\":{:.1},\"rounds\":[{}],\"ratios_ours_over_c\":{{{}}},\
             \"scaling\":{{{}}},\"fanout\":{{{}}},\"auto_append_ms\":{{\"script_p50\":{:.4},\"script_p99\":{:.4},\"auto_p50\":{:.4},\"auto_p99\":{:.4}}},\"cluster_register_b_to_invite_a_ms\":{{\"p50\":{:.4},\"p99\":{:.4}}},\"function_us\":{{{}}},\"silo_micro\":[{}]}}\n",
            Self::date(),
            Self::machine().replace('"', "'"),
            self.smoke,
            self.elapsed.as_secs_f64(),
            self.rounds.iter().map(|(m, r)| round(m, r)).collect::<Vec<_>>().join(","),
            ratios.join(","),
            series(&self.scale, "cpu_ms_per_call", "p50_ms"),
            series(&self.fan, "total_ms", "per_tx_ms"),
            self.auto[0].0,
            self.auto[0].1,
            self.auto[1].0,
            self.auto[1].1,
            self.cluster.0,
            self.cluster.1,
            self.functions
                .iter()
                .map(|(m, [st, ap])| format!(
                    "\"{}\":{{\"ts_store_p50\":{:.2},\"ts_store_mean\":{:.3},\"ts_append_p50\":{:.2},\"ts_append_mean\":{:.3}}}",
                    m.name(),
                    st.0,
                    st.1,
                    ap.0,
                    ap.1
                ))
                .collect::<Vec<_>>()
                .join(","),
            micro.join(",")
        )
    }

    /// Replaces the text between the markers of the performance report (`make bench`:
    /// docs/performance.md) with the table: `bench`'s, or `bench-SECTION`'s (an upstream
    /// Kamailio's table, beside Debian's).
    pub fn update_report(&self, path: &Path, section: Option<&str>) -> Result<(), String> {
        let name = section.map_or("bench".to_string(), |s| format!("bench-{s}"));
        let (start, end) = (format!("<!-- {name}:start -->"), format!("<!-- {name}:end -->"));
        let (start, end) = (start.as_str(), end.as_str());
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let (Some(a), Some(b)) = (text.find(start), text.find(end)) else {
            return Err(format!("{} has no {start} ... {end} section", path.display()));
        };
        let new = format!("{}{start}\n{}\n{}", &text[..a], self.table(), &text[b..]);
        std::fs::write(path, new).map_err(|e| e.to_string())
    }
}
