//! Reading a workflow from the located YAML tree: structure, node ids, inputs (constants,
//! `$node.output` links, `$$` escapes) and the layout section, every problem located.
use indexmap::IndexMap;

use super::{
    is_valid_id, Appearance, ExposedInput, ExposedOutput, Group, InputEntry, InputValue, Link,
    NodeEntry, NodeMode, Reroute, Workflow, FORMAT_VERSION, MAX_ID_CHARS,
};
use crate::diagnostic::Diagnostic;
use crate::sweep::{Axis, AxisValues, Sweep, SweepMode};
use crate::value::{Constant, ValueType};
use crate::yaml::{type_plain_scalar, PlainScalar, Pos, Yaml};

const TOP_LEVEL_KEYS: [&str; 9] = [
    "weft",
    "nodes",
    "layout",
    "appearance",
    "groups",
    "reroutes",
    "inputs",
    "outputs",
    "sweep",
];

pub(super) fn from_tree(root: Yaml) -> Result<Workflow, Vec<Diagnostic>> {
    let Yaml::Map { entries, pos } = root else {
        return Err(vec![Diagnostic::at(
            root.pos(),
            format!("expected a mapping at the top, found {}", root.kind_name()),
        )
        .hint("a workflow starts with `weft: 1` and a `nodes:` mapping")]);
    };
    let mut errors = Vec::new();
    let mut wf = Workflow::default();
    let mut saw_version = false;
    let mut saw_nodes = false;
    for (key, value) in entries {
        match key.text.as_str() {
            "weft" => {
                saw_version = true;
                wf.version_pos = Some(value.pos());
                match &value {
                    Yaml::Scalar {
                        text,
                        quoted: false,
                        ..
                    } => match type_plain_scalar(text) {
                        PlainScalar::Int(v) => wf.version = v,
                        _ => errors.push(
                            Diagnostic::at(
                                value.pos(),
                                format!("format version must be a number, found '{text}'"),
                            )
                            .hint("write `weft: 1`"),
                        ),
                    },
                    _ => errors.push(
                        Diagnostic::at(value.pos(), "format version must be a number")
                            .hint("write `weft: 1`"),
                    ),
                }
            }
            "nodes" => {
                saw_nodes = true;
                wf.nodes_pos = Some(key.pos);
                match value {
                    Yaml::Map { entries, .. } => {
                        for (id, node) in entries {
                            if let Some(entry) = read_node(&id.text, id.pos, node, &mut errors) {
                                wf.nodes.insert(id.text, entry);
                            }
                        }
                    }
                    Yaml::Scalar {
                        ref text,
                        quoted: false,
                        ..
                    } if matches!(type_plain_scalar(text), PlainScalar::Null) => {}
                    other => errors.push(Diagnostic::at(
                        other.pos(),
                        format!(
                            "`nodes` must be a mapping of node id to node, found {}",
                            other.kind_name()
                        ),
                    )),
                }
            }
            "layout" => read_layout(value, &mut wf, &mut errors),
            "groups" => read_groups(value, &mut wf, &mut errors),
            "reroutes" => read_reroutes(value, &mut wf, &mut errors),
            "appearance" => read_appearance(value, &mut wf, &mut errors),
            "sweep" => wf.sweep = read_sweep(key.pos, value, &mut errors),
            "inputs" => {
                let interface = wf.interface.get_or_insert_with(Default::default);
                interface.inputs = read_exposed_inputs(value, &mut errors);
            }
            "outputs" => {
                let interface = wf.interface.get_or_insert_with(Default::default);
                interface.outputs = read_exposed_outputs(value, &mut errors);
            }
            other => {
                let mut d = Diagnostic::at(key.pos, format!("unknown top-level key '{other}'"));
                d.hint = Some(match crate::diagnostic::closest(other, TOP_LEVEL_KEYS.iter().copied()) {
                    Some(s) => format!("did you mean '{s}'? The top-level keys are weft, nodes, layout, appearance, groups, reroutes, sweep (and inputs, outputs in a subgraph)"),
                    None => "the top-level keys are weft, nodes, layout, appearance, groups, reroutes, sweep (and inputs, outputs in a subgraph); node inputs belong inside their node".into(),
                });
                errors.push(d);
            }
        }
    }
    if !saw_version {
        errors.push(
            Diagnostic::at(pos, "missing format version").hint("add `weft: 1` as the first line"),
        );
    } else if wf.version != FORMAT_VERSION && errors.is_empty() {
        errors.push(
            Diagnostic::at(
                wf.version_pos.unwrap_or(pos),
                format!("unsupported format version {}", wf.version),
            )
            .hint(format!("this weft reads format version {FORMAT_VERSION}")),
        );
    }
    if !saw_nodes {
        errors.push(
            Diagnostic::at(pos, "missing `nodes:` mapping")
                .hint("list the nodes under `nodes:`, each with a `type:`"),
        );
    }
    if errors.is_empty() {
        Ok(wf)
    } else {
        Err(errors)
    }
}

