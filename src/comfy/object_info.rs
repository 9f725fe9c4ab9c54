//! weft's registry described in the shape of ComfyUI's `GET /object_info`, for the ComfyUI
//! node types weft imports: each input as `["INT", {"default": 0, "min": 0, ...}]`, a combo as
//! `[["euler", ...]]`, a socket as `["MODEL"]`. A type ComfyUI's own object_info has
//! (comfyui_object_info.json, made by scripts/parity/comfyui_object_info.py) is that entry as
//! it is (order, ranges, steps, rounds, tooltips, output tooltips), its choices narrowed to
//! weft's in ComfyUI's order and its file choices this server's files; the others (the
//! upscale-model nodes) are described from weft's registry.
use serde_json::{json, Map, Value as Json};
use weft_engine::{Constant, Registry, ValueType};

use super::{comfy_default, ComfyType, FileKind, Input, Widget, TYPES};

/// The file names a server offers for ComfyUI's file choices (ckpt_name, image, model_name).
#[derive(Debug, Clone, Default)]
pub struct FileLists {
    pub checkpoints: Vec<String>,
    pub images: Vec<String>,
    pub upscale_models: Vec<String>,
    /// LoRA files, relative to the loras folder (as ComfyUI names them).
    pub loras: Vec<String>,
}

/// Every mapped type, keyed by ComfyUI class name.
pub fn object_info(registry: &Registry, files: &FileLists) -> Json {
    let mut all = Map::new();
    for ty in TYPES {
        all.insert(ty.class.into(), describe(ty, registry, files));
    }
    Json::Object(all)
}

/// ComfyUI's own entries for the types it has, as its server gives them.
static COMFYUI: std::sync::LazyLock<Map<String, Json>> = std::sync::LazyLock::new(|| {
    match serde_json::from_str(include_str!("comfyui_object_info.json")) {
        Ok(Json::Object(m)) => m,
        _ => Map::new(),
    }
});

/// One type (`GET /object_info/{class}` answers `{class: this}`).
pub fn describe(ty: &ComfyType, registry: &Registry, files: &FileLists) -> Json {
    let ours = describe_from_registry(ty, registry, files);
    let Some(theirs) = COMFYUI.get(ty.class) else {
        return ours;
    };
    let mut out = theirs.clone();
    let sections = ["required", "optional"];
    for section in sections {
        let Some(inputs) = out["input"][section].as_object_mut() else {
            continue;
        };
        for (name, spec) in inputs.iter_mut() {
            let Some(choices) = spec.get(0).and_then(Json::as_array).cloned() else {
                continue;
            };
            let Some(weft) = ours["input"]["required"][name.as_str()][0].as_array() else {
                continue;
            };
            // A file list is this server's; other choices are ComfyUI's that weft takes, in
            // ComfyUI's order, then weft's own.
            let is_files = ty
                .inputs
                .iter()
                .any(|i| i.name == name.as_str() && matches!(i.widget, Some(Widget::Files(_))));
            let narrowed: Vec<Json> = if is_files {
                weft.clone()
            } else {
                // ComfyUI's `*_gpu` samplers are kept in place: weft imports each as its base
                // method, and clients that pick a sampler by position see ComfyUI's list.
                let taken = |c: &Json| {
                    weft.contains(c)
                        || (name == "sampler_name"
                            && c.as_str().and_then(super::weft_sampler_name).is_some())
                };
                let mut kept: Vec<Json> = choices.iter().filter(|c| taken(c)).cloned().collect();
                kept.extend(weft.iter().filter(|c| !choices.contains(c)).cloned());
                kept
            };
            spec[0] = Json::Array(narrowed);
        }
    }
    out
}

/// A type as weft's registry and the mapping describe it.
fn describe_from_registry(ty: &ComfyType, registry: &Registry, files: &FileLists) -> Json {
    let mut required = Map::new();
    for input in ty.inputs {
        required.insert(
            input.name.into(),
            describe_input(ty, input, registry, files),
        );
    }
    let outputs: Vec<&str> = ty.outputs.iter().map(|o| o.ty).collect();
    let description = registry.get(ty.weft).map_or("", |r| r.spec.doc).to_string();
    json!({
        "input": {"required": required},
        "input_order": {"required": ty.inputs.iter().map(|i| i.name).collect::<Vec<_>>()},
        "output": outputs,
        "output_is_list": vec![false; outputs.len()],
        "output_name": outputs,
        "name": ty.class,
        "display_name": ty.display,
        "description": description,
        "python_module": "nodes",
        "category": ty.category,
        "output_node": ty.output_node,
    })
}

fn number(x: f64, ty: ValueType) -> Json {
    if matches!(ty, ValueType::Float) {
        json!(x)
    } else {
        json!(x as i64)
    }
}

