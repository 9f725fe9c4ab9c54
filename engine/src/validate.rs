//! Validation of a workflow against the registry: every error at once, each located, with a
//! hint. Nothing runs while any error remains. All graph walks here are iterative.
use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::diagnostic::{closest, closest_within, Code, Diagnostic, NameIndex, SUGGESTION_WORK};
use crate::node::{InputSpec, NodeSpec};
use crate::registry::Registry;
use crate::value::{Constant, ValueType};
use crate::workflow::{InputEntry, InputValue, Interface, Link, NodeEntry, Workflow, INPUTS_NODE};

/// Checks `wf`; an empty result means it can be planned and run. `target`, when given, is the
/// node the user asked for (then the workflow needs no output node).
pub fn validate(wf: &Workflow, registry: &Registry, target: Option<&str>) -> Vec<Diagnostic> {
    let mut errors = check_nodes(wf, registry, None);
    errors.extend(check_target(wf, registry, target));
    errors
}

/// Checks a subgraph's file (one with `inputs:` and `outputs:`) as it is used, as a node:
/// `$inputs.NAME` links must name a declared input of a type the inner input accepts, and
/// each declared output must come from an inner node's output of that name. It needs no
/// output node of its own (its parent's runs it); it still cannot run on its own.
pub fn validate_subgraph(
    wf: &Workflow,
    registry: &Registry,
    interface: &Interface,
) -> Vec<Diagnostic> {
    let mut errors = check_nodes(wf, registry, Some(interface));
    errors.extend(check_exposed_outputs(wf, registry, interface));
    errors
}

/// Every node's type and inputs, and the cycles: what a workflow and a subgraph's file share.
fn check_nodes(
    wf: &Workflow,
    registry: &Registry,
    interface: Option<&Interface>,
) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let mut suggestions = Suggestions::new(wf);
    for (id, node) in &wf.nodes {
        let spec = match node_spec(id, node, registry, &mut suggestions) {
            Ok(spec) => spec,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        for (name, entry) in &node.inputs {
            errors.extend(check_input(
                wf,
                registry,
                &mut suggestions,
                interface,
                id,
                spec,
                name,
                entry,
            ));
        }
        errors.extend(missing_inputs(id, node, spec));
    }
    errors.extend(find_cycles(wf));
    errors
}

/// The errors of a subgraph's `outputs:`: each must name an inner node's output.
fn check_exposed_outputs(
    wf: &Workflow,
    registry: &Registry,
    interface: &Interface,
) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    for (name, exposed) in &interface.outputs {
        let from = &exposed.from;
        if from.node == INPUTS_NODE {
            errors.push(Diagnostic::at_opt(
                exposed.pos,
                format!("output '{name}' must come from an inner node, not $inputs"),
            ));
            continue;
        }
        let Some(source) = wf.nodes.get(&from.node) else {
            let mut d = Diagnostic::at_opt(
                exposed.pos,
                format!("output '{name}' comes from unknown node '{}'", from.node),
            )
            .code(Code::UnknownNode);
            d.hint = closest(&from.node, wf.nodes.keys().map(String::as_str))
                .map(|s| format!("did you mean '${s}.{}'?", from.output));
            errors.push(d);
            continue;
        };
        // A node of unknown type is reported at the node.
        let Some(spec) = registry.get(&source.type_name).map(|r| &r.spec) else {
            continue;
        };
        if spec.output(&from.output).is_none() {
            let outputs: Vec<String> = spec
                .outputs
                .iter()
                .map(|o| format!("{} ({})", o.name, o.ty))
                .collect();
            errors.push(
                Diagnostic::at_opt(
                    exposed.pos,
                    format!(
                        "output '{name}': node '{}' ({}) has no output '{}'",
                        from.node, spec.type_name, from.output
                    ),
                )
                .hint(format!("its outputs are: {}", outputs.join(", ")))
                .code(Code::UnknownOutput),
            );
        }
    }
    errors
}

/// The "did you mean" lookups of one validation: one work budget for all of them (so hints
/// stay linear however many errors there are), and each unknown node id or type looked up
/// once however many nodes name it.
struct Suggestions<'w, 'r> {
    workflow: &'w Workflow,
    work_left: usize,
    /// Built at the first link to an unknown node.
    id_index: Option<NameIndex<'w>>,
    node_ids: HashMap<&'w str, Option<&'w str>>,
    types: HashMap<&'w str, Option<&'r str>>,
}

