//! Beyond the C module: bounded memory (max_transactions, max_transactions_per_aor) and the
//! operator RPCs ts.stats and ts.append, through real Kamailio and real SIP.

mod harness;
use harness::*;

const CFG: &str = include_str!("configs/tsilo.cfg");

fn config(limits: bool) -> String {
    let cfg = CFG.replace("{FR_INV}", "30000").replace("{USE_DOMAIN}", "0");
    if limits { format!("#!define LIMITS\n{cfg}") } else { cfg }
}

/// ts_store's return codes, in the order the script logged them.
fn store_rcs(k: &Kamailio) -> Vec<i32> {
    k.log().lines().filter_map(|l| l.split_once("] rc=").filter(|_| l.contains("store[")).map(|(_, rc)| rc.trim().parse().unwrap())).collect()
}

fn field(out: &str, name: &str) -> i64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}:")).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

#[test]
fn limits_refuse_with_their_code_count_and_log_once() {
    let k = Kamailio::start(&config(true));
    let alice = Ua::new("alice", k.port);
    let bob = Ua::new("bob", k.port); // registered, never answers: every MESSAGE stays pending
    let carol = Ua::new("carol", k.port);
    bob.register("X-Append: none\r\n");
    carol.register("X-Append: none\r\n");
    // A flood at bob: 3 stored (max_transactions_per_aor), the rest refused.
    for _ in 0..8 {
        alice.call("MESSAGE", "bob", "");
        bob.expect_request("MESSAGE", SECS(5));
    }
    // carol: the table (max_transactions = 4) has room for one more.
    for _ in 0..2 {
        alice.call("MESSAGE", "carol", "");
        carol.expect_request("MESSAGE", SECS(5));
    }
    let deadline = std::time::Instant::now() + SECS(5);
    while store_rcs(&k).len() < 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(MS(20));
    }
    let rcs = store_rcs(&k);
    assert_eq!(rcs, vec![1, 1, 1, -3, -3, -3, -3, -3, 1, -3], "{}", k.log_tail(40));
    assert_eq!(k.stat("tsilo:stored_transactions"), 4, "the flood did not grow the silo");
    assert_eq!(k.stat("tsilo:store_rejected"), 6);
    // One log line per 10 s per process, not one per refusal (2 workers).
    let logged = k.log().lines().filter(|l| l.contains("ts_store refused for")).count();
    assert!((1..=2).contains(&logged), "{logged} refusal lines:\n{}", k.log_tail(40));
    assert!(k.log().contains("max_transactions_per_aor reached"));

    let stats = k.kamcmd(&["ts.stats"]).unwrap();
    assert_eq!(field(&stats, "stored_transactions"), 4, "{stats}");
    assert_eq!(field(&stats, "store_rejected"), 6, "{stats}");
    assert_eq!(field(&stats, "max_transactions_per_aor_now"), 3, "{stats}");
    assert_eq!(field(&stats, "max_transactions_per_aor"), 3, "{stats}");
    assert_eq!(field(&stats, "max_transactions"), 4, "{stats}");
    assert_eq!(field(&stats, "slots"), 2048, "{stats}");
    assert_eq!(field(&stats, "slots_used"), 2, "{stats}");
    assert!(field(&stats, "longest_chain") >= 1, "{stats}");
}

