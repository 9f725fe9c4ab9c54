//! `weft run`: one run on the device worker with progress bars (or JSON events), ending with a
//! line per node: ran or cached, and its time.
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tch::Device;
use weft_engine::disk_cache::DiskCacheConfig;
use weft_engine::worker::DeviceWorker;
use weft_engine::{CancelToken, Event, ExecutorConfig, RunReport, RunStatus, Workflow};

use crate::RunOptions;

/// The device of `--device`. CUDA support (libtorch_cuda and its libraries, ~350 MB resident)
/// is loaded only for `cuda`, or for `auto` on a machine with an NVIDIA driver.
pub fn parse_device(spec: Option<&str>) -> Result<Device> {
    match spec {
        None | Some("auto") => {
            if weft_cuda::nvidia_driver_present() {
                // Without CUDA support (a CPU-only torch, say), auto means the CPU.
                let _ = weft_cuda::load();
            }
            Ok(Device::cuda_if_available())
        }
        Some("cpu") => Ok(Device::Cpu),
        Some(s) if s == "cuda" || s.starts_with("cuda:") => {
            let index: usize = match s.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n
                    .parse()
                    .with_context(|| format!("--device {s}: expected cuda:N"))?,
            };
            weft_cuda::load().with_context(|| format!("--device {s}"))?;
            let count = tch::Cuda::device_count() as usize;
            if count == 0 {
                bail!("--device {s}: no CUDA device is available here; use --device cpu");
            }
            if index >= count {
                bail!(
                    "--device {s}: only {count} CUDA device(s) (cuda:0..cuda:{})",
                    count - 1
                );
            }
            Ok(Device::Cuda(index))
        }
        Some(other) => bail!("--device {other}: expected cpu, cuda or cuda:N"),
    }
}

pub fn parse_bytes(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .trim()
        .parse()
        .with_context(|| format!("cache budget '{text}': expected e.g. 512MB or 8GiB"))?;
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => bail!("cache budget '{text}': unknown unit '{other}'"),
    };
    if number < 0.0 || !number.is_finite() {
        bail!("cache budget '{text}' must be a positive size");
    }
    Ok((number * scale) as u64)
}

pub fn start_worker(options: &RunOptions) -> Result<DeviceWorker> {
    let models = options.models.folders()?;
    for warning in weft_nodes::model_files::shadowed_checkpoints(&models) {
        eprintln!("weft: {warning}");
    }
    let config = ExecutorConfig {
        device: parse_device(options.device.as_deref())?,
        cache_budget: parse_bytes(&options.cache_budget)?,
        output_dir: options.output.clone(),
        models,
        // The command line reads what the workflow names, as a script would.
        files: weft_engine::FileAccess::anywhere(),
        cpu_threads: options.threads,
        disk_cache: Some(DiskCacheConfig {
            dir: options.cache_dir.clone(),
            budget: parse_bytes(&options.disk_cache)?,
        }),
    };
    Ok(DeviceWorker::start(
        Arc::new(weft_nodes::registry()),
        config,
    ))
}

/// Runs one workflow on the worker, showing progress; returns the report.
pub fn execute(
    worker: &DeviceWorker,
    workflow: Workflow,
    options: &RunOptions,
    cancel: CancelToken,
) -> Result<RunReport> {
    let json = options.json;
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} nodes {msg}")
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let events_bar = bar.clone();
    let on_event = move |event: &Event| {
        if json {
            if let Ok(line) = serde_json::to_string(event) {
                println!("{line}");
            }
            return;
        }
        match event {
            Event::RunStarted { planned, .. } => events_bar.set_length(*planned as u64),
            Event::NodeStarted { node, .. } => events_bar.set_message(node.clone()),
            Event::Progress {
                node, step, total, ..
            } => events_bar.set_message(format!("{node} {step}/{total}")),
            Event::NodeCached { .. } | Event::NodeFinished { .. } => events_bar.inc(1),
            _ => {}
        }
    };
    let report = worker
        .run_blocking(workflow, options.target.clone(), cancel, on_event)
        .context("the device worker stopped")?;
    bar.finish_and_clear();
    Ok(report)
}

fn format_micros(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}

fn format_bytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// On a CUDA device, what the cache accounts for beside what the device holds.
fn device_memory_line(memory: &weft_engine::device_memory::MemoryReport) -> Option<String> {
    let device = memory.device?;
    Some(format!(
        "memory: cache {} of {} ({} values); cuda allocated {} (peak {}), reserved {}",
        format_bytes(memory.cache_bytes),
        format_bytes(memory.cache_budget),
        memory.cache_entries,
        format_bytes(device.allocated),
        format_bytes(device.allocated_peak),
        format_bytes(device.reserved),
    ))
}

