//! A fleet whose outputs live in an S3-compatible bucket (`--outputs s3://…`): a `weft worker`
//! and a `weft serve --queue` API server with data folders of their own, on the throwaway
//! PostgreSQL `make test` starts (scripts/postgres.sh) and a real S3 server, PyPI's moto
//! (`moto_server`, installed into .venv by scripts/setup.sh from scripts/requirements-setup.txt).
//! The worker stores each run's images in the bucket; the API server serves them from it
//! (`/api/outputs`, ComfyUI's `/view`); what an earlier try of a run left in the bucket is gone.
mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{repo, urlopen, PgSchema, ServerProcess};

const BUCKET: &str = "weft-outputs-test";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft"))
}

/// A moto S3 server on a free loopback port; stopped when dropped.
struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    fn start() -> Self {
        let moto = repo().join(".venv/bin/moto_server");
        assert!(
            moto.exists(),
            "{} is missing: scripts/setup.sh installs PyPI's moto[server] into .venv \
             (scripts/requirements-setup.txt)",
            moto.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", moto.display()));
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on port {port} within 120 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
        urlopen(self.port, method, path, body)
    }

    /// The keys under `prefix` in the bucket, from S3's ListObjectsV2.
    fn keys(&self, prefix: &str) -> BTreeSet<String> {
        let (status, body) = self.request(
            "GET",
            &format!("/{BUCKET}?list-type=2&prefix={prefix}"),
            None,
        );
        let text = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, 200, "listing the bucket: {text}");
        text.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tests take turns: each names its own S3 server in the environment its children inherit.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The AWS_* settings object_store reads, naming the moto server on `port`.
fn aws_environment(port: u16) {
    for (key, value) in [
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "weft-test".into()),
        ("AWS_SECRET_ACCESS_KEY", "weft-test".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
    ] {
        std::env::set_var(key, value);
    }
}

/// This test file's schema in the test server's database.
fn own_schema() -> PgSchema {
    PgSchema::new(format!("outputs_s3_{}", std::process::id()))
}

/// `weft worker` with `args`; its stderr lines go to the returned channel. Killed by the caller.
fn worker(dir: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(bin())
        .arg("worker")
        .args(["--device", "cpu", "--threads", "1"])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft worker starts");
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, lines)
}

/// Lines from `lines` until one contains `wanted` (bounded); all lines seen if it never came.
fn wait_line(
    lines: &mpsc::Receiver<String>,
    wanted: &str,
    timeout: Duration,
) -> Result<(), Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains(wanted) {
            return Ok(());
        }
        seen.push(line);
    }
    Err(seen)
}

/// A temp project with one small tiny-shapes workflow (64x64, 3 steps).
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let workflows = dir.path().join("workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    let base = std::fs::read_to_string(repo().join("workflows/txt2img.yaml")).unwrap();
    let few_steps = base.replace("steps: 20", "steps: 3");
    assert_ne!(few_steps, base, "txt2img.yaml has 'steps: 20'");
    std::fs::write(workflows.join("circles.yaml"), few_steps).unwrap();
    dir
}