impl<'w, 'r> Suggestions<'w, 'r> {
    fn new(workflow: &'w Workflow) -> Self {
        Self {
            workflow,
            work_left: SUGGESTION_WORK,
            id_index: None,
            node_ids: HashMap::new(),
            types: HashMap::new(),
        }
    }

    /// The node id closest to the unknown `id`.
    fn node_id(&mut self, id: &'w str) -> Option<&'w str> {
        if let Some(&known) = self.node_ids.get(id) {
            return known;
        }
        let workflow = self.workflow;
        let index = self
            .id_index
            .get_or_insert_with(|| NameIndex::new(workflow.nodes.keys().map(String::as_str)));
        let found = index.closest_within(id, &mut self.work_left);
        self.node_ids.insert(id, found);
        found
    }

    /// The registered type closest to the unknown `type_name`.
    fn type_name(&mut self, type_name: &'w str, registry: &'r Registry) -> Option<&'r str> {
        if let Some(&known) = self.types.get(type_name) {
            return known;
        }
        let found = closest_within(type_name, registry.type_names(), &mut self.work_left);
        self.types.insert(type_name, found);
        found
    }

    fn among<'c>(
        &mut self,
        word: &str,
        candidates: impl IntoIterator<Item = &'c str>,
    ) -> Option<&'c str> {
        closest_within(word, candidates, &mut self.work_left)
    }
}

/// The spec of `node`'s type, or the error that it is unknown (with the closest name).
fn node_spec<'w, 'r>(
    id: &str,
    node: &'w NodeEntry,
    registry: &'r Registry,
    suggestions: &mut Suggestions<'w, 'r>,
) -> Result<&'r NodeSpec, Diagnostic> {
    if let Some(registered) = registry.get(&node.type_name) {
        return Ok(&registered.spec);
    }
    let mut d = Diagnostic::at_opt(
        node.type_pos.or(node.pos),
        format!("unknown node type '{}'", node.type_name),
    )
    .node(id)
    .code(Code::UnknownNodeType);
    d.hint = Some(match suggestions.type_name(&node.type_name, registry) {
        Some(s) => format!("did you mean '{s}'?"),
        None => "`weft nodes` lists the node types".into(),
    });
    Err(d)
}

/// The error of input `name` of node `id`, if any: an input the type does not have, a
/// constant its declaration refuses, or a link that does not fit.
#[allow(clippy::too_many_arguments)]
fn check_input<'w>(
    wf: &'w Workflow,
    registry: &Registry,
    suggestions: &mut Suggestions<'w, '_>,
    interface: Option<&Interface>,
    id: &str,
    spec: &NodeSpec,
    name: &str,
    entry: &'w InputEntry,
) -> Option<Diagnostic> {
    let Some((_, input)) = spec.input(name) else {
        let mut d = Diagnostic::at_opt(
            entry.pos,
            format!("{} has no input '{name}'", spec.type_name),
        )
        .node(id)
        .input(name)
        .code(Code::UnknownInput);
        d.hint = Some(
            match suggestions.among(name, spec.inputs.iter().map(|i| i.name)) {
                Some(s) => format!("did you mean '{s}'?"),
                None => format!("its inputs are: {}", input_names(spec)),
            },
        );
        return Some(d);
    };
    let error = match &entry.value {
        InputValue::Constant(c) => check_constant(input, c).err(),
        InputValue::Link(link)
            if link.node == INPUTS_NODE && !wf.nodes.contains_key(INPUTS_NODE) =>
        {
            match interface {
                Some(interface) => check_exposed_link(interface, input, link),
                None => check_link(wf, registry, suggestions, input, link),
            }
        }
        InputValue::Link(link) => check_link(wf, registry, suggestions, input, link),
    };
    error.map(|d| d.at_pos(entry.pos).node(id).input(name))
}

