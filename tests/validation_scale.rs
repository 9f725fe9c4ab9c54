//! Validation stays near-linear on adversarial workflows (issue 18): 100k links to a missing
//! node, to 100k distinct missing nodes, 100k unknown types and inputs, a 100k-node chain and
//! a cycle through 100k nodes each validate in seconds, not the hours a quadratic "did you
//! mean" took. The bounds are generous (a busy 2-core machine); `benches/validation.rs`
//! gives the figures.
use std::time::{Duration, Instant};

use weft_engine::{validate, Diagnostic, Workflow};

const NODES: usize = 100_000;

/// Far above the ~0.5 s these take on a 2-core VM, far below what quadratic work takes.
const GENEROUS: Duration = Duration::from_secs(20);

/// A workflow file of `NODES` nodes, each written by `node(i)` (its body, indented by four).
fn workflow_of(node: impl Fn(usize) -> String) -> Workflow {
    let mut text = String::from("weft: 1\nnodes:\n");
    for i in 0..NODES {
        text.push_str(&format!("  n{i}:\n{}", node(i)));
    }
    Workflow::parse_str(&text).expect("the workflow parses")
}

/// Validates `workflow` within `GENEROUS`, returning its diagnostics.
fn validate_timed(what: &str, workflow: &Workflow) -> Vec<Diagnostic> {
    let registry = weft_nodes::registry();
    let started = Instant::now();
    let diagnostics = validate(workflow, &registry, None);
    let took = started.elapsed();
    eprintln!(
        "{what}: validated {} nodes in {took:?}",
        workflow.nodes.len()
    );
    assert!(took < GENEROUS, "{what}: validation took {took:?}");
    diagnostics
}

#[test]
fn a_hundred_thousand_links_to_one_missing_node_validate_in_seconds() {
    let wf = workflow_of(|_| "    type: AddInt\n    a: $nope.sum\n    b: $nope.sum\n".into());
    let diagnostics = validate_timed("links to one missing node", &wf);
    let dangling = diagnostics
        .iter()
        .filter(|d| d.message == "link to unknown node 'nope'")
        .count();
    assert_eq!(dangling, 2 * NODES);
}

#[test]
fn a_hundred_thousand_links_to_distinct_missing_nodes_validate_in_seconds() {
    // Each name is one letter off a real id, so every lookup is a real "did you mean" search.
    let wf = workflow_of(|i| format!("    type: AddInt\n    a: $m{i}.sum\n    b: 1\n"));
    let diagnostics = validate_timed("links to distinct missing nodes", &wf);
    assert_eq!(
        diagnostics
            .iter()
            .filter(|d| d.message.starts_with("link to unknown node"))
            .count(),
        NODES
    );
    // The first ones still get their suggestion; the budget only cuts off the far tail.
    let first = diagnostics
        .iter()
        .find(|d| d.node.as_deref() == Some("n10"))
        .expect("n10's error");
    assert_eq!(first.hint.as_deref(), Some("did you mean '$n10.sum'?"));
}

#[test]
fn a_hundred_thousand_unknown_types_validate_in_seconds() {
    let wf = workflow_of(|i| format!("    type: AddInt{i}\n"));
    let diagnostics = validate_timed("unknown types", &wf);
    assert_eq!(diagnostics.len(), NODES);
    assert!(diagnostics[1]
        .message
        .contains("unknown node type 'AddInt1'"));
    assert_eq!(
        diagnostics[1].hint.as_deref(),
        Some("did you mean 'AddInt'?")
    );
}

#[test]
fn a_hundred_thousand_unknown_inputs_validate_in_seconds() {
    let wf = workflow_of(|i| format!("    type: AddInt\n    a: 1\n    b: 2\n    c{i}: 3\n"));
    let diagnostics = validate_timed("unknown inputs", &wf);
    assert_eq!(
        diagnostics
            .iter()
            .filter(|d| d.message.starts_with("AddInt has no input"))
            .count(),
        NODES
    );
}

#[test]
fn a_hundred_thousand_node_chain_validates_in_seconds() {
    let wf = workflow_of(|i| match i {
        0 => "    type: Int\n    value: 1\n".into(),
        1 => "    type: AddInt\n    a: $n0.value\n    b: 1\n".into(),
        i => format!("    type: AddInt\n    a: $n{}.sum\n    b: 1\n", i - 1),
    });
    let diagnostics = validate_timed("a chain", &wf);
    // Nothing is wrong but the missing output node.
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert!(diagnostics[0].message.contains("no output node"));
}

