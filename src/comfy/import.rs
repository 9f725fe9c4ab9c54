//! ComfyUI workflow JSON, API format (`{"3": {"class_type": ..., "inputs": ...}}`) or UI format
//! (`nodes`, `links`, `widgets_values`), to a weft workflow. All problems are reported at once,
//! each located by ComfyUI node id and input; unknown class types come in one error.
use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;
use serde_json::Value as Json;
use weft_engine::workflow::{
    Appearance, Group, InputEntry, InputValue, Link, NodeEntry, NodeMode, Reroute, Workflow,
};
use weft_engine::{Constant, DiagnosticCode};
use weft_nodes::samplers::{SamplerKind, ScheduleKind};

use super::{
    comfy_type, supported_list, ComfyType, Issue, CHECKPOINT_DIR, LORA_DIR, UPSCALER_FILES,
};

/// Which of ComfyUI's two JSON forms a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Api,
    Ui,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Api => "API format",
            Format::Ui => "UI format",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// ComfyUI model file name -> weft model name (checkpoints and upscale models).
    pub models: Vec<(String, String)>,
    /// `--comfy-model '*=NAME'`: the weft model for a checkpoint that `models` does not name
    /// and that is not in this models folder (as `checkpoints/FILE` or `FILE`).
    pub missing_checkpoint: Option<(String, std::path::PathBuf)>,
    /// The folder LoadImage names are relative to (ComfyUI's `input/`).
    pub inputs_dir: String,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            models: Vec::new(),
            missing_checkpoint: None,
            inputs_dir: "input".into(),
        }
    }
}

#[derive(Debug)]
pub struct Imported {
    pub workflow: Workflow,
    pub format: Format,
    /// What was approximated or changed on the way (weft has no exact equivalent).
    pub notes: Vec<Issue>,
    /// ComfyUI node id -> weft node id.
    pub ids: Vec<(String, String)>,
    /// (ComfyUI node id, ComfyUI input name) -> (weft node id, weft input name), for each
    /// input that became a link: where a Reroute node's links end in weft's terms.
    pub linked_inputs: HashMap<(String, String), (String, String)>,
}

/// A node as ComfyUI's API format has it (the UI format is brought to this first).
#[derive(Debug, Clone)]
pub struct ComfyNode {
    pub id: String,
    pub class: String,
    pub inputs: Vec<(String, ComfyValue)>,
    pub pos: Option<[f64; 2]>,
    /// The title a user gave the node (API `_meta.title`, UI `title`).
    pub title: Option<String>,
    /// The UI format's node mode, kept for a type weft knows: muted (2) and bypassed (4)
    /// become `mute: true` / `bypass: true` (API prompts hold no such nodes).
    pub mode: NodeMode,
    /// The UI format's header colour (`color`) and `flags.collapsed`: kept in `appearance:`.
    pub color: Option<String>,
    pub collapsed: bool,
}

impl ComfyNode {
    fn get(&self, name: &str) -> Option<&ComfyValue> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ComfyValue {
    Link { node: String, slot: usize },
    Value(Json),
}

/// Converts a ComfyUI workflow (either form) to a weft workflow.
pub fn import(root: &Json, options: &ImportOptions) -> Result<Imported, Vec<Issue>> {
    let (nodes, format) = read(root)?;
    let nodes = inline_value_nodes(nodes);
    let mut imported = convert(&nodes, options)?;
    imported.format = format;
    if format == Format::Ui {
        imported.workflow.groups = ui_groups(root);
        imported.workflow.reroutes = ui_reroutes(root, &imported);
        // A Reroute whose links all ended in a dropped input (or another Reroute only) draws
        // nothing: leave it out quietly, as the Reroute nodes always were.
        imported.workflow.prune_reroutes();
    }
    Ok(imported)
}

/// The UI format's Reroute nodes as reroute points: each at its `pos`, routing the weft inputs
/// its output links reach directly (a chain of Reroutes keeps the last point before each input).
fn ui_reroutes(root: &Json, imported: &Imported) -> IndexMap<String, Reroute> {
    let empty = Vec::new();
    let list = root.get("nodes").and_then(Json::as_array).unwrap_or(&empty);
    // Link id -> (target node, target slot).
    let mut targets: HashMap<String, (String, usize)> = HashMap::new();
    for link in root.get("links").and_then(Json::as_array).unwrap_or(&empty) {
        let (id, to, slot) = match link {
            Json::Array(a) => (ui_id(a.first()), ui_id(a.get(3)), a.get(4)),
            Json::Object(o) => (
                ui_id(o.get("id")),
                ui_id(o.get("target_id")),
                o.get("target_slot"),
            ),
            _ => continue,
        };
        if let (Some(id), Some(to), Some(slot)) = (id, to, slot.and_then(Json::as_u64)) {
            targets.insert(id, (to, slot as usize));
        }
    }
    let by_id: HashMap<String, &Json> = list
        .iter()
        .filter_map(|n| ui_id(n.get("id")).map(|id| (id, n)))
        .collect();
    let mut reroutes = IndexMap::new();
    for n in list {
        if n.get("type").and_then(Json::as_str) != Some("Reroute") {
            continue;
        }
        let (Some(id), Some(at)) = (ui_id(n.get("id")), ui_pos(n.get("pos"))) else {
            continue;
        };
        let mut to = Vec::new();
        let out_links = n
            .get("outputs")
            .and_then(|o| o.get(0))
            .and_then(|o| o.get("links"))
            .and_then(Json::as_array)
            .unwrap_or(&empty);
        for link in out_links {
            let Some((target, slot)) = ui_id(Some(link)).and_then(|l| targets.get(&l)) else {
                continue;
            };
            let Some(input) = by_id
                .get(target)
                .and_then(|t| t.get("inputs"))
                .and_then(|i| i.get(*slot))
            else {
                continue;
            };
            let name = input
                .get("widget")
                .and_then(|w| w.get("name"))
                .or_else(|| input.get("name"))
                .and_then(Json::as_str)
                .unwrap_or("");
            if let Some(weft) = imported
                .linked_inputs
                .get(&(target.clone(), name.to_string()))
            {
                to.push(weft.clone());
            }
        }
        // Where the links come from: what the weft input the first of them reaches holds.
        let from = to.iter().find_map(|(node, input)| {
            match &imported.workflow.nodes.get(node)?.inputs.get(input)?.value {
                InputValue::Link(link) => Some(link.clone()),
                InputValue::Constant(_) => None,
            }
        });
        if let Some(from) = from {
            reroutes.insert(format!("reroute_{id}"), Reroute { at, from, to });
        }
    }
    reroutes
}

/// The UI format's groups (`{title, bounding: [x, y, w, h], color}`) as weft's; one without
/// four finite numbers for its box is left out.
fn ui_groups(root: &Json) -> Vec<Group> {
    let empty = Vec::new();
    root.get("groups")
        .and_then(Json::as_array)
        .unwrap_or(&empty)
        .iter()
        .filter_map(|g| {
            let b: Vec<f64> = g
                .get("bounding")?
                .as_array()?
                .iter()
                .map(Json::as_f64)
                .collect::<Option<_>>()?;
            let bounds: [f64; 4] = b.try_into().ok()?;
            Some(Group {
                title: g
                    .get("title")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string(),
                color: g.get("color").and_then(Json::as_str).map(str::to_string),
                bounds,
            })
        })
        .collect()
}

/// ComfyUI's primitive value nodes (PrimitiveInt, ...: real nodes, unlike the UI's
/// PrimitiveNode): their value is written into the inputs they feed, and they are dropped.
fn inline_value_nodes(nodes: Vec<ComfyNode>) -> Vec<ComfyNode> {
    let values: HashMap<String, Json> = nodes
        .iter()
        .filter(|n| super::VALUE_TYPES.contains(&n.class.as_str()))
        .filter_map(|n| match n.get("value") {
            Some(ComfyValue::Value(v)) => Some((n.id.clone(), v.clone())),
            _ => None,
        })
        .collect();
    if values.is_empty() {
        return nodes;
    }
    nodes
        .into_iter()
        .filter(|n| !values.contains_key(&n.id))
        .map(|mut n| {
            for (_, v) in &mut n.inputs {
                if let ComfyValue::Link { node, slot: 0 } = v {
                    if let Some(value) = values.get(node.as_str()) {
                        *v = ComfyValue::Value(value.clone());
                    }
                }
            }
            n
        })
        .collect()
}

/// Reads either form into API-format nodes.
pub fn read(root: &Json) -> Result<(Vec<ComfyNode>, Format), Vec<Issue>> {
    let Some(object) = root.as_object() else {
        return Err(vec![Issue::new(
            "expected a JSON object: a ComfyUI workflow (API or UI format)",
        )]);
    };
    if object.get("nodes").is_some_and(Json::is_array) {
        return read_ui(object).map(|n| (n, Format::Ui));
    }
    // The body of POST /prompt carries the API-format workflow under "prompt".
    let api = match object.get("prompt") {
        Some(Json::Object(p)) if !object.contains_key("class_type") => p,
        _ => object,
    };
    read_api(api).map(|n| (n, Format::Api))
}

fn read_api(object: &serde_json::Map<String, Json>) -> Result<Vec<ComfyNode>, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut nodes = Vec::new();
    for (id, node) in object {
        let class = node.get("class_type").and_then(Json::as_str);
        let Some(class) = class else {
            issues.push(
                Issue::new("not a ComfyUI node: it has no \"class_type\"")
                    .node(id, "?")
                    .hint("an API-format workflow maps node ids to {\"class_type\": ..., \"inputs\": {...}}; a UI-format one has \"nodes\" and \"links\""),
            );
            continue;
        };
        let mut inputs = Vec::new();
        match node.get("inputs") {
            None | Some(Json::Null) => {}
            Some(Json::Object(map)) => {
                for (name, value) in map {
                    inputs.push((name.clone(), api_value(value)));
                }
            }
            Some(_) => issues.push(Issue::new("\"inputs\" must be an object").node(id, class)),
        }
        nodes.push(ComfyNode {
            id: id.clone(),
            class: class.to_string(),
            inputs,
            pos: None,
            mode: NodeMode::Normal,
            color: None,
            collapsed: false,
            title: node
                .get("_meta")
                .and_then(|m| m.get("title"))
                .and_then(Json::as_str)
                .map(str::to_string),
        });
    }
    if issues.is_empty() {
        Ok(nodes)
    } else {
        Err(issues)
    }
}

