//! Parameter sweeps: a workflow's `sweep:` section (axes of values for `node.input`, combined
//! as a grid or zipped) rewritten, before planning, into plain sweep-free workflows, one per
//! cell. Node ids stay as they are, so what the cells share has the same Merkle keys and the
//! cache runs it once; the planner and the cache keys never see the section.
use indexmap::IndexMap;

use crate::diagnostic::{closest, Diagnostic};
use crate::registry::Registry;
use crate::validate::check_constant;
use crate::value::Constant;
use crate::workflow::{InputEntry, InputValue, Workflow};
use crate::yaml::{type_plain_scalar, PlainScalar, Pos};

/// More cells than this are refused unless the caller raises the limit (`--max-cells`,
/// `"max_cells"`): a typo in a range should not queue a million runs.
pub const DEFAULT_MAX_CELLS: usize = 10_000;

/// How the axes combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SweepMode {
    /// The cross product of the axes.
    #[default]
    Grid,
    /// Axes of equal length, taken together (cell i has every axis's value i).
    Zip,
}

impl SweepMode {
    pub fn name(self) -> &'static str {
        match self {
            SweepMode::Grid => "grid",
            SweepMode::Zip => "zip",
        }
    }

    pub fn from_name(name: &str) -> Option<SweepMode> {
        match name {
            "grid" => Some(SweepMode::Grid),
            "zip" => Some(SweepMode::Zip),
            _ => None,
        }
    }
}

/// The values of one axis as written.
#[derive(Debug, Clone, PartialEq)]
pub enum AxisValues {
    /// `[1, 2, 3]`: each value with its position.
    List(Vec<(Constant, Option<Pos>)>),
    /// `"4..8 step 2"`: expanded by [`parse_range`].
    Range(String, Option<Pos>),
}

/// One axis: the `node.input` it sets and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub values: AxisValues,
    /// Where the axis's key stands.
    pub pos: Option<Pos>,
}

/// A workflow's `sweep:` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sweep {
    pub mode: SweepMode,
    /// Keyed by `node.input`, in the order written (the first axis gives the rows).
    pub axes: IndexMap<String, Axis>,
    pub pos: Option<Pos>,
}

/// The sweep made concrete: axes with their values checked, and the cells they give.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    pub mode: SweepMode,
    pub axes: Vec<(String, Vec<Constant>)>,
    /// The workflow every cell starts from (section removed).
    base: Workflow,
    /// Positions of each axis value, so a cell's input points at the value that set it.
    positions: Vec<Vec<Option<Pos>>>,
    cells: usize,
}

impl SweepPlan {
    pub fn len(&self) -> usize {
        self.cells
    }

    pub fn is_empty(&self) -> bool {
        self.cells == 0
    }