#[test]
fn ts_append_rpc_appends_now_and_rejects_bad_arguments() {
    let k = Kamailio::start(&config(false));
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    phone.register("X-Append: none\r\n");
    let _call = alice.invite("bob");
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");
    tablet.register("X-Append: none\r\n"); // registered, but the script appends nothing
    tablet.expect_no_request("INVITE", MS(300));

    let out = k.kamcmd(&["ts.append", "sip:bob@127.0.0.1"]).unwrap();
    assert_eq!(field(&out, "Transactions"), 1, "{out}");
    assert_eq!(field(&out, "Branches"), 1, "{out}");
    let tinv = tablet.expect_request("INVITE", SECS(5));
    assert_eq!(tinv.call_id(), inv.call_id());
    k.expect_stat("tsilo:added_branches", 1);

    // A table without bob's contacts: the append finds no contact, and says so.
    let out = k.kamcmd(&["ts.append", "sip:bob@127.0.0.1", "nosuchtable"]).unwrap();
    assert_eq!(field(&out, "Branches"), 0, "{out}");
    assert_eq!(k.stat("tsilo:append_lookup_failed"), 1);

    for (args, code) in [
        (vec!["ts.append"], "400"),
        (vec!["ts.append", "bob"], "400"),
        (vec!["ts.append", "sip:"], "400"),
        (vec!["ts.append", "sip:nobody@127.0.0.1"], "404"),
    ] {
        let err = k.kamcmd(&args).unwrap_err();
        assert!(err.contains(code), "{args:?}: {err}");
    }
    assert_eq!(alice.options().and_then(|r| r.status()), Some(200), "still answering");
    assert!(!k.log().contains("BUG: panic"));
}

#[test]
fn hash_size_too_big_for_shm_refuses_to_start_and_says_why() {
    // -m 64 (the harness's): 2^22 slots of 24 bytes need 96 MiB.
    let log = Kamailio::start_expect_failure(&format!("#!define HASH_SIZE 4194304\n{}", config(false)));
    let line = log
        .lines()
        .find(|l| l.contains("ERROR: tsilo") && l.contains("hash_size 4194304"))
        .unwrap_or_else(|| panic!("no ERROR naming hash_size:\n{log}"));
    eprintln!("{line}");
    // What the table needs, and what -m gives (64 MiB).
    assert!(line.contains("the table needs 1006") && line.contains("(96.0 MiB)"), "{line}");
    assert!(line.contains("67108864 bytes (64.0 MiB) that -m gives"), "{line}");
    assert!(!log.contains("BUG") && !log.contains("CRITICAL"), "{log}");
}

/// The script's "big[case] rc=N" lines.
fn big_rcs(k: &Kamailio) -> Vec<(String, i32)> {
    k.log()
        .lines()
        .filter_map(|l| l.split_once("big[")?.1.split_once("] rc=").map(|(c, rc)| (c.to_string(), rc.trim().parse().unwrap())))
        .collect()
}

#[test]
fn a_256_kb_uri_is_refused_without_a_giant_log_line() {
    let k = Kamailio::start(&format!("#!define PV_BIG\n{}", config(false)));
    let alice = Ua::new("alice", k.port);
    alice.call("INVITE", "bob", "X-Big: 1\r\n");
    alice.recv_matching(SECS(10), |m| m.status() == Some(183)).unwrap_or_else(|| panic!("no 183:\n{}", k.log_tail(20)));
    let want = [("no-transaction", -1), ("store-bad-uri", -1), ("append-bad-uri", -1), ("bad-contact", -1), ("store", 1)];
    let rcs = big_rcs(&k);
    assert_eq!(rcs, want.map(|(c, rc)| (c.to_string(), rc)), "{}", k.log_tail(20));
    let log = k.log();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest <= 1024, "a log line of {longest} bytes");
    // The errors are there, with the value's start and its length.
    assert!(log.contains("no transaction defined for xxxx") && log.contains("...(262144 bytes)"), "{}", k.log_tail(20));
    assert!(log.contains("bad contact uri [xxxx"), "{}", k.log_tail(20));
    // The stored one: ts.dump shows its AoR cut to 1 KB, with its length.
    let dump = k.kamcmd(&["ts.dump"]).unwrap_or_else(|e| panic!("ts.dump: {e}"));
    let aor = dump.lines().find_map(|l| l.trim().strip_prefix("R-URI: ")).unwrap_or_else(|| panic!("{dump}"));
    assert_eq!(aor, format!("{}...(262144 bytes)", "x".repeat(1024)));
    assert_eq!(alice.options().and_then(|r| r.status()), Some(200), "still answering");
}

