//! The fleet's side of the PostgreSQL store: runs claimed under a lease (worker, token,
//! heartbeat), finished only by the lease's holder, re-queued when a lease expires; and the
//! NOTIFY channels that wake workers, reach a running run's worker and carry a run's events to
//! every API server. Times here are the database's clock, so machines need not agree on theirs.
use std::sync::Mutex;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::NoTls;

use super::pg::run_row;
use super::*;

/// Milliseconds since the Unix epoch on the database's clock.
macro_rules! db_now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

/// A trigger notifies it whenever a run becomes queued (enqueued or re-queued).
pub const QUEUED_CHANNEL: &str = "weft_queued";
/// Payload: a run id whose cancel was asked for while it runs.
pub const CANCEL_CHANNEL: &str = "weft_cancel";
/// Payload: one hub message (JSON text) of a run on some worker.
pub const EVENTS_CHANNEL: &str = "weft_events";
/// A run's newest preview image is in the `previews` table (payload: the run id).
pub const PREVIEWS_CHANNEL: &str = "weft_previews";
/// A preview row older than this (its run long finished or its worker gone) is deleted by
/// the next preview stored.
const PREVIEW_KEPT_MS: i64 = 10 * 60 * 1000;
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
pub const MAX_PAYLOAD: usize = 7999;

/// The node types that load a model file, and the input naming it (as a models folder's
/// relative path: `tiny-shapes`, `loras/x.safetensors`).
const MODEL_INPUTS: &[(&str, &str)] = &[
    ("LoadCheckpoint", "name"),
    ("LoadUpscaleModel", "name"),
    ("LoadLora", "lora"),
    ("LoadLoraModelOnly", "lora"),
];

/// The model names a stored workflow loads, sorted, each once: recorded with the run when it
/// is queued, so a fleet's worker claims only runs it has every model for. A name given as an
/// absolute path, a linked one, or one inside a subgraph file is not listed (not known here,
/// and any worker may try it, as before).
pub fn needed_models(workflow: &str) -> Vec<String> {
    // The last workflow's answer: a rerun (the common case) is not parsed again.
    static LAST: Mutex<Option<(String, Vec<String>)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((known, names)) = last.as_ref() {
        if known == workflow {
            return names.clone();
        }
    }
    let names = parse_needed_models(workflow);
    *last = Some((workflow.to_string(), names.clone()));
    names
}

