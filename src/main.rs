//! weft command-line interface: run, validate, watch (hot reload), schema, nodes, and the
//! ComfyUI conversions (import, export-comfy).
mod cli_run;
mod comfy_cli;
mod overrides;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use weft_engine::{Diagnostic, Workflow};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Node-graph workflow engine for diffusion image generation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow file (YAML or JSON, or a PNG weft saved: it carries its workflow) and
    /// print what each node did.
    Run {
        file: PathBuf,
        #[command(flatten)]
        options: RunOptions,
    },
    /// Check a workflow file; print every error with its line:column and exit non-zero.
    Validate {
        file: PathBuf,
        /// Print the errors as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what a run would execute, in order, with each node's cache key.
    Plan {
        file: PathBuf,
        /// Override an input: --set node.input=value.
        #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
        sets: Vec<String>,
        /// Plan only what this node needs.
        #[arg(long)]
        target: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-run a workflow each time its file is saved, re-executing only what changed.
    Watch {
        file: PathBuf,
        #[command(flatten)]
        options: RunOptions,
    },
    /// Print the TypeScript types of the /ws events, generated from the server's Rust types
    /// (`make event-types` writes web-ui/src/generated/events.ts).
    #[command(hide = true)]
    EventTypes,
    /// Print the JSON Schema of workflow files (for editor completion and checks).
    Schema {
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Model folders whose models the schema suggests for model inputs.
        #[command(flatten)]
        models: weft::model_args::ModelArgs,
        /// Folder of subgraph files listed as node types (NAME.yaml is type NAME).
        #[arg(long, default_value = "workflows/lib")]
        library: PathBuf,
    },
    /// The disk tier of the cache: what it holds, or empty it.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Serve the HTTP + WebSocket API (and the browser editor) on 127.0.0.1:8188.
    Serve(weft::server::ServeArgs),
    /// Run queued runs from a fleet's PostgreSQL database (docs/scaling.md), beside API
    /// servers started with `weft serve --queue`.
    Worker(weft::server::fleet::WorkerArgs),
    /// List the node types with their inputs and outputs.
    Nodes {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Model folders whose models model inputs list as choices.
        #[command(flatten)]
        models: weft::model_args::ModelArgs,
        /// Folder of subgraph files listed as node types (NAME.yaml is type NAME).
        #[arg(long, default_value = "workflows/lib")]
        library: PathBuf,
        /// Print the ComfyUI node types weft imports, as ComfyUI's GET /object_info describes them.
        #[arg(long)]
        comfy: bool,
    },
    /// Convert a ComfyUI workflow (API or UI format JSON, or a PNG ComfyUI saved) into a weft workflow (docs/comfyui.md).
    Import {
        file: PathBuf,
        /// Write the YAML here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Use a weft model for a ComfyUI model file: --model v1-5-pruned-emaonly.safetensors=tiny-shapes.
        #[arg(long = "model", value_name = "COMFYUI_NAME=WEFT_NAME")]
        models: Vec<String>,
        /// The folder ComfyUI's LoadImage names are relative to (ComfyUI's input/).
        #[arg(long, default_value = "input")]
        inputs: String,
    },
    /// Convert a weft workflow into ComfyUI's API format (JSON), for the node types ComfyUI has.
    ExportComfy {
        file: PathBuf,
        /// Write the JSON here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The folder LoadImage paths are made relative to (ComfyUI's input/).
        #[arg(long, default_value = "input")]
        inputs: String,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Entries and bytes in the disk cache.
    Stats {
        /// Folder of the disk cache (weft serve's is <data>/cache).
        #[arg(long, default_value = "data/cache")]
        cache_dir: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every entry of the disk cache.
    Clear {
        /// Folder of the disk cache (weft serve's is <data>/cache).
        #[arg(long, default_value = "data/cache")]
        cache_dir: PathBuf,
    },
}

#[derive(Args, Clone)]
pub struct RunOptions {
    /// Override an input: --set node.input=value (value as in YAML; $node.output links).
    #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
    pub sets: Vec<String>,
    /// Run only what this node needs.
    #[arg(long)]
    pub target: Option<String>,
    /// cpu, cuda or cuda:N (default: cuda when available, else cpu).
    #[arg(long)]
    pub device: Option<String>,
    /// Print the events as JSON lines instead of progress bars.
    #[arg(long)]
    pub json: bool,
    /// Say for each node that ran why it was not taken from the cache (which inputs or
    /// upstream nodes changed since the last run; useful with `watch`).
    #[arg(long)]
    pub why: bool,
    /// Byte budget of the output cache, e.g. 512MB, 8GiB.
    #[arg(long, default_value = "8GiB")]
    pub cache_budget: String,
    /// Folder for saved images.
    #[arg(long, default_value = "out")]
    pub output: PathBuf,
    #[command(flatten)]
    pub models: weft::model_args::ModelArgs,
    /// CPU threads for tensor work (default: libtorch's choice, one per core).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Keep costly results (conditioning, latents, images) on disk for later processes, up
    /// to this size, e.g. 20GiB (0: off). Shared with other weft processes using --cache-dir.
    #[arg(long, default_value = "0", value_name = "SIZE")]
    pub disk_cache: String,
    /// Folder of the disk cache (weft serve's is <data>/cache).
    #[arg(long, default_value = "data/cache")]
    pub cache_dir: PathBuf,
    /// Sweep an input: --sweep node.input=VALUES, VALUES being 1,2,3 or 1..8 or 4..8 step 2;
    /// adds to (or replaces an axis of) the file's `sweep:` section. One run per cell.
    #[arg(long = "sweep", value_name = "NODE.INPUT=VALUES")]
    pub sweeps: Vec<String>,
    /// Take the sweep's axes together (equal lengths) instead of their cross product.
    #[arg(long)]
    pub zip: bool,
    /// Allow a sweep of more than 10,000 cells.
    #[arg(long, value_name = "N")]
    pub max_cells: Option<usize>,
    /// Sample up to N sweep cells that differ only in a sampler's seed as one batch (each
    /// cell keeps its own run, image and workflow; 1: every cell samples alone).
    #[arg(long, default_value_t = cli_run::DEFAULT_BATCH, value_name = "N")]
    pub batch: usize,
}

fn main() -> ExitCode {
    weft_engine::host_memory::keep_freed_memory_for_reuse();
    // Behave like other Unix tools when the reader of our output goes away (`weft nodes | head`).
    // SAFETY: setting a signal disposition to the default at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { file, options } => cli_run::run_once(&file, &options),
        Command::Validate { file, json } => validate(&file, json),
        Command::Watch { file, options } => watch::watch(&file, &options),
        Command::Plan {
            file,
            sets,
            target,
            json,
        } => show_plan(&file, &sets, target.as_deref(), json),
        Command::Schema {
            output,
            models,
            library,
        } => {
            let subgraphs: Vec<_> = weft_engine::subgraph::library_subgraphs(&[library])
                .into_iter()
                .map(|s| (s.name, s.interface))
                .collect();
            let schema = weft_engine::schema::workflow_schema_with_subgraphs(
                &weft_nodes::registry(),
                Some(&models.folders()?),
                &subgraphs,
            );
            let text = serde_json::to_string_pretty(&schema)? + "\n";
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::EventTypes => {
            print!("{}", weft::server::typescript::event_types());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let executor = weft_engine::ExecutorConfig {
                device: cli_run::parse_device(args.device.as_deref())?,
                cache_budget: cli_run::parse_bytes(&args.cache_budget)?,
                cpu_threads: args.threads,
                disk_cache: Some(weft_engine::disk_cache::DiskCacheConfig {
                    dir: args.data.join("cache"),
                    budget: cli_run::parse_bytes(&args.disk_cache)?,
                }),
                ..weft_engine::ExecutorConfig::default()
            };
            weft::server::run(args, executor)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(args) => {
            let executor = weft_engine::ExecutorConfig {
                device: cli_run::parse_device(args.device.as_deref())?,
                cache_budget: cli_run::parse_bytes(&args.cache_budget)?,
                cpu_threads: args.threads,
                disk_cache: match &args.cache_dir {
                    Some(dir) => Some(weft_engine::disk_cache::DiskCacheConfig {
                        dir: dir.clone(),
                        budget: cli_run::parse_bytes(&args.disk_cache)?,
                    }),
                    None => None,
                },
                ..weft_engine::ExecutorConfig::default()
            };
            weft::server::fleet::run_worker(args, executor)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache { action } => cache_command(action),
        Command::Nodes { comfy: true, .. } => {
            let info = weft::comfy::object_info::object_info(
                &weft_nodes::registry(),
                &weft::comfy::object_info::FileLists::default(),
            );
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Nodes {
            json,
            models,
            library,
            ..
        } => {
            list_nodes(json, &models.folders()?, &library)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import {
            file,
            output,
            models,
            inputs,
        } => comfy_cli::import_command(&file, output.as_deref(), &models, &inputs),
        Command::ExportComfy {
            file,
            output,
            inputs,
        } => comfy_cli::export_command(&file, output.as_deref(), &inputs),
    }
}

/// Reads a workflow file and applies --set overrides; located errors on failure.
pub fn load_workflow(
    file: &std::path::Path,
    sets: &[String],
) -> Result<Result<Workflow, Vec<Diagnostic>>> {
    Ok(load_workflow_with_files(file, sets)?.0)
}

/// The first bytes of every PNG file.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The workflow text of a file: the file itself, or for a PNG the workflow a weft SaveImage
/// embedded in it (subgraphs already inlined, so it runs without the files it came from).
fn workflow_bytes(file: &std::path::Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    if !bytes.starts_with(PNG_SIGNATURE) {
        return Ok(bytes);
    }
    match weft_nodes::image::workflow_from_png(file) {
        Ok(Some(text)) => Ok(text.into_bytes()),
        Ok(None) => anyhow::bail!(
            "{} is a PNG without a weft workflow (no '{}' text chunk); weft runs the PNGs its SaveImage writes",
            file.display(),
            weft_nodes::image::WORKFLOW_PNG_KEY
        ),
        Err(e) => anyhow::bail!("{e}"),
    }
}

/// A workflow read and expanded, or its located errors; and the subgraph files it includes.
pub type Loaded = (Result<Workflow, Vec<Diagnostic>>, Vec<PathBuf>);

/// [`load_workflow`], and the subgraph files it includes at any depth (what `watch` watches
/// besides the file itself; named even when the expansion failed).
pub fn load_workflow_with_files(file: &std::path::Path, sets: &[String]) -> Result<Loaded> {
    match load_unexpanded(file, sets)? {
        Ok(workflow) => Ok(expand_workflow(file, &workflow)),
        Err(errors) => Ok((Err(errors), Vec::new())),
    }
}

/// A workflow file read with its --set overrides applied, its subgraph nodes and node modes
/// not yet rewritten: what a sweep's axes name (a subgraph node's exposed input, a bypassed
/// node's input), so a sweep is made into cells from it and each cell expanded after.
pub fn load_unexpanded(
    file: &std::path::Path,
    sets: &[String],
) -> Result<Result<Workflow, Vec<Diagnostic>>> {
    let bytes = workflow_bytes(file)?;
    let mut workflow = match Workflow::parse(&bytes) {
        Ok(w) => w,
        Err(errors) => return Ok(Err(errors)),
    };
    let registry = weft_nodes::registry();
    for set in sets {
        overrides::apply_set(&mut workflow, &registry, set)?;
    }
    // A reroute point is only drawing: one whose link is gone is said, not refused.
    for warning in workflow.prune_reroutes() {
        eprintln!("weft: {}: {warning}", file.display());
    }
    Ok(Ok(workflow))
}

/// `workflow` (read from `file`) with its subgraph nodes inlined and its node modes applied,
/// and the subgraph files it includes at any depth.
pub fn expand_workflow(file: &std::path::Path, workflow: &Workflow) -> Loaded {
    let registry = weft_nodes::registry();
    // Subgraph nodes are inlined here, so everything after sees plain nodes.
    let base_dir = file.parent().unwrap_or(std::path::Path::new("."));
    let library = library_dirs(file);
    let paths = weft_engine::subgraph::SubgraphPaths {
        base_dir,
        library: &library,
    };
    let (expanded, files) =
        weft_engine::subgraph::expand_subgraphs_with_files(workflow, &registry, &paths);
    let result = match expanded {
        Ok(Some(expanded)) => Ok(expanded),
        Ok(None) => Ok(workflow.clone()),
        Err(errors) => Err(errors),
    };
    (result, files)
}

/// The folders library subgraph types of a workflow file are looked up in: `lib/` beside it.
pub fn library_dirs(file: &std::path::Path) -> [PathBuf; 1] {
    let base_dir = file.parent().unwrap_or(std::path::Path::new("."));
    [base_dir.join("lib")]
}

pub fn print_diagnostics(file: &std::path::Path, errors: &[Diagnostic]) {
    let name = file.display().to_string();
    for e in errors {
        eprintln!("{}", e.render(&name));
    }
    eprintln!(
        "{} error{} in {name}; nothing was run",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
}

fn validate(file: &std::path::Path, json: bool) -> Result<ExitCode> {
    let registry = weft_nodes::registry();
    let errors = match load_unexpanded(file, &[])? {
        Err(errors) => errors,
        Ok(workflow) => {
            // A sweep's axis values are checked first (on the workflow as written, where an
            // axis may name a subgraph node or a bypassed one); then every cell, expanded.
            let limit = weft_engine::sweep::DEFAULT_MAX_CELLS;
            match weft_engine::sweep::plan(&workflow, &registry, limit) {
                Err(errors) => errors,
                Ok(Some(plan)) => cli_run::expand_cells(file, &plan, &registry, None)
                    .err()
                    .unwrap_or_default(),
                Ok(None) => match expand_workflow(file, &workflow).0 {
                    Err(errors) => errors,
                    Ok(workflow) => {
                        let mut errors = weft_engine::validate(&workflow, &registry, None);
                        weft_engine::subgraph::attribute_files(&workflow, &mut errors);
                        errors
                    }
                },
            }
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&errors)?);
    } else if errors.is_empty() {
        println!("{}: ok", file.display());
    } else {
        print_diagnostics(file, &errors);
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Prints the plan: each node's key, type and id. With a `sweep:` section, each cell's plan
/// under a header with its values; a node whose key an earlier cell planned is marked
/// `shared` (the cache runs it once), and a cell whose sampler is computed in an earlier
/// cell's batch says so.
fn show_plan(
    file: &std::path::Path,
    sets: &[String],
    target: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let workflow = match load_unexpanded(file, sets)? {
        Ok(w) => w,
        Err(errors) => {
            print_diagnostics(file, &errors);
            return Ok(ExitCode::from(2));
        }
    };
    let registry = std::sync::Arc::new(weft_nodes::registry());
    let limit = weft_engine::sweep::DEFAULT_MAX_CELLS;
    let sweep = match weft_engine::sweep::plan(&workflow, &registry, limit) {
        Ok(sweep) => sweep,
        Err(errors) => {
            print_diagnostics(file, &errors);
            return Ok(ExitCode::from(2));
        }
    };
    let cells = match &sweep {
        Some(sweep) => cli_run::expand_cells(file, sweep, &registry, target),
        None => expand_workflow(file, &workflow).0.map(|w| vec![w]),
    };
    let cells = match cells {
        Ok(cells) => cells,
        Err(errors) => {
            print_diagnostics(file, &errors);
            return Ok(ExitCode::from(2));
        }
    };
    // Which cell's run samples each cell (its batch's first), for cells batched with others.
    let mut batched_in: Vec<Option<usize>> = vec![None; cells.len()];
    if let Some(sweep) = &sweep {
        for batch in sweep.batches(&registry, cli_run::DEFAULT_BATCH) {
            if batch.cells.len() > 1 {
                for &cell in &batch.cells {
                    batched_in[cell] = Some(batch.cells[0]);
                }
            }
        }
    }
    let mut executor =
        weft_engine::Executor::new(registry.clone(), weft_engine::ExecutorConfig::default());
    let mut seen = std::collections::HashSet::new();
    for (cell, workflow) in cells.iter().enumerate() {
        let plan = match executor.plan(workflow, target) {
            Ok(p) => p,
            Err(mut errors) => {
                if sweep.is_some() {
                    for e in &mut errors {
                        e.message = format!("sweep cell {cell}: {}", e.message);
                    }
                }
                print_diagnostics(file, &errors);
                return Ok(ExitCode::from(2));
            }
        };
        let values = sweep.as_ref().map(|s| s.values(cell));
        if let (Some(values), false) = (&values, json) {
            let shown: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let batch = match batched_in[cell] {
                Some(first) if first == cell => "  (samples its batch)".to_string(),
                Some(first) => format!("  (sampled in cell {}'s batch)", first + 1),
                None => String::new(),
            };
            println!(
                "cell {}/{}: {}{batch}",
                cell + 1,
                cells.len(),
                shown.join(" ")
            );
        }
        for step in &plan.steps {
            let type_name = registry.by_index(step.type_index).spec.type_name;
            let key: String = step.key.0.iter().map(|b| format!("{b:02x}")).collect();
            let shared = !seen.insert(step.key);
            if json {
                let mut line = serde_json::json!({"node": step.id, "type": type_name, "key": key});
                if let Some(values) = &values {
                    line["cell"] = cell.into();
                    line["values"] = serde_json::to_value(values)?;
                    line["shared"] = shared.into();
                    if let Some(first) = batched_in[cell] {
                        line["batch_of_cell"] = first.into();
                    }
                }
                println!("{line}");
            } else if sweep.is_some() {
                let mark = if shared { "  shared" } else { "" };
                println!("  {}  {}  {}{mark}", &key[..16], step.id, type_name);
            } else {
                println!("{}  {}  {}", &key[..16], step.id, type_name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_nodes(
    json: bool,
    models: &weft_engine::ModelFolders,
    library: &std::path::Path,
) -> Result<()> {
    let registry = weft_nodes::registry();
    if json {
        let catalogue = weft_engine::catalogue::node_catalogue(&registry, Some(models));
        let mut nodes = catalogue["nodes"].as_array().cloned().unwrap_or_default();
        nodes.extend(weft_engine::catalogue::subgraph_catalogue(
            &registry,
            &[library.to_path_buf()],
        ));
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(());
    }
    for r in registry.iter() {
        let s = &r.spec;
        let marker = if s.output_node { "  [output node]" } else { "" };
        println!("{} ({}){marker}\n  {}", s.type_name, s.category, s.doc);
        for i in &s.inputs {
            let mut extra = Vec::new();
            if let Some(d) = &i.default {
                extra.push(format!("default {d}"));
            }
            match (i.min, i.max) {
                (Some(lo), Some(hi)) => extra.push(format!("{lo}..{hi}")),
                (Some(lo), None) => extra.push(format!(">= {lo}")),
                _ => {}
            }
            if !i.choices.is_empty() {
                extra.push(i.choices.join("|"));
            }
            if i.optional {
                extra.push("optional".into());
            }
            let extra = if extra.is_empty() {
                String::new()
            } else {
                format!(" [{}]", extra.join(", "))
            };
            println!(
                "    in  {:<12} {:<14} {}{extra}",
                i.name,
                i.ty.name(),
                i.doc
            );
        }
        for o in &s.outputs {
            println!("    out {:<12} {:<14} {}", o.name, o.ty.name(), o.doc);
        }
    }
    // Library subgraphs read like the other types, from the same catalogue entries.
    for entry in weft_engine::catalogue::subgraph_catalogue(&registry, &[library.to_path_buf()]) {
        println!(
            "{} (subgraph)\n  {}",
            entry["type"].as_str().unwrap_or("?"),
            entry["doc"].as_str().unwrap_or("")
        );
        for i in entry["inputs"].as_array().into_iter().flatten() {
            let default = match &i["default"] {
                serde_json::Value::Null => String::new(),
                d => format!(" [default {d}]"),
            };
            println!(
                "    in  {:<12} {:<14} {}{default}",
                i["name"].as_str().unwrap_or("?"),
                i["type"].as_str().unwrap_or("?"),
                i["doc"].as_str().unwrap_or("")
            );
        }
        for o in entry["outputs"].as_array().into_iter().flatten() {
            println!(
                "    out {:<12} {:<14} {}",
                o["name"].as_str().unwrap_or("?"),
                o["type"].as_str().unwrap_or("?"),
                o["doc"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// `weft cache stats|clear`.
fn cache_command(action: CacheAction) -> Result<ExitCode> {
    use weft_engine::disk_cache::{DiskCache, DiskCacheConfig};
    let open = |dir: PathBuf| DiskCache::new(DiskCacheConfig { dir, budget: 0 });
    match action {
        CacheAction::Stats { cache_dir, json } => {
            let stats = open(cache_dir.clone()).count();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"dir": cache_dir, "entries": stats.entries, "bytes": stats.bytes})
                );
            } else {
                println!(
                    "{}: {} entries, {:.1} MiB",
                    cache_dir.display(),
                    stats.entries,
                    stats.bytes as f64 / (1 << 20) as f64
                );
            }
        }
        CacheAction::Clear { cache_dir } => {
            let removed = open(cache_dir.clone())
                .clear()
                .with_context(|| format!("clearing {}", cache_dir.display()))?;
            println!(
                "{}: removed {} entries ({:.1} MiB)",
                cache_dir.display(),
                removed.entries,
                removed.bytes as f64 / (1 << 20) as f64
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
