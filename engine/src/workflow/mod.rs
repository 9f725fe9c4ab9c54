//! The workflow file: `weft: 1`, `nodes:` (id -> type + named inputs), `layout:` (editor
//! positions). A link is a string `$node.output`; a literal string that starts with `$` is
//! written `$$...`. JSON is read by the same reader (it is YAML), so the CLI, the browser and
//! PNG metadata share one format. Every node and input keeps its line:column. The data model
//! is here; `read` builds it from the located YAML tree, `write` gives its canonical YAML and
//! JSON forms.
use indexmap::IndexMap;

use crate::diagnostic::Diagnostic;
use crate::value::Constant;
use crate::yaml::{self, Pos};

mod comments;
mod read;
mod write;

pub use comments::carry_comments;
pub use write::sweep_json;

pub const FORMAT_VERSION: i64 = 1;

/// A link to another node's output.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Link {
    pub node: String,
    pub output: String,
}

impl Link {
    /// The link written `node.output` (after its `$`), when both names are well formed: a
    /// node id, and an output name of letters, digits and `_`.
    pub fn parse(after_dollar: &str) -> Option<Link> {
        let (node, output) = after_dollar.split_once('.')?;
        let output_ok =
            !output.is_empty() && output.chars().all(|c| c.is_alphanumeric() || c == '_');
        (is_valid_id(node) && output_ok).then(|| Link {
            node: node.to_string(),
            output: output.to_string(),
        })
    }
}

/// The longest node id, in characters. Ids are YAML keys, and a YAML reader takes a plain key
/// of at most 1024 characters: a longer one would be saved into a file that does not read back.
pub const MAX_ID_CHARS: usize = 128;

/// A node id: 1 to [`MAX_ID_CHARS`] letters, digits, `_` and `-`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.chars().nth(MAX_ID_CHARS).is_none()
        && id
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
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
    /// The file this node was written in, when it is not the workflow's own file (a node of
    /// a subgraph, inlined): diagnostics about it name that file.
    pub file: Option<std::sync::Arc<str>>,
    pub inputs: IndexMap<String, InputEntry>,
    pub pos: Option<Pos>,
    pub type_pos: Option<Pos>,
    /// `bypass: true` / `mute: true` in the file: how `modes::apply_modes` rewrites the node
    /// away before planning (ComfyUI's node modes 4 and 2).
    pub mode: NodeMode,
}

/// Whether a node runs, passes its inputs through, or is left out with what only it feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeMode {
    #[default]
    Normal,
    /// `bypass: true`: each output is its first input of the same type (ComfyUI's mode 4).
    Bypass,
    /// `mute: true`: the node does not run, nor what needs it (ComfyUI's mode 2).
    Mute,
}

impl NodeMode {
    /// The node key that sets this mode in a file (`None` for a node that runs).
    pub fn key(self) -> Option<&'static str> {
        match self {
            NodeMode::Normal => None,
            NodeMode::Bypass => Some("bypass"),
            NodeMode::Mute => Some("mute"),
        }
    }
}

impl NodeEntry {
    pub fn new(type_name: impl Into<String>) -> Self {
        Self {
            type_name: type_name.into(),
            file: None,
            inputs: IndexMap::new(),
            pos: None,
            type_pos: None,
            mode: NodeMode::Normal,
        }
    }

    /// Builder: sets the node's mode (bypass, mute).
    pub fn mode(mut self, mode: NodeMode) -> Self {
        self.mode = mode;
        self
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
    /// The editor's groups (`groups:` beside `layout`): boxes drawn behind the nodes; like the
    /// layout they change nothing a run computes.
    pub groups: Vec<Group>,
    /// The editor's reroute points (`reroutes:` beside `layout`): dots a link is drawn through;
    /// like the layout they change nothing a run computes (nor any cache key).
    pub reroutes: IndexMap<String, Reroute>,
    /// How the editor draws each node (`appearance:` beside `layout`): a title, a colour,
    /// collapsed; like the layout it changes nothing a run computes (nor any cache key).
    pub appearance: IndexMap<String, Appearance>,
    pub version_pos: Option<Pos>,
    pub nodes_pos: Option<Pos>,
    /// What the file exposes when used as a node in another workflow (a subgraph): its
    /// `inputs:` and `outputs:` sections. Inside, `$inputs.NAME` stands for an exposed input.
    pub interface: Option<Interface>,
    /// The `sweep:` section: axes of values that `sweep::plan` turns into one sweep-free
    /// workflow per cell before anything is planned.
    pub sweep: Option<crate::sweep::Sweep>,
}

/// A titled, coloured box in the editor; the nodes inside it move with it (ComfyUI's groups).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub title: String,
    /// A CSS colour (`#3f789e`), or none for the editor's default.
    pub color: Option<String>,
    /// x, y, width, height in canvas units.
    pub bounds: [f64; 4],
}