fn describe_input(ty: &ComfyType, input: &Input, registry: &Registry, files: &FileLists) -> Json {
    let Some(widget) = input.widget else {
        return json!([input.ty]);
    };
    let mut options = Map::new();
    if let Some(d) = comfy_default(ty.class, input.name) {
        options.insert("default".into(), d);
    }
    let described = match widget {
        Widget::Weft(name) => {
            let spec = registry
                .get(ty.weft)
                .and_then(|r| r.spec.input(name).map(|(_, i)| i.clone()));
            match spec {
                Some(spec) if !spec.choices.is_empty() => {
                    options.remove("default");
                    if !spec.doc.is_empty() {
                        options.insert("tooltip".into(), json!(spec.doc));
                    }
                    return json!([spec.choices, options]);
                }
                Some(spec) => {
                    if let Some(min) = spec.min {
                        options.insert("min".into(), number(min, spec.ty));
                    } else if matches!(spec.ty, ValueType::Seed) {
                        options.insert("min".into(), json!(0));
                    }
                    if matches!(spec.ty, ValueType::Seed) {
                        // ComfyUI's seeds (and weft's) range over 64-bit unsigned numbers:
                        // 0xffffffffffffffff, never an f64 bound rounded to 2^63 - 1.
                        options.insert("max".into(), json!(u64::MAX));
                    } else if let Some(max) = spec.max {
                        options.insert("max".into(), number(max, spec.ty));
                    }
                    if let Some(step) = spec.step {
                        options.insert("step".into(), number(step, spec.ty));
                    } else if matches!(spec.ty, ValueType::Float) {
                        // ComfyUI's frontend rounds a float widget to its step; give a fine one.
                        options.insert("step".into(), json!(0.01));
                    }
                    if matches!(spec.ty, ValueType::String) && input.name == "text" {
                        options.insert("multiline".into(), json!(true));
                        options.insert("dynamicPrompts".into(), json!(true));
                    }
                    if !options.contains_key("default") {
                        if let Some(d) = &spec.default {
                            options.insert("default".into(), constant(d));
                        }
                    }
                    if !spec.doc.is_empty() {
                        options.insert("tooltip".into(), json!(spec.doc));
                    }
                    input.ty
                }
                None => input.ty,
            }
        }
        Widget::Int { min, max, step } => {
            options.insert("min".into(), json!(min));
            options.insert("max".into(), json!(max));
            options.insert("step".into(), json!(step));
            "INT"
        }
        Widget::Combo(choices) => {
            options.remove("default");
            return if options.is_empty() {
                json!([choices])
            } else {
                json!([choices, options])
            };
        }
        Widget::Files(kind) => {
            let list = match kind {
                FileKind::Checkpoints => &files.checkpoints,
                FileKind::Images => &files.images,
                FileKind::UpscaleModels => &files.upscale_models,
                FileKind::Loras => &files.loras,
            };
            options.remove("default");
            if kind == FileKind::Images {
                options.insert("image_upload".into(), json!(true));
            }
            return if options.is_empty() {
                json!([list])
            } else {
                json!([list, options])
            };
        }
    };
    if input.seed {
        options.insert("control_after_generate".into(), json!(true));
    }
    json!([described, options])
}