/// ComfyUI's own rule: a two-element list [node id, output index] is a link.
fn api_value(value: &Json) -> ComfyValue {
    if let Some([node, slot]) = value.as_array().map(Vec::as_slice) {
        let node = match node {
            Json::String(s) => Some(s.clone()),
            Json::Number(n) => Some(n.to_string()),
            _ => None,
        };
        if let (Some(node), Some(slot)) = (node, slot.as_u64()) {
            return ComfyValue::Link {
                node,
                slot: slot as usize,
            };
        }
    }
    ComfyValue::Value(value.clone())
}

/// LiteGraph node modes: 0 always, 2 never (muted), 4 bypassed.
const MODE_MUTED: i64 = 2;
const MODE_BYPASSED: i64 = 4;

/// A weft node's mode as a LiteGraph node mode (what a UI-format export writes as `mode`).
pub fn ui_mode(mode: NodeMode) -> i64 {
    match mode {
        NodeMode::Normal => 0,
        NodeMode::Mute => MODE_MUTED,
        NodeMode::Bypass => MODE_BYPASSED,
    }
}
const SEED_CONTROLS: [&str; 4] = ["fixed", "increment", "decrement", "randomize"];

fn ui_id(value: Option<&Json>) -> Option<String> {
    match value? {
        Json::Number(n) => Some(n.to_string()),
        Json::String(s) => Some(s.clone()),
        _ => None,
    }
}

struct UiLink {
    from: String,
    slot: usize,
}

fn read_ui(object: &serde_json::Map<String, Json>) -> Result<Vec<ComfyNode>, Vec<Issue>> {
    let mut issues = Vec::new();
    let empty = Vec::new();
    let list = object["nodes"].as_array().unwrap_or(&empty);
    // Links: [id, from_node, from_slot, to_node, to_slot, type] (schema 0.4) or objects
    // {id, origin_id, origin_slot, ...} (schema 1).
    let mut links: HashMap<String, UiLink> = HashMap::new();
    for link in object
        .get("links")
        .and_then(Json::as_array)
        .unwrap_or(&empty)
    {
        let (id, from, slot) = match link {
            Json::Array(a) => (ui_id(a.first()), ui_id(a.get(1)), a.get(2)),
            Json::Object(o) => (
                ui_id(o.get("id")),
                ui_id(o.get("origin_id")),
                o.get("origin_slot"),
            ),
            _ => (None, None, None),
        };
        match (id, from, slot.and_then(Json::as_u64)) {
            (Some(id), Some(from), Some(slot)) => {
                links.insert(
                    id,
                    UiLink {
                        from,
                        slot: slot as usize,
                    },
                );
            }
            _ => issues.push(Issue::new(format!("malformed link {link}"))),
        }
    }
    let by_id: HashMap<String, &Json> = list
        .iter()
        .filter_map(|n| ui_id(n.get("id")).map(|id| (id, n)))
        .collect();
    let class_of = |n: &Json| {
        n.get("type")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mode_of = |n: &Json| n.get("mode").and_then(Json::as_i64).unwrap_or(0);
    // A muted or bypassed node of a type weft has stays, with its mode (weft honours it when
    // it plans); one weft has no type for is resolved here as ComfyUI would run it.
    let kept_with_mode =
        |class: &str| comfy_type(class).is_some() && !super::VIRTUAL_TYPES.contains(&class);

    // Follows a link through reroutes and bypassed nodes to a real output or a primitive's value,
    // stopping at a link whose end is `known`; `walked` gets every link it passed.
    let follow = |link_id: &str,
                  known: &HashMap<String, Result<ComfyValue, String>>,
                  walked: &mut Vec<String>|
     -> Result<ComfyValue, String> {
        let mut link_id = link_id.to_string();
        for _ in 0..=by_id.len() {
            if let Some(end) = known.get(&link_id) {
                return end.clone();
            }
            walked.push(link_id.clone());
            let Some(link) = links.get(&link_id) else {
                return Err(format!("link {link_id} is not in the links list"));
            };
            let Some(source) = by_id.get(&link.from) else {
                return Err(format!(
                    "link {link_id} comes from node {}, which is not in the workflow",
                    link.from
                ));
            };
            let class = class_of(source);
            let mode = mode_of(source);
            if class == "PrimitiveNode" {
                let value = source
                    .get("widgets_values")
                    .and_then(|w| w.get(0))
                    .cloned()
                    .ok_or_else(|| format!("primitive node {} has no value", link.from))?;
                return Ok(ComfyValue::Value(value));
            }
            if matches!(mode, MODE_MUTED | MODE_BYPASSED) && kept_with_mode(&class) {
                return Ok(ComfyValue::Link {
                    node: link.from.clone(),
                    slot: link.slot,
                });
            }
            if mode == MODE_MUTED {
                return Err(format!(
                    "it comes from node {} ({class}), which is muted",
                    link.from
                ));
            }
            let inputs = source
                .get("inputs")
                .and_then(Json::as_array)
                .map_or(&[][..], Vec::as_slice);
            let next = if class == "Reroute" {
                inputs.first().and_then(|i| ui_id(i.get("link")))
            } else if mode == MODE_BYPASSED {
                // As ComfyUI's frontend: the input at the same index if its type matches, else
                // the first input of the output's type.
                let out_ty = source
                    .get("outputs")
                    .and_then(|o| o.get(link.slot))
                    .and_then(|o| o.get("type"))
                    .and_then(Json::as_str)
                    .unwrap_or("");
                let same_type = |i: &Json| i.get("type").and_then(Json::as_str) == Some(out_ty);
                let pick = inputs
                    .get(link.slot)
                    .filter(|i| same_type(i))
                    .or_else(|| inputs.iter().find(|i| same_type(i)));
                match pick.and_then(|i| ui_id(i.get("link"))) {
                    Some(l) => Some(l),
                    None => {
                        return Err(format!(
                            "it comes from node {} ({class}), which is bypassed and has no {out_ty} input to pass on",
                            link.from
                        ))
                    }
                }
            } else {
                return Ok(ComfyValue::Link {
                    node: link.from.clone(),
                    slot: link.slot,
                });
            };
            match next {
                Some(l) => link_id = l,
                None => return Err(format!("reroute node {} has no input", link.from)),
            }
        }
        Err("the link goes round in a loop of reroutes".into())
    };
    // Every link's end, remembered for each link on the way: many inputs fed through one long
    // chain of reroutes walk it once, not once each.
    let mut resolved: HashMap<String, Result<ComfyValue, String>> = HashMap::new();
    let mut resolve = |link_id: &str| -> Result<ComfyValue, String> {
        let mut walked = Vec::new();
        let end = follow(link_id, &resolved, &mut walked);
        for link in walked {
            resolved.insert(link, end.clone());
        }
        end
    };

    let mut ordered: Vec<&Json> = list.iter().collect();
    ordered.sort_by_key(|n| {
        (
            n.get("order").and_then(Json::as_i64).unwrap_or(i64::MAX),
            n.get("id").and_then(Json::as_i64).unwrap_or(i64::MAX),
        )
    });
    let mut nodes = Vec::new();
    for n in ordered {
        let Some(id) = ui_id(n.get("id")) else {
            issues.push(Issue::new(format!("a node without an id: {n}")));
            continue;
        };
        let class = class_of(n);
        let mode = match mode_of(n) {
            MODE_MUTED => NodeMode::Mute,
            MODE_BYPASSED => NodeMode::Bypass,
            _ => NodeMode::Normal,
        };
        if super::VIRTUAL_TYPES.contains(&class.as_str())
            || (mode != NodeMode::Normal && !kept_with_mode(&class))
        {
            continue;
        }
        let mut inputs: Vec<(String, ComfyValue)> = Vec::new();
        for input in n.get("inputs").and_then(Json::as_array).unwrap_or(&empty) {
            let name = input
                .get("widget")
                .and_then(|w| w.get("name"))
                .or_else(|| input.get("name"))
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string();
            let Some(link) = ui_id(input.get("link")) else {
                continue;
            };
            match resolve(&link) {
                Ok(v) => inputs.push((name, v)),
                Err(e) => issues.push(
                    Issue::new(format!("dangling link: {e}"))
                        .node(&id, &class)
                        .input(&name),
                ),
            }
        }
        if super::VALUE_TYPES.contains(&class.as_str()) {
            let value = match n.get("widgets_values") {
                Some(Json::Array(values)) => values.first().cloned(),
                Some(Json::Object(map)) => map.get("value").cloned(),
                _ => None,
            };
            if let Some(v) = value {
                inputs.push(("value".into(), ComfyValue::Value(v)));
            }
        }
        if let Some(ty) = comfy_type(&class) {
            let widgets = n.get("widgets_values");
            let mut cursor = 0;
            for input in ty.inputs.iter().filter(|i| i.widget.is_some()) {
                let value = match widgets {
                    Some(Json::Array(values)) => {
                        let v = values.get(cursor).cloned();
                        cursor += 1;
                        if input.seed
                            && values
                                .get(cursor)
                                .and_then(Json::as_str)
                                .is_some_and(|s| SEED_CONTROLS.contains(&s))
                        {
                            cursor += 1;
                        }
                        v
                    }
                    Some(Json::Object(map)) => map.get(input.name).cloned(),
                    _ => None,
                };
                if let Some(v) = value {
                    if !inputs.iter().any(|(name, _)| name == input.name) {
                        inputs.push((input.name.to_string(), ComfyValue::Value(v)));
                    }
                }
            }
        }
        nodes.push(ComfyNode {
            id,
            class,
            inputs,
            pos: ui_pos(n.get("pos")),
            title: n.get("title").and_then(Json::as_str).map(str::to_string),
            mode,
            color: n.get("color").and_then(Json::as_str).map(str::to_string),
            collapsed: n
                .get("flags")
                .and_then(|f| f.get("collapsed"))
                .and_then(Json::as_bool)
                .unwrap_or(false),
        });
    }
    if issues.is_empty() {
        Ok(nodes)
    } else {
        Err(issues)
    }
}

/// `[x, y]`, or `{"0": x, "1": y}` as older LiteGraph wrote its Float32Arrays.
fn ui_pos(pos: Option<&Json>) -> Option<[f64; 2]> {
    let pos = pos?;
    let x = pos.get(0).or_else(|| pos.get("0"))?.as_f64()?;
    let y = pos.get(1).or_else(|| pos.get("1"))?.as_f64()?;
    Some([x, y])
}

/// A weft input under construction: a constant, or a link still in ComfyUI terms.
enum Pending {
    Const(Constant),
    Link {
        node: String,
        slot: usize,
        expected: &'static str,
        comfy: String,
    },
}

struct NodeCx<'a> {
    node: &'a ComfyNode,
    ty: &'static ComfyType,
    issues: &'a mut Vec<Issue>,
    notes: &'a mut Vec<Issue>,
    out: Vec<(String, Pending)>,
    /// Output sizes found so far (see `known_size`), shared by every node's conversion.
    sizes: &'a mut Sizes,
}

