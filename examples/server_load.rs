//! Load test of `weft serve` on loopback (not run by CI): 200 WebSocket clients watch while
//! 1,000 runs of a cheap 10-node chain are queued from 8 threads; every run must succeed and
//! every client must see every run's `run_finished`. Prints the time taken and the server's
//! resident memory at rest, at its peak and after the runs.
//!
//!     cargo build --release && cargo run --release --example server_load [-- CLIENTS RUNS]
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{chain_yaml, repo, ServerProcess};

fn main() {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let runs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
    std::fs::write(dir.path().join("workflows/chain.yaml"), chain_yaml(10)).unwrap();
    let models = repo().join("models");
    let server = ServerProcess::start(
        &repo().join("target/release/weft"),
        dir.path(),
        &["--models", models.to_str().unwrap(), "--threads", "1"],
    );
    let port = server.port;
    let (rest_rss, _) = server.rss_kib();

    // Clients connect, read their first message, then wait for every run to finish.
    let ready = Arc::new(Barrier::new(clients + 1));
    let watchers: Vec<_> = (0..clients)
        .map(|_| {
            let ready = ready.clone();
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let mut ws = support::Ws::connect(port, None);
                    ws.next(Duration::from_secs(30)).expect("queue on connect");
                    ready.wait();
                    let mut finished = HashSet::new();
                    let mut messages = 0u64;
                    let deadline = Instant::now() + Duration::from_secs(900);
                    while (finished.len() as u64) < runs {
                        let left = deadline.saturating_duration_since(Instant::now());
                        assert!(
                            !left.is_zero(),
                            "a client saw only {} run_finished",
                            finished.len()
                        );
                        if let Some(text) = ws.next_text(left) {
                            messages += 1;
                            // Parse only what this client counts.
                            if !text.contains("\"run_finished\"") {
                                continue;
                            }
                            let m: serde_json::Value = serde_json::from_str(&text).unwrap();
                            if m["event"] == "run_finished" {
                                assert_eq!(m["status"], "succeeded", "{m}");
                                finished.insert(m["run"].as_u64().unwrap());
                            }
                        }
                    }
                    messages
                })
                .unwrap()
        })
        .collect();
    ready.wait();
    println!("{clients} clients connected; queueing {runs} runs from 8 threads");

    let started = Instant::now();
    let posters: Vec<_> = (0..8u64)
        .map(|t| {
            let http = server.http();
            std::thread::spawn(move || {
                for i in (t..runs).step_by(8) {
                    http.queue_run(&json!({"workflow": "chain", "set": {"n0.value": i}}));
                }
            })
        })
        .collect();
    for p in posters {
        p.join().expect("a poster failed");
    }
    let queued_in = started.elapsed();
    let mut peak_sampled = 0;
    let mut total_messages = 0;
    for w in watchers {
        while !w.is_finished() {
            peak_sampled = peak_sampled.max(server.rss_kib().0);
            std::thread::sleep(Duration::from_millis(50));
        }
        total_messages += w.join().expect("a client failed");
    }
    let took = started.elapsed();
    let (after_rss, peak_rss) = server.rss_kib();

    // Every run is recorded as succeeded.
    let http = server.http();
    let mut succeeded = 0;
    let mut before = String::new();
    loop {
        let page = http.get(&format!("/api/runs?limit=500{before}")).json();
        let list = page["runs"].as_array().unwrap().clone();
        if list.is_empty() {
            break;
        }
        succeeded += list.iter().filter(|r| r["status"] == "succeeded").count();
        before = format!("&before={}", list.last().unwrap()["id"]);
    }
    assert_eq!(succeeded as u64, runs, "runs recorded as succeeded");
    println!("all {runs} runs succeeded; every client saw every run_finished");
    println!(
        "queued in {:.2} s; all finished and delivered in {:.2} s ({:.0} runs/s)",
        queued_in.as_secs_f64(),
        took.as_secs_f64(),
        runs as f64 / took.as_secs_f64()
    );
    println!(
        "messages delivered: {total_messages} ({} per client)",
        total_messages / clients as u64
    );
    println!(
        "server RSS: {:.1} MiB at rest, peak {:.1} MiB (sampled {:.1} MiB), {:.1} MiB after the runs",
        rest_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        peak_sampled as f64 / 1024.0,
        after_rss as f64 / 1024.0
    );
}
