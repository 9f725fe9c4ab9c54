//! Events and ComfyUI's interrupt across a fleet, on a real PostgreSQL (the throwaway server
//! `make test` starts, scripts/postgres.sh): a run queued through one `weft serve --queue` is
//! announced to the /ws clients of every API server, once each; ComfyUI's `POST /interrupt` on
//! an API server cancels the run a `weft worker` runs.
mod support;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{repo, start_worker, PgSchema, ServerProcess, Ws};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_weft"))
}

/// A schema of its own for one test of this file.
fn own_schema(case: &str) -> PgSchema {
    PgSchema::new(format!("fleet_events_{case}_{}", std::process::id()))
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let workflows = dir.path().join("workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    std::fs::copy(
        repo().join("workflows/txt2img.yaml"),
        workflows.join("txt2img.yaml"),
    )
    .unwrap();
    dir
}

/// A /ws client past its first message (the queue: it is subscribed from then on).
fn subscribed(server: &ServerProcess) -> Ws {
    let mut ws = server.ws();
    let first = ws
        .next(Duration::from_secs(60))
        .expect("a queue message on connect");
    assert_eq!(first["event"], "queue");
    ws
}

/// The `run_queued` events `ws` gets for `runs` until each has come or `deadline`; with what
/// else it saw, for the failure message.
fn queued_seen(ws: &mut Ws, runs: &[u64], deadline: Instant) -> (Vec<u64>, Vec<String>) {
    let mut seen = Vec::new();
    let mut other = Vec::new();
    while Instant::now() < deadline && !runs.iter().all(|r| seen.contains(r)) {
        if let Some(m) = ws.next(Duration::from_millis(200)) {
            if m["event"] == "run_queued" {
                seen.push(m["run"].as_u64().unwrap());
            } else {
                other.push(m.to_string());
            }
        }
    }
    // Late duplicates would come right after.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        if let Some(m) = ws.next(Duration::from_millis(100)) {
            if m["event"] == "run_queued" {
                seen.push(m["run"].as_u64().unwrap());
            }
        }
    }
    (seen, other)
}

#[test]
#[ignore = "needs PostgreSQL; make test starts one"]
fn a_run_queued_on_one_api_server_is_announced_once_on_every_api_server() {
    let schema = own_schema("queued");
    let dir = project();
    let models = repo().join("models").to_string_lossy().into_owned();
    let args = ["--queue", schema.url.as_str(), "--models", models.as_str()];
    let first = ServerProcess::start(bin(), dir.path(), &args);
    let second = ServerProcess::start(bin(), dir.path(), &args);
    let mut on_first = subscribed(&first);
    let mut on_second = subscribed(&second);

    let a = first
        .http()
        .queue_run(&json!({"workflow": "txt2img", "set": {"sample.seed": 1}}));
    let b = second
        .http()
        .queue_run(&json!({"workflow": "txt2img", "set": {"sample.seed": 2}}));
    let deadline = Instant::now() + Duration::from_secs(120);
    for (name, ws) in [("first", &mut on_first), ("second", &mut on_second)] {
        let (mut seen, other) = queued_seen(ws, &[a, b], deadline);
        seen.sort_unstable();
        assert_eq!(
            seen,
            vec![a, b],
            "the {name} API server's client saw run_queued for {seen:?} (runs {a} and {b} were queued, each once); other events: {other:?}"
        );
    }
}

