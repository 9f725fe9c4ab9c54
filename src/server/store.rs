//! Everything the server keeps between requests and restarts, behind one typed trait: the run
//! queue and history, sweeps, and the prompts and output records of ComfyUI's API. Two
//! implementations pass the same test suite (tests/store.rs): SQLite, one file in the data
//! folder (the default, nothing to install), and PostgreSQL (a shared database, the fleet's
//! queue in docs/scaling.md). Nothing outside this module opens a database.
use std::fmt;

use serde::Serialize;
use serde_json::Value as Json;
use weft_engine::RunStatus;

mod lease;
mod pg;
mod sqlite;

pub use self::lease::{
    needed_models, Expired, HeavyKeys, KeyPlanner, LeasedRun, CANCEL_CHANNEL, EVENTS_CHANNEL,
    MAX_PAYLOAD, PREVIEWS_CHANNEL, QUEUED_CHANNEL, WORKER_ALIVE,
};
pub use self::pg::PgStore;
pub use self::sqlite::SqliteStore;

pub type StoreResult<T> = Result<T, StoreError>;

/// A database connection string, which may hold a password: it prints as `<hidden>`, so
/// neither a log line nor a `Debug` of the configuration shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString(String);

impl ConnectionString {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text itself, for the database driver only.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnectionString(<hidden>)")
    }
}

/// Why the store could not do what was asked, with what was being done and to which run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or reached (`place` never holds a password).
    #[error("run store: cannot open {place}: {cause}")]
    Open { place: String, cause: String },
    /// The database failed or refused an operation.
    #[error("run store: {operation}{}: {cause}", run_note(*run))]
    Database {
        operation: &'static str,
        run: Option<u64>,
        cause: String,
    },
    /// A thread panicked while holding the connection; the process should be restarted.
    #[error("run store: {operation}: the connection's lock is poisoned (a thread panicked holding it); restart the server")]
    Poisoned { operation: &'static str },
    /// A row holds a status this weft does not know (written by a newer weft?).
    #[error("run store: run {run} has status '{text}', which this version of weft does not know")]
    UnknownStatus { run: u64, text: String },
    /// The database's schema is newer than this weft knows.
    #[error("run store: the database's schema is version {found}, newer than this weft's {known}: upgrade weft before pointing it at this database")]
    NewerSchema { found: i64, known: i64 },
    /// A ComfyUI prompt id is already taken (ids are unique across the store).
    #[error("run store: prompt_id '{0}' is already used")]
    DuplicatePromptId(String),
}

fn run_note(run: Option<u64>) -> String {
    run.map(|r| format!(" (run {r})")).unwrap_or_default()
}

/// `map_err` for a database error while doing `operation` (to run `run`, when one).
pub(crate) fn failed<E: fmt::Display>(
    operation: &'static str,
    run: Option<u64>,
) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Database {
        operation,
        run,
        cause: e.to_string(),
    }
}

/// Where a run stands. Finished runs end in the engine's outcome (`RunStatus`), or
/// `Interrupted` when the process running them stopped.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Invalid,
    Interrupted,
}

impl RunState {
    pub const ALL: [RunState; 7] = [
        RunState::Queued,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
        RunState::Invalid,
        RunState::Interrupted,
    ];

    /// The word stored in the database and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Invalid => "invalid",
            RunState::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Neither waiting nor running.
    pub fn is_finished(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }
}

impl From<RunStatus> for RunState {
    fn from(status: RunStatus) -> Self {
        match status {
            RunStatus::Succeeded => RunState::Succeeded,
            RunStatus::Failed => RunState::Failed,
            RunStatus::Cancelled => RunState::Cancelled,
            RunStatus::Invalid => RunState::Invalid,
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run as stored: what to run, where it stands, what it did.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: u64,
    pub status: RunState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_name: Option<String>,
    /// The workflow document (JSON text) exactly as it will run, overrides applied.
    #[serde(skip)]
    pub workflow: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub queued_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    #[serde(skip)]
    pub nodes: Json,
    #[serde(skip)]
    pub outputs: Json,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Json>,
    /// Why a queued run is not taken yet (a fleet with no live worker holding a model it
    /// needs: `waiting for a worker with model X`); `None` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// What a finished run leaves behind.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: RunStatus,
    pub at: i64,
    pub nodes: Json,
    pub outputs: Json,
    pub error: Option<Json>,
    /// The keys of the largest values the worker's cache held when the run ended (64 hex
    /// digits each, largest first; empty when unknown): a fleet's worker publishes them.
    pub cache_holds: Vec<String>,
}

/// A sweep to queue: its description and one workflow document per cell.
#[derive(Debug, Clone)]
pub struct NewSweep {
    pub mode: String,
    /// `{"node.input": [values]}` as expanded.
    pub axes: Json,
    pub rows: Json,
    pub columns: Json,
    /// Where each cell goes in the grid and its headers (`grid::GridLayout`).
    pub layout: Json,
    /// Each cell's values and workflow document, in cell order.
    pub cells: Vec<(Json, String)>,
}

/// A sweep cell's run: where it stands, or deleted (removed while queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellStatus {
    Run(RunState),
    Deleted,
}

impl CellStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CellStatus::Run(state) => state.as_str(),
            CellStatus::Deleted => "deleted",
        }
    }
}