impl NodeCx<'_> {
    fn issue(&mut self, input: Option<&str>, message: impl Into<String>) -> &mut Issue {
        let mut i = Issue::new(message).node(&self.node.id, &self.node.class);
        i.input = input.map(str::to_string);
        self.issues.push(i);
        self.issues.last_mut().expect("just pushed")
    }

    /// An issue of a kind weft's validation also names (a missing input, a value not among the
    /// choices), so clients map it by its code.
    fn issue_of(
        &mut self,
        code: DiagnosticCode,
        input: Option<&str>,
        message: impl Into<String>,
    ) -> &mut Issue {
        let issue = self.issue(input, message);
        issue.code = Some(code);
        issue
    }

    fn note(&mut self, input: Option<&str>, message: impl Into<String>) {
        let mut i = Issue::new(message).node(&self.node.id, &self.node.class);
        i.input = input.map(str::to_string);
        self.notes.push(i);
    }

    fn socket_type(&self, name: &str) -> &'static str {
        self.ty
            .inputs
            .iter()
            .find(|i| i.name == name)
            .map_or("?", |i| i.ty)
    }

    /// A socket input: must be a link.
    fn link(&mut self, comfy: &str, weft: &str) {
        let expected = self.socket_type(comfy);
        match self.node.get(comfy).cloned() {
            Some(ComfyValue::Link { node, slot }) => self.out.push((
                weft.to_string(),
                Pending::Link {
                    node,
                    slot,
                    expected,
                    comfy: comfy.to_string(),
                },
            )),
            Some(ComfyValue::Value(v)) => {
                self.issue_of(
                    DiagnosticCode::TypeMismatch,
                    Some(comfy),
                    format!("expected a link to a {expected} output, found the value {v}"),
                );
            }
            None => {
                self.issue_of(
                    DiagnosticCode::MissingInput,
                    Some(comfy),
                    format!("missing input: it needs a link to a {expected} output"),
                );
            }
        }
    }

    /// A widget value, or ComfyUI's default when left out; `None` (after an error) when it
    /// is missing without a default, or linked.
    fn value(&mut self, name: &str) -> Option<Json> {
        match self.node.get(name).cloned() {
            Some(ComfyValue::Value(v)) => Some(v),
            Some(ComfyValue::Link { node, slot }) => {
                self.issue(Some(name), format!("is linked to output {slot} of node {node}; weft imports this ComfyUI widget as a value"))
                    .hint = Some("set the value on the node (PrimitiveNode values are taken over)".into());
                None
            }
            None => match super::comfy_default(&self.node.class, name) {
                Some(default) => {
                    self.note(
                        Some(name),
                        format!("left out: ComfyUI's default {default} is used"),
                    );
                    Some(default)
                }
                None => {
                    self.issue_of(DiagnosticCode::MissingInput, Some(name), "missing input");
                    None
                }
            },
        }
    }

    fn int(&mut self, name: &str) -> Option<i64> {
        let v = self.value(name)?;
        // A whole float in i64's range only: `as` would clamp a larger one to i64::MAX.
        let int = v.as_i64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && (-(2f64.powi(63))..2f64.powi(63)).contains(f))
                .map(|f| f as i64)
        });
        if int.is_none() {
            let message = if v.as_u64().is_some() {
                format!("{v} is above weft's largest integer ({})", i64::MAX)
            } else {
                format!("expected a whole number, found {v}")
            };
            self.issue_of(DiagnosticCode::WrongValueType, Some(name), message);
        }
        int
    }

    fn float(&mut self, name: &str) -> Option<f64> {
        let v = self.value(name)?;
        let f = v.as_f64();
        if f.is_none() {
            self.issue_of(
                DiagnosticCode::WrongValueType,
                Some(name),
                format!("expected a number, found {v}"),
            );
        }
        f
    }

    fn string(&mut self, name: &str) -> Option<String> {
        let v = self.value(name)?;
        match v {
            Json::String(s) => Some(s),
            other => {
                self.issue_of(
                    DiagnosticCode::WrongValueType,
                    Some(name),
                    format!("expected text, found {other}"),
                );
                None
            }
        }
    }

    fn put(&mut self, weft: &str, value: impl Into<Constant>) {
        self.out
            .push((weft.to_string(), Pending::Const(value.into())));
    }

    fn put_int(&mut self, comfy: &str, weft: &str) -> Option<i64> {
        let v = self.int(comfy)?;
        self.put(weft, v);
        Some(v)
    }

    fn put_bool(&mut self, comfy: &str, weft: &str) -> Option<bool> {
        let v = self.value(comfy)?;
        let Some(b) = v.as_bool() else {
            self.issue_of(
                DiagnosticCode::WrongValueType,
                Some(comfy),
                format!("expected true or false, found {v}"),
            );
            return None;
        };
        self.put(weft, b);
        Some(b)
    }

    fn put_float(&mut self, comfy: &str, weft: &str) -> Option<f64> {
        let v = self.float(comfy)?;
        self.put(weft, v);
        Some(v)
    }

    fn sampler_name(&mut self, comfy: &str) {
        let Some(name) = self.string(comfy) else {
            return;
        };
        let weft = super::weft_sampler_name(&name);
        match weft {
            Some(w) => {
                if w != name {
                    self.note(Some(comfy), format!("sampler '{name}' becomes '{w}': the same method; weft draws its step noise on the CPU on every device"));
                }
                self.put("sampler", w);
            }
            None => {
                self.issue_of(
                    DiagnosticCode::NotAChoice,
                    Some(comfy),
                    format!("sampler '{name}' is not in weft"),
                )
                .hint = Some(format!("weft has {}", SamplerKind::NAMES.join(", ")));
            }
        }
    }

    fn scheduler_name(&mut self, comfy: &str) {
        let Some(name) = self.string(comfy) else {
            return;
        };
        if ScheduleKind::NAMES.contains(&name.as_str()) {
            self.put("schedule", name.as_str());
        } else {
            self.issue_of(
                DiagnosticCode::NotAChoice,
                Some(comfy),
                format!("scheduler '{name}' is not in weft"),
            )
            .hint = Some(format!("weft has {}", ScheduleKind::NAMES.join(", ")));
        }
    }

    fn resize_method(&mut self, comfy: &str) {
        let Some(name) = self.string(comfy) else {
            return;
        };
        if weft_nodes::latent::UPSCALE_METHODS.contains(&name.as_str()) {
            self.put("method", name.as_str());
        } else {
            self.issue_of(
                DiagnosticCode::NotAChoice,
                Some(comfy),
                format!("upscale method '{name}' is not in weft"),
            )
            .hint = Some(format!(
                "weft has {}",
                weft_nodes::latent::UPSCALE_METHODS.join(", ")
            ));
        }
    }

    /// ComfyUI's seeds are 64-bit unsigned: every one of them is taken as it is (the noise of
    /// seed 2^64 - 1 is torch's for that seed), never clamped.
    fn seed(&mut self, comfy: &str) {
        let Some(v) = self.value(comfy) else {
            return;
        };
        if let Some(seed) = v.as_u64() {
            self.put("seed", Constant::whole(seed));
        } else if let Some(negative) = v.as_i64() {
            // Validation refuses it with weft's own words ("seed must be 0 or more").
            self.put("seed", negative);
        } else if let Some(whole) = v
            .as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..2f64.powi(64)).contains(f))
        {
            self.put("seed", Constant::whole(whole as u64));
        } else {
            self.issue_of(
                DiagnosticCode::WrongValueType,
                Some(comfy),
                format!("expected a whole number from 0 to 2^64 - 1, found {v}"),
            );
        }
    }
}

