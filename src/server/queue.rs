//! The scheduler: one thread takes the oldest queued run from the store, hands it to the device
//! worker (one run at a time, all sharing the worker's cache), forwards its events to the
//! WebSocket hub as they happen and records the outcome. Handlers only enqueue and wake it.
//! How runs are claimed and recorded is a `Claims`: the local store for `weft serve`, a lease
//! in the fleet's database for `weft worker` (src/server/fleet.rs). An API server of a fleet
//! has a queue without a scheduler (`enqueue_only`): its runs' workers are elsewhere.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value as Json};
use weft_engine::device_memory::MemoryReport;
use weft_engine::worker::{DeviceWorker, Job, WorkerRemote};
use weft_engine::{CancelToken, Event, RunStatus, Workflow};

use super::events::{Broadcast, ServerEvent};
use super::hub::Hub;
use super::now_ms;
use super::outputs::BlockingOutputs;
use super::store::{Finished, RunRecord, RunState, RunStore, StoreResult};

/// How many queued ids a `queue` message lists (the count is always given in full).
pub const QUEUE_LISTED: usize = 100;

/// Shared between handlers and the scheduler thread.
pub struct Queue {
    wake: Mutex<mpsc::Sender<()>>,
    running: Mutex<Option<(u64, CancelToken)>>,
    /// Set when the queue changed; a `queue` message goes out at most every
    /// `QUEUE_MESSAGE_EVERY` (a burst of 1,000 enqueues is one message, not 1,000).
    changed: AtomicBool,
    /// Workflows handed over already parsed by the handler that queued them (a run read back
    /// from the store after a restart is parsed again).
    pending: Mutex<HashMap<u64, Workflow>>,
    /// The stored workflow text the scheduler parsed last, and its parse: a fleet's worker
    /// reads each run from the database, and a rerun's text is the same.
    last_parsed: Mutex<Option<(String, Workflow)>>,
    /// The sweep cells a queued run samples in its batch (lost on a restart: the cells then
    /// sample alone, with the same images).
    batches: Mutex<HashMap<u64, weft_engine::Batch>>,
    /// The cache's and the device's memory when the last run ended (`/system_stats`).
    last_memory: Mutex<Option<MemoryReport>>,
    /// The device worker, for requests between runs (ComfyUI's `/free`); None on an API
    /// server of a fleet (its workers are other processes).
    worker: Option<WorkerRemote>,
    /// Where runs execute on other machines: asks the worker running this run to cancel it
    /// (true when the run is running somewhere).
    remote_cancel: Option<RemoteCancel>,
}

/// See `Queue::remote_cancel`.
pub type RemoteCancel = Box<dyn Fn(u64) -> bool + Send + Sync>;

/// How the scheduler takes runs and records their outcome.
pub trait Claims: Send + Sync {
    /// The next run to execute, now marked running; None when nothing waits.
    fn claim(&self) -> StoreResult<Option<RunRecord>>;
    /// Records the outcome; false when the run is no longer this scheduler's to finish (then
    /// nothing of it is announced as finished). `announce` is the run's `run_finished`
    /// message, sent to the hub after this returns.
    fn finish(&self, id: u64, finished: &Finished, announce: &Broadcast) -> StoreResult<bool>;
}

/// `weft serve` alone: the oldest queued run of its own store.
struct LocalClaims(Arc<dyn RunStore>);

impl Claims for LocalClaims {
    fn claim(&self) -> StoreResult<Option<RunRecord>> {
        self.0.claim_next(now_ms())
    }

    fn finish(&self, id: u64, finished: &Finished, _announce: &Broadcast) -> StoreResult<bool> {
        self.0.finish(id, finished)
    }
}

/// How many parsed workflows wait in memory at most; beyond, runs are parsed from the store.
const PENDING_KEPT: usize = 256;

/// The most often a `queue` message is sent.
pub const QUEUE_MESSAGE_EVERY: Duration = Duration::from_millis(50);

impl Queue {
    /// Gives the scheduler the parsed workflow of run `id`, saving it a parse.
    pub fn hand_over(&self, id: u64, workflow: Workflow) {
        if let Ok(mut pending) = self.pending.lock() {
            if pending.len() < PENDING_KEPT {
                pending.insert(id, workflow);
            }
        }
    }

