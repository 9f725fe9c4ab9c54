//! Memory on CPU: loading an SD1.5-sized fp16 single-file checkpoint (2.1 GB; fp32 in memory,
//! 4.0 GiB of weights) must peak under 4.7 GiB resident, so the mapped file's pages and the
//! fp16 copies are released as each tensor is converted. Alone in its binary: it reads the
//! peak resident memory of the children this process waited for.
use std::process::Command;

use weft_test_support::{children_peak_rss, write_sd15_shaped_checkpoint};

const GOAL: u64 = 4_700 * 1024 * 1024 * 1024 / 1000; // 4.7 GiB

#[test]
fn loading_an_sd15_checkpoint_on_cpu_peaks_under_4_7_gib() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("sd15.safetensors");
    write_sd15_shaped_checkpoint(&checkpoint).expect("writing the checkpoint");
    let workflow = dir.path().join("load.yaml");
    std::fs::write(
        &workflow,
        format!(
            "weft: 1\nnodes:\n  model:\n    type: LoadCheckpoint\n    name: {}\n    precision: fp32\n",
            serde_json::to_string(checkpoint.to_str().unwrap()).unwrap()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["run", workflow.to_str().unwrap(), "--target", "model"])
        .args(["--device", "cpu", "--output"])
        .arg(dir.path())
        .output()
        .expect("weft runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let peak = children_peak_rss();
    println!(
        "peak resident memory {:.2} GiB",
        peak as f64 / (1u64 << 30) as f64
    );
    assert!(
        peak < GOAL,
        "loading peaked at {:.2} GiB resident (goal < 4.7 GiB)",
        peak as f64 / (1u64 << 30) as f64
    );
}