/// A reroute point (ComfyUI's Reroute node): a dot at `at` that the links from `from` into each
/// of `to` are drawn through. Purely visual: the links themselves are the inputs' `$node.output`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reroute {
    pub at: [f64; 2],
    /// The output the links come from.
    pub from: Link,
    /// The inputs they go to, as (node, input).
    pub to: Vec<(String, String)>,
}

/// How the editor draws one node: a title shown instead of its id, a header colour, and
/// whether it is collapsed to its header (ComfyUI's node title, color and collapsed flag).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Appearance {
    pub title: Option<String>,
    /// A CSS colour (`#3f789e`).
    pub color: Option<String>,
    pub collapsed: bool,
}

impl Appearance {
    /// Nothing to write: the editor's defaults.
    pub fn is_default(&self) -> bool {
        self.title.is_none() && self.color.is_none() && !self.collapsed
    }
}

/// The node id inner nodes use to reach a subgraph's exposed inputs: `$inputs.prompt`.
pub const INPUTS_NODE: &str = "inputs";

/// A subgraph's exposed inputs and outputs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Interface {
    pub inputs: IndexMap<String, ExposedInput>,
    pub outputs: IndexMap<String, ExposedOutput>,
}

/// One exposed input: declared like a node input (type, default, range, choices, doc).
#[derive(Debug, Clone, PartialEq)]
pub struct ExposedInput {
    pub ty: crate::value::ValueType,
    pub default: Option<Constant>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub choices: Vec<String>,
    pub doc: String,
    pub optional: bool,
    pub pos: Option<Pos>,
}

