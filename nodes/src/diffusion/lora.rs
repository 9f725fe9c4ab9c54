//! The `LoadLora` node: a LoRA file from the models folder's `loras/` applied to a UNet and its
//! CLIP text towers (SDXL: CLIP-L and bigG), each part at its own strength (ComfyUI's
//! LoraLoader). The patched models share
//! every untouched tensor with the input ones; only the patched tensors are new.
use std::any::Any;
use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use weft_engine::{
    ConstantInputs, InputSpec as In, Inputs, ModelFolders, Node, NodeContext, NodeError,
    NodeResult, NodeSpec, OutputSpec as Out, Value, ValueType as T,
};

use crate::models::clip_text_model::ClipTextModel;
use crate::models::sdxl_text::{SdxlRefinerTextEncoder, SdxlTextEncoders};
use crate::weights::lora::{
    read_lora, LoraLayers, LoraTarget, SourceWeights, TargetModel, WeightPatch,
};
use crate::weights::{WeightedModel, Weights};

use super::handles::{DiffusionModel, TextEncoder};

/// The choice source (and models sub-folder, as in ComfyUI) of LoRA files.
pub const LORAS: &str = "loras";

/// Applies a LoRA to a model and its text encoder.
pub struct LoadLora;
impl Node for LoadLora {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "LoadLora",
            category: "loaders",
            doc: "applies a LoRA (kohya, diffusers/PEFT or LoCon .safetensors from models/loras) to the UNet and the text encoder; chain several to stack them",
            version: 1,
            inputs: vec![
                In::new("model", T::Model, "the UNet to patch"),
                In::new("text_encoder", T::TextEncoder, "the text encoder to patch"),
                In::new("lora", T::String, "file under models/loras (or a path)").listed_from(LORAS),
                In::new("strength_model", T::Float, "how much of the LoRA goes into the UNet (0: none)")
                    .default(1.0)
                    .range(-100.0, 100.0)
                    .step(0.01),
                In::new("strength_clip", T::Float, "how much of the LoRA goes into the text encoder (0: none)")
                    .default(1.0)
                    .range(-100.0, 100.0)
                    .step(0.01),
            ],
            outputs: vec![
                // Each output is keyed by its own inputs only, so a new strength_model does
                // not re-run the prompt encodes, nor a new strength_clip the sampler's model.
                Out::new("model", T::Model, "the patched UNet")
                    .depends_on(&["model", "lora", "strength_model"]),
                Out::new("text_encoder", T::TextEncoder, "the patched text encoder")
                    .depends_on(&["text_encoder", "lora", "strength_clip"]),
            ],
            output_node: false,
        }
    }

    fn input_files(
        &self,
        constants: &ConstantInputs,
        models: &ModelFolders,
    ) -> NodeResult<Vec<PathBuf>> {
        let name = constants.string("lora").unwrap_or_default();
        Ok(vec![resolve_lora(name, models)?])
    }

    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let path = resolve_lora(inputs.string("lora")?, ctx.models)?;
        let strength_model = inputs.float("strength_model")?;
        let strength_clip = inputs.float("strength_clip")?;
        let model_in = inputs
            .get("model")?
            .ok_or_else(|| NodeError::msg("no model"))?;
        let encoder_in = inputs
            .get("text_encoder")?
            .ok_or_else(|| NodeError::msg("no text encoder"))?;
        let model = inputs.object::<DiffusionModel>("model")?;
        let (root, mut tower_weights) = encoder_parts(encoder_in)?;
        let keys = model.family().lora_keys();

        // Every target is matched (even one at strength 0), so a file for another family is
        // refused whatever the strengths, and no key is reported as unmatched that matches.
        let unet_source = model.source();
        let mut targets = vec![TargetModel {
            target: LoraTarget::Unet,
            tensors: unet_source.base(),
        }];
        for (i, tower) in tower_weights.iter().enumerate() {
            targets.push(TargetModel {
                target: LoraTarget::TextEncoder(i),
                tensors: tower.base(),
            });
        }
        let mut layers = read_lora(&path, ctx.files, ctx.device, keys, &targets)?;
        if !layers.unmatched.is_empty() {
            ctx.notice(unmatched_notice(
                &path,
                &layers.unmatched,
                !tower_weights.is_empty(),
            ));
        }

        let model_out = match take(&mut layers, LoraTarget::Unet, strength_model) {
            None => passed_through(model_in),
            Some(patch) => patched_model(&model, patch, &path),
        };
        // Each tower's patch recorded; the encoder is rebuilt (at its first prompt) if any was.
        let mut patched_any = false;
        for (i, tower) in tower_weights.iter_mut().enumerate() {
            if let Some(patch) = take(&mut layers, LoraTarget::TextEncoder(i), strength_clip) {
                *tower = tower.with_patch(patch);
                patched_any = true;
            }
        }
        let encoder_out = if patched_any {
            let patched = PatchedTextEncoder {
                root,
                towers: tower_weights,
                label: format!("{} (text encoder with LoRA)", path.display()),
                built: OnceCell::new(),
            };
            let bytes = patched
                .towers
                .iter()
                .map(SourceWeights::patched_bytes)
                .sum();
            Value::object(T::TextEncoder, patched, bytes)
        } else {
            passed_through(encoder_in)
        };
        Ok(vec![model_out, encoder_out])
    }
}

