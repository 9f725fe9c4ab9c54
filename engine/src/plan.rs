//! The planner: from a validated workflow, the nodes the outputs (or one target) need, in
//! dependency order, each with its Merkle cache key (computed once, from its parents' keys).
use std::collections::VecDeque;
use std::fmt;
use std::path::Path;

use crate::diagnostic::Diagnostic;
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
pub type FileHasher<'a> = dyn FnMut(&Path) -> Result<[u8; 32], String> + 'a;

/// Plans a workflow that `validate` accepted.
pub fn plan(
    wf: &Workflow,
    registry: &Registry,
    target: Option<&str>,
    models_dir: &Path,
    hash_file: &mut FileHasher,
) -> Result<Plan, Vec<Diagnostic>> {
    let n = wf.nodes.len();
    // Upstream node indices of each node (by workflow position).
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

    // What the outputs (or the target) need, walking links upstream with an explicit stack.
    let mut needed = vec![false; n];
    let mut stack: Vec<usize> = match target {
        Some(t) => vec![wf.nodes.get_index_of(t).ok_or_else(|| {
            vec![Diagnostic::new(format!(
                "target node '{t}' is not in the workflow"
            ))]
        })?],
        None => (0..n)
            .filter(|&i| registry.by_index(type_index[i]).spec.output_node)
            .collect(),
    };
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut needed[i], true) {
            continue;
        }
        stack.extend(upstream[i].iter().copied().filter(|&u| !needed[u]));
    }

    // Kahn's algorithm over the needed nodes, ties in file order, so the order is stable.
    let mut pending = vec![0usize; n];
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in (0..n).filter(|&i| needed[i]) {
        for &u in &upstream[i] {
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

    let mut step_of = vec![usize::MAX; n];
    let mut steps: Vec<Step> = Vec::with_capacity(order.len());
    let mut errors = Vec::new();
    for &i in &order {
        let (id, node) = wf.nodes.get_index(i).expect("index in range");
        let registered = registry.by_index(type_index[i]);
        let spec = &registered.spec;
        let mut inputs = Vec::with_capacity(spec.inputs.len());
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"weft-node-key-v1\0");
        hasher.update(spec.type_name.as_bytes());
        hasher.update(&[0]);
        hasher.update(&spec.version.to_le_bytes());
        for input in &spec.inputs {
            hasher.update(input.name.as_bytes());
            hasher.update(&[0]);
            let planned = match node.inputs.get(input.name).map(|e| &e.value) {
                Some(InputValue::Constant(c)) => PlannedInput::Constant(normalise(c, input.ty)),
                Some(InputValue::Link(l)) => {
                    let from = wf.nodes.get_index_of(&l.node).expect("validated link");
                    let from_spec = &registry.by_index(type_index[from]).spec;
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
            match &planned {
                PlannedInput::Constant(c) => {
                    hasher.update(b"c");
                    c.hash_into(&mut hasher);
                }
                PlannedInput::Link { step, output } => {
                    hasher.update(b"l");
                    hasher.update(&steps[*step].key.0);
                    hasher.update(&(*output as u32).to_le_bytes());
                }
                PlannedInput::Absent => {
                    hasher.update(b"a");
                }
            }
            inputs.push(planned);
        }
        let constants = ConstantInputs {
            specs: &spec.inputs,
            values: inputs
                .iter()
                .map(|p| match p {
                    PlannedInput::Constant(c) => Some(c),
                    _ => None,
                })
                .collect(),
        };
        match registered.node.input_files(&constants, models_dir) {
            Ok(files) => {
                for file in files {
                    match hash_file(&file) {
                        Ok(h) => {
                            hasher.update(b"f");
                            hasher.update(&h);
                        }
                        Err(e) => errors.push(
                            Diagnostic::at_opt(
                                node.pos,
                                format!("cannot read {}: {e}", file.display()),
                            )
                            .node(id),
                        ),
                    }
                }
            }
            Err(e) => errors.push(Diagnostic::at_opt(node.pos, e).node(id)),
        }
        step_of[i] = steps.len();
        steps.push(Step {
            id: id.clone(),
            type_index: type_index[i],
            inputs,
            key: CacheKey(*hasher.finalize().as_bytes()),
        });
    }
    if errors.is_empty() {
        Ok(Plan { steps })
    } else {
        Err(errors)
    }
}

/// Int constants feeding float inputs are keyed as floats, so `cfg: 7` and `cfg: 7.0` share a key.
fn normalise(c: &Constant, ty: crate::value::ValueType) -> Constant {
    match (c, ty) {
        (Constant::Int(i), crate::value::ValueType::Float) => Constant::Float(*i as f64),
        _ => c.clone(),
    }
}
