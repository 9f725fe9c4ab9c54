//! The canonical writers: YAML (one line an input, one layout line a node, so a change
//! diffs as the lines it touches) and JSON with the same structure.
use super::{InputValue, Workflow};
use crate::value::Constant;
use crate::yaml::{type_plain_scalar, PlainScalar};

impl Workflow {
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