/// One exposed output: an inner node's output.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposedOutput {
    pub from: Link,
    pub doc: String,
    pub pos: Option<Pos>,
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
        Self::parse_tree(bytes).map_err(|errors| {
            errors
                .into_iter()
                .map(|d| match d.code {
                    Some(_) => d,
                    None => d.code(crate::diagnostic::Code::Syntax),
                })
                .collect()
        })
    }

    fn parse_tree(bytes: &[u8]) -> Result<Workflow, Vec<Diagnostic>> {
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
        read::from_tree(root)
    }

    pub fn parse_str(text: &str) -> Result<Workflow, Vec<Diagnostic>> {
        Self::parse(text.as_bytes())
    }

    /// Drops from the reroute points every input that is no longer linked to the point's
    /// `from` (or that an earlier point already routes), then the points left with no input.
    /// Returns a warning for each drop: a point is only drawing, so a stale one is no error.
    pub fn prune_reroutes(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut routed = std::collections::HashSet::new();
        let nodes = &self.nodes;
        self.reroutes.retain(|id, point| {
            point.to.retain(|(node, input)| {
                let linked = nodes
                    .get(node)
                    .and_then(|n| n.inputs.get(input))
                    .is_some_and(|i| i.value == InputValue::Link(point.from.clone()));
                let first = linked && routed.insert((node.clone(), input.clone()));
                if !linked {
                    warnings.push(format!(
                        "reroute point '{id}': {node}.{input} is not linked to {}.{}; left out",
                        point.from.node, point.from.output
                    ));
                } else if !first {
                    warnings.push(format!(
                        "reroute point '{id}': {node}.{input} goes through another point already; left out"
                    ));
                }
                first
            });
            if point.to.is_empty() {
                warnings.push(format!(
                    "reroute point '{id}' routes no link any more; dropped"
                ));
            }
            !point.to.is_empty()
        });
        warnings
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

    const WITH_MODES_AND_GROUPS: &str = "# yaml-language-server: $schema=schema.json
weft: 1
nodes:
  up:
    type: LatentUpscale
    bypass: true
    latent: $noise.latent
  save:
    type: SaveImage
    mute: true
    image: $up.image
layout:
  up: [0, 0]
groups:
  - {title: \"Upscale, then save\", color: \"#3f789e\", box: [-20, -50, 640.5, 300]}
  - {title: \"\", box: [0, 0, 10, 10]}
";

    #[test]
    fn modes_and_groups_round_trip_in_yaml_and_json() {
        let wf = Workflow::parse_str(WITH_MODES_AND_GROUPS).unwrap();
        assert_eq!(wf.nodes["up"].mode, NodeMode::Bypass);
        assert_eq!(wf.nodes["save"].mode, NodeMode::Mute);
        assert!(!wf.nodes["up"].inputs.contains_key("bypass"));
        assert_eq!(
            wf.groups[0],
            Group {
                title: "Upscale, then save".into(),
                color: Some("#3f789e".into()),
                bounds: [-20.0, -50.0, 640.5, 300.0],
            }
        );
        assert_eq!(wf.to_yaml(), WITH_MODES_AND_GROUPS);
        let from_json = Workflow::parse_str(&wf.to_json().to_string()).unwrap();
        assert_eq!(from_json.to_yaml(), WITH_MODES_AND_GROUPS);
    }

    #[test]
    fn reroutes_round_trip_in_yaml_and_json_and_stale_ones_are_pruned() {
        let text = format!(
            "{SAMPLE}reroutes:\n  r1: {{at: [10, -20.5], from: noise.latent, to: [up.latent]}}\n  \"gone\": {{at: [0, 0], from: noise.latent, to: [up.method, nowhere.latent]}}\n"
        );
        let wf = Workflow::parse_str(&text).expect("parses");
        assert_eq!(wf.reroutes.len(), 2);
        let r1 = &wf.reroutes["r1"];
        assert_eq!(r1.at, [10.0, -20.5]);
        assert_eq!(
            r1.from,
            Link {
                node: "noise".into(),
                output: "latent".into()
            }
        );
        assert_eq!(r1.to, vec![("up".to_string(), "latent".to_string())]);
        // Byte-stable: the canonical text reads back to itself.
        let yaml = wf.to_yaml();
        assert!(
            yaml.contains(
                "reroutes:\n  r1: {at: [10, -20.5], from: noise.latent, to: [up.latent]}\n"
            ),
            "{yaml}"
        );
        assert_eq!(Workflow::parse_str(&yaml).unwrap().to_yaml(), yaml);
        let json = serde_json::to_string(&wf.to_json()).unwrap();
        assert_eq!(Workflow::parse_str(&json).unwrap().to_yaml(), yaml);

        let mut pruned = wf.clone();
        let warnings = pruned.prune_reroutes();
        assert_eq!(pruned.reroutes.keys().collect::<Vec<_>>(), ["r1"]);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings[0].contains("up.method is not linked to noise.latent"),
            "{warnings:?}"
        );
        assert!(
            warnings[2].contains("'gone' routes no link"),
            "{warnings:?}"
        );
        // Nothing else of the workflow changes.
        pruned.reroutes = wf.reroutes.clone();
        assert_eq!(pruned, wf);
    }

    #[test]
    fn malformed_reroutes_are_located() {
        let errors = Workflow::parse_str(&format!(
            "{SAMPLE}reroutes:\n  a: {{at: [1], from: noise.latent, to: [up.latent]}}\n  b: {{at: [1, 2], from: noise, to: up.latent}}\n  c: {{at: [1, 2], form: noise.latent}}\n"
        ))
        .unwrap_err();
        let messages: Vec<_> = errors.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "a reroute point's `at` must be [x, y]",
                "a reroute point's `from` must be node.output",
                "a reroute point's `to` must be a list of node.input",
                "unknown reroute key 'form'",
            ],
            "{errors:?}"
        );
        assert_eq!(errors[0].pos.unwrap().line, 20);
        assert!(errors[3]
            .hint
            .as_deref()
            .unwrap()
            .contains("did you mean 'from'"));
    }

    #[test]
    fn bad_modes_and_groups_are_located() {
        let errs = Workflow::parse_str(
            "weft: 1\nnodes:\n  a:\n    type: X\n    bypass: yes please\n  b:\n    type: X\n    bypass: true\n    mute: true\ngroups:\n  - {title: T, box: [1, 2]}\n  - {title: U}\n",
        )
        .unwrap_err();
        let lines: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        assert_eq!(errs.len(), 4, "{lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("5:13") && l.contains("true or false")),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("both bypassed and muted")),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("11:21") && l.contains("[x, y, width, height]")),
            "{lines:#?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("needs a box")),
            "{lines:#?}"
        );
    }

    const WITH_APPEARANCE: &str = "# yaml-language-server: $schema=schema.json