impl PartialEq<&str> for CellStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for CellStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One cell of a stored sweep, with its run's status.
#[derive(Debug, Clone)]
pub struct SweepCell {
    pub run: u64,
    pub values: Json,
    pub status: CellStatus,
    pub outputs: Json,
}

/// A sweep as stored.
#[derive(Debug, Clone)]
pub struct SweepRecord {
    pub id: u64,
    pub mode: String,
    pub axes: Json,
    pub rows: Json,
    pub columns: Json,
    pub layout: Json,
    pub cells: Vec<SweepCell>,
    /// The grid's path under the outputs folder, once composed.
    pub grid: Option<String>,
}

/// A prompt posted to ComfyUI's `POST /prompt`, kept next to its run.
#[derive(Debug, Clone, PartialEq)]
pub struct ComfyPrompt {
    pub run: u64,
    pub prompt_id: String,
    pub client_id: Option<String>,
    /// The API-format prompt as posted.
    pub prompt: Json,
    pub extra_data: Json,
    /// ComfyUI node id -> weft node id.
    pub ids: Vec<(String, String)>,
    /// The output nodes (SaveImage, PreviewImage), ComfyUI ids.
    pub outputs: Vec<String>,
}

/// Where `move_queued` puts a waiting run in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuePlace {
    /// Taken next.
    Front,
    /// Taken after every run now waiting.
    Back,
    /// Just before this queued run.
    Before(u64),
    /// Just after this queued run.
    After(u64),
}

/// The queue's order, worked out once for both backends. A run's place is its *order key*,
/// `COALESCE(queue_order, id)`: a run never moved has none of its own and sorts by its id, so a
/// new run goes to the back without reading the queue. A move hands the waiting runs' existing
/// keys out again in the new order (a permutation: no key grows past the newest id, so runs
/// queued later still go behind), and only rows whose key changed are written.
///
/// `queue`: the waiting runs as (id, order key), in queue order. The (id, new key) pairs to
/// write, or `None` when `id` (or the run it is placed against) is not in the queue.
pub fn reordered(queue: &[(u64, i64)], id: u64, place: QueuePlace) -> Option<Vec<(u64, i64)>> {
    let from = queue.iter().position(|(run, _)| *run == id)?;
    let mut order: Vec<u64> = queue.iter().map(|(run, _)| *run).collect();
    order.remove(from);
    let to = match place {
        QueuePlace::Front => 0,
        QueuePlace::Back => order.len(),
        QueuePlace::Before(anchor) | QueuePlace::After(anchor) => {
            let at = order.iter().position(|run| *run == anchor)?;
            if matches!(place, QueuePlace::After(_)) {
                at + 1
            } else {
                at
            }
        }
    };
    order.insert(to, id);
    let mut keys: Vec<i64> = queue.iter().map(|(_, key)| *key).collect();
    keys.sort_unstable();
    Some(
        order
            .into_iter()
            .zip(keys)
            .zip(queue)
            .filter(|((run, key), (was_run, was_key))| run != was_run || key != was_key)
            .map(|(new, _)| new)
            .collect(),
    )
}

/// The SQL for a run's place in the queue (see `reordered`), for ORDER BY.
macro_rules! queue_order_key {
    () => {
        "COALESCE(queue_order, id)"
    };
}
pub(crate) use queue_order_key;

