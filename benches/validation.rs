//! Validation of adversarial workflows (issue 18), measured with criterion: links to a missing
//! node (15k as in the issue, and 100k), 100k links to distinct missing nodes, and a cycle
//! through 100k nodes. Before the fix 15k dangling links took 221 s; each of these should now
//! take a fraction of a second, growing linearly.
//! `cargo bench --bench validation`
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use weft_engine::Workflow;

/// A workflow file of `n` AddInt nodes whose input `a` is written by `link(i)`.
fn workflow(n: usize, link: LinkOf) -> Workflow {
    let mut text = String::from("weft: 1\nnodes:\n");
    for i in 0..n {
        text.push_str(&format!(
            "  n{i}:\n    type: AddInt\n    a: {}\n    b: $nope.sum\n",
            link(i)
        ));
    }
    Workflow::parse_str(&text).expect("the workflow parses")
}

/// What input `a` of node `i` is written as.
type LinkOf = fn(usize) -> String;

fn benches(c: &mut Criterion) {
    let registry = weft_nodes::registry();
    let mut group = c.benchmark_group("validate");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    let cases: [(&str, usize, LinkOf); 5] = [
        ("dangling links to one node", 15_000, |_| "$nope.sum".into()),
        ("dangling links to one node", 100_000, |_| {
            "$nope.sum".into()
        }),
        ("dangling links to distinct nodes", 100_000, |i| {
            format!("$m{i}.sum")
        }),
        ("cycle", 100_000, |i| format!("$n{}.sum", (i + 1) % 100_000)),
        ("chain", 100_000, |i| match i {
            0 => "1".into(),
            i => format!("$n{}.sum", i - 1),
        }),
    ];
    for (name, n, link) in cases {
        let wf = workflow(n, link);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new(name, n), &wf, |b, wf| {
            b.iter(|| weft_engine::validate(wf, &registry, None))
        });
    }
    group.finish();
}

criterion_group!(validation, benches);
criterion_main!(validation);
