//! Several machines, one queue (docs/scaling.md): `weft worker --queue postgres://…` claims
//! runs from PostgreSQL under a lease and runs them on its device; `weft serve --queue …` is an
//! API server that only enqueues and relays the workers' events to its `/ws` clients. The
//! database is the only thing they share besides the data folder (outputs).
//!
//! Leases: a claim records the worker, a random token and a heartbeat (database clock). The
//! worker renews it every `lease_timeout / 6`; a run whose lease was not renewed for
//! `lease_timeout` is re-queued by any worker's periodic pass (runs are deterministic, so a
//! re-run gives the same images), and marked interrupted after `MAX_ATTEMPTS` lost leases. A
//! worker that cannot renew for `lease_timeout / 2` cancels its run itself, so it stops before
//! anyone else may claim it; and a run is recorded finished only by `UPDATE … WHERE lease =
//! token AND status = 'running'`, so of two workers at most one records it. A re-claimed run's
//! outputs folder is emptied first, so what a dead worker half wrote is not counted twice. A
//! worker stopped by SIGTERM or Ctrl-C gives its run back to the queue at once.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weft_engine::worker::DeviceWorker;
use weft_engine::ExecutorConfig;

use super::events::{Broadcast, ServerEvent};
use super::hub::Hub;
use super::paths::Roots;
use super::queue::{self, Claims, Queue};
use super::store::{
    ConnectionString, Finished, PgStore, RunRecord, RunState, RunStore, StoreResult,
    CANCEL_CHANNEL, EVENTS_CHANNEL, MAX_PAYLOAD, PREVIEWS_CHANNEL, QUEUED_CHANNEL, WORKER_ALIVE,
};

/// A run whose lease expires this many times is marked interrupted instead of re-queued.
pub const MAX_ATTEMPTS: i32 = 3;

/// How often an idle worker looks at the queue without being woken (a safety net for a lost
/// notification; NOTIFY wakes it at once otherwise), and how often expired leases are looked for.
pub const FALLBACK_POLL: Duration = Duration::from_secs(5);

/// `weft worker` options.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The fleet's PostgreSQL database (postgres://USER@HOST/DB or libpq's `host=… dbname=…`);
    /// default: WEFT_QUEUE. Give a password in WEFT_QUEUE or ~/.pgpass, not here.
    #[arg(long, value_name = "URL")]
    pub queue: Option<String>,
    /// The data folder every API server and worker shares: outputs go to <data>/outputs.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// The workflows folder runs may read files from (as the API servers have it).
    #[arg(long, default_value = "workflows")]
    pub workflows: PathBuf,
    /// Uploaded images for LoadImage (default: <workflows>/inputs).
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    #[command(flatten)]
    pub models: crate::model_args::ModelArgs,
    /// cpu, cuda or cuda:N (default: cuda when available, else cpu).
    #[arg(long)]
    pub device: Option<String>,
    /// Byte budget of the output cache, e.g. 512MB, 8GiB.
    #[arg(long, default_value = "8GiB")]
    pub cache_budget: String,
    /// CPU threads for tensor work.
    #[arg(long)]
    pub threads: Option<i32>,
    /// Keep costly results on disk in this folder (one per worker: not shared).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Size of the disk cache in --cache-dir.
    #[arg(long, default_value = "10GiB", value_name = "SIZE")]
    pub disk_cache: String,
    /// This worker's name in the database (default: host name and process id).
    #[arg(long)]
    pub name: Option<String>,
    /// A run whose worker has not renewed its lease for this many seconds is re-queued.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub lease_timeout: f64,
    /// A `progress` event carries a preview image every this many steps (0: never). The
    /// image reaches the API servers' clients through the `previews` table (the newest per
    /// run), not through NOTIFY.
    #[arg(long, default_value_t = 4)]
    pub preview_every: u32,
    /// Cache-aware claiming: this worker takes first the runs whose heavy nodes (models,
    /// prompt encodes, samplers) its cache holds, and leaves a run that another worker's cache
    /// suits better to it for this many seconds (0: plain oldest-first).
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub cache_affinity: f64,
    /// Store each run's images in this S3-compatible bucket (s3://BUCKET/PREFIX, AWS_*
    /// environment; docs/scaling.md) instead of the shared <data>/outputs folder.
    #[arg(long, value_name = "URL")]
    pub outputs: Option<String>,
}

