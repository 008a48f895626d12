//! The AoR key in every registrar setting: a call stored with ts_store() under its Request-URI
//! must be found by the append of a device that registers for the same AoR, as the registrar
//! names it (unescaped user, lower case unless `case_sensitive`, `realm_prefix` stripped, with
//! usrloc's `use_domain`), both by auto_append (from usrloc's AoR) and by
//! `ts_append("location", "$tu")` (from the REGISTER's To URI).

mod harness;
use harness::*;

const CFG: &str = include_str!("configs/tsilo.cfg");

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// modparam("tsilo", "auto_append", "location"); the REGISTER route appends nothing.
    Auto,
    /// No auto_append; the REGISTER route calls ts_append("location", "$tu").
    Script,
}

/// A registrar setting and the URIs one call and its user's devices use in it.
struct Case {
    /// modparam lines added after tsilo's own.
    modparams: &'static str,
    tsilo_use_domain: u8,
    /// The caller's Request-URI (and To).
    ruri: &'static str,
    /// The devices' REGISTER To: user and domain.
    user: &'static str,
    domain: &'static str,
}

fn start(case: &Case, mode: Mode) -> Kamailio {
    let ours = format!("modparam(\"tsilo\", \"use_domain\", {})\n{}", case.tsilo_use_domain, case.modparams);
    let cfg = CFG.replace("{FR_INV}", "30000").replace("modparam(\"tsilo\", \"use_domain\", {USE_DOMAIN})", &ours);
    let defines = match mode {
        Mode::Auto => "#!define AUTO_APPEND\n",
        Mode::Script => "",
    };
    Kamailio::start(&format!("{defines}{cfg}"))
}

/// Device 1 registers, the call is stored and rings it, device 2 registers: device 2 must get
/// exactly one INVITE of the call, and device 1 no second one.
fn late_device_rings(case: &Case, mode: Mode) {
    late_device_rings_after(case, mode, &[]);
}

/// `late_device_rings`, with RPC commands run before the devices register.
fn late_device_rings_after(case: &Case, mode: Mode, rpcs: &[&[&str]]) {
    let k = start(case, mode);
    for rpc in rpcs {
        k.kamcmd(rpc).unwrap_or_else(|e| panic!("{rpc:?}: {e}"));
    }
    let quiet = match mode {
        Mode::Auto => "X-Append: none\r\n",
        Mode::Script => "",
    };
    let alice = Ua::new("alice", k.port);
    let phone = Ua::new(case.user, k.port);
    let tablet = Ua::new(case.user, k.port);
    assert_eq!(phone.register_in(case.domain, quiet).status(), Some(200));
    settle();
    alice.call_uri("INVITE", case.ruri, "");
    let inv = phone.expect_request("INVITE", SECS(5));
    phone.reply(&inv, 180, "Ringing");
    assert_eq!(tablet.register_in(case.domain, quiet).status(), Some(200));
    let Some(tinv) = tablet.recv_matching(SECS(3), |m| m.method() == Some("INVITE")) else {
        panic!(
            "{mode:?}, call to {} stored as {:?}: device 2 registering as {}@{} got no INVITE\n{}",
            case.ruri,
            k.kamcmd(&["ts.dump"]),
            case.user,
            case.domain,
            k.log_tail(30)
        );
    };
    assert_eq!(tinv.call_id(), inv.call_id());
    tablet.reply(&tinv, 180, "Ringing");
    tablet.expect_no_request("INVITE", MS(500));
    phone.expect_no_request("INVITE", MS(100));
    k.expect_stat("tsilo:added_branches", 1);
    assert!(k.module_errors().is_empty(), "{:?}", k.module_errors());
}

fn both(case: Case) {
    late_device_rings(&case, Mode::Auto);
    late_device_rings(&case, Mode::Script);
}

#[test]
fn user_case_ignored_by_default() {
    // registrar's case_sensitive defaults to 0: the AoR is "bob".
    both(Case { modparams: "", tsilo_use_domain: 0, ruri: "sip:BoB@127.0.0.1", user: "bob", domain: "127.0.0.1" });
}

#[test]
fn user_case_kept_when_case_sensitive() {
    let modparams = "modparam(\"registrar\", \"case_sensitive\", 1)\n";
    both(Case { modparams, tsilo_use_domain: 0, ruri: "sip:Bob@127.0.0.1", user: "Bob", domain: "127.0.0.1" });
}

#[test]
fn escaped_user() {
    both(Case { modparams: "", tsilo_use_domain: 0, ruri: "sip:%62ob@127.0.0.1", user: "bob", domain: "127.0.0.1" });
}

#[test]
fn escaped_at_sign_in_user() {
    // usrloc's AoR is "bob@home": the lookup URI made from it must escape the '@' again.
    both(Case { modparams: "", tsilo_use_domain: 0, ruri: "sip:bob%40home@127.0.0.1", user: "bob%40home", domain: "127.0.0.1" });
}

const DOMAINS: &str = "modparam(\"usrloc\", \"use_domain\", 1)\nmodparam(\"registrar\", \"realm_prefix\", \"sip.\")\n";

#[test]
fn realm_prefix_stripped_with_use_domain() {
    both(Case { modparams: DOMAINS, tsilo_use_domain: 1, ruri: "sip:bob@sip.example.com", user: "bob", domain: "sip.example.com" });
}

#[test]
fn realm_prefix_on_the_call_only() {
    both(Case { modparams: DOMAINS, tsilo_use_domain: 1, ruri: "sip:Bob@sip.Example.COM", user: "bob", domain: "example.com" });
}

#[test]
fn usrloc_use_domain_with_tsilo_keyed_by_user() {
    both(Case { modparams: DOMAINS, tsilo_use_domain: 0, ruri: "sip:Bob@sip.Example.COM", user: "bob", domain: "example.com" });
}

#[test]
fn usrloc_use_domain_mixed_case_domain() {
    let modparams = "modparam(\"usrloc\", \"use_domain\", 1)\n";
    both(Case { modparams, tsilo_use_domain: 1, ruri: "sip:%42ob@EXAMPLE.com", user: "bob", domain: "example.com" });
}

#[test]
fn realm_prefix_set_at_run_time_is_followed() {
    // The registrar's settings are read as it reads them (its cfg group, per process): a
    // `cfg.set` changes the AoRs it names, and the keys with them.
    if !has_stock_module("cfg_rpc") {
        eprintln!("skipped: this Kamailio has no cfg_rpc module (cfg.set)");
        return;
    }
    let modparams = "loadmodule \"cfg_rpc.so\"\nmodparam(\"usrloc\", \"use_domain\", 1)\n";
    let case = Case { modparams, tsilo_use_domain: 1, ruri: "sip:bob@sip.example.com", user: "bob", domain: "example.com" };
    for mode in [Mode::Auto, Mode::Script] {
        late_device_rings_after(&case, mode, &[&["cfg.set", "registrar", "realm_pref", "sip."]]);
    }
}
