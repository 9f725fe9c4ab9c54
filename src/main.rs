//! weft command-line interface: run, validate, watch (hot reload), schema, nodes.
mod cli_run;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use weft_engine::{Constant, Diagnostic, InputValue, Workflow};

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
    /// Run a workflow file and print what each node did.
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
    /// Print the JSON Schema of workflow files (for editor completion and checks).
    Schema {
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Serve the HTTP + WebSocket API (and the browser editor) on 127.0.0.1:8188.
    Serve(weft::server::ServeArgs),
    /// List the node types with their inputs and outputs.
    Nodes {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
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
    /// Byte budget of the output cache, e.g. 512MB, 8GiB.
    #[arg(long, default_value = "4GiB")]
    pub cache_budget: String,
    /// Folder for saved images.
    #[arg(long, default_value = "out")]
    pub output: PathBuf,
    /// Folder of model files.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// CPU threads for tensor work (default: libtorch's choice, one per core).
    #[arg(long)]
    pub threads: Option<i32>,
}

fn main() -> ExitCode {
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
        Command::Schema { output } => {
            let schema = weft_engine::schema::workflow_schema(&weft_nodes::registry());
            let text = serde_json::to_string_pretty(&schema)? + "\n";
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let executor = weft_engine::ExecutorConfig {
                device: cli_run::parse_device(args.device.as_deref())?,
                cache_budget: cli_run::parse_bytes(&args.cache_budget)?,
                cpu_threads: args.threads,
                ..weft_engine::ExecutorConfig::default()
            };
            weft::server::run(args, executor)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Nodes { json } => {
            list_nodes(json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads a workflow file and applies --set overrides; located errors on failure.
pub fn load_workflow(
    file: &std::path::Path,
    sets: &[String],
) -> Result<Result<Workflow, Vec<Diagnostic>>> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut workflow = match Workflow::parse(&bytes) {
        Ok(w) => w,
        Err(errors) => return Ok(Err(errors)),
    };
    for set in sets {
        apply_set(&mut workflow, set)?;
    }
    Ok(Ok(workflow))
}

fn apply_set(workflow: &mut Workflow, set: &str) -> Result<()> {
    let Some((path, value)) = set.split_once('=') else {
        bail!("--set {set}: expected NODE.INPUT=VALUE");
    };
    let Some((node_id, input)) = path.split_once('.') else {
        bail!("--set {set}: expected NODE.INPUT=VALUE");
    };
    let Some(node) = workflow.nodes.get_mut(node_id) else {
        let known: Vec<&str> = workflow.nodes.keys().map(String::as_str).collect();
        let hint = weft_engine::diagnostic::closest(node_id, known.iter().copied())
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
        bail!("--set {set}: no node '{node_id}' in the workflow{hint}");
    };
    // The value is read exactly as the file would read it.
    let one = format!("weft: 1\nnodes:\n  n:\n    type: T\n    v: {value}\n");
    let parsed =
        Workflow::parse_str(&one).map_err(|e| anyhow::anyhow!("--set {set}: {}", e[0].message))?;
    let entry = parsed.nodes["n"].inputs["v"].clone();
    let entry = weft_engine::workflow::InputEntry { pos: None, ..entry };
    if let InputValue::Constant(Constant::String(s)) = &entry.value {
        if s.is_empty() && !value.is_empty() {
            bail!("--set {set}: could not read the value");
        }
    }
    node.inputs.insert(input.to_string(), entry);
    Ok(())
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
    let errors = match load_workflow(file, &[])? {
        Err(errors) => errors,
        Ok(workflow) => weft_engine::validate(&workflow, &registry, None),
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

fn show_plan(
    file: &std::path::Path,
    sets: &[String],
    target: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let workflow = match load_workflow(file, sets)? {
        Ok(w) => w,
        Err(errors) => {
            print_diagnostics(file, &errors);
            return Ok(ExitCode::from(2));
        }
    };
    let registry = std::sync::Arc::new(weft_nodes::registry());
    let mut executor =
        weft_engine::Executor::new(registry.clone(), weft_engine::ExecutorConfig::default());
    let plan = match executor.plan(&workflow, target) {
        Ok(p) => p,
        Err(errors) => {
            print_diagnostics(file, &errors);
            return Ok(ExitCode::from(2));
        }
    };
    for step in &plan.steps {
        let type_name = registry.by_index(step.type_index).spec.type_name;
        let key: String = step.key.0.iter().map(|b| format!("{b:02x}")).collect();
        if json {
            println!(
                "{}",
                serde_json::json!({"node": step.id, "type": type_name, "key": key})
            );
        } else {
            println!("{}  {}  {}", &key[..16], step.id, type_name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_nodes(json: bool) -> Result<()> {
    let registry = weft_nodes::registry();
    if json {
        let list: Vec<serde_json::Value> = registry
            .iter()
            .map(|r| {
                let s = &r.spec;
                serde_json::json!({
                    "type": s.type_name, "category": s.category, "doc": s.doc, "version": s.version,
                    "output_node": s.output_node,
                    "inputs": s.inputs.iter().map(|i| serde_json::json!({
                        "name": i.name, "type": i.ty, "doc": i.doc, "default": i.default,
                        "min": i.min, "max": i.max, "step": i.step, "choices": i.choices, "optional": i.optional,
                    })).collect::<Vec<_>>(),
                    "outputs": s.outputs.iter().map(|o| serde_json::json!({"name": o.name, "type": o.ty, "doc": o.doc})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
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
    Ok(())
}
