//! One test suite for every run store: each case is a generic function, run on SQLite (a
//! temporary file) always and on PostgreSQL (a fresh schema in the database that
//! `WEFT_TEST_POSTGRES` names; `make test` starts a throwaway server, scripts/postgres.sh).
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use weft::server::store::{
    CellStatus, ComfyPrompt, ConnectionString, Finished, NewSweep, PgStore, QueuePlace, RunState,
    RunStore, SqliteStore, StoreError,
};
use weft_engine::RunStatus;

#[allow(dead_code)] // each test file uses part of it
mod common;

/// One store under test; `open` gives another handle (another connection) on the same data,
/// as a second process or a restarted one would have.
trait Backend: Sync {
    fn open(&self) -> Box<dyn RunStore>;
}

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Backend for Sqlite {
    fn open(&self) -> Box<dyn RunStore> {
        Box::new(SqliteStore::open(&self.dir.path().join("runs.sqlite")).unwrap())
    }
}

fn sqlite_file() -> Sqlite {
    Sqlite {
        dir: tempfile::tempdir().unwrap(),
    }
}

/// A schema of its own in the test server's database (cases run in parallel), dropped after.
struct Postgres {
    url: String,
    admin: String,
    schema: String,
}

const NEEDS_POSTGRES: &str = "WEFT_TEST_POSTGRES is not set: these tests need a PostgreSQL \
     server (a connection string, e.g. `host=/tmp/x/socket user=weft dbname=postgres`); \
     `make test` (scripts/test.sh) starts a throwaway one with scripts/postgres.sh";

fn postgres_schema(case: &str) -> Postgres {
    let admin = std::env::var("WEFT_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| panic!("{NEEDS_POSTGRES}"));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("store_{case}_{}_{nanos}", std::process::id());
    let mut client = postgres::Client::connect(&admin, postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting to WEFT_TEST_POSTGRES ({admin}): {e}"));
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap();
    // libpq's `options`: every connection of this store works in the case's schema.
    let options = format!("-c search_path={schema}");
    let url = if admin.contains("://") {
        let join = if admin.contains('?') { '&' } else { '?' };
        format!(
            "{admin}{join}options={}",
            options.replace(' ', "%20").replace('=', "%3D")
        )
    } else {
        format!("{admin} options='{options}'")
    };
    Postgres { url, admin, schema }
}

impl Backend for Postgres {
    fn open(&self) -> Box<dyn RunStore> {
        Box::new(PgStore::open(&self.url).unwrap())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema));
        }
    }
}

fn finished(status: RunStatus, at: i64) -> Finished {
    Finished {
        status,
        at,
        nodes: json!({"seed": {"state": "cached"}, "sample": {"state": "ran", "micros": 12}}),
        outputs: json!([{"node": "save", "url": "/api/outputs/1/save.png"}]),
        error: None,
        cache_holds: Vec::new(),
    }
}

// --- the cases ---------------------------------------------------------------------------

fn queue_order_claims_and_ids(b: &dyn Backend) {
    let s = b.open();
    for i in 0..4 {
        s.enqueue(Some("w"), "{}", None, i).unwrap();
    }
    assert_eq!(s.queued(10).unwrap(), (vec![1, 2, 3, 4], 4));
    let first = s.claim_next(10).unwrap().expect("a queued run");
    assert_eq!(
        (first.id, first.status, first.started_at),
        (1, RunState::Running, Some(10))
    );
    assert!(s.delete_queued(4).unwrap());
    assert!(!s.delete_queued(1).unwrap(), "running runs are not deleted");
    assert!(
        !s.cancel_queued(1, 11).unwrap(),
        "running runs are not cancelled here"
    );
    assert_eq!(s.queued(1).unwrap(), (vec![2], 2));
    let id = s.enqueue(None, "{}", Some("save"), 30).unwrap();
    assert_eq!(id, 5, "ids are never reused, even after a delete");
    let listed: Vec<u64> = s.list(None, 10).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(listed, vec![5, 3, 2, 1]);
    let page: Vec<u64> = s.list(Some(3), 1).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(page, vec![2]);
    assert!(s.list(None, 0).unwrap().is_empty());
    assert_eq!(s.claim_next(40).unwrap().map(|r| r.id), Some(2));
    assert_eq!(s.claim_next(41).unwrap().map(|r| r.id), Some(3));
    assert_eq!(s.claim_next(42).unwrap().map(|r| r.id), Some(5));
    assert!(s.claim_next(43).unwrap().is_none(), "the queue is empty");
    assert!(s.get(4).unwrap().is_none(), "deleted");
    assert!(s.get(99).unwrap().is_none());
}