/// The connection string from `--queue` or WEFT_QUEUE.
pub fn queue_url(flag: Option<&str>) -> Option<ConnectionString> {
    flag.map(str::to_string)
        .or_else(|| std::env::var("WEFT_QUEUE").ok())
        .filter(|url| !url.trim().is_empty())
        .map(ConnectionString::new)
}

/// The run a worker holds now.
struct Held {
    id: u64,
    token: String,
    renewed: Instant,
    /// Set when this worker stopped the run itself because its lease was lost or could not
    /// be renewed: the run is given back, not recorded as cancelled.
    stopped_for_lease: bool,
}

/// Claims under a lease, and finishes only while holding it.
struct LeaseClaims {
    store: Arc<PgStore>,
    worker: String,
    outputs: PathBuf,
    /// The model names this worker has (`model_inventory`, refreshed every fallback tick):
    /// only runs needing none other are claimed.
    models: Mutex<Vec<String>>,
    /// The keys of what this worker's memory cache held when its last run ended (the
    /// largest entries, bounded: `Finished::cache_holds`), as published.
    holds: Mutex<Vec<String>>,
    /// See `WorkerArgs::cache_affinity`.
    affinity: Duration,
    /// See `WorkerArgs::lease_timeout`.
    lease_timeout: Duration,
    held: Mutex<Option<Held>>,
    /// Set when the worker is stopping: nothing more is claimed.
    stopping: std::sync::atomic::AtomicBool,
    /// The worker's hub, whose messages the forwarder sends on.
    hub: Arc<Hub>,
    forwarded: Arc<Forwarded>,
    recheck: Recheck,
    /// The token of the last claim that failed (see `claim`).
    unanswered: Mutex<Option<String>>,
}

/// When an idle worker looks at the queue again though nothing woke it: when the run it left
/// to a better-suited worker (cache-aware claims) becomes anyone's. Without it the run would
/// wait for the next notification or `FALLBACK_POLL` tick, up to 5 s more.
#[derive(Default)]
struct Recheck {
    at: Mutex<Option<Instant>>,
    changed: Condvar,
}

impl Recheck {
    fn set(&self, at: Option<Instant>) {
        *self.at.lock().unwrap_or_else(|e| e.into_inner()) = at;
        self.changed.notify_all();
    }

    /// Wakes `queue` whenever the instant set comes; runs on a thread of its own.
    fn keep(&self, queue: &Queue) {
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            at = match *at {
                None => self.changed.wait(at).unwrap_or_else(|e| e.into_inner()),
                Some(due) => match due.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => {
                        self.changed
                            .wait_timeout(at, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    _ => {
                        *at = None;
                        drop(at);
                        queue.wake();
                        self.at.lock().unwrap_or_else(|e| e.into_inner())
                    }
                },
            };
        }
    }
}

/// How far the forwarder got: the last flush marker it passed, and the events it had not
/// sent yet when it passed it (they go with the run's record, in the same statement).
#[derive(Default)]
struct Forwarded {
    upto: Mutex<u64>,
    moved: Condvar,
    handed: Mutex<Vec<Arc<str>>>,
}

/// The longest a finishing run waits for its events to be sent before its record.
const FLUSH_WAIT: Duration = Duration::from_secs(30);

