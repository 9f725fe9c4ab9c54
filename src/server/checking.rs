//! Parsing and validating workflows for the routes, off the async threads: each check runs on
//! a blocking thread, a few at a time, under a deadline after which the client gets a clear
//! error (issue 18: a big file kept the HTTP threads busy for minutes). The workflow list keeps
//! each file's validity by content hash, so unchanged files are not validated again.
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use weft_engine::{Registry, Workflow};

use super::error::{ApiError, ApiResult};
use super::AppState;

/// The checks in flight and the workflow list's remembered summaries.
pub struct Checks {
    deadline: Duration,
    /// One per check allowed to run at once: work whose client gave up (or whose deadline
    /// passed) still holds its permit until it ends, so abandoned checks cannot pile up.
    permits: Arc<Semaphore>,
    /// Workflow name -> what the list said of it last time.
    summaries: Mutex<HashMap<String, Summary>>,
}

/// A workflow file's validity, valid for as long as its bytes (and, when it names types the
/// registry lacks, the folder's workflow files) stay the same.
#[derive(Clone)]
struct Summary {
    revision: String,
    /// The folder's fingerprint when the validity depends on other files (subgraphs).
    folder: Option<blake3::Hash>,
    valid: bool,
}

impl Checks {
    pub fn new(deadline: Duration) -> Self {
        // Validation is CPU work: more checks at once than cores only makes each slower.
        let at_once = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
        Self {
            deadline,
            permits: Arc::new(Semaphore::new(at_once)),
            summaries: Mutex::new(HashMap::new()),
        }
    }
}

/// The error a client gets when `what` did not finish in time.
fn too_slow(what: &str, deadline: Duration) -> ApiError {
    ApiError::DeadlineExceeded(format!(
        "{what} did not finish within {} s; the workflow is too large or the server is busy \
         (try again, or split the workflow into subgraphs)",
        deadline.as_secs_f64()
    ))
}

/// Runs `work` (parsing, validating: CPU-bound) on a blocking thread once a permit is free,
/// and answers with its result, or with `DeadlineExceeded` when the wait and the work
/// together pass the server's deadline. `what` names the work in that error.
pub async fn off_runtime<T: Send + 'static>(
    state: &AppState,
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> ApiResult<T> {
    off_runtime_gated(state, what, move |_| work()).await
}

/// Where gated work stands: its client still waits, it took effect, or its client was told
/// it ran out of time.
const WAITING: u8 = 0;
const COMMITTED: u8 = 1;
const ABANDONED: u8 = 2;

/// Lets work that ends in an effect (a queued run) take it only while its client still
/// waits: the effect and the deadline race through one atomic, so a client told it was too
/// slow never has its work take effect anyway, and one whose work took effect hears so.
pub struct Gate(Arc<AtomicU8>);

impl Gate {
    /// Whether the work may take its effect now (and from now on the client waits for it).
    pub fn commit(&self) -> bool {
        self.0
            .compare_exchange(WAITING, COMMITTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// [`off_runtime`] for work that calls [`Gate::commit`] before its effect: past the deadline
/// the client is answered `DeadlineExceeded` only if the work has not committed; otherwise
/// its result is awaited (what follows a commit is quick).
pub async fn off_runtime_gated<T: Send + 'static>(
    state: &AppState,
    what: &str,
    work: impl FnOnce(&Gate) -> T + Send + 'static,
) -> ApiResult<T> {
    let checks = &state.checks;
    let started = Instant::now();
    let permit = tokio::time::timeout(checks.deadline, checks.permits.clone().acquire_owned())
        .await
        .map_err(|_| too_slow(what, checks.deadline))?
        .map_err(|e| ApiError::internal(what, e))?;
    let left = checks.deadline.saturating_sub(started.elapsed());
    let state_of_work = Arc::new(AtomicU8::new(WAITING));
    let gate = Gate(state_of_work.clone());
    let mut running = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work(&gate)
    });
    let finished = match tokio::time::timeout(left, &mut running).await {
        Ok(finished) => finished,
        Err(_) => {
            let abandoned = state_of_work
                .compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if abandoned {
                return Err(too_slow(what, checks.deadline));
            }
            running.await
        }
    };
    finished.map_err(|failed| ApiError::internal(what, failed))
}

