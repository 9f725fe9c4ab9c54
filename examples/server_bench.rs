//! Engine speed seen from a client: over HTTP + WebSocket on loopback, the time from POST
//! /api/runs to its `run_finished` frame for a 100-node chain of trivial nodes, fully cached
//! and with only the last node changed. A benchmark that prints figures, not a timed test.
//! ComfyUI on this kind of machine: 200 ms and 194 ms (shared/ANCHORS.md).
//!
//!     cargo build --release && cargo run --release --example server_bench [-- ITERATIONS]
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{chain_yaml, repo, ServerProcess};

fn time_run(http: &support::Http, ws: &mut support::Ws, body: &Value) -> Duration {
    let started = Instant::now();
    let id = http.queue_run(body);
    let events = ws.run(id, Duration::from_secs(30));
    let took = started.elapsed();
    assert_eq!(events.last().unwrap()["status"], "succeeded");
    took
}

fn report(name: &str, mut times: Vec<Duration>, comfy_ms: f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = ms(times[times.len() / 2]);
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
    println!(
        "{name:<28} median {median:.3} ms  p10 {:.3}  p90 {:.3}  mean {mean:.3}  (n={})  ComfyUI {comfy_ms} ms: {:.0}x faster",
        ms(times[times.len() / 10]),
        ms(times[times.len() * 9 / 10]),
        times.len(),
        comfy_ms / median
    );
}

fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
    std::fs::write(dir.path().join("workflows/chain.yaml"), chain_yaml(100)).unwrap();
    let models = repo().join("models");
    let server = ServerProcess::start(
        &repo().join("target/release/weft"),
        dir.path(),
        &["--models", models.to_str().unwrap()],
    );
    let http = server.http();
    let mut ws = server.ws();
    ws.next(Duration::from_secs(5)).expect("queue on connect");

    let cached = json!({"workflow": "chain"});
    let cold = time_run(&http, &mut ws, &cached);
    println!(
        "cold run of the 100-node chain: {:.3} ms",
        cold.as_secs_f64() * 1e3
    );
    for _ in 0..20 {
        time_run(&http, &mut ws, &cached);
    }
    let times = (0..iterations)
        .map(|_| time_run(&http, &mut ws, &cached))
        .collect();
    report("fully cached rerun", times, 200.0);
    let times = (0..iterations)
        .map(|i| {
            time_run(
                &http,
                &mut ws,
                &json!({"workflow": "chain", "set": {"n98.b": 1000 + i}}),
            )
        })
        .collect();
    report("only the last node changed", times, 194.0);
}
