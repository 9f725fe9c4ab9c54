//! A weft workflow in ComfyUI's UI format (what its frontend opens and saves): the API-format
//! export (export.rs) laid out as nodes with positions (from `layout`), sockets, a links array
//! and `widgets_values` in ComfyUI's widget order, a seed's `control_after_generate` after it.
//! Reroute points become Reroute nodes the links pass through. What the UI format has and weft
//! does not (notes, sizes) is not made up: nodes get ComfyUI's default size.
use serde_json::{json, Map, Value as Json};
use weft_engine::workflow::Workflow;
use weft_engine::Registry;

use super::export::{export, weft_input};
use super::{comfy_type, Issue};

/// Where a node without a layout position goes: a row, this far apart.
const SPACING: f64 = 380.0;

pub fn export_ui(wf: &Workflow, registry: &Registry, inputs_dir: &str) -> Result<Json, Vec<Issue>> {
    // Only the reroute points whose links are still there become Reroute nodes.
    let mut own;
    let wf = if wf.reroutes.is_empty() {
        wf
    } else {
        own = wf.clone();
        own.prune_reroutes();
        &own
    };
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
    // The input each reroute point routes -> the point; a point's Reroute node gets an id after
    // the real nodes' and the link from the source the first time an input through it is met.
    let through: std::collections::HashMap<(&str, &str), &str> = wf
        .reroutes
        .iter()
        .flat_map(|(id, r)| {
            r.to.iter()
                .map(move |(n, i)| ((n.as_str(), i.as_str()), id.as_str()))
        })
        .collect();
    let mut next_id = ids.last().map_or(0, |(n, _, _)| *n);
    let mut reroute_nodes: indexmap::IndexMap<&str, RerouteNode> = indexmap::IndexMap::new();
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
            let point = weft_input(class, input.name)
                .and_then(|weft_name| through.get(&(weft_id, weft_name)).copied());
            let link_id = link.map(|(from, from_slot)| {
                let from_ty = prompt
                    .get(&from.to_string())
                    .and_then(|f| f["class_type"].as_str())
                    .and_then(comfy_type)
                    .and_then(|t| t.outputs.get(from_slot as usize))
                    .map_or(input.ty, |o| o.ty);
                // (A consumer whose prompt link comes from elsewhere than the point's first one,
                // after bypasses were rewritten, is linked straight.)
                let through_point = point.filter(|p| {
                    reroute_nodes
                        .get(p)
                        .is_none_or(|r| r.source == (from, from_slot))
                });
                if let Some(point) = through_point {
                    let reroute = reroute_nodes.entry(point).or_insert_with(|| {
                        next_id += 1;
                        let into = links.len() as u64 + 1;
                        links.push(json!([into, from, from_slot, next_id, 0, from_ty]));
                        let key = format!("{from}:{from_slot}");
                        if let Some(list) = out_links
                            .entry(key)
                            .or_insert_with(|| json!([]))
                            .as_array_mut()
                        {
                            list.push(json!(into));
                        }
                        RerouteNode {
                            id: next_id,
                            source: (from, from_slot),
                            outs: Vec::new(),
                            ty: json!(from_ty),
                        }
                    });
                    let link_id = links.len() as u64 + 1;
                    links.push(json!([link_id, reroute.id, 0, n, slot, from_ty]));
                    reroute.outs.push(link_id);
                    return link_id;
                }
                let link_id = links.len() as u64 + 1;
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
    let mut nodes = nodes;
    // The link into each point is the first link listed from its source.
    let into_link = |id: u64| {
        links
            .iter()
            .find(|l| l[3] == json!(id))
            .map(|l| l[0].clone())
    };
    for (order, (point, r)) in reroute_nodes.iter().enumerate() {
        let (id, outs, ty) = (r.id, &r.outs, &r.ty);
        let into = into_link(id);
        nodes.push(json!({
            "id": id,
            "type": "Reroute",
            "pos": wf.reroutes[*point].at,
            "size": [75, 26],
            "flags": {},
            "order": ids.len() + order,
            "mode": 0,
            "inputs": [{"name": "", "type": "*", "link": into}],
            "outputs": [{"name": "", "type": ty, "links": outs, "slot_index": 0}],
            "properties": {"showOutputText": false, "horizontal": false},
        }));
    }
    let last_node = next_id;
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

/// A reroute point on its way out as a Reroute node.
struct RerouteNode {
    /// Its ComfyUI id (after the real nodes').
    id: u64,
    /// The node and output slot its links come from.
    source: (u64, u64),
    /// The links out of it.
    outs: Vec<u64>,
    /// The ComfyUI type it carries.
    ty: Json,
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

    /// Reroute points go out as Reroute nodes the links pass through and come back as points:
    /// txt2img with one point feeding two inputs and one feeding one.
    #[test]
    fn reroute_points_survive_the_ui_format_round_trip() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/workflows/txt2img.yaml"
        ))
        .expect("workflows/txt2img.yaml");
        let text = format!(
            "{text}reroutes:\n  enc: {{at: [200, 40], from: model.text_encoder, to: [positive.encoder, negative.encoder]}}\n  vae: {{at: [800, 200.5], from: model.vae, to: [decode.vae]}}\n"
        );
        let wf = Workflow::parse_str(&text).expect("parses");
        let registry = weft_nodes::registry();
        let ui = export_ui(&wf, &registry, "workflows/inputs").expect("exports");
        let nodes = ui["nodes"].as_array().unwrap();
        let reroutes: Vec<&Json> = nodes.iter().filter(|n| n["type"] == "Reroute").collect();
        assert_eq!(reroutes.len(), 2, "{ui}");
        let links = ui["links"].as_array().unwrap();
        let link = |id: &Json| links.iter().find(|l| l[0] == *id).unwrap().clone();
        let checkpoint = nodes
            .iter()
            .find(|n| n["type"] == "CheckpointLoaderSimple")
            .unwrap();
        let clip_text = |n: &Json| nodes.iter().find(|x| x["id"] == *n).unwrap()["type"].clone();
        let enc = reroutes
            .iter()
            .find(|r| r["pos"] == json!([200.0, 40.0]))
            .expect("the enc point");
        // Into the point from the checkpoint's CLIP (slot 1), out of it into both encoders.
        let into = link(&enc["inputs"][0]["link"]);
        assert_eq!(
            (into[1].clone(), into[2].clone(), into[3].clone()),
            (checkpoint["id"].clone(), json!(1), enc["id"].clone())
        );
        let outs = enc["outputs"][0]["links"].as_array().unwrap();
        assert_eq!(outs.len(), 2);
        for out in outs {
            let l = link(out);
            assert_eq!(l[1], enc["id"]);
            assert_eq!(clip_text(&l[3]), "CLIPTextEncode");
        }
        // The checkpoint's CLIP output lists the link into the point, not the encoders' links.
        assert_eq!(checkpoint["outputs"][1]["links"], json!([into[0]]));
        assert!(ui["last_node_id"].as_u64().unwrap() >= enc["id"].as_u64().unwrap());

        let back = import(&ui, &ImportOptions::default())
            .expect("imports")
            .workflow;
        assert_eq!(
            back.nodes.len(),
            wf.nodes.len(),
            "Reroute nodes are no weft nodes"
        );
        let mut points: Vec<_> = back.reroutes.values().cloned().collect();
        points.sort_by(|a, b| a.at[0].total_cmp(&b.at[0]));
        assert_eq!(points.len(), 2, "{:?}", back.reroutes);
        let name_of = |node: &str| back.nodes[node].type_name.clone();
        assert_eq!(points[0].at, [200.0, 40.0]);
        assert_eq!(name_of(&points[0].from.node), "LoadCheckpoint");
        assert_eq!(points[0].from.output, "text_encoder");
        let mut ends: Vec<_> = points[0]
            .to
            .iter()
            .map(|(n, i)| (name_of(n), i.clone()))
            .collect();
        ends.sort();
        assert_eq!(
            ends,
            vec![("PromptEncode".to_string(), "encoder".to_string()); 2]
        );
        assert_eq!(points[1].at, [800.0, 200.5]);
        assert_eq!(points[1].from.output, "vae");
        assert_eq!(points[1].to.len(), 1);
        assert_eq!(name_of(&points[1].to[0].0), "VaeDecode");
        // And the imported workflow's links are those of the original (the points changed none).
        assert!(back.clone().prune_reroutes().is_empty());
    }
}
