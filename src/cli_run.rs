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
use weft::grid as crate_grid;
use weft_engine::sweep::{self, Axis, AxisValues, SweepMode, SweepPlan};
use weft_engine::Diagnostic;

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
    execute_batched(worker, workflow, None, options, cancel)
}

/// As [`execute`], computing `batch`'s other sweep cells in this run's batch.
pub fn execute_batched(
    worker: &DeviceWorker,
    workflow: Workflow,
    batch: Option<weft_engine::Batch>,
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
            // A warning (a LoRA's layers that patch nothing, a flagged image) must not vanish
            // with the progress bar: printed above it on standard error.
            Event::Notice { node, message, .. } => {
                events_bar.suspend(|| eprintln!("note: {node}: {message}"))
            }
            _ => {}
        }
    };
    let report = worker
        .run_blocking_batched(workflow, options.target.clone(), batch, cancel, on_event)
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

fn status_exit_code(status: RunStatus) -> ExitCode {
    match status {
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

/// A workflow file made ready to run: one workflow, or a sweep's cells (each expanded and
/// checked); and the subgraph files it includes (what `watch` watches besides the file).
pub enum Prepared {
    One(Workflow),
    Sweep(SweepPlan, Vec<Workflow>),
}

/// What [`prepare`] makes of a file: ready to run, or its errors; and the subgraph files it
/// includes.
pub type PreparedFile = (Result<Prepared, Vec<Diagnostic>>, Vec<std::path::PathBuf>);

/// Reads `file` with the options' `--set`s and `--sweep`s. The sweep is made into cells
/// before subgraphs are inlined and node modes applied, so an axis may name a subgraph node's
/// exposed input or a bypassed node; each cell is expanded after.
pub fn prepare(file: &Path, options: &RunOptions) -> Result<PreparedFile> {
    let mut workflow = match crate::load_unexpanded(file, &options.sets)? {
        Ok(w) => w,
        Err(errors) => return Ok((Err(errors), Vec::new())),
    };
    let registry = weft_nodes::registry();
    let max_cells = options.max_cells.unwrap_or(sweep::DEFAULT_MAX_CELLS);
    let planned = add_cli_axes(&mut workflow, options, max_cells)
        .and_then(|()| sweep::plan(&workflow, &registry, max_cells));
    let plan = match planned {
        Ok(plan) => plan,
        Err(errors) => return Ok((Err(errors), Vec::new())),
    };
    Ok(match plan {
        None => {
            let (expanded, files) = crate::expand_workflow(file, &workflow);
            (expanded.map(Prepared::One), files)
        }
        Some(plan) => {
            let files = crate::expand_workflow(file, &plan.workflow(0)).1;
            let cells = expand_cells(file, &plan, &registry, options.target.as_deref());
            (cells.map(|cells| Prepared::Sweep(plan, cells)), files)
        }
    })
}

/// Runs what [`prepare`] made: the one workflow, or the sweep's cells and its contact sheet;
/// prints the reports. The outcome (a sweep's worst cell's).
pub fn run_prepared(
    file: &Path,
    worker: &DeviceWorker,
    prepared: Prepared,
    options: &RunOptions,
    cancel: CancelToken,
) -> Result<RunStatus> {
    match prepared {
        Prepared::Sweep(plan, cells) => run_sweep(file, worker, &plan, cells, options, cancel),
        Prepared::One(workflow) => {
            let report = execute(worker, workflow, options, cancel)?;
            if !options.json {
                print_report(file, &report, false, options.why);
            } else if report.status == RunStatus::Invalid {
                crate::print_diagnostics(file, &report.errors);
            }
            Ok(report.status)
        }
    }
}

pub fn run_once(file: &Path, options: &RunOptions) -> Result<ExitCode> {
    let prepared = match prepare(file, options)?.0 {
        Ok(prepared) => prepared,
        Err(errors) => {
            if options.json {
                print_invalid_events(&errors);
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
    let status = run_prepared(file, &worker, prepared, options, cancel)?;
    Ok(status_exit_code(status))
}

/// Adds the `--sweep node.input=VALUES` axes to the workflow's sweep (replacing an axis of the
/// same name); `--zip` takes them together.
fn add_cli_axes(
    workflow: &mut Workflow,
    options: &RunOptions,
    max_cells: usize,
) -> Result<(), Vec<Diagnostic>> {
    let mut errors = Vec::new();
    for flag in &options.sweeps {
        let Some((name, values)) = flag.split_once('=') else {
            errors.push(
                Diagnostic::new(format!("--sweep {flag}: expected NODE.INPUT=VALUES"))
                    .hint("e.g. --sweep sample.seed=1..8 or --sweep sample.cfg=4,6,8"),
            );
            continue;
        };
        match sweep::parse_cli_values(values, max_cells) {
            Ok(values) => {
                let axis = Axis {
                    values: AxisValues::List(values.into_iter().map(|v| (v, None)).collect()),
                    pos: None,
                };
                let section = workflow.sweep.get_or_insert_with(Default::default);
                section.axes.insert(name.trim().to_string(), axis);
            }
            Err(message) => errors.push(
                Diagnostic::new(format!("--sweep {flag}: {message}"))
                    .hint("VALUES is a list 1,2,3 or a range 1..8 or 4..8 step 2"),
            ),
        }
    }
    if options.zip {
        workflow.sweep.get_or_insert_with(Default::default).mode = SweepMode::Zip;
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// How many sweep cells that differ only in a sampler's seed `weft plan` shows batched
/// (`weft run --batch`'s default).
pub const DEFAULT_BATCH: usize = 4;

/// Every cell of a sweep with its subgraphs inlined and node modes applied, each checked
/// before any runs (the axis values reaching a subgraph's inside are checked only here); the
/// first failing cell's errors, prefixed with its number, otherwise.
pub fn expand_cells(
    file: &Path,
    plan: &SweepPlan,
    registry: &weft_engine::Registry,
    target: Option<&str>,
) -> Result<Vec<Workflow>, Vec<Diagnostic>> {
    (0..plan.len())
        .map(|cell| {
            let checked = crate::expand_workflow(file, &plan.workflow(cell))
                .0
                .and_then(|wf| {
                    let mut errors = weft_engine::validate(&wf, registry, target);
                    if errors.is_empty() {
                        Ok(wf)
                    } else {
                        weft_engine::subgraph::attribute_files(&wf, &mut errors);
                        Err(errors)
                    }
                });
            checked.map_err(|mut errors| {
                for e in &mut errors {
                    e.message = format!("sweep cell {cell}: {}", e.message);
                }
                errors
            })
        })
        .collect()
}

/// The worst outcome of a sweep's cells decides its exit code.
fn worst(a: RunStatus, b: RunStatus) -> RunStatus {
    let rank = |s: RunStatus| match s {
        RunStatus::Succeeded => 0,
        RunStatus::Cancelled => 1,
        RunStatus::Failed => 2,
        RunStatus::Invalid => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// A free `<output>/<stem>_grid_NNNNN.png` (earlier grids are kept, like SaveImage's files).
fn grid_path(output: &Path, file: &Path) -> std::path::PathBuf {
    let stem = file
        .file_stem()
        .map_or("sweep".into(), |s| s.to_string_lossy().into_owned());
    (1..)
        .map(|n| output.join(format!("{stem}_grid_{n:05}.png")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| output.join(format!("{stem}_grid.png")))
}

/// Runs a sweep's cells in order on one worker (sharing its cache, so what the cells share
/// runs once), a summary per cell, then the contact sheet.
fn run_sweep(
    file: &Path,
    worker: &DeviceWorker,
    plan: &SweepPlan,
    cells: Vec<Workflow>,
    options: &RunOptions,
    cancel: CancelToken,
) -> Result<RunStatus> {
    let mut cells: Vec<Option<Workflow>> = cells.into_iter().map(Some).collect();
    let mut status = RunStatus::Succeeded;
    let mut images = Vec::with_capacity(plan.len());
    let total = plan.len();
    // The first cell of each batch computes the batch; the others find their samples cached.
    let registry = weft_nodes::registry();
    let mut batch_led_by: Vec<Option<weft_engine::Batch>> = vec![None; total];
    for batch in plan.batches(&registry, options.batch) {
        if let [first, others @ ..] = batch.cells.as_slice() {
            if !others.is_empty() {
                batch_led_by[*first] = Some(weft_engine::Batch {
                    node: batch.node.clone(),
                    others: others
                        .iter()
                        .filter_map(|&cell| cells[cell].clone())
                        .collect(),
                });
            }
        }
    }
    for cell in 0..total {
        let values = plan.values(cell);
        let shown: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if cancel.is_cancelled() {
            images.push(None);
            status = worst(status, RunStatus::Cancelled);
            continue;
        }
        let header = format!("cell {}/{total}: {}", cell + 1, shown.join(" "));
        if options.json {
            let values: serde_json::Map<String, serde_json::Value> = values
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                .collect();
            println!(
                "{}",
                serde_json::json!({"event": "sweep_cell", "cell": cell, "cells": total, "values": values})
            );
        } else {
            println!("{header}");
        }
        let batch = batch_led_by[cell].take();
        let workflow = cells[cell].take().expect("each cell runs once");
        let report = execute_batched(worker, workflow, batch, options, cancel.clone())?;
        if !options.json {
            print_report(file, &report, false, options.why);
        } else if report.status == RunStatus::Invalid {
            crate::print_diagnostics(file, &report.errors);
        }
        status = worst(status, report.status);
        images.push(
            report
                .outputs
                .iter()
                .chain(&report.kept)
                .find(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
                .cloned(),
        );
    }
    let layout = crate_grid::layout(plan);
    let path = grid_path(&options.output, file);
    crate_grid::write(&layout, &images, &path)?;
    let (rows, columns) = plan.shape();
    if options.json {
        println!(
            "{}",
            serde_json::json!({"event": "sweep_finished", "cells": total, "rows": rows, "columns": columns, "grid": path})
        );
    } else {
        println!(
            "grid {rows}x{columns} of {total} cells: wrote {}",
            path.display()
        );
    }
    Ok(status)
}