/// Applies a LoRA to a model only (ComfyUI's LoraLoaderModelOnly).
pub struct LoadLoraModelOnly;
impl Node for LoadLoraModelOnly {
    fn spec(&self) -> NodeSpec {
        let full = LoadLora.spec();
        NodeSpec {
            type_name: "LoadLoraModelOnly",
            category: "loaders",
            doc: "applies a LoRA's UNet layers only (its text-encoder layers are left out)",
            version: 1,
            inputs: full
                .inputs
                .into_iter()
                .filter(|i| matches!(i.name, "model" | "lora" | "strength_model"))
                .collect(),
            outputs: vec![Out::new("model", T::Model, "the patched UNet")],
            output_node: false,
        }
    }

    fn input_files(
        &self,
        constants: &ConstantInputs,
        models: &ModelFolders,
    ) -> NodeResult<Vec<PathBuf>> {
        LoadLora.input_files(constants, models)
    }

    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let path = resolve_lora(inputs.string("lora")?, ctx.models)?;
        let model_in = inputs
            .get("model")?
            .ok_or_else(|| NodeError::msg("no model"))?;
        let model = inputs.object::<DiffusionModel>("model")?;
        let targets = [TargetModel {
            target: LoraTarget::Unet,
            tensors: model.source().base(),
        }];
        let keys = model.family().lora_keys();
        let mut layers = read_lora(&path, ctx.files, ctx.device, keys, &targets)?;
        // Text-encoder layers are expected here and left out on purpose: only the others are
        // worth a warning.
        let unmatched: Vec<String> = layers
            .unmatched
            .iter()
            .filter(|n| {
                !keys
                    .text_encoders
                    .iter()
                    .flat_map(|styles| styles.iter())
                    .any(|style| !style.prefix().is_empty() && n.starts_with(style.prefix()))
            })
            .cloned()
            .collect();
        if !unmatched.is_empty() {
            ctx.notice(unmatched_notice(&path, &unmatched, true));
        }
        let strength = inputs.float("strength_model")?;
        Ok(vec![match take(&mut layers, LoraTarget::Unet, strength) {
            None => passed_through(model_in),
            Some(patch) => patched_model(&model, patch, &path),
        }])
    }
}

/// The CLIP-architecture text transformers of a text encoder, in its family's LoRA order
/// (SDXL: CLIP-L, then bigG's; the refiner: bigG's); none for other encoders.
fn clip_towers(encoder: &TextEncoder) -> Vec<&ClipTextModel> {
    match encoder {
        TextEncoder::Clip { model, .. } => vec![model],
        TextEncoder::Sdxl(encoders) => vec![encoders.clip_l(), encoders.clip_g().text_model()],
        TextEncoder::SdxlRefiner(encoder) => vec![encoder.clip_g().text_model()],
        TextEncoder::MiniLm(_) => Vec::new(),
    }
}

