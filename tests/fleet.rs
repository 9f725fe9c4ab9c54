//! A fleet as an operator runs it: two `weft serve --queue` API servers and three `weft worker`
//! processes on one PostgreSQL (the throwaway server `make test` starts, scripts/postgres.sh)
//! and one shared data folder, on the embedded tiny-shapes model. One worker is SIGKILLed in
//! the middle of a run: every run still finishes exactly once, with its image, and every
//! API server's /ws client sees every run's `run_finished` once.
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{repo, start_worker, PgSchema, ServerProcess, WorkerLog};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft"))
}

/// The tests that start a fleet take turns: one restarts the PostgreSQL server every schema
/// shares, and their kills and lease timings should not compete for a small machine's CPU.
static ONE_FLEET_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_fleet_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_FLEET_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A schema of its own in the test server's database, dropped afterwards.
struct Schema(PgSchema);

impl std::ops::Deref for Schema {
    type Target = PgSchema;
    fn deref(&self) -> &PgSchema {
        &self.0
    }
}

impl Schema {
    fn new(case: &str) -> Self {
        Self(PgSchema::new(format!(
            "fleet_{case}_{}",
            std::process::id()
        )))
    }

    /// This schema's fleet tags its connections `application_name = <schema>`, so that
    /// `drop_connections` ends exactly these (other tests share the server).
    fn tag_connections(&mut self) {
        self.0.url = if self.url.contains("://") {
            format!("{}&application_name={}", self.url, self.name)
        } else {
            format!("{} application_name={}", self.url, self.name)
        };
    }

    /// Ends every connection of this schema's fleet from the server's side (what a
    /// PostgreSQL restart does to its clients); how many were ended.
    fn drop_connections(&self) -> i64 {
        let mut admin = postgres::Client::connect(&self.admin, postgres::NoTls).unwrap();
        admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1",
                &[&self.name],
            )
            .unwrap()
            .get(0)
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

/// A `weft worker` process; killed when dropped.
struct Worker {
    name: String,
    child: Child,
    log: WorkerLog,
}

impl Worker {
    fn start(dir: &Path, url: &str, name: &str) -> Self {
        Self::start_with_models(dir, url, name, &[repo().join("models")], &[])
    }

    /// A worker whose models are `models` (each a `--models` folder), with `more` options.
    fn start_with_models(
        dir: &Path,
        url: &str,
        name: &str,
        models: &[PathBuf],
        more: &[&str],
    ) -> Self {
        let common = [
            "--queue",
            url,
            "--name",
            name,
            "--device",
            "cpu",
            "--threads",
            "1",
        ];
        let mut args: Vec<&std::ffi::OsStr> = common.iter().map(std::ffi::OsStr::new).collect();
        for folder in models {
            args.extend([std::ffi::OsStr::new("--models"), folder.as_os_str()]);
        }
        if !more.contains(&"--lease-timeout") {
            args.extend(["--lease-timeout", "4"].map(std::ffi::OsStr::new));
        }
        args.extend(more.iter().map(std::ffi::OsStr::new));
        let (child, log) = start_worker(bin(), dir, args);
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temp project: three small tiny-shapes workflows (64x64, a few steps).
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let workflows = dir.path().join("workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    let base = std::fs::read_to_string(repo().join("workflows/txt2img.yaml")).unwrap();
    let few_steps = base.replace("steps: 20", "steps: 3");
    assert_ne!(few_steps, base, "txt2img.yaml has 'steps: 20'");
    let variants = [
        ("circles", "a red circle on a blue background"),
        ("squares", "a green square on a yellow background"),
        ("triangles", "a white triangle on a black background"),
    ];
    for (name, text) in variants {
        let doc = few_steps
            .replace("a red circle on a blue background", text)
            .replace("prefix: txt2img", &format!("prefix: {name}"));
        std::fs::write(workflows.join(format!("{name}.yaml")), doc).unwrap();
    }
    dir
}

/// Collects every message a /ws client gets into `seen`, on a thread of its own, until `stop`.
fn watch(
    server: &ServerProcess,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<Value>>>, std::thread::JoinHandle<()>) {
    let mut ws = server.ws();
    // The first message (the queue) says the socket is subscribed to the server's events.
    let first = ws
        .next(Duration::from_secs(60))
        .expect("a queue message on connect");
    assert_eq!(first["event"], "queue");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    let thread = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Some(m) = ws.next(Duration::from_millis(200)) {
                into.lock().unwrap().push(m);
            }
        }
    });
    (seen, thread)
}

/// How many `run_finished` each run got among `messages`.
fn finishes(messages: &[Value]) -> HashMap<u64, usize> {
    let mut finished: HashMap<u64, usize> = HashMap::new();
    for m in messages.iter().filter(|m| m["event"] == "run_finished") {
        *finished.entry(m["run"].as_u64().unwrap()).or_default() += 1;
    }
    finished
}

