//! How validation time grows with adversarial workflows (issue 18): N `AddInt` nodes whose
//! inputs link to a node that does not exist, read from YAML text and validated as the server
//! does. Prints one line per size; a figure printer, not a timed test.
//!
//!     cargo run --release --example validation_scaling -- 1000 2000 4000 15000
use std::time::Instant;

use weft_engine::{validate, Workflow};

/// `n` AddInt nodes, both inputs linking `$nope.sum` (no node `nope`).
fn dangling_yaml(n: usize) -> String {
    let mut text = String::from("weft: 1\nnodes:\n");
    for i in 0..n {
        text.push_str(&format!(
            "  n{i}:\n    type: AddInt\n    a: $nope.sum\n    b: $nope.sum\n"
        ));
    }
    text
}

fn main() {
    let registry = weft_nodes::registry();
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are node counts"))
        .collect();
    for n in sizes {
        let text = dangling_yaml(n);
        let started = Instant::now();
        let workflow = match Workflow::parse_str(&text) {
            Ok(workflow) => workflow,
            Err(errors) => {
                println!("{n:>7} nodes: not read: {}", errors[0]);
                continue;
            }
        };
        let parsed = started.elapsed();
        let diagnostics = validate(&workflow, &registry, None);
        let total = started.elapsed();
        println!(
            "{n:>7} nodes, {:>8} bytes: parse {:.3} s, parse+validate {:.3} s, {} diagnostics",
            text.len(),
            parsed.as_secs_f64(),
            total.as_secs_f64(),
            diagnostics.len()
        );
    }
}
