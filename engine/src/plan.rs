//! The planner: from a validated workflow, the nodes the outputs (or one target) need, in
//! dependency order, each with its Merkle cache key (computed once, from its parents' keys).
use std::collections::VecDeque;
use std::fmt;
use std::path::Path;

use crate::diagnostic::Diagnostic;
use crate::model_folders::ModelFolders;
use crate::node::ConstantInputs;
use crate::registry::Registry;
use crate::value::Constant;
use crate::workflow::{InputValue, Workflow};

/// A node's cache key: blake3 of node type, implementation version, canonical constant inputs,
/// the keys of linked upstream outputs and the content hash of the files it reads. Equal across
/// processes and machines for the same workflow and files.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

#[derive(Debug, Clone)]
pub enum PlannedInput {
    Constant(Constant),
    /// Output `output` of the step at `step` (an index into `Plan::steps`).
    Link {
        step: usize,
        output: usize,
    },
    Absent,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub type_index: usize,
    /// In the node type's declaration order, defaults filled in.
    pub inputs: Vec<PlannedInput>,
    pub key: CacheKey,
    /// The key each output gives the nodes it feeds: `key`, except for an output that
    /// declares the inputs it depends on (`OutputSpec::depends_on`), whose key is made of those
    /// inputs' parts only.
    pub output_keys: Vec<CacheKey>,
    /// What the key was made of, part by part, so a miss can say what changed.
    pub parts: KeyParts,
}

/// The parts of a cache key, each hashed on its own: comparing two nodes' parts says which
/// input, upstream node or file made their keys differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParts {
    /// Node type and implementation version.
    pub node: [u8; 32],
    /// One per declared input: its constant, or its upstream key and output, or absence.
    pub inputs: Vec<[u8; 32]>,
    /// The content of the files the node reads.
    pub files: [u8; 32],
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }
}

/// Hashes a file's content (the executor supplies one that remembers unchanged files).
pub type FileHasher<'a> = dyn FnMut(&Path) -> std::io::Result<[u8; 32]> + 'a;

/// Plans a workflow that `validate` accepted: the nodes needed, in order, with their keys.
pub fn plan(
    wf: &Workflow,
    registry: &Registry,
    target: Option<&str>,
    models: &ModelFolders,
    hash_file: &mut FileHasher,
) -> Result<Plan, Vec<Diagnostic>> {
    let graph = resolve_links(wf, registry)?;
    let needed = needed_nodes(wf, registry, &graph, target)?;
    let order = dependency_order(&graph, &needed)?;
    key_steps(wf, registry, &graph, &order, models, hash_file)
}

/// The workflow's nodes by position: each one's registered type and upstream nodes.
struct Graph {
    type_index: Vec<usize>,
    upstream: Vec<Vec<usize>>,
}

fn resolve_links(wf: &Workflow, registry: &Registry) -> Result<Graph, Vec<Diagnostic>> {
    let n = wf.nodes.len();
    let mut upstream: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut type_index = vec![0usize; n];
    for (i, (id, node)) in wf.nodes.iter().enumerate() {
        let (t, _) = registry.get_index(&node.type_name).ok_or_else(|| {
            vec![Diagnostic::new(format!("unknown node type '{}'", node.type_name)).node(id)]
        })?;
        type_index[i] = t;
        for entry in node.inputs.values() {
            if let InputValue::Link(l) = &entry.value {
                let from = wf.nodes.get_index_of(&l.node).ok_or_else(|| {
                    vec![Diagnostic::new(format!("link to unknown node '{}'", l.node)).node(id)]
                })?;
                upstream[i].push(from);
            }
        }
    }
    Ok(Graph {
        type_index,
        upstream,
    })
}