/// Runs by status, from the database.
fn statuses(db: &mut postgres::Client) -> BTreeMap<String, i64> {
    db.query("SELECT status, COUNT(*) FROM runs GROUP BY status", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Restarts the test's PostgreSQL server: stopped (`pg_ctl stop -m fast`, which ends every
/// session) and started again on the same data folder and socket, by the script
/// scripts/postgres.sh names in WEFT_TEST_POSTGRES_RESTART; how long it took.
fn restart_postgres() -> Duration {
    let script = std::env::var("WEFT_TEST_POSTGRES_RESTART")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| {
            panic!(
                "WEFT_TEST_POSTGRES_RESTART is not set: this test restarts the PostgreSQL \
                 server; run it under scripts/postgres.sh (make test does), which sets it"
            )
        });
    let started = Instant::now();
    let status = Command::new(&script)
        .status()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(status.success(), "{script} failed: {status}");
    started.elapsed()
}

fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> (Option<T>, String)) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let (found, state) = probe();
        if let Some(found) = found {
            return found;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {state}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The proof: 300 runs from three workflows with changing seeds, queued through two
/// API servers, run by three workers; one worker is SIGKILLed in the middle of a run and the
/// PostgreSQL server is restarted while runs are running (and the last 10 runs are queued
/// right after it). Every run finishes exactly once, with one image in its own folder served
/// by every API server, and every API server's /ws client sees every `run_finished` once.
#[test]
#[ignore = "needs PostgreSQL and models/converted from set-up; `make test` runs it"]
fn a_fleet_finishes_300_runs_once_through_a_killed_worker_and_a_postgres_restart() {
    let _turn = one_fleet_at_a_time();
    const RUNS: i64 = 300;
    const AFTER_RESTART: i64 = 10;
    let schema = Schema::new("killed");
    let dir = project();
    let models = repo().join("models").to_string_lossy().into_owned();
    let api_args = ["--queue", schema.url.as_str(), "--models", models.as_str()];
    let first = ServerProcess::start(bin(), dir.path(), &api_args);
    let second = ServerProcess::start(bin(), dir.path(), &api_args);
    // Leases of 10 s: longer than the restart's outage (a worker stops its run itself after
    // half a lease without renewing it), short enough for the killed worker's run to be
    // re-queued soon.
    let mut workers: Vec<Worker> = ["w1", "w2", "w3"]
        .iter()
        .map(|name| {
            let models = [repo().join("models")];
            Worker::start_with_models(
                dir.path(),
                &schema.url,
                name,
                &models,
                &["--lease-timeout", "10"],
            )
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let watchers = [watch(&first, stop.clone()), watch(&second, stop.clone())];

    let workflows = ["circles", "squares", "triangles"];
    let mut expected: HashMap<u64, (&str, i64)> = HashMap::new();
    let mut queue = |i: i64| {
        let workflow = workflows[i as usize % 3];
        let seed = 1000 + i;
        // Half through each API server: both enqueue into the one queue.
        let http = if i % 2 == 0 {
            first.http()
        } else {
            second.http()
        };
        let id = http.queue_run(&json!({"workflow": workflow, "set": {"sample.seed": seed}}));
        expected.insert(id, (workflow, seed));
    };
    for i in 0..RUNS - AFTER_RESTART {
        queue(i);
    }

    let mut db = schema.client();
    // SIGKILL w1 while it holds a run: frozen first (SIGSTOP), so the run it holds cannot
    // finish between looking and killing.
    let w1 = workers[0].child.id() as libc::pid_t;
    let victim = wait_for("w1 to hold a run", Duration::from_secs(240), || {
        let held = |db: &mut postgres::Client| {
            db.query_opt(
                "SELECT id FROM runs WHERE status = 'running' AND worker = 'w1' LIMIT 1",
                &[],
            )
            .unwrap()
            .map(|r| r.get::<_, i64>(0) as u64)
        };
        if held(&mut db).is_some() {
            // SAFETY: kill(2) on our own child's pid, which has not been waited for.
            unsafe { libc::kill(w1, libc::SIGSTOP) };
            // A statement w1 sent just before it stopped (the run's record) still lands:
            // give it a moment before looking again.
            std::thread::sleep(Duration::from_millis(500));
            if let Some(id) = held(&mut db) {
                return (Some(id), String::new());
            }
            unsafe { libc::kill(w1, libc::SIGCONT) };
        }
        (None, format!("{:?}", statuses(&mut db)))
    });
    workers[0].kill();
    let status: String = db
        .query_one("SELECT status FROM runs WHERE id = $1", &[&(victim as i64)])
        .unwrap()
        .get(0);
    assert_eq!(
        status, "running",
        "run {victim} was held by w1 when it was killed"
    );

    // The database restarts while the two live workers run: once a third of the runs are
    // done, or at once if a worker holds a run now.
    wait_for(
        "a third of the runs to finish",
        Duration::from_secs(300),
        || {
            let by_status = statuses(&mut db);
            let done = by_status.get("succeeded").copied().unwrap_or(0);
            ((done >= RUNS / 3).then_some(()), format!("{by_status:?}"))
        },
    );
    let running_before: i64 = db
        .query_one("SELECT count(*) FROM runs WHERE status = 'running'", &[])
        .unwrap()
        .get(0);
    let outage = restart_postgres();
    // The first requests after the restart: every one is answered (each API server's store
    // runs a statement again on a new connection when it finds its connection ended).
    for i in RUNS - AFTER_RESTART..RUNS {
        queue(i);
    }
    let mut db = schema.client();
    println!(
        "figure: PostgreSQL restarted in {outage:?} with {running_before} run(s) running; \
         the {AFTER_RESTART} runs queued right after it were all accepted"
    );

    let total = expected.len() as i64;
    assert_eq!(total, RUNS);
    wait_for("every run to finish", Duration::from_secs(600), || {
        let by_status = statuses(&mut db);
        let finished: i64 = by_status
            .iter()
            .filter(|(s, _)| !["queued", "running"].contains(&s.as_str()))
            .map(|(_, n)| n)
            .sum();
        ((finished == total).then_some(()), format!("{by_status:?}"))
    });
    // Each run_finished is sent right after its record is written: wait for it on every
    // socket (a bounded wait), then a moment more in case one came twice.
    for (server, (seen, _)) in watchers.iter().enumerate() {
        wait_for(
            "every run_finished on every API server's socket",
            Duration::from_secs(120),
            || {
                let finished = finishes(&seen.lock().unwrap());
                let mut missing: Vec<u64> = expected
                    .keys()
                    .filter(|id| !finished.contains_key(id))
                    .copied()
                    .collect();
                missing.sort_unstable();
                (
                    missing.is_empty().then_some(()),
                    format!("API server {server}'s socket lacks {missing:?} (the killed worker's run: {victim})"),
                )
            },
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Vec<Value>> = watchers
        .into_iter()
        .map(|(seen, thread)| {
            thread.join().unwrap();
            Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
        })
        .collect();

    // Every run succeeded once, with one image in its own folder, served by both API servers.
    let rows = db
        .query(
            "SELECT id, status, outputs, attempts, worker FROM runs ORDER BY id",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), expected.len());
    let outputs_root: PathBuf = dir.path().join("data/outputs");
    for row in &rows {
        let id = row.get::<_, i64>(0) as u64;
        let status: String = row.get(1);
        let outputs: Value = serde_json::from_str(row.get::<_, &str>(2)).unwrap();
        let attempts: i32 = row.get(3);
        let worker: Option<String> = row.get(4);
        assert_eq!(status, "succeeded", "run {id}: {outputs}");
        let urls: Vec<&str> = outputs
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["url"].as_str().unwrap())
            .collect();
        assert_eq!(urls.len(), 1, "run {id} has one output: {urls:?}");
        let (workflow, _) = expected[&id];
        assert!(
            urls[0].starts_with(&format!("/api/outputs/{id}/{workflow}_")),
            "run {id}'s image is in its own folder: {}",
            urls[0]
        );
        let files: Vec<_> = std::fs::read_dir(outputs_root.join(id.to_string()))
            .unwrap_or_else(|e| panic!("run {id}'s output folder: {e}"))
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files.len(), 1, "run {id}: exactly one file, {files:?}");
        for server in [&first, &second] {
            let reply = server.http().get(urls[0]);
            assert_eq!(reply.status, 200, "{} from port {}", urls[0], server.port);
            assert!(reply.body.starts_with(b"\x89PNG"));
        }
        if id == victim {
            assert_eq!(
                attempts, 1,
                "the killed worker's run was claimed again once"
            );
            assert_ne!(worker.as_deref(), Some("w1"), "another worker finished it");
        } else if attempts != 0 {
            let about: Vec<String> = workers
                .iter()
                .flat_map(|w| {
                    let name = w.name.clone();
                    w.log
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|l| {
                            l.contains(&format!("run {id}"))
                                || l.contains(&format!("{id}]"))
                                || l.contains(&format!("{id},"))
                        })
                        .map(|l| format!("{name}: {l}"))
                        .collect::<Vec<_>>()
                })
                .collect();
            panic!("run {id} lost its lease (attempts {attempts}, finished by {worker:?}); the workers' log about it: {about:#?}");
        }
    }
    for (server, messages) in seen.iter().enumerate() {
        let finished = finishes(messages);
        for m in messages.iter().filter(|m| m["event"] == "run_finished") {
            assert_eq!(m["status"], "succeeded", "{m}");
        }
        let mut wrong: Vec<(u64, usize)> = expected
            .keys()
            .map(|id| (*id, finished.get(id).copied().unwrap_or(0)))
            .filter(|(_, n)| *n != 1)
            .collect();
        wrong.sort_unstable();
        assert!(
            wrong.is_empty(),
            "API server {server}'s client saw these runs' run_finished not once (run, times): \
             {wrong:?}; the killed worker's run was {victim}; {} messages, the first: {:?}",
            messages.len(),
            messages.iter().take(3).collect::<Vec<_>>()
        );
        assert_eq!(finished.len(), expected.len());
    }
    let requeued = workers[1..]
        .iter()
        .flat_map(|w| w.log.lock().unwrap().clone())
        .any(|line| line.contains("re-queued") && line.contains(&victim.to_string()));
    assert!(requeued, "a live worker re-queued run {victim}");

    // A long run, cancelled through another API server than the one that queued it, while a
    // third API server starts (which must leave the fleet's running run alone).
    let long = first.http().queue_run(
        &json!({"workflow": "circles", "set": {"sample.seed": 7, "sample.steps": 2000}}),
    );
    let status_of = |db: &mut postgres::Client, id: u64| -> String {
        db.query_one("SELECT status FROM runs WHERE id = $1", &[&(id as i64)])
            .unwrap()
            .get(0)
    };
    wait_for("the long run to start", Duration::from_secs(120), || {
        let status = status_of(&mut db, long);
        ((status == "running").then_some(()), status)
    });
    let third = ServerProcess::start(bin(), dir.path(), &api_args);
    assert_eq!(
        status_of(&mut db, long),
        "running",
        "an API server starting leaves the workers' runs running"
    );
    let mut third_ws = third.ws();
    let asked = Instant::now();
    let reply = second
        .http()
        .post(&format!("/api/runs/{long}/cancel"), &json!({}));
    assert_eq!(
        reply.status,
        202,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let events = third_ws.run(long, Duration::from_secs(120));
    let took = asked.elapsed();
    assert_eq!(events.last().unwrap()["status"], "cancelled", "{events:?}");
    assert_eq!(status_of(&mut db, long), "cancelled");
    println!(
        "figure: cancel asked on one API server -> run_finished (cancelled) on another: {took:?}"
    );

    // A worker stopped with SIGTERM gives its run back at once (no lost lease counted), and
    // another worker takes it.
    let given_back = first.http().queue_run(
        &json!({"workflow": "squares", "set": {"sample.seed": 8, "sample.steps": 2000}}),
    );
    let holder = wait_for("the run to be held", Duration::from_secs(120), || {
        let row = db
            .query_one(
                "SELECT status, worker FROM runs WHERE id = $1",
                &[&(given_back as i64)],
            )
            .unwrap();
        let status: String = row.get(0);
        let worker: Option<String> = row.get(1);
        ((status == "running").then(|| worker.unwrap()), status)
    });
    let stopped = workers
        .iter_mut()
        .find(|w| w.name == holder)
        .expect("a live worker holds it");
    // SAFETY: kill(2) on our own child's pid, which has not been waited for.
    unsafe { libc::kill(stopped.child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = stopped.child.wait();
    let next = wait_for(
        "another worker to take it",
        Duration::from_secs(120),
        || {
            let row = db
                .query_one(
                    "SELECT status, worker, attempts, error FROM runs WHERE id = $1",
                    &[&(given_back as i64)],
                )
                .unwrap();
            let (status, worker, attempts): (String, Option<String>, i32) =
                (row.get(0), row.get(1), row.get(2));
            let taken = status == "running" && worker.as_deref() != Some(holder.as_str());
            let error: Option<String> = row.get(3);
            let state = format!("{status} on {worker:?} (error {error:?}, held by {holder})");
            (taken.then_some((worker, attempts)), state)
        },
    );
    assert_eq!(next.1, 0, "given back, not expired: {next:?}");
    let reply = first
        .http()
        .post(&format!("/api/runs/{given_back}/cancel"), &json!({}));
    assert_eq!(
        reply.status,
        202,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    wait_for("the cancel", Duration::from_secs(120), || {
        let status = status_of(&mut db, given_back);
        ((status == "cancelled").then_some(()), status)
    });

    // Figures: enqueue -> claim with idle workers, from the records (fully cached reruns).
    let mut waits = Vec::new();
    for i in 0..20i64 {
        let id = first.http().queue_run(
            &json!({"workflow": "circles", "set": {"sample.seed": 1000 + 3 * (i % 10)}}),
        );
        let (queued, started) = wait_for("a rerun to finish", Duration::from_secs(120), || {
            let row = db
                .query_one(
                    "SELECT status, queued_at, started_at FROM runs WHERE id = $1",
                    &[&(id as i64)],
                )
                .unwrap();
            let status: String = row.get(0);
            let done = (status == "succeeded")
                .then(|| (row.get::<_, i64>(1), row.get::<_, Option<i64>>(2).unwrap()));
            (done, status)
        });
        waits.push(started - queued);
    }
    waits.sort_unstable();
    println!(
        "figure: enqueue -> claim with idle workers over {} runs: median {} ms, p99 {} ms (millisecond clock)",
        waits.len(),
        waits[waits.len() / 2],
        waits[(waits.len() * 99).div_ceil(100) - 1]
    );
}

#[test]
#[ignore = "needs PostgreSQL and models/converted from set-up; `make test` runs it"]
fn a_fleet_finishes_every_run_once_when_its_database_connections_drop() {
    let _turn = one_fleet_at_a_time();
    let mut schema = Schema::new("dropped");
    schema.tag_connections();
    let dir = project();
    let models = repo().join("models").to_string_lossy().into_owned();
    let api_args = ["--queue", schema.url.as_str(), "--models", models.as_str()];
    let api = ServerProcess::start(bin(), dir.path(), &api_args);
    let workers: Vec<Worker> = ["d1", "d2"]
        .iter()
        .map(|name| Worker::start(dir.path(), &schema.url, name))
        .collect();
    let workflows = ["circles", "squares", "triangles"];
    let mut expected: HashMap<u64, &str> = HashMap::new();
    let mut queue = |i: usize| {
        let id = api
            .http()
            .queue_run(&json!({"workflow": workflows[i % 3], "set": {"sample.seed": 2000 + i}}));
        expected.insert(id, workflows[i % 3]);
    };
    for i in 0..8 {
        queue(i);
    }
    let mut db = postgres::Client::connect(&schema.admin, postgres::NoTls).unwrap();
    let in_schema = format!("SET search_path = {}", schema.name);
    db.batch_execute(&in_schema).unwrap();
    wait_for("a run to be running", Duration::from_secs(240), || {
        let by_status = statuses(&mut db);
        (
            by_status.contains_key("running").then_some(()),
            format!("{by_status:?}"),
        )
    });
    let dropped = schema.drop_connections();
    assert!(
        dropped >= 5,
        "the API server's and workers' connections: {dropped}"
    );
    // The API server answers again once it has reconnected (a request may fail meanwhile).
    let mut failed_requests = 0;
    wait_for(
        "the API server after the drop",
        Duration::from_secs(60),
        || {
            let reply = api.http().get("/api/runs?limit=1");
            failed_requests += usize::from(reply.status != 200);
            (
                (reply.status == 200).then_some(()),
                String::from_utf8_lossy(&reply.body).into_owned(),
            )
        },
    );
    for i in 8..12 {
        queue(i);
    }
    let total = expected.len() as i64;
    wait_for("every run to finish", Duration::from_secs(300), || {
        let by_status = statuses(&mut db);
        let finished: i64 = by_status
            .iter()
            .filter(|(s, _)| !["queued", "running"].contains(&s.as_str()))
            .map(|(_, n)| n)
            .sum();
        ((finished == total).then_some(()), format!("{by_status:?}"))
    });
    let rows = db
        .query(
            "SELECT id, status, outputs, attempts FROM runs ORDER BY id",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), expected.len());
    let mut attempts_seen = Vec::new();
    for row in &rows {
        let id = row.get::<_, i64>(0) as u64;
        let status: String = row.get(1);
        let outputs: Value = serde_json::from_str(row.get::<_, &str>(2)).unwrap();
        assert_eq!(status, "succeeded", "run {id}: {outputs}");
        assert_eq!(outputs.as_array().unwrap().len(), 1, "run {id}: {outputs}");
        let files = std::fs::read_dir(dir.path().join("data/outputs").join(id.to_string()))
            .unwrap_or_else(|e| panic!("run {id}'s output folder: {e}"))
            .count();
        assert_eq!(files, 1, "run {id}: exactly one file");
        assert!(
            outputs[0]["url"]
                .as_str()
                .unwrap()
                .starts_with(&format!("/api/outputs/{id}/{}_", expected[&id])),
            "run {id}: {outputs}"
        );
        attempts_seen.push(row.get::<_, i32>(3));
    }
    for mut worker in workers {
        assert!(
            worker.child.try_wait().unwrap().is_none(),
            "worker {} kept running: {:#?}",
            worker.name,
            worker.log.lock().unwrap()
        );
    }
    println!(
        "figure: {dropped} connections dropped mid-run; {failed_requests} API request(s) failed \
         before the server reconnected; lost leases per run {attempts_seen:?}"
    );
}

#[test]
#[ignore = "needs PostgreSQL and models/converted from set-up; `make test` runs it"]
fn a_run_waits_for_a_worker_that_has_its_model() {
    let _turn = one_fleet_at_a_time();
    let schema = Schema::new("models");
    let dir = project();
    // The embedded model under a second name only the second worker's folder has.
    let extra = dir.path().join("extra-models");
    std::fs::create_dir_all(&extra).unwrap();
    std::os::unix::fs::symlink(
        repo().join("models/tiny-shapes"),
        extra.join("other-shapes"),
    )
    .unwrap();
    let circles = dir.path().join("workflows/circles.yaml");
    let other = std::fs::read_to_string(&circles)
        .unwrap()
        .replace("name: tiny-shapes", "name: other-shapes");
    assert!(other.contains("name: other-shapes"));
    std::fs::write(dir.path().join("workflows/other.yaml"), other).unwrap();
    let (models, extra_arg) = (repo().join("models"), extra.to_string_lossy().into_owned());
    let models_arg = models.to_string_lossy().into_owned();
    let api_args = [
        "--queue",
        schema.url.as_str(),
        "--models",
        models_arg.as_str(),
        "--models",
        extra_arg.as_str(),
    ];
    let api = ServerProcess::start(bin(), dir.path(), &api_args);
    let _plain = Worker::start_with_models(
        dir.path(),
        &schema.url,
        "plain",
        std::slice::from_ref(&models),
        &[],
    );
    let http = api.http();
    let needs_other = http.queue_run(&json!({"workflow": "other"}));
    let needs_plain = http.queue_run(&json!({"workflow": "circles"}));
    let run = |id: u64| http.get(&format!("/api/runs/{id}")).json();
    // The later run the worker can take goes first; the other waits, and says why.
    wait_for("the plain worker's run", Duration::from_secs(240), || {
        let shown = run(needs_plain);
        (
            (shown["status"] == "succeeded").then_some(()),
            shown.to_string(),
        )
    });
    wait_for("the waiting run's reason", Duration::from_secs(60), || {
        let shown = run(needs_other);
        let waits = shown["status"] == "queued"
            && shown["waiting"] == "waiting for a worker with model other-shapes";
        (waits.then_some(()), shown.to_string())
    });
    let _both = Worker::start_with_models(dir.path(), &schema.url, "both", &[models, extra], &[]);
    let shown = wait_for(
        "the run needing other-shapes",
        Duration::from_secs(240),
        || {
            let shown = run(needs_other);
            let done = !["queued", "running"].contains(&shown["status"].as_str().unwrap_or(""));
            (done.then(|| shown.clone()), shown.to_string())
        },
    );
    assert_eq!(shown["status"], "succeeded", "{shown}");
    assert!(
        shown.get("waiting").is_none(),
        "no reason once taken: {shown}"
    );
    let mut db = schema.client();
    let worker_of = |db: &mut postgres::Client, id: u64| -> String {
        db.query_one("SELECT worker FROM runs WHERE id = $1", &[&(id as i64)])
            .unwrap()
            .get(0)
    };
    assert_eq!(worker_of(&mut db, needs_other), "both");
    assert_eq!(worker_of(&mut db, needs_plain), "plain");
    let needs: Vec<String> = db
        .query_one(
            "SELECT needs FROM runs WHERE id = $1",
            &[&(needs_other as i64)],
        )
        .unwrap()
        .get(0);
    assert_eq!(needs, ["other-shapes"]);
}

/// Runs `runs` runs naming three models in turn (the embedded model linked under three
/// names, so their loads have three cache keys) on two workers claiming with
/// `--cache-affinity affinity` and a memory cache of `budget`; how many runs found their
/// model loaded (the record's `model` node `cached`).
fn runs_finding_their_model_loaded(case: &str, affinity: &str, budget: &str, runs: usize) -> usize {
    let schema = Schema::new(case);
    let dir = project();
    let extra = dir.path().join("extra-models");
    std::fs::create_dir_all(&extra).unwrap();
    let circles = std::fs::read_to_string(dir.path().join("workflows/circles.yaml")).unwrap();
    let names = ["shapes-a", "shapes-b", "shapes-c"];
    for name in names {
        std::os::unix::fs::symlink(repo().join("models/tiny-shapes"), extra.join(name)).unwrap();
        let doc = circles
            .replace("name: tiny-shapes", &format!("name: {name}"))
            .replace("prefix: circles", &format!("prefix: {name}"));
        std::fs::write(dir.path().join(format!("workflows/{name}.yaml")), doc).unwrap();
    }
    let models = repo().join("models");
    let (models_arg, extra_arg) = (
        models.to_string_lossy().into_owned(),
        extra.to_string_lossy().into_owned(),
    );
    let api_args = [
        "--queue",
        schema.url.as_str(),
        "--models",
        models_arg.as_str(),
        "--models",
        extra_arg.as_str(),
    ];
    let api = ServerProcess::start(bin(), dir.path(), &api_args);
    let folders = [models.clone(), extra.clone()];
    let _workers: Vec<Worker> = ["k1", "k2"]
        .iter()
        .map(|name| {
            let more = ["--cache-affinity", affinity, "--cache-budget", budget];
            Worker::start_with_models(dir.path(), &schema.url, name, &folders, &more)
        })
        .collect();
    let ids: Vec<u64> = (0..runs)
        .map(|i| {
            api.http()
                .queue_run(&json!({"workflow": names[i % 3], "set": {"sample.seed": 3000 + i}}))
        })
        .collect();
    let mut db = schema.client();
    wait_for("every run to finish", Duration::from_secs(600), || {
        let by_status = statuses(&mut db);
        let done = by_status.get("succeeded") == Some(&(ids.len() as i64));
        let unfinished = by_status.contains_key("queued") || by_status.contains_key("running");
        assert!(done || unfinished, "every run succeeds: {by_status:?}");
        (done.then_some(()), format!("{by_status:?}"))
    });
    let mut loaded = 0;
    let mut order = Vec::new();
    for id in &ids {
        let row = db
            .query_one(
                "SELECT nodes, worker, needs, model_keys, heavy_keys FROM runs WHERE id = $1",
                &[&(*id as i64)],
            )
            .unwrap();
        let nodes: Value = serde_json::from_str(row.get::<_, &str>(0)).unwrap();
        let state = nodes["model"]["state"].as_str().unwrap_or("").to_string();
        assert!(
            ["ran", "cached"].contains(&state.as_str()),
            "run {id}: {nodes}"
        );
        loaded += usize::from(state == "cached");
        let needs: Vec<String> = row.get(2);
        let (model_keys, heavy_keys): (Vec<String>, Vec<String>) = (row.get(3), row.get(4));
        assert_eq!(
            (model_keys.len(), heavy_keys.len()),
            (1, 3),
            "run {id}: the API server planned its checkpoint, two encodes and its sampler"
        );
        order.push(format!(
            "{}:{}:{state}",
            row.get::<_, String>(1),
            needs.join(",")
        ));
    }
    println!("runs with --cache-affinity {affinity} --cache-budget {budget} (worker:model:load): {order:?}");
    loaded
}

/// A budget that holds one loaded model with its prompt encodes, not two (the embedded
/// model takes about 100 MB of the cache on the CPU).
const ONE_MODEL_BUDGET: &str = "150MB";

#[test]
#[ignore = "needs PostgreSQL and models/converted from set-up; `make test` runs it"]
fn cache_aware_claims_compared_with_oldest_first() {
    let _turn = one_fleet_at_a_time();
    const RUNS: usize = 36;
    let mut figures = Vec::new();
    for (budget, name) in [("8GiB", "large"), (ONE_MODEL_BUDGET, "one-model")] {
        let fifo = runs_finding_their_model_loaded(
            &format!("fifo_{}", name.replace('-', "_")),
            "0",
            budget,
            RUNS,
        );
        let aware = runs_finding_their_model_loaded(
            &format!("aware_{}", name.replace('-', "_")),
            "2",
            budget,
            RUNS,
        );
        if budget == "8GiB" {
            // Each worker loads each model at most once in either order (the cache holds all
            // three), and cache-aware claims can do no better than one load per model.
            assert!(
                fifo >= RUNS - 6 && (RUNS - 6..=RUNS - 3).contains(&aware),
                "fifo {fifo}, aware {aware}"
            );
        }
        figures.push(format!(
            "{name} cache: oldest first {fifo}/{RUNS}, cache-aware {aware}/{RUNS}"
        ));
    }
    println!(
        "figure: runs that found their model loaded (3 models, 2 workers): {}",
        figures.join("; ")
    );
}

/// A revision of a workflow (an editing session: same workflow name) runs on the worker that
/// ran its previous revision, although another idle worker's cache holds more of its keys.
#[test]
#[ignore = "needs PostgreSQL and models/converted from set-up; `make test` runs it"]
fn an_editing_session_stays_on_the_worker_that_ran_its_previous_revision() {
    let _turn = one_fleet_at_a_time();
    let schema = Schema::new("session");
    let dir = project();
    let models = repo().join("models");
    let models_arg = models.to_string_lossy().into_owned();
    let api_args = [
        "--queue",
        schema.url.as_str(),
        "--models",
        models_arg.as_str(),
    ];
    let api = ServerProcess::start(bin(), dir.path(), &api_args);
    let folders = [models];
    let more = ["--cache-affinity", "3"];
    let workers: Vec<Worker> = ["s1", "s2"]
        .iter()
        .map(|name| Worker::start_with_models(dir.path(), &schema.url, name, &folders, &more))
        .collect();
    let mut db = schema.client();
    let http = api.http();
    let run_to_end = |db: &mut postgres::Client, body: Value| -> String {
        let id = http.queue_run(&body);
        wait_for("the run", Duration::from_secs(240), || {
            let row = db
                .query_one(
                    "SELECT status, worker FROM runs WHERE id = $1",
                    &[&(id as i64)],
                )
                .unwrap();
            let status: String = row.get(0);
            let done = !["queued", "running"].contains(&status.as_str());
            assert!(!done || status == "succeeded", "run {id}: {status}");
            (done.then(|| row.get::<_, String>(1)), status)
        })
    };
    // The session's first revision, on whichever worker.
    let session = run_to_end(&mut db, json!({"workflow": "circles"}));
    let other = workers.iter().find(|w| w.name != session).unwrap();
    let frozen = workers.iter().find(|w| w.name == session).unwrap();
    // The other worker runs triangles while the session's worker is frozen (SIGSTOP): it
    // takes the run once the run has waited the affinity (the frozen one holds more of it).
    // SAFETY: kill(2) on our own child's pid, which has not been waited for.
    unsafe { libc::kill(frozen.child.id() as libc::pid_t, libc::SIGSTOP) };
    let took = run_to_end(&mut db, json!({"workflow": "triangles"}));
    unsafe { libc::kill(frozen.child.id() as libc::pid_t, libc::SIGCONT) };
    assert_eq!(took, other.name);
    // A run of another workflow with triangles' prompt goes where more of its keys are: the
    // other worker holds the model, the empty negative prompt's encode and this positive one;
    // the session's worker only the model and the negative encode.
    let triangle = "a white triangle on a black background";
    std::fs::copy(
        dir.path().join("workflows/circles.yaml"),
        dir.path().join("workflows/elsewhere.yaml"),
    )
    .unwrap();
    let keyed = run_to_end(
        &mut db,
        json!({"workflow": "elsewhere", "set": {"positive.text": triangle, "sample.seed": 8}}),
    );
    assert_eq!(
        keyed, other.name,
        "the worker holding more of the run's keys"
    );
    // The next revision of circles takes the same prompt: it stays on the worker of the
    // previous revision.
    let ran_on = run_to_end(
        &mut db,
        json!({"workflow": "circles", "set": {"positive.text": triangle, "sample.seed": 7}}),
    );
    assert_eq!(
        ran_on, session,
        "the revision stays on the worker of the previous one ({session}), not {}",
        other.name
    );
}

/// A run that an idle worker left to a better-suited one (whose cache holds its model) that
/// is busy is taken by the idle worker when the run's affinity window ends: a timer wakes it
/// then, rather than its next look at the queue (a notification or the 5 s tick).
#[test]
#[ignore = "needs PostgreSQL and models/converted from set-up; `make test` runs it"]
fn a_run_left_to_a_busy_worker_is_taken_when_its_affinity_window_ends() {
    let _turn = one_fleet_at_a_time();
    let schema = Schema::new("window");
    let dir = project();
    let models = repo().join("models");
    let models_arg = models.to_string_lossy().into_owned();
    let api_args = [
        "--queue",
        schema.url.as_str(),
        "--models",
        models_arg.as_str(),
    ];
    let api = ServerProcess::start(bin(), dir.path(), &api_args);
    let folders = [models];
    let more = ["--cache-affinity", "1"];
    let holder = Worker::start_with_models(dir.path(), &schema.url, "holder", &folders, &more);
    let mut db = schema.client();
    let http = api.http();
    let record =
        |db: &mut postgres::Client, id: u64| -> (String, Option<String>, i64, Option<i64>) {
            let row = db
                .query_one(
                    "SELECT status, worker, queued_at, started_at FROM runs WHERE id = $1",
                    &[&(id as i64)],
                )
                .unwrap();
            (row.get(0), row.get(1), row.get(2), row.get(3))
        };
    let first = http.queue_run(&json!({"workflow": "circles"}));
    wait_for("the holder's run", Duration::from_secs(240), || {
        let now = record(&mut db, first);
        ((now.0 == "succeeded").then_some(()), format!("{now:?}"))
    });
    let latecomer =
        Worker::start_with_models(dir.path(), &schema.url, "latecomer", &folders, &more);
    // The holder stays alive for the fleet (it published itself within WORKER_ALIVE) but
    // takes nothing while frozen; its cache holds the next run's model, encodes and sampler,
    // and it ran the workflow's previous revision, so the latecomer leaves the run to it.
    // SAFETY: kill(2) on our own child's pid, which has not been waited for.
    unsafe { libc::kill(holder.child.id() as libc::pid_t, libc::SIGSTOP) };
    let id = http.queue_run(&json!({"workflow": "circles", "set": {"sample.seed": 9}}));
    let taken = wait_for("the run to be claimed", Duration::from_secs(240), || {
        let now = record(&mut db, id);
        (
            now.3.map(|started| (now.1.clone(), started - now.2)),
            format!("{now:?}"),
        )
    });
    unsafe { libc::kill(holder.child.id() as libc::pid_t, libc::SIGCONT) };
    let (worker, waited_ms) = taken;
    assert_eq!(worker.as_deref(), Some(latecomer.name.as_str()));
    assert!(
        waited_ms >= 900,
        "the run was left to the holder for its 1 s window first, not taken after {waited_ms} ms"
    );
    // Without the timer the latecomer looks again only at its next tick, 5 s after the run's
    // notification; the bound leaves 3 s for a slow machine.
    assert!(
        waited_ms < 4000,
        "taken when its 1 s window ended, not at the worker's next 5 s look: {waited_ms} ms"
    );
    println!("figure: a run left to a busy worker for a 1 s window was taken after {waited_ms} ms");
}

#[test]
#[ignore = "needs PostgreSQL; make test starts one"]
fn a_store_rides_through_a_postgres_restart() {
    // The restart ends every session of the server: no other fleet test may be running.
    let _turn = one_fleet_at_a_time();
    use weft::server::store::{PgStore, RunState, RunStore};
    let schema = Schema::new("restart");
    let api = PgStore::open(&schema.url).unwrap();
    let worker = PgStore::open(&schema.url).unwrap();
    let queued = api.enqueue(None, "{}", None, 1).unwrap();
    let held = worker
        .claim_leased("w", "token", &[], &[], Duration::ZERO, false)
        .unwrap()
        .expect("the queued run");
    assert_eq!(held.run.id, queued);
    let took = restart_postgres();
    // The first statement of each store after the restart finds its connection ended and
    // runs again on a new one: no caller sees the restart.
    let second = api
        .enqueue(None, "{}", None, 2)
        .expect("the first insert after a restart");
    assert!(
        worker.heartbeat(queued, "token").unwrap(),
        "the first update after a restart"
    );
    assert_eq!(
        api.get(queued).unwrap().unwrap().status,
        RunState::Running,
        "a read"
    );
    let mut db = schema.client();
    let runs: i64 = db
        .query_one("SELECT count(*) FROM runs", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        runs, 2,
        "the insert that found its connection ended ran once"
    );
    // Once more with the inserting store's connection the one that is ended: the worker's
    // finish is the first statement after this restart.
    restart_postgres();
    let finished = weft::server::store::Finished {
        status: weft_engine::RunStatus::Succeeded,
        at: 3,
        nodes: json!({}),
        outputs: json!([]),
        error: None,
        cache_holds: Vec::new(),
    };
    assert!(worker
        .finish_leased(queued, "token", &finished, &[], None)
        .expect("the first finish after a restart"));
    let next = worker
        .claim_leased("w", "token-2", &[], &[], Duration::ZERO, false)
        .unwrap()
        .expect("the second run");
    assert_eq!(next.run.id, second);
    println!("figure: a PostgreSQL restart (pg_ctl stop -m fast; start) took {took:?}");
}

/// The claims a fleet makes by default (cache-aware: each queued run scored against the
/// claimer's and the other live workers' cache contents) take each run once; their rate.
/// Claims every queued run of the schema at `url` with `claimers` threads, each on its own
/// connection as worker `cN` whose cache holds `holds`, the N-th claim with `token(c, N)`:
/// the ids each claimer took, in order, and the seconds it took.
fn claim_everything(
    url: &str,
    claimers: usize,
    holds: &[String],
    affinity: Duration,
    token: fn(usize, usize) -> String,
) -> (Vec<Vec<u64>>, f64) {
    use weft::server::store::PgStore;
    let started = Instant::now();
    let claimed: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..claimers)
            .map(|c| {
                scope.spawn(move || {
                    let store = PgStore::open(url).unwrap();
                    let mut ids = Vec::new();
                    while let Some(leased) = store
                        .claim_leased(
                            &format!("c{c}"),
                            &token(c, ids.len()),
                            &[],
                            holds,
                            affinity,
                            false,
                        )
                        .unwrap()
                    {
                        ids.push(leased.run.id);
                    }
                    ids
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (claimed, started.elapsed().as_secs_f64())
}

#[test]
#[ignore = "needs PostgreSQL; make test starts one"]
fn cache_aware_claims_take_each_run_once_and_report_their_rate() {
    // Its 2,000 enqueues NOTIFY every fleet in the database.
    let _turn = one_fleet_at_a_time();
    use weft::server::store::{HeavyKeys, PgStore, RunStore};
    let schema = Schema::new("aware_rate");
    let store = PgStore::open(&schema.url).unwrap();
    // Keys as an API server plans them for a txt2img run: a checkpoint, two encodes, a sampler.
    let key = |n: u8| format!("{n:02x}").repeat(32);
    let keys = HeavyKeys {
        models: vec![key(1)],
        others: vec![key(2), key(3), key(4)],
    };
    let planned = keys.clone();
    store.set_key_planner(Box::new(move |_, _| planned.clone()));
    const RUNS: usize = 2000;
    const CLAIMERS: usize = 4;
    for i in 0..RUNS {
        store
            .enqueue(Some("txt2img"), "{}", None, i as i64)
            .unwrap();
    }
    // Every claimer is a live worker whose cache holds the model and one encode (equal
    // scores: nobody leaves a run to another, so the figure is the statement's cost).
    let holds = vec![key(1), key(2)];
    for c in 0..CLAIMERS {
        store.publish_worker(&format!("c{c}"), &[]).unwrap();
        store.publish_holds(&format!("c{c}"), &holds).unwrap();
    }
    let (claimed, seconds) = claim_everything(
        &schema.url,
        CLAIMERS,
        &holds,
        Duration::from_secs(2),
        |c, n| format!("t{c}-{n}"),
    );
    let mut all = claimed.concat();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=RUNS as u64).collect::<Vec<_>>(),
        "each run claimed once"
    );
    println!(
        "figure: {RUNS} cache-aware leased claims by {CLAIMERS} claimers in {seconds:.2} s: {:.0} claims/s",
        RUNS as f64 / seconds
    );
}

#[test]
#[ignore = "needs PostgreSQL; make test starts one"]
fn leased_claims_take_each_run_once_and_report_their_rate() {
    // Its 2,000 enqueues NOTIFY every fleet in the database.
    let _turn = one_fleet_at_a_time();
    use weft::server::store::{PgStore, RunStore};
    let schema = Schema::new("rate");
    let store = PgStore::open(&schema.url).unwrap();
    const RUNS: usize = 2000;
    const CLAIMERS: usize = 4;
    for i in 0..RUNS {
        store.enqueue(None, "{}", None, i as i64).unwrap();
    }
    let (claimed, seconds) =
        claim_everything(&schema.url, CLAIMERS, &[], Duration::ZERO, |c, _| {
            format!("t{c}")
        });
    let mut all = claimed.concat();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=RUNS as u64).collect::<Vec<_>>(),
        "each run claimed once"
    );
    println!(
        "figure: {RUNS} leased claims by {CLAIMERS} claimers in {seconds:.2} s: {:.0} claims/s",
        RUNS as f64 / seconds
    );
    // Only the holder's token finishes a run; a lapsed lease is re-queued, then given up.
    let finished = weft::server::store::Finished {
        status: weft_engine::RunStatus::Succeeded,
        at: 1,
        nodes: json!({}),
        outputs: json!([]),
        error: None,
        cache_holds: Vec::new(),
    };
    let (first_claimer, first_id) = claimed
        .iter()
        .enumerate()
        .find_map(|(c, ids)| ids.first().map(|id| (c, *id)))
        .unwrap();
    assert!(!store
        .finish_leased(first_id, "not-the-token", &finished, &[], None)
        .unwrap());
    assert!(store
        .heartbeat(first_id, &format!("t{first_claimer}"))
        .unwrap());
    assert!(store
        .finish_leased(first_id, &format!("t{first_claimer}"), &finished, &[], None)
        .unwrap());
    assert!(
        !store
            .finish_leased(first_id, &format!("t{first_claimer}"), &finished, &[], None)
            .unwrap(),
        "finished once"
    );
    std::thread::sleep(Duration::from_millis(50));
    let expired = store.requeue_expired(Duration::from_millis(1), 2).unwrap();
    assert_eq!(expired.requeued.len(), RUNS - 1);
    assert!(expired.interrupted.is_empty());
    let again = store
        .claim_leased("late", "t-late", &[], &[], Duration::ZERO, false)
        .unwrap()
        .unwrap();
    assert_eq!(again.attempts, 1);
    assert!(
        !store.heartbeat(again.run.id, "t0").unwrap(),
        "an old holder's lease no longer renews"
    );
    std::thread::sleep(Duration::from_millis(50));
    let expired = store.requeue_expired(Duration::from_millis(1), 2).unwrap();
    assert_eq!(
        expired.interrupted,
        vec![again.run.id],
        "given up after 2 lost leases"
    );
    assert_eq!(
        store.get(again.run.id).unwrap().unwrap().status,
        weft::server::store::RunState::Interrupted
    );
}
