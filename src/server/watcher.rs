//! Pushes workflow file changes to clients: a debounced watcher on the workflows folder (the
//! folder, not the files, so rename-and-replace saves are seen) reads each touched workflow
//! until two reads agree, then sends `workflow_changed`, `workflow_invalid` (with located
//! diagnostics) or `workflow_deleted`. A revision already announced is not announced again.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use serde_json::json;
use weft_engine::{Registry, Workflow};

use super::hub::Hub;
use super::paths::check_name;
use super::workflows::{revision, EXTENSION};

pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// The file's bytes once two reads a moment apart agree (an in-place save can be caught
/// between its truncate and its write); `None` when it is gone.
fn read_settled(file: &Path) -> Option<Vec<u8>> {
    let mut previous = std::fs::read(file).ok();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(15));
        let current = std::fs::read(file).ok();
        if current == previous {
            return current;
        }
        previous = current;
    }
    previous
}

fn workflow_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.strip_suffix(&format!(".{EXTENSION}"))?;
    check_name(stem, "").ok()?;
    Some(stem.to_string())
}

impl Watcher {
    pub fn start(dir: &Path, registry: Arc<Registry>, hub: Arc<Hub>) -> notify::Result<Self> {
        let watched: PathBuf = dir.to_path_buf();
        let dir = watched.clone();
        let mut announced: HashMap<String, Option<String>> = HashMap::new();
        let mut debouncer = new_debouncer(
            Duration::from_millis(80),
            None,
            move |result: DebounceEventResult| {
                let Ok(events) = result else { return };
                let mut names: Vec<String> = events
                    .iter()
                    .flat_map(|e| e.paths.iter())
                    .filter_map(|p| workflow_name(p))
                    .collect();
                names.sort();
                names.dedup();
                for name in names {
                    let file = dir.join(format!("{name}.{EXTENSION}"));
                    let message = match read_settled(&file) {
                        None => {
                            if announced.insert(name.clone(), None) == Some(None) {
                                continue;
                            }
                            json!({"event": "workflow_deleted", "name": name})
                        }
                        Some(bytes) => {
                            let rev = revision(&bytes);
                            if announced.insert(name.clone(), Some(rev.clone()))
                                == Some(Some(rev.clone()))
                            {
                                continue;
                            }
                            let diagnostics = match Workflow::parse(&bytes) {
                                Ok(w) => super::workflows::validate_expanded(&registry, &dir, &w),
                                Err(d) => d,
                            };
                            if diagnostics.is_empty() {
                                json!({"event": "workflow_changed", "name": name, "revision": rev})
                            } else {
                                json!({"event": "workflow_invalid", "name": name, "revision": rev, "diagnostics": diagnostics})
                            }
                        }
                    };
                    hub.send(message.to_string().into());
                }
            },
        )?;
        debouncer.watch(&watched, RecursiveMode::NonRecursive)?;
        Ok(Self {
            _debouncer: debouncer,
        })
    }
}