impl LeaseClaims {
    /// Waits until every hub message sent before now has been NOTIFYed or handed back
    /// (bounded), so a run's `run_finished`, sent with its record, comes after the run's other
    /// events; gives the events handed back, to send with the record (one round trip less).
    fn flush(&self) -> Vec<Arc<str>> {
        let mark = {
            let upto = self
                .forwarded
                .upto
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *upto + 1
        };
        self.hub.send(ServerEvent::FleetFlush { upto: mark });
        let upto = self
            .forwarded
            .upto
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (_upto, waited) = self
            .forwarded
            .moved
            .wait_timeout_while(upto, FLUSH_WAIT, |upto| *upto < mark)
            .unwrap_or_else(|e| e.into_inner());
        if waited.timed_out() {
            eprintln!("weft worker: the run's events did not reach the database within {FLUSH_WAIT:?}; recording it anyway");
        }
        std::mem::take(
            &mut *self
                .forwarded
                .handed
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }
}

impl Claims for LeaseClaims {
    fn claim(&self) -> StoreResult<Option<RunRecord>> {
        // A claim that failed without an answer (the database restarting) may have committed:
        // the next one goes under its token and takes the run held under it first.
        let unanswered = self
            .unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let maybe_used = unanswered.is_some();
        let token = unanswered.unwrap_or_else(|| {
            super::random_token().unwrap_or_else(|_| {
                format!("{}-{}-{}", self.worker, std::process::id(), super::now_ms())
            })
        });
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(None);
        }
        let models = self
            .models
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let holds = self.holds.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let claimed = self.store.claim_leased(
            &self.worker,
            &token,
            &models,
            &holds,
            self.affinity,
            maybe_used,
        );
        if claimed.is_err() {
            *self.unanswered.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        }
        let Some(leased) = claimed? else {
            if !self.affinity.is_zero() {
                // Runs it left to other workers become this one's when their window ends.
                match self.store.next_chance(&models, self.affinity) {
                    Ok(after) => self.recheck.set(after.map(|after| Instant::now() + after)),
                    Err(e) => eprintln!("weft worker: {e}"),
                }
            }
            return Ok(None);
        };
        self.recheck.set(None);
        let id = leased.run.id;
        let folder = self.outputs.join(id.to_string());
        if folder.exists() {
            // A worker that lost or gave back this run may have written part of its outputs.
            if let Err(e) = std::fs::remove_dir_all(&folder) {
                eprintln!(
                    "weft worker: run {id}: cannot empty {} before running it again: {e}",
                    folder.display()
                );
            }
        }
        if leased.attempts > 0 {
            eprintln!(
                "weft worker: run {id}: running it again (its worker stopped {} time(s))",
                leased.attempts
            );
        }
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(Held {
            id,
            token,
            renewed: Instant::now(),
            stopped_for_lease: false,
        });
        Ok(Some(leased.run))
    }

    fn finish(&self, id: u64, finished: &Finished, announce: &Broadcast) -> StoreResult<bool> {
        // The lease stays held, and renewed, until the run is recorded (the flush and a
        // database restart may take a while); only then does this worker let go of it.
        let held = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|h| h.id == id)
            .map(|h| (h.token.clone(), h.stopped_for_lease));
        let result = match held {
            Some((token, true)) => self.give_back(id, &token),
            Some((token, false)) => self.record(id, &token, finished, announce),
            None => Ok(false),
        };
        let mut slot = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|h| h.id == id) {
            *slot = None;
        }
        result
    }
}

