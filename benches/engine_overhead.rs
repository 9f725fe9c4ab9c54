//! Engine overhead, measured with criterion: validate + plan, cold runs of trivial-node chains
//! (per-node executor cost), fully cached re-runs, and 1k/10k/100k chains to show linear growth.
//! `cargo bench --bench engine_overhead`; compare with ComfyUI's figures in shared/ANCHORS.md.
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use weft_engine::{
    CancelToken, Executor, ExecutorConfig, NodeEntry, Registry, RunRequest, RunStatus, Workflow,
};

/// n0 (Int) -> n1 .. n{n-1} (AddInt) -> show (ShowInt): n + 1 nodes.
fn chain(n: usize) -> Workflow {
    let mut wf = Workflow::new();
    wf.add("n0", NodeEntry::new("Int").with("value", 0i64));
    for i in 1..n {
        let (from, output) = if i == 1 {
            ("n0".to_string(), "value")
        } else {
            (format!("n{}", i - 1), "sum")
        };
        wf.add(
            &format!("n{i}"),
            NodeEntry::new("AddInt")
                .link("a", &from, output)
                .with("b", 1i64),
        );
    }
    let last_output = if n > 1 { "sum" } else { "value" };
    wf.add(
        "show",
        NodeEntry::new("ShowInt").link("value", &format!("n{}", n - 1), last_output),
    );
    wf
}

fn executor(registry: &Arc<Registry>) -> Executor {
    Executor::new(registry.clone(), ExecutorConfig::default())
}

fn run(ex: &mut Executor, wf: &Workflow) {
    let report = ex.run(RunRequest::new(wf), &CancelToken::new(), &mut |_| {});
    assert_eq!(report.status, RunStatus::Succeeded);
}

fn benches(c: &mut Criterion) {
    let registry = Arc::new(weft_nodes::registry());

    let wf1000 = chain(1000);
    c.bench_function("validate+plan 1000 nodes", |b| {
        let mut ex = executor(&registry);
        b.iter(|| ex.plan(&wf1000, None).expect("valid"))
    });

    let wf100 = chain(100);
    c.bench_function("fully cached rerun 100 nodes", |b| {
        let mut ex = executor(&registry);
        run(&mut ex, &wf100);
        b.iter(|| run(&mut ex, &wf100))
    });

    c.bench_function("last node changed 100 nodes", |b| {
        let mut ex = executor(&registry);
        run(&mut ex, &wf100);
        let mut toggle = 0i64;
        b.iter(|| {
            toggle += 1;
            let mut wf = wf100.clone();
            *wf.nodes.get_mut("n99").unwrap() = NodeEntry::new("AddInt")
                .link("a", "n98", "sum")
                .with("b", toggle);
            run(&mut ex, &wf)
        })
    });

    let mut group = c.benchmark_group("cold run chain");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for n in [1_000usize, 10_000, 100_000] {
        let wf = chain(n);
        group.throughput(Throughput::Elements(n as u64 + 1));
        group.bench_with_input(BenchmarkId::from_parameter(n), &wf, |b, wf| {
            b.iter_batched(
                || executor(&registry),
                |mut ex| run(&mut ex, wf),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("parse+validate+plan chain");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for n in [1_000usize, 10_000, 100_000] {
        let text = chain(n).to_yaml();
        group.throughput(Throughput::Elements(n as u64 + 1));
        group.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| {
            let mut ex = executor(&registry);
            b.iter(|| {
                let wf = Workflow::parse_str(text).expect("parses");
                ex.plan(&wf, None).expect("valid")
            })
        });
    }
    group.finish();
}

criterion_group!(engine, benches);
criterion_main!(engine);