fn readable(id: &str) -> bool {
    id.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The weft id of a ComfyUI node: a title the user gave it when that is a name (not the
/// type's own name), else its id when that is a name, else `<role>_<id>` (ComfyUI's ids are
/// numbers: `3` becomes `ksampler_3`).
/// `next_suffix` remembers, per base, the first `_N` not yet tried, so a thousand nodes with
/// one base cost one try each, not a thousand.
fn weft_id(
    node: &ComfyNode,
    ty: &ComfyType,
    role: &str,
    taken: &HashSet<String>,
    next_suffix: &mut HashMap<String, usize>,
) -> String {
    if let Some(title) = &node.title {
        if readable(title) && title != ty.class && title != ty.display && !taken.contains(title) {
            return title.clone();
        }
    }
    let id = node.id.as_str();
    let base = if readable(id) {
        id.to_string()
    } else {
        let cleaned: String = id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("{role}_{cleaned}")
    };
    let mut candidate = base.clone();
    let mut n = next_suffix.get(&base).copied().unwrap_or(2);
    while taken.contains(&candidate) {
        candidate = format!("{base}_{n}");
        n += 1;
    }
    next_suffix.insert(base, n);
    candidate
}

/// The role of a node for its id; prompts are named by what they feed (positive, negative).
fn role(ty: &ComfyType, uses: Option<&HashSet<&str>>) -> &'static str {
    if ty.class != "CLIPTextEncode" && ty.class != "CLIPTextEncodeSDXL" {
        return ty.role;
    }
    let feeds = |name| uses.is_some_and(|u| u.contains(name));
    match (feeds("positive"), feeds("negative")) {
        (true, false) => "positive",
        (false, true) => "negative",
        _ => ty.role,
    }
}

/// Converts API-format nodes to a weft workflow.
pub fn convert(nodes: &[ComfyNode], options: &ImportOptions) -> Result<Imported, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut notes = Vec::new();

    // Every unknown class type in one error.
    // By class in first-seen order; a map, since a prompt may hold 100k unknown classes.
    let mut unknown: indexmap::IndexMap<&str, Vec<&str>> = indexmap::IndexMap::new();
    for n in nodes.iter().filter(|n| comfy_type(&n.class).is_none()) {
        unknown.entry(&n.class).or_default().push(&n.id);
    }
    if !unknown.is_empty() {
        let listed: Vec<String> = unknown
            .iter()
            .map(|(class, ids)| {
                let s = if ids.len() == 1 { "" } else { "s" };
                format!("{class} (node{s} {})", ids.join(", "))
            })
            .collect();
        issues.push(
            Issue::new(format!(
                "{} ComfyUI node type{} that weft does not import: {}",
                unknown.len(),
                if unknown.len() == 1 { "" } else { "s" },
                listed.join(", ")
            ))
            .hint(format!("weft imports {}", supported_list())),
        );
    }
    let unknown_ids: HashSet<&str> = unknown
        .iter()
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();

    let mut by_id: HashMap<&str, &ComfyNode> = HashMap::new();
    for n in nodes {
        if by_id.insert(&n.id, n).is_some() {
            issues.push(Issue::new(format!("node id {} is used twice", n.id)));
        }
    }
    // Which inputs each node feeds (to name prompts positive/negative).
    let mut uses: HashMap<&str, HashSet<&str>> = HashMap::new();
    for n in nodes {
        for (name, value) in &n.inputs {
            if let ComfyValue::Link { node, .. } = value {
                uses.entry(node.as_str()).or_default().insert(name.as_str());
            }
        }
    }
    let mut taken = HashSet::new();
    let mut next_suffix = HashMap::new();
    let mut ids: HashMap<&str, String> = HashMap::new();
    let mut id_list = Vec::new();
    for n in nodes {
        let Some(ty) = comfy_type(&n.class) else {
            continue;
        };
        let role = role(ty, uses.get(n.id.as_str()));
        let id = weft_id(n, ty, role, &taken, &mut next_suffix);
        taken.insert(id.clone());
        id_list.push((n.id.clone(), id.clone()));
        ids.insert(&n.id, id);
    }

    let mut converted = Vec::new();
    let mut sizes = Sizes::new();
    for n in dependency_order(nodes) {
        let Some(ty) = comfy_type(&n.class) else {
            continue;
        };
        let mut cx = NodeCx {
            node: n,
            ty,
            issues: &mut issues,
            notes: &mut notes,
            out: Vec::new(),
            sizes: &mut sizes,
        };
        convert_node(&mut cx, options, &by_id);
        for (name, _) in &n.inputs {
            // "upload" is LoadImage's button; ComfyUI ignores unknown inputs too.
            if name != "upload" && !ty.inputs.iter().any(|i| i.name == name) {
                cx.note(
                    Some(name),
                    format!("{} has no input '{name}'; it is ignored", ty.class),
                );
            }
        }
        let out = cx.out;
        converted.push((n, ty, out));
    }

    let mut wf = Workflow::new();
    let mut linked_inputs = HashMap::new();
    for (n, ty, inputs) in converted {
        let mut entry = NodeEntry::new(ty.weft).mode(n.mode);
        for (name, pending) in inputs {
            let value = match pending {
                Pending::Const(c) => InputValue::Constant(c),
                Pending::Link {
                    node,
                    slot,
                    expected,
                    comfy,
                } => {
                    if unknown_ids.contains(node.as_str()) {
                        continue;
                    }
                    let at =
                        |message: String| Issue::new(message).node(&n.id, &n.class).input(&comfy);
                    let Some(source) = by_id.get(node.as_str()) else {
                        let mut issue = at(format!(
                            "dangling link: it links to node {node}, which is not in the workflow"
                        ));
                        issue.code = Some(DiagnosticCode::UnknownNode);
                        issues.push(issue);
                        continue;
                    };
                    let source_ty = comfy_type(&source.class).expect("known type");
                    let Some(output) = source_ty.outputs.get(slot) else {
                        issues.push(at(format!(
                            "dangling link: it links to output {slot} of node {node} ({}), which has {} output{}",
                            source.class,
                            source_ty.outputs.len(),
                            if source_ty.outputs.len() == 1 { "" } else { "s" }
                        )));
                        continue;
                    };
                    if output.ty != expected {
                        let mut issue = at(format!(
                            "expects {expected}, but output {slot} of node {node} ({}) is {}",
                            source.class, output.ty
                        ));
                        issue.code = Some(DiagnosticCode::TypeMismatch);
                        issues.push(issue);
                        continue;
                    }
                    let Some(weft_output) = output.weft else {
                        issues.push(at(format!(
                            "links to the {} output of node {node} ({}); weft's {} has no such output",
                            output.ty, source.class, source_ty.weft
                        )));
                        continue;
                    };
                    linked_inputs.insert(
                        (n.id.clone(), comfy.clone()),
                        (ids[n.id.as_str()].clone(), name.clone()),
                    );
                    InputValue::Link(Link {
                        node: ids[node.as_str()].clone(),
                        output: weft_output.to_string(),
                    })
                }
            };
            entry.inputs.insert(name, InputEntry { value, pos: None });
        }
        let id = &ids[n.id.as_str()];
        if let Some(pos) = n.pos {
            wf.layout.insert(id.clone(), pos);
        }
        // A title that did not become the id is shown as the node's title.
        let title = n
            .title
            .as_ref()
            .filter(|t| *t != id && **t != ty.class && **t != ty.display && !t.is_empty())
            .cloned();
        let look = Appearance {
            title,
            color: n.color.clone(),
            collapsed: n.collapsed,
        };
        if !look.is_default() {
            wf.appearance.insert(id.clone(), look);
        }
        wf.add(id, entry);
    }
    if issues.is_empty() {
        Ok(Imported {
            workflow: wf,
            format: Format::Api,
            notes,
            ids: id_list,
            linked_inputs,
        })
    } else {
        Err(issues)
    }
}

/// The nodes with every node after the nodes it links to (ties by numeric id, then file
/// order), so the YAML reads from loader to save. Kahn's algorithm: iterative, linear.
fn dependency_order(nodes: &[ComfyNode]) -> Vec<&ComfyNode> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let key = |i: usize| (nodes[i].id.parse::<u64>().unwrap_or(u64::MAX), i);
    let mut waiting = vec![0usize; nodes.len()];
    let mut feeds: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let mut sources: Vec<usize> = n
            .inputs
            .iter()
            .filter_map(|(_, v)| match v {
                ComfyValue::Link { node, .. } => index.get(node.as_str()).copied(),
                ComfyValue::Value(_) => None,
            })
            .collect();
        sources.sort_unstable();
        sources.dedup();
        waiting[i] = sources.len();
        for s in sources {
            feeds[s].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<(u64, usize)>> = (0..nodes.len())
        .filter(|&i| waiting[i] == 0)
        .map(|i| Reverse(key(i)))
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    let mut placed = vec![false; nodes.len()];
    while let Some(Reverse((_, i))) = ready.pop() {
        order.push(&nodes[i]);
        placed[i] = true;
        for &next in &feeds[i] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push(Reverse(key(next)));
            }
        }
    }
    // Nodes on a cycle keep their file order; the validator names the cycle.
    order.extend(
        nodes
            .iter()
            .zip(&placed)
            .filter(|(_, p)| !**p)
            .map(|(n, _)| n),
    );
    order
}

fn map_model(name: &str, options: &ImportOptions) -> Option<String> {
    options
        .models
        .iter()
        .find(|(comfy, _)| comfy == name)
        .map(|(_, weft)| weft.clone())
}

/// File extensions ComfyUI lists as checkpoints.
const CHECKPOINT_EXTENSIONS: [&str; 6] = [".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft"];

