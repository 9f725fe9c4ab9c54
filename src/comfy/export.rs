//! A weft workflow to ComfyUI's API format (what ComfyUI's "Save (API)" writes and `POST
//! /prompt` takes), for the node types that have a ComfyUI equivalent. Ids made by `weft
//! import` (`ksampler_3`) go back to ComfyUI's (`3`); each node's weft id is kept in
//! `_meta.title`.
use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value as Json};
use weft_engine::workflow::{InputValue, NodeEntry, Workflow};
use weft_engine::{Constant, Registry};

use super::{comfy_type, Issue, CHECKPOINT_DIR, LORA_DIR, UPSCALER_FILES};

pub struct Exported {
    pub json: Json,
    /// What ComfyUI's nodes cannot carry (dropped inputs).
    pub notes: Vec<Issue>,
}

/// The ComfyUI class a weft node becomes.
fn class_for(node: &NodeEntry) -> Option<&'static str> {
    Some(match node.type_name.as_str() {
        "LoadCheckpoint" => "CheckpointLoaderSimple",
        "LoadLora" => "LoraLoader",
        "LoadLoraModelOnly" => "LoraLoaderModelOnly",
        "PromptEncode" => "CLIPTextEncode",
        "PromptEncodeSdxl" => "CLIPTextEncodeSDXL",
        "PromptEncodeSdxlRefiner" => "CLIPTextEncodeSDXLRefiner",
        "EmptyLatent" => "EmptyLatentImage",
        "Sampler" => "KSampler",
        "SamplerAdvanced" => "KSamplerAdvanced",
        "VaeDecode" => match node.inputs.get("tile").map(|e| &e.value) {
            Some(InputValue::Constant(Constant::Int(t))) if *t > 0 => "VAEDecodeTiled",
            _ => "VAEDecode",
        },
        "VaeEncode" => "VAEEncode",
        "LoadImage" => "LoadImage",
        "SaveImage" => "SaveImage",
        "LatentUpscale" => "LatentUpscaleBy",
        "ImageScale" => "ImageScaleBy",
        "LoadUpscaleModel" => "UpscaleModelLoader",
        "UpscaleImage" => "ImageUpscaleWithModel",
        "ImageBatch" => "ImageBatch",
        "LoadImageMask" => "LoadImageMask",
        "SolidMask" => "SolidMask",
        "InvertMask" => "InvertMask",
        "GrowMask" => "GrowMask",
        "FeatherMask" => "FeatherMask",
        "ThresholdMask" => "ThresholdMask",
        "ImageToMask" => "ImageToMask",
        "ImageColorToMask" => "ImageColorToMask",
        "MaskToImage" => "MaskToImage",
        "SetLatentNoiseMask" => "SetLatentNoiseMask",
        "VaeEncodeForInpaint" => "VAEEncodeForInpaint",
        "InpaintModelConditioning" => "InpaintModelConditioning",
        "ImagePadForOutpaint" => "ImagePadForOutpaint",
        "ImageCompositeMasked" => "ImageCompositeMasked",
        _ => return None,
    })
}

