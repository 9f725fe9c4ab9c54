//! The JSON Schema of the workflow file, generated from the node declarations, so an editor
//! completes node types and each type's inputs, defaults, ranges and choices.
use schemars::Schema;
use serde_json::{json, Map, Value as Json};

use crate::model_folders::ModelFolders;
use crate::node::InputSpec;
use crate::registry::Registry;
use crate::value::{Constant, ValueType};
use crate::workflow::Interface;

pub const LINK_PATTERN: &str = r"^\$[A-Za-z0-9_-]+\.[A-Za-z0-9_]+$";

/// The schema; with `models`, inputs that name models suggest those found there.
pub fn workflow_schema(registry: &Registry, models: Option<&ModelFolders>) -> Schema {
    workflow_schema_with_subgraphs(registry, models, &[])
}

/// The schema, with library subgraphs (name, interface) listed as node types too.
pub fn workflow_schema_with_subgraphs(
    registry: &Registry,
    models: Option<&ModelFolders>,
    subgraphs: &[(String, Interface)],
) -> Schema {
    let mut defs = Map::new();
    defs.insert(
        "link".into(),
        json!({"type": "string", "pattern": LINK_PATTERN, "description": "a link to another node's output: $node.output"}),
    );
    let mut branches = Vec::new();
    let mut type_names: Vec<&str> = registry.type_names().collect();
    type_names.extend(subgraphs.iter().map(|(name, _)| name.as_str()));
    for registered in registry.iter() {
        let spec = &registered.spec;
        let mut properties = Map::new();
        properties.insert(
            "type".into(),
            json!({"const": spec.type_name, "description": spec.doc}),
        );
        insert_mode_keys(&mut properties);
        let mut required = vec![json!("type")];
        for input in &spec.inputs {
            let mut schema = input_schema(input);
            if let (Some(models), Some(_)) = (models, input.listed_from) {
                // Suggestions, not an enum: a path to a model elsewhere is valid too.
                schema["examples"] = json!(registry.listed_choices(input, models));
            }
            properties.insert(input.name.into(), schema);
            if input.is_required() {
                required.push(json!(input.name));
            }
        }
        let def_name = format!("node.{}", spec.type_name);
        defs.insert(
            def_name.clone(),
            json!({
                "type": "object",
                "title": spec.type_name,
                "description": format!("{} ({})", spec.doc, spec.category),
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            }),
        );
        branches.push(json!({
            "if": {"properties": {"type": {"const": spec.type_name}}, "required": ["type"]},
            "then": {"$ref": format!("#/$defs/{def_name}")},
        }));
    }
    for (name, interface) in subgraphs {
        let (def_name, def) = subgraph_def(name, interface);
        defs.insert(def_name.clone(), def);
        branches.push(json!({
            "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
            "then": {"$ref": format!("#/$defs/{def_name}")},
        }));
    }
    let node = json!({
        "type": "object",
        "required": ["type"],
        "properties": {"type": {
            "anyOf": [{"enum": type_names}, {"type": "string", "pattern": "\\.(yaml|yml|json)$"}],
            "description": "the node type (`weft nodes` lists them), or a subgraph file: ./lib/x.yaml",
        }},
        "allOf": branches,
    });
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://weft.invalid/schema/workflow.json",
        "title": "weft workflow",
        "description": "A weft workflow: nodes by id, each with a type and named inputs; links are $node.output",
        "type": "object",
        "required": ["weft", "nodes"],
        "additionalProperties": false,
        "properties": {
            "weft": {"const": 1, "description": "format version"},
            "nodes": {
                "type": "object",
                "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
                "additionalProperties": node,
            },
            "inputs": {
                "type": "object",
                "description": "a subgraph's exposed inputs: name -> {type, default, doc, optional, min, max, choices}",
            },
            "outputs": {
                "type": "object",
                "description": "a subgraph's exposed outputs: name -> $node.output (or {from, doc})",
            },
            "sweep": {
                "type": "object",
                "description": "a parameter sweep: one run per cell, shared nodes run once (README, Sweeps)",
                "additionalProperties": false,
                "properties": {
                    "mode": {"enum": ["grid", "zip"], "default": "grid", "description": "grid: the cross product of the axes; zip: axes of equal length taken together"},
                    "axes": {
                        "type": "object",
                        "description": "NODE.INPUT -> a list of values, or a range FROM..TO / FROM..TO step S (inclusive); the first axis gives the grid's rows, the second its columns",
                        "propertyNames": {"pattern": "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_]+$"},
                        "additionalProperties": {"anyOf": [
                            {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "integer", "boolean"]}},
                            {"type": "string", "pattern": "^\\s*-?[0-9.eE+-]+\\s*\\.\\.\\s*-?[0-9.eE+-]+\\s*( step\\s+-?[0-9.eE+-]+\\s*)?$"},
                        ]},
                    },
                },
            },
            "layout": {
                "type": "object",
                "description": "editor positions, one line per node",
                "additionalProperties": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
            },
            "appearance": {
                "type": "object",
                "description": "how the editor draws nodes, one line per node: a title shown instead of the id, a header colour, collapsed to the header",
                "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "title": {"type": "string"},
                        "color": {"type": "string", "description": "a CSS colour, e.g. #3f789e"},
                        "collapsed": {"type": "boolean"},
                    },
                },
            },
            "groups": {
                "type": "array",
                "description": "editor groups: titled, coloured boxes behind the nodes",
                "items": {
                    "type": "object",
                    "required": ["box"],
                    "additionalProperties": false,
                    "properties": {
                        "title": {"type": "string"},
                        "color": {"type": "string", "description": "a CSS colour, e.g. #3f789e"},
                        "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4, "description": "[x, y, width, height]"},
                    },
                },
            },
            "reroutes": {
                "type": "object",
                "description": "editor reroute points: dots the links from `from` into each of `to` are drawn through (drawing only: no run or cache key changes)",
                "propertyNames": {"pattern": "^[A-Za-z0-9_-]+$"},
                "additionalProperties": {
                    "type": "object",
                    "required": ["at", "from"],
                    "additionalProperties": false,
                    "properties": {
                        "at": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2, "description": "[x, y]"},
                        "from": {"type": "string", "pattern": "^\\$?[A-Za-z0-9_-]+\\.[A-Za-z0-9_]+$", "description": "node.output"},
                        "to": {"type": "array", "items": {"type": "string", "pattern": "^\\$?[A-Za-z0-9_-]+\\.[A-Za-z0-9_]+$"}, "description": "node.input, one per link drawn through the point"},
                    },
                },
            },
        },
        "$defs": defs,
    });
    Schema::try_from(schema).expect("the workflow schema is a JSON object")
}