pub trait RunStore: Send + Sync {
    /// Adds a queued run; returns its id (ids only grow, never reused).
    fn enqueue(
        &self,
        workflow_name: Option<&str>,
        workflow: &str,
        target: Option<&str>,
        at: i64,
    ) -> StoreResult<u64>;
    /// Adds a queued run and the ComfyUI prompt it came from, in one transaction (a reader
    /// that sees the run finds its prompt); `prompt.run` is ignored: the run's id is returned.
    /// A prompt id already used is `DuplicatePromptId`, and nothing is queued.
    fn enqueue_prompt(&self, workflow: &str, at: i64, prompt: &ComfyPrompt) -> StoreResult<u64>;
    fn get(&self, id: u64) -> StoreResult<Option<RunRecord>>;
    /// Newest first, ids below `before` when given.
    fn list(&self, before: Option<u64>, limit: usize) -> StoreResult<Vec<RunRecord>>;
    /// Running ids, oldest first (at most `limit`): what a fleet's API server, which runs
    /// nothing itself, looks at for ComfyUI's `/interrupt` without a prompt id.
    fn running(&self, limit: usize) -> StoreResult<Vec<u64>>;
    /// Queued ids in run order (at most `limit`) and how many are queued in all.
    fn queued(&self, limit: usize) -> StoreResult<(Vec<u64>, usize)>;
    /// Moves a queued run to `place` (see `reordered`), in one transaction; false when the run,
    /// or the run it is placed against, is not queued (nothing moves then).
    fn move_queued(&self, id: u64, place: QueuePlace) -> StoreResult<bool>;
    /// Takes the first queued run in queue order (`reordered`; oldest first unless a run was
    /// moved): it becomes running (started `at`) in the same statement,
    /// so two claimers, in this process or another, never take the same run.
    fn claim_next(&self, at: i64) -> StoreResult<Option<RunRecord>>;
    /// running -> the finished status; false if the run was not running (finished once).
    fn finish(&self, id: u64, finished: &Finished) -> StoreResult<bool>;
    /// queued -> cancelled; false if it was not queued.
    fn cancel_queued(&self, id: u64, at: i64) -> StoreResult<bool>;
    /// Removes a queued run; false if it was not queued.
    fn delete_queued(&self, id: u64) -> StoreResult<bool>;
    /// At start-up: runs left `running` by a process that died become `interrupted`.
    fn interrupt_running(&self, at: i64) -> StoreResult<Vec<u64>>;
    /// Queues a sweep's cells as runs, in cell order, and records the sweep, in one
    /// transaction (the scheduler never sees half a sweep); the sweep's id and the runs' ids.
    fn enqueue_sweep(
        &self,
        workflow_name: Option<&str>,
        target: Option<&str>,
        sweep: &NewSweep,
        at: i64,
    ) -> StoreResult<(u64, Vec<u64>)>;
    fn get_sweep(&self, id: u64) -> StoreResult<Option<SweepRecord>>;
    /// The sweep a run is a cell of: (sweep id, cell index, the cell's values).
    fn sweep_of_run(&self, run: u64) -> StoreResult<Option<(u64, usize, Json)>>;
    /// Records the composed grid; false when it was already recorded (composed once).
    fn set_sweep_grid(&self, id: u64, grid: &str) -> StoreResult<bool>;
    /// The ComfyUI prompt run `run` came from, if it came from one.
    fn prompt_of_run(&self, run: u64) -> StoreResult<Option<ComfyPrompt>>;
    fn prompt_by_id(&self, prompt_id: &str) -> StoreResult<Option<ComfyPrompt>>;
    /// The newest `limit` prompts, oldest first (ComfyUI's history order).
    fn newest_prompts(&self, limit: usize) -> StoreResult<Vec<ComfyPrompt>>;
    /// Records the images an output node with this identity saved (replacing earlier ones).
    fn remember_images(&self, identity: &str, images: &[Json]) -> StoreResult<()>;
    fn recall_images(&self, identity: &str) -> StoreResult<Option<Vec<Json>>>;
}

/// Stored JSON text read back; text that does not parse (hand-edited) reads as null.
fn json(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or(Json::Null)
}

/// A `runs` row as both backends read it (the columns of `RUN_COLUMNS`, in order).
struct RunRow {
    id: i64,
    status: String,
    workflow_name: Option<String>,
    workflow: String,
    target: Option<String>,
    queued_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    nodes: String,
    outputs: String,
    error: Option<String>,
    waiting: Option<String>,
}

macro_rules! run_columns {
    () => {
        "id, status, workflow_name, workflow, target, queued_at, started_at, finished_at, \
         nodes, outputs, error"
    };
}
use run_columns;