fn convert_node(cx: &mut NodeCx, options: &ImportOptions, nodes: &HashMap<&str, &ComfyNode>) {
    match cx.ty.class {
        "CheckpointLoaderSimple" => {
            let Some(name) = cx.string("ckpt_name") else {
                return;
            };
            // ComfyUI names are relative to models/checkpoints; names without a checkpoint
            // extension are weft's own (a diffusers folder such as tiny-shapes).
            let missing = options.missing_checkpoint.as_ref().filter(|(_, models)| {
                !models.join(CHECKPOINT_DIR).join(&name).exists() && !models.join(&name).exists()
            });
            let weft = map_model(&name, options).unwrap_or_else(|| {
                if let Some((fallback, _)) = missing {
                    fallback.clone()
                } else if CHECKPOINT_EXTENSIONS.iter().any(|e| name.ends_with(e)) {
                    format!("{CHECKPOINT_DIR}{name}")
                } else {
                    name.clone()
                }
            });
            cx.put("name", weft.as_str());
        }
        "LoraLoader" | "LoraLoaderModelOnly" => {
            cx.link("model", "model");
            if cx.ty.class == "LoraLoader" {
                cx.link("clip", "text_encoder");
                cx.put_float("strength_clip", "strength_clip");
            }
            cx.put_float("strength_model", "strength_model");
            if let Some(name) = cx.string("lora_name") {
                // ComfyUI names a LoRA relative to its models/loras folder.
                let weft = map_model(&name, options).unwrap_or_else(|| format!("{LORA_DIR}{name}"));
                cx.put("lora", weft.as_str());
            }
        }
        "CLIPTextEncode" => {
            cx.link("clip", "encoder");
            if let Some(text) = cx.string("text") {
                cx.put("text", super::prompt_from_comfy(&text).as_str());
            }
        }
        "CLIPTextEncodeSDXL" => {
            cx.link("clip", "encoder");
            for size in [
                "width",
                "height",
                "crop_w",
                "crop_h",
                "target_width",
                "target_height",
            ] {
                cx.put_int(size, size);
            }
            for text in ["text_g", "text_l"] {
                if let Some(t) = cx.string(text) {
                    cx.put(text, super::prompt_from_comfy(&t).as_str());
                }
            }
        }
        "CLIPTextEncodeSDXLRefiner" => {
            cx.link("clip", "encoder");
            cx.put_float("ascore", "ascore");
            cx.put_int("width", "width");
            cx.put_int("height", "height");
            if let Some(text) = cx.string("text") {
                cx.put("text", super::prompt_from_comfy(&text).as_str());
            }
        }
        "EmptyLatentImage" => {
            cx.put_int("width", "width");
            cx.put_int("height", "height");
            cx.put_int("batch_size", "batch");
        }
        "KSampler" => {
            sampler_links(cx);
            cx.seed("seed");
            cx.put_int("steps", "steps");
            cx.put_float("cfg", "cfg");
            cx.sampler_name("sampler_name");
            cx.scheduler_name("scheduler");
            cx.put_float("denoise", "denoise");
        }
        "KSamplerAdvanced" => ksampler_advanced(cx),
        "VAEDecode" => {
            cx.link("vae", "vae");
            cx.link("samples", "latent");
        }
        "VAEDecodeTiled" => {
            cx.link("vae", "vae");
            cx.link("samples", "latent");
            if let Some(tile) = cx.put_int("tile_size", "tile") {
                // weft's VaeDecode overlaps tiles by tile/8 (64 px at the default 512).
                let weft_overlap = (tile / 8).max(8) / 8 * 8;
                if let Some(overlap) = cx.int("overlap") {
                    if overlap != weft_overlap {
                        cx.note(Some("overlap"), format!("weft overlaps {tile} px tiles by {weft_overlap} px, not {overlap}: seams blend slightly differently"));
                    }
                }
            }
        }
        "VAEEncode" => {
            cx.link("vae", "vae");
            cx.link("pixels", "image");
        }
        "LoadImageMask" => {
            if let Some(channel) = cx.string("channel") {
                cx.put("channel", channel.as_str());
            }
            input_image_path(cx, options);
        }
        "SolidMask" => {
            cx.put_float("value", "value");
            cx.put_int("width", "width");
            cx.put_int("height", "height");
        }
        "InvertMask" | "MaskToImage" => cx.link("mask", "mask"),
        "GrowMask" => {
            cx.link("mask", "mask");
            cx.put_int("expand", "expand");
            cx.put_bool("tapered_corners", "tapered_corners");
        }
        "FeatherMask" => {
            cx.link("mask", "mask");
            for side in ["left", "top", "right", "bottom"] {
                cx.put_int(side, side);
            }
        }
        "ThresholdMask" => {
            cx.link("mask", "mask");
            cx.put_float("value", "value");
        }
        "ImageColorToMask" => {
            cx.link("image", "image");
            cx.put_int("color", "color");
        }
        "ImageToMask" => {
            cx.link("image", "image");
            if let Some(channel) = cx.string("channel") {
                cx.put("channel", channel.as_str());
            }
        }
        "SetLatentNoiseMask" => {
            cx.link("samples", "latent");
            cx.link("mask", "mask");
        }
        "VAEEncodeForInpaint" => {
            cx.link("vae", "vae");
            cx.link("pixels", "image");
            cx.link("mask", "mask");
            cx.put_int("grow_mask_by", "grow_mask_by");
        }
        "InpaintModelConditioning" => {
            cx.link("positive", "positive");
            cx.link("negative", "negative");
            cx.link("vae", "vae");
            cx.link("pixels", "image");
            cx.link("mask", "mask");
            cx.put_bool("noise_mask", "noise_mask");
        }
        "ImagePadForOutpaint" => {
            cx.link("image", "image");
            for side in ["left", "top", "right", "bottom", "feathering"] {
                cx.put_int(side, side);
            }
        }
        "ImageCompositeMasked" => {
            cx.link("destination", "destination");
            cx.link("source", "source");
            cx.put_int("x", "x");
            cx.put_int("y", "y");
            cx.put_bool("resize_source", "resize_source");
            if cx.node.get("mask").is_some() {
                cx.link("mask", "mask");
            }
        }
        "LoadImage" => input_image_path(cx, options),
        "SaveImage" => {
            cx.link("images", "image");
            if let Some(prefix) = cx.string("filename_prefix") {
                if prefix.contains('%') {
                    cx.note(Some("filename_prefix"), format!("weft does not expand ComfyUI's %...% patterns: '{prefix}' is used as written"));
                }
                cx.put("prefix", prefix.as_str());
            }
        }
        "ImageBatch" => {
            cx.link("image1", "image1");
            cx.link("image2", "image2");
        }
        "SaveImageWebsocket" => {
            cx.link("images", "image");
            cx.put("prefix", "websocket");
            cx.note(
                None,
                "weft saves the image (prefix 'websocket') and sends it over the socket, as ComfyUI's node sends it",
            );
        }
        "PreviewImage" => {
            cx.link("images", "image");
            cx.put("prefix", "preview");
            cx.note(
                None,
                "weft has no preview-only node: the image is saved with the prefix 'preview'",
            );
        }
        "LatentUpscaleBy" => {
            cx.link("samples", "latent");
            cx.put_float("scale_by", "scale");
            cx.resize_method("upscale_method");
        }
        "ImageScaleBy" => {
            cx.link("image", "image");
            cx.put_float("scale_by", "scale");
            cx.resize_method("upscale_method");
        }
        "LatentUpscale" | "ImageScale" => scale_to_size(cx, nodes),
        "UpscaleModelLoader" => {
            let Some(name) = cx.string("model_name") else {
                return;
            };
            let weft = map_model(&name, options)
                .or_else(|| {
                    UPSCALER_FILES
                        .iter()
                        .find(|(file, _)| file.eq_ignore_ascii_case(&name))
                        .map(|(_, w)| w.to_string())
                })
                .or_else(|| {
                    weft_nodes::upscale::UPSCALERS
                        .contains(&name.as_str())
                        .then(|| name.clone())
                });
            match weft {
                Some(w) => cx.put("name", w.as_str()),
                None => {
                    cx.issue_of(DiagnosticCode::NotAChoice, Some("model_name"), format!("weft has no upscale model '{name}'"))
                        .hint = Some(format!(
                        "weft has {} (ComfyUI files {}); map yours with --model '{name}=<weft name>'",
                        weft_nodes::upscale::UPSCALERS.join(", "),
                        UPSCALER_FILES.map(|(f, _)| f).join(", ")
                    ));
                }
            }
        }
        "ImageUpscaleWithModel" => {
            cx.link("upscale_model", "upscale_model");
            cx.link("image", "image");
        }
        other => unreachable!("{other} is in TYPES but has no conversion"),
    }
}

/// LoadImage's and LoadImageMask's `image`: a file in ComfyUI's input folder, found under
/// `options.inputs_dir`.
fn input_image_path(cx: &mut NodeCx, options: &ImportOptions) {
    let Some(name) = cx.string("image") else {
        return;
    };
    let name = name.strip_suffix(" [input]").unwrap_or(&name).to_string();
    if name.ends_with(" [output]") || name.ends_with(" [temp]") {
        cx.issue(
            Some("image"),
            format!("'{name}' names a file in ComfyUI's output or temp folder"),
        )
        .hint = Some("copy the file into the inputs folder and name it there".into());
        return;
    }
    let dir = options.inputs_dir.trim_end_matches('/');
    let path = if dir.is_empty() {
        name
    } else {
        format!("{dir}/{name}")
    };
    cx.put("path", path.as_str());
}

fn sampler_links(cx: &mut NodeCx) {
    cx.link("model", "model");
    cx.link("positive", "positive");
    cx.link("negative", "negative");
    cx.link("latent_image", "latent");
}

/// KSamplerAdvanced is weft's SamplerAdvanced, input for input: the window of the schedule
/// (start_at_step, end_at_step), whether noise is added and whether it is left in at the end.
fn ksampler_advanced(cx: &mut NodeCx) {
    sampler_links(cx);
    for (comfy, weft, on) in [
        ("add_noise", "add_noise", "enable"),
        ("return_with_leftover_noise", "leftover_noise", "enable"),
    ] {
        match cx.string(comfy).as_deref() {
            Some(v @ ("enable" | "disable")) => cx.put(weft, v == on),
            Some(other) => {
                cx.issue(
                    Some(comfy),
                    format!("'{other}' is neither 'enable' nor 'disable'"),
                );
            }
            None => {}
        }
    }
    cx.seed("noise_seed");
    cx.put_int("steps", "steps");
    cx.put_float("cfg", "cfg");
    cx.sampler_name("sampler_name");
    cx.scheduler_name("scheduler");
    cx.put_int("start_at_step", "start_at_step");
    cx.put_int("end_at_step", "end_at_step");
}