/// weft input name of each ComfyUI input, per class (inputs not listed are computed).
pub(super) fn weft_input(class: &str, comfy: &str) -> Option<&'static str> {
    Some(match (class, comfy) {
        (_, "model") => "model",
        (_, "positive") => "positive",
        (_, "negative") => "negative",
        (_, "latent_image") => "latent",
        (_, "seed") => "seed",
        ("KSamplerAdvanced", "noise_seed") => "seed",
        ("KSamplerAdvanced", "start_at_step") => "start_at_step",
        ("KSamplerAdvanced", "end_at_step") => "end_at_step",
        ("KSamplerAdvanced", "add_noise") => "add_noise",
        ("KSamplerAdvanced", "return_with_leftover_noise") => "leftover_noise",
        ("CLIPTextEncodeSDXLRefiner", "ascore") => "ascore",
        (_, "steps") => "steps",
        (_, "cfg") => "cfg",
        (_, "sampler_name") => "sampler",
        (_, "scheduler") => "schedule",
        (_, "denoise") => "denoise",
        ("LoraLoader", "clip") => "text_encoder",
        (_, "clip") => "encoder",
        (_, "strength_model") => "strength_model",
        (_, "strength_clip") => "strength_clip",
        (_, "text") => "text",
        (_, "width") => "width",
        (_, "height") => "height",
        (_, "batch_size") => "batch",
        (_, "samples") => "latent",
        (_, "vae") => "vae",
        (_, "pixels") => "image",
        (_, "images") => "image",
        (_, "image") if !matches!(class, "LoadImage" | "LoadImageMask") => "image",
        (_, "filename_prefix") => "prefix",
        (_, "upscale_method") => "method",
        (_, "scale_by") => "scale",
        (_, "upscale_model") => "upscale_model",
        (_, "tile_size") => "tile",
        ("CLIPTextEncodeSDXL", "crop_w") => "crop_w",
        ("CLIPTextEncodeSDXL", "crop_h") => "crop_h",
        ("CLIPTextEncodeSDXL", "target_width") => "target_width",
        ("CLIPTextEncodeSDXL", "target_height") => "target_height",
        ("CLIPTextEncodeSDXL", "text_g") => "text_g",
        ("CLIPTextEncodeSDXL", "text_l") => "text_l",
        ("ImageBatch", "image1") => "image1",
        ("ImageBatch", "image2") => "image2",
        (_, "mask") => "mask",
        (_, "channel") => "channel",
        ("ImageColorToMask", "color") => "color",
        (_, "value") => "value",
        (_, "expand") => "expand",
        (_, "tapered_corners") => "tapered_corners",
        (_, "left") => "left",
        (_, "top") => "top",
        (_, "right") => "right",
        (_, "bottom") => "bottom",
        (_, "feathering") => "feathering",
        (_, "grow_mask_by") => "grow_mask_by",
        (_, "noise_mask") => "noise_mask",
        (_, "destination") => "destination",
        (_, "source") => "source",
        (_, "x") => "x",
        (_, "y") => "y",
        (_, "resize_source") => "resize_source",
        _ => return None,
    })
}

/// Numeric ComfyUI ids: `role_N` and `N` keep N; other ids get the next free numbers.
fn comfy_ids(wf: &Workflow) -> HashMap<String, String> {
    let number = |id: &str| -> Option<u64> {
        let tail = id.rsplit('_').next().unwrap_or(id);
        tail.parse().ok()
    };
    let mut used = HashSet::new();
    let mut ids = HashMap::new();
    for id in wf.nodes.keys() {
        if let Some(n) = number(id) {
            if used.insert(n) {
                ids.insert(id.clone(), n.to_string());
            }
        }
    }
    let mut next = used.iter().max().map_or(1, |m| m + 1);
    for id in wf.nodes.keys() {
        if !ids.contains_key(id) {
            ids.insert(id.clone(), next.to_string());
            next += 1;
        }
    }
    ids
}

fn constant_json(c: &Constant) -> Json {
    match c {
        Constant::Bool(b) => json!(b),
        Constant::Int(i) => json!(i),
        Constant::UInt(u) => json!(u),
        Constant::Float(f) => json!(f),
        Constant::String(s) => json!(s),
    }
}