fn parse_needed_models(workflow: &str) -> Vec<String> {
    let Ok(parsed) = weft_engine::Workflow::parse(workflow.as_bytes()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = parsed
        .nodes
        .values()
        .filter_map(|node| {
            let (_, input) = MODEL_INPUTS
                .iter()
                .find(|(type_name, _)| *type_name == node.type_name)?;
            match &node.inputs.get(*input)?.value {
                weft_engine::InputValue::Constant(weft_engine::Constant::String(name))
                    if !name.is_empty() && !std::path::Path::new(name).is_absolute() =>
                {
                    Some(name.clone())
                }
                _ => None,
            }
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The Merkle keys (`CacheKey`s, as 64 hex digits) of a run's costly nodes, computed when it
/// is queued by planning it as a worker will: the keys of its loaded weights (checkpoints,
/// LoRAs, upscale models) and of its other heavy nodes (prompt encodes, samplers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeavyKeys {
    pub models: Vec<String>,
    pub others: Vec<String>,
}

/// Gives a workflow's (and target's) heavy keys; empty when it cannot be planned here.
pub type KeyPlanner = dyn Fn(&str, Option<&str>) -> HeavyKeys + Send + Sync;

/// A worker not heard from for this long (it publishes its models every 5 s) no longer
/// counts as one that can take a run needing its models, nor one a run is left for.
pub const WORKER_ALIVE: Duration = Duration::from_secs(20);

/// How many of the queued runs a worker can take, from the front of the queue, a cache-aware
/// claim scores: scoring every one made each claim cost as much as the queue is long (2,000
/// queued: 57 claims/s); a run further back is scored once these are taken.
const CANDIDATES: i64 = 64;

/// A run a worker holds: the run and how many earlier holders lost it.
pub struct LeasedRun {
    pub run: RunRecord,
    /// Earlier claims of this run whose lease expired (0 on the first claim).
    pub attempts: i32,
}

/// What a pass over expired leases did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Runs queued again for another worker.
    pub requeued: Vec<u64>,
    /// Runs that lost their worker too often and were marked interrupted.
    pub interrupted: Vec<u64>,
}

/// The error recorded on a run whose workers kept dying.
const GAVE_UP_ERROR: &str =
    "{\"message\":\"the workers running this run stopped (their leases expired) too many times\"}";

impl PgStore {
    /// Takes a queued run for `worker` under the lease `token` (`FOR UPDATE SKIP LOCKED`:
    /// claimers never wait for each other nor take the same run), of the runs whose needed
    /// models are all in `models` (the worker's `model_inventory`). With `affinity` zero,
    /// oldest first. Above zero the claim is cache-aware: each run scores, for a worker, 100 per
    /// heavy model key of the run the worker's cache `holds`, 1 per other heavy key (prompt
    /// encodes, samplers), and 50 when the worker ran the latest claimed run of the same
    /// workflow name (an editing session stays where its previous revision's results are,
    /// unless another worker holds a model of the run that this one lacks).
    /// This worker takes its best-scoring run of the first `CANDIDATES` it can take (in queue
    /// order), and leaves a run that another live worker scores higher to that one until the
    /// run has waited `affinity`. `maybe_used`: an earlier call with this `token` failed
    /// without an answer (it may have committed): the run held under it, if any, comes first.
    pub fn claim_leased(
        &self,
        worker: &str,
        token: &str,
        models: &[String],
        holds: &[String],
        affinity: Duration,
        maybe_used: bool,
    ) -> StoreResult<Option<LeasedRun>> {
        let affinity_ms = affinity.as_millis().min(i64::MAX as u128) as i64;
        let alive_ms = WORKER_ALIVE.as_millis() as i64;
        let mut tries = 0;
        let row = self.with("claiming the next queued run", None, |c| {
            tries += 1;
            if tries > 1 || maybe_used {
                // An earlier try's answer was lost with its connection (a database restart):
                // it may have committed, and the run it took is held under this token. Take
                // that one, rather than a second run and leave the first to expire.
                let taken = c.query_opt(
                    concat!(
                        "SELECT ",
                        run_columns!(),
                        ", attempts FROM runs WHERE lease = $1 AND status = 'running'"
                    ),
                    &[&token],
                )?;
                if taken.is_some() {
                    return Ok(taken);
                }
            }
            if affinity_ms == 0 {
                return c.query_opt(
                    concat!(
                        "UPDATE runs SET status = 'running', started_at = ",
                        db_now_ms!(),
                        ", heartbeat_at = ",
                        db_now_ms!(),
                        ", worker = $1, lease = $2, waiting = NULL WHERE id = \
                         (SELECT id FROM runs WHERE status = 'queued' AND needs <@ $3 \
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING ",
                        run_columns!(),
                        ", attempts"
                    ),
                    &[&worker, &token, &models],
                );
            }
            c.query_opt(
                concat!(
                    "UPDATE runs SET status = 'running', started_at = ",
                    db_now_ms!(),
                    ", heartbeat_at = ",
                    db_now_ms!(),
                    ", worker = $1, lease = $2, waiting = NULL WHERE id = \
                     (SELECT r.id FROM runs AS r LEFT JOIN LATERAL \
                     (SELECT p.worker FROM runs AS p WHERE p.workflow_name = r.workflow_name \
                     AND p.id < r.id AND p.worker IS NOT NULL ORDER BY p.id DESC LIMIT 1) \
                     AS session ON true \
                     WHERE r.status = 'queued' AND r.needs <@ $3 AND r.id IN \
                     (SELECT id FROM runs WHERE status = 'queued' AND needs <@ $3 \
                     ORDER BY COALESCE(queue_order, id), id LIMIT $7) AND (r.queued_at < ",
                    db_now_ms!(),
                    " - $5::bigint OR weft_affinity(r.model_keys, r.heavy_keys, $4) \
                     + CASE WHEN session.worker = $1 THEN 50 ELSE 0 END >= COALESCE(\
                     (SELECT max(weft_affinity(r.model_keys, r.heavy_keys, w.holds) \
                     + CASE WHEN session.worker = w.name THEN 50 ELSE 0 END) \
                     FROM workers AS w WHERE w.name <> $1 AND w.seen_at > ",
                    db_now_ms!(),
                    " - $6::bigint), 0)) \
                     ORDER BY weft_affinity(r.model_keys, r.heavy_keys, $4) \
                     + CASE WHEN session.worker = $1 THEN 50 ELSE 0 END DESC, COALESCE(r.queue_order, r.id), r.id \
                     LIMIT 1 FOR UPDATE OF r SKIP LOCKED) RETURNING ",
                    run_columns!(),
                    ", attempts"
                ),
                &[
                    &worker,
                    &token,
                    &models,
                    &holds,
                    &affinity_ms,
                    &alive_ms,
                    &CANDIDATES,
                ],
            )
        })?;
        row.map(|r| {
            let attempts: i32 = r.get(11);
            run_row(&r)
                .into_record()
                .map(|run| LeasedRun { run, attempts })
        })
        .transpose()
    }

    /// After a claim found nothing for a worker with `models`: how long until the earliest
    /// queued run it can take has waited `affinity` (then it is anyone's, `claim_leased`);
    /// None when no such run waits, or it is due already (another claimer holds it).
    pub fn next_chance(
        &self,
        models: &[String],
        affinity: Duration,
    ) -> StoreResult<Option<Duration>> {
        let affinity_ms = affinity.as_millis().min(i64::MAX as u128) as i64;
        let row = self.with("looking for runs left to other workers", None, |c| {
            c.query_opt(
                concat!(
                    "SELECT min(queued_at) + $2::bigint - ",
                    db_now_ms!(),
                    " FROM runs WHERE status = 'queued' AND needs <@ $1"
                ),
                &[&models, &affinity_ms],
            )
        })?;
        let left_ms = row.and_then(|row| row.get::<_, Option<i64>>(0));
        // `claim_leased` takes a run once it has waited longer than `affinity`: a millisecond
        // after, and a little more for the clocks' rounding.
        Ok(left_ms
            .filter(|ms| *ms >= 0)
            .map(|ms| Duration::from_millis(ms as u64 + 5)))
    }

    /// Renews the lease; false when it is no longer this holder's (expired and re-queued, or
    /// the run finished): the holder must stop the run.
    pub fn heartbeat(&self, id: u64, token: &str) -> StoreResult<bool> {
        self.with("renewing a run's lease", Some(id), |c| {
            c.execute(
                concat!(
                    "UPDATE runs SET heartbeat_at = ",
                    db_now_ms!(),
                    " WHERE id = $1 AND status = 'running' AND lease = $2"
                ),
                &[&(id as i64), &token],
            )
            .map(|n| n == 1)
        })
    }

    /// running -> finished, only for the holder of lease `token` (one conditional UPDATE, so
    /// of two workers that both ran the run, at most one records it); false otherwise. When
    /// recorded, `events` and then `announce` are NOTIFYed on `EVENTS_CHANNEL` by the same
    /// statement (one transaction, one round trip): the record and its events exist together
    /// or not at all (a worker killed between the two cannot leave a finished run nobody
    /// heard of), and a statement repeated after a lost answer records and sends nothing more.
    /// `events` must hold no payload twice (PostgreSQL folds identical notifications of a
    /// transaction), nor `announce`.
    pub fn finish_leased(
        &self,
        id: u64,
        token: &str,
        f: &Finished,
        events: &[&str],
        announce: Option<&str>,
    ) -> StoreResult<bool> {
        let error = f.error.as_ref().map(|e| e.to_string());
        let (nodes, outputs) = (f.nodes.to_string(), f.outputs.to_string());
        let status = RunState::from(f.status).as_str();
        let events_channel = self.channel(EVENTS_CHANNEL);
        let sent: Vec<&str> = events.iter().copied().chain(announce).collect();
        self.with("recording a finished run", Some(id), |c| {
            let row = c.query_opt(
                concat!(
                    "WITH finished AS (UPDATE runs SET status = $2, finished_at = $3, nodes = $4, \
                     outputs = $5, error = $6, lease = NULL, announcement = $8::text, \
                     announced_at = CASE WHEN $8::text IS NULL THEN NULL ELSE ",
                    db_now_ms!(),
                    " END WHERE id = $1 AND status = 'running' AND lease = $7 RETURNING id), \
                     sent AS (SELECT pg_notify($9, payload) FROM finished, \
                     unnest($10::text[]) WITH ORDINALITY AS events(payload, position) \
                     ORDER BY position) \
                     SELECT (SELECT count(*) FROM finished), (SELECT count(*) FROM sent)"
                ),
                &[
                    &(id as i64),
                    &status,
                    &f.at,
                    &nodes,
                    &outputs,
                    &error,
                    &token,
                    &announce,
                    &events_channel,
                    &sent,
                ],
            )?;
            Ok(row.is_some_and(|row| row.get::<_, i64>(0) == 1))
        })
    }

    /// The announcements (`run_finished`) of the runs finished within `within` (database
    /// clock), oldest first: an API server whose listener was disconnected (a database
    /// restart) sends those it missed.
    pub fn recent_announcements(&self, within: Duration) -> StoreResult<Vec<(u64, String)>> {
        let within_ms = within.as_millis().min(i64::MAX as u128) as i64;
        self.with(
            "reading the latest finished runs' announcements",
            None,
            |c| {
                c.query(
                    concat!(
                        "SELECT id, announcement FROM runs WHERE announced_at > ",
                        db_now_ms!(),
                        " - $1 ORDER BY announced_at, id"
                    ),
                    &[&within_ms],
                )
                .map(|rows| {
                    rows.iter()
                        .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                        .collect()
                })
            },
        )
    }

    /// Gives a held run back to the queue at once (a worker stopping), without counting a
    /// lost lease; false when the lease was no longer `token`'s.
    pub fn release(&self, id: u64, token: &str) -> StoreResult<bool> {
        self.with("giving a run back to the queue", Some(id), |c| {
            c.execute(
                "UPDATE runs SET status = 'queued', lease = NULL, started_at = NULL \
                 WHERE id = $1 AND status = 'running' AND lease = $2",
                &[&(id as i64), &token],
            )
            .map(|n| n == 1)
        })
    }

    /// Runs whose lease was not renewed for `timeout` go back to the queue (their trigger
    /// wakes the workers); after `max_attempts` lost leases a run is marked interrupted
    /// instead. Runs claimed without a lease (a lone `weft serve --store`) are left alone.
    pub fn requeue_expired(&self, timeout: Duration, max_attempts: i32) -> StoreResult<Expired> {
        let timeout_ms = timeout.as_millis().min(i64::MAX as u128) as i64;
        let rows = self.with("re-queueing runs whose worker stopped", None, |c| {
            c.query(
                concat!(
                    "UPDATE runs SET attempts = attempts + 1, lease = NULL, \
                     status = CASE WHEN attempts + 1 >= $2 THEN 'interrupted' ELSE 'queued' END, \
                     finished_at = CASE WHEN attempts + 1 >= $2 THEN ",
                    db_now_ms!(),
                    " END, error = CASE WHEN attempts + 1 >= $2 THEN $3 END, started_at = NULL \
                     WHERE status = 'running' AND lease IS NOT NULL AND heartbeat_at < ",
                    db_now_ms!(),
                    " - $1 RETURNING id, status"
                ),
                &[&timeout_ms, &max_attempts, &GAVE_UP_ERROR],
            )
        })?;
        let mut expired = Expired::default();
        for row in rows {
            let id = row.get::<_, i64>(0) as u64;
            if row.get::<_, &str>(1) == "queued" {
                expired.requeued.push(id);
            } else {
                expired.interrupted.push(id);
            }
        }
        expired.requeued.sort_unstable();
        expired.interrupted.sort_unstable();
        Ok(expired)
    }

    /// Records that `worker` is alive and has `models` (the fleet's list of who can run
    /// what: `note_waiting` reads it).
    pub fn publish_worker(&self, worker: &str, models: &[String]) -> StoreResult<()> {
        self.with("publishing the worker's models", None, |c| {
            c.execute(
                concat!(
                    "INSERT INTO workers (name, models, seen_at) VALUES ($1, $2, ",
                    db_now_ms!(),
                    ") ON CONFLICT (name) DO UPDATE SET models = $2, seen_at = ",
                    db_now_ms!()
                ),
                &[&worker, &models],
            )
            .map(|_| ())
        })
    }

    /// Records the keys of what `worker`'s memory cache holds (`HeavyKeys` are matched
    /// against them by cache-aware claims).
    pub fn publish_holds(&self, worker: &str, holds: &[String]) -> StoreResult<()> {
        self.with("publishing what the worker's cache holds", None, |c| {
            c.execute(
                "UPDATE workers SET holds = $2 WHERE name = $1",
                &[&worker, &holds],
            )
            .map(|_| ())
        })
    }

    /// A stopping worker leaves the fleet's list at once.
    pub fn forget_worker(&self, worker: &str) -> StoreResult<()> {
        self.with("removing the worker from the fleet's list", None, |c| {
            c.execute("DELETE FROM workers WHERE name = $1", &[&worker])
                .map(|_| ())
        })
    }

    /// Says on each queued run that no worker seen within `alive` can take why it waits
    /// (`waiting for a worker with model X`), and clears that once one can; the runs whose
    /// note changed.
    pub fn note_waiting(&self, alive: Duration) -> StoreResult<Vec<u64>> {
        let alive_ms = alive.as_millis().min(i64::MAX as u128) as i64;
        let rows = self.with("noting which queued runs no worker can take", None, |c| {
            c.query(
                concat!(
                    "WITH live AS (SELECT DISTINCT unnest(models) AS model FROM workers \
                     WHERE seen_at > ",
                    db_now_ms!(),
                    " - $1), notes AS (SELECT id, (SELECT 'waiting for a worker with model ' \
                     || string_agg(n, ', ' ORDER BY n) FROM unnest(needs) AS n \
                     WHERE n NOT IN (SELECT model FROM live)) AS note \
                     FROM runs WHERE status = 'queued') \
                     UPDATE runs SET waiting = notes.note FROM notes \
                     WHERE runs.id = notes.id AND runs.status = 'queued' \
                     AND runs.waiting IS DISTINCT FROM notes.note RETURNING runs.id"
                ),
                &[&alive_ms],
            )
        })?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
    }

    /// Sends `payload` to every session listening on `channel` (delivered in the order sent
    /// from this connection).
    pub fn notify(&self, channel: &str, payload: &str) -> StoreResult<()> {
        let channel = self.channel(channel);
        // Once: a repeated notification would be a repeated event.
        self.with_once("notifying the fleet", None, |c| {
            c.execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                .map(|_| ())
        })
    }

    /// Sends each of `payloads`, in order, on `channel` with one statement (one round trip).
    /// Identical payloads in one call are delivered once (PostgreSQL folds them): callers
    /// split such a list.
    pub fn notify_all(&self, channel: &str, payloads: &[&str]) -> StoreResult<()> {
        let channel = self.channel(channel);
        // Once: a repeated notification would be a repeated event.
        self.with_once("notifying the fleet", None, |c| {
            c.execute(
                "SELECT pg_notify($1, payload) FROM unnest($2::text[]) WITH ORDINALITY \
                 AS sent(payload, position) ORDER BY position",
                &[&channel, &payloads],
            )
            .map(|_| ())
        })
    }

    /// Stores run `run`'s newest preview (replacing its last) and tells the API servers on
    /// `PREVIEWS_CHANNEL`, in one statement; old rows of other runs go with it.
    pub fn put_preview(
        &self,
        run: u64,
        node: &str,
        step: u32,
        total: u32,
        image: &str,
    ) -> StoreResult<()> {
        let channel = self.channel(PREVIEWS_CHANNEL);
        // Once: a repeated notification is only a repeated fetch, but nothing needs it.
        self.with_once("storing a preview for the API servers", Some(run), |c| {
            c.execute(
                concat!(
                    "WITH gone AS (DELETE FROM previews WHERE at < ",
                    db_now_ms!(),
                    " - $7), stored AS (INSERT INTO previews (run, node, step, total, image, at) \
                     VALUES ($1, $2, $3, $4, $5, ",
                    db_now_ms!(),
                    ") ON CONFLICT (run) DO UPDATE SET node = excluded.node, step = excluded.step, \
                     total = excluded.total, image = excluded.image, at = excluded.at \
                     RETURNING run) SELECT pg_notify($6, run::text) FROM stored"
                ),
                &[
                    &(run as i64),
                    &node,
                    &(step as i32),
                    &(total as i32),
                    &image,
                    &channel,
                    &PREVIEW_KEPT_MS,
                ],
            )
            .map(|_| ())
        })
    }

    /// Run `run`'s newest preview: (node, step, total, `data:` URL).
    pub fn preview(&self, run: u64) -> StoreResult<Option<(String, u32, u32, String)>> {
        self.with("reading a run's preview", Some(run), |c| {
            c.query_opt(
                "SELECT node, step, total, image FROM previews WHERE run = $1",
                &[&(run as i64)],
            )
            .map(|row| {
                row.map(|r| {
                    (
                        r.get(0),
                        r.get::<_, i32>(1) as u32,
                        r.get::<_, i32>(2) as u32,
                        r.get(3),
                    )
                })
            })
        })
    }

    /// Runs in this database that are running, with the worker holding each.
    pub fn running_workers(&self) -> StoreResult<Vec<(u64, Option<String>)>> {
        self.with("listing running runs", None, |c| {
            c.query(
                "SELECT id, worker FROM runs WHERE status = 'running' ORDER BY id",
                &[],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                    .collect()
            })
        })
    }

    /// Listens on `channels` on a connection of its own, on a thread of its own: `on` gets
    /// each notification as (channel, payload), and `None` every `tick` without one and after
    /// each reconnection (a notification may have been missed while the connection was down:
    /// a tick is the caller's cue to look at the database itself).
    pub fn listen(
        &self,
        channels: &'static [&'static str],
        tick: Duration,
        mut on: impl FnMut(Option<(&str, &str)>) + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let config = self.config().clone();
        let place = self.place().to_string();
        let named: Vec<(&'static str, String)> =
            channels.iter().map(|c| (*c, self.channel(c))).collect();
        std::thread::Builder::new()
            .name("weft-listen".into())
            .spawn(move || {
                let mut reported = false;
                loop {
                    let mut client = match config.connect(NoTls) {
                        Ok(client) => client,
                        Err(e) => {
                            if !std::mem::replace(&mut reported, true) {
                                eprintln!("weft: listening for the fleet's notifications on {place}: {e} (retrying every second)");
                            }
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                    };
                    let listens: String = named
                        .iter()
                        .map(|(_, full)| format!("LISTEN \"{full}\";"))
                        .collect();
                    if let Err(e) = client.batch_execute(&listens) {
                        eprintln!("weft: LISTEN on {place}: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                    if std::mem::take(&mut reported) {
                        eprintln!("weft: listening on {place} again");
                    }
                    on(None);
                    loop {
                        let mut got = false;
                        {
                            let mut notifications = client.notifications();
                            let mut batch = notifications.timeout_iter(tick);
                            loop {
                                match batch.next() {
                                    Ok(Some(n)) => {
                                        got = true;
                                        // Callers know the channels by their base names.
                                        let base = named
                                            .iter()
                                            .find(|(_, full)| full == n.channel())
                                            .map_or(n.channel(), |(base, _)| base);
                                        on(Some((base, n.payload())));
                                    }
                                    Ok(None) => break,
                                    Err(e) => {
                                        eprintln!(
                                            "weft: the fleet's notifications on {place}: {e}"
                                        );
                                        break;
                                    }
                                }
                            }
                        }
                        if client.is_closed() {
                            break;
                        }
                        if !got {
                            on(None);
                        }
                    }
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::needed_models;

    #[test]
    fn a_workflow_needs_the_models_its_loaders_name_each_once() {
        let workflow = r#"{"weft": 1, "nodes": {
            "model": {"type": "LoadCheckpoint", "name": "tiny-shapes"},
            "again": {"type": "LoadCheckpoint", "name": "tiny-shapes"},
            "lora": {"type": "LoadLora", "model": "$model.unet", "text_encoder": "$model.text_encoder",
                     "lora": "loras/x.safetensors"},
            "up": {"type": "LoadUpscaleModel", "name": "/abs/esrgan.safetensors"},
            "image": {"type": "LoadImage", "name": "cat.png"}
        }}"#;
        assert_eq!(
            needed_models(workflow),
            ["loras/x.safetensors", "tiny-shapes"],
            "an absolute path is not a folder's name, and an image is no model"
        );
        assert!(needed_models("not a workflow: [").is_empty());
    }
}