fn moved_runs_are_claimed_in_their_new_order(b: &dyn Backend) {
    let s = b.open();
    for i in 0..5 {
        s.enqueue(Some("w"), "{}", None, i).unwrap();
    }
    let order = |s: &dyn RunStore| s.queued(10).unwrap().0;
    assert!(s.move_queued(4, QueuePlace::Front).unwrap());
    assert_eq!(order(&*s), vec![4, 1, 2, 3, 5]);
    assert!(s.move_queued(1, QueuePlace::After(3)).unwrap());
    assert_eq!(order(&*s), vec![4, 2, 3, 1, 5]);
    assert!(s.move_queued(5, QueuePlace::Before(2)).unwrap());
    assert_eq!(order(&*s), vec![4, 5, 2, 3, 1]);
    assert!(s.move_queued(4, QueuePlace::Back).unwrap());
    assert_eq!(order(&*s), vec![5, 2, 3, 1, 4]);
    // Another connection (another process, a restart) sees the same order.
    assert_eq!(order(&*b.open()), vec![5, 2, 3, 1, 4]);
    assert_eq!(s.claim_next(10).unwrap().map(|r| r.id), Some(5));
    assert!(
        !s.move_queued(5, QueuePlace::Front).unwrap(),
        "a running run does not move"
    );
    assert!(
        !s.move_queued(2, QueuePlace::Before(5)).unwrap(),
        "nor is one placed against it"
    );
    assert!(!s.move_queued(99, QueuePlace::Front).unwrap());
    assert_eq!(
        order(&*s),
        vec![2, 3, 1, 4],
        "a refused move changes nothing"
    );
    // A run queued after moves goes to the back, also behind runs moved to the back.
    assert_eq!(s.enqueue(None, "{}", None, 20).unwrap(), 6);
    assert!(s.move_queued(2, QueuePlace::Back).unwrap());
    assert_eq!(s.enqueue(None, "{}", None, 21).unwrap(), 7);
    assert_eq!(order(&*s), vec![3, 1, 4, 6, 2, 7]);
    assert!(s.move_queued(7, QueuePlace::Front).unwrap());
    let claimed: Vec<u64> = (0..6)
        .map(|i| s.claim_next(30 + i).unwrap().expect("a queued run").id)
        .collect();
    assert_eq!(claimed, vec![7, 3, 1, 4, 6, 2]);
    assert!(s.claim_next(40).unwrap().is_none());
}