/// LatentUpscale and ImageScale resize to a size; weft's nodes scale by a factor. When the
/// input's size is known from the graph and the factor is the same on both sides, it maps.
fn scale_to_size(cx: &mut NodeCx, nodes: &HashMap<&str, &ComfyNode>) {
    let latent = cx.ty.class == "LatentUpscale";
    let (source, weft_in) = if latent {
        ("samples", "latent")
    } else {
        ("image", "image")
    };
    cx.link(source, weft_in);
    let width = cx.int("width");
    let height = cx.int("height");
    let crop = cx.string("crop");
    let (Some(width), Some(height), Some(_crop)) = (width, height, crop) else {
        return;
    };
    let by = if latent {
        "LatentUpscaleBy (Upscale Latent By)"
    } else {
        "ImageScaleBy (Upscale Image By)"
    };
    let input_size = match cx.node.get(source) {
        Some(ComfyValue::Link { node, .. }) => known_size(nodes, node, cx.sizes),
        _ => None,
    };
    let Some((w0, h0)) = input_size else {
        cx.issue(Some("width"), format!("weft scales by a factor, and the size of this node's input is not known from the workflow, so {width}x{height} cannot become one"))
            .hint = Some(format!("use {by} instead"));
        return;
    };
    if width == 0 || height == 0 {
        cx.issue(
            Some(if width == 0 { "width" } else { "height" }),
            "a side of 0 (keep the aspect ratio) is not supported",
        )
        .hint = Some(format!("give both sides, or use {by}"));
        return;
    }
    let scale = width as f64 / w0 as f64;
    // What weft's node makes of that factor (latents are 1/8 of the pixel size).
    let unit = if latent { 8 } else { 1 };
    let made = |side: i64| ((side / unit) as f64 * scale).round() as i64;
    if made(w0) != width / unit || made(h0) != height / unit {
        cx.issue(Some("width"), format!("{width}x{height} is not the {w0}x{h0} input scaled by one factor; weft's node keeps the aspect ratio"))
            .hint = Some(format!("use {by}"));
        return;
    }
    cx.put("scale", scale);
    cx.resize_method("upscale_method");
    cx.note(
        None,
        format!("{width}x{height} becomes scale {scale} (the input is {w0}x{h0})"),
    );
}

/// Sizes found by `known_size`, by ComfyUI node id (`None`: not fixed by the graph).
type Sizes = HashMap<String, Option<(i64, i64)>>;