    /// Axes whose values head the grid's rows: the first, and any after the second.
    pub fn rows(&self) -> Vec<String> {
        match self.mode {
            SweepMode::Zip => Vec::new(),
            SweepMode::Grid if self.axes.len() < 2 => Vec::new(),
            SweepMode::Grid => self
                .axes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 1)
                .map(|(_, (name, _))| name.clone())
                .collect(),
        }
    }

    /// Axes whose values head the grid's columns: the second (the only one of a one-axis
    /// sweep; every axis of a zip, whose cells form one row).
    pub fn columns(&self) -> Vec<String> {
        match self.mode {
            SweepMode::Zip => self.axes.iter().map(|(n, _)| n.clone()).collect(),
            SweepMode::Grid if self.axes.len() < 2 => {
                self.axes.iter().map(|(n, _)| n.clone()).collect()
            }
            SweepMode::Grid => vec![self.axes[1].0.clone()],
        }
    }

    /// The index into each axis's values of cell `cell` (row-major: the last axis fastest).
    pub fn indices(&self, cell: usize) -> Vec<usize> {
        match self.mode {
            SweepMode::Zip => vec![cell; self.axes.len()],
            SweepMode::Grid => {
                let mut rest = cell;
                let mut out = vec![0; self.axes.len()];
                for (i, (_, values)) in self.axes.iter().enumerate().rev() {
                    out[i] = rest % values.len();
                    rest /= values.len();
                }
                out
            }
        }
    }

    /// The values cell `cell` sets, keyed by `node.input`.
    pub fn values(&self, cell: usize) -> IndexMap<String, Constant> {
        self.indices(cell)
            .into_iter()
            .zip(&self.axes)
            .map(|(i, (name, values))| (name.clone(), values[i].clone()))
            .collect()
    }

    /// How many rows and columns the grid has.
    pub fn shape(&self) -> (usize, usize) {
        let (rows, columns) = (self.rows(), self.columns());
        let count = |names: &[String]| -> usize {
            match self.mode {
                SweepMode::Zip => {
                    if names.is_empty() {
                        1
                    } else {
                        self.cells
                    }
                }
                SweepMode::Grid => names
                    .iter()
                    .map(|n| self.axis_len(n))
                    .product::<usize>()
                    .max(1),
            }
        };
        (count(&rows), count(&columns))
    }

    fn axis_len(&self, name: &str) -> usize {
        self.axes
            .iter()
            .find(|(n, _)| n == name)
            .map_or(1, |(_, v)| v.len())
    }

    /// Where cell `cell` stands in the grid: (row, column).
    pub fn position(&self, cell: usize) -> (usize, usize) {
        if self.mode == SweepMode::Zip {
            return (0, cell);
        }
        let indices = self.indices(cell);
        if self.axes.len() < 2 {
            return (0, indices.first().copied().unwrap_or(0));
        }
        let mut row = 0;
        for (i, (_, values)) in self.axes.iter().enumerate() {
            if i != 1 {
                row = row * values.len() + indices[i];
            }
        }
        (row, indices[1])
    }

    /// The sweep-free workflow of cell `cell`: the base with the cell's values set, each input
    /// located at the value in the sweep section that set it.
    pub fn workflow(&self, cell: usize) -> Workflow {
        let mut wf = self.base.clone();
        for (axis, i) in self.indices(cell).into_iter().enumerate() {
            let (name, values) = &self.axes[axis];
            if let Some((node, input)) = name.split_once('.') {
                if let Some(entry) = wf.nodes.get_mut(node) {
                    entry.inputs.insert(
                        input.to_string(),
                        InputEntry {
                            value: InputValue::Constant(values[i].clone()),
                            pos: self.positions[axis].get(i).copied().flatten(),
                        },
                    );
                }
            }
        }
        wf
    }
}

/// Cells one batched run computes: they differ only in per-image inputs of node `node` (a
/// Sampler's seed), so the first cell's run samples them all as one batch and the others' runs
/// find their results cached (see [`crate::Batch`]). Every cell is still its own run, with its
/// own sweep-free workflow, record and images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellBatch {
    pub node: String,
    /// In run order; the first one's run computes the batch.
    pub cells: Vec<usize>,
}