#[test]
#[ignore = "needs PostgreSQL, moto and models/converted from set-up; `make test` runs it"]
fn a_workers_images_in_a_bucket_are_served_by_an_api_server_that_never_saw_them() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let schema = own_schema();
    let s3 = S3Server::start();
    aws_environment(s3.port);
    let (status, body) = s3.request("PUT", &format!("/{BUCKET}"), None);
    assert_eq!(
        status,
        200,
        "creating the bucket: {}",
        String::from_utf8_lossy(&body)
    );
    // What a dead worker's earlier try of runs 1-3 stored: gone once the runs are claimed.
    for run in 1..=3 {
        let (status, _) = s3.request(
            "PUT",
            &format!("/{BUCKET}/fleet/{run}/left-by-a-dead-worker.png"),
            Some(b"half an image"),
        );
        assert_eq!(status, 200);
    }

    let dir = project();
    let models = repo().join("models").to_string_lossy().into_owned();
    let outputs = format!("s3://{BUCKET}/fleet");
    let api = ServerProcess::start(
        bin(),
        dir.path(),
        &[
            "--queue",
            &schema.url,
            "--outputs",
            &outputs,
            "--data",
            "api-data",
            "--models",
            &models,
        ],
    );
    let (mut worker_child, worker_log) = worker(
        dir.path(),
        &[
            "--queue",
            &schema.url,
            "--outputs",
            &outputs,
            "--data",
            "worker-data",
            "--models",
            &models,
            "--name",
            "w-s3",
        ],
    );
    if let Err(seen) = wait_line(&worker_log, "takes runs from", Duration::from_secs(120)) {
        let _ = worker_child.kill();
        panic!("weft worker did not start: {seen:#?}");
    }

    let http = api.http();
    let ids: Vec<u64> = (0..2)
        .map(|i| http.queue_run(&json!({"workflow": "circles", "set": {"sample.seed": 40 + i}})))
        .collect();
    assert!(
        ids.iter().all(|id| *id <= 3),
        "the fresh schema's first runs are 1-3, where the stale objects were put: {ids:?}"
    );
    for &id in &ids {
        let deadline = Instant::now() + Duration::from_secs(300);
        let run = loop {
            let run = http.get(&format!("/api/runs/{id}")).json();
            if run["status"] == "succeeded" {
                break run;
            }
            assert!(
                run["status"] == "queued" || run["status"] == "running",
                "run {id} ended: {run}"
            );
            assert!(
                Instant::now() < deadline,
                "run {id} still {run} after 300 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let urls: Vec<&str> = run["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["url"].as_str().unwrap())
            .collect();
        assert_eq!(urls.len(), 1, "run {id}: {run}");
        let url = urls[0];
        let key = url.strip_prefix("/api/outputs/").unwrap();
        assert!(key.starts_with(&format!("{id}/")), "{url}");

        // In the bucket: exactly the run's image, the stale object gone.
        let keys = s3.keys(&format!("fleet/{id}/"));
        assert_eq!(keys, BTreeSet::from([format!("fleet/{key}")]), "run {id}");
        // The worker rendered it in its own folder; the API server has no copy, so what it
        // serves came from the bucket (moto refuses unsigned reads of objects).
        let local = dir.path().join("worker-data/outputs").join(key);
        let stored = std::fs::read(&local).unwrap();
        assert!(
            stored.starts_with(b"\x89PNG"),
            "{} is a PNG",
            local.display()
        );
        assert!(!dir.path().join("api-data/outputs").join(key).exists());

        // Served from the bucket: weft's route and ComfyUI's /view.
        let served = http.get(url);
        assert_eq!(served.status, 200, "{url}");
        assert_eq!(served.body, stored, "{url}");
        let (folder, name) = key.rsplit_once('/').unwrap();
        let view = http.get(&format!(
            "/view?filename={name}&subfolder={folder}&type=output"
        ));
        assert_eq!(view.status, 200, "/view of {key}");
        assert_eq!(view.body, stored);
        let stale = http.get(&format!("/api/outputs/{id}/left-by-a-dead-worker.png"));
        assert_eq!(stale.status, 404, "run {id}'s stale object is not served");
    }
    // Untouched: a run id nobody claimed keeps its object; a missing file is a 404, a
    // path out of the folder a 400.
    assert_eq!(
        s3.keys("fleet/3/").len(),
        usize::from(!ids.contains(&3)),
        "only claimed runs' folders are emptied"
    );
    assert_eq!(
        http.get(&format!("/api/outputs/{}/nope.png", ids[0]))
            .status,
        404
    );
    assert_eq!(
        http.get("/view?filename=nope.png&subfolder=1&type=output")
            .status,
        404
    );
    assert_eq!(
        http.get(&format!("/api/outputs/{}/..%2F..%2Fsecret", ids[0]))
            .status,
        400
    );

    let _ = worker_child.kill();
    let _ = worker_child.wait();
}

#[test]
#[ignore = "needs PostgreSQL, moto and models/converted from set-up; `make test` runs it"]
fn a_bucket_that_cannot_be_reached_stops_a_worker_at_start_with_its_name() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let schema = own_schema();
    let s3 = S3Server::start();
    aws_environment(s3.port);
    let dir = project();
    let models = repo().join("models").to_string_lossy().into_owned();
    let (mut child, lines) = worker(
        dir.path(),
        &[
            "--queue",
            &schema.url,
            "--outputs",
            "s3://no-such-bucket/x",
            "--models",
            &models,
        ],
    );
    let status = child.wait().unwrap();
    // The reader thread ends at the exited worker's end of stderr.
    let log: Vec<String> = lines.iter().collect();
    assert!(!status.success(), "{log:#?}");
    assert!(
        log.iter().any(|l| l.contains("s3://no-such-bucket/x")),
        "the error names the bucket: {log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("takes runs from")),
        "{log:#?}"
    );

    // A lone `weft serve` has no --outputs (its worker is itself).
    let lone = Command::new(bin())
        .args([
            "serve",
            "--port",
            "0",
            "--outputs",
            "s3://b/x",
            "--models",
            &models,
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!lone.status.success());
    let text = String::from_utf8_lossy(&lone.stderr);
    assert!(text.contains("--outputs is for a fleet"), "{text}");
}