/// A library subgraph as a node type: its exposed inputs as properties.
fn subgraph_def(name: &str, interface: &Interface) -> (String, Json) {
    let mut properties = Map::new();
    properties.insert(
        "type".into(),
        json!({"const": name, "description": "a subgraph from the library folder"}),
    );
    // A subgraph node can be muted, not bypassed (its outputs' types are its inner nodes').
    properties.insert(
        "mute".into(),
        json!({"type": "boolean", "description": MUTE_DOC}),
    );
    let mut required = vec![json!("type")];
    for (input_name, exposed) in &interface.inputs {
        let mut spec = InputSpec::new("input", exposed.ty, "");
        spec.min = exposed.min;
        spec.max = exposed.max;
        spec.default = exposed.default.clone();
        let mut schema = input_schema(&spec);
        schema["description"] = json!(format!("{} ({})", exposed.doc, exposed.ty));
        properties.insert(input_name.clone(), schema);
        if exposed.default.is_none() && !exposed.optional {
            required.push(json!(input_name));
        }
    }
    let def_name = format!("subgraph.{name}");
    let def = json!({
        "type": "object",
        "title": name,
        "description": format!("subgraph {name} (outputs: {})", interface.outputs.keys().cloned().collect::<Vec<_>>().join(", ")),
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    (def_name, def)
}

const BYPASS_DOC: &str =
    "true: the node does not run; each output is its first input of the same type (ComfyUI's bypass)";
const MUTE_DOC: &str = "true: the node does not run, nor any node that needs it (ComfyUI's mute)";

/// The node keys `bypass` and `mute` (see `modes`), beside `type`.
fn insert_mode_keys(properties: &mut Map<String, Json>) {
    properties.insert(
        "bypass".into(),
        json!({"type": "boolean", "description": BYPASS_DOC}),
    );
    properties.insert(
        "mute".into(),
        json!({"type": "boolean", "description": MUTE_DOC}),
    );
}

fn constant_json(c: &Constant) -> Json {
    serde_json::to_value(c).unwrap_or(Json::Null)
}

fn input_schema(input: &InputSpec) -> Json {
    let link = json!({"$ref": "#/$defs/link"});
    let mut value = Map::new();
    match input.ty {
        ValueType::Int | ValueType::Seed => {
            value.insert("type".into(), json!("integer"));
        }
        ValueType::Float => {
            value.insert("type".into(), json!("number"));
        }
        ValueType::Bool => {
            value.insert("type".into(), json!("boolean"));
        }
        ValueType::String => {
            value.insert("type".into(), json!("string"));
        }
        ValueType::Enum => {
            value.insert("enum".into(), json!(input.choices));
        }
        _ => {
            return json!({"allOf": [link], "description": format!("{} (link a {} output)", input.doc, input.ty)});
        }
    }
    if let Some(min) = input.min {
        value.insert("minimum".into(), json!(min));
    }
    if let Some(max) = input.max {
        value.insert("maximum".into(), json!(max));
    }
    if input.ty == ValueType::Seed {
        value.insert("minimum".into(), json!(0));
        // ComfyUI's range: a seed is any 64-bit unsigned number.
        value.entry("maximum").or_insert(json!(u64::MAX));
    }
    if let Some(n) = input.multiple_of {
        value.insert("multipleOf".into(), json!(n));
    }
    if input.ty == ValueType::String && !input.choices.is_empty() {
        value.insert("enum".into(), json!(input.choices));
    }
    let mut schema = json!({"anyOf": [Json::Object(value), link], "description": format!("{} ({})", input.doc, input.ty)});
    if let Some(default) = &input.default {
        schema["default"] = constant_json(default);
    }
    schema
}