pub fn export(
    wf: &Workflow,
    registry: &Registry,
    inputs_dir: &str,
) -> Result<Exported, Vec<Issue>> {
    // An API prompt holds only nodes that run: bypassed and muted nodes are rewritten away
    // first, as ComfyUI's frontend does when it queues (its UI format keeps them as modes 4, 2).
    let rewritten;
    let wf = match weft_engine::modes::apply_modes(wf, registry) {
        Ok(Some(without_modes)) => {
            rewritten = without_modes;
            &rewritten
        }
        Ok(None) => wf,
        Err(errors) => {
            return Err(errors
                .into_iter()
                .map(|d| Issue {
                    code: d.code,
                    node: d.node,
                    class: None,
                    input: d.input,
                    message: d.message,
                    hint: d.hint,
                })
                .collect())
        }
    };
    let mut issues = Vec::new();
    let mut notes = Vec::new();
    let unsupported: Vec<String> = wf
        .nodes
        .iter()
        .filter(|(_, n)| class_for(n).is_none() && n.type_name != "Int")
        .map(|(id, n)| format!("{} ({id})", n.type_name))
        .collect();
    if !unsupported.is_empty() {
        issues.push(
            Issue::new(format!(
                "weft node types with no ComfyUI equivalent: {}",
                unsupported.join(", ")
            ))
            .hint("weft exports LoadCheckpoint, LoadLora, LoadLoraModelOnly, PromptEncode, PromptEncodeSdxl, PromptEncodeSdxlRefiner, EmptyLatent, Sampler, SamplerAdvanced, VaeDecode, VaeEncode, LoadImage, SaveImage, LatentUpscale, ImageScale, LoadUpscaleModel, UpscaleImage, ImageBatch (Int values are written in place)"),
        );
    }
    let ids = comfy_ids(wf);
    let mut out = Map::new();
    for (id, node) in &wf.nodes {
        let Some(class) = class_for(node) else {
            continue;
        };
        let ty = comfy_type(class).expect("mapped class");
        let spec = registry.get(&node.type_name).map(|r| &r.spec);
        let at = |message: String| Issue::new(message).node(id, &node.type_name);
        // A weft input's value, or its declared default.
        let constant = |name: &str| -> Option<Constant> {
            match node.inputs.get(name).map(|e| &e.value) {
                Some(InputValue::Constant(c)) => Some(c.clone()),
                Some(InputValue::Link(l)) => {
                    // An Int node's value is written in place.
                    let source = wf.nodes.get(&l.node)?;
                    if source.type_name != "Int" {
                        return None;
                    }
                    match source.inputs.get("value").map(|e| &e.value) {
                        Some(InputValue::Constant(c)) => Some(c.clone()),
                        None => Some(Constant::Int(0)),
                        _ => None,
                    }
                }
                None => spec?.input(name)?.1.default.clone(),
            }
        };
        let mut widgets = Map::new();
        let mut links = Map::new();
        for input in ty.inputs {
            if input.widget.is_none() {
                let weft = weft_input(class, input.name).expect("socket mapped");
                match node.inputs.get(weft).map(|e| &e.value) {
                    Some(InputValue::Link(l)) => {
                        let Some(source) = wf.nodes.get(&l.node) else {
                            issues.push(at(format!("input '{weft}' links to node '{}', which is not in the workflow", l.node)).input(weft));
                            continue;
                        };
                        let slot = class_for(source).and_then(comfy_type).and_then(|t| {
                            t.outputs
                                .iter()
                                .position(|o| o.weft == Some(l.output.as_str()))
                        });
                        match slot {
                            Some(slot) => {
                                links.insert(input.name.into(), json!([ids[&l.node], slot]));
                            }
                            None if class_for(source).is_none() => {} // reported above
                            None => issues.push(
                                at(format!("{}.{} has no ComfyUI output", l.node, l.output))
                                    .input(weft),
                            ),
                        }
                    }
                    // ComfyUI's one optional socket among the mapped types.
                    None if (class, input.name) == ("ImageCompositeMasked", "mask") => {}
                    _ => issues.push(
                        at(format!("ComfyUI's {class} needs '{}' linked", input.name)).input(weft),
                    ),
                }
                continue;
            }
            let value: Option<Json> = match (class, input.name) {
                ("CheckpointLoaderSimple", "ckpt_name") => constant("name").map(|c| match c {
                    Constant::String(s) => json!(s.strip_prefix(CHECKPOINT_DIR).unwrap_or(&s)),
                    other => constant_json(&other),
                }),
                ("LoraLoader" | "LoraLoaderModelOnly", "lora_name") => {
                    constant("lora").map(|c| match c {
                        Constant::String(s) => json!(s.strip_prefix(LORA_DIR).unwrap_or(&s)),
                        other => constant_json(&other),
                    })
                }
                ("LoadImage" | "LoadImageMask", "image") => constant("path").map(|c| match c {
                    Constant::String(s) => {
                        let dir = format!("{}/", inputs_dir.trim_end_matches('/'));
                        json!(s.strip_prefix(dir.as_str()).unwrap_or(&s))
                    }
                    other => constant_json(&other),
                }),
                ("UpscaleModelLoader", "model_name") => constant("name").map(|c| match c {
                    Constant::String(s) => json!(UPSCALER_FILES
                        .iter()
                        .find(|(_, w)| *w == s)
                        .map_or(s.as_str(), |(f, _)| f)),
                    other => constant_json(&other),
                }),
                ("VAEDecodeTiled", "overlap") => match constant("tile") {
                    Some(Constant::Int(t)) => Some(json!((t / 8).max(8) / 8 * 8)),
                    _ => None,
                },
                ("KSamplerAdvanced", "add_noise" | "return_with_leftover_noise") => {
                    let weft = weft_input(class, input.name).expect("mapped above");
                    constant(weft).map(|c| match c {
                        Constant::Bool(on) => json!(if on { "enable" } else { "disable" }),
                        other => constant_json(&other),
                    })
                }
                (
                    "CLIPTextEncode" | "CLIPTextEncodeSDXL" | "CLIPTextEncodeSDXLRefiner",
                    "text" | "text_g" | "text_l",
                ) => {
                    let weft = weft_input(class, input.name).expect("prompt inputs are mapped");
                    constant(weft).map(|c| match c {
                        Constant::String(s) => {
                            let (text, de_emphasis) = super::prompt_to_comfy(&s);
                            if de_emphasis {
                                notes.push(at("'[…]' lowers a word's weight in weft but ComfyUI reads square brackets as words: write (word:0.91) for the same weight in both".to_string()).input(weft));
                            }
                            json!(text)
                        }
                        other => constant_json(&other),
                    })
                }
                ("VAEDecodeTiled", "temporal_size") => Some(json!(64)),
                ("VAEDecodeTiled", "temporal_overlap") => Some(json!(8)),
                _ => weft_input(class, input.name)
                    .and_then(&constant)
                    .map(|c| constant_json(&c)),
            };
            match value {
                Some(v) => {
                    widgets.insert(input.name.into(), v);
                }
                None => issues.push(
                    at(format!(
                        "no value for ComfyUI's '{}' (a constant or an Int node is needed)",
                        input.name
                    ))
                    .input(weft_input(class, input.name).unwrap_or(input.name)),
                ),
            }
        }
        if node.type_name == "LoadCheckpoint" {
            if let Some(Constant::String(p)) = constant("precision") {
                if p != "auto" {
                    notes.push(at(format!(
                        "precision '{p}' is dropped: ComfyUI picks it itself"
                    )));
                }
            }
        }
        if matches!(node.type_name.as_str(), "LoadImage" | "LoadImageMask") {
            let dir = format!("{}/", inputs_dir.trim_end_matches('/'));
            if let Some(Constant::String(p)) = constant("path") {
                if !p.starts_with(&dir) {
                    notes.push(at(format!("'{p}' is not under {dir}: ComfyUI looks for images in its input folder")).input("path"));
                }
            }
        }
        if node.type_name == "UpscaleImage" {
            for name in ["tile", "overlap"] {
                if node.inputs.contains_key(name) {
                    notes.push(at(format!("'{name}' is dropped: ComfyUI tiles by itself")));
                }
            }
        }
        widgets.extend(links);
        out.insert(
            ids[id].clone(),
            json!({"inputs": widgets, "class_type": class, "_meta": {"title": id}}),
        );
    }
    if issues.is_empty() {
        Ok(Exported {
            json: Json::Object(out),
            notes,
        })
    } else {
        Err(issues)
    }
}