#[test]
fn a_cycle_through_a_hundred_thousand_nodes_validates_in_seconds() {
    let wf = workflow_of(|i| {
        format!(
            "    type: AddInt\n    a: $n{}.sum\n    b: 1\n",
            (i + 1) % NODES
        )
    });
    let diagnostics = validate_timed("a cycle", &wf);
    let cycles: Vec<&Diagnostic> = diagnostics
        .iter()
        .filter(|d| d.message.starts_with("cycle: "))
        .collect();
    assert_eq!(cycles.len(), 1, "{diagnostics:?}");
    let message = &cycles[0].message;
    assert!(message.starts_with("cycle: n0 -> n99999 -> "), "{message}");
    assert!(message.contains("(99984 more)"), "{message}");
    assert!(message.len() < 300, "a {} byte message", message.len());
}

/// A subgraph file of ten uses of the next level's file; the last level is one AddInt.
fn subgraph_level(next: Option<&str>) -> String {
    let mut text = String::from("weft: 1\noutputs:\n  sum:\n    from: $u0.sum\nnodes:\n");
    match next {
        Some(file) => {
            for i in 0..10 {
                text.push_str(&format!("  u{i}:\n    type: ./{file}\n"));
            }
        }
        None => text.push_str("  u0:\n    type: AddInt\n    a: 1\n    b: 2\n"),
    }
    text
}

#[test]
fn subgraphs_that_multiply_to_ten_million_nodes_are_refused_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    const LEVELS: usize = 8;
    for level in 0..LEVELS {
        let next = format!("l{}.yaml", level + 1);
        let text = subgraph_level((level + 1 < LEVELS).then_some(next.as_str()));
        std::fs::write(dir.path().join(format!("l{level}.yaml")), text).unwrap();
    }
    let wf = Workflow::parse_str(
        "weft: 1\nnodes:\n  top:\n    type: ./l0.yaml\n  show:\n    type: ShowInt\n    value: $top.sum\n",
    )
    .unwrap();
    let registry = weft_nodes::registry();
    let paths = weft_engine::subgraph::SubgraphPaths {
        base_dir: dir.path(),
        library: &[],
    };
    let started = Instant::now();
    let expanded = weft_engine::subgraph::expand_subgraphs(&wf, &registry, &paths);
    let took = started.elapsed();
    assert!(took < GENEROUS, "the expansion took {took:?}");
    let Err(errors) = expanded else {
        panic!("10^7 nodes were expanded");
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].message.contains("more than 500000 nodes"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_subgraph_used_many_times_is_read_once_and_its_errors_said_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.yaml"), "weft: 1\nnodes: [\n").unwrap();
    let mut text = String::from("weft: 1\nnodes:\n");
    for i in 0..1000 {
        text.push_str(&format!("  s{i}:\n    type: ./broken.yaml\n"));
    }
    let wf = Workflow::parse_str(&text).unwrap();
    let registry = weft_nodes::registry();
    let paths = weft_engine::subgraph::SubgraphPaths {
        base_dir: dir.path(),
        library: &[],
    };
    let Err(errors) = weft_engine::subgraph::expand_subgraphs(&wf, &registry, &paths) else {
        panic!("a subgraph that does not parse was expanded");
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0]
        .file
        .as_deref()
        .is_some_and(|f| f.ends_with("broken.yaml")));
}

#[test]
fn a_hundred_thousand_unknown_inputs_of_a_subgraph_with_as_many_inputs_expand_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let mut inner = String::from("weft: 1\ninputs:\n");
    for i in 0..NODES {
        inner.push_str(&format!("  x{i}:\n    type: int\n    optional: true\n"));
    }
    inner.push_str("outputs:\n  sum:\n    from: $add.sum\nnodes:\n  add:\n    type: AddInt\n    a: 1\n    b: 2\n");
    std::fs::write(dir.path().join("wide.yaml"), inner).unwrap();
    let mut outer = String::from("weft: 1\nnodes:\n  w:\n    type: ./wide.yaml\n");
    for i in 0..NODES {
        outer.push_str(&format!("    y{i}: 1\n"));
    }
    let wf = Workflow::parse_str(&outer).unwrap();
    let registry = weft_nodes::registry();
    let paths = weft_engine::subgraph::SubgraphPaths {
        base_dir: dir.path(),
        library: &[],
    };
    let started = Instant::now();
    let expanded = weft_engine::subgraph::expand_subgraphs(&wf, &registry, &paths);
    let took = started.elapsed();
    eprintln!("100k unknown inputs of a 100k-input subgraph: {took:?}");
    assert!(took < GENEROUS, "the expansion took {took:?}");
    let Err(errors) = expanded else {
        panic!("inputs the subgraph lacks were accepted");
    };
    assert_eq!(errors.len(), NODES);
    let hint = errors[0].hint.as_deref().unwrap();
    assert!(hint.ends_with("and 99980 more"), "{hint}");
}
