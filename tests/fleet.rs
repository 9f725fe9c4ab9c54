//! A fleet as an operator runs it: two `weft serve --queue` API servers and three `weft worker`
//! processes on one PostgreSQL (the throwaway server `make test` starts, scripts/postgres.sh)
//! and one shared data folder, on the embedded tiny-shapes model. One worker is SIGKILLed in
//! the middle of a run: every run still finishes exactly once, with its image, and every
//! API server's /ws client sees every run's `run_finished` once.
mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{repo, ServerProcess};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft"))
}

const NEEDS_POSTGRES: &str = "WEFT_TEST_POSTGRES is not set: this test needs a PostgreSQL \
     server (a connection string, e.g. `host=/tmp/x user=weft dbname=postgres`); `make test` \
     (scripts/test.sh) starts a throwaway one with scripts/postgres.sh";

/// A schema of its own in the test server's database, dropped afterwards.
struct Schema {
    url: String,
    admin: String,
    name: String,
}

impl Schema {
    fn new() -> Self {
        let admin = std::env::var("WEFT_TEST_POSTGRES")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| panic!("{NEEDS_POSTGRES}"));
        let name = format!("fleet_{}", std::process::id());
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to WEFT_TEST_POSTGRES ({admin}): {e}"));
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .unwrap();
        let options = format!("-c search_path={name}");
        let url = if admin.contains("://") {
            let join = if admin.contains('?') { '&' } else { '?' };
            format!(
                "{admin}{join}options={}",
                options.replace(' ', "%20").replace('=', "%3D")
            )
        } else {
            format!("{admin} options='{options}'")
        };
        Self { url, admin, name }
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name));
        }
    }
}

/// A `weft worker` process; killed when dropped.
struct Worker {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn start(dir: &Path, url: &str, name: &str) -> Self {
        let models = repo().join("models");
        let mut child = Command::new(bin())
            .arg("worker")
            .args([
                "--queue",
                url,
                "--name",
                name,
                "--device",
                "cpu",
                "--threads",
                "1",
            ])
            .arg("--models")
            .arg(&models)
            .args(["--lease-timeout", "4"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weft worker starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("takes runs from") {
                    let _ = ready_tx.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        if ready.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = child.kill();
            panic!(
                "weft worker {name} did not start: {:#?}",
                log.lock().unwrap()
            );
        }
        Self { child, log }
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

/// Collects every message a /ws client gets, on a thread of its own, until `stop`.
fn watch(server: &ServerProcess, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Value>> {
    let mut ws = server.ws();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some(m) = ws.next(Duration::from_millis(200)) {
                seen.push(m);
            }
        }
        seen
    })
}

/// Runs by status, from the database.
fn statuses(db: &mut postgres::Client) -> BTreeMap<String, i64> {
    db.query("SELECT status, COUNT(*) FROM runs GROUP BY status", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
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

#[test]
#[ignore = "needs PostgreSQL and models/converted from set-up; `make test` runs it"]
fn a_fleet_finishes_every_run_once_when_a_worker_is_killed_mid_run() {
    let schema = Schema::new();
    let dir = project();
    let models = repo().join("models").to_string_lossy().into_owned();
    let api_args = ["--queue", schema.url.as_str(), "--models", models.as_str()];
    let first = ServerProcess::start(bin(), dir.path(), &api_args);
    let second = ServerProcess::start(bin(), dir.path(), &api_args);
    let mut workers: Vec<Worker> = ["w1", "w2", "w3"]
        .iter()
        .map(|name| Worker::start(dir.path(), &schema.url, name))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let watchers = [watch(&first, stop.clone()), watch(&second, stop.clone())];
    // Let the sockets subscribe before anything is queued.
    std::thread::sleep(Duration::from_millis(300));

    let workflows = ["circles", "squares", "triangles"];
    let mut expected: HashMap<u64, (&str, i64)> = HashMap::new();
    for i in 0..30i64 {
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
    }

    let mut db = schema.client();
    // SIGKILL w1 while it holds a run.
    let victim = wait_for("w1 to hold a run", Duration::from_secs(240), || {
        let row = db
            .query_opt(
                "SELECT id FROM runs WHERE status = 'running' AND worker = 'w1' LIMIT 1",
                &[],
            )
            .unwrap();
        (
            row.map(|r| r.get::<_, i64>(0) as u64),
            format!("{:?}", statuses(&mut db)),
        )
    });
    workers[0].kill();

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
    // Each run_finished is sent right after its record is written: a moment for the last.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Vec<Value>> = watchers.into_iter().map(|w| w.join().unwrap()).collect();

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
        } else {
            assert_eq!(attempts, 0, "run {id} ran once");
        }
    }
    for (server, messages) in seen.iter().enumerate() {
        let mut finished: HashMap<u64, usize> = HashMap::new();
        for m in messages.iter().filter(|m| m["event"] == "run_finished") {
            *finished.entry(m["run"].as_u64().unwrap()).or_default() += 1;
            assert_eq!(m["status"], "succeeded", "{m}");
        }
        for id in expected.keys() {
            assert_eq!(
                finished.get(id),
                Some(&1),
                "API server {server}'s client saw run {id}'s run_finished once"
            );
        }
        assert_eq!(finished.len(), expected.len());
    }
    let requeued = workers[1..]
        .iter()
        .flat_map(|w| w.log.lock().unwrap().clone())
        .any(|line| line.contains("re-queued") && line.contains(&victim.to_string()));
    assert!(requeued, "a live worker re-queued run {victim}");

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
