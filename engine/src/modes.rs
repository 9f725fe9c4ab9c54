//! Node modes: `bypass: true` and `mute: true` (ComfyUI's node modes 4 and 2), applied by a
//! rewrite of the workflow before validation and planning, as subgraph expansion is, so the
//! planner and the cache keys never learn about them:
//!
//! - a bypassed node is taken out and each of its outputs becomes its first input of the same
//!   type (a link or a constant), which is ComfyUI's rule; an output with no such input cannot
//!   be passed through, and a node that needs it is an error saying so;
//! - a muted node is taken out with what only it feeds: a node with a required input linked to
//!   a node taken out is taken out too; an optional input linked to one is left unset.
//!
//! Downstream nodes then see exactly the values they would see had the file been written
//! without the node, so they share those cache keys.
use std::collections::HashSet;

use indexmap::IndexMap;

use crate::diagnostic::{Code, Diagnostic};
use crate::registry::Registry;
use crate::workflow::{InputValue, NodeMode, Workflow};

/// The workflow with its bypassed and muted nodes rewritten away, or `None` when it has none.
pub fn apply_modes(
    workflow: &Workflow,
    registry: &Registry,
) -> Result<Option<Workflow>, Vec<Diagnostic>> {
    if workflow.nodes.values().all(|n| n.mode == NodeMode::Normal) {
        return Ok(None);
    }
    let mut errors = Vec::new();
    // What each output of each bypassed node stands for: (node, output) -> value or None.
    let mut passed: IndexMap<(String, String), Option<InputValue>> = IndexMap::new();
    for (id, node) in &workflow.nodes {
        if node.mode != NodeMode::Bypass {
            continue;
        }
        let Some(registered) = registry.get(&node.type_name) else {
            errors.push(
                Diagnostic::at_opt(
                    node.type_pos,
                    format!("cannot bypass '{id}': unknown node type {}", node.type_name),
                )
                .code(Code::UnknownNodeType)
                .node(id),
            );
            continue;
        };
        for output in &registered.spec.outputs {
            let first = registered
                .spec
                .inputs
                .iter()
                .filter(|i| i.ty == output.ty)
                .find_map(|i| node.inputs.get(i.name).map(|e| e.value.clone()));
            passed.insert((id.clone(), output.name.to_string()), first);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // A bypassed node's input may come from another bypassed node: follow the chain (each step
    // moves to a different node, so at most as many steps as there are nodes).
    let resolve = |value: &InputValue| -> Result<InputValue, (String, String)> {
        let mut value = value.clone();
        for _ in 0..=workflow.nodes.len() {
            let InputValue::Link(link) = &value else {
                return Ok(value);
            };
            match passed.get(&(link.node.clone(), link.output.clone())) {
                None => return Ok(value),
                Some(Some(next)) => value = next.clone(),
                Some(None) => return Err((link.node.clone(), link.output.clone())),
            }
        }
        Ok(value)
    };

    let mut out = Workflow {
        nodes: IndexMap::with_capacity(workflow.nodes.len()),
        ..workflow.clone()
    };
    let mut gone: HashSet<String> = HashSet::new();
    for (id, node) in &workflow.nodes {
        match node.mode {
            NodeMode::Bypass => continue,
            NodeMode::Mute => {
                gone.insert(id.clone());
                continue;
            }
            NodeMode::Normal => {}
        }
        let mut entry = node.clone();
        for (name, input) in entry.inputs.iter_mut() {
            match resolve(&input.value) {
                Ok(value) => input.value = value,
                Err((from, output)) => {
                    let ty = registry
                        .get(&workflow.nodes[&from].type_name)
                        .and_then(|r| r.spec.outputs.iter().find(|o| o.name == output))
                        .map_or("?".to_string(), |o| o.ty.to_string());
                    errors.push(
                        Diagnostic::at_opt(
                            input.pos,
                            format!(
                                "'{from}' is bypassed but has no {ty} input to pass on as '{output}'"
                            ),
                        )
                        .code(Code::MissingInput)
                        .node(id)
                        .input(name)
                        .hint(format!(
                            "mute '{from}' instead, give it a {ty} input, or link this input elsewhere"
                        )),
                    );
                }
            }
        }
        out.nodes.insert(id.clone(), entry);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Muting: take out what needs a node taken out, until nothing more goes.
    loop {
        let mut more = Vec::new();
        for (id, node) in &mut out.nodes {
            let spec = registry.get(&node.type_name).map(|r| &r.spec);
            let mut needs_gone = false;
            node.inputs.retain(|name, input| {
                let InputValue::Link(link) = &input.value else {
                    return true;
                };
                if !gone.contains(&link.node) {
                    return true;
                }
                let optional = spec
                    .and_then(|s| s.inputs.iter().find(|i| i.name == name))
                    .is_some_and(|i| i.optional || i.default.is_some());
                needs_gone |= !optional;
                false
            });
            if needs_gone {
                more.push(id.clone());
            }
        }
        if more.is_empty() {
            break;
        }
        for id in more {
            out.nodes.shift_remove(&id);
            gone.insert(id);
        }
    }
    out.layout.retain(|id, _| out.nodes.contains_key(id));
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{InputSpec, Inputs, Node, NodeContext, NodeResult, NodeSpec, OutputSpec};
    use crate::value::{Constant, Value, ValueType};
    use crate::workflow::NodeEntry;

    /// A node of an int and a text output from a text (optional) and two ints (`b` optional).
    struct Sum;
    impl Node for Sum {
        fn spec(&self) -> NodeSpec {
            NodeSpec {
                type_name: "Sum",
                category: "test",
                doc: "",
                version: 1,
                inputs: vec![
                    InputSpec::new("label", ValueType::String, "").optional(),
                    InputSpec::new("a", ValueType::Int, ""),
                    InputSpec::new("b", ValueType::Int, "").optional(),
                ],
                outputs: vec![
                    OutputSpec::new("sum", ValueType::Int, ""),
                    OutputSpec::new("text", ValueType::String, ""),
                ],
                output_node: true,
            }
        }
        fn run(&self, _: &Inputs, _: &mut NodeContext) -> NodeResult<Vec<Value>> {
            Ok(vec![])
        }
    }
    /// A node with an int output and no input of that type.
    struct Source;
    impl Node for Source {
        fn spec(&self) -> NodeSpec {
            NodeSpec {
                type_name: "Source",
                category: "test",
                doc: "",
                version: 1,
                inputs: vec![],
                outputs: vec![OutputSpec::new("value", ValueType::Int, "")],
                output_node: false,
            }
        }
        fn run(&self, _: &Inputs, _: &mut NodeContext) -> NodeResult<Vec<Value>> {
            Ok(vec![])
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register(Sum).register(Source);
        r
    }

    fn chain(mode_b: NodeMode) -> Workflow {
        let mut wf = Workflow::new();
        wf.add("src", NodeEntry::new("Source"))
            .add(
                "a",
                NodeEntry::new("Sum").link("a", "src", "value").with("b", 1),
            )
            .add(
                "b",
                NodeEntry::new("Sum")
                    .link("a", "a", "sum")
                    .with("b", 2)
                    .mode(mode_b),
            )
            .add("c", NodeEntry::new("Sum").link("a", "b", "sum"))
            .add(
                "d",
                NodeEntry::new("Sum").with("a", 5).link("b", "b", "sum"),
            )
            .add("e", NodeEntry::new("Sum").link("a", "c", "sum"));
        wf
    }

    fn link_of(wf: &Workflow, node: &str, input: &str) -> Option<InputValue> {
        wf.nodes[node].inputs.get(input).map(|i| i.value.clone())
    }

    #[test]
    fn no_modes_no_copy() {
        assert_eq!(apply_modes(&chain(NodeMode::Normal), &registry()), Ok(None));
    }

    #[test]
    fn bypass_passes_the_first_input_of_each_output_type_through() {
        let out = apply_modes(&chain(NodeMode::Bypass), &registry())
            .unwrap()
            .unwrap();
        assert!(!out.nodes.contains_key("b"));
        // b.sum (int) is b's first int input: its link to a.sum.
        let to_a = Some(InputValue::Link(crate::workflow::Link {
            node: "a".into(),
            output: "sum".into(),
        }));
        assert_eq!(link_of(&out, "c", "a"), to_a);
        assert_eq!(link_of(&out, "d", "b"), to_a);
        assert_eq!(out.nodes.len(), 5);
    }

    #[test]
    fn bypass_passes_a_constant_and_follows_chains_of_bypassed_nodes() {
        let mut wf = chain(NodeMode::Bypass);
        wf.nodes["a"].mode = NodeMode::Bypass;
        let out = apply_modes(&wf, &registry()).unwrap().unwrap();
        // c.a <- b.sum <- (b bypassed) a.sum <- (a bypassed) src.value.
        assert_eq!(
            link_of(&out, "c", "a"),
            Some(InputValue::Link(crate::workflow::Link {
                node: "src".into(),
                output: "value".into()
            }))
        );
        let mut wf = Workflow::new();
        wf.add(
            "k",
            NodeEntry::new("Sum").with("a", 7).mode(NodeMode::Bypass),
        )
        .add("use", NodeEntry::new("Sum").link("a", "k", "sum"));
        let out = apply_modes(&wf, &registry()).unwrap().unwrap();
        assert_eq!(
            link_of(&out, "use", "a"),
            Some(InputValue::Constant(Constant::Int(7)))
        );
    }

    #[test]
    fn bypass_with_nothing_to_pass_is_an_error_naming_both_nodes() {
        let mut wf = chain(NodeMode::Normal);
        wf.nodes["src"].mode = NodeMode::Bypass;
        let errors = apply_modes(&wf, &registry()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].node.as_deref(), Some("a"));
        assert_eq!(errors[0].input.as_deref(), Some("a"));
        assert!(
            errors[0].message.contains("'src' is bypassed"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn mute_takes_out_the_node_and_what_only_it_feeds() {
        let out = apply_modes(&chain(NodeMode::Mute), &registry())
            .unwrap()
            .unwrap();
        // c needs b (required a): gone, and e after it. d only had an optional link: kept unset.
        let left: Vec<&str> = out.nodes.keys().map(String::as_str).collect();
        assert_eq!(left, ["src", "a", "d"]);
        assert_eq!(link_of(&out, "d", "b"), None);
        assert_eq!(
            link_of(&out, "d", "a"),
            Some(InputValue::Constant(Constant::Int(5)))
        );
    }
}