/// `encoder` with the towers [`clip_towers`] lists replaced where `patched` has one; the
/// others are rebuilt on the same tensors.
fn with_towers(
    encoder: &TextEncoder,
    patched: Vec<Option<ClipTextModel>>,
) -> NodeResult<TextEncoder> {
    let mut patched = patched.into_iter();
    let mut next = |original: &ClipTextModel| -> NodeResult<ClipTextModel> {
        match patched.next().flatten() {
            Some(tower) => Ok(tower),
            None => shared_clip(original),
        }
    };
    Ok(match encoder {
        TextEncoder::Clip {
            model,
            tokenizer,
            special,
        } => TextEncoder::Clip {
            model: Box::new(next(model)?),
            tokenizer: tokenizer.clone(),
            special: *special,
        },
        TextEncoder::Sdxl(encoders) => {
            let clip_l = next(encoders.clip_l())?;
            let clip_g = encoders
                .clip_g()
                .with_text_model(next(encoders.clip_g().text_model())?);
            TextEncoder::Sdxl(Box::new(SdxlTextEncoders::new(
                clip_l,
                clip_g,
                encoders.tokenizer().clone(),
            )))
        }
        TextEncoder::SdxlRefiner(encoder) => {
            let clip_g = encoder
                .clip_g()
                .with_text_model(next(encoder.clip_g().text_model())?);
            TextEncoder::SdxlRefiner(Box::new(SdxlRefinerTextEncoder::new(
                clip_g,
                encoder.tokenizer().clone(),
            )))
        }
        TextEncoder::MiniLm(_) => {
            return Err(NodeError::msg(
                "input 'text_encoder': MiniLM has no CLIP layers a LoRA patches",
            ))
        }
    })
}

/// A CLIP tower built again on the same tensors and patches (nothing is copied).
fn shared_clip(clip: &ClipTextModel) -> NodeResult<ClipTextModel> {
    let source = clip.source().shallow_clone();
    let tensors = source
        .tensors()
        .map_err(|(tensor, e)| NodeError::msg(format!("text encoder tensor {tensor}: {e}")))?;
    let weights = Weights::new("text encoder (shared with its input)", tensors);
    let mut model = ClipTextModel::new(&weights, "text_model", clip.config().clone())?;
    model.set_source(source);
    model.set_compute_kind(clip.compute_kind());
    Ok(model)
}

/// The updates of `target`, unless there are none or its strength is 0 (then the input model
/// passes through as is, as ComfyUI's LoraLoader does: bit for bit the model without LoRA).
fn take(layers: &mut LoraLayers, target: LoraTarget, strength: f64) -> Option<WeightPatch> {
    let adapters = layers.targets.remove(&target)?;
    (strength != 0.0 && !adapters.is_empty()).then_some(WeightPatch { adapters, strength })
}

/// The input value again, counting no bytes (the cache already counts it where it was made).
fn passed_through(value: &Value) -> Value {
    match value {
        Value::Object { ty, object, .. } => Value::Object {
            ty: *ty,
            object: Rc::clone(object),
            bytes: 0,
        },
        other => other.clone(),
    }
}

/// The model with `patch` on top of its patches so far. Nothing is computed here: the
/// patched UNet is built when a sampler first runs it, so in a chain only the links a sampler
/// uses hold patched tensors. The bytes counted are those it holds once built.
fn patched_model(model: &DiffusionModel, patch: WeightPatch, path: &Path) -> Value {
    let patched = model.with_patch(patch, format!("{} (UNet with LoRA)", path.display()));
    let bytes = patched.patched_bytes();
    Value::object(T::Model, patched, bytes)
}

/// A CLIP tower of `original`'s configuration built on `source` (its weights and patches).
fn clip_from_source(
    original: &ClipTextModel,
    source: SourceWeights,
    label: &str,
) -> NodeResult<ClipTextModel> {
    let tensors = source.tensors().map_err(|(tensor, e)| {
        NodeError::msg(format!(
            "{label}: patching text encoder tensor {tensor}: {e}"
        ))
    })?;
    let weights = Weights::new(label.to_string(), tensors);
    let mut patched = ClipTextModel::new(&weights, "text_model", original.config().clone())?;
    patched.set_source(source);
    patched.set_compute_kind(original.compute_kind());
    Ok(patched)
}

/// LoadLora's text encoder: the unpatched encoder a chain of LoadLora nodes starts from and
/// each CLIP tower's weights with the chain's patches so far. The patched towers are built when
/// a prompt is first encoded with it, so the links of a chain no prompt uses hold no patched
/// tensors, and untouched tensors stay shared with the loaded encoder.
pub struct PatchedTextEncoder {
    root: Rc<TextEncoder>,
    /// Per tower of `root`, in [`clip_towers`] order.
    towers: Vec<SourceWeights>,
    label: String,
    built: OnceCell<Rc<TextEncoder>>,
}

