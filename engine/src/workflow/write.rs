//! The canonical writers: YAML (one line an input, one layout line a node, so a change
//! diffs as the lines it touches) and JSON with the same structure.
use super::{ExposedInput, InputValue, Interface, Workflow};
use crate::sweep::{AxisValues, Sweep};
use crate::value::Constant;
use crate::yaml::{type_plain_scalar, PlainScalar};

impl Workflow {
    /// Writes the canonical YAML form: node ids, input order and values kept; one layout line a node.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        out.push_str("# yaml-language-server: $schema=schema.json\n");
        out.push_str(&format!("weft: {}\n", self.version));
        if let Some(interface) = &self.interface {
            write_interface(&mut out, interface);
        }
        out.push_str("nodes:\n");
        for (id, node) in &self.nodes {
            out.push_str(&format!(
                "  {}:\n    type: {}\n",
                yaml_key(id),
                yaml_string(&node.type_name)
            ));
            if let Some(key) = node.mode.key() {
                out.push_str(&format!("    {key}: true\n"));
            }
            for (name, input) in &node.inputs {
                out.push_str(&format!(
                    "    {}: {}\n",
                    yaml_key(name),
                    yaml_value(&input.value)
                ));
            }
        }
        if let Some(sweep) = &self.sweep {
            write_sweep(&mut out, sweep);
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
        let looks: Vec<_> = self
            .appearance
            .iter()
            .filter(|(_, look)| !look.is_default())
            .collect();
        if !looks.is_empty() {
            out.push_str("appearance:\n");
            for (id, look) in looks {
                let mut fields = Vec::new();
                if let Some(t) = &look.title {
                    fields.push(format!("title: {}", json_quoted(t)));
                }
                if let Some(c) = &look.color {
                    fields.push(format!("color: {}", json_quoted(c)));
                }
                if look.collapsed {
                    fields.push("collapsed: true".into());
                }
                out.push_str(&format!("  {}: {{{}}}\n", yaml_key(id), fields.join(", ")));
            }
        }
        if !self.groups.is_empty() {
            out.push_str("groups:\n");
            for g in &self.groups {
                let color = g
                    .color
                    .as_ref()
                    .map(|c| format!(", color: {}", json_quoted(c)))
                    .unwrap_or_default();
                let [x, y, w, h] = g.bounds.map(fmt_number);
                out.push_str(&format!(
                    "  - {{title: {}{color}, box: [{x}, {y}, {w}, {h}]}}\n",
                    json_quoted(&g.title)
                ));
            }
        }
        if !self.reroutes.is_empty() {
            out.push_str("reroutes:\n");
            for (id, r) in &self.reroutes {
                let to: Vec<String> = r.to.iter().map(|(n, i)| format!("{n}.{i}")).collect();
                out.push_str(&format!(
                    "  {}: {{at: [{}, {}], from: {}.{}, to: [{}]}}\n",
                    yaml_key(id),
                    fmt_number(r.at[0]),
                    fmt_number(r.at[1]),
                    r.from.node,
                    r.from.output,
                    to.join(", ")
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
            if let Some(key) = node.mode.key() {
                obj.insert(key.into(), true.into());
            }
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
        if let Some(interface) = &self.interface {
            let (inputs, outputs) = interface_json(interface);
            root.insert("inputs".into(), inputs);
            root.insert("outputs".into(), outputs);
        }
        if let Some(sweep) = &self.sweep {
            root.insert("sweep".into(), sweep_json(sweep));
        }
        if !self.layout.is_empty() {
            let layout: serde_json::Map<String, serde_json::Value> = self
                .layout
                .iter()
                .map(|(id, p)| (id.clone(), serde_json::json!(p)))
                .collect();
            root.insert("layout".into(), layout.into());
        }
        let looks: serde_json::Map<String, serde_json::Value> = self
            .appearance
            .iter()
            .filter(|(_, look)| !look.is_default())
            .map(|(id, look)| {
                let mut o = serde_json::Map::new();
                if let Some(t) = &look.title {
                    o.insert("title".into(), t.clone().into());
                }
                if let Some(c) = &look.color {
                    o.insert("color".into(), c.clone().into());
                }
                if look.collapsed {
                    o.insert("collapsed".into(), true.into());
                }
                (id.clone(), o.into())
            })
            .collect();
        if !looks.is_empty() {
            root.insert("appearance".into(), looks.into());
        }
        if !self.groups.is_empty() {
            let groups: Vec<serde_json::Value> = self
                .groups
                .iter()
                .map(|g| {
                    let mut o = serde_json::json!({"title": g.title, "box": g.bounds});
                    if let Some(c) = &g.color {
                        o["color"] = c.clone().into();
                    }
                    o
                })
                .collect();
            root.insert("groups".into(), groups.into());
        }
        if !self.reroutes.is_empty() {
            let reroutes: serde_json::Map<String, serde_json::Value> = self
                .reroutes
                .iter()
                .map(|(id, r)| {
                    let to: Vec<String> = r.to.iter().map(|(n, i)| format!("{n}.{i}")).collect();
                    let point = serde_json::json!({
                        "at": r.at,
                        "from": format!("{}.{}", r.from.node, r.from.output),
                        "to": to,
                    });
                    (id.clone(), point)
                })
                .collect();
            root.insert("reroutes".into(), reroutes.into());
        }
        root.into()
    }
}

fn write_sweep(out: &mut String, sweep: &Sweep) {
    out.push_str(&format!("sweep:\n  mode: {}\n  axes:\n", sweep.mode.name()));
    for (name, axis) in &sweep.axes {
        let values = match &axis.values {
            AxisValues::List(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(|(c, _)| yaml_value(&InputValue::Constant(c.clone())))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            AxisValues::Range(text, _) => yaml_string(text),
        };
        out.push_str(&format!("    {}: {values}\n", yaml_key(name)));
    }
}

fn constant_json(c: &Constant) -> serde_json::Value {
    match c {
        Constant::String(s) => serde_json::Value::String(escape_dollar(s)),
        c => serde_json::to_value(c).unwrap_or(serde_json::Value::Null),
    }
}

/// The `sweep` section in JSON: `{"mode", "axes": {"node.input": [values] | "range"}}`.
pub fn sweep_json(sweep: &Sweep) -> serde_json::Value {
    let axes: serde_json::Map<String, serde_json::Value> = sweep
        .axes
        .iter()
        .map(|(name, axis)| {
            let values = match &axis.values {
                AxisValues::List(items) => {
                    serde_json::Value::Array(items.iter().map(|(c, _)| constant_json(c)).collect())
                }
                AxisValues::Range(text, _) => serde_json::Value::String(text.clone()),
            };
            (name.clone(), values)
        })
        .collect();
    serde_json::json!({"mode": sweep.mode.name(), "axes": axes})
}

pub(super) fn escape_dollar(s: &str) -> String {
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

/// Always quoted (a JSON string is a YAML double-quoted scalar): inside a flow mapping a plain
/// `,` or `#` would end the value.
fn json_quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
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

/// The fields of an exposed input, in declaration order, as (key, YAML scalar text).
fn input_fields(input: &ExposedInput) -> Vec<(&'static str, String)> {
    let mut fields = vec![("type", input.ty.name().to_string())];
    if let Some(default) = &input.default {
        fields.push((
            "default",
            yaml_value(&InputValue::Constant(default.clone())),
        ));
    }
    if let Some(min) = input.min {
        fields.push(("min", format!("{min:?}")));
    }
    if let Some(max) = input.max {
        fields.push(("max", format!("{max:?}")));
    }
    if !input.choices.is_empty() {
        let choices: Vec<String> = input.choices.iter().map(|c| yaml_string(c)).collect();
        fields.push(("choices", format!("[{}]", choices.join(", "))));
    }
    if input.optional {
        fields.push(("optional", "true".into()));
    }
    if !input.doc.is_empty() {
        fields.push(("doc", yaml_string(&input.doc)));
    }
    fields
}

fn write_interface(out: &mut String, interface: &Interface) {
    out.push_str("inputs:\n");
    for (name, input) in &interface.inputs {
        out.push_str(&format!("  {}:\n", yaml_key(name)));
        for (key, value) in input_fields(input) {
            out.push_str(&format!("    {key}: {value}\n"));
        }
    }
    out.push_str("outputs:\n");
    for (name, output) in &interface.outputs {
        let link = format!("${}.{}", output.from.node, output.from.output);
        if output.doc.is_empty() {
            out.push_str(&format!("  {}: {link}\n", yaml_key(name)));
        } else {
            out.push_str(&format!(
                "  {}:\n    from: {link}\n    doc: {}\n",
                yaml_key(name),
                yaml_string(&output.doc)
            ));
        }
    }
}

fn interface_json(interface: &Interface) -> (serde_json::Value, serde_json::Value) {
    let mut inputs = serde_json::Map::new();
    for (name, input) in &interface.inputs {
        let mut fields = serde_json::Map::new();
        fields.insert("type".into(), input.ty.name().into());
        if let Some(default) = &input.default {
            let value = match default {
                Constant::String(s) => escape_dollar(s).into(),
                other => serde_json::to_value(other).unwrap_or_default(),
            };
            fields.insert("default".into(), value);
        }
        if let Some(min) = input.min {
            fields.insert("min".into(), min.into());
        }
        if let Some(max) = input.max {
            fields.insert("max".into(), max.into());
        }
        if !input.choices.is_empty() {
            fields.insert("choices".into(), input.choices.clone().into());
        }
        if input.optional {
            fields.insert("optional".into(), true.into());
        }
        if !input.doc.is_empty() {
            fields.insert("doc".into(), input.doc.clone().into());
        }
        inputs.insert(name.clone(), fields.into());
    }
    let mut outputs = serde_json::Map::new();
    for (name, output) in &interface.outputs {
        let link = format!("${}.{}", output.from.node, output.from.output);
        let value = if output.doc.is_empty() {
            link.into()
        } else {
            serde_json::json!({"from": link, "doc": output.doc})
        };
        outputs.insert(name.clone(), value);
    }
    (inputs.into(), outputs.into())
}