/// The error of a link into `input`, if any: an unknown node, an output that node does not
/// have, or an output of another type. Links from nodes of unknown type are reported at
/// that node.
fn check_link<'w>(
    wf: &'w Workflow,
    registry: &Registry,
    suggestions: &mut Suggestions<'w, '_>,
    input: &InputSpec,
    link: &'w Link,
) -> Option<Diagnostic> {
    let Some(source) = wf.nodes.get(&link.node) else {
        let mut d = Diagnostic::new(format!("link to unknown node '{}'", link.node))
            .code(Code::UnknownNode);
        d.hint = suggestions
            .node_id(&link.node)
            .map(|s| format!("did you mean '${s}.{}'?", link.output));
        return Some(d);
    };
    let source_spec = &registry.get(&source.type_name)?.spec;
    let Some((_, output)) = source_spec.output(&link.output) else {
        let outputs: Vec<String> = source_spec
            .outputs
            .iter()
            .map(|o| format!("{} ({})", o.name, o.ty))
            .collect();
        return Some(
            Diagnostic::new(format!(
                "node '{}' ({}) has no output '{}'",
                link.node, source_spec.type_name, link.output
            ))
            .hint(format!("its outputs are: {}", outputs.join(", ")))
            .code(Code::UnknownOutput),
        );
    };
    (!input.ty.accepts(output.ty)).then(|| {
        Diagnostic::new(format!(
            "type mismatch: expected {}, found {} (from ${}.{})",
            input.ty, output.ty, link.node, link.output
        ))
        .hint(format!("link an output of type {}", input.ty))
        .code(Code::TypeMismatch)
    })
}

/// The error of a `$inputs.NAME` link inside a subgraph's file, if any: an input the file
/// does not declare, or one declared with a type `input` does not accept.
fn check_exposed_link(interface: &Interface, input: &InputSpec, link: &Link) -> Option<Diagnostic> {
    let Some(declared) = interface.inputs.get(&link.output) else {
        let declared = interface.inputs.keys().map(String::as_str);
        let hint = match closest(&link.output, declared) {
            Some(s) => format!("did you mean '$inputs.{s}'? Or declare it under `inputs:`"),
            None => "declare it under `inputs:` at the top of the file".to_string(),
        };
        return Some(
            Diagnostic::new(format!(
                "$inputs.{} is not an input this subgraph declares",
                link.output
            ))
            .hint(hint)
            .code(Code::UnknownOutput),
        );
    };
    (!input.ty.accepts(declared.ty)).then(|| {
        Diagnostic::new(format!(
            "type mismatch: expected {}, found {} (from $inputs.{})",
            input.ty, declared.ty, link.output
        ))
        .hint(format!(
            "declare '{}' as type {} under `inputs:`",
            link.output, input.ty
        ))
        .code(Code::TypeMismatch)
    })
}

/// An error per required input of `spec` that `node` does not give.
fn missing_inputs<'a>(
    id: &'a str,
    node: &'a NodeEntry,
    spec: &'a NodeSpec,
) -> impl Iterator<Item = Diagnostic> + 'a {
    spec.inputs
        .iter()
        .filter(|input| input.is_required() && !node.inputs.contains_key(input.name))
        .map(move |input| {
            let how = if input.ty.accepts_constant() {
                "give it a value"
            } else {
                "link it to an output of that type, e.g. $node.output"
            };
            Diagnostic::at_opt(
                node.pos,
                format!("missing input '{}' ({})", input.name, input.ty),
            )
            .node(id)
            .input(input.name)
            .hint(format!("{how}: {}", input.doc))
            .code(Code::MissingInput)
        })
}

/// The error of the run's end: a `target` that is not in the workflow, or, without one, a
/// workflow with no output node (only said when every node type is known).
fn check_target(wf: &Workflow, registry: &Registry, target: Option<&str>) -> Option<Diagnostic> {
    if let Some(t) = target {
        if wf.nodes.contains_key(t) {
            return None;
        }
        let mut d = Diagnostic::new(format!("target node '{t}' is not in the workflow"))
            .code(Code::UnknownNode);
        d.hint =
            closest(t, wf.nodes.keys().map(String::as_str)).map(|s| format!("did you mean '{s}'?"));
        return Some(d);
    }
    let spec_of = |n: &NodeEntry| registry.get(&n.type_name).map(|r| &r.spec);
    let has_output = wf
        .nodes
        .values()
        .any(|n| spec_of(n).is_some_and(|s| s.output_node));
    let all_types_known = wf.nodes.values().all(|n| spec_of(n).is_some());
    if has_output || !all_types_known {
        return None;
    }
    let outputs: Vec<&str> = registry
        .iter()
        .filter(|r| r.spec.output_node)
        .map(|r| r.spec.type_name)
        .collect();
    Some(
        Diagnostic::at_opt(
            wf.nodes_pos,
            "the workflow has no output node, so nothing would run",
        )
        .hint(format!(
            "add one of: {} (or run with --target NODE)",
            outputs.join(", ")
        ))
        .code(Code::NoOutput),
    )
}