/// (name, revision, valid) of each named workflow file that `read` can read: the remembered
/// validity where the bytes (and what they depend on) are unchanged, a fresh validation
/// otherwise. Files are read one at a time; blocking work.
pub fn validity(
    state: &AppState,
    names: &[String],
    read: impl Fn(&str) -> Option<Vec<u8>>,
) -> Vec<(String, String, bool)> {
    let checks = &state.checks;
    let remembered = checks
        .summaries
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    // Computed at most once per call, and only when a workflow depends on other files.
    let mut folder: Option<blake3::Hash> = None;
    let mut folder_now = || *folder.get_or_insert_with(|| fingerprint(&state.roots.workflows));
    let mut fresh = HashMap::new();
    let mut answers = Vec::new();
    for name in names {
        let Some(bytes) = read(name) else {
            continue;
        };
        let revision = super::workflows::revision(&bytes);
        let known = remembered
            .get(name)
            .filter(|s| s.revision == revision && s.folder.is_none_or(|f| f == folder_now()));
        let summary = match known {
            Some(summary) => summary.clone(),
            None => {
                let (valid, depends_on_folder) = validate_file(state, name, &bytes);
                Summary {
                    revision,
                    folder: depends_on_folder.then(&mut folder_now),
                    valid,
                }
            }
        };
        answers.push((name.clone(), summary.revision.clone(), summary.valid));
        fresh.insert(name.clone(), summary);
    }
    // Only the files listed now: deleted ones are forgotten.
    if let Ok(mut summaries) = checks.summaries.lock() {
        *summaries = fresh;
    }
    answers
}

/// Whether a workflow file is valid, and whether that depends on other files in the folder
/// (it names a type the registry lacks: a subgraph, or a file that may appear).
fn validate_file(state: &AppState, name: &str, bytes: &[u8]) -> (bool, bool) {
    match Workflow::parse(bytes) {
        Ok(workflow) => {
            let diagnostics = super::workflows::check(state, Some(name), &workflow);
            (
                diagnostics.is_empty(),
                names_unregistered_types(&state.registry, &workflow),
            )
        }
        Err(_) => (false, false),
    }
}

fn names_unregistered_types(registry: &Registry, workflow: &Workflow) -> bool {
    workflow
        .nodes
        .values()
        .any(|n| registry.get(&n.type_name).is_none())
}

/// Files deeper than this under the workflows folder are not looked at (subgraphs nest at
/// most 16 files deep, each inside the folder).
const FINGERPRINT_DEPTH: usize = 16;

/// A hash of the name, size and modification time of every workflow file under `root`
/// (subfolders too): it changes when any subgraph a workflow may include changes.
fn fingerprint(root: &Path) -> blake3::Hash {
    let mut entries = Vec::new();
    collect_workflow_files(root, root, 0, &mut entries);
    entries.sort();
    let mut hasher = blake3::Hasher::new();
    for (path, size, modified) in entries {
        hasher.update(path.as_bytes());
        hasher.update(&[0]);
        hasher.update(&size.to_le_bytes());
        hasher.update(&modified.to_le_bytes());
    }
    hasher.finalize()
}

fn collect_workflow_files(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut Vec<(String, u64, u128)>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // Followed links: a link to a file outside the folder changes what it points to.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        if meta.is_dir() {
            // Not through links to folders, which may loop.
            if !is_link && depth < FINGERPRINT_DEPTH {
                collect_workflow_files(root, &path, depth + 1, out);
            }
            continue;
        }
        let is_workflow = path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
        if !is_workflow {
            continue;
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let relative = path.strip_prefix(root).unwrap_or(&path);
        out.push((
            relative.to_string_lossy().into_owned(),
            meta.len(),
            modified,
        ));
    }
}