/// What the output nodes (or the target) need, walking links upstream with an explicit stack.
fn needed_nodes(
    wf: &Workflow,
    registry: &Registry,
    graph: &Graph,
    target: Option<&str>,
) -> Result<Vec<bool>, Vec<Diagnostic>> {
    let n = wf.nodes.len();
    let mut needed = vec![false; n];
    let mut stack: Vec<usize> = match target {
        Some(t) => vec![wf.nodes.get_index_of(t).ok_or_else(|| {
            vec![Diagnostic::new(format!(
                "target node '{t}' is not in the workflow"
            ))]
        })?],
        None => (0..n)
            .filter(|&i| registry.by_index(graph.type_index[i]).spec.output_node)
            .collect(),
    };
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut needed[i], true) {
            continue;
        }
        stack.extend(graph.upstream[i].iter().copied().filter(|&u| !needed[u]));
    }
    Ok(needed)
}

/// Kahn's algorithm over the needed nodes, ties in file order, so the order is stable.
fn dependency_order(graph: &Graph, needed: &[bool]) -> Result<Vec<usize>, Vec<Diagnostic>> {
    let n = needed.len();
    let mut pending = vec![0usize; n];
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in (0..n).filter(|&i| needed[i]) {
        for &u in &graph.upstream[i] {
            pending[i] += 1;
            downstream[u].push(i);
        }
    }
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| needed[i] && pending[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &d in &downstream[i] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.push_back(d);
            }
        }
    }
    if order.len() != needed.iter().filter(|&&b| b).count() {
        return Err(vec![
            Diagnostic::new("the workflow has a cycle").hint("`weft validate` names it")
        ]);
    }
    Ok(order)
}

/// Each node in order with its planned inputs and its key, made from its parts.
fn key_steps(
    wf: &Workflow,
    registry: &Registry,
    graph: &Graph,
    order: &[usize],
    models: &ModelFolders,
    hash_file: &mut FileHasher,
) -> Result<Plan, Vec<Diagnostic>> {
    let mut step_of = vec![usize::MAX; wf.nodes.len()];
    let mut steps: Vec<Step> = Vec::with_capacity(order.len());
    let mut errors = Vec::new();
    for &i in order {
        let (id, node) = wf.nodes.get_index(i).expect("index in range");
        let registered = registry.by_index(graph.type_index[i]);
        let spec = &registered.spec;
        let mut inputs = Vec::with_capacity(spec.inputs.len());
        let mut input_parts = Vec::with_capacity(spec.inputs.len());
        for input in &spec.inputs {
            let planned = match node.inputs.get(input.name).map(|e| &e.value) {
                Some(InputValue::Constant(c)) => PlannedInput::Constant(normalise(c, input.ty)),
                Some(InputValue::Link(l)) => {
                    let from = wf.nodes.get_index_of(&l.node).expect("validated link");
                    let from_spec = &registry.by_index(graph.type_index[from]).spec;
                    let output = from_spec.output(&l.output).map(|(o, _)| o).ok_or_else(|| {
                        vec![Diagnostic::new(format!(
                            "node '{}' has no output '{}'",
                            l.node, l.output
                        ))
                        .node(id)]
                    })?;
                    PlannedInput::Link {
                        step: step_of[from],
                        output,
                    }
                }
                None => match &input.default {
                    Some(c) => PlannedInput::Constant(normalise(c, input.ty)),
                    None => PlannedInput::Absent,
                },
            };
            input_parts.push(input_part(input.name, &planned, &steps));
            inputs.push(planned);
        }
        let files = match file_part(registered, &inputs, models, hash_file) {
            Ok(files) => files,
            Err(message) => {
                errors.push(
                    Diagnostic::at_opt(node.pos, message)
                        .node(id)
                        .code(crate::diagnostic::Code::FileNotFound),
                );
                [0; 32]
            }
        };
        let mut node_part = blake3::Hasher::new();
        node_part.update(spec.type_name.as_bytes());
        node_part.update(&[0]);
        node_part.update(&spec.version.to_le_bytes());
        let parts = KeyParts {
            node: *node_part.finalize().as_bytes(),
            inputs: input_parts,
            files,
        };
        let key = parts.key();
        let output_keys = spec
            .outputs
            .iter()
            .enumerate()
            .map(|(o, output)| match output.depends_on {
                None => key,
                Some(names) => parts.output_key(o, names, &spec.inputs),
            })
            .collect();
        step_of[i] = steps.len();
        steps.push(Step {
            id: id.clone(),
            type_index: graph.type_index[i],
            inputs,
            key,
            output_keys,
            parts,
        });
    }
    if errors.is_empty() {
        Ok(Plan { steps })
    } else {
        Err(errors)
    }
}