/// Two fleets in one database, each in its schema, hear only their own notifications: a run
/// queued in one is announced to its clients and not to the other fleet's.
#[test]
#[ignore = "needs PostgreSQL; make test starts one"]
fn two_fleets_in_one_database_do_not_hear_each_other() {
    let ours = own_schema("ours");
    let theirs = own_schema("theirs");
    let dir = project();
    let models = repo().join("models").to_string_lossy().into_owned();
    let start = |url: &str| {
        ServerProcess::start(
            bin(),
            dir.path(),
            &["--queue", url, "--models", models.as_str()],
        )
    };
    let (first, second, other) = (start(&ours.url), start(&ours.url), start(&theirs.url));
    let mut on_second = subscribed(&second);
    let mut on_other = subscribed(&other);
    let run = first
        .http()
        .queue_run(&json!({"workflow": "txt2img", "set": {"sample.seed": 3}}));
    let (seen, _) = queued_seen(
        &mut on_second,
        &[run],
        Instant::now() + Duration::from_secs(120),
    );
    assert_eq!(seen, vec![run], "the same fleet's other API server");
    // The other fleet would have heard it by now (the same fleet's server did).
    let listen_until = Instant::now() + Duration::from_secs(2);
    let mut heard = Vec::new();
    while Instant::now() < listen_until {
        if let Some(m) = on_other.next(Duration::from_millis(200)) {
            heard.push(m.to_string());
        }
    }
    assert!(
        !heard.iter().any(|m| m.contains("run_queued")),
        "the other schema's API server heard a run_queued of a fleet it is not in: {heard:?}"
    );
}

/// A `weft worker` on the repository's models, CPU, killed when dropped.
struct Worker {
    child: Child,
}