impl SweepPlan {
    /// The cells grouped into batches of at most `max_batch` (a group per distinct value of
    /// every axis that is not a per-image input of the batched node), in the order of their
    /// first cells. The batched node is the first axis's node whose type declares that input
    /// per-image ([`crate::Node::per_image_inputs`]), or the node such an input of which is
    /// linked to the axis's node (a prompt axis batches the sampler it feeds); with none, or `max_batch` below 2, every
    /// cell is a group of one.
    pub fn batches(&self, registry: &Registry, max_batch: usize) -> Vec<CellBatch> {
        let declares = |node: &str, input: &str| -> bool {
            self.base
                .nodes
                .get(node)
                .and_then(|entry| registry.get(&entry.type_name))
                .is_some_and(|registered| registered.node.per_image_inputs().contains(&input))
        };
        // An axis on a per-image input, or on a node one feeds (a prompt's text: the encode
        // differs per cell, the sampler stacks the conditionings), names the batched node.
        let per_image = |name: &str| -> Option<String> {
            let (node, input) = name.split_once('.')?;
            if declares(node, input) {
                return Some(node.to_string());
            }
            self.base.nodes.iter().find_map(|(consumer, entry)| {
                entry
                    .inputs
                    .iter()
                    .find_map(|(input, value)| match &value.value {
                        InputValue::Link(link)
                            if link.node == node && declares(consumer, input) =>
                        {
                            Some(consumer.clone())
                        }
                        _ => None,
                    })
            })
        };
        let node = self.axes.iter().find_map(|(name, _)| per_image(name));
        let alone = |node: String| -> Vec<CellBatch> {
            (0..self.cells)
                .map(|cell| CellBatch {
                    node: node.clone(),
                    cells: vec![cell],
                })
                .collect()
        };
        let Some(node) = node.filter(|_| max_batch >= 2) else {
            return alone(String::new());
        };
        // The axes that stay fixed within a batch: all but the batched node's per-image ones.
        let fixed: Vec<usize> = self
            .axes
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| per_image(name).as_deref() != Some(node.as_str()))
            .map(|(i, _)| i)
            .collect();
        let mut groups: Vec<(Vec<&Constant>, Vec<usize>)> = Vec::new();
        for cell in 0..self.cells {
            let indices = self.indices(cell);
            let values: Vec<&Constant> =
                fixed.iter().map(|&a| &self.axes[a].1[indices[a]]).collect();
            match groups
                .iter_mut()
                .find(|(v, cells)| *v == values && cells.len() % max_batch != 0)
            {
                Some((_, cells)) => cells.push(cell),
                None => groups.push((values, vec![cell])),
            }
        }
        groups
            .into_iter()
            .map(|(_, cells)| CellBatch {
                node: node.clone(),
                cells,
            })
            .collect()
    }
}