/// The diagnostic of a malformed node id; a very long id is cut short in it (the diagnostic
/// travels to clients and a 100,000-character id must not).
fn invalid_id(id: &str, pos: Pos) -> Diagnostic {
    let shown: String = id.chars().take(MAX_ID_CHARS).collect();
    let (shown, more) = if shown.len() < id.len() {
        (
            format!("{shown}..."),
            format!(" ({} characters)", id.chars().count()),
        )
    } else {
        (shown, String::new())
    };
    Diagnostic::at(pos, format!("invalid node id '{shown}'{more}"))
        .node(&shown)
        .hint(format!(
            "node ids are 1 to {MAX_ID_CHARS} letters, digits, '_' and '-' (they appear in links as $id.output)"
        ))
}

fn read_node(id: &str, id_pos: Pos, node: Yaml, errors: &mut Vec<Diagnostic>) -> Option<NodeEntry> {
    let Yaml::Map { entries, .. } = node else {
        errors.push(
            Diagnostic::at(
                node.pos(),
                format!(
                    "node must be a mapping with a `type:`, found {}",
                    node.kind_name()
                ),
            )
            .node(id)
            .hint("indent the node's `type:` and inputs under its id"),
        );
        return None;
    };
    if !is_valid_id(id) {
        errors.push(invalid_id(id, id_pos));
    }
    let mut entry = NodeEntry {
        type_name: String::new(),
        file: None,
        inputs: IndexMap::new(),
        pos: Some(id_pos),
        type_pos: None,
        mode: NodeMode::Normal,
    };
    let mut ok = true;
    for (key, value) in entries {
        if key.text == "type" {
            match value {
                Yaml::Scalar { text, pos, .. } => {
                    entry.type_name = text;
                    entry.type_pos = Some(pos);
                }
                other => {
                    errors.push(
                        Diagnostic::at(other.pos(), "`type` must be a node type name").node(id),
                    );
                    ok = false;
                }
            }
            continue;
        }
        if key.text == "bypass" || key.text == "mute" {
            // Node keys, like `type`: no node type has inputs of these names.
            let on = match &value {
                Yaml::Scalar {
                    text,
                    quoted: false,
                    ..
                } => match type_plain_scalar(text) {
                    PlainScalar::Bool(b) => Some(b),
                    _ => None,
                },
                _ => None,
            };
            match on {
                Some(false) => {}
                Some(true) => {
                    let mode = if key.text == "bypass" {
                        NodeMode::Bypass
                    } else {
                        NodeMode::Mute
                    };
                    if entry.mode != NodeMode::Normal && entry.mode != mode {
                        errors.push(
                            Diagnostic::at(key.pos, "a node cannot be both bypassed and muted")
                                .node(id)
                                .hint("keep `bypass: true` (pass inputs through) or `mute: true` (leave it out)"),
                        );
                        ok = false;
                    }
                    entry.mode = mode;
                }
                None => {
                    errors.push(
                        Diagnostic::at(
                            value.pos(),
                            format!("`{}` must be true or false", key.text),
                        )
                        .node(id)
                        .hint(format!("write `{}: true`, or remove the line", key.text)),
                    );
                    ok = false;
                }
            }
            continue;
        }
        match read_input_value(&value) {
            Ok(v) => {
                entry.inputs.insert(
                    key.text,
                    InputEntry {
                        value: v,
                        pos: Some(value.pos()),
                    },
                );
            }
            Err(d) => {
                errors.push(d.node(id).input(&key.text));
                ok = false;
            }
        }
    }
    if entry.type_pos.is_none() && ok {
        errors.push(
            Diagnostic::at(id_pos, "node has no `type:`")
                .node(id)
                .hint("add `type: NodeType`; `weft nodes` lists the types"),
        );
        return None;
    }
    ok.then_some(entry)
}