impl KeyParts {
    /// The cache key: a hash of the parts in order.
    pub fn key(&self) -> CacheKey {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"weft-node-key-v2\0");
        hasher.update(&self.node);
        for part in &self.inputs {
            hasher.update(part);
        }
        hasher.update(&self.files);
        CacheKey(*hasher.finalize().as_bytes())
    }

    /// The key of output `output` that depends on the inputs `names` only (and the files).
    fn output_key(
        &self,
        output: usize,
        names: &[&str],
        specs: &[crate::node::InputSpec],
    ) -> CacheKey {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"weft-output-key-v1\0");
        hasher.update(&self.node);
        hasher.update(&(output as u32).to_le_bytes());
        for (spec, part) in specs.iter().zip(&self.inputs) {
            if names.contains(&spec.name) {
                hasher.update(part);
            }
        }
        hasher.update(&self.files);
        CacheKey(*hasher.finalize().as_bytes())
    }
}

fn input_part(name: &str, planned: &PlannedInput, steps: &[Step]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(name.as_bytes());
    hasher.update(&[0]);
    match planned {
        PlannedInput::Constant(c) => {
            hasher.update(b"c");
            c.hash_into(&mut hasher);
        }
        PlannedInput::Link { step, output } => {
            hasher.update(b"l");
            hasher.update(&steps[*step].output_keys[*output].0);
            hasher.update(&(*output as u32).to_le_bytes());
        }
        PlannedInput::Absent => {
            hasher.update(b"a");
        }
    }
    *hasher.finalize().as_bytes()
}

/// The hash of the content of every file the node says it reads.
fn file_part(
    registered: &crate::registry::RegisteredNode,
    inputs: &[PlannedInput],
    models: &ModelFolders,
    hash_file: &mut FileHasher,
) -> Result<[u8; 32], String> {
    let constants = ConstantInputs {
        specs: &registered.spec.inputs,
        values: inputs
            .iter()
            .map(|p| match p {
                PlannedInput::Constant(c) => Some(c),
                _ => None,
            })
            .collect(),
    };
    let mut hasher = blake3::Hasher::new();
    let files = registered
        .node
        .input_files(&constants, models)
        .map_err(|e| e.to_string())?;
    for file in files {
        let hash = hash_file(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        hasher.update(&hash);
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Why a node could not be taken from the cache, compared with its parts in an earlier run:
/// which inputs or upstream nodes changed, or that its type or files did.
pub fn why_not_cached(
    step: &Step,
    plan: &Plan,
    spec_inputs: &[crate::node::InputSpec],
    previous: Option<&KeyParts>,
) -> Vec<String> {
    let Some(previous) = previous else {
        return vec!["first run".to_string()];
    };
    let mut why = Vec::new();
    if previous.node != step.parts.node {
        why.push("node type or version changed".to_string());
    }
    for (i, part) in step.parts.inputs.iter().enumerate() {
        if previous.inputs.get(i) == Some(part) {
            continue;
        }
        let name = spec_inputs.get(i).map_or("?", |s| s.name);
        match step.inputs.get(i) {
            Some(PlannedInput::Link { step: from, .. }) => {
                why.push(format!("upstream '{}' changed", plan.steps[*from].id))
            }
            _ => why.push(format!("input '{name}' changed")),
        }
    }
    if previous.files != step.parts.files {
        why.push("a file it reads changed".to_string());
    }
    if why.is_empty() {
        why.push("not in the cache (evicted, or its last run failed)".to_string());
    }
    why
}

/// Int constants feeding float inputs are keyed as floats, so `cfg: 7` and `cfg: 7.0` share a key.
fn normalise(c: &Constant, ty: crate::value::ValueType) -> Constant {
    match (c, ty) {
        (Constant::Int(i), crate::value::ValueType::Float) => Constant::Float(*i as f64),
        _ => c.clone(),
    }
}
