//! A weft workflow in ComfyUI's UI format (what its frontend opens and saves): the API-format
//! export (export.rs) laid out as nodes with positions (from `layout`), sockets, a links array
//! and `widgets_values` in ComfyUI's widget order, a seed's `control_after_generate` after it.
//! What the UI format has and weft does not (groups, notes, colours, sizes) is not made up:
//! nodes get ComfyUI's default size and no groups.
use serde_json::{json, Map, Value as Json};
use weft_engine::workflow::Workflow;
use weft_engine::Registry;

use super::export::export;
use super::{comfy_type, Issue};

/// Where a node without a layout position goes: a row, this far apart.
const SPACING: f64 = 380.0;

pub fn export_ui(wf: &Workflow, registry: &Registry, inputs_dir: &str) -> Result<Json, Vec<Issue>> {
    let api = export(wf, registry, inputs_dir)?.json;
    let prompt = api.as_object().cloned().unwrap_or_default();
    // ComfyUI's ids are numbers in the UI format.
    let mut ids: Vec<(u64, &String, &Json)> = prompt
        .iter()
        .filter_map(|(id, node)| id.parse::<u64>().ok().map(|n| (n, id, node)))
        .collect();
    ids.sort_by_key(|(n, _, _)| *n);
    // Links: [id, from node, from slot, to node, to slot, type], numbered from 1.
    let mut links: Vec<Json> = Vec::new();
    let mut out_links: Map<String, Json> = Map::new();
    let mut nodes = Vec::new();
    for (order, (n, _, node)) in ids.iter().enumerate() {
        let class = node["class_type"].as_str().unwrap_or("");
        let Some(ty) = comfy_type(class) else {
            continue;
        };
        let weft_id = node["_meta"]["title"].as_str().unwrap_or("");
        let pos = wf
            .layout
            .get(weft_id)
            .copied()
            .unwrap_or([order as f64 * SPACING, 0.0]);
        let mut inputs = Vec::new();
        let mut widgets = Vec::new();
        for (slot, input) in ty.inputs.iter().filter(|i| i.widget.is_none()).enumerate() {
            let link = node["inputs"][input.name].as_array().and_then(|l| {
                let from = l.first()?.as_str()?.parse::<u64>().ok()?;
                let from_slot = l.get(1)?.as_u64()?;
                Some((from, from_slot))
            });
            let link_id = link.map(|(from, from_slot)| {
                let link_id = links.len() as u64 + 1;
                let from_ty = prompt
                    .get(&from.to_string())
                    .and_then(|f| f["class_type"].as_str())
                    .and_then(comfy_type)
                    .and_then(|t| t.outputs.get(from_slot as usize))
                    .map_or(input.ty, |o| o.ty);
                links.push(json!([link_id, from, from_slot, n, slot, from_ty]));
                let key = format!("{from}:{from_slot}");
                if let Some(list) = out_links
                    .entry(key)
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                {
                    list.push(json!(link_id));
                }
                link_id
            });
            inputs.push(json!({"name": input.name, "type": input.ty, "link": link_id}));
        }
        for input in ty.inputs.iter().filter(|i| i.widget.is_some()) {
            widgets.push(node["inputs"][input.name].clone());
            if input.seed {
                widgets.push(json!("fixed"));
            }
        }
        nodes.push((
            *n,
            json!({
                "id": n,
                "type": class,
                "pos": pos,
                "size": [315, 26 + 24 * (ty.inputs.len().max(ty.outputs.len()) as u64)],
                "flags": {},
                "order": order,
                "mode": 0,
                "inputs": inputs,
                "outputs": [],
                "properties": {"Node name for S&R": class},
                "widgets_values": widgets,
                "title": if weft_id.is_empty() { Json::Null } else { json!(weft_id) },
            }),
        ));
    }
    // Outputs last, once every link into them is known.
    let nodes: Vec<Json> = nodes
        .into_iter()
        .map(|(n, mut node)| {
            let class = node["type"].as_str().unwrap_or("").to_string();
            let outputs: Vec<Json> = comfy_type(&class)
                .map(|t| t.outputs)
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(slot, o)| {
                    let links = out_links
                        .get(&format!("{n}:{slot}"))
                        .cloned()
                        .unwrap_or_else(|| json!([]));
                    json!({"name": o.ty, "type": o.ty, "links": links, "slot_index": slot})
                })
                .collect();
            node["outputs"] = json!(outputs);
            node
        })
        .collect();
    let last_node = ids.last().map_or(0, |(n, _, _)| *n);
    Ok(json!({
        "last_node_id": last_node,
        "last_link_id": links.len(),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comfy::import::{import, ImportOptions};

    /// weft's txt2img example to UI format and back: the same workflow, positions kept.
    #[test]
    fn a_workflow_survives_the_ui_format_round_trip() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/workflows/txt2img.yaml"
        ))
        .expect("workflows/txt2img.yaml");
        let wf = Workflow::parse_str(&text).expect("parses");
        let registry = weft_nodes::registry();
        let ui = export_ui(&wf, &registry, "workflows/inputs").expect("exports");
        assert!(
            ui["nodes"].as_array().is_some_and(|n| !n.is_empty()),
            "{ui}"
        );
        assert!(
            ui["links"].as_array().is_some_and(|l| !l.is_empty()),
            "{ui}"
        );
        let ksampler = ui["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == "KSampler")
            .expect("a KSampler");
        // seed, control_after_generate, steps, cfg, sampler, scheduler, denoise.
        assert_eq!(ksampler["widgets_values"].as_array().unwrap().len(), 7);
        assert_eq!(ksampler["widgets_values"][1], "fixed");
        let back = import(&ui, &ImportOptions::default()).expect("imports");
        let sampler = |w: &Workflow| {
            w.nodes
                .values()
                .find(|n| n.type_name == "Sampler")
                .map(|n| {
                    let mut inputs: Vec<(String, String)> = n
                        .inputs
                        .iter()
                        .map(|(k, v)| (k.clone(), format!("{:?}", v.value)))
                        .filter(|(_, v)| v.starts_with("Constant"))
                        .collect();
                    inputs.sort();
                    inputs
                })
        };
        // Values the YAML left to their defaults come back written out (denoise: 1.0).
        let original = sampler(&wf).unwrap();
        let returned = sampler(&back.workflow).unwrap();
        for value in &original {
            assert!(returned.contains(value), "{value:?} lost: {returned:?}");
        }
        assert_eq!(back.workflow.nodes.len(), wf.nodes.len());
        for (id, pos) in &wf.layout {
            assert!(
                back.workflow.layout.values().any(|p| p == pos),
                "the position of {id} is lost"
            );
        }
    }
}