fn read_input_value(value: &Yaml) -> Result<InputValue, Diagnostic> {
    let Yaml::Scalar { text, quoted, pos } = value else {
        return Err(Diagnostic::at(
            value.pos(),
            format!(
                "an input value must be a single value or a $link, found {}",
                value.kind_name()
            ),
        )
        .hint("write `input: 42`, `input: some text` or `input: $node.output`"));
    };
    if let Some(rest) = text.strip_prefix('$') {
        if rest.starts_with('$') {
            return Ok(InputValue::Constant(Constant::String(rest.to_string())));
        }
        return match Link::parse(rest) {
            Some(link) => Ok(InputValue::Link(link)),
            None => Err(
                Diagnostic::at(*pos, format!("malformed link '{text}'")).hint(
                    "a link is written $node.output (letters, digits, _ and -), e.g. $model.unet; write $$ for a literal '$'",
                ),
            ),
        };
    }
    if *quoted {
        return Ok(InputValue::Constant(Constant::String(text.clone())));
    }
    Ok(InputValue::Constant(match type_plain_scalar(text) {
        PlainScalar::Null => {
            return Err(Diagnostic::at(*pos, "empty value").hint(
                "give a value, or remove the line to use the default; write \"\" for empty text",
            ))
        }
        PlainScalar::Bool(b) => Constant::Bool(b),
        PlainScalar::Int(i) => Constant::Int(i),
        PlainScalar::UInt(u) => Constant::UInt(u),
        PlainScalar::Float(f) => Constant::Float(f),
        PlainScalar::String(s) => Constant::String(s.into_owned()),
    }))
}

