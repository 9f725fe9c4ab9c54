//! Pushes workflow file changes to clients: a debounced watcher on the workflows folder (the
//! folder, not the files, so rename-and-replace saves are seen) reads each touched workflow
//! until two reads agree, then sends `workflow_changed`, `workflow_invalid` (with located
//! diagnostics) or `workflow_deleted`. A revision already announced is not announced again.
//!
//! The folder is watched recursively, so subgraph files (`lib/`, or any path a workflow names)
//! are seen too: a change to one re-validates every workflow that includes it, at any depth,
//! and announces it again (same revision, with `because`: the changed files, relative to the
//! workflows folder), so a canvas showing it reloads its subgraph nodes.
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::events::ServerEvent;
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use weft_engine::{Registry, Workflow};

use crate::file_watch::{read_settled, watch_key};

use super::hub::Hub;
use super::paths::check_name;
use super::workflows::{revision, EXTENSION};

pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

fn is_workflow_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
}

/// The top-level workflows (by name) that include one of `changed`, with the changed files
/// each includes, relative to `root`.
fn includers(
    registry: &Registry,
    root: &Path,
    changed: &BTreeSet<PathBuf>,
) -> Vec<(String, Vec<u8>, Vec<String>)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let library = [root.join("lib")];
    let paths = weft_engine::subgraph::SubgraphPaths {
        base_dir: root,
        library: &library,
    };
    let mut found = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        let Some(name) = workflow_name(&path) else {
            continue;
        };
        let Some(bytes) = std::fs::read(&path).ok() else {
            continue;
        };
        let Ok(workflow) = Workflow::parse(&bytes) else {
            continue;
        };
        let (_, files) =
            weft_engine::subgraph::expand_subgraphs_with_files(&workflow, registry, &paths);
        // A library file that appeared (or went) under a type name the workflow uses but
        // could not resolve is news for it too.
        let library_dir = watch_key(&library[0].join("x"));
        let library_dir = library_dir.parent().unwrap_or(root);
        let named: Vec<PathBuf> = workflow
            .nodes
            .values()
            .map(|n| library_dir.join(format!("{}.yaml", n.type_name)))
            .filter(|f| changed.contains(f))
            .collect();
        let mut because: Vec<String> = files
            .iter()
            .map(|f| watch_key(f))
            .chain(named)
            .filter(|f| changed.contains(f))
            .filter_map(|f| {
                f.strip_prefix(root)
                    .ok()
                    .map(|r| r.to_string_lossy().into_owned())
            })
            .collect();
        because.sort();
        because.dedup();
        if !because.is_empty() {
            found.push((name, bytes, because));
        }
    }
    found.sort();
    found
}

fn workflow_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix(&format!(".{EXTENSION}"))?;
    check_name(stem, "").ok()?;
    Some(stem.to_string())
}

/// The message for a workflow's current bytes: changed (valid) or invalid with diagnostics;
/// `because`: the subgraph files whose change it is.
fn announcement(
    registry: &Registry,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    because: Option<Vec<String>>,
) -> ServerEvent {
    let revision = revision(bytes);
    let diagnostics = match Workflow::parse(bytes) {
        Ok(w) => super::workflows::validate_expanded(
            registry,
            dir,
            &super::workflows::folder_of(dir, name),
            &w,
        ),
        Err(d) => d,
    };
    let name = name.to_string();
    if diagnostics.is_empty() {
        ServerEvent::WorkflowChanged {
            name,
            revision,
            because,
        }
    } else {
        ServerEvent::WorkflowInvalid {
            name,
            revision,
            diagnostics,
            because,
        }
    }
}

impl Watcher {
    pub fn start(dir: &Path, registry: Arc<Registry>, hub: Arc<Hub>) -> notify::Result<Self> {
        // Canonical, so event paths compare with the includes an expansion names.
        let watched: PathBuf = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let dir = watched.clone();
        let mut announced: HashMap<String, Option<String>> = HashMap::new();
        let mut debouncer = new_debouncer(
            Duration::from_millis(80),
            None,
            move |result: DebounceEventResult| {
                let Ok(events) = result else { return };
                // Reads are not changes (and this callback's own reads would wake it again).
                let touched: BTreeSet<PathBuf> = events
                    .iter()
                    .filter(|e| !matches!(e.kind, notify::EventKind::Access(_)))
                    .flat_map(|e| e.paths.iter())
                    .filter(|p| is_workflow_file(p))
                    .map(|p| watch_key(p))
                    .collect();
                // Workflows: the files directly in the folder, and the library's files
                // directly in lib/, as `lib/NAME` (an editor may have one open).
                let library = dir.join("lib");
                let names: BTreeSet<String> = touched
                    .iter()
                    .filter_map(|p| {
                        let name = workflow_name(p)?;
                        let parent = p.parent()?;
                        if parent == dir.as_path() {
                            Some(name)
                        } else if parent == library.as_path() {
                            Some(format!("lib/{name}"))
                        } else {
                            None
                        }
                    })
                    .collect();
                let mut sent = BTreeSet::new();
                for name in &names {
                    let file = dir.join(format!("{name}.{EXTENSION}"));
                    let message = match read_settled(&file) {
                        None => {
                            if announced.insert(name.clone(), None) == Some(None) {
                                continue;
                            }
                            ServerEvent::WorkflowDeleted { name: name.clone() }
                        }
                        Some(bytes) => {
                            let rev = revision(&bytes);
                            if announced.insert(name.clone(), Some(rev.clone()))
                                == Some(Some(rev.clone()))
                            {
                                continue;
                            }
                            announcement(&registry, &dir, name, &bytes, None)
                        }
                    };
                    hub.send(message);
                    sent.insert(name.clone());
                }
                if touched.is_empty() {
                    return;
                }
                // Let the changed subgraph files settle before the workflows that include
                // them are expanded again.
                for path in &touched {
                    read_settled(path);
                }
                for (name, bytes, because) in includers(&registry, &dir, &touched) {
                    if sent.contains(&name) {
                        // Announced above, from its own save, with these files already read.
                        continue;
                    }
                    let message = announcement(&registry, &dir, &name, &bytes, Some(because));
                    hub.send(message);
                }
            },
        )?;
        debouncer.watch(&watched, RecursiveMode::Recursive)?;
        Ok(Self {
            _debouncer: debouncer,
        })
    }
}
