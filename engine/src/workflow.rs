//! The workflow file: `weft: 1`, `nodes:` (id -> type + named inputs), `layout:` (editor
//! positions). A link is a string `$node.output`; a literal string that starts with `$` is
//! written `$$...`. JSON is read by the same reader (it is YAML), so the CLI, the browser and
//! PNG metadata share one format. Every node and input keeps its line:column.
use indexmap::IndexMap;

use crate::diagnostic::Diagnostic;
use crate::value::Constant;
use crate::yaml::{self, type_plain_scalar, PlainScalar, Pos, Yaml};

pub const FORMAT_VERSION: i64 = 1;

/// A link to another node's output.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Link {
    pub node: String,
    pub output: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InputValue {
    Constant(Constant),
    Link(Link),
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputEntry {
    pub value: InputValue,
    /// Where the value stands in the source (line:column); `None` for workflows built in code.
    pub pos: Option<Pos>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeEntry {
    pub type_name: String,
    pub inputs: IndexMap<String, InputEntry>,
    pub pos: Option<Pos>,
    pub type_pos: Option<Pos>,
}

impl NodeEntry {
    pub fn new(type_name: impl Into<String>) -> Self {
        Self {
            type_name: type_name.into(),
            inputs: IndexMap::new(),
            pos: None,
            type_pos: None,
        }
    }

    /// Builder: sets a constant input.
    pub fn with(mut self, name: &str, value: impl Into<Constant>) -> Self {
        self.inputs.insert(
            name.to_string(),
            InputEntry {
                value: InputValue::Constant(value.into()),
                pos: None,
            },
        );
        self
    }

    /// Builder: links an input to `node.output`.
    pub fn link(mut self, name: &str, node: &str, output: &str) -> Self {
        self.inputs.insert(
            name.to_string(),
            InputEntry {
                value: InputValue::Link(Link {
                    node: node.to_string(),
                    output: output.to_string(),
                }),
                pos: None,
            },
        );
        self
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Workflow {
    pub version: i64,
    pub nodes: IndexMap<String, NodeEntry>,
    pub layout: IndexMap<String, [f64; 2]>,
    pub version_pos: Option<Pos>,
    pub nodes_pos: Option<Pos>,
}

impl Workflow {
    pub fn new() -> Self {
        Self {
            version: FORMAT_VERSION,
            ..Self::default()
        }
    }

    pub fn add(&mut self, id: &str, node: NodeEntry) -> &mut Self {
        self.nodes.insert(id.to_string(), node);
        self
    }

    /// Reads a workflow from YAML or JSON bytes. Structural problems are all reported at once;
    /// semantic checks (types, links, cycles) are `validate`'s.
    pub fn parse(bytes: &[u8]) -> Result<Workflow, Vec<Diagnostic>> {
        let root = match yaml::parse_bytes(bytes) {
            Ok(Some(root)) => root,
            Ok(None) => {
                return Err(vec![Diagnostic::at(Pos::START, "the file is empty")
                    .hint("a workflow starts with `weft: 1` and a `nodes:` mapping; see workflows/txt2img.yaml")])
            }
            Err(e) => {
                let mut d = Diagnostic::at(e.pos, e.message);
                d.hint = e.hint;
                return Err(vec![d]);
            }
        };
        from_tree(root)
    }

    pub fn parse_str(text: &str) -> Result<Workflow, Vec<Diagnostic>> {
        Self::parse(text.as_bytes())
    }

    /// Writes the canonical YAML form: node ids, input order and values kept; one layout line a node.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        out.push_str("# yaml-language-server: $schema=schema.json\n");
        out.push_str(&format!("weft: {}\nnodes:\n", self.version));
        for (id, node) in &self.nodes {
            out.push_str(&format!(
                "  {}:\n    type: {}\n",
                yaml_key(id),
                yaml_string(&node.type_name)
            ));
            for (name, input) in &node.inputs {
                out.push_str(&format!(
                    "    {}: {}\n",
                    yaml_key(name),
                    yaml_value(&input.value)
                ));
            }
        }
        if !self.layout.is_empty() {
            out.push_str("layout:\n");
            for (id, [x, y]) in &self.layout {
                out.push_str(&format!(
                    "  {}: [{}, {}]\n",
                    yaml_key(id),
                    fmt_number(*x),
                    fmt_number(*y)
                ));
            }
        }
        out
    }

    /// The JSON form (same structure as the YAML one).
    pub fn to_json(&self) -> serde_json::Value {
        let mut nodes = serde_json::Map::new();
        for (id, node) in &self.nodes {
            let mut obj = serde_json::Map::new();
            obj.insert("type".into(), node.type_name.clone().into());
            for (name, input) in &node.inputs {
                let v = match &input.value {
                    InputValue::Link(l) => {
                        serde_json::Value::String(format!("${}.{}", l.node, l.output))
                    }
                    InputValue::Constant(Constant::String(s)) => {
                        serde_json::Value::String(escape_dollar(s))
                    }
                    InputValue::Constant(c) => {
                        serde_json::to_value(c).unwrap_or(serde_json::Value::Null)
                    }
                };
                obj.insert(name.clone(), v);
            }
            nodes.insert(id.clone(), obj.into());
        }
        let mut root = serde_json::Map::new();
        root.insert("weft".into(), self.version.into());
        root.insert("nodes".into(), nodes.into());
        if !self.layout.is_empty() {
            let layout: serde_json::Map<String, serde_json::Value> = self
                .layout
                .iter()
                .map(|(id, p)| (id.clone(), serde_json::json!(p)))
                .collect();
            root.insert("layout".into(), layout.into());
        }
        root.into()
    }
}

fn escape_dollar(s: &str) -> String {
    if s.starts_with('$') {
        format!("${s}")
    } else {
        s.to_string()
    }
}

fn fmt_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn yaml_key(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

fn is_plain_safe(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && matches!(type_plain_scalar(s), PlainScalar::String(_))
}

fn yaml_string(s: &str) -> String {
    let plain_ok = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        && !s.ends_with(' ')
        && s.chars()
            .all(|c| c.is_alphanumeric() || " _-.,/()+'".contains(c))
        && matches!(type_plain_scalar(s), PlainScalar::String(_));
    if plain_ok {
        s.to_string()
    } else {
        // A JSON string is a valid YAML double-quoted scalar.
        serde_json::to_string(s).unwrap_or_default()
    }
}

fn yaml_value(v: &InputValue) -> String {
    match v {
        InputValue::Link(l) => format!("${}.{}", l.node, l.output),
        InputValue::Constant(Constant::String(s)) => yaml_string(&escape_dollar(s)),
        InputValue::Constant(Constant::Float(f)) if f.is_nan() => ".nan".into(),
        InputValue::Constant(Constant::Float(f)) if f.is_infinite() => {
            if *f > 0.0 { ".inf" } else { "-.inf" }.into()
        }
        InputValue::Constant(Constant::Float(f)) => format!("{f:?}"),
        InputValue::Constant(c) => c.to_string(),
    }
}

const TOP_LEVEL_KEYS: [&str; 3] = ["weft", "nodes", "layout"];

fn from_tree(root: Yaml) -> Result<Workflow, Vec<Diagnostic>> {
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
            other => {
                let mut d = Diagnostic::at(key.pos, format!("unknown top-level key '{other}'"));
                d.hint = Some(match crate::diagnostic::closest(other, TOP_LEVEL_KEYS.iter().copied()) {
                    Some(s) => format!("did you mean '{s}'? The top-level keys are weft, nodes, layout"),
                    None => "the top-level keys are weft, nodes, layout; node inputs belong inside their node".into(),
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
        errors.push(
            Diagnostic::at(id_pos, format!("invalid node id '{id}'"))
                .node(id)
                .hint("node ids use letters, digits, '_' and '-' (they appear in links as $id.output)"),
        );
    }
    let mut entry = NodeEntry {
        type_name: String::new(),
        inputs: IndexMap::new(),
        pos: Some(id_pos),
        type_pos: None,
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

fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
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
        return match rest.split_once('.') {
            Some((node, output)) if !node.is_empty() && !output.is_empty() => {
                Ok(InputValue::Link(Link {
                    node: node.to_string(),
                    output: output.to_string(),
                }))
            }
            _ => Err(
                Diagnostic::at(*pos, format!("malformed link '{text}'")).hint(
                    "a link is written $node.output, e.g. $model.unet; write $$ for a literal '$'",
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

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# yaml-language-server: $schema=schema.json
weft: 1
nodes:
  noise:
    type: RandomNoise
    seed: 42
    width: 64
    strength: 0.5
    label: \"007\"
    note: \"$$5 off\"
    flag: true
  up:
    type: LatentUpscale
    latent: $noise.latent
    method: nearest-exact
layout:
  noise: [0, 0]
  up: [320, 0.5]
";

    #[test]
    fn round_trip_keeps_ids_order_and_values() {
        let wf = Workflow::parse_str(SAMPLE).unwrap();
        assert_eq!(wf.nodes.keys().collect::<Vec<_>>(), ["noise", "up"]);
        let noise = &wf.nodes["noise"];
        assert_eq!(
            noise.inputs["seed"].value,
            InputValue::Constant(Constant::Int(42))
        );
        assert_eq!(
            noise.inputs["strength"].value,
            InputValue::Constant(Constant::Float(0.5))
        );
        assert_eq!(
            noise.inputs["label"].value,
            InputValue::Constant(Constant::String("007".into()))
        );
        assert_eq!(
            noise.inputs["note"].value,
            InputValue::Constant(Constant::String("$5 off".into()))
        );
        assert_eq!(
            wf.nodes["up"].inputs["latent"].value,
            InputValue::Link(Link {
                node: "noise".into(),
                output: "latent".into()
            })
        );
        assert_eq!(noise.inputs["seed"].pos, Some(Pos { line: 6, col: 11 }));
        let written = wf.to_yaml();
        assert_eq!(written, SAMPLE);
        let again = Workflow::parse_str(&written).unwrap();
        assert_eq!(again.to_yaml(), written);
        let from_json = Workflow::parse_str(&wf.to_json().to_string()).unwrap();
        assert_eq!(from_json.to_yaml(), written);
    }

    #[test]
    fn structural_errors_are_all_reported() {
        let errs = Workflow::parse_str(
            "weft: 1\nnodes:\n  a: 3\n  b:\n    seed: 1\n  c:\n    type: X\n    v: [1]\nextra: 1\n",
        )
        .unwrap_err();
        let lines: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        assert_eq!(errs.len(), 4, "{lines:#?}");
        assert!(lines
            .iter()
            .any(|l| l.contains("3:6") && l.contains("mapping")));
        assert!(lines.iter().any(|l| l.contains("no `type:`")));
        assert!(lines.iter().any(|l| l.contains("8:8")));
        assert!(lines
            .iter()
            .any(|l| l.contains("unknown top-level key 'extra'")));
    }
}