macro_rules! prompt_columns {
    () => {
        "run, prompt_id, client_id, prompt, extra_data, ids, outputs"
    };
}
use prompt_columns;

impl RunRow {
    fn into_record(self) -> StoreResult<RunRecord> {
        let id = self.id as u64;
        let status = RunState::parse(&self.status).ok_or(StoreError::UnknownStatus {
            run: id,
            text: self.status,
        })?;
        Ok(RunRecord {
            id,
            status,
            workflow_name: self.workflow_name,
            workflow: self.workflow,
            target: self.target,
            queued_at: self.queued_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            nodes: json(&self.nodes),
            outputs: json(&self.outputs),
            error: self.error.as_deref().map(json),
            waiting: self.waiting,
        })
    }
}

/// A `comfy_prompts` row as both backends read it (`PROMPT_COLUMNS`, in order).
struct PromptRow {
    run: i64,
    prompt_id: String,
    client_id: Option<String>,
    prompt: String,
    extra_data: String,
    ids: String,
    outputs: String,
}

impl PromptRow {
    fn into_prompt(self) -> ComfyPrompt {
        ComfyPrompt {
            run: self.run as u64,
            prompt_id: self.prompt_id,
            client_id: self.client_id,
            prompt: json(&self.prompt),
            extra_data: json(&self.extra_data),
            ids: serde_json::from_str(&self.ids).unwrap_or_default(),
            outputs: serde_json::from_str(&self.outputs).unwrap_or_default(),
        }
    }
}

/// A prompt's columns as stored text: (prompt, extra_data, ids, outputs).
fn prompt_texts(p: &ComfyPrompt) -> (String, String, String, String) {
    (
        p.prompt.to_string(),
        p.extra_data.to_string(),
        serde_json::to_string(&p.ids).unwrap_or_default(),
        serde_json::to_string(&p.outputs).unwrap_or_default(),
    )
}

/// A sweep cell's status from the joined run's status column (null: the run was deleted).
fn cell_status(run: u64, status: Option<String>) -> StoreResult<CellStatus> {
    match status {
        None => Ok(CellStatus::Deleted),
        Some(text) => RunState::parse(&text)
            .map(CellStatus::Run)
            .ok_or(StoreError::UnknownStatus { run, text }),
    }
}

/// The error recorded on runs found running at start-up.
const INTERRUPTED_ERROR: &str = "{\"message\":\"the server stopped while this run was going\"}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_states_round_trip_through_their_stored_words() {
        for state in RunState::ALL {
            assert_eq!(RunState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                Json::String(state.as_str().into())
            );
        }
        assert_eq!(RunState::parse("paused"), None);
        assert_eq!(RunState::from(RunStatus::Invalid), RunState::Invalid);
        assert_eq!(
            serde_json::to_value(CellStatus::Deleted).unwrap(),
            "deleted"
        );
    }

    #[test]
    fn a_move_hands_the_waiting_runs_keys_out_again_in_the_new_order() {
        // Run 9 was moved to the front before (key 0); the others have their ids as keys.
        let queue = [(9, 0), (3, 3), (5, 5), (7, 7)];
        assert_eq!(
            reordered(&queue, 7, QueuePlace::Front),
            Some(vec![(7, 0), (9, 3), (3, 5), (5, 7)])
        );
        assert_eq!(
            reordered(&queue, 9, QueuePlace::After(3)),
            Some(vec![(3, 0), (9, 3)]),
            "only the rows whose key changes are written"
        );
        assert_eq!(
            reordered(&queue, 3, QueuePlace::Before(7)),
            Some(vec![(5, 3), (3, 5)])
        );
        assert_eq!(reordered(&queue, 7, QueuePlace::Back), Some(vec![]));
        assert_eq!(reordered(&queue, 5, QueuePlace::Before(5)), None);
        assert_eq!(reordered(&queue, 4, QueuePlace::Front), None);
        assert_eq!(reordered(&queue, 3, QueuePlace::After(4)), None);
    }

    #[test]
    fn errors_say_what_was_done_to_which_run() {
        let e = failed::<&str>("finishing a run", Some(7))("disk I/O error");
        assert_eq!(
            e.to_string(),
            "run store: finishing a run (run 7): disk I/O error"
        );
        let e = failed::<&str>("listing runs", None)("locked");
        assert_eq!(e.to_string(), "run store: listing runs: locked");
    }
}