trait AtPos {
    fn at_pos(self, pos: Option<crate::yaml::Pos>) -> Self;
}
impl AtPos for Diagnostic {
    fn at_pos(mut self, pos: Option<crate::yaml::Pos>) -> Self {
        if self.pos.is_none() {
            self.pos = pos;
        }
        self
    }
}

fn input_names(spec: &NodeSpec) -> String {
    if spec.inputs.is_empty() {
        return "(none)".into();
    }
    spec.inputs
        .iter()
        .map(|i| i.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a constant against its declaration: type, range, choices.
pub fn check_constant(input: &InputSpec, c: &Constant) -> Result<(), Diagnostic> {
    if !input.ty.accepts_constant() {
        return Err(Diagnostic::new(format!(
            "expected a link to a {} output, found the constant {c}",
            input.ty
        ))
        .hint("write $node.output to link an output of that type")
        .code(Code::TypeMismatch));
    }
    let type_ok = match input.ty {
        ValueType::Int => matches!(c, Constant::Int(_)),
        ValueType::Seed => matches!(c, Constant::Int(_) | Constant::UInt(_)),
        ValueType::Float => matches!(c, Constant::Int(_) | Constant::UInt(_) | Constant::Float(_)),
        ValueType::Bool => matches!(c, Constant::Bool(_)),
        ValueType::String | ValueType::Enum => matches!(c, Constant::String(_)),
        _ => false,
    };
    if !type_ok {
        let hint = match (input.ty, c) {
            (ValueType::String | ValueType::Enum, _) => format!("quote it: \"{c}\""),
            (ValueType::Int | ValueType::Seed, Constant::Float(_)) => {
                "use a whole number".to_string()
            }
            (ValueType::Int, Constant::UInt(_)) => {
                return Err(Diagnostic::new(format!(
                    "{c} is above the largest integer this input takes ({})",
                    i64::MAX
                ))
                .hint("only a seed takes whole numbers up to 2^64 - 1")
                .code(Code::AboveMaximum));
            }
            _ => input.doc.to_string(),
        };
        return Err(Diagnostic::new(format!(
            "expected {}, found {} {c}",
            input.ty,
            c.kind_name()
        ))
        .hint(hint)
        .code(Code::WrongValueType));
    }
    if let Some(x) = c.as_f64() {
        if x.is_nan() {
            return Err(Diagnostic::new("value is NaN")
                .hint("give a number")
                .code(Code::WrongValueType));
        }
        if input.ty == ValueType::Seed && x < 0.0 {
            return Err(
                Diagnostic::new(format!("seed must be 0 or more, found {c}"))
                    .code(Code::BelowMinimum),
            );
        }
        let below = input.min.is_some_and(|m| x < m);
        let above = input.max.is_some_and(|m| x > m);
        if below || above {
            let range = match (input.min, input.max) {
                (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
                (Some(lo), None) => format!("at least {lo}"),
                (None, Some(hi)) => format!("at most {hi}"),
                (None, None) => unreachable!(),
            };
            return Err(
                Diagnostic::new(format!("value {c} is out of range: must be {range}"))
                    .hint(input.doc)
                    .code(if below {
                        Code::BelowMinimum
                    } else {
                        Code::AboveMaximum
                    }),
            );
        }
    }
    if let (Some(n), Constant::Int(x)) = (input.multiple_of, c) {
        if n > 0 && x % n != 0 {
            let below = x - x.rem_euclid(n);
            return Err(
                Diagnostic::new(format!("value {x} is not a multiple of {n}"))
                    .hint(format!("use {below} or {}", below + n))
                    .code(Code::NotAMultiple),
            );
        }
    }
    if let Constant::String(s) = c {
        if !input.choices.is_empty() && !input.choices.contains(&s.as_str()) {
            let mut d =
                Diagnostic::new(format!("'{s}' is not one of: {}", input.choices.join(", ")))
                    .code(Code::NotAChoice);
            d.hint =
                closest(s, input.choices.iter().copied()).map(|m| format!("did you mean '{m}'?"));
            return Err(d);
        }
    }
    if let Some(check) = input.check {
        check(c)?;
    }
    Ok(())
}

/// Every cycle among the links, named node by node (`a -> b -> a`), one diagnostic each.
fn find_cycles(wf: &Workflow) -> Vec<Diagnostic> {
    let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(wf.nodes.len(), wf.nodes.len());
    for i in 0..wf.nodes.len() {
        graph.add_node(i);
    }
    let mut has_self_loop = vec![false; wf.nodes.len()];
    for (to, (_, node)) in wf.nodes.iter().enumerate() {
        for entry in node.inputs.values() {
            if let InputValue::Link(l) = &entry.value {
                if let Some(from) = wf.nodes.get_index_of(&l.node) {
                    if from == to {
                        has_self_loop[to] = true;
                    }
                    graph.add_edge(NodeIndex::new(from), NodeIndex::new(to), ());
                }
            }
        }
    }
    let mut errors = Vec::new();
    for scc in petgraph::algo::kosaraju_scc(&graph) {
        if scc.len() == 1 && !has_self_loop[scc[0].index()] {
            continue;
        }
        let cycle = cycle_within(&graph, &scc);
        let names: Vec<&str> = cycle
            .iter()
            .map(|&i| {
                wf.nodes
                    .get_index(i)
                    .map(|(k, _)| k.as_str())
                    .unwrap_or("?")
            })
            .collect();
        let first = names[0];
        let (_, node) = wf.nodes.get_index(cycle[0]).expect("index from the graph");
        let path = cycle_path(&names);
        let message = if cycle.len() == 1 {
            format!("node links to itself: {path}")
        } else {
            format!("cycle: {path}")
        };
        errors.push(
            Diagnostic::at_opt(node.pos, message)
                .node(first)
                .hint("a workflow is a DAG: remove one of these links")
                .code(Code::Cycle),
        );
    }
    errors
}

/// Nodes named at each end of a long cycle; the ones between are counted, so a cycle through
/// 100k nodes is one readable line, not a megabyte.
const CYCLE_ENDS_NAMED: usize = 8;

/// `a -> b -> c -> a`, with the middle of a long cycle elided.
fn cycle_path(names: &[&str]) -> String {
    let mut shown: Vec<String> = Vec::new();
    if names.len() <= 2 * CYCLE_ENDS_NAMED + 1 {
        shown.extend(names.iter().map(|n| n.to_string()));
    } else {
        let elided = names.len() - 2 * CYCLE_ENDS_NAMED;
        shown.extend(names[..CYCLE_ENDS_NAMED].iter().map(|n| n.to_string()));
        shown.push(format!("... ({elided} more)"));
        shown.extend(
            names[names.len() - CYCLE_ENDS_NAMED..]
                .iter()
                .map(|n| n.to_string()),
        );
    }
    shown.push(names[0].to_string());
    shown.join(" -> ")
}

/// One cycle through the strongly connected component `scc`, walking edges that stay inside it.
fn cycle_within(graph: &DiGraph<usize, ()>, scc: &[NodeIndex]) -> Vec<usize> {
    let inside: std::collections::HashSet<NodeIndex> = scc.iter().copied().collect();
    let start = *scc
        .iter()
        .min_by_key(|n| n.index())
        .expect("non-empty component");
    let mut seen_at: HashMap<NodeIndex, usize> = HashMap::new();
    let mut path = Vec::new();
    let mut current = start;
    loop {
        if let Some(&at) = seen_at.get(&current) {
            return path[at..].iter().map(|n: &NodeIndex| n.index()).collect();
        }
        seen_at.insert(current, path.len());
        path.push(current);
        current = graph
            .neighbors(current)
            .filter(|n| inside.contains(n))
            .min_by_key(|n| n.index())
            .expect("every node of a cycle has a successor inside it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_cycles_are_named_in_full() {
        assert_eq!(cycle_path(&["a"]), "a -> a");
        assert_eq!(cycle_path(&["a", "b", "c"]), "a -> b -> c -> a");
    }

    #[test]
    fn a_long_cycle_names_its_ends_and_counts_the_middle() {
        let ids: Vec<String> = (0..100_000).map(|i| format!("n{i}")).collect();
        let names: Vec<&str> = ids.iter().map(String::as_str).collect();
        let path = cycle_path(&names);
        assert!(path.starts_with("n0 -> n1 -> "), "{path}");
        assert!(
            path.contains("n7 -> ... (99984 more) -> n99992 -> "),
            "{path}"
        );
        assert!(path.ends_with("n99999 -> n0"), "{path}");
        assert!(path.len() < 300, "{} bytes", path.len());
    }
}