    /// A run's stored workflow, parsed (the last one parsed is remembered).
    fn parse_stored(&self, text: &str) -> Result<Workflow, Vec<weft_engine::Diagnostic>> {
        let mut last = self.last_parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, workflow)) = last.as_ref() {
            if known == text {
                return Ok(workflow.clone());
            }
        }
        let workflow = Workflow::parse(text.as_bytes())?;
        *last = Some((text.to_string(), workflow.clone()));
        Ok(workflow)
    }

    /// The cache's and the device's memory when the last run ended.
    pub fn last_memory(&self) -> Option<MemoryReport> {
        *self.last_memory.lock().ok()?
    }

    /// The other sweep cells run `id` computes in its batch.
    pub fn hand_over_batch(&self, id: u64, batch: weft_engine::Batch) {
        if let Ok(mut batches) = self.batches.lock() {
            batches.insert(id, batch);
        }
    }

    /// Drops what was handed over for a run that will not run (deleted, cancelled).
    pub fn forget(&self, id: u64) {
        let _ = self.take_pending(id);
        let _ = self.take_batch(id);
    }

    fn take_batch(&self, id: u64) -> Option<weft_engine::Batch> {
        self.batches.lock().ok()?.remove(&id)
    }

    fn take_pending(&self, id: u64) -> Option<Workflow> {
        self.pending.lock().ok()?.remove(&id)
    }

    /// Notes that the queue changed (a `queue` message follows shortly).
    pub fn changed(&self) {
        self.changed.store(true, Ordering::Relaxed);
    }

    /// Wakes the scheduler (after an enqueue).
    pub fn wake(&self) {
        if let Ok(tx) = self.wake.lock() {
            let _ = tx.send(());
        }
    }

    /// Unloads the models and everything else the device worker's in-memory cache holds, after
    /// the run in progress (ComfyUI's `/free`); false if the worker has stopped, or on a fleet's
    /// API server, which has no device worker (its workers free their own memory).
    pub fn free_memory(&self) -> bool {
        self.worker
            .as_ref()
            .is_some_and(|worker| worker.clear_cache())
    }

    pub fn running(&self) -> Option<u64> {
        self.running
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(|(id, _)| *id))
    }

    /// Cancels the run in flight if it is `id`; true if it was. With runs on other machines:
    /// asks the run's worker, true if the run is running.
    pub fn cancel_running(&self, id: u64) -> bool {
        if let Some(remote) = &self.remote_cancel {
            return remote(id);
        }
        match self.running.lock() {
            Ok(guard) => match guard.as_ref() {
                Some((running, token)) if *running == id => {
                    token.cancel();
                    true
                }
                _ => false,
            },
            Err(_) => false,
        }
    }
}

/// The `queue` message: what runs now and what waits.
pub fn queue_message(store: &dyn RunStore, queue: &Queue) -> Option<ServerEvent> {
    let (queued, queued_total) = store.queued(QUEUE_LISTED).ok()?;
    Some(ServerEvent::Queue {
        running: queue.running(),
        queued,
        queued_total: queued_total as u64,
    })
}

/// Starts the scheduler thread over the local store; it lives as long as the process.
pub fn start(
    store: Arc<dyn RunStore>,
    hub: Arc<Hub>,
    worker: DeviceWorker,
    outputs_root: std::path::PathBuf,
    outputs: Arc<BlockingOutputs>,
) -> Arc<Queue> {
    let claims = Arc::new(LocalClaims(store.clone()));
    start_scheduler(store, claims, hub, worker, outputs_root, outputs)
}

/// A queue whose runs execute elsewhere (a fleet's API server): handlers enqueue into the
/// store, whose workers are woken by the database; `cancel` reaches a running run's worker.
pub fn enqueue_only(store: Arc<dyn RunStore>, hub: Arc<Hub>, cancel: RemoteCancel) -> Arc<Queue> {
    let (queue, _no_scheduler) = new_queue(Some(cancel), None);
    spawn_notifier(store, hub, queue.clone());
    queue
}

fn new_queue(
    remote_cancel: Option<RemoteCancel>,
    worker: Option<WorkerRemote>,
) -> (Arc<Queue>, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let queue = Arc::new(Queue {
        wake: Mutex::new(tx),
        running: Mutex::new(None),
        changed: AtomicBool::new(false),
        pending: Mutex::new(HashMap::new()),
        last_parsed: Mutex::new(None),
        batches: Mutex::new(HashMap::new()),
        last_memory: Mutex::new(None),
        remote_cancel,
        worker,
    });
    (queue, rx)
}

fn spawn_notifier(store: Arc<dyn RunStore>, hub: Arc<Hub>, queue: Arc<Queue>) {
    let (notify_store, notify_hub, notify_queue) = (store, hub, queue);
    std::thread::Builder::new()
        .name("weft-queue-notify".into())
        .spawn(move || loop {
            std::thread::sleep(QUEUE_MESSAGE_EVERY);
            if notify_queue.changed.swap(false, Ordering::Relaxed) {
                if let Some(m) = queue_message(&*notify_store, &notify_queue) {
                    notify_hub.send(m);
                }
            }
        })
        .expect("spawning the queue notifier thread");
}

