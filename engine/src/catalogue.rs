//! The node catalogue as JSON: every node type with its inputs (type, default, range, step,
//! multiple, choices, widget, doc, optional, link-only) and outputs, straight from the declarations.
//! `weft nodes --json` prints it and `weft serve` answers `/api/nodes` with it.
use serde_json::{json, Value as Json};

use crate::model_folders::ModelFolders;
use crate::node::{InputSpec, Widget};
use crate::registry::Registry;

/// The catalogue; with `models`, inputs that name models list those found there.
pub fn node_catalogue(registry: &Registry, models: Option<&ModelFolders>) -> Json {
    let nodes: Vec<Json> = registry
        .iter()
        .map(|registered| {
            let spec = &registered.spec;
            let inputs: Vec<Json> = spec
                .inputs
                .iter()
                .map(|input| input_json(registry, input, models))
                .collect();
            let outputs: Vec<Json> = spec
                .outputs
                .iter()
                .map(|o| json!({"name": o.name, "type": o.ty, "doc": o.doc}))
                .collect();
            json!({
                "type": spec.type_name,
                "category": spec.category,
                "doc": spec.doc,
                "version": spec.version,
                "output_node": spec.output_node,
                "inputs": inputs,
                "outputs": outputs,
            })
        })
        .collect();
    json!({ "nodes": nodes })
}

fn input_json(registry: &Registry, input: &InputSpec, models: Option<&ModelFolders>) -> Json {
    let mut value = json!({
        "name": input.name,
        "type": input.ty,
        "doc": input.doc,
        "optional": input.optional,
        "link_only": !input.ty.accepts_constant(),
    });
    let mut set = |key: &str, v: Json| {
        value[key] = v;
    };
    if let Some(default) = &input.default {
        set("default", json!(default));
    }
    if let Some(min) = input.min {
        set("min", json!(min));
    }
    if let Some(max) = input.max {
        set("max", json!(max));
    }
    if let Some(step) = input.step {
        set("step", json!(step));
    }
    if let Some(n) = input.multiple_of {
        set("multiple_of", json!(n));
    }
    match (input.listed_from, models) {
        (Some(source), Some(models)) => {
            set("choices", json!(registry.listed_choices(input, models)));
            set("choices_from", json!(source));
        }
        _ if !input.choices.is_empty() => set("choices", json!(input.choices)),
        _ => {}
    }
    let listed = value.get("choices").is_some();
    if let Some(widget) = input
        .widget_hint
        .or_else(|| Widget::for_type(input.ty, listed))
    {
        value["widget"] = json!(widget.as_str());
    }
    value
}

/// The widget hint of the first inner input that `$inputs.EXPOSED` feeds and that has one: an
/// exposed prompt is the same text box as inside (Txt2Img's `prompt` is PromptEncode's `text`).
fn inner_widget(
    registry: &Registry,
    workflow: &crate::workflow::Workflow,
    exposed: &str,
) -> Option<Widget> {
    workflow.nodes.values().find_map(|node| {
        let spec = &registry.get(&node.type_name)?.spec;
        node.inputs
            .iter()
            .find_map(|(name, entry)| match &entry.value {
                crate::workflow::InputValue::Link(link)
                    if link.node == crate::workflow::INPUTS_NODE && link.output == exposed =>
                {
                    spec.input(name)?.1.widget_hint
                }
                _ => None,
            })
    })
}

/// The choices of the first inner input that `$inputs.EXPOSED` feeds and that lists fixed
/// choices: an exposed input declared without its own `choices` offers what it stands for
/// (Txt2Img's `sampler` is the Sampler's). Choices listed from model folders are left out:
/// they differ per machine, and the schema written from this catalogue is committed.
fn inner_choices(
    registry: &Registry,
    workflow: &crate::workflow::Workflow,
    exposed: &str,
) -> Option<Vec<&'static str>> {
    workflow.nodes.values().find_map(|node| {
        let spec = &registry.get(&node.type_name)?.spec;
        node.inputs
            .iter()
            .find_map(|(name, entry)| match &entry.value {
                crate::workflow::InputValue::Link(link)
                    if link.node == crate::workflow::INPUTS_NODE && link.output == exposed =>
                {
                    let (_, input) = spec.input(name)?;
                    (input.listed_from.is_none() && !input.choices.is_empty())
                        .then(|| input.choices.clone())
                }
                _ => None,
            })
    })
}

/// Library subgraphs in the catalogue's node shape (category "subgraph"); an output's type is
/// the type of the inner output it comes from.
pub fn subgraph_catalogue(registry: &Registry, library: &[std::path::PathBuf]) -> Vec<Json> {
    crate::subgraph::library_subgraphs(library)
        .into_iter()
        .map(|subgraph| {
            let crate::subgraph::LibrarySubgraph {
                name,
                path,
                workflow,
                interface,
            } = subgraph;
            let inputs: Vec<Json> = interface
                .inputs
                .iter()
                .map(|(input, e)| {
                    let mut v = json!({
                        "name": input, "type": e.ty, "doc": e.doc,
                        "optional": e.optional || e.default.is_some(),
                        "link_only": !e.ty.accepts_constant(),
                    });
                    if let Some(d) = &e.default {
                        v["default"] = json!(d);
                    }
                    if let Some(min) = e.min {
                        v["min"] = json!(min);
                    }
                    if let Some(max) = e.max {
                        v["max"] = json!(max);
                    }
                    if !e.choices.is_empty() {
                        v["choices"] = json!(e.choices);
                    } else if let Some(inner) = inner_choices(registry, &workflow, input) {
                        v["choices"] = json!(inner);
                    }
                    let listed = v.get("choices").is_some();
                    let widget = match inner_widget(registry, &workflow, input) {
                        // The inner input's own type may differ (an exposed int feeding a seed).
                        Some(hint) if e.ty.accepts_constant() => Some(hint),
                        _ => Widget::for_type(e.ty, listed),
                    };
                    if let Some(widget) = widget {
                        v["widget"] = json!(widget.as_str());
                    }
                    v
                })
                .collect();
            let outputs: Vec<Json> = interface
                .outputs
                .iter()
                .map(|(output, e)| {
                    let ty = workflow
                        .nodes
                        .get(&e.from.node)
                        .and_then(|n| registry.get(&n.type_name))
                        .and_then(|r| r.spec.output(&e.from.output))
                        .map(|(_, o)| json!(o.ty))
                        .unwrap_or(Json::Null);
                    json!({"name": output, "type": ty, "doc": e.doc})
                })
                .collect();
            json!({
                "type": name,
                "category": "subgraph",
                "doc": format!("subgraph {}", path.display()),
                "version": 1,
                "output_node": false,
                "subgraph": path.display().to_string(),
                "inputs": inputs,
                "outputs": outputs,
            })
        })
        .collect()
}