/// The workflow's sweep made concrete, or `None` when it has no `sweep:` section (or an empty
/// one). Every axis and value is checked before anything runs, all errors at once.
pub fn plan(
    workflow: &Workflow,
    registry: &Registry,
    max_cells: usize,
) -> Result<Option<SweepPlan>, Vec<Diagnostic>> {
    let Some(sweep) = &workflow.sweep else {
        return Ok(None);
    };
    if sweep.axes.is_empty() {
        return Ok(None);
    }
    let mut errors = Vec::new();
    let mut axes = Vec::new();
    let mut positions = Vec::new();
    for (name, axis) in &sweep.axes {
        let checked = check_axis(workflow, registry, name, axis, max_cells, &mut errors);
        if let Some((values, pos)) = checked {
            axes.push((name.clone(), values));
            positions.push(pos);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let cells = match sweep.mode {
        SweepMode::Grid => axes
            .iter()
            .try_fold(1usize, |n, (_, v)| n.checked_mul(v.len())),
        SweepMode::Zip => {
            let first = axes[0].1.len();
            for ((name, values), axis) in axes.iter().zip(sweep.axes.values()) {
                if values.len() != first {
                    errors.push(
                        Diagnostic::at_opt(
                            axis.pos,
                            format!(
                                "zipped axes must have equal lengths: '{name}' has {} values, '{}' has {first}",
                                values.len(),
                                axes[0].0
                            ),
                        )
                        .hint("give every axis as many values, or use `mode: grid` for the cross product"),
                    );
                }
            }
            Some(first)
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    match cells {
        Some(n) if n <= max_cells => {}
        _ => {
            let count = cells.map_or("more than 2^64".to_string(), |n| n.to_string());
            return Err(vec![Diagnostic::at_opt(
                sweep.pos,
                format!("this sweep makes {count} cells, more than the limit of {max_cells}"),
            )
            .hint("narrow the axes, or raise the limit: `weft run --max-cells N`, `\"max_cells\": N` in the API")]);
        }
    }
    let mut base = workflow.clone();
    base.sweep = None;
    Ok(Some(SweepPlan {
        mode: sweep.mode,
        axes,
        base,
        positions,
        cells: cells.unwrap_or(0),
    }))
}

/// One axis's values, each checked against the input it sets; `None` after pushing errors.
fn check_axis(
    workflow: &Workflow,
    registry: &Registry,
    name: &str,
    axis: &Axis,
    max_cells: usize,
    errors: &mut Vec<Diagnostic>,
) -> Option<(Vec<Constant>, Vec<Option<Pos>>)> {
    let Some((node_id, input)) = name.split_once('.') else {
        errors.push(
            Diagnostic::at_opt(axis.pos, format!("sweep axis '{name}' must be NODE.INPUT"))
                .hint("e.g. `sample.seed: [1, 2, 3]`"),
        );
        return None;
    };
    let Some(node) = workflow.nodes.get(node_id) else {
        let mut d = Diagnostic::at_opt(
            axis.pos,
            format!("sweep axis '{name}': no node '{node_id}' in the workflow"),
        )
        .node(node_id);
        d.hint = closest(node_id, workflow.nodes.keys().map(String::as_str))
            .map(|c| format!("did you mean '{c}.{input}'?"));
        errors.push(d);
        return None;
    };
    if let Some(InputEntry {
        value: InputValue::Link(link),
        ..
    }) = node.inputs.get(input)
    {
        errors.push(
            Diagnostic::at_opt(
                axis.pos,
                format!(
                    "sweep axis '{name}': input '{input}' is linked to ${}.{}, not a value",
                    link.node, link.output
                ),
            )
            .node(node_id)
            .input(input)
            .hint("sweep an input that holds a value, or the upstream node's input"),
        );
        return None;
    }
    // Subgraph and unknown types have no registered declaration here: their cells are checked
    // by validation, each value located at its place in the sweep section.
    let spec = registry.get(&node.type_name).map(|r| &r.spec);
    let input_spec = match spec {
        Some(spec) => match spec.input(input) {
            Some((_, i)) => Some(i),
            None => {
                let mut d = Diagnostic::at_opt(
                    axis.pos,
                    format!(
                        "sweep axis '{name}': {} has no input '{input}'",
                        node.type_name
                    ),
                )
                .node(node_id)
                .input(input);
                let names = spec.inputs.iter().map(|i| i.name);
                d.hint = Some(match closest(input, names) {
                    Some(c) => format!("did you mean '{node_id}.{c}'?"),
                    None => format!(
                        "its inputs: {}",
                        spec.inputs
                            .iter()
                            .map(|i| i.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
                errors.push(d);
                return None;
            }
        },
        None => None,
    };
    let (values, positions): (Vec<Constant>, Vec<Option<Pos>>) = match &axis.values {
        AxisValues::List(items) => items.iter().cloned().unzip(),
        AxisValues::Range(text, pos) => {
            match parse_range(text, max_cells) {
                Ok(values) => {
                    let n = values.len();
                    (values, vec![*pos; n])
                }
                Err(message) => {
                    errors.push(
                    Diagnostic::at_opt(*pos, format!("sweep axis '{name}': {message}"))
                        .node(node_id)
                        .input(input)
                        .hint("a range is FROM..TO or FROM..TO step S (inclusive), e.g. 4..8 step 2"),
                );
                    return None;
                }
            }
        }
    };
    if values.is_empty() {
        errors.push(
            Diagnostic::at_opt(axis.pos, format!("sweep axis '{name}' has no values"))
                .node(node_id)
                .input(input)
                .hint("give at least one value, e.g. [1, 2, 3]"),
        );
        return None;
    }
    let before = errors.len();
    if let Some(spec) = input_spec {
        for (value, pos) in values.iter().zip(&positions) {
            if let Err(mut d) = check_constant(spec, value) {
                d.pos = *pos;
                d.message = format!("sweep axis '{name}': {}", d.message);
                errors.push(d.node(node_id).input(input));
            } else if let Some(check) = spec.check {
                if let Err(mut d) = check(value) {
                    d.pos = *pos;
                    d.message = format!("sweep axis '{name}': {}", d.message);
                    errors.push(d.node(node_id).input(input));
                }
            }
        }
    }
    (errors.len() == before).then_some((values, positions))
}

/// Expands a range text `FROM..TO` or `FROM..TO step S` (inclusive). Whole numbers give
/// integers; any decimal gives floats, rounded to the decimals written (so `0.1..0.3 step 0.1`
/// is 0.1, 0.2, 0.3, not 0.30000000000000004). More than `max_values` values is an error,
/// found before anything is allocated.
pub fn parse_range(text: &str, max_values: usize) -> Result<Vec<Constant>, String> {
    let text = text.trim();
    let (span, step_text) = match text.split_once(" step ") {
        Some((span, step)) => (span.trim(), Some(step.trim())),
        None => (text, None),
    };
    let Some((from_text, to_text)) = span.split_once("..") else {
        return Err(format!("'{text}' is not a range"));
    };
    let (from_text, to_text) = (from_text.trim(), to_text.trim());
    let int = |t: &str| match type_plain_scalar(t) {
        PlainScalar::Int(i) => Some(i),
        _ => None,
    };
    let float = |t: &str| match type_plain_scalar(t) {
        PlainScalar::Int(i) => Some(i as f64),
        PlainScalar::Float(f) if f.is_finite() => Some(f),
        _ => None,
    };
    if let (Some(from), Some(to), Some(step)) = (
        int(from_text),
        int(to_text),
        step_text.map_or(
            Some(if int(to_text) >= int(from_text) {
                1
            } else {
                -1
            }),
            int,
        ),
    ) {
        if step == 0 || (to - from).signum() * step.signum() < 0 {
            return Err(format!(
                "step {step} never goes from {from} to {to} in '{text}'"
            ));
        }
        let count = (to as i128 - from as i128) / step as i128 + 1;
        if count > max_values as i128 {
            return Err(format!(
                "'{text}' gives {count} values, more than the limit of {max_values}"
            ));
        }
        return Ok((0..count as i64)
            .map(|i| Constant::Int(from + i * step))
            .collect());
    }
    let (Some(from), Some(to)) = (float(from_text), float(to_text)) else {
        return Err(format!(
            "'{text}': the ends of a range must be numbers, found '{from_text}' and '{to_text}'"
        ));
    };
    let step = match step_text {
        None => {
            if to >= from {
                1.0
            } else {
                -1.0
            }
        }
        Some(s) => float(s).ok_or_else(|| format!("'{text}': step '{s}' is not a number"))?,
    };
    if step == 0.0 || (to - from) * step < 0.0 {
        return Err(format!(
            "step {step} never goes from {from} to {to} in '{text}'"
        ));
    }
    // A little slack so that 0..1 step 0.1 ends on 1.0 despite rounding.
    let count = ((to - from) / step + 1e-9).floor() + 1.0;
    if !count.is_finite() || count > max_values as f64 {
        return Err(format!(
            "'{text}' gives {count} values, more than the limit of {max_values}"
        ));
    }
    let decimals = [Some(from_text), Some(to_text), step_text]
        .into_iter()
        .flatten()
        .map(|t| t.split_once('.').map_or(0, |(_, frac)| frac.len()))
        .max()
        .unwrap_or(0)
        .min(12) as i32;
    let scale = 10f64.powi(decimals);
    Ok((0..count as usize)
        .map(|i| Constant::Float(((from + i as f64 * step) * scale).round() / scale))
        .collect())
}

/// The values of a command-line axis: `1,2,3`, `1..8` or `4..8 step 2`; list items are
/// typed as YAML plain scalars (numbers, booleans, else text).
pub fn parse_cli_values(text: &str, max_values: usize) -> Result<Vec<Constant>, String> {
    if text.contains("..") && !text.contains(',') {
        return parse_range(text, max_values);
    }
    text.split(',')
        .map(|item| {
            let item = item.trim();
            Ok(match type_plain_scalar(item) {
                PlainScalar::Null => {
                    return Err(format!("'{text}': an empty value in the list"));
                }
                PlainScalar::Bool(b) => Constant::Bool(b),
                PlainScalar::Int(i) => Constant::Int(i),
                PlainScalar::UInt(u) => Constant::UInt(u),
                PlainScalar::Float(f) => Constant::Float(f),
                PlainScalar::String(s) => Constant::String(s.into_owned()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(values: &[Constant]) -> Vec<i64> {
        values
            .iter()
            .map(|c| match c {
                Constant::Int(i) => *i,
                other => panic!("expected an int, found {other:?}"),
            })
            .collect()
    }

    fn floats(values: &[Constant]) -> Vec<f64> {
        values.iter().filter_map(Constant::as_f64).collect()
    }

    use crate::node::{InputSpec, Inputs, Node, NodeContext, NodeResult, NodeSpec, OutputSpec};
    use crate::value::{Value, ValueType};

    /// A sampler-like node: a seed, a bounded cfg, a sampler name from a list, a linked model.
    struct Sample;
    impl Node for Sample {
        fn spec(&self) -> NodeSpec {
            NodeSpec {
                type_name: "Sample",
                category: "test",
                doc: "",
                version: 1,
                inputs: vec![
                    InputSpec::new("model", ValueType::Int, "").optional(),
                    InputSpec::new("seed", ValueType::Seed, "").default(0i64),
                    InputSpec::new("cfg", ValueType::Float, "guidance")
                        .range(1.0, 30.0)
                        .default(7.0),
                    InputSpec::new("sampler", ValueType::Enum, "")
                        .choices(&["euler", "heun"])
                        .default("euler"),
                ],
                outputs: vec![OutputSpec::new("out", ValueType::Int, "")],
                output_node: true,
            }
        }
        fn run(&self, _: &Inputs, _: &mut NodeContext) -> NodeResult<Vec<Value>> {
            Ok(vec![])
        }
        fn per_image_inputs(&self) -> &'static [&'static str] {
            &["seed"]
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register(Sample);
        r
    }

    const DOC: &str = "weft: 1
nodes:
  sample:
    type: Sample
    seed: 42
    model: $other.out
sweep:
  axes:
    sample.seed: [1, 2, 3, 4]
    sample.cfg: 4..8 step 2
";

    fn sweep_plan(doc: &str, max_cells: usize) -> Result<Option<SweepPlan>, Vec<Diagnostic>> {
        plan(&Workflow::parse_str(doc).unwrap(), &registry(), max_cells)
    }

    #[test]
    fn grid_cells_are_row_major_with_the_last_axis_fastest() {
        let p = sweep_plan(DOC, DEFAULT_MAX_CELLS).unwrap().unwrap();
        assert_eq!(p.len(), 12);
        assert_eq!(p.rows(), ["sample.seed"]);
        assert_eq!(p.columns(), ["sample.cfg"]);
        assert_eq!(p.shape(), (4, 3));
        let v = p.values(4);
        assert_eq!(v["sample.seed"], Constant::Int(2));
        assert_eq!(v["sample.cfg"], Constant::Int(6));
        assert_eq!(p.position(4), (1, 1));
        assert_eq!(p.position(11), (3, 2));
        let cell = p.workflow(4);
        assert!(cell.sweep.is_none(), "a cell is sweep-free");
        let seed = &cell.nodes["sample"].inputs["seed"];
        assert_eq!(seed.value, InputValue::Constant(Constant::Int(2)));
        assert_eq!(
            seed.pos,
            Some(Pos { line: 9, col: 22 }),
            "located at its value"
        );
        assert!(matches!(
            cell.nodes["sample"].inputs["model"].value,
            InputValue::Link(_)
        ));
    }

    #[test]
    fn cells_that_differ_only_in_a_per_image_input_are_batched_in_run_order() {
        let p = sweep_plan(DOC, DEFAULT_MAX_CELLS).unwrap().unwrap();
        let cells = |batches: Vec<CellBatch>| -> Vec<Vec<usize>> {
            assert!(batches.iter().all(|b| b.node == "sample"));
            batches.into_iter().map(|b| b.cells).collect()
        };
        // Seeds 1..4 (rows) x cfg 4, 6, 8 (columns): one batch per cfg, led by its first cell.
        let batched = cells(p.batches(&registry(), 4));
        assert_eq!(
            batched,
            [vec![0, 3, 6, 9], vec![1, 4, 7, 10], vec![2, 5, 8, 11]]
        );
        // At most 3 a batch: the fourth seed of each cfg makes a batch of its own.
        let batched = cells(p.batches(&registry(), 3));
        assert_eq!(
            batched,
            [
                vec![0, 3, 6],
                vec![1, 4, 7],
                vec![2, 5, 8],
                vec![9],
                vec![10],
                vec![11]
            ]
        );
        // Batches of one: every cell alone.
        assert_eq!(p.batches(&registry(), 1).len(), 12);
        // No per-image axis: nothing is batched.
        let doc = DOC.replace("    sample.seed: [1, 2, 3, 4]\n", "");
        let p = sweep_plan(&doc, DEFAULT_MAX_CELLS).unwrap().unwrap();
        assert!(p.batches(&registry(), 4).iter().all(|b| b.cells.len() == 1));
        // A zip of seeds with a repeated cfg: the cells with equal cfg are batched.
        let doc = DOC
            .replace("  axes:", "  mode: zip\n  axes:")
            .replace("4..8 step 2", "[4, 6, 4, 4]");
        let p = sweep_plan(&doc, DEFAULT_MAX_CELLS).unwrap().unwrap();
        assert_eq!(cells(p.batches(&registry(), 4)), [vec![0, 2, 3], vec![1]]);
    }

    #[test]
    fn a_third_axis_multiplies_the_rows() {
        let doc = DOC.replace(
            "sample.cfg: 4..8 step 2",
            "sample.cfg: 4..8 step 2\n    sample.sampler: [euler, heun]",
        );
        let p = sweep_plan(&doc, DEFAULT_MAX_CELLS).unwrap().unwrap();
        assert_eq!(p.len(), 24);
        assert_eq!(p.rows(), ["sample.seed", "sample.sampler"]);
        assert_eq!(p.shape(), (8, 3));
        // Cell 1 is seed 1, cfg 4, heun: the second row.
        assert_eq!(p.position(1), (1, 0));
        assert_eq!(p.position(23), (7, 2));
    }

    #[test]
    fn zip_takes_axes_together_and_needs_equal_lengths() {
        let doc = DOC
            .replace("  axes:", "  mode: zip\n  axes:")
            .replace("4..8 step 2", "4..10 step 2");
        let p = sweep_plan(&doc, DEFAULT_MAX_CELLS).unwrap().unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p.values(3)["sample.cfg"], Constant::Int(10));
        assert_eq!(p.shape(), (1, 4));
        let doc = DOC.replace("  axes:", "  mode: zip\n  axes:");
        let errs = sweep_plan(&doc, DEFAULT_MAX_CELLS).unwrap_err();
        assert!(errs[0].message.contains("equal lengths"), "{errs:?}");
    }

    #[test]
    fn more_cells_than_the_limit_are_refused_unless_allowed() {
        let errs = sweep_plan(DOC, 11).unwrap_err();
        assert!(
            errs[0]
                .message
                .contains("12 cells, more than the limit of 11"),
            "{errs:?}"
        );
        assert_eq!(errs[0].pos, Some(Pos { line: 7, col: 1 }));
        assert!(sweep_plan(DOC, 12).unwrap().is_some());
    }

    #[test]
    fn every_bad_axis_value_is_reported_at_its_line_and_column() {
        let doc = "weft: 1
nodes:
  sample:
    type: Sample
    seed: 42
    model: $other.out
sweep:
  axes:
    sample.seed: [1, -2, 3.5]
    sample.cfg: [1, 50]
    sample.sampler: [euler, eulr]
    sample.nope: [1]
    ghost.seed: [1]
    sample.model: [4]
";
        let errs = sweep_plan(doc, DEFAULT_MAX_CELLS).unwrap_err();
        let shown: Vec<String> = errs
            .iter()
            .map(|d| {
                format!(
                    "{} {}",
                    d.pos.map(|p| p.to_string()).unwrap_or_default(),
                    d.message
                )
            })
            .collect();
        for (at, says) in [
            ("9:22 ", "seed must be 0 or more"),
            ("9:26 ", "expected seed"),
            ("10:21 ", "out of range"),
            ("11:29 ", "'eulr'"),
            ("12:5 ", "no input 'nope'"),
            ("13:5 ", "no node 'ghost'"),
            ("14:5 ", "linked to $other.out"),
        ] {
            assert!(
                shown.iter().any(|l| l.starts_with(at) && l.contains(says)),
                "{at}{says}: {shown:#?}"
            );
        }
        assert_eq!(errs.len(), 7, "{shown:#?}");
    }

    #[test]
    fn the_sweep_section_round_trips_through_yaml_and_json() {
        let wf = Workflow::parse_str(DOC).unwrap();
        let again = Workflow::parse_str(&wf.to_yaml()).unwrap();
        let p1 = plan(&wf, &registry(), 100).unwrap().unwrap();
        let p2 = plan(&again, &registry(), 100).unwrap().unwrap();
        assert_eq!(p1.axes, p2.axes);
        let from_json = Workflow::parse_str(&wf.to_json().to_string()).unwrap();
        assert_eq!(
            plan(&from_json, &registry(), 100).unwrap().unwrap().axes,
            p1.axes
        );
        assert!(wf.to_yaml().contains("sweep:\n  mode: grid\n  axes:\n    sample.seed: [1, 2, 3, 4]\n    sample.cfg: 4..8 step 2\n"), "{}", wf.to_yaml());
    }

    #[test]
    fn integer_ranges_are_inclusive_and_take_a_step() {
        assert_eq!(ints(&parse_range("1..4", 100).unwrap()), [1, 2, 3, 4]);
        assert_eq!(ints(&parse_range("4..8 step 2", 100).unwrap()), [4, 6, 8]);
        assert_eq!(ints(&parse_range("4..9 step 2", 100).unwrap()), [4, 6, 8]);
        assert_eq!(ints(&parse_range("3..1", 100).unwrap()), [3, 2, 1]);
        assert_eq!(ints(&parse_range("5..5", 100).unwrap()), [5]);
    }

    #[test]
    fn float_ranges_end_on_the_value_written() {
        let v = parse_range("0.1..0.3 step 0.1", 100).unwrap();
        assert_eq!(floats(&v), [0.1, 0.2, 0.3]);
        let v = parse_range("4..8 step 0.5", 100).unwrap();
        assert_eq!(v.len(), 9);
        assert_eq!(floats(&v)[8], 8.0);
        assert!(matches!(v[0], Constant::Float(_)));
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        assert!(parse_range("1..8 step 0", 100)
            .unwrap_err()
            .contains("never"));
        assert!(parse_range("1..8 step -1", 100)
            .unwrap_err()
            .contains("never"));
        assert!(parse_range("a..b", 100).unwrap_err().contains("numbers"));
        assert!(parse_range("1-8", 100).unwrap_err().contains("not a range"));
    }

    #[test]
    fn a_huge_range_is_refused_before_it_is_made() {
        let e = parse_range("0..9223372036854775806", 10_000).unwrap_err();
        assert!(e.contains("more than the limit of 10000"), "{e}");
        let e = parse_range("0..1e300 step 1e-300", 10_000).unwrap_err();
        assert!(e.contains("limit"), "{e}");
    }

    #[test]
    fn cli_values_are_lists_or_ranges() {
        assert_eq!(ints(&parse_cli_values("1,2,3", 100).unwrap()), [1, 2, 3]);
        assert_eq!(ints(&parse_cli_values("1..3", 100).unwrap()), [1, 2, 3]);
        let names = parse_cli_values("euler, dpmpp_2m", 100).unwrap();
        assert_eq!(names, ["euler".into(), "dpmpp_2m".into()] as [Constant; 2]);
        assert!(parse_cli_values("1,,2", 100).is_err());
    }
}