impl PatchedTextEncoder {
    /// The patched encoder, built on the first call.
    pub fn encoder(&self) -> NodeResult<Rc<TextEncoder>> {
        if let Some(built) = self.built.get() {
            return Ok(Rc::clone(built));
        }
        let mut patched = Vec::new();
        for (original, source) in clip_towers(&self.root).into_iter().zip(&self.towers) {
            patched.push(if source.patches().is_empty() {
                None
            } else {
                Some(clip_from_source(
                    original,
                    source.shallow_clone(),
                    &self.label,
                )?)
            });
        }
        let encoder = Rc::new(with_towers(&self.root, patched)?);
        Ok(Rc::clone(self.built.get_or_init(|| encoder)))
    }

    /// Whether a prompt was encoded with it (its patched towers exist).
    pub fn is_built(&self) -> bool {
        self.built.get().is_some()
    }
}

/// The text encoder of the socket `name`: as loaded, or LoadLora's (built on first use).
pub fn text_encoder_input(inputs: &Inputs, name: &str) -> NodeResult<Rc<TextEncoder>> {
    match inputs.get(name)? {
        Some(Value::Object { object, .. }) => text_encoder_object(object, name),
        _ => inputs.object::<TextEncoder>(name),
    }
}

fn text_encoder_object(object: &Rc<dyn Any>, name: &str) -> NodeResult<Rc<TextEncoder>> {
    match Rc::clone(object).downcast::<TextEncoder>() {
        Ok(encoder) => Ok(encoder),
        Err(other) => match other.downcast::<PatchedTextEncoder>() {
            Ok(patched) => patched.encoder(),
            Err(_) => Err(NodeError::msg(format!(
                "input '{name}': not a text encoder object"
            ))),
        },
    }
}

/// The unpatched encoder a text-encoder value starts from and its towers' weights with the
/// patches on them so far (none for an encoder as loaded).
fn encoder_parts(value: &Value) -> NodeResult<(Rc<TextEncoder>, Vec<SourceWeights>)> {
    let Value::Object { object, .. } = value else {
        return Err(NodeError::msg("input 'text_encoder': not a text encoder"));
    };
    if let Some(patched) = object.downcast_ref::<PatchedTextEncoder>() {
        let towers = patched.towers.iter().map(SourceWeights::shallow_clone);
        return Ok((Rc::clone(&patched.root), towers.collect()));
    }
    let root = text_encoder_object(object, "text_encoder")?;
    let towers = clip_towers(&root)
        .iter()
        .map(|t| t.source().shallow_clone())
        .collect();
    Ok((root, towers))
}

