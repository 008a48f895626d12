//! The foundation: Debian's own kamailio loads our tsilo.so, starts, answers SIP and RPC, and
//! refuses (cleanly, with tsilo's error line) a config without the modules tsilo needs.

mod harness;
use harness::*;
use std::process::Command;

const CFG: &str = include_str!("configs/tsilo.cfg");

fn config() -> String {
    CFG.replace("{FR_INV}", "30000").replace("{USE_DOMAIN}", "0")
}

#[test]
fn kamailio_loads_our_module_and_answers_sip_and_rpc() {
    let k = Kamailio::start(&config());
    let ua = Ua::new("alice", k.port);
    assert_eq!(ua.options().and_then(|r| r.status()), Some(200));
    // The installed Kamailio (5.6.3 on Debian 12, 6.0.1 on Debian 13) loaded us.
    let version = k.kamcmd(&["core.version"]).unwrap();
    assert!(version.contains(&installed_version()), "{version}");
    // The tsilo.so mapped into Kamailio is ours, not Debian's C module.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", k.pid)).unwrap();
    let ours = module_dir().join("tsilo.so").canonicalize().unwrap();
    assert!(maps.contains(ours.to_str().unwrap()), "our tsilo.so is not mapped");
    assert!(!maps.contains(&format!("{}/tsilo.so", stock_modules())));
    assert!(k.kamcmd(&["ts.dump"]).unwrap().contains("Size: 2048"));
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
    // One INFO line names this tsilo, for operators reading the log.
    let kamailio = installed_version().split_whitespace().nth(1).unwrap().to_string();
    let banner = format!("tsilo (Rust) {} for Kamailio {kamailio}", env!("CARGO_PKG_VERSION"));
    let lines: Vec<_> = k.log().lines().filter(|l| l.contains(&banner)).map(str::to_string).collect();
    assert!(lines.len() == 1 && lines[0].contains("INFO") && lines[0].contains("tsilo ["), "{lines:?}\n{}", k.log_tail(30));
}