impl Worker {
    fn start(dir: &Path, url: &str) -> Self {
        let models = repo().join("models");
        let args = [
            "--queue", url, "--name", "w1", "--device", "cpu", "--models",
        ];
        let (child, _log) = start_worker(
            bin(),
            dir,
            args.iter()
                .map(std::ffi::OsStr::new)
                .chain([models.as_os_str()]),
        );
        Self { child }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls run `id` on `server` until its status is `want` or `timeout`; the last status seen.
fn wait_status(server: &ServerProcess, id: u64, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        last = server.http().get(&format!("/api/runs/{id}")).json()["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if last == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    last
}

#[test]
#[ignore = "needs PostgreSQL and models/converted from set-up; `make test` runs it"]
fn comfyuis_interrupt_on_a_fleet_api_server_cancels_the_run_a_worker_runs() {
    let schema = own_schema("interrupt");
    let dir = project();
    let models = repo().join("models").to_string_lossy().into_owned();
    let api = ServerProcess::start(
        bin(),
        dir.path(),
        &["--queue", schema.url.as_str(), "--models", models.as_str()],
    );
    let _worker = Worker::start(dir.path(), &schema.url);
    // Long enough to be caught running on any machine.
    let id = api
        .http()
        .queue_run(&json!({"workflow": "txt2img", "set": {"sample.steps": 2000}}));
    let status = wait_status(&api, id, "running", Duration::from_secs(300));
    assert_eq!(status, "running", "run {id} never ran on the worker");
    let reply = api.http().post("/interrupt", &json!({}));
    assert_eq!(reply.status, 200);
    let status = wait_status(&api, id, "cancelled", Duration::from_secs(120));
    assert_eq!(
        status, "cancelled",
        "ComfyUI's /interrupt on the API server did not cancel run {id}"
    );
}

/// The node events of a run, as an API server's client sees them: `(event, node)` in order.
fn node_events(events: &[serde_json::Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|m| m["node"].is_string())
        .map(|m| {
            (
                m["event"].as_str().unwrap_or("").to_string(),
                m["node"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A worker sends the events waiting for it in one statement (a cached rerun's hundred
/// `node_cached` at once): every one still reaches the API server's clients, once and in
/// order, before the run's `run_finished`.
#[test]
#[ignore = "needs PostgreSQL; make test starts one"]
fn a_workers_burst_of_node_events_reaches_the_api_servers_clients_once_each_in_order() {
    let schema = own_schema("burst");
    let dir = project();
    std::fs::write(
        dir.path().join("workflows/chain.yaml"),
        support::chain_yaml(100),
    )
    .unwrap();
    let models = repo().join("models").to_string_lossy().into_owned();
    let api = ServerProcess::start(
        bin(),
        dir.path(),
        &["--queue", schema.url.as_str(), "--models", models.as_str()],
    );
    let _worker = Worker::start(dir.path(), &schema.url);
    let mut ws = subscribed(&api);
    let nodes: Vec<String> = (0..99)
        .map(|i| format!("n{i}"))
        .chain(["show".to_string()])
        .collect();

    let first = api.http().queue_run(&json!({"workflow": "chain"}));
    let events = ws.run(first, Duration::from_secs(120));
    assert_eq!(
        events.last().map(|m| m["status"].clone()),
        Some(json!("succeeded")),
        "{events:?}"
    );
    let seen = node_events(&events);
    for node in &nodes {
        let of_node: Vec<&str> = seen
            .iter()
            .filter(|(_, n)| n == node)
            .map(|(e, _)| e.as_str())
            .collect();
        assert_eq!(
            of_node,
            ["node_started", "node_finished"],
            "node {node}'s events on the API server (all: {seen:?})"
        );
    }

    let rerun = api.http().queue_run(&json!({"workflow": "chain"}));
    let events = ws.run(rerun, Duration::from_secs(120));
    let cached: Vec<String> = node_events(&events)
        .into_iter()
        .map(|(event, node)| {
            assert_eq!(event, "node_cached", "{events:?}");
            node
        })
        .collect();
    let mut sorted = cached.clone();
    sorted.sort();
    let mut expected = nodes.clone();
    expected.sort();
    assert_eq!(
        sorted, expected,
        "each node cached once in the rerun, as the API server's client saw it"
    );
}

/// A worker's sampler previews reach an API server's /ws clients (through the `previews`
/// table, not NOTIFY): at least one per run, each step once, PNG data URLs.
#[test]
#[ignore = "needs PostgreSQL; make test starts one"]
fn a_workers_previews_reach_the_api_servers_clients() {
    let schema = own_schema("previews");
    let dir = project();
    let models = repo().join("models").to_string_lossy().into_owned();
    let api = ServerProcess::start(
        bin(),
        dir.path(),
        &["--queue", schema.url.as_str(), "--models", models.as_str()],
    );
    let _worker = Worker::start(dir.path(), &schema.url);
    let mut ws = subscribed(&api);

    let id = api.http().queue_run(&json!({"workflow": "txt2img"}));
    // Each message with when it came: the previews travel apart from the run's other events,
    // so the last may come just after its run_finished.
    let mut timed: Vec<(Instant, serde_json::Value)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut settle: Option<Instant> = None;
    while Instant::now() < settle.unwrap_or(deadline) {
        if let Some(m) = ws.next(Duration::from_millis(200)) {
            if m["event"] == "run_finished" && m["run"] == id {
                assert_eq!(m["status"], "succeeded", "{m}");
                settle = Some(Instant::now() + Duration::from_secs(3));
            }
            timed.push((Instant::now(), m));
        }
    }
    assert!(settle.is_some(), "run {id} did not finish: {timed:?}");
    let events: Vec<serde_json::Value> = timed.iter().map(|(_, m)| m.clone()).collect();
    // How much later than the step's plain progress event (through NOTIFY) its preview came.
    let behind_ms: Vec<u128> = timed
        .iter()
        .filter(|(_, m)| m["event"] == "progress" && m["preview"].is_string())
        .filter_map(|(at, m)| {
            let plain = timed.iter().find(|(_, p)| {
                p["event"] == "progress" && p["step"] == m["step"] && p["preview"].is_null()
            })?;
            Some(at.saturating_duration_since(plain.0).as_millis())
        })
        .collect();
    eprintln!("figure: previews after their step's progress event (ms): {behind_ms:?}");
    let steps: Vec<u64> = events
        .iter()
        .filter(|m| m["event"] == "progress" && m["run"] == id)
        .filter_map(|m| {
            let preview = m["preview"].as_str()?;
            assert!(
                preview.starts_with("data:image/png;base64,iVBORw0KGgo"),
                "a PNG data URL: {preview:.60}"
            );
            m["step"].as_u64()
        })
        .collect();
    assert!(
        !steps.is_empty(),
        "no preview of run {id} reached the API server's client: {events:?}"
    );
    let mut distinct = steps.clone();
    distinct.dedup();
    assert_eq!(distinct, steps, "each preview once, in step order");
    assert!(
        steps.iter().all(|s| s % 4 == 0 && *s <= 20),
        "the worker's default: a preview every 4 of the 20 steps ({steps:?})"
    );
}

/// One request with exactly these headers (`Host` included), as a browser or a script on
/// another site would send it; (status, body).
fn raw_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// A fleet's API server keeps a lone server's rules (the token, Host and Origin checks), and
/// the database password in `--queue` shows nowhere: not in `/system_stats`, not in the API
/// server's or a worker's log.
#[test]
#[ignore = "needs PostgreSQL; make test starts one"]
fn an_api_server_keeps_the_token_host_and_origin_rules_and_never_shows_the_database_password() {
    const PASSWORD: &str = "Pw-never-shown-7f3a";
    const TOKEN: &str = "fleet-test-token-0123456789abcdef";
    let schema = own_schema("guard");
    // The test server trusts local connections: a password is accepted and not needed.
    let url = if schema.url.contains("://") {
        schema
            .url
            .replacen("://", &format!("://weft:{PASSWORD}@"), 1)
    } else {
        format!("{} password={PASSWORD}", schema.url)
    };
    let dir = project();
    std::fs::write(dir.path().join("token.txt"), TOKEN).unwrap();
    let models = repo().join("models").to_string_lossy().into_owned();
    let mut api = ServerProcess::start(
        bin(),
        dir.path(),
        &[
            "--queue",
            url.as_str(),
            "--models",
            models.as_str(),
            "--token-file",
            "token.txt",
        ],
    );
    let (mut worker, worker_log) = start_worker(
        bin(),
        dir.path(),
        [
            "--queue", &url, "--name", "w1", "--device", "cpu", "--models", &models,
        ],
    );
    api.token = Some(TOKEN.into());
    let host = format!("127.0.0.1:{}", api.port);
    let bearer = format!("Bearer {TOKEN}");

    let (status, _) = raw_get(api.port, "/api/runs", &[("Host", &host)]);
    assert_eq!(status, 401, "no token");
    let (status, _) = raw_get(
        api.port,
        "/api/runs",
        &[
            ("Host", &host),
            ("Authorization", "Bearer wrong-token-0123456789"),
        ],
    );
    assert_eq!(status, 401, "a wrong token");
    let (status, body) = raw_get(
        api.port,
        "/api/runs",
        &[("Host", &host), ("Authorization", &bearer)],
    );
    assert_eq!(status, 200, "the token: {body}");
    let (status, _) = raw_get(
        api.port,
        "/api/runs",
        &[
            ("Host", &format!("rebound.example:{}", api.port)),
            ("Authorization", &bearer),
        ],
    );
    assert_eq!(status, 403, "another Host (DNS rebinding)");
    let (status, _) = raw_get(
        api.port,
        "/api/runs",
        &[
            ("Host", &host),
            ("Origin", "http://other-site.example"),
            ("Authorization", &bearer),
        ],
    );
    assert_eq!(status, 403, "a page on another site");

    let (status, stats) = raw_get(
        api.port,
        "/system_stats",
        &[("Host", &host), ("Authorization", &bearer)],
    );
    assert_eq!(status, 200, "{stats}");
    assert!(
        stats.contains("<hidden>"),
        "the --queue value is shown hidden: {stats}"
    );
    assert!(!stats.contains(PASSWORD), "{stats}");

    // A run through the fleet, so that both logs have said what they do.
    let id = api
        .http()
        .queue_run(&json!({"workflow": "txt2img", "set": {"sample.steps": 2}}));
    assert_eq!(
        wait_status(&api, id, "succeeded", Duration::from_secs(300)),
        "succeeded"
    );
    let _ = worker.kill();
    let _ = worker.wait();
    let api_log: Vec<String> = api.log.try_iter().collect();
    let worker_log = worker_log.lock().unwrap().clone();
    assert!(!api_log.is_empty() && !worker_log.is_empty());
    for line in api_log.iter().chain(&worker_log) {
        assert!(
            !line.contains(PASSWORD),
            "a log line shows the password: {line}"
        );
    }
}