/// The warning for layers of the file that patch nothing, naming them.
fn unmatched_notice(path: &Path, unmatched: &[String], encoder_is_clip: bool) -> String {
    let shown: Vec<&str> = unmatched.iter().take(20).map(String::as_str).collect();
    let more = unmatched.len().saturating_sub(shown.len());
    let hint = if encoder_is_clip {
        ""
    } else {
        " (the text encoder is not CLIP, so text-encoder layers cannot apply)"
    };
    format!(
        "{}: {} LoRA tensors match no layer of the model and were not applied{hint}: {}{}",
        path.display(),
        unmatched.len(),
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

/// A LoRA name: an existing path as given, else `loras/<name>` (or `<name>` when it already
/// starts with `loras/`) in the model folders, ComfyUI's `loras` folders included.
pub fn resolve_lora(name: &str, models: &ModelFolders) -> NodeResult<PathBuf> {
    let direct = PathBuf::from(name);
    if !name.is_empty() && direct.is_file() {
        return Ok(direct);
    }
    let under = if name.starts_with("loras/") {
        name.to_string()
    } else {
        format!("{LORAS}/{name}")
    };
    if !name.is_empty() {
        if let Some(found) = models.find(&under).filter(|p| p.is_file()) {
            return Ok(found);
        }
    }
    let found = find_loras(models);
    Err(NodeError::msg(format!(
        "LoRA '{name}' not found (looked for {}); {}",
        models
            .candidates(&under)
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        if found.is_empty() {
            format!("no LoRA under {models}: put .safetensors LoRA files in a loras/ folder there")
        } else {
            format!("LoRAs found: {}", found.join(", "))
        }
    )))
}

/// The `.safetensors` files under every model folder's `loras/` (and sub-folders, as ComfyUI
/// lists them), as names `resolve_lora` takes, sorted, each once.
pub fn find_loras(models: &ModelFolders) -> Vec<String> {
    let mut found = Vec::new();
    for folder in models.folders() {
        let Some(dir) = folder
            .candidate(&format!("{LORAS}/x"))
            .and_then(|p| p.parent().map(Path::to_path_buf))
        else {
            continue;
        };
        let mut stack = vec![(dir, String::new())];
        while let Some((dir, relative)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let rel = format!("{relative}{name}");
                if path.is_dir() {
                    stack.push((path, format!("{rel}/")));
                } else if path.extension().is_some_and(|e| e == "safetensors") {
                    found.push(format!("{LORAS}/{rel}"));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_engine::ModelFolder;

    #[test]
    fn loras_are_listed_from_whole_folders_and_comfyui_lora_folders_and_resolved() {
        let dir = std::env::temp_dir().join(format!("weft-loras-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("weft/loras/styles")).unwrap();
        std::fs::write(dir.join("weft/loras/a.safetensors"), b"x").unwrap();
        std::fs::write(dir.join("weft/loras/styles/b.safetensors"), b"x").unwrap();
        std::fs::write(dir.join("weft/loras/notes.txt"), b"x").unwrap();
        std::fs::create_dir_all(dir.join("comfy")).unwrap();
        std::fs::write(dir.join("comfy/c.safetensors"), b"x").unwrap();
        let models = ModelFolders::new(vec![
            ModelFolder::whole(dir.join("weft")),
            ModelFolder::of_kind(LORAS, dir.join("comfy")),
        ]);
        assert_eq!(
            find_loras(&models),
            [
                "loras/a.safetensors",
                "loras/c.safetensors",
                "loras/styles/b.safetensors"
            ]
        );
        assert_eq!(
            resolve_lora("c.safetensors", &models).unwrap(),
            dir.join("comfy/c.safetensors")
        );
        assert_eq!(
            resolve_lora("loras/styles/b.safetensors", &models).unwrap(),
            dir.join("weft/loras/styles/b.safetensors")
        );
        let missing = resolve_lora("nope.safetensors", &models)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("loras/a.safetensors"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod sdxl_tower_tests {
    use tch::{Device, Kind};

    use super::*;
    use crate::models::clip_tokenizer::ClipTokenizer;
    use crate::weights::checkpoint::{load_diffusers_folder, LoadOptions};
    use crate::weights::family::ModelFamily;

    /// The tiny SDXL fixture's text encoder as LoadCheckpoint builds it.
    fn sdxl_encoder() -> TextEncoder {
        let fixtures = weft_test_support::fixtures("sdxl").join("diffusers");
        let checkpoint = load_diffusers_folder(&fixtures, &LoadOptions::default()).unwrap();
        let clip_g = checkpoint.text_encoder_2.unwrap();
        let vocab =
            weft_test_support::fixtures("text_encoders").join("bpe_simple_vocab_16e6.txt.gz");
        let encoders = SdxlTextEncoders::from_weights(
            checkpoint.text_encoder_weights,
            &checkpoint.text_encoder_config,
            clip_g.weights,
            &clip_g.config,
            ClipTokenizer::from_file(&vocab).unwrap(),
            Device::Cpu,
            Kind::Float,
        )
        .unwrap();
        TextEncoder::Sdxl(Box::new(encoders))
    }

    /// What LoadLora does to an SDXL text encoder: both towers are LoRA targets, each patched
    /// tower comes back in its place, and what no LoRA touches keeps its storage.
    #[test]
    fn an_sdxl_lora_patches_clip_l_and_bigg_and_shares_the_rest() {
        let encoder = sdxl_encoder();
        let towers = clip_towers(&encoder);
        assert_eq!(towers.len(), 2);
        let targets: Vec<TargetModel> = towers
            .iter()
            .enumerate()
            .map(|(i, t)| TargetModel {
                target: LoraTarget::TextEncoder(i),
                tensors: t.source().base(),
            })
            .collect();
        let path = weft_test_support::fixtures("lora_sdxl").join("kohya_ldm.safetensors");
        let mut layers = read_lora(
            &path,
            &weft_engine::FileAccess::anywhere(),
            Device::Cpu,
            ModelFamily::Sdxl.lora_keys(),
            &targets,
        )
        .unwrap();
        let patched: Vec<Option<ClipTextModel>> = (0..2)
            .map(|i| {
                let patch = take(&mut layers, LoraTarget::TextEncoder(i), 1.0).unwrap();
                let source = towers[i].source().with_patch(patch);
                Some(clip_from_source(towers[i], source, "lora").unwrap())
            })
            .collect();
        let out = with_towers(&encoder, patched).unwrap();
        let TextEncoder::Sdxl(out) = out else {
            panic!("not an SDXL encoder");
        };
        let after = [out.clip_l(), out.clip_g().text_model()];
        for (i, (before, after)) in towers.iter().zip(after).enumerate() {
            let (b, a) = (
                before.source().tensors().unwrap(),
                after.source().tensors().unwrap(),
            );
            let touched = "text_model.encoder.layers.0.self_attn.q_proj.weight";
            assert!(
                !a[touched].equal(&b[touched]),
                "tower {i}: {touched} unpatched"
            );
            let untouched = "text_model.encoder.layers.1.self_attn.q_proj.weight";
            assert_eq!(
                a[untouched].data_ptr(),
                b[untouched].data_ptr(),
                "tower {i}"
            );
        }
    }
}

#[cfg(test)]
mod chain_tests {
    use std::collections::HashMap;

    use tch::Device;

    use super::*;
    use crate::weights::checkpoint::{load_diffusers_folder, LoadOptions};

    /// Two LoadLora links on the tiny SD1 UNet: the first link, which nothing runs, never holds
    /// patched tensors; the second, once run, holds one patched copy of what the chain touches,
    /// shares every other tensor with the loaded UNet, and the loaded UNet is left as it was.
    #[test]
    fn a_lora_chain_builds_only_the_model_that_runs_and_shares_what_it_does_not_touch() {
        let dir = weft_test_support::fixtures("unet_vae").join("sd1");
        let base = DiffusionModel::new(
            load_diffusers_folder(&dir, &LoadOptions::default())
                .unwrap()
                .unet,
        );
        let before: HashMap<String, tch::Tensor> = base
            .source()
            .base()
            .iter()
            .map(|(k, t)| (k.clone(), t.copy()))
            .collect();
        let path = weft_test_support::fixtures("lora").join("kohya.safetensors");
        let patch = |strength| {
            let targets = [TargetModel {
                target: LoraTarget::Unet,
                tensors: base.source().base(),
            }];
            let mut layers = read_lora(
                &path,
                &weft_engine::FileAccess::anywhere(),
                Device::Cpu,
                base.family().lora_keys(),
                &targets,
            )
            .unwrap();
            take(&mut layers, LoraTarget::Unet, strength).unwrap()
        };
        let touched: Vec<String> = patch(1.0).adapters.keys().cloned().collect();
        let first = base.with_patch(patch(0.7), "first".into());
        let second = first.with_patch(patch(-0.4), "second".into());
        assert_eq!(second.source().patches().len(), 2);
        let unet = second.unet().unwrap();
        assert!(
            !first.source().is_materialized(),
            "a link no sampler ran holds no patched tensors"
        );
        let loaded = base.source().base();
        let patched = unet.source().tensors().unwrap();
        let mut shared = 0;
        for (name, tensor) in &patched {
            if touched.contains(name) {
                assert_ne!(tensor.data_ptr(), loaded[name].data_ptr(), "{name}");
                assert!(!tensor.equal(&loaded[name]), "{name} unpatched");
            } else {
                assert_eq!(tensor.data_ptr(), loaded[name].data_ptr(), "{name} copied");
                shared += 1;
            }
        }
        assert!(shared > 0 && !touched.is_empty());
        assert_eq!(
            second.patched_bytes(),
            touched
                .iter()
                .map(|n| (loaded[n].numel() * loaded[n].kind().elt_size_in_bytes()) as u64)
                .sum::<u64>(),
            "one copy of the touched tensors for the whole chain"
        );
        for (name, tensor) in loaded {
            assert!(
                tensor.equal(&before[name]),
                "{name}: the loaded UNet was written"
            );
        }
    }
}