/// The pixel size of a node's output when the graph fixes it (an empty latent, and what is
/// derived from it by samplers, decoders and resizes). Walks upstream iteratively, and
/// remembers in `sizes` the size of every node it passed, so many resizes below one long
/// chain walk it once.
fn known_size(
    nodes: &HashMap<&str, &ComfyNode>,
    start: &str,
    sizes: &mut Sizes,
) -> Option<(i64, i64)> {
    let int = |n: &ComfyNode, name: &str| match n.get(name) {
        Some(ComfyValue::Value(v)) => v.as_i64(),
        _ => None,
    };
    let float = |n: &ComfyNode, name: &str| match n.get(name) {
        Some(ComfyValue::Value(v)) => v.as_f64(),
        _ => None,
    };
    let upstream = |n: &ComfyNode, name: &str| match n.get(name) {
        Some(ComfyValue::Link { node, .. }) => Some(node.clone()),
        _ => None,
    };
    // One step up from `n`: its own fixed size, or the node above it (with the scale factor
    // it applies, if any); `None` when the graph does not fix it.
    enum Step {
        Fixed((i64, i64)),
        Up(String, Option<(f64, i64)>),
    }
    let step = |n: &ComfyNode| -> Option<Step> {
        Some(match n.class.as_str() {
            "EmptyLatentImage" => Step::Fixed((int(n, "width")?, int(n, "height")?)),
            "LatentUpscale" | "ImageScale" => {
                let (w, h) = (int(n, "width")?, int(n, "height")?);
                if w == 0 || h == 0 {
                    return None;
                }
                Step::Fixed((w, h))
            }
            "KSampler" | "KSamplerAdvanced" => Step::Up(upstream(n, "latent_image")?, None),
            "VAEDecode" | "VAEDecodeTiled" => Step::Up(upstream(n, "samples")?, None),
            "VAEEncode" => Step::Up(upstream(n, "pixels")?, None),
            "LatentUpscaleBy" => {
                Step::Up(upstream(n, "samples")?, Some((float(n, "scale_by")?, 8)))
            }
            "ImageScaleBy" => Step::Up(upstream(n, "image")?, Some((float(n, "scale_by")?, 1))),
            _ => return None,
        })
    };
    // Scale factors met on the way up, applied in reverse once the base size is found; each
    // node passed, with how many factors were met below it.
    let mut scales: Vec<(f64, i64)> = Vec::new();
    let mut walked: Vec<(String, usize)> = Vec::new();
    let mut current = start.to_string();
    let base = loop {
        if let Some(&known) = sizes.get(&current) {
            break known;
        }
        // A cycle (the validator reports it) has no size.
        if walked.len() >= nodes.len() {
            break None;
        }
        let Some(n) = nodes.get(current.as_str()) else {
            break None;
        };
        walked.push((current.clone(), scales.len()));
        match step(n) {
            None => break None,
            Some(Step::Fixed(size)) => break Some(size),
            Some(Step::Up(next, scale)) => {
                scales.extend(scale);
                current = next;
            }
        }
    };
    // From the top down, each node's size is the one above it scaled by its own factor.
    let mut size = base;
    let mut applied = scales.len();
    for (id, below) in walked.into_iter().rev() {
        while applied > below {
            applied -= 1;
            let (scale, unit) = scales[applied];
            size = size.map(|(w, h)| {
                (
                    ((w / unit) as f64 * scale).round() as i64 * unit,
                    ((h / unit) as f64 * scale).round() as i64 * unit,
                )
            });
        }
        sizes.insert(id, size);
    }
    size
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    /// Far above linear work on these 100k-node prompts, far below quadratic work.
    const GENEROUS: Duration = Duration::from_secs(10);

    #[test]
    fn two_hundred_thousand_unknown_classes_are_one_issue_in_seconds() {
        let root: serde_json::Map<String, Json> = (0..200_000)
            .map(|i| {
                let node = json!({"class_type": format!("Custom{i}"), "inputs": {}});
                (i.to_string(), node)
            })
            .collect();
        let started = Instant::now();
        let errors = import(&Json::Object(root), &ImportOptions::default()).unwrap_err();
        let took = started.elapsed();
        assert!(took < GENEROUS, "took {took:?}");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].message.starts_with("200000 ComfyUI node types"),
            "{}",
            &errors[0].message[..100]
        );
    }

    #[test]
    fn a_hundred_thousand_ids_that_clean_to_one_name_are_named_in_seconds() {
        // Seven marks, seven long: every id becomes `latent________` before its suffix.
        let marks: Vec<char> = "!#$%&*+".chars().collect();
        let id = |mut i: usize| -> String {
            (0..7)
                .map(|_| {
                    let c = marks[i % 7];
                    i /= 7;
                    c
                })
                .collect()
        };
        let root: serde_json::Map<String, Json> = (0..100_000)
            .map(|i| {
                let node = json!({"class_type": "EmptyLatentImage",
                    "inputs": {"width": 64, "height": 64, "batch_size": 1}});
                (id(i), node)
            })
            .collect();
        let (nodes, _) = read(&Json::Object(root)).unwrap();
        let started = Instant::now();
        let imported = convert(&nodes, &ImportOptions::default());
        let took = started.elapsed();
        assert!(took < GENEROUS, "took {took:?}");
        let imported = imported.unwrap_or_else(|e| panic!("{:?}", &e[..1]));
        assert_eq!(imported.workflow.nodes.len(), 100_000);
        let base = "latent________";
        assert!(imported.workflow.nodes.contains_key(base));
        assert!(imported
            .workflow
            .nodes
            .contains_key(&format!("{base}_100000")));
    }

    #[test]
    fn resizes_below_one_long_chain_of_scalings_learn_their_sizes_in_seconds() {
        // An empty latent, 20k LatentUpscaleBy in a row (x2, x0.5, x2, ...), and below each a
        // LatentUpscale to twice its size: each resize walked the chain up to the latent,
        // 2 * 10^8 steps in all.
        const CHAIN: usize = 20_000;
        let mut root = serde_json::Map::new();
        root.insert(
            "e".into(),
            json!({"class_type": "EmptyLatentImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1}}),
        );
        for k in 1..=CHAIN {
            let above = if k == 1 {
                "e".to_string()
            } else {
                format!("b{}", k - 1)
            };
            let scale_by = if k % 2 == 1 { 2.0 } else { 0.5 };
            root.insert(
                format!("b{k}"),
                json!({"class_type": "LatentUpscaleBy", "inputs": {
                    "upscale_method": "nearest-exact", "scale_by": scale_by, "samples": [above, 0]}}),
            );
            let side = if k % 2 == 1 { 256 } else { 128 };
            root.insert(
                format!("u{k}"),
                json!({"class_type": "LatentUpscale", "inputs": {"upscale_method": "nearest-exact",
                    "width": side, "height": side, "crop": "disabled", "samples": [format!("b{k}"), 0]}}),
            );
        }
        let (nodes, _) = read(&Json::Object(root)).unwrap();
        let started = Instant::now();
        let imported = convert(&nodes, &ImportOptions::default());
        let took = started.elapsed();
        assert!(took < GENEROUS, "took {took:?}");
        let imported = imported.unwrap_or_else(|e| panic!("{:?}", &e[..1]));
        let scaled_twice = |n: &&Issue| {
            n.message == "256x256 becomes scale 2 (the input is 128x128)"
                || n.message == "128x128 becomes scale 2 (the input is 64x64)"
        };
        assert_eq!(
            imported.notes.iter().filter(scaled_twice).count(),
            CHAIN,
            "{:?}",
            &imported.notes[..3]
        );
    }

    #[test]
    fn many_inputs_through_one_long_chain_of_reroutes_resolve_in_seconds() {
        // EmptyLatentImage 1 -> reroutes 2..=20001 -> 20k VAEDecodes: each decode's link walked
        // the whole chain, 4 * 10^8 hops in all.
        const CHAIN: u64 = 20_000;
        let mut nodes = vec![json!({"id": 1, "type": "EmptyLatentImage", "mode": 0,
            "widgets_values": [64, 64, 1], "outputs": [{"name": "LATENT", "type": "LATENT"}]})];
        let mut links = Vec::new();
        for id in 2..=CHAIN + 1 {
            nodes.push(json!({"id": id, "type": "Reroute", "mode": 0,
                "inputs": [{"name": "", "type": "*", "link": id - 1}],
                "outputs": [{"name": "", "type": "LATENT"}]}));
            links.push(json!([id - 1, id - 1, 0, id, 0, "LATENT"]));
        }
        let last = CHAIN + 1;
        for i in 0..CHAIN {
            let (id, link) = (last + 1 + i, last + i);
            nodes.push(json!({"id": id, "type": "VAEDecode", "mode": 0,
                "inputs": [{"name": "samples", "type": "LATENT", "link": link}]}));
            links.push(json!([link, last, 0, id, 0, "LATENT"]));
        }
        let root = json!({"nodes": nodes, "links": links});
        let started = Instant::now();
        let (read_nodes, _) = read(&root).unwrap();
        let took = started.elapsed();
        assert!(took < GENEROUS, "took {took:?}");
        assert_eq!(read_nodes.len(), 1 + CHAIN as usize);
        let from_the_latent = ComfyValue::Link {
            node: "1".into(),
            slot: 0,
        };
        assert!(read_nodes[1..]
            .iter()
            .all(|n| n.get("samples") == Some(&from_the_latent)));
    }

    /// ComfyUI reads `[red]` as the words; weft would lower their weight. Imported, the
    /// brackets are weft's literal ones, so both encode the same tokens at weight 1; exported,
    /// they are ComfyUI's plain brackets again.
    #[test]
    fn comfyuis_square_brackets_stay_words_through_import_and_export() {
        let prompt = json!({
            "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 7, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
                  "model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0], "latent_image": ["5", 0]}},
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a [red] (cat:1.2) \\[x", "clip": ["4", 1]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}}
        });
        let imported = import(&prompt, &ImportOptions::default()).unwrap();
        let (id, node) = imported
            .workflow
            .nodes
            .iter()
            .find(|(_, n)| n.type_name == "PromptEncode")
            .unwrap();
        let InputValue::Constant(Constant::String(text)) = &node.inputs["text"].value else {
            panic!("{id}: {:?}", node.inputs["text"]);
        };
        let segments = weft_nodes::models::prompt_weighting::parse_weighted(text);
        assert_eq!(
            segments,
            vec![
                ("a [red] ".to_string(), 1.0),
                ("cat".to_string(), 1.2),
                (" \\[x".to_string(), 1.0)
            ],
            "weft reads {text:?}"
        );
        let registry = weft_nodes::registry();
        let exported =
            super::super::export::export(&imported.workflow, &registry, "inputs").unwrap();
        let texts: Vec<&Json> = exported
            .json
            .as_object()
            .unwrap()
            .values()
            .filter(|n| n["class_type"] == "CLIPTextEncode")
            .map(|n| &n["inputs"]["text"])
            .collect();
        assert_eq!(texts, [&json!("a [red] (cat:1.2) \\[x")]);
        assert!(exported.notes.is_empty(), "{:?}", exported.notes);

        // weft's own `[soft]` (a lower weight) has no ComfyUI spelling: said in a note.
        let mut softened = imported.workflow.clone();
        softened
            .nodes
            .get_mut(id)
            .unwrap()
            .inputs
            .get_mut("text")
            .unwrap()
            .value = InputValue::Constant(Constant::String("a [soft] b".into()));
        let exported = super::super::export::export(&softened, &registry, "inputs").unwrap();
        assert!(
            exported
                .notes
                .iter()
                .any(|n| n.message.contains("square brackets")),
            "{:?}",
            exported.notes
        );
    }

    #[test]
    fn seeds_are_taken_whole_over_comfyuis_u64_range_and_never_clamped() {
        let prompt = |seed: Json| {
            json!({
                "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 2, "cfg": 7, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
                      "model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0], "latent_image": ["5", 0]}},
                "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
                "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["4", 1]}},
                "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
                "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}}
            })
        };
        let seed_of = |seed: Json| {
            let imported = import(&prompt(seed), &ImportOptions::default()).unwrap();
            imported.workflow.nodes["ksampler_3"].inputs["seed"]
                .value
                .clone()
        };
        for (seed, want) in [
            (json!(7), Constant::Int(7)),
            (json!(i64::MAX), Constant::Int(i64::MAX)),
            (
                json!((1u64 << 63) + 12345),
                Constant::UInt((1u64 << 63) + 12345),
            ),
            (json!(u64::MAX), Constant::UInt(u64::MAX)),
            (json!(12.0), Constant::Int(12)),
        ] {
            assert_eq!(seed_of(seed.clone()), InputValue::Constant(want), "{seed}");
        }
        // Not a seed: refused with the range, never clamped.
        let refused = import(&prompt(json!(-1.5)), &ImportOptions::default()).unwrap_err();
        assert!(refused[0].message.contains("2^64 - 1"), "{:?}", refused[0]);
    }

    #[test]
    fn numeric_ids_get_roles_and_names_are_kept() {
        let root = json!({
            "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 7, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
                  "model": ["ckpt", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["9:2", 0]}},
            "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["ckpt", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "b", "clip": ["ckpt", 1]}},
            "9:2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "10": {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}},
            "11": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["ckpt", 2]}}
        });
        let imported = import(&root, &ImportOptions::default()).unwrap();
        let ids: Vec<&str> = imported.workflow.nodes.keys().map(String::as_str).collect();
        // Dependencies first; among ready nodes, numeric ids in order, then the rest.
        assert_eq!(
            ids,
            [
                "ckpt",
                "positive_6",
                "negative_7",
                "latent_9_2",
                "ksampler_3",
                "decode_11",
                "preview_10"
            ]
        );
        let wf = &imported.workflow;
        assert_eq!(
            wf.nodes["ckpt"].inputs["name"].value,
            InputValue::Constant(Constant::String("checkpoints/sd15.safetensors".into()))
        );
        assert_eq!(wf.nodes["preview_10"].type_name, "SaveImage");
        assert_eq!(imported.notes.len(), 1, "{:?}", imported.notes);
    }

    #[test]
    fn image_batch_maps_one_to_one_and_exports_back() {
        let root = json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
            "2": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
            "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
            "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "both"}}
        });
        let imported = import(&root, &ImportOptions::default()).unwrap();
        let wf = &imported.workflow;
        let batch = &wf.nodes["batch_3"];
        assert_eq!(batch.type_name, "ImageBatch");
        let link = |input: &str| match &batch.inputs[input].value {
            InputValue::Link(l) => format!("{}.{}", l.node, l.output),
            other => panic!("{input}: {other:?}"),
        };
        assert_eq!(link("image1"), "load_image_1.image");
        assert_eq!(link("image2"), "load_image_2.image");
        let exported = crate::comfy::export::export(wf, &weft_nodes::registry(), "input")
            .unwrap()
            .json;
        assert_eq!(exported["3"]["class_type"], "ImageBatch");
        assert_eq!(exported["3"]["inputs"]["image2"], json!(["2", 0]));
    }

    #[test]
    fn load_image_mask_output_and_an_unmasked_composite_map_both_ways() {
        let root = json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
            "2": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["5", 0], "mask": ["1", 1]}},
            "3": {"class_type": "ImageCompositeMasked", "inputs": {"destination": ["1", 0], "source": ["1", 0],
                  "x": 8, "y": 0, "resize_source": false}},
            "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "c"}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
        });
        let imported = import(&root, &ImportOptions::default()).unwrap();
        let wf = &imported.workflow;
        match &wf.nodes["noise_mask_2"].inputs["mask"].value {
            InputValue::Link(l) => assert_eq!(
                (l.node.as_str(), l.output.as_str()),
                ("load_image_1", "mask")
            ),
            other => panic!("{other:?}"),
        }
        let composite = &wf.nodes["composite_3"];
        assert!(!composite.inputs.contains_key("mask"));
        let exported = crate::comfy::export::export(wf, &weft_nodes::registry(), "input")
            .unwrap()
            .json;
        assert_eq!(exported["2"]["inputs"]["mask"], json!(["1", 1]));
        assert_eq!(exported["3"]["inputs"]["x"], json!(8));
        assert_eq!(exported["3"]["inputs"]["resize_source"], json!(false));
        assert!(exported["3"]["inputs"].get("mask").is_none());
    }

    #[test]
    fn lora_loaders_chain_import_to_load_lora_and_export_back() {
        let root = json!({
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
            "10": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                   "lora_name": "styles/ink.safetensors", "strength_model": 0.5, "strength_clip": 0.25}},
            "11": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["10", 0],
                   "lora_name": "detail.safetensors", "strength_model": -1.5}},
            "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["10", 1]}},
            "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 7, "sampler_name": "euler",
                  "scheduler": "normal", "denoise": 1, "model": ["11", 0], "positive": ["6", 0],
                  "negative": ["6", 0], "latent_image": ["5", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}}
        });
        let imported = import(&root, &ImportOptions::default()).unwrap();
        let wf = &imported.workflow;
        let lora = &wf.nodes["lora_10"];
        assert_eq!(lora.type_name, "LoadLora");
        let value = |node: &NodeEntry, input: &str| match &node.inputs[input].value {
            InputValue::Link(l) => format!("${}.{}", l.node, l.output),
            InputValue::Constant(c) => format!("{c:?}"),
        };
        assert_eq!(value(lora, "model"), "$checkpoint_4.unet");
        assert_eq!(value(lora, "text_encoder"), "$checkpoint_4.text_encoder");
        assert!(value(lora, "lora").contains("loras/styles/ink.safetensors"));
        assert!(value(lora, "strength_clip").contains("0.25"));
        let model_only = &wf.nodes["lora_11"];
        assert_eq!(model_only.type_name, "LoadLoraModelOnly");
        assert_eq!(value(model_only, "model"), "$lora_10.model");
        assert_eq!(
            value(&wf.nodes["prompt_6"], "encoder"),
            "$lora_10.text_encoder"
        );
        assert_eq!(value(&wf.nodes["ksampler_3"], "model"), "$lora_11.model");

        let exported = crate::comfy::export::export(wf, &weft_nodes::registry(), "input")
            .unwrap()
            .json;
        assert_eq!(exported["10"]["class_type"], "LoraLoader");
        assert_eq!(
            exported["10"]["inputs"]["lora_name"],
            "styles/ink.safetensors"
        );
        assert_eq!(exported["10"]["inputs"]["clip"], json!(["4", 1]));
        assert_eq!(exported["10"]["inputs"]["strength_clip"], json!(0.25));
        assert_eq!(exported["11"]["class_type"], "LoraLoaderModelOnly");
        assert_eq!(exported["11"]["inputs"]["model"], json!(["10", 0]));
        assert_eq!(exported["6"]["inputs"]["clip"], json!(["10", 1]));
        assert_eq!(exported["3"]["inputs"]["model"], json!(["11", 0]));
    }

    #[test]
    fn ui_widgets_skip_the_seed_control_value_and_follow_converted_inputs() {
        let root = json!({
            "nodes": [
                {"id": 1, "type": "KSamplerAdvanced", "mode": 0, "pos": [10, 20],
                 "inputs": [{"name": "model", "type": "MODEL", "link": null}],
                 "widgets_values": ["enable", 77, "increment", 12, 6.5, "heun", "karras", 3, 10000, "disable"]},
                {"id": 2, "type": "EmptyLatentImage", "mode": 0, "pos": {"0": 1.5, "1": 2}, "widgets_values": [64, 128, 2]}
            ],
            "links": []
        });
        let (nodes, format) = read(&root).unwrap();
        assert_eq!(format, Format::Ui);
        let k = &nodes[0];
        assert_eq!(k.get("noise_seed"), Some(&ComfyValue::Value(json!(77))));
        assert_eq!(k.get("steps"), Some(&ComfyValue::Value(json!(12))));
        assert_eq!(k.get("start_at_step"), Some(&ComfyValue::Value(json!(3))));
        assert_eq!(
            k.get("return_with_leftover_noise"),
            Some(&ComfyValue::Value(json!("disable")))
        );
        assert_eq!(k.pos, Some([10.0, 20.0]));
        assert_eq!(nodes[1].pos, Some([1.5, 2.0]));
        assert_eq!(nodes[1].get("height"), Some(&ComfyValue::Value(json!(128))));
    }

    #[test]
    fn value_nodes_and_bypassed_nodes_resolve_like_comfyui() {
        // API: a PrimitiveInt feeding a seed is written in place.
        let root = json!({
            "1": {"class_type": "PrimitiveInt", "inputs": {"value": 1234}},
            "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-shapes"}},
            "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["3", 1]}},
            "5": {"class_type": "KSampler", "inputs": {"seed": ["1", 0], "steps": 2, "cfg": 7, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
                  "model": ["3", 0], "positive": ["4", 0], "negative": ["4", 0], "latent_image": ["2", 0]}}
        });
        let imported = import(&root, &ImportOptions::default()).unwrap();
        let wf = &imported.workflow;
        assert_eq!(wf.nodes.len(), 4);
        assert_eq!(
            wf.nodes["ksampler_5"].inputs["seed"].value,
            InputValue::Constant(Constant::Int(1234))
        );
        // A name without a checkpoint extension is weft's own and kept.
        assert_eq!(
            wf.nodes["checkpoint_3"].inputs["name"].value,
            InputValue::Constant(Constant::String("tiny-shapes".into()))
        );

        // UI: a bypassed node of a type weft does not have passes its LATENT input on.
        let root = json!({
            "nodes": [
                {"id": 1, "type": "EmptyLatentImage", "mode": 0, "widgets_values": [64, 64, 1],
                 "outputs": [{"name": "LATENT", "type": "LATENT", "links": [1]}]},
                {"id": 2, "type": "SomeCustomLatentFilter", "mode": 4, "widgets_values": ["nearest-exact", 2],
                 "inputs": [{"name": "samples", "type": "LATENT", "link": 1}],
                 "outputs": [{"name": "LATENT", "type": "LATENT", "links": [2]}]},
                {"id": 3, "type": "VAEDecode", "mode": 0,
                 "inputs": [{"name": "samples", "type": "LATENT", "link": 2}, {"name": "vae", "type": "VAE", "link": null}]}
            ],
            "links": [[1, 1, 0, 2, 0, "LATENT"], [2, 2, 0, 3, 0, "LATENT"]]
        });
        let (nodes, _) = read(&root).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(
            nodes[1].get("samples"),
            Some(&ComfyValue::Link {
                node: "1".into(),
                slot: 0
            })
        );
        // The VAE input is missing: a located error.
        let errors = convert(&nodes, &ImportOptions::default()).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].node.as_deref(), Some("3"));
        assert_eq!(errors[0].input.as_deref(), Some("vae"));
    }

    #[test]
    fn titles_colours_and_collapsed_flags_become_appearance() {
        let root = json!({
            "nodes": [
                {"id": 1, "type": "EmptyLatentImage", "mode": 0, "widgets_values": [64, 64, 1],
                 "title": "Canvas size", "color": "#232", "flags": {"collapsed": true},
                 "outputs": [{"name": "LATENT", "type": "LATENT", "links": []}]},
                {"id": 2, "type": "CheckpointLoaderSimple", "mode": 0, "widgets_values": ["tiny-shapes"],
                 "title": "Load Checkpoint", "flags": {}}
            ],
            "links": []
        });
        let wf = import(&root, &ImportOptions::default()).unwrap().workflow;
        let latent = wf
            .nodes
            .iter()
            .find(|(_, n)| n.type_name == "EmptyLatent")
            .map(|(id, _)| id.clone())
            .unwrap();
        assert_eq!(
            wf.appearance[&latent],
            Appearance {
                title: Some("Canvas size".into()),
                color: Some("#232".into()),
                collapsed: true
            }
        );
        // ComfyUI's own name for the type is no title of the user's.
        assert_eq!(wf.appearance.len(), 1, "{:?}", wf.appearance);
        assert!(
            wf.to_yaml().contains("collapsed: true}"),
            "{}",
            wf.to_yaml()
        );
        // An API prompt's `_meta.title` that only names the type gives nothing either.
        let api = json!({"1": {"class_type": "EmptyLatentImage", "_meta": {"title": "Empty Latent Image"},
                               "inputs": {"width": 64, "height": 64, "batch_size": 1}}});
        let wf = import(&api, &ImportOptions::default()).unwrap().workflow;
        assert!(wf.appearance.is_empty(), "{:?}", wf.appearance);
    }

    #[test]
    fn muted_and_bypassed_nodes_of_known_types_keep_their_modes() {
        let root = json!({
            "nodes": [
                {"id": 1, "type": "EmptyLatentImage", "mode": 0, "widgets_values": [64, 64, 1],
                 "outputs": [{"name": "LATENT", "type": "LATENT", "links": [1]}]},
                {"id": 2, "type": "LatentUpscaleBy", "mode": 4, "widgets_values": ["nearest-exact", 2],
                 "inputs": [{"name": "samples", "type": "LATENT", "link": 1}],
                 "outputs": [{"name": "LATENT", "type": "LATENT", "links": [2]}]},
                {"id": 3, "type": "CheckpointLoaderSimple", "mode": 0, "widgets_values": ["tiny-shapes"]},
                {"id": 4, "type": "VAEDecode", "mode": 0,
                 "inputs": [{"name": "samples", "type": "LATENT", "link": 2}, {"name": "vae", "type": "VAE", "link": 3}]},
                {"id": 5, "type": "SaveImage", "mode": 0, "widgets_values": ["kept"],
                 "inputs": [{"name": "images", "type": "IMAGE", "link": 4}]},
                {"id": 6, "type": "PreviewImage", "mode": 2,
                 "inputs": [{"name": "images", "type": "IMAGE", "link": 5}]}
            ],
            "links": [[1, 1, 0, 2, 0, "LATENT"], [2, 2, 0, 4, 0, "LATENT"], [3, 3, 2, 4, 1, "VAE"],
                      [4, 4, 0, 5, 0, "IMAGE"], [5, 4, 0, 6, 0, "IMAGE"]],
            "groups": [{"title": "Decode", "bounding": [10, 20, 500, 300.5], "color": "#3f789e", "font_size": 24},
                       {"title": "broken", "bounding": [1, 2]}]
        });
        let imported = import(&root, &ImportOptions::default()).unwrap();
        let wf = &imported.workflow;
        let mode_of = |class: &str| {
            wf.nodes
                .values()
                .filter(|n| n.type_name == class)
                .map(|n| n.mode)
                .collect::<Vec<_>>()
        };
        assert_eq!(mode_of("LatentUpscale"), [NodeMode::Bypass]);
        assert_eq!(mode_of("SaveImage"), [NodeMode::Normal, NodeMode::Mute]);
        assert_eq!(ui_mode(NodeMode::Bypass), 4);
        assert_eq!(ui_mode(NodeMode::Mute), 2);
        assert!(
            wf.to_yaml().contains("    bypass: true\n"),
            "{}",
            wf.to_yaml()
        );
        // Groups come along (one without a box is left out).
        assert_eq!(
            wf.groups,
            [Group {
                title: "Decode".into(),
                color: Some("#3f789e".into()),
                bounds: [10.0, 20.0, 500.0, 300.5]
            }]
        );
        // An API prompt holds what runs: the decoder reads the empty latent, the preview is gone.
        let exported = crate::comfy::export::export(wf, &weft_nodes::registry(), "input")
            .unwrap()
            .json;
        let classes: Vec<&str> = exported
            .as_object()
            .unwrap()
            .values()
            .map(|n| n["class_type"].as_str().unwrap())
            .collect();
        assert!(!classes.contains(&"LatentUpscaleBy"), "{exported}");
        assert_eq!(
            classes.iter().filter(|c| **c == "SaveImage").count(),
            1,
            "{exported}"
        );
        assert_eq!(
            exported["4"]["inputs"]["samples"],
            json!(["1", 0]),
            "{exported}"
        );
    }
}