fn read_layout(value: Yaml, wf: &mut Workflow, errors: &mut Vec<Diagnostic>) {
    let Yaml::Map { entries, .. } = value else {
        if !matches!(&value, Yaml::Scalar { text, quoted: false, .. } if text.is_empty()) {
            errors.push(Diagnostic::at(
                value.pos(),
                "`layout` must map node ids to [x, y]",
            ));
        }
        return;
    };
    for (key, v) in entries {
        let point = match &v {
            Yaml::Seq { items, .. } if items.len() == 2 => {
                let nums: Vec<f64> = items
                    .iter()
                    .filter_map(|i| match i {
                        Yaml::Scalar {
                            text,
                            quoted: false,
                            ..
                        } => match type_plain_scalar(text) {
                            PlainScalar::Int(i) => Some(i as f64),
                            PlainScalar::UInt(u) => Some(u as f64),
                            PlainScalar::Float(f) if f.is_finite() => Some(f),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect();
                (nums.len() == 2).then(|| [nums[0], nums[1]])
            }
            _ => None,
        };
        match point {
            Some(p) => {
                wf.layout.insert(key.text, p);
            }
            None => errors.push(
                Diagnostic::at(v.pos(), format!("layout of '{}' must be [x, y]", key.text))
                    .node(&key.text),
            ),
        }
    }
}

/// A list of finite numbers, or `None`.
fn numbers(value: &Yaml) -> Option<Vec<f64>> {
    let Yaml::Seq { items, .. } = value else {
        return None;
    };
    items
        .iter()
        .map(|i| match i {
            Yaml::Scalar {
                text,
                quoted: false,
                ..
            } => match type_plain_scalar(text) {
                PlainScalar::Int(i) => Some(i as f64),
                PlainScalar::UInt(u) => Some(u as f64),
                PlainScalar::Float(f) if f.is_finite() => Some(f),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// `groups:`: a list of `{title: T, color: "#rrggbb", box: [x, y, width, height]}`.
fn read_groups(value: Yaml, wf: &mut Workflow, errors: &mut Vec<Diagnostic>) {
    const HINT: &str =
        "write each group as `- {title: Sampling, color: \"#3f789e\", box: [x, y, width, height]}`";
    let items = match value {
        Yaml::Seq { items, .. } => items,
        Yaml::Scalar {
            ref text,
            quoted: false,
            ..
        } if text.is_empty() => return,
        other => {
            errors.push(Diagnostic::at(other.pos(), "`groups` must be a list").hint(HINT));
            return;
        }
    };
    for item in items {
        let Yaml::Map { entries, pos } = item else {
            errors.push(Diagnostic::at(item.pos(), "a group must be a mapping").hint(HINT));
            continue;
        };
        let mut group = Group {
            title: String::new(),
            color: None,
            bounds: [0.0; 4],
        };
        // Said once: a box that is there but malformed has its own error.
        let mut has_box = false;
        let mut bad_box = Vec::new();
        for (key, v) in entries {
            match (key.text.as_str(), &v) {
                ("title", Yaml::Scalar { text, .. }) => group.title = text.clone(),
                ("color", Yaml::Scalar { text, .. }) => group.color = Some(text.clone()),
                ("box", _) => match numbers(&v) {
                    Some(n) if n.len() == 4 && n[2] >= 0.0 && n[3] >= 0.0 => {
                        group.bounds = [n[0], n[1], n[2], n[3]];
                        has_box = true;
                    }
                    _ => bad_box.push(
                        Diagnostic::at(v.pos(), "a group's box must be [x, y, width, height]")
                            .hint(HINT),
                    ),
                },
                (other, _) => errors.push(
                    Diagnostic::at(key.pos, format!("unknown group key '{other}'")).hint(HINT),
                ),
            }
        }
        if has_box {
            wf.groups.push(group);
        } else if bad_box.is_empty() {
            errors.push(Diagnostic::at(pos, "a group needs a box").hint(HINT));
        }
        errors.append(&mut bad_box);
    }
}

/// `reroutes:`: point id -> `{at: [x, y], from: node.output, to: [node.input, ...]}`. Only
/// the shape is checked here: a point whose links are gone is `Workflow::prune_reroutes`'s
/// (a warning, not an error: the point is only drawing).
fn read_reroutes(value: Yaml, wf: &mut Workflow, errors: &mut Vec<Diagnostic>) {
    const HINT: &str =
        "write one line a point: `r1: {at: [x, y], from: model.vae, to: [decode.vae]}`";
    let entries = match value {
        Yaml::Map { entries, .. } => entries,
        Yaml::Scalar {
            ref text,
            quoted: false,
            ..
        } if text.is_empty() => return,
        other => {
            errors.push(
                Diagnostic::at(other.pos(), "`reroutes` must map point ids to points").hint(HINT),
            );
            return;
        }
    };
    // `node.output` / `node.input`, a leading `$` allowed (as the inputs write links).
    let socket = |v: &Yaml| match v {
        Yaml::Scalar { text, .. } => Link::parse(text.strip_prefix('$').unwrap_or(text)),
        _ => None,
    };
    for (id, item) in entries {
        if !is_valid_id(&id.text) {
            errors.push(invalid_id(&id.text, id.pos));
            continue;
        }
        let Yaml::Map {
            entries: fields,
            pos,
        } = item
        else {
            errors.push(
                Diagnostic::at(
                    item.pos(),
                    format!("reroute point '{}' must be a mapping", id.text),
                )
                .hint(HINT),
            );
            continue;
        };
        let (mut at, mut from, mut to) = (None, None, Vec::new());
        let before = errors.len();
        for (key, v) in fields {
            match key.text.as_str() {
                "at" => match numbers(&v) {
                    Some(n) if n.len() == 2 => at = Some([n[0], n[1]]),
                    _ => errors.push(
                        Diagnostic::at(v.pos(), "a reroute point's `at` must be [x, y]").hint(HINT),
                    ),
                },
                "from" => match socket(&v) {
                    Some(link) => from = Some(link),
                    None => errors.push(
                        Diagnostic::at(v.pos(), "a reroute point's `from` must be node.output")
                            .hint(HINT),
                    ),
                },
                "to" => match &v {
                    Yaml::Seq { items, .. } => {
                        for item in items {
                            match socket(item) {
                                Some(l) => to.push((l.node, l.output)),
                                None => errors.push(
                                    Diagnostic::at(
                                        item.pos(),
                                        "each of a reroute point's `to` must be node.input",
                                    )
                                    .hint(HINT),
                                ),
                            }
                        }
                    }
                    other => errors.push(
                        Diagnostic::at(
                            other.pos(),
                            "a reroute point's `to` must be a list of node.input",
                        )
                        .hint(HINT),
                    ),
                },
                other => {
                    let mut d = Diagnostic::at(key.pos, format!("unknown reroute key '{other}'"));
                    d.hint = Some(
                        match crate::diagnostic::closest(other, ["at", "from", "to"]) {
                            Some(s) => format!("did you mean '{s}'? The keys are at, from, to"),
                            None => "the keys are at, from, to".into(),
                        },
                    );
                    errors.push(d);
                }
            }
        }
        match (at, from) {
            (Some(at), Some(from)) => {
                wf.reroutes.insert(id.text, Reroute { at, from, to });
            }
            _ if errors.len() > before => {}
            _ => errors.push(
                Diagnostic::at(
                    pos,
                    format!("reroute point '{}' needs `at` and `from`", id.text),
                )
                .hint(HINT),
            ),
        }
    }
}

/// `appearance:`: node id -> `{title: T, color: "#rrggbb", collapsed: true}`, each key optional.
fn read_appearance(value: Yaml, wf: &mut Workflow, errors: &mut Vec<Diagnostic>) {
    const HINT: &str =
        "write one line a node: `sample: {title: Main sampler, color: \"#3f789e\", collapsed: true}`";
    let entries = match value {
        Yaml::Map { entries, .. } => entries,
        Yaml::Scalar {
            ref text,
            quoted: false,
            ..
        } if text.is_empty() => return,
        other => {
            errors.push(
                Diagnostic::at(
                    other.pos(),
                    "`appearance` must map node ids to how they are drawn",
                )
                .hint(HINT),
            );
            return;
        }
    };
    for (id, item) in entries {
        let Yaml::Map {
            entries: fields, ..
        } = item
        else {
            errors.push(
                Diagnostic::at(
                    item.pos(),
                    format!("appearance of '{}' must be a mapping", id.text),
                )
                .node(&id.text)
                .hint(HINT),
            );
            continue;
        };
        let mut look = Appearance::default();
        for (key, v) in fields {
            match (key.text.as_str(), &v) {
                ("title", Yaml::Scalar { text, .. }) => look.title = Some(text.clone()),
                ("color", Yaml::Scalar { text, .. }) => look.color = Some(text.clone()),
                (
                    "collapsed",
                    Yaml::Scalar {
                        text,
                        quoted: false,
                        ..
                    },
                ) if matches!(type_plain_scalar(text), PlainScalar::Bool(_)) => {
                    look.collapsed = matches!(type_plain_scalar(text), PlainScalar::Bool(true));
                }
                ("collapsed", _) => errors.push(
                    Diagnostic::at(v.pos(), "`collapsed` must be true or false")
                        .node(&id.text)
                        .hint(HINT),
                ),
                ("title" | "color", _) => errors.push(
                    Diagnostic::at(v.pos(), format!("`{}` must be a single value", key.text))
                        .node(&id.text)
                        .hint(HINT),
                ),
                (other, _) => {
                    let mut d =
                        Diagnostic::at(key.pos, format!("unknown appearance key '{other}'"))
                            .node(&id.text);
                    d.hint = Some(
                        match crate::diagnostic::closest(other, ["title", "color", "collapsed"]) {
                            Some(s) => {
                                format!("did you mean '{s}'? The keys are title, color, collapsed")
                            }
                            None => "the keys are title, color, collapsed".into(),
                        },
                    );
                    errors.push(d);
                }
            }
        }
        wf.appearance.insert(id.text, look);
    }
}

/// `sweep:`: `mode: grid|zip` and `axes:` mapping `node.input` to a list of values or a range
/// text; the values are read like node inputs (checked against the input's type by
/// `sweep::plan`).
fn read_sweep(key_pos: Pos, value: Yaml, errors: &mut Vec<Diagnostic>) -> Option<Sweep> {
    let Yaml::Map { entries, .. } = value else {
        errors.push(
            Diagnostic::at(
                value.pos(),
                "`sweep` must be a mapping with `axes:` (and `mode:`)",
            )
            .hint("e.g. `sweep: {axes: {sample.seed: [1, 2, 3]}}`"),
        );
        return None;
    };
    let mut sweep = Sweep {
        pos: Some(key_pos),
        ..Sweep::default()
    };
    for (key, field) in entries {
        match key.text.as_str() {
            "mode" => match &field {
                Yaml::Scalar { text, .. } if SweepMode::from_name(text).is_some() => {
                    sweep.mode = SweepMode::from_name(text).unwrap_or_default();
                }
                other => errors.push(
                    Diagnostic::at(other.pos(), "sweep `mode` must be grid or zip")
                        .hint("grid: the cross product of the axes (default); zip: axes of equal length taken together"),
                ),
            },
            "axes" => {
                let Yaml::Map { entries: axes, .. } = field else {
                    errors.push(
                        Diagnostic::at(field.pos(), "sweep `axes` must map NODE.INPUT to values")
                            .hint("e.g. `sample.seed: [1, 2, 3]` or `sample.cfg: 4..8 step 2`"),
                    );
                    continue;
                };
                for (name, values) in axes {
                    let values = match values {
                        Yaml::Seq { items, .. } => {
                            let mut list = Vec::new();
                            for item in &items {
                                match read_input_value(item) {
                                    Ok(InputValue::Constant(c)) => list.push((c, Some(item.pos()))),
                                    Ok(InputValue::Link(_)) => errors.push(
                                        Diagnostic::at(item.pos(), format!("sweep axis '{}': a value, not a link", name.text))
                                            .hint("write a literal '$' as $$"),
                                    ),
                                    Err(d) => errors.push(Diagnostic {
                                        message: format!("sweep axis '{}': {}", name.text, d.message),
                                        ..d
                                    }),
                                }
                            }
                            AxisValues::List(list)
                        }
                        Yaml::Scalar { text, pos, .. } => AxisValues::Range(text, Some(pos)),
                        other => {
                            errors.push(
                                Diagnostic::at(other.pos(), format!("sweep axis '{}' must be a list of values or a range", name.text))
                                    .hint("e.g. [1, 2, 3] or 4..8 step 2"),
                            );
                            continue;
                        }
                    };
                    sweep.axes.insert(
                        name.text,
                        Axis {
                            values,
                            pos: Some(name.pos),
                        },
                    );
                }
            }
            other => errors.push(
                Diagnostic::at(key.pos, format!("unknown field '{other}' of `sweep`"))
                    .hint("a sweep has `mode:` (grid or zip) and `axes:`"),
            ),
        }
    }
    Some(sweep)
}

/// `inputs:` of a subgraph: name -> {type, default, doc, optional, min, max, choices}.
fn read_exposed_inputs(
    value: Yaml,
    errors: &mut Vec<Diagnostic>,
) -> IndexMap<String, ExposedInput> {
    let mut inputs = IndexMap::new();
    let Yaml::Map { entries, .. } = value else {
        errors.push(
            Diagnostic::at(
                value.pos(),
                "`inputs` must map input names to their declarations",
            )
            .hint(
                "e.g. `inputs: {prompt: {type: string, default: a red circle, doc: what to draw}}`",
            ),
        );
        return inputs;
    };
    for (name, declaration) in entries {
        let Yaml::Map {
            entries: fields,
            pos,
        } = declaration
        else {
            errors.push(
                Diagnostic::at(
                    declaration.pos(),
                    format!("input '{}' must be a mapping with a `type:`", name.text),
                )
                .input(&name.text),
            );
            continue;
        };
        let mut ty = None;
        let mut input = ExposedInput {
            ty: ValueType::String,
            default: None,
            min: None,
            max: None,
            choices: Vec::new(),
            doc: String::new(),
            optional: false,
            pos: Some(name.pos),
        };
        for (key, field) in fields {
            let scalar = match &field {
                Yaml::Scalar { text, .. } => Some(text.clone()),
                _ => None,
            };
            let number = scalar.as_deref().and_then(|t| match type_plain_scalar(t) {
                PlainScalar::Int(i) => Some(i as f64),
                PlainScalar::UInt(u) => Some(u as f64),
                PlainScalar::Float(f) => Some(f),
                _ => None,
            });
            match (key.text.as_str(), &field) {
                ("type", _) => match scalar.as_deref().and_then(ValueType::from_name) {
                    Some(t) => ty = Some(t),
                    None => errors.push(
                        Diagnostic::at(
                            field.pos(),
                            format!(
                                "unknown value type {}",
                                scalar
                                    .as_deref()
                                    .map(|s| format!("'{s}'"))
                                    .unwrap_or_else(|| field.kind_name().into())
                            ),
                        )
                        .input(&name.text)
                        .hint(format!(
                            "one of: {}",
                            ValueType::ALL.map(ValueType::name).join(", ")
                        )),
                    ),
                },
                ("default", _) => match read_input_value(&field) {
                    Ok(InputValue::Constant(c)) => input.default = Some(c),
                    Ok(InputValue::Link(_)) => errors.push(
                        Diagnostic::at(field.pos(), "a default must be a constant, not a link")
                            .input(&name.text),
                    ),
                    Err(d) => errors.push(d.input(&name.text)),
                },
                ("doc", _) => input.doc = scalar.unwrap_or_default(),
                ("optional", _) => input.optional = scalar.as_deref() == Some("true"),
                ("min", _) if number.is_some() => input.min = number,
                ("max", _) if number.is_some() => input.max = number,
                ("choices", Yaml::Seq { items, .. }) => {
                    input.choices = items
                        .iter()
                        .filter_map(|i| match i {
                            Yaml::Scalar { text, .. } => Some(text.clone()),
                            _ => None,
                        })
                        .collect();
                }
                (other, _) => errors.push(
                    Diagnostic::at(
                        key.pos,
                        format!("unknown field '{other}' of input '{}'", name.text),
                    )
                    .input(&name.text)
                    .hint("an input declares type, default, doc, optional, min, max, choices"),
                ),
            }
        }
        match ty {
            Some(t) => input.ty = t,
            None => {
                errors.push(
                    Diagnostic::at(pos, format!("input '{}' has no `type:`", name.text))
                        .input(&name.text),
                );
                continue;
            }
        }
        inputs.insert(name.text, input);
    }
    inputs
}

/// `outputs:` of a subgraph: name -> `$node.output`, or {from: $node.output, doc: ...}.
fn read_exposed_outputs(
    value: Yaml,
    errors: &mut Vec<Diagnostic>,
) -> IndexMap<String, ExposedOutput> {
    let mut outputs = IndexMap::new();
    let Yaml::Map { entries, .. } = value else {
        errors.push(
            Diagnostic::at(
                value.pos(),
                "`outputs` must map output names to $node.output links",
            )
            .hint("e.g. `outputs: {image: $decode.image}`"),
        );
        return outputs;
    };
    for (name, declaration) in entries {
        let (link_value, doc) = match declaration {
            Yaml::Map {
                entries: fields,
                pos,
            } => {
                let mut from = None;
                let mut doc = String::new();
                for (key, field) in fields {
                    match (key.text.as_str(), &field) {
                        ("from", _) => from = Some(field),
                        ("doc", Yaml::Scalar { text, .. }) => doc = text.clone(),
                        (other, _) => errors.push(
                            Diagnostic::at(
                                key.pos,
                                format!("unknown field '{other}' of output '{}'", name.text),
                            )
                            .hint("an output declares from and doc"),
                        ),
                    }
                }
                match from {
                    Some(f) => (f, doc),
                    None => {
                        errors.push(Diagnostic::at(
                            pos,
                            format!("output '{}' has no `from: $node.output`", name.text),
                        ));
                        continue;
                    }
                }
            }
            other => (other, String::new()),
        };
        match read_input_value(&link_value) {
            Ok(InputValue::Link(from)) => {
                outputs.insert(
                    name.text,
                    ExposedOutput {
                        from,
                        doc,
                        pos: Some(name.pos),
                    },
                );
            }
            Ok(InputValue::Constant(_)) => errors.push(Diagnostic::at(
                link_value.pos(),
                format!("output '{}' must be a link $node.output", name.text),
            )),
            Err(d) => errors.push(d),
        }
    }
    outputs
}