/// INVITEs to u0 .. u<n-1>, each stored and left ringing (X-Park in the config): a table of n
/// AoRs with a call each. About 0.6 s and 13 KB of shm per call (TM's) for 10,000.
fn park_calls(k: &Kamailio, n: u32) -> Ua {
    let alice = Ua::new("alice", k.port);
    for i in 0..n {
        alice.call("INVITE", &format!("u{i}"), "X-Park: 1\r\n");
        // Paced, so that Kamailio's socket buffer does not drop any.
        if i % 200 == 199 {
            let deadline = std::time::Instant::now() + SECS(10);
            while k.stat("tsilo:stored_ruris") < i64::from(i) - 100 && std::time::Instant::now() < deadline {
                std::thread::sleep(MS(5));
            }
        }
    }
    assert!(k.wait_stat("tsilo:stored_ruris", i64::from(n), SECS(20)), "{}", k.log_tail(20));
    alice
}

/// The `R-URI:` members of a ts.dump reply, and its `Next-Offset` if it has one.
fn dump_page(out: &str) -> (Vec<String>, Option<i64>) {
    let keys = out.lines().filter_map(|l| l.trim().strip_prefix("R-URI: ")).map(str::to_string).collect();
    let next = out.lines().find_map(|l| l.trim().strip_prefix("Next-Offset: ")).map(|v| v.parse().unwrap());
    (keys, next)
}

#[test]
fn ts_dump_pages_through_10000_aors() {
    // The C module's dump (and ours before paging) fails from about 230 AoRs on: "500
    // Internal error building the reply".
    let k = Kamailio::start_sized(&config(false), 256);
    let _alice = park_calls(&k, 10_000);
    // Longer than wt_timer: a call TM released would be gone by now.
    std::thread::sleep(MS(1500));
    let first = k.kamcmd(&["ts.dump"]).unwrap_or_else(|e| panic!("ts.dump: {e}\n{}", k.log_tail(5)));
    let stats = first.split("Stats:").nth(1).unwrap_or_else(|| panic!("no Stats: {first}"));
    assert_eq!(field(stats, "RURIs"), 10_000, "the whole table's stats: {stats}");
    assert_eq!(field(stats, "Transactions"), 10_000, "{stats}");
    let (mut keys, mut next) = dump_page(&first);
    assert_eq!(keys.len(), 100, "{first}");
    assert_eq!(first.matches("Tindex:").count(), 100, "each AoR with its transaction: {first}");
    let mut pages = 1;
    while let Some(offset) = next {
        assert_eq!(offset as usize, keys.len());
        let out = k.kamcmd(&["ts.dump", "full", &offset.to_string()]).unwrap_or_else(|e| panic!("page at {offset}: {e}"));
        let (more, n) = dump_page(&out);
        assert!(!more.is_empty(), "{out}\n{}", k.log_tail(40));
        keys.extend(more);
        next = n;
        pages += 1;
    }
    let all: std::collections::BTreeSet<_> = keys.iter().cloned().collect();
    let stored = k.stat("tsilo:stored_transactions");
    assert_eq!(all.len(), 10_000, "every AoR once, in {pages} pages; stored now {stored}:\n{}", k.log_tail(30));
    assert!(all.contains("u0") && all.contains("u9999"));
    // A page of a chosen size; past the end, an empty one; brief is one small reply.
    let (ten, next) = dump_page(&k.kamcmd(&["ts.dump", "full", "20", "s:10"]).unwrap());
    assert_eq!((ten.as_slice(), next), (&keys[20..30], Some(30)));
    let (none, next) = dump_page(&k.kamcmd(&["ts.dump", "full", "10001"]).unwrap());
    assert_eq!((none.len(), next), (0, None));
    let brief = k.kamcmd(&["ts.dump", "brief"]).unwrap();
    assert!(!brief.contains("R-URI:") && !brief.contains("Next-Offset") && field(&brief, "RURIs") == 10_000, "{brief}");
    // "s:": a string, which the RPC converts (kamcmd would take -1 for an option).
    let bad = k.kamcmd(&["ts.dump", "full", "s:-1"]);
    assert!(bad.as_ref().is_err_and(|e| e.contains("400")), "{bad:?}");
}