/// Starts the scheduler thread taking runs through `claims`; it lives as long as the process.
/// Runs render into `outputs_root`; sweeps' grids are composed from `outputs`, where every
/// machine's finished runs are (the same folder, or a fleet's bucket).
pub fn start_scheduler(
    store: Arc<dyn RunStore>,
    claims: Arc<dyn Claims>,
    hub: Arc<Hub>,
    worker: DeviceWorker,
    outputs_root: std::path::PathBuf,
    outputs: Arc<BlockingOutputs>,
) -> Arc<Queue> {
    let (queue, rx) = new_queue(None, Some(worker.remote()));
    spawn_notifier(store.clone(), hub.clone(), queue.clone());
    let shared = queue.clone();
    std::thread::Builder::new()
        .name("weft-scheduler".into())
        .spawn(move || loop {
            match claims.claim() {
                Ok(Some(run)) => {
                    let place = Place {
                        store: &*store,
                        claims: &*claims,
                        hub: &hub,
                        worker: &worker,
                        queue: &shared,
                        outputs: &outputs,
                    };
                    execute(place, &outputs_root, run)
                }
                Ok(None) => {
                    if rx.recv().is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // The store is failing (disk full, database down): do not spin.
                    eprintln!("weft serve: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        })
        .expect("spawning the scheduler thread");
    queue
}

/// What the events of a run said about its nodes, kept for its record.
#[derive(Default)]
struct Progress {
    nodes: serde_json::Map<String, Json>,
    why: HashMap<String, Json>,
    outputs: Vec<Json>,
    error: Option<Json>,
    /// `run_finished` waits until the run's record is written, so a client that reads the
    /// run on that event sees it finished.
    finished_message: Option<Arc<Broadcast>>,
}

/// What a run executes with.
struct Place<'a> {
    store: &'a dyn RunStore,
    claims: &'a dyn Claims,
    hub: &'a Hub,
    worker: &'a DeviceWorker,
    queue: &'a Queue,
    outputs: &'a BlockingOutputs,
}

fn execute(place: Place<'_>, outputs_root: &std::path::Path, run: RunRecord) {
    let Place {
        store,
        claims,
        hub,
        worker,
        queue,
        outputs,
    } = place;
    let id = run.id;
    let cancel = CancelToken::new();
    if let Ok(mut slot) = queue.running.lock() {
        *slot = Some((id, cancel.clone()));
    }
    queue.changed();
    let batch = queue.take_batch(id);
    let parsed = match queue.take_pending(id) {
        Some(workflow) => Ok(workflow),
        None => queue.parse_stored(&run.workflow),
    };
    let (finished, message) = match parsed {
        Err(errors) => (
            Finished {
                status: RunStatus::Invalid,
                at: now_ms(),
                nodes: json!({}),
                outputs: json!([]),
                error: Some(
                    json!({"message": "the stored workflow does not parse", "diagnostics": errors}),
                ),
                cache_holds: Vec::new(),
            },
            None,
        ),
        Ok(workflow) => {
            let (finished, message, memory) =
                run_on_worker(worker, hub, workflow, batch, &run, cancel, outputs_root);
            if let (Some(memory), Ok(mut slot)) = (memory, queue.last_memory.lock()) {
                *slot = Some(memory);
            }
            (finished, message)
        }
    };
    let message = message.unwrap_or_else(|| {
        Broadcast::new(ServerEvent::RunFinished {
            run: id,
            status: RunState::from(finished.status),
            ran: 0,
            cached: 0,
            micros: 0,
        })
    });
    let recorded = match claims.finish(id, &finished, &message) {
        Ok(recorded) => recorded,
        Err(e) => {
            eprintln!("weft serve: {e}");
            true
        }
    };
    if let Ok(mut slot) = queue.running.lock() {
        *slot = None;
    }
    if !recorded {
        // Another scheduler owns the run now (a fleet's lease expired): its outcome is that
        // one's to announce.
        eprintln!("weft: run {id} was no longer this worker's when it finished; its outcome is not recorded");
        queue.changed();
        return;
    }
    hub.send_broadcast(message);
    queue.changed();
    super::sweeps::run_finished(store, hub, outputs, id);
}

fn run_on_worker(
    worker: &DeviceWorker,
    hub: &Hub,
    workflow: Workflow,
    batch: Option<weft_engine::Batch>,
    run: &RunRecord,
    cancel: CancelToken,
    outputs_root: &std::path::Path,
) -> (Finished, Option<Arc<Broadcast>>, Option<MemoryReport>) {
    let id = run.id;
    let progress = Arc::new(Mutex::new(Progress::default()));
    let (done_tx, done_rx) = mpsc::channel();
    let events_progress = progress.clone();
    let events_hub = hub.sender();
    let events_previews = hub.preview_sender();
    let run_dir = outputs_root.join(id.to_string());
    let job = Job {
        workflow,
        target: run.target.clone(),
        run: Some(id),
        output_dir: Some(run_dir.clone()),
        batch,
        cancel,
        events: Box::new(move |event: &Event| {
            let mut message =
                ServerEvent::from_engine(event, |path| output_path(path, id, &run_dir));
            if let Ok(mut p) = events_progress.lock() {
                record(&mut p, &message);
            }
            // Previews (kilobytes each) travel in their own small, lossy ring, so the main
            // ring's memory stays that of small messages; the step's progress goes in both.
            if let ServerEvent::Progress { preview, .. } = &mut message {
                if preview.is_some() {
                    let _ = events_previews.send(Broadcast::new(message.clone()));
                    if let ServerEvent::Progress { preview, .. } = &mut message {
                        *preview = None;
                    }
                }
            }
            if matches!(message, ServerEvent::RunFinished { .. }) {
                if let Ok(mut p) = events_progress.lock() {
                    p.finished_message = Some(Broadcast::new(message));
                    return;
                }
            }
            events_hub.send(message);
        }),
        done: Box::new(move |report| {
            let _ = done_tx.send(report);
        }),
    };
    if !worker.submit(job) {
        return (failed("the device worker stopped"), None, None);
    }
    let Ok(report) = done_rx.recv() else {
        return (
            failed("the device worker stopped during the run"),
            None,
            None,
        );
    };
    let mut p = std::mem::take(&mut *progress.lock().unwrap_or_else(|e| e.into_inner()));
    let status = report.status;
    if report.status == RunStatus::Invalid && p.error.is_none() {
        p.error =
            Some(json!({"message": "the workflow is not valid", "diagnostics": report.errors}));
    }
    let message = p.finished_message.take();
    let finished = Finished {
        status,
        at: now_ms(),
        nodes: Json::Object(p.nodes),
        outputs: Json::Array(p.outputs),
        error: p.error,
        cache_holds: report
            .cache_holds
            .iter()
            .map(super::routing::key_text)
            .collect(),
    };
    (finished, message, report.memory)
}

fn failed(message: &str) -> Finished {
    Finished {
        status: RunStatus::Failed,
        at: now_ms(),
        nodes: json!({}),
        outputs: json!([]),
        error: Some(json!({"message": message})),
        cache_holds: Vec::new(),
    }
}

/// Folds one event into the run's record.
fn record(p: &mut Progress, event: &ServerEvent) {
    match event {
        ServerEvent::NodeCached {
            node, from_disk, ..
        } => {
            let entry = if *from_disk {
                json!({"state": "cached", "from_disk": true})
            } else {
                json!({"state": "cached"})
            };
            p.nodes.insert(node.clone(), entry);
        }
        ServerEvent::NodeStarted { node, why, .. } if !why.is_empty() => {
            p.why.insert(node.clone(), json!(why));
        }
        ServerEvent::NodeFinished { node, micros, .. } => {
            let mut entry = json!({"state": "ran", "micros": micros});
            if let Some(why) = p.why.remove(node) {
                entry["why"] = why;
            }
            p.nodes.insert(node.clone(), entry);
        }
        ServerEvent::Error { node, message, .. } => {
            if let Some(node) = node {
                p.nodes.insert(node.clone(), json!({"state": "failed"}));
            }
            p.error = Some(json!({"node": node, "message": message}));
        }
        ServerEvent::Invalid { errors, .. } => {
            p.error = Some(json!({"message": "the workflow is not valid", "diagnostics": errors}));
        }
        ServerEvent::Output { node, url, .. } => {
            p.outputs.push(json!({"node": node, "url": url}));
        }
        _ => {}
    }
}

/// An output's path as clients see it (a server path must not reach them): relative to the
/// outputs folder, which is the run's folder, or for a cached node the folder of the earlier
/// run that wrote the file (a SaveImage prefix may name a sub-folder).
fn output_path(path: &std::path::Path, run: u64, run_dir: &std::path::Path) -> String {
    let outputs_root = run_dir.parent().unwrap_or(run_dir);
    path.strip_prefix(outputs_root)
        .ok()
        .and_then(|p| p.to_str())
        .map(str::to_string)
        .or_else(|| {
            path.file_name()
                .map(|f| format!("{run}/{}", f.to_string_lossy()))
        })
        .unwrap_or_default()
}