fn constant(c: &Constant) -> Json {
    match c {
        Constant::Bool(b) => json!(b),
        Constant::Int(i) => json!(i),
        Constant::UInt(u) => json!(u),
        Constant::Float(f) => json!(f),
        Constant::String(s) => json!(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_info_describes_every_mapped_type_in_comfyuis_shape() {
        let registry = weft_nodes::registry();
        let files = FileLists {
            checkpoints: vec!["v1-5-pruned-emaonly.safetensors".into()],
            images: vec!["example.png".into()],
            upscale_models: vec!["RealESRGAN_x4plus.pth".into()],
            loras: vec!["style.safetensors".into()],
        };
        let info = object_info(&registry, &files);
        assert_eq!(info.as_object().unwrap().len(), TYPES.len());

        let ks = &info["KSampler"];
        assert_eq!(ks["name"], "KSampler");
        assert_eq!(ks["output"], json!(["LATENT"]));
        assert_eq!(ks["category"], "sampling");
        let req = &ks["input"]["required"];
        assert_eq!(req["model"][0], "MODEL");
        assert_eq!(req["seed"][0], "INT");
        assert_eq!(req["seed"][1]["default"], 0);
        assert_eq!(req["seed"][1]["min"], 0);
        assert_eq!(req["seed"][1]["control_after_generate"], true);
        assert_eq!(req["steps"][1]["min"], 1);
        assert_eq!(req["steps"][1]["max"], 10000);
        assert_eq!(req["cfg"][0], "FLOAT");
        assert_eq!(req["cfg"][1]["default"], 8.0);
        assert_eq!(req["cfg"][1]["step"], 0.1);
        assert_eq!(req["cfg"][1]["round"], 0.01);
        let mut samplers: Vec<&str> = req["sampler_name"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        // ComfyUI's list exactly (618b803d: 4 `_gpu` names, imported as their base methods).
        let theirs: Vec<&str> = COMFYUI["KSampler"]["input"]["required"]["sampler_name"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(samplers, theirs);
        assert_eq!(samplers.iter().filter(|s| s.ends_with("_gpu")).count(), 4);
        samplers.retain(|s| !s.ends_with("_gpu"));
        samplers.sort();
        let mut weft = weft_nodes::samplers::SamplerKind::NAMES.to_vec();
        weft.sort();
        assert_eq!(samplers, weft);
        assert!(req["scheduler"][0]
            .as_array()
            .unwrap()
            .contains(&json!("karras")));
        assert_eq!(
            ks["input_order"]["required"],
            json!([
                "model",
                "seed",
                "steps",
                "cfg",
                "sampler_name",
                "scheduler",
                "positive",
                "negative",
                "latent_image",
                "denoise"
            ])
        );

        let ckpt = &info["CheckpointLoaderSimple"];
        assert_eq!(
            ckpt["input"]["required"]["ckpt_name"][0],
            json!(["v1-5-pruned-emaonly.safetensors"])
        );
        assert_eq!(ckpt["output"], json!(["MODEL", "CLIP", "VAE"]));
        assert_eq!(
            info["LoadImage"]["input"]["required"]["image"][1]["image_upload"],
            true
        );
        assert_eq!(info["SaveImage"]["output_node"], true);
        assert_eq!(
            info["SaveImage"]["input"]["required"]["filename_prefix"][1]["default"],
            "ComfyUI"
        );
        assert_eq!(
            info["EmptyLatentImage"]["input"]["required"]["width"][1]["step"],
            8
        );
        assert_eq!(
            info["CLIPTextEncode"]["input"]["required"]["text"][1]["multiline"],
            true
        );
        // Both of KSamplerAdvanced's noise choices map onto SamplerAdvanced.
        assert_eq!(
            info["KSamplerAdvanced"]["input"]["required"]["add_noise"][0],
            json!(["enable", "disable"])
        );
        assert_eq!(
            info["CLIPTextEncodeSDXLRefiner"]["input"]["required"]["ascore"][1]["default"],
            json!(6.0)
        );
    }

    /// weft's entries against ComfyUI's own (comfyui_object_info.json, from its nodes.py by
    /// scripts/parity/comfyui_object_info.py): equal but for choices, which are ComfyUI's that
    /// weft takes, in ComfyUI's order (file choices: the server's files).
    #[test]
    fn entries_equal_comfyuis_own_but_for_choices_weft_lacks() {
        let registry = weft_nodes::registry();
        let files = FileLists::default();
        let reference: Map<String, Json> =
            serde_json::from_str(include_str!("comfyui_object_info.json")).unwrap();
        assert!(reference.len() >= 17, "{}", reference.len());
        for (class, theirs) in &reference {
            let ty = TYPES
                .iter()
                .find(|t| t.class == class.as_str())
                .unwrap_or_else(|| panic!("weft serves {class}"));
            let mut ours = describe(ty, &registry, &files);
            let mut theirs = theirs.clone();
            for entry in [&mut ours, &mut theirs] {
                for section in ["required", "optional"] {
                    for spec in entry["input"][section]
                        .as_object_mut()
                        .into_iter()
                        .flat_map(|m| m.values_mut())
                    {
                        if spec[0].is_array() {
                            spec[0] = json!("choices");
                        }
                    }
                }
            }
            assert_eq!(ours, theirs, "{class}");
            // Choices: a subsequence of ComfyUI's (weft's own extras after them).
            let full = &reference[class.as_str()];
            for (name, spec) in full["input"]["required"].as_object().unwrap() {
                let Some(comfy) = spec[0].as_array() else {
                    continue;
                };
                let ours = describe(ty, &registry, &files);
                let weft = ours["input"]["required"][name.as_str()][0]
                    .as_array()
                    .unwrap();
                let positions: Vec<usize> = weft
                    .iter()
                    .filter_map(|c| comfy.iter().position(|x| x == c))
                    .collect();
                assert!(
                    positions.windows(2).all(|w| w[0] < w[1]),
                    "{class}.{name}: {weft:?} not in ComfyUI's order"
                );
            }
        }
        // The seed takes every 64-bit unsigned number, as ComfyUI's.
        let ks = describe(
            TYPES.iter().find(|t| t.class == "KSampler").unwrap(),
            &registry,
            &files,
        );
        assert_eq!(ks["input"]["required"]["seed"][1]["max"], json!(u64::MAX));
        let latent = describe(
            TYPES
                .iter()
                .find(|t| t.class == "EmptyLatentImage")
                .unwrap(),
            &registry,
            &files,
        );
        assert_eq!(latent["input"]["required"]["batch_size"][1]["max"], 4096);
        assert_eq!(
            latent["output_tooltips"][0],
            "The empty latent image batch."
        );
    }
}