impl LeaseClaims {
    /// A run this worker stopped for lack of a lease is not finished: it goes back to the
    /// queue (a no-op when it was already re-queued), and this worker announces nothing.
    fn give_back(&self, id: u64, token: &str) -> StoreResult<bool> {
        let started = Instant::now();
        loop {
            match self.store.release(id, token) {
                Ok(given_back) => {
                    if given_back {
                        eprintln!("weft worker: run {id}: gave it back to the queue");
                    }
                    return Ok(false);
                }
                Err(e) if started.elapsed() < self.lease_timeout / 2 => {
                    eprintln!("weft worker: run {id}: giving it back: {e} (trying again)");
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Records the finished run under its lease, with its announcement.
    fn record(
        &self,
        id: u64,
        token: &str,
        finished: &Finished,
        announce: &Broadcast,
    ) -> StoreResult<bool> {
        let events = self.flush();
        let events: Vec<&str> = events.iter().map(|e| &**e).collect();
        // Before the record: whoever sees the run finished sees this worker's cache as the
        // run left it.
        self.publish_holds(&finished.cache_holds);
        let payload = announce.fit(MAX_PAYLOAD);
        // The database may be restarting: keep trying while the lease still holds (nobody
        // re-queues it before `lease_timeout`), rather than leave the run to expire and run
        // again elsewhere. The run's last events go only with its record: when it is not
        // recorded (no longer this worker's), whoever records it sends its own.
        let started = Instant::now();
        loop {
            match self
                .store
                .finish_leased(id, token, finished, &events, Some(&*payload))
            {
                Ok(recorded) => return Ok(recorded),
                Err(e) if started.elapsed() < self.lease_timeout / 2 => {
                    eprintln!("weft worker: run {id}: recording it: {e} (trying again)");
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl LeaseClaims {
    /// Publishes what this worker's cache holds after a run (whatever its outcome: a failed
    /// run may still have loaded its model); the database matches the runs' heavy keys
    /// against it. A failure to publish only costs the preference.
    fn publish_holds(&self, holds: &[String]) {
        let mut published = self.holds.lock().unwrap_or_else(|e| e.into_inner());
        if holds.is_empty() || *published == holds {
            return;
        }
        published.clear();
        published.extend_from_slice(holds);
        drop(published);
        if let Err(e) = self.store.publish_holds(&self.worker, holds) {
            eprintln!("weft worker: {e}");
        }
    }
}

/// Renews the held lease; stops the run when the lease is lost or cannot be renewed in time
/// (marked, so that it is given back rather than recorded cancelled).
fn keep_leases(claims: Arc<LeaseClaims>, queue: Arc<Queue>, timeout: Duration) {
    let every = timeout / 6;
    let stop = |id: u64| {
        if let Some(h) = claims
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .filter(|h| h.id == id)
        {
            h.stopped_for_lease = true;
        }
        queue.cancel_running(id);
    };
    loop {
        std::thread::sleep(every);
        let Some((id, token, renewed)) = claims
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|h| !h.stopped_for_lease)
            .map(|h| (h.id, h.token.clone(), h.renewed))
        else {
            continue;
        };
        match claims.store.heartbeat(id, &token) {
            Ok(true) => {
                if let Some(h) = claims
                    .held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                    .filter(|h| h.id == id)
                {
                    h.renewed = Instant::now();
                }
            }
            Ok(false) => {
                eprintln!("weft worker: run {id}: lost its lease (re-queued for another worker or finished): stopping it");
                stop(id);
            }
            Err(e) if renewed.elapsed() > timeout / 2 => {
                eprintln!("weft worker: run {id}: cannot renew its lease ({e}); stopping it before another worker takes it over");
                stop(id);
            }
            Err(e) => eprintln!("weft worker: run {id}: renewing its lease: {e}"),
        }
    }
}

/// Sends the worker's hub messages to every API server (NOTIFY on `EVENTS_CHANNEL`), but
/// `run_finished`, which goes with the run's record (`PgStore::finish_leased`).
fn forward_events(
    store: PgStore,
    hub: &Hub,
    forwarded: Arc<Forwarded>,
    outputs: Arc<super::outputs::WorkerOutputs>,
) {
    let mut messages = hub.subscribe();
    std::thread::Builder::new()
        .name("weft-forward".into())
        .spawn(move || {
            let mut batch = NotifyBatch::new(store);
            loop {
                let first = match messages.blocking_recv() {
                    Ok(message) => message,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("weft worker: {n} events were not sent to the API servers (they fell behind)");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                // What is waiting goes in one round trip: a fully cached rerun's few hundred
                // node events one NOTIFY each made its record wait ~10x the run (bench/fleet.py).
                let mut next = Some(first);
                while let Some(message) = next.take() {
                    match message.event() {
                        ServerEvent::FleetFlush { upto } => {
                            // The finishing run's record sends these (one round trip less).
                            forwarded
                                .handed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .extend(batch.take());
                            *forwarded.upto.lock().unwrap_or_else(|e| e.into_inner()) = *upto;
                            forwarded.moved.notify_all();
                        }
                        // Each API server sends its own `queue` messages.
                        ServerEvent::Queue { .. } | ServerEvent::RunFinished { .. } => {}
                        event => {
                            outputs.before_sending(event);
                            batch.push(message.fit(MAX_PAYLOAD))
                        }
                    }
                    if batch.len() >= NOTIFY_BATCH {
                        batch.send();
                    }
                    next = match messages.try_recv() {
                        Ok(message) => Some(message),
                        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                            eprintln!("weft worker: {n} events were not sent to the API servers (they fell behind)");
                            None
                        }
                        Err(_) => None,
                    };
                }
                batch.send();
            }
        })
        .expect("spawning the event forwarder thread");
}

/// Stores the worker's previews for the API servers (`PgStore::put_preview`): the newest of
/// each run, one statement each; a preview that a newer one of the same run overtook while
/// the last was being stored is skipped (previews are lossy, as on a lone server's hub).
fn forward_previews(store: PgStore, hub: &Hub) {
    let mut previews = hub.subscribe_previews();
    std::thread::Builder::new()
        .name("weft-previews".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                let mut newest: Vec<Arc<Broadcast>> = Vec::new();
                let mut next = match previews.blocking_recv() {
                    Ok(message) => Some(message),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                while let Some(message) = next.take() {
                    if let ServerEvent::Progress { run, .. } = message.event() {
                        let run = *run;
                        newest.retain(|m| !matches!(m.event(), ServerEvent::Progress { run: r, .. } if *r == run));
                        newest.push(message);
                    }
                    next = previews.try_recv().ok();
                }
                for message in newest {
                    let ServerEvent::Progress {
                        run,
                        node,
                        step,
                        total,
                        preview: Some(image),
                    } = message.event()
                    else {
                        continue;
                    };
                    match store.put_preview(*run, node, *step, *total, image) {
                        Ok(()) => failing = false,
                        Err(e) => {
                            if !std::mem::replace(&mut failing, true) {
                                eprintln!("weft worker: sending a preview to the API servers: {e}");
                            }
                        }
                    }
                }
            }
        })
        .expect("spawning the preview forwarder thread");
}

/// The most events one NOTIFY statement carries.
const NOTIFY_BATCH: usize = 256;

/// Events waiting to be sent with one statement, in order. PostgreSQL delivers a transaction's
/// notifications in order but folds identical ones into one, so a payload already waiting
/// sends the batch first (an event repeated is delivered twice, as it was sent).
struct NotifyBatch {
    store: PgStore,
    payloads: Vec<Arc<str>>,
    waiting: HashSet<Arc<str>>,
    failing: bool,
}

impl NotifyBatch {
    fn new(store: PgStore) -> Self {
        Self {
            store,
            payloads: Vec::new(),
            waiting: HashSet::new(),
            failing: false,
        }
    }

    fn len(&self) -> usize {
        self.payloads.len()
    }

    fn push(&mut self, payload: Arc<str>) {
        if self.waiting.contains(&payload) {
            self.send();
        }
        self.waiting.insert(payload.clone());
        self.payloads.push(payload);
    }

    /// The waiting events, for someone else to send.
    fn take(&mut self) -> Vec<Arc<str>> {
        self.waiting.clear();
        std::mem::take(&mut self.payloads)
    }

    fn send(&mut self) {
        if self.payloads.is_empty() {
            return;
        }
        let texts: Vec<&str> = self.payloads.iter().map(|p| &**p).collect();
        match self.store.notify_all(EVENTS_CHANNEL, &texts) {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    eprintln!("weft worker: sending events to the API servers: {e}");
                }
            }
        }
        self.payloads.clear();
        self.waiting.clear();
    }
}

/// How deep below a models folder `model_inventory` looks (`loras/x.safetensors` is 2;
/// `checkpoints/family/x.safetensors` 3).
const INVENTORY_DEPTH: usize = 3;

/// The model names this worker can load, as workflows name them: every file and folder up to
/// `INVENTORY_DEPTH` below each models folder, relative to it with `/` (a folder of one kind
/// adds its kind in front: `checkpoints/x.safetensors`), sorted, each once.
fn model_inventory(models: &weft_engine::ModelFolders) -> Vec<String> {
    fn walk(dir: &std::path::Path, prefix: &str, depth: usize, names: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if file_name.starts_with('.') {
                continue;
            }
            let name = format!("{prefix}{file_name}");
            // Follows links: set-up links models/converted into place.
            if depth > 1 && entry.path().is_dir() {
                walk(&entry.path(), &format!("{name}/"), depth - 1, names);
            }
            names.push(name);
        }
    }
    let mut names = Vec::new();
    for folder in models.folders() {
        let prefix = folder
            .kind
            .as_ref()
            .map(|kind| format!("{kind}/"))
            .unwrap_or_default();
        walk(&folder.dir, &prefix, INVENTORY_DEPTH, &mut names);
    }
    names.sort_unstable();
    names.dedup();
    names
}

/// `weft worker`: claims and runs until killed.
pub fn run_worker(args: WorkerArgs, executor: ExecutorConfig) -> Result<()> {
    let url = queue_url(args.queue.as_deref()).context(
        "weft worker needs the fleet's database: --queue postgres://USER@HOST/DB (or WEFT_QUEUE)",
    )?;
    let lease_timeout = Duration::from_secs_f64(args.lease_timeout.max(1.0));
    let store = Arc::new(PgStore::open(url.reveal())?);
    let models = args.models.folders()?;
    let inputs = args
        .inputs
        .clone()
        .unwrap_or_else(|| args.workflows.join("inputs"));
    let roots = Roots::new(
        &args.workflows,
        &inputs,
        &args.data.join("outputs"),
        &models,
    )
    .context("creating the worker's folders")?;
    let name = args.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    let registry = Arc::new(weft_nodes::registry());
    let executor = ExecutorConfig {
        output_dir: roots.outputs.clone(),
        models: roots.models.clone(),
        files: roots.files.clone(),
        ..executor
    };
    let device = DeviceWorker::start(registry, executor);
    device.set_preview_every(args.preview_every);
    let hub = Arc::new(Hub::new(65_536));
    let forwarded = Arc::new(Forwarded::default());
    let outputs = Arc::new(super::outputs::WorkerOutputs::open(
        args.outputs.as_deref(),
        &roots.outputs,
    )?);
    forward_events(
        PgStore::open(url.reveal())?,
        &hub,
        forwarded.clone(),
        outputs.clone(),
    );
    forward_previews(PgStore::open(url.reveal())?, &hub);
    let claims = Arc::new(LeaseClaims {
        store: store.clone(),
        worker: name.clone(),
        outputs: roots.outputs.clone(),
        models: Mutex::new(model_inventory(&roots.models)),
        holds: Mutex::new(Vec::new()),
        affinity: Duration::from_secs_f64(args.cache_affinity.max(0.0)),
        lease_timeout,
        held: Mutex::new(None),
        stopping: Default::default(),
        hub: hub.clone(),
        forwarded,
        recheck: Recheck::default(),
        unanswered: Mutex::new(None),
    });
    let queue = queue::start_scheduler(
        store.clone(),
        outputs.claims(claims.clone()),
        hub,
        device,
        roots.outputs.clone(),
        outputs.shared.clone(),
    );
    {
        let (claims, queue) = (claims.clone(), queue.clone());
        std::thread::Builder::new()
            .name("weft-lease".into())
            .spawn(move || keep_leases(claims, queue, lease_timeout))
            .context("starting the lease thread")?;
    }
    {
        let (claims, queue) = (claims.clone(), queue.clone());
        std::thread::Builder::new()
            .name("weft-recheck".into())
            .spawn(move || claims.recheck.keep(&queue))
            .context("starting the recheck thread")?;
    }
    let listen_queue = queue.clone();
    let maintenance = store.clone();
    let (publishing, folders) = (claims.clone(), roots.models.clone());
    store
        .listen(
            &[QUEUED_CHANNEL, CANCEL_CHANNEL],
            FALLBACK_POLL,
            move |notification| match notification {
                Some((channel, payload)) if channel == CANCEL_CHANNEL => {
                    if let Ok(id) = payload.parse::<u64>() {
                        listen_queue.cancel_running(id);
                    }
                }
                Some(_) => listen_queue.wake(),
                None => {
                    let models = model_inventory(&folders);
                    if let Err(e) = maintenance.publish_worker(&publishing.worker, &models) {
                        eprintln!("weft worker: {e}");
                    }
                    *publishing.models.lock().unwrap_or_else(|e| e.into_inner()) = models;
                    if let Err(e) = maintenance.note_waiting(WORKER_ALIVE) {
                        eprintln!("weft worker: {e}");
                    }
                    match maintenance.requeue_expired(lease_timeout, MAX_ATTEMPTS) {
                        Ok(expired) => {
                            if !expired.requeued.is_empty() {
                                eprintln!("weft worker: re-queued runs whose worker stopped (lease expired): {:?}", expired.requeued);
                            }
                            if !expired.interrupted.is_empty() {
                                eprintln!("weft worker: marked interrupted (their workers stopped {MAX_ATTEMPTS} times): {:?}", expired.interrupted);
                            }
                        }
                        Err(e) => eprintln!("weft worker: {e}"),
                    }
                    listen_queue.wake();
                }
            },
        )
        .context("starting the listener thread")?;
    eprintln!(
        "weft worker: {name} takes runs from {} (models {}, outputs {}, lease {:.0} s)",
        store.place(),
        roots.models,
        outputs.place,
        lease_timeout.as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    runtime.block_on(super::shutdown_signal());
    claims
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let held = claims.held.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(held) = held {
        queue.cancel_running(held.id);
        match store.release(held.id, &held.token) {
            Ok(true) => eprintln!(
                "weft worker: gave run {} back to the queue for another worker",
                held.id
            ),
            Ok(false) => {}
            Err(e) => eprintln!(
                "weft worker: {e} (run {} is re-queued when its lease expires)",
                held.id
            ),
        }
    }
    if let Err(e) = store.forget_worker(&name) {
        eprintln!("weft worker: {e}");
    }
    eprintln!("weft worker: stopped");
    std::process::exit(0);
}

/// How far back an API server's relay looks for finished runs it may have missed (the
/// longest database outage it bridges without a client missing a `run_finished`).
const CATCH_UP: Duration = Duration::from_secs(120);

/// The runs whose `run_finished` this API server relayed lately (each goes out once, whether
/// it came by NOTIFY or by catching up).
#[derive(Default)]
struct RelayedFinishes {
    seen: std::collections::HashMap<u64, Instant>,
}

impl RelayedFinishes {
    /// True the first time `run` is seen; forgets runs older than twice `CATCH_UP`.
    fn first_time(&mut self, run: u64) -> bool {
        let now = Instant::now();
        if self.seen.len() > 1024 {
            self.seen
                .retain(|_, at| now.duration_since(*at) < 2 * CATCH_UP);
        }
        self.seen.insert(run, now).is_none()
    }
}

/// An API server's queue: enqueue only; cancel of a running run goes to its worker.
pub fn api_server_queue(store: Arc<PgStore>, hub: Arc<Hub>) -> Arc<Queue> {
    let asking = store.clone();
    let cancel: queue::RemoteCancel = Box::new(move |id| {
        match asking.get(id) {
            Ok(Some(run)) if run.status == RunState::Running => {}
            _ => return false,
        }
        match asking.notify(CANCEL_CHANNEL, &id.to_string()) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("weft serve: asking run {id}'s worker to cancel it: {e}");
                false
            }
        }
    });
    queue::enqueue_only(store, hub, cancel)
}

/// How long an API server waits at start for its relay to listen (events sent before are
/// not seen by its clients; it starts anyway, and says so).
const RELAY_READY_WAIT: Duration = Duration::from_secs(30);

/// The `run_queued` events an API server passes to the others, so that every API server's
/// clients see every run queued (the workers send the rest of a run's events).
#[derive(Default)]
struct Queued {
    /// Runs this server queued and announced: their echo from the database is not relayed.
    mine: HashSet<u64>,
    /// Runs another server queued, relayed here: not announced again.
    theirs: HashSet<u64>,
}

/// Entries `Queued` keeps at most (an echo lost with a dropped connection is never removed).
const QUEUED_KEPT: usize = 10_000;

fn queued_ids(queued: &Mutex<Queued>) -> std::sync::MutexGuard<'_, Queued> {
    let mut ids = queued.lock().unwrap_or_else(|e| e.into_inner());
    if ids.mine.len() + ids.theirs.len() > QUEUED_KEPT {
        *ids = Queued::default();
    }
    ids
}

/// Announces the runs queued through this API server to the other API servers (NOTIFY on
/// `EVENTS_CHANNEL`).
fn announce_queued(store: Arc<PgStore>, hub: &Hub, queued: Arc<Mutex<Queued>>) {
    let mut messages = hub.subscribe();
    std::thread::Builder::new()
        .name("weft-announce-queued".into())
        .spawn(move || loop {
            let message = match messages.blocking_recv() {
                Ok(message) => message,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("weft serve: {n} events were not looked at for the other API servers (they fell behind)");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let ServerEvent::RunQueued { run } = message.event() else {
                continue;
            };
            if queued_ids(&queued).theirs.remove(run) {
                continue;
            }
            queued_ids(&queued).mine.insert(*run);
            if let Err(e) = store.notify(EVENTS_CHANNEL, message.json()) {
                queued_ids(&queued).mine.remove(run);
                eprintln!("weft serve: announcing run {run} to the other API servers: {e}");
            }
        })
        .expect("spawning the run_queued announcer thread");
}

/// Relays the workers' events (and the other API servers' `run_queued`) to this API server's
/// hub, and notes queue changes; returns once it listens (or after `RELAY_READY_WAIT`).
pub fn relay_events(store: &Arc<PgStore>, hub: Arc<Hub>, queue: Arc<Queue>) -> Result<()> {
    let queued = Arc::new(Mutex::new(Queued::default()));
    announce_queued(store.clone(), &hub, queued.clone());
    let (ready_tx, ready) = mpsc::channel();
    let mut ready_tx = Some(ready_tx);
    let reader = store.another()?;
    let mut finishes = RelayedFinishes::default();
    let mut previews_sent = HashMap::new();
    store
        .listen(
            &[EVENTS_CHANNEL, QUEUED_CHANNEL, PREVIEWS_CHANNEL],
            FALLBACK_POLL,
            move |notification| {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(());
                }
                if let Some((channel, payload)) = notification {
                    if channel == PREVIEWS_CHANNEL {
                        relay_preview(&reader, &hub, payload, &mut previews_sent);
                        return;
                    }
                    if channel == EVENTS_CHANNEL {
                        let message = match Broadcast::parse(payload) {
                            Ok(message) => message,
                            Err(e) => {
                                eprintln!("weft serve: a worker's event does not read ({e}); is every machine of the fleet the same version? {payload:.200}");
                                return;
                            }
                        };
                        match message.event() {
                            ServerEvent::RunQueued { run } => {
                                let mut ids = queued_ids(&queued);
                                if ids.mine.remove(run) {
                                    // Sent to this server's clients when it was queued here.
                                    return;
                                }
                                ids.theirs.insert(*run);
                            }
                            ServerEvent::RunFinished { run, .. } => {
                                if !finishes.first_time(*run) {
                                    return;
                                }
                                queue.changed();
                            }
                            ServerEvent::RunStarted { .. } => {
                                queue.changed();
                            }
                            _ => {}
                        }
                        hub.send_broadcast(message);
                        return;
                    }
                } else {
                    // After a reconnection (and on idle ticks): the runs that finished while
                    // this listener was away (a database restart) were announced to nobody here.
                    match reader.recent_announcements(CATCH_UP) {
                        Ok(recent) => {
                            for (run, announcement) in recent {
                                if !finishes.first_time(run) {
                                    continue;
                                }
                                match Broadcast::parse(&announcement) {
                                    Ok(message) => hub.send_broadcast(message),
                                    Err(e) => eprintln!("weft serve: run {run}'s stored announcement does not read ({e})"),
                                }
                            }
                        }
                        Err(e) => eprintln!("weft serve: {e}"),
                    }
                }
                queue.changed();
            },
        )
        .context("starting the event relay")?;
    if ready.recv_timeout(RELAY_READY_WAIT).is_err() {
        eprintln!("weft serve: not yet listening for the workers' events (the database is unreachable?); serving anyway");
    }
    Ok(())
}

/// Runs whose preview an API server sent last, with its step: one notification may announce
/// a preview another already fetched. Kept small: the oldest half goes past this many runs.
const PREVIEWS_REMEMBERED: usize = 256;

/// Fetches run `payload`'s newest preview and puts it on the hub's preview ring, unless it
/// is the one sent last for that run.
fn relay_preview(reader: &PgStore, hub: &Hub, payload: &str, sent: &mut HashMap<u64, u32>) {
    let Ok(run) = payload.parse::<u64>() else {
        eprintln!("weft serve: a preview notification does not name a run: {payload:.100}");
        return;
    };
    let (node, step, total, image) = match reader.preview(run) {
        Ok(Some(preview)) => preview,
        Ok(None) => return,
        Err(e) => {
            eprintln!("weft serve: {e}");
            return;
        }
    };
    if sent.get(&run) == Some(&step) {
        return;
    }
    if sent.len() >= PREVIEWS_REMEMBERED {
        let mut runs: Vec<u64> = sent.keys().copied().collect();
        runs.sort_unstable();
        for old in &runs[..runs.len() / 2] {
            sent.remove(old);
        }
    }
    sent.insert(run, step);
    let _ = hub
        .preview_sender()
        .send(Broadcast::new(ServerEvent::Progress {
            run,
            node,
            step,
            total,
            preview: Some(image),
        }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_too_large_for_notify_keeps_its_event_and_run() {
        let big = Broadcast::new(ServerEvent::Notice {
            run: 7,
            node: "save".into(),
            message: "x".repeat(20_000),
        });
        let small = big.fit(MAX_PAYLOAD);
        assert!(small.len() <= MAX_PAYLOAD);
        let back = Broadcast::parse(&small).unwrap();
        assert_eq!(back.event().run(), Some(7));
        assert_eq!(back.event().node(), Some("save"));
        assert_eq!(back.omitted().unwrap().url.as_deref(), Some("/api/runs/7"));
        let short = Broadcast::new(ServerEvent::RunQueued { run: 1 });
        assert!(Arc::ptr_eq(&short.fit(MAX_PAYLOAD), short.json()));
    }

    #[test]
    fn a_queue_connection_string_is_never_shown() {
        let args = [
            "weft",
            "serve",
            "--queue",
            "postgres://w:s3cret@db/q",
            "--queue=postgres://w:s3cret@db/q",
        ];
        let shown = super::super::shown_args(args.map(String::from));
        assert_eq!(
            shown,
            ["weft", "serve", "--queue", "<hidden>", "--queue=<hidden>"]
        );
    }
}