/// Most nodes listed one by one at the end of a run; larger graphs get a summary.
const LISTED_NODES: usize = 500;

/// The human summary of a run, on standard output (or standard error, where standard output
/// carries JSON events and must hold nothing else).
pub fn print_report(file: &Path, report: &RunReport, to_stderr: bool, why: bool) {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let out: &mut dyn std::io::Write = if to_stderr { &mut stderr } else { &mut stdout };
    // A closed pipe is not worth failing the run over.
    let _ = write_report(out, file, report, why);
}

fn write_report(
    out: &mut dyn std::io::Write,
    file: &Path,
    report: &RunReport,
    why: bool,
) -> std::io::Result<()> {
    if report.status == RunStatus::Invalid {
        crate::print_diagnostics(file, &report.errors);
        return Ok(());
    }
    let width = report
        .nodes
        .iter()
        .take(LISTED_NODES)
        .map(|n| n.id.len())
        .max()
        .unwrap_or(0);
    for n in report.nodes.iter().take(LISTED_NODES) {
        let what = if n.from_disk {
            "cached (disk)".to_string()
        } else if n.cached {
            "cached".to_string()
        } else if why && !n.why.is_empty() {
            format!(
                "ran    {:>9}  ({})",
                format_micros(n.micros),
                n.why.join(", ")
            )
        } else {
            format!("ran    {:>9}", format_micros(n.micros))
        };
        writeln!(out, "  {:<width$}  {:<16} {what}", n.id, n.type_name)?;
    }
    if report.nodes.len() > LISTED_NODES {
        writeln!(
            out,
            "  ... and {} more nodes",
            report.nodes.len() - LISTED_NODES
        )?;
    }
    for (node, result) in &report.results {
        writeln!(out, "{node}: {result}")?;
    }
    for path in &report.outputs {
        writeln!(out, "wrote {}", path.display())?;
    }
    for path in &report.kept {
        writeln!(
            out,
            "kept {} (saved by an earlier run; nothing changed)",
            path.display()
        )?;
    }
    for e in &report.errors {
        eprintln!("{}", e.render(&file.display().to_string()));
    }
    if let Some(line) = report.memory.as_ref().and_then(device_memory_line) {
        writeln!(out, "{line}")?;
    }
    let status = match report.status {
        RunStatus::Succeeded => "done",
        RunStatus::Failed => "FAILED",
        RunStatus::Cancelled => "cancelled",
        RunStatus::Invalid => "invalid",
    };
    writeln!(
        out,
        "{status}: {} ran, {} cached, {} in {}",
        report.ran(),
        report.cached(),
        report.nodes.len(),
        format_micros(report.micros)
    )
}

pub fn exit_code(report: &RunReport) -> ExitCode {
    match report.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Failed => ExitCode::from(1),
        RunStatus::Invalid => ExitCode::from(2),
        RunStatus::Cancelled => ExitCode::from(130),
    }
}

/// The events a run that never started would have sent (`--json` consumers see every outcome
/// as `invalid` then `run_finished`).
pub fn print_invalid_events(errors: &[weft_engine::Diagnostic]) {
    let events = [
        Event::Invalid {
            run: 0,
            errors: errors.to_vec(),
        },
        Event::RunFinished {
            run: 0,
            status: RunStatus::Invalid,
            ran: 0,
            cached: 0,
            micros: 0,
        },
    ];
    for event in events {
        if let Ok(line) = serde_json::to_string(&event) {
            println!("{line}");
        }
    }
}

pub fn run_once(file: &Path, options: &RunOptions) -> Result<ExitCode> {
    let workflow = match crate::load_workflow(file, &options.sets)? {
        Ok(w) => w,
        Err(errors) => {
            if options.json {
                println!(
                    "{}",
                    serde_json::to_string(&Event::Invalid {
                        run: 0,
                        errors: errors.clone()
                    })?
                );
            }
            crate::print_diagnostics(file, &errors);
            return Ok(ExitCode::from(2));
        }
    };
    let worker = start_worker(options)?;
    let cancel = CancelToken::new();
    let handler_token = cancel.clone();
    // First Ctrl-C cancels between nodes (and inside long nodes); a second one exits at once.
    let _ = ctrlc::set_handler(move || {
        if handler_token.is_cancelled() {
            std::process::exit(130);
        }
        eprintln!("\ncancelling (Ctrl-C again to quit now)");
        handler_token.cancel();
    });
    let report = execute(&worker, workflow, options, cancel)?;
    if !options.json {
        print_report(file, &report, false, options.why);
    } else if report.status == RunStatus::Invalid {
        crate::print_diagnostics(file, &report.errors);
    }
    Ok(exit_code(&report))
}
