//! CI's short smoke of the benchmark and the soak (a few hundred calls each): the programs run
//! end to end against the C module and ours, and the soak's checks pass. The full measurements
//! are `make bench` and `make soak`.

use std::process::Command;
use std::sync::Mutex;

/// One at a time: both load the machine, and the benchmark compares timings.
static SERIAL: Mutex<()> = Mutex::new(());

fn run(args: &[&str]) -> String {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_tsilo-bench")).args(args).output().expect("run tsilo-bench");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tsilo-bench {args:?} failed:\n{text}");
    text
}

#[test]
fn bench_smoke_measures_both_modules() {
    let json = std::env::temp_dir().join(format!("tsilo-bench-smoke-{}.json", std::process::id()));
    let text = run(&["bench", "--smoke", "--out", json.to_str().unwrap()]);
    assert!(text.contains("| completed calls |"), "{text}");
    let report = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    for key in ["\"module\":\"C\"", "\"module\":\"Rust\"", "\"ratios_ours_over_c\"", "\"scaling\"", "\"fanout\"", "\"silo_micro\""] {
        assert!(report.contains(key), "{key} missing from {report}");
    }
    // Every offered call completed, for both modules.
    assert!(!report.contains("\"failed\":1") && report.matches("\"failed\":0").count() == 2, "{report}");
}

#[test]
fn soak_smoke_passes() {
    let text = run(&["soak", "--smoke"]);
    assert!(text.contains("soak: PASS"), "{text}");
}
