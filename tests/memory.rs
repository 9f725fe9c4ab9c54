//! Memory on CPU with an SD1.5-sized fp16 single-file checkpoint (2.1 GB; fp32 in memory,
//! 4.0 GiB of weights): a whole txt2img run must peak under 4.7 GiB resident (the mapped file's
//! pages and the fp16 copies are released as each tensor is converted), and sampler steps after
//! the first must reuse their buffers instead of page-faulting fresh memory (freed tensor
//! memory stays in the heap during a run: `weft_engine::host_memory`), and a CPU run never maps
//! the CUDA libraries (`weft_cuda::load`). Alone in its binary: it reads the peak resident
//! memory of the children this process waited for.
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use weft_test_support::{children_peak_rss, write_sd15_shaped_checkpoint};

const GOAL: u64 = 4_700 * 1024 * 1024 * 1024 / 1000; // 4.7 GiB
/// Page faults a steady sampler step may take, as the median of the steps after the first:
/// 16384 pages (64 MiB at 4 KiB). Before freed memory was kept, every step of this run faulted
/// about 464,000 pages (1.8 GB). One step may fault more when the heap grows once (seen:
/// 21,985 pages in one run of ten), so a single step is allowed four times the median's bound.
const FAULTS_PER_STEP: u64 = 16_384;
const FAULTS_ONE_STEP: u64 = 4 * FAULTS_PER_STEP;

/// Minor page faults of a running process so far (`/proc/PID/stat`, field 10).
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc stat");
    // The command name (field 2) may hold spaces; fields after it follow its closing paren.
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    after_name.split(' ').nth(7).unwrap().parse().unwrap()
}

#[test]
fn an_sd15_txt2img_run_on_cpu_peaks_under_4_7_gib_and_its_steps_reuse_memory() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("sd15.safetensors");
    write_sd15_shaped_checkpoint(&checkpoint).expect("writing the checkpoint");
    let workflow = dir.path().join("txt2img.yaml");
    let name = serde_json::to_string(checkpoint.to_str().unwrap()).unwrap();
    std::fs::write(
        &workflow,
        format!(
            "weft: 1
nodes:
  model: {{type: LoadCheckpoint, name: {name}, precision: fp32}}
  positive: {{type: PromptEncode, encoder: $model.text_encoder, text: a red circle}}
  negative: {{type: PromptEncode, encoder: $model.text_encoder, text: ''}}
  latent: {{type: EmptyLatent, width: 64, height: 64}}
  sample: {{type: Sampler, model: $model.unet, positive: $positive.conditioning,
           negative: $negative.conditioning, latent: $latent.latent, seed: 1, steps: 4,
           cfg: 7.0, sampler: euler, schedule: normal}}
  decode: {{type: VaeDecode, vae: $model.vae, latent: $sample.latent}}
"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "run",
            workflow.to_str().unwrap(),
            "--target",
            "decode",
            "--json",
        ])
        .args(["--threads", "1"])
        .args(["--device", "cpu", "--output"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft runs");
    let pid = child.id();
    let mut events = Vec::new();
    let mut faults_at_step = Vec::new();
    let mut cuda_mapped = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains(r#""event":"progress""#) {
            faults_at_step.push(minor_faults(pid));
            if cuda_mapped.is_none() {
                let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
                cuda_mapped = Some(maps.contains("libtorch_cuda"));
            }
        }
        events.push(line);
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        events.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    let peak = children_peak_rss();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let per_step: Vec<u64> = faults_at_step.windows(2).map(|w| w[1] - w[0]).collect();
    println!(
        "peak resident memory {:.2} GiB; page faults per step after the first: {per_step:?}",
        gib(peak)
    );
    assert!(
        peak < GOAL,
        "the run peaked at {:.2} GiB resident (goal < 4.7 GiB)",
        gib(peak)
    );
    assert_eq!(per_step.len(), 3, "four progress events: {events:?}");
    assert_eq!(
        cuda_mapped,
        Some(false),
        "a --device cpu run mapped libtorch_cuda (about 350 MB resident it does not need)"
    );
    let mut sorted = per_step.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    assert!(
        median < FAULTS_PER_STEP && sorted.iter().all(|&f| f < FAULTS_ONE_STEP),
        "sampler steps page-faulted {per_step:?} pages (median at most {FAULTS_PER_STEP}, each \
         at most {FAULTS_ONE_STEP}): freed tensor memory went back to the kernel between steps"
    );
}