/// The test config without the named module (and without the script lines that need it).
fn without(module: &str) -> String {
    config()
        .lines()
        .filter(|l| !l.contains(&format!("\"{module}.so\"")) && !l.contains(&format!("modparam(\"{module}\"")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn without_tm_kamailio_refuses_to_start_with_a_tsilo_error() {
    // Everything that needs tm goes too; tsilo must say what is missing.
    let cfg = format!(
        "#!KAMAILIO\nlisten=udp:127.0.0.1:{{PORT}}\nloadmodule \"sl.so\"\nloadmodule \"usrloc.so\"\n\
         loadmodule \"ctl.so\"\nmodparam(\"ctl\", \"binrpc\", \"unix:{{CTL}}\")\nloadmodule \"tsilo.so\"\n\
         request_route {{\n\tsl_send_reply(\"200\", \"OK\");\n}}\n"
    );
    let log = Kamailio::start_expect_failure(&cfg);
    assert!(
        log.lines().any(|l| l.contains("tsilo [") && l.contains("ERROR") && l.contains("load the tm module before tsilo")),
        "no tsilo error line:\n{log}"
    );
    assert!(!log.contains("SIGSEGV") && !log.contains("panic"), "{log}");
}

#[test]
fn without_registrar_kamailio_refuses_to_start_with_a_tsilo_error() {
    let log = Kamailio::start_expect_failure(&without("registrar").replace("save(\"location\")", "1").replace("lookup(\"location\")", "1"));
    assert!(
        log.lines().any(|l| l.contains("tsilo [") && l.contains("load the registrar module before tsilo")),
        "no tsilo error line:\n{log}"
    );
}

/// The statistics are registered through the C shim, which compiles against a core built with
/// or without STATISTICS (upstream fixed the C module's mod_init for the latter after 6.0.1; a
/// core without it has no register_module_stats to link to). Such a core cannot run tsilo at all
/// (registrar and usrloc do not build without STATISTICS, measured on master), so here: the
/// statistics are there, on a minimal config that late-forks.
#[test]
fn statistics_follow_what_the_core_was_built_with() {
    let cfg = "debug=2\nlog_stderror=yes\nchildren=2\nlisten=udp:127.0.0.1:{PORT}\nauto_aliases=no\nexit_timeout=5\n\
         loadmodule \"tm.so\"\nloadmodule \"sl.so\"\nloadmodule \"usrloc.so\"\nloadmodule \"registrar.so\"\n\
         loadmodule \"ctl.so\"\nloadmodule \"kex.so\"\nloadmodule \"tsilo.so\"\n\
         modparam(\"ctl\", \"binrpc\", \"unix:{CTL}\")\nmodparam(\"usrloc\", \"db_mode\", 0)\n\
         request_route {\n\
         \tif (method == \"REGISTER\") { save(\"location\"); ts_append(\"location\", \"sip:bob@127.0.0.1\"); exit; }\n\
         \tif (method == \"CANCEL\") { if (t_check_trans()) t_relay(); exit; }\n\
         \tif (method == \"INVITE\") { t_newtran(); ts_store(); if (!lookup(\"location\")) { t_reply(\"404\", \"Not Found\"); exit; } t_relay(); exit; }\n\
         \tsl_send_reply(\"200\", \"OK\");\n}\n";
    let k = Kamailio::start(cfg);
    assert!(!k.log().contains("built without statistics"), "{}", k.log_tail(20));
    let stats = k.kamcmd(&["stats.get_statistics", "tsilo:"]).unwrap();
    assert!(stats.contains("tsilo:stored_transactions = 0"), "{stats}");
    let ts = k.kamcmd(&["ts.stats"]).unwrap();
    assert!(ts.contains("stored_transactions: 0"), "{ts}");
    // And it late-forks.
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new("bob", k.port);
    let tablet = Ua::new("bob", k.port);
    assert_eq!(phone.register("").status(), Some(200));
    let call = alice.invite("bob");
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");
    assert_eq!(tablet.register("").status(), Some(200));
    let late = tablet.expect_request("INVITE", SECS(5));
    assert_eq!(late.call_id(), call.call_id);
    tablet.reply(&late, 180, "Ringing");
    alice.cancel(&call);
    phone.answer_cancel(&inv, SECS(5));
    tablet.answer_cancel(&late, SECS(5));
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
}

#[test]
fn every_symbol_the_module_needs_is_exported_by_kamailio() {
    let nm = |args: &[&str]| String::from_utf8(Command::new("nm").args(args).output().unwrap().stdout).unwrap();
    let so = module_dir().join("tsilo.so");
    let undefined = nm(&["-D", "--undefined-only", so.to_str().unwrap()]);
    let core = nm(&["-D", "--defined-only", kamailio_binary().to_str().unwrap()]);
    let exported: std::collections::HashSet<&str> = core.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    let missing: Vec<&str> = undefined
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| !s.contains('@') && !s.starts_with("_ITM") && !s.starts_with("__gmon") && !s.starts_with("__cxa"))
        .filter(|s| !exported.contains(s))
        .collect();
    assert!(missing.is_empty(), "tsilo.so needs symbols kamailio does not export: {missing:?}");
    // And it exports what the loader looks for.
    let defined = nm(&["-D", "--defined-only", so.to_str().unwrap()]);
    for sym in ["exports", "module_version", "module_flags", "module_interface_ver", "mod_register"] {
        assert!(defined.lines().any(|l| l.ends_with(&format!(" {sym}"))), "{sym} not exported");
    }
}

#[test]
fn tsilo_functions_in_the_wrong_route_are_refused_at_startup() {
    for call in ["ts_store();", "ts_append(\"location\", \"$tu\");", "ts_append_to(\"1\", \"2\", \"location\");"] {
        let cfg = format!("{}\nonreply_route[WRONG] {{\n\t{call}\n}}\n", config());
        let log = Kamailio::start_expect_failure(&cfg);
        assert!(log.contains("Command cannot be used in the block"), "{call}:\n{log}");
    }
}