fn records_read_back_as_written(b: &dyn Backend) {
    let s = b.open();
    let workflow = r#"{"weft":1,"nodes":{"b":{"type":"T"},"a":{"type":"T"}}}"#;
    let id = s
        .enqueue(Some("demo.yaml"), workflow, Some("save"), 1_000)
        .unwrap();
    let queued = s.get(id).unwrap().unwrap();
    assert_eq!(
        queued.workflow, workflow,
        "the document is kept byte for byte"
    );
    assert_eq!(
        serde_json::to_string(&queued).unwrap(),
        format!(
            r#"{{"id":{id},"status":"queued","workflow_name":"demo.yaml","target":"save","queued_at":1000}}"#
        ),
        "the API's run summary"
    );
    s.claim_next(1_500).unwrap().unwrap();
    let mut done = finished(RunStatus::Failed, 2_000);
    done.error = Some(json!({"node": "sample", "message": "out of memory"}));
    assert!(s.finish(id, &done).unwrap());
    assert!(!s.finish(id, &done).unwrap(), "a run finishes once");
    let run = s.get(id).unwrap().unwrap();
    assert_eq!(run.status, RunState::Failed);
    assert_eq!(
        (run.started_at, run.finished_at),
        (Some(1_500), Some(2_000))
    );
    assert_eq!(run.nodes, done.nodes);
    assert_eq!(run.outputs, done.outputs);
    assert_eq!(
        serde_json::to_string(&run).unwrap(),
        format!(
            r#"{{"id":{id},"status":"failed","workflow_name":"demo.yaml","target":"save","queued_at":1000,"started_at":1500,"finished_at":2000,"error":{{"node":"sample","message":"out of memory"}}}}"#
        ),
    );
    // Key order inside the stored JSON survives (the API's answers keep the engine's order).
    assert_eq!(
        run.nodes.to_string(),
        r#"{"seed":{"state":"cached"},"sample":{"state":"ran","micros":12}}"#
    );
    let queued = s.enqueue(None, "{}", None, 3_000).unwrap();
    assert!(
        !s.finish(queued, &finished(RunStatus::Succeeded, 3_001))
            .unwrap(),
        "a queued run cannot finish"
    );
    assert_eq!(s.get(queued).unwrap().unwrap().status, RunState::Queued);
}

fn cancel_only_while_queued(b: &dyn Backend) {
    let s = b.open();
    let id = s.enqueue(None, "{}", None, 1).unwrap();
    assert!(s.cancel_queued(id, 5).unwrap());
    assert!(!s.cancel_queued(id, 6).unwrap(), "cancelled once");
    let run = s.get(id).unwrap().unwrap();
    assert_eq!(
        (run.status, run.finished_at),
        (RunState::Cancelled, Some(5))
    );
    assert!(
        s.claim_next(7).unwrap().is_none(),
        "a cancelled run is not claimed"
    );
    assert!(!s.delete_queued(id).unwrap());
}

fn a_restart_interrupts_what_was_running(b: &dyn Backend) {
    {
        let s = b.open();
        for i in 0..3 {
            s.enqueue(None, "{}", None, i).unwrap();
        }
        s.claim_next(10).unwrap().unwrap();
        s.claim_next(11).unwrap().unwrap();
    }
    let s = b.open();
    assert_eq!(s.interrupt_running(20).unwrap(), vec![1, 2]);
    let run = s.get(1).unwrap().unwrap();
    assert_eq!(
        (run.status, run.finished_at),
        (RunState::Interrupted, Some(20))
    );
    assert_eq!(
        run.error,
        Some(json!({"message": "the server stopped while this run was going"}))
    );
    assert_eq!(s.queued(10).unwrap(), (vec![3], 1), "queued runs go on");
    assert!(s.interrupt_running(21).unwrap().is_empty());
}

fn the_running_runs_are_found_however_old(b: &dyn Backend) {
    let s = b.open();
    assert!(s.running(10).unwrap().is_empty());
    let old = s.enqueue(None, "{}", None, 1).unwrap();
    let second = s.enqueue(None, "{}", None, 2).unwrap();
    let finishes = s.enqueue(None, "{}", None, 3).unwrap();
    for _ in 0..3 {
        s.claim_next(10).unwrap().unwrap();
    }
    assert!(s
        .finish(finishes, &finished(RunStatus::Succeeded, 11))
        .unwrap());
    // More newer runs than ComfyUI's /interrupt used to look through (1,000), none running.
    for i in 0..1_200 {
        let id = s.enqueue(None, "{}", None, 20 + i).unwrap();
        if i % 2 == 0 {
            assert!(s.cancel_queued(id, 30).unwrap());
        }
    }
    assert_eq!(s.running(10).unwrap(), vec![old, second], "oldest first");
    assert_eq!(s.running(1).unwrap(), vec![old]);
    assert_eq!(
        b.open().running(10).unwrap(),
        vec![old, second],
        "another connection sees the same"
    );
}