weft: 1
nodes:
  up:
    type: LatentUpscale
  save:
    type: SaveImage
    image: $up.image
layout:
  up: [0, 0]
appearance:
  up: {title: \"Upscale, then: save\", color: \"#3f789e\", collapsed: true}
  save: {color: \"#335533\"}
";

    #[test]
    fn appearance_round_trips_in_yaml_and_json() {
        let wf = Workflow::parse_str(WITH_APPEARANCE).unwrap();
        assert_eq!(
            wf.appearance["up"],
            Appearance {
                title: Some("Upscale, then: save".into()),
                color: Some("#3f789e".into()),
                collapsed: true,
            }
        );
        assert_eq!(wf.appearance["save"].title, None);
        assert!(!wf.appearance["save"].collapsed);
        assert_eq!(wf.to_yaml(), WITH_APPEARANCE);
        let json = wf.to_json();
        assert_eq!(json["appearance"]["up"]["collapsed"], true);
        let from_json = Workflow::parse_str(&json.to_string()).unwrap();
        assert_eq!(from_json.to_yaml(), WITH_APPEARANCE);
        // A node drawn as the editor's default writes nothing.
        let mut plain = wf.clone();
        plain.appearance.insert("up".into(), Appearance::default());
        plain.appearance.shift_remove("save");
        assert!(
            !plain.to_yaml().contains("appearance"),
            "{}",
            plain.to_yaml()
        );
        assert!(plain.to_json().get("appearance").is_none());
    }

    #[test]
    fn bad_appearance_is_located() {
        let errs = Workflow::parse_str(
            "weft: 1\nnodes:\n  a:\n    type: X\nappearance:\n  a: {titel: T, collapsed: maybe}\n  b: red\n",
        )
        .unwrap_err();
        let lines: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        assert_eq!(errs.len(), 3, "{lines:#?}");
        assert!(
            lines.iter().any(|l| l.contains("6:7")
                && l.contains("'titel'")
                && l.contains("did you mean 'title'")),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("6:28") && l.contains("`collapsed` must be true or false")),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("7:6") && l.contains("appearance of 'b' must be a mapping")),
            "{lines:#?}"
        );
        let errs = Workflow::parse_str("weft: 1\nnodes: {}\nappearence: {}\n").unwrap_err();
        assert!(
            errs[0].to_string().contains("did you mean 'appearance'"),
            "{}",
            errs[0]
        );
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

    #[test]
    fn node_ids_are_limited_to_what_a_saved_file_reads_back() {
        let longest = "n".repeat(MAX_ID_CHARS);
        let doc = format!("weft: 1\nnodes:\n  {longest}:\n    type: X\n");
        let written = Workflow::parse_str(&doc).unwrap().to_yaml();
        assert!(
            Workflow::parse_str(&written).is_ok(),
            "the longest id reads back"
        );

        let too_long = "n".repeat(100_000);
        let doc = serde_json::json!({"weft": 1, "nodes": {too_long.as_str(): {"type": "X"}}});
        let errs = Workflow::parse_str(&doc.to_string()).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("100000 characters"), "{}", errs[0]);
        assert!(
            errs[0].to_string().len() < 1024,
            "the diagnostic stays short"
        );
        assert!(errs[0].hint.as_deref().unwrap().contains("128"));
    }
}
