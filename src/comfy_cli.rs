//! `weft import` and `weft export-comfy`: the ComfyUI conversions on the command line.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use weft_engine::Workflow;

use weft::comfy::export::export;
use weft::comfy::file::{import_bytes, FileError};
use weft::comfy::import::ImportOptions;
use weft::comfy::Issue;

fn print_issues(file: &Path, what: &str, issues: &[Issue]) {
    for issue in issues {
        eprintln!("{}: error: {issue}", file.display());
    }
    eprintln!(
        "{} error{} in {}; nothing was {what}",
        issues.len(),
        if issues.len() == 1 { "" } else { "s" },
        file.display()
    );
}

fn print_notes(notes: &[Issue]) {
    for note in notes {
        eprintln!("note: {note}");
    }
}

/// Parses `--model COMFY=WEFT` pairs.
pub fn parse_models(pairs: &[String]) -> Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((comfy, weft)) if !comfy.is_empty() && !weft.is_empty() => {
                Ok((comfy.to_string(), weft.to_string()))
            }
            _ => bail!("--model {p}: expected COMFYUI_NAME=WEFT_NAME, e.g. v1-5-pruned-emaonly.safetensors=tiny-shapes"),
        })
        .collect()
}

/// The YAML text of an imported workflow, with a line saying where it came from.
pub fn imported_yaml(workflow: &Workflow, source: &Path, format: &str) -> String {
    let yaml = workflow.to_yaml();
    let (first, rest) = yaml.split_once('\n').unwrap_or((&yaml, ""));
    let name = source.file_name().map_or_else(
        || source.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    format!("{first}\n# Imported from {name} (ComfyUI {format}) by `weft import`.\n{rest}")
}

pub fn import_command(
    file: &Path,
    output: Option<&Path>,
    models: &[String],
    inputs_dir: &str,
) -> Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let options = ImportOptions {
        models: parse_models(models)?,
        inputs_dir: inputs_dir.to_string(),
        ..ImportOptions::default()
    };
    // A ComfyUI PNG: its UI workflow, else the API prompt that made it.
    let imported = match import_bytes(&bytes, &options) {
        Ok(i) => i,
        Err(FileError::Issues(issues)) => {
            print_issues(file, "written", &issues);
            return Ok(ExitCode::from(2));
        }
        Err(e) => bail!("{}: {e}", file.display()),
    };
    print_notes(&imported.notes);
    let yaml = imported_yaml(&imported.workflow, file, imported.format.name());
    // Validate what was written, so errors point at its lines and name the ComfyUI node.
    let shown: PathBuf = output.map_or_else(|| PathBuf::from("<stdout>"), Path::to_path_buf);
    let registry = weft_nodes::registry();
    let errors = match Workflow::parse_str(&yaml) {
        Ok(wf) => weft_engine::validate(&wf, &registry, None),
        Err(errors) => errors,
    };
    match output {
        Some(path) => {
            std::fs::write(path, &yaml).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{yaml}"),
    }
    let comfy_id: HashMap<&str, &str> = imported
        .ids
        .iter()
        .map(|(c, w)| (w.as_str(), c.as_str()))
        .collect();
    for e in &errors {
        let from = e
            .node
            .as_deref()
            .and_then(|n| comfy_id.get(n))
            .map(|c| format!(" (ComfyUI node {c})"))
            .unwrap_or_default();
        let rendered = e.render(&shown.display().to_string());
        match rendered.split_once('\n') {
            Some((first, rest)) => eprintln!("{first}{from}\n{rest}"),
            None => eprintln!("{rendered}{from}"),
        }
    }
    eprintln!(
        "imported {} node{} from {} ({}){}",
        imported.workflow.nodes.len(),
        if imported.workflow.nodes.len() == 1 {
            ""
        } else {
            "s"
        },
        file.display(),
        imported.format.name(),
        match output {
            Some(p) => format!(" into {}", p.display()),
            None => String::new(),
        }
    );
    if errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{} error{} in the imported workflow; fix them before running it",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        );
        Ok(ExitCode::from(2))
    }
}

pub fn export_command(file: &Path, output: Option<&Path>, inputs_dir: &str) -> Result<ExitCode> {
    let workflow = match crate::load_workflow(file, &[])? {
        Ok(w) => w,
        Err(errors) => {
            crate::print_diagnostics(file, &errors);
            return Ok(ExitCode::from(2));
        }
    };
    let exported = match export(&workflow, &weft_nodes::registry(), inputs_dir) {
        Ok(e) => e,
        Err(issues) => {
            print_issues(file, "written", &issues);
            return Ok(ExitCode::from(2));
        }
    };
    print_notes(&exported.notes);
    let text = serde_json::to_string_pretty(&exported.json)? + "\n";
    match output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