fn sweeps_queue_atomically_and_compose_once(b: &dyn Backend) {
    let s = b.open();
    let before = s.enqueue(None, "{}", None, 1).unwrap();
    let sweep = NewSweep {
        mode: "grid".into(),
        axes: json!({"sample.seed": [1, 2, 3]}),
        rows: json!(["sample.seed"]),
        columns: json!([]),
        layout: json!({"rows": 3, "columns": 1}),
        cells: (1..=3)
            .map(|seed| {
                (
                    json!({"sample.seed": seed}),
                    format!(r#"{{"seed":{seed}}}"#),
                )
            })
            .collect(),
    };
    let (id, runs) = s
        .enqueue_sweep(Some("grid.yaml"), Some("save"), &sweep, 5)
        .unwrap();
    assert_eq!(runs, vec![before + 1, before + 2, before + 3]);
    let cell = s.get(runs[1]).unwrap().unwrap();
    assert_eq!(cell.workflow, r#"{"seed":2}"#);
    assert_eq!(cell.workflow_name.as_deref(), Some("grid.yaml"));
    assert!(s.delete_queued(runs[2]).unwrap());
    s.claim_next(6).unwrap().unwrap(); // `before`
    s.claim_next(7).unwrap().unwrap(); // the first cell
    let record = s.get_sweep(id).unwrap().unwrap();
    assert_eq!(record.mode, "grid");
    assert_eq!(record.axes, sweep.axes);
    assert_eq!(record.layout, sweep.layout);
    let states: Vec<CellStatus> = record.cells.iter().map(|c| c.status).collect();
    assert_eq!(
        states,
        vec![
            CellStatus::Run(RunState::Running),
            CellStatus::Run(RunState::Queued),
            CellStatus::Deleted
        ]
    );
    assert_eq!(record.cells[2].outputs, Value::Null);
    assert_eq!(record.cells[1].values, json!({"sample.seed": 2}));
    assert_eq!(
        s.sweep_of_run(runs[1]).unwrap(),
        Some((id, 1, json!({"sample.seed": 2})))
    );
    assert_eq!(s.sweep_of_run(before).unwrap(), None);
    assert!(s.get_sweep(id + 1).unwrap().is_none());
    assert!(s.set_sweep_grid(id, "sweeps/1/grid.png").unwrap());
    assert!(
        !s.set_sweep_grid(id, "sweeps/1/other.png").unwrap(),
        "composed once"
    );
    assert_eq!(
        s.get_sweep(id).unwrap().unwrap().grid.as_deref(),
        Some("sweeps/1/grid.png")
    );
}

fn prompt(prompt_id: &str) -> ComfyPrompt {
    ComfyPrompt {
        run: 0,
        prompt_id: prompt_id.into(),
        client_id: Some("client-1".into()),
        prompt: json!({"3": {"class_type": "KSampler", "inputs": {"seed": 5}}, "9": {"class_type": "SaveImage", "inputs": {}}}),
        extra_data: json!({"client_id": "client-1"}),
        ids: vec![
            ("3".into(), "ksampler_3".into()),
            ("9".into(), "save_9".into()),
        ],
        outputs: vec!["9".into()],
    }
}

fn comfy_prompts_live_next_to_their_runs(b: &dyn Backend) {
    let s = b.open();
    let plain = s.enqueue(None, "{}", None, 1).unwrap();
    let first = s.enqueue_prompt(r#"{"a":1}"#, 2, &prompt("p-1")).unwrap();
    let second = s.enqueue_prompt(r#"{"a":2}"#, 3, &prompt("p-2")).unwrap();
    assert_eq!((first, second), (plain + 1, plain + 2));
    assert_eq!(s.get(first).unwrap().unwrap().workflow, r#"{"a":1}"#);
    let read = s.prompt_of_run(first).unwrap().unwrap();
    assert_eq!(
        read,
        ComfyPrompt {
            run: first,
            ..prompt("p-1")
        }
    );
    assert_eq!(s.prompt_by_id("p-2").unwrap().unwrap().run, second);
    assert!(s.prompt_of_run(plain).unwrap().is_none());
    assert!(s.prompt_by_id("p-3").unwrap().is_none());
    match s.enqueue_prompt("{}", 4, &prompt("p-1")) {
        Err(StoreError::DuplicatePromptId(id)) => assert_eq!(id, "p-1"),
        other => panic!("a used prompt id is refused, got {other:?}"),
    }
    assert_eq!(
        s.queued(10).unwrap(),
        (vec![plain, first, second], 3),
        "a refused prompt queues nothing"
    );
    let newest: Vec<String> = s
        .newest_prompts(10)
        .unwrap()
        .into_iter()
        .map(|p| p.prompt_id)
        .collect();
    assert_eq!(newest, vec!["p-1", "p-2"], "oldest first");
    let newest: Vec<u64> = s.newest_prompts(1).unwrap().iter().map(|p| p.run).collect();
    assert_eq!(newest, vec![second]);
    // A prompt outlives its deleted run (ComfyUI's history keeps it).
    assert!(s.delete_queued(first).unwrap());
    assert!(s.prompt_of_run(first).unwrap().is_some());

    assert_eq!(s.recall_images("identity-a").unwrap(), None);
    let images = vec![json!({"filename": "a.png", "subfolder": "4", "type": "output"})];
    s.remember_images("identity-a", &images).unwrap();
    assert_eq!(s.recall_images("identity-a").unwrap(), Some(images));
    let newer = vec![json!({"filename": "b.png", "subfolder": "5", "type": "output"})];
    s.remember_images("identity-a", &newer).unwrap();
    assert_eq!(
        s.recall_images("identity-a").unwrap(),
        Some(newer),
        "replaced"
    );
}

/// Several claimers, each on its own connection (as several workers would be), drain one
/// queue: every run is claimed exactly once.
fn concurrent_claims_take_each_run_once(b: &dyn Backend) {
    const RUNS: u64 = 400;
    const CLAIMERS: usize = 6;
    let s = b.open();
    for i in 0..RUNS {
        s.enqueue(None, "{}", None, i as i64).unwrap();
    }
    let stores: Vec<Box<dyn RunStore>> = (0..CLAIMERS).map(|_| b.open()).collect();
    let claimed: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .map(|store| {
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    while let Some(run) = store.claim_next(1).unwrap() {
                        assert_eq!(run.status, RunState::Running);
                        mine.push(run.id);
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<u64> = claimed.iter().flatten().copied().collect();
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "a run was claimed twice");
    all.sort_unstable();
    assert_eq!(all, (1..=RUNS).collect::<Vec<_>>(), "every run claimed");
    for mine in &claimed {
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "each claimer takes runs in order"
        );
    }
    assert_eq!(s.queued(1).unwrap(), (vec![], 0));
}

/// Not an assertion: how many claims a second this store takes, from 4 claimers on their own
/// connections, printed for the record (`--nocapture`).
fn claim_rate(b: &dyn Backend) {
    const RUNS: usize = 4_000;
    const CLAIMERS: usize = 4;
    let s = b.open();
    let sweep = NewSweep {
        mode: "zip".into(),
        axes: json!({}),
        rows: json!([]),
        columns: json!([]),
        layout: json!({}),
        cells: (0..RUNS).map(|i| (json!(i), "{}".to_string())).collect(),
    };
    s.enqueue_sweep(None, None, &sweep, 0).unwrap();
    let stores: Vec<Arc<dyn RunStore>> = (0..CLAIMERS).map(|_| Arc::from(b.open())).collect();
    let started = Instant::now();
    let claimed: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .map(|store| {
                scope.spawn(move || {
                    let mut n = 0;
                    while store.claim_next(1).unwrap().is_some() {
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(claimed, RUNS);
    println!(
        "claim rate: {claimed} claims by {CLAIMERS} claimers in {seconds:.3} s = {:.0} claims/s",
        claimed as f64 / seconds
    );
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[test]
                fn $case() {
                    super::$case(&super::sqlite_file());
                }
            )*
        }
        mod on_postgres {
            $(
                #[test]
                #[ignore = "needs PostgreSQL; make test starts one"]
                fn $case() {
                    super::$case(&super::postgres_schema(stringify!($case)));
                }
            )*
        }
    };
}

suite!(
    queue_order_claims_and_ids,
    moved_runs_are_claimed_in_their_new_order,
    records_read_back_as_written,
    cancel_only_while_queued,
    a_restart_interrupts_what_was_running,
    the_running_runs_are_found_however_old,
    sweeps_queue_atomically_and_compose_once,
    comfy_prompts_live_next_to_their_runs,
    concurrent_claims_take_each_run_once,
    claim_rate,
);

#[test]
fn a_postgres_error_names_the_server_but_never_the_password() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let url = "postgres://weft:s3cret-word@127.0.0.1:1/queue";
    let error = match PgStore::open(url) {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(e) => e.to_string(),
    };
    assert!(!error.contains("s3cret-word"), "{error}");
    for part in ["127.0.0.1", "port 1", "'queue'", "'weft'"] {
        assert!(error.contains(part), "the error names {part}: {error}");
    }
    let error = PgStore::open("postgres://weft:s3cret-word@[bad")
        .err()
        .unwrap()
        .to_string();
    assert!(!error.contains("s3cret-word"), "{error}");
}

#[test]
#[ignore = "needs PostgreSQL; make test starts one"]
fn serve_with_a_postgres_store_keeps_its_runs_there() {
    // The schema is made outside the runtime: the test's own admin connection is the
    // blocking driver.
    let pg = postgres_schema("serve");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(serve_with_a_postgres_store(&pg));
}

async fn serve_with_a_postgres_store(pg: &Postgres) {
    let url = ConnectionString::new(pg.url.clone());
    let f = common::Fixture::start(Some("application/json"), |config| {
        config.postgres = Some(url);
    });
    let doc = json!({"weft": 1, "nodes": {"a": {"type": "Int", "value": 3}, "show": {"type": "ShowInt", "value": "$a.value"}}});
    let (status, body) = f.post("/api/runs", json!({"workflow": doc})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_u64().unwrap();
    // By the clock, generously: CI's machine is slow and shared.
    let deadline = Instant::now() + Duration::from_secs(300);
    let run = loop {
        let (_, run) = f.call(Method::GET, &format!("/api/runs/{id}"), None).await;
        if !matches!(run["status"].as_str(), Some("queued" | "running")) {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} did not finish in 5 minutes; last seen: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["status"], "succeeded", "{run}");
    // Another connection reads the same record from the database.
    let record = pg
        .open()
        .get(id)
        .unwrap()
        .expect("the run is in PostgreSQL");
    assert_eq!(record.status, RunState::Succeeded);
    assert_eq!(record.nodes, run["nodes"]);
    assert!(
        !f.dir.path().join("data/runs.sqlite").exists(),
        "nothing was kept in SQLite"
    );
}

#[test]
fn a_store_connection_string_is_never_shown() {
    let args = [
        "weft",
        "serve",
        "--store",
        "postgres://weft:s3cret@db/queue",
        "--port",
        "0",
        "--store=postgres://weft:s3cret@db/queue",
    ];
    let shown = weft::server::shown_args(args.map(String::from));
    assert_eq!(
        shown,
        [
            "weft",
            "serve",
            "--store",
            "<hidden>",
            "--port",
            "0",
            "--store=<hidden>"
        ]
    );
    let url = ConnectionString::new("postgres://weft:s3cret@db/queue");
    let mut config = weft::server::Config::new("w".into(), "d".into(), "m".into());
    config.postgres = Some(url);
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
}
