//! The fuzzer builds, reads its seeds and runs clean for a few seconds (the long run is by
//! hand: see the README's Fuzzing section).
use std::process::Command;

#[test]
fn fuzzer_runs_a_few_seconds_without_finding_a_problem() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weft-fuzz"))
        .args(["--seconds", "3", "--seed", "11", "--out"])
        .arg(out_dir.path())
        .output()
        .expect("weft-fuzz runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" seeds, "), "{stdout}");
    let runs: u64 = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("weft-fuzz: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a summary line");
    assert!(runs > 100, "only {runs} inputs in 3 s: {stdout}");
}
