//! Loading Stable Diffusion 1.x / 2.x models: a diffusers folder (`unet/`, `vae/`,
//! `text_encoder/`, each with `config.json` and safetensors weights) or an original LDM
//! single-file `.safetensors` checkpoint, renamed to diffusers names by
//! [`crate::weights::ldm_keymap`]. Tensors are copied once from the memory-mapped file straight
//! to the chosen device and dtype; unused ones (EMA copies, ...) are never copied.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use weft_engine::FileAccess;

use crate::error::{CheckpointError, ModelError, Result};
use crate::models::autoencoder_kl::{AutoencoderKL, VaeConfig};
use crate::models::config_json::unsupported;
use crate::models::unet_2d_condition::{PredictionType, UNet2DConditionModel, UNetConfig};
use crate::weights::ldm_keymap::{
    map_ldm_key, Component, LdmLayout, Mapped, OPEN_CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX,
};
use crate::weights::{MappedFile, WeightedModel, Weights};

/// Which Stable Diffusion generation a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdVersion {
    /// SD 1.x: CLIP ViT-L/14 text encoder (768-wide context), conv transformer projections.
    V1,
    /// SD 2.x: OpenCLIP ViT-H/14 text encoder (1024-wide context), linear projections.
    V2,
}

/// How to load. Configs left `None` come from the folder's `config.json` files, or, for a
/// single file, from the SD 1.5 / 2.1 presets picked by the detected version.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// Float, Half or BFloat16: every floating-point tensor is converted to it.
    pub kind: Kind,
    pub unet_config: Option<UNetConfig>,
    pub vae_config: Option<VaeConfig>,
    /// Overrides the prediction type (a single SD 2.x file defaults to v-prediction, the
    /// 768-v models; set `Epsilon` for the 512 "base" ones).
    pub prediction_type: Option<PredictionType>,
    /// How the model's files are opened (the server's folder rule, or none).
    pub files: FileAccess,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            kind: Kind::Float,
            unet_config: None,
            vae_config: None,
            prediction_type: None,
            files: FileAccess::anywhere(),
        }
    }
}

/// A loaded Stable Diffusion model. The text encoder is handed over as tensors under
/// transformers `CLIPTextModel` names (`text_model.embeddings.token_embedding.weight`, ...)
/// with a transformers-style `CLIPTextConfig` JSON, for the CLIP module to build from.
pub struct StableDiffusionCheckpoint {
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub text_encoder_weights: HashMap<String, Tensor>,
    pub text_encoder_config: Value,
    pub version: SdVersion,
}

/// Loads a diffusers folder or a single `.safetensors` file, whichever `path` is.
pub fn load_checkpoint(path: &Path, options: &LoadOptions) -> Result<StableDiffusionCheckpoint> {
    if path.is_dir() {
        load_diffusers_folder(path, options)
    } else {
        load_single_file(path, options)
    }
}

/// Tells SD 1.x from 2.x by a single file's tensor names and shapes: the cross-attention key
/// width (768 CLIP-L vs 1024 OpenCLIP-H) and whether the transformers project in with a
/// 1x1 conv (1.x) or a linear layer (2.x); and rejects other architectures by name.
pub fn detect_version(
    shapes: &BTreeMap<String, Vec<usize>>,
) -> std::result::Result<SdVersion, CheckpointError> {
    if shapes
        .keys()
        .any(|k| k.starts_with("conditioner.embedders."))
    {
        return Err(CheckpointError::Sdxl);
    }
    if !shapes.keys().any(|k| k.starts_with(UNET_PREFIX)) {
        return Err(CheckpointError::NoUnet {
            count: shapes.len(),
            examples: shapes.keys().take(3).cloned().collect(),
        });
    }
    if shapes.contains_key(&format!("{UNET_PREFIX}label_emb.0.0.weight")) {
        return Err(CheckpointError::ClassConditioned);
    }
    let proj_in = shapes
        .get(&format!("{UNET_PREFIX}input_blocks.1.1.proj_in.weight"))
        .ok_or(CheckpointError::NoCrossAttention)?;
    let key_width = shapes
        .get(&format!(
            "{UNET_PREFIX}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
        ))
        .and_then(|s| s.get(1).copied());
    let linear = proj_in.len() == 2;
    let open_clip = shapes.keys().any(|k| k.starts_with(OPEN_CLIP_PREFIX));
    Ok(match (key_width, linear) {
        (Some(768), false) => SdVersion::V1,
        (Some(1024), true) => SdVersion::V2,
        // Small custom configs: the projection and text-encoder layout still tell.
        _ if linear || open_clip => SdVersion::V2,
        _ => SdVersion::V1,
    })
}

fn preset(version: SdVersion) -> UNetConfig {
    match version {
        SdVersion::V1 => UNetConfig::sd15(),
        SdVersion::V2 => UNetConfig::sd21(),
    }
}

/// A transformers `CLIPTextConfig` for a single file's text encoder, from its tensor shapes.
/// Heads are taken as width / 64 (true of CLIP-L and OpenCLIP-H); the activation is CLIP's
/// quick-GELU for SD 1.x and exact GELU for OpenCLIP.
fn text_encoder_config(weights: &HashMap<String, Tensor>, version: SdVersion) -> Value {
    let dim = |name: &str, i: usize| weights.get(name).map(|t| t.size()[i]).unwrap_or(0);
    let (vocab, hidden) = (
        dim("text_model.embeddings.token_embedding.weight", 0),
        dim("text_model.embeddings.token_embedding.weight", 1),
    );
    let layers = (0..)
        .take_while(|i| {
            weights.contains_key(&format!("text_model.encoder.layers.{i}.layer_norm1.weight"))
        })
        .count();
    json!({
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": dim("text_model.encoder.layers.0.mlp.fc1.weight", 0),
        "num_hidden_layers": layers,
        "num_attention_heads": (hidden / 64).max(1),
        "max_position_embeddings": dim("text_model.embeddings.position_embedding.weight", 0),
        "hidden_act": match version { SdVersion::V1 => "quick_gelu", SdVersion::V2 => "gelu" },
        "layer_norm_eps": 1e-5,
        // Both generations use the CLIP BPE tokenizer (<|startoftext|>, <|endoftext|>).
        "bos_token_id": 49406,
        "eos_token_id": 49407,
    })
}

/// Loads an original LDM single-file `.safetensors` checkpoint (SD 1.x or 2.x).
pub fn load_single_file(path: &Path, options: &LoadOptions) -> Result<StableDiffusionCheckpoint> {
    let not_sd = |source| ModelError::Checkpoint {
        path: path.to_path_buf(),
        source,
    };
    let file = MappedFile::open_with(path, &options.files)?;
    let shapes = file.shapes()?;
    let version = detect_version(&shapes).map_err(not_sd)?;
    let unet_config = single_file_unet_config(&shapes, version, options);
    let vae_config = options.vae_config.clone().unwrap_or_else(VaeConfig::sd);
    let layout = LdmLayout {
        unet_layers_per_block: unet_config.layers_per_block,
        vae_blocks: vae_config.block_out_channels.len(),
        open_clip_layers_kept: open_clip_resblocks(&shapes).saturating_sub(1),
    };
    let plan = copy_plan(&shapes, &layout);
    let tensors = file.read(options.device, Some(options.kind), |name| {
        plan.contains_key(name).then(|| name.to_string())
    })?;
    let mut parts = split_components(tensors, &plan).map_err(not_sd)?;
    let mut take = |component, what| {
        let part = parts.remove(&component).unwrap_or_default();
        if part.is_empty() {
            Err(not_sd(CheckpointError::MissingComponent { what }))
        } else {
            Ok(part)
        }
    };
    let unet_tensors = take(Component::Unet, "UNet (model.diffusion_model.*)")?;
    let vae_tensors = take(Component::Vae, "VAE (first_stage_model.*)")?;
    let text_encoder_weights = take(
        Component::TextEncoder,
        "text encoder (cond_stage_model.transformer.* / cond_stage_model.model.*)",
    )?;
    let unet_weights = Weights::new(format!("{} (UNet)", path.display()), unet_tensors);
    let vae_weights = Weights::new(format!("{} (VAE)", path.display()), vae_tensors);
    Ok(assemble(
        UNet2DConditionModel::new(&unet_weights, "", unet_config)?,
        AutoencoderKL::new(&vae_weights, "", vae_config)?,
        text_encoder_weights,
        None,
        version,
    ))
}

/// `options.unet_config`, else the version's preset with the file's input channels
/// (inpainting models take 9: latent, mask, masked-image latent); the prediction type is
/// `options.prediction_type` if set.
fn single_file_unet_config(
    shapes: &BTreeMap<String, Vec<usize>>,
    version: SdVersion,
    options: &LoadOptions,
) -> UNetConfig {
    let mut config = options.unet_config.clone().unwrap_or_else(|| {
        let mut c = preset(version);
        if let Some(s) = shapes.get(&format!("{UNET_PREFIX}input_blocks.0.0.weight")) {
            c.in_channels = s.get(1).map(|&d| d as i64).unwrap_or(c.in_channels);
        }
        c
    });
    if let Some(p) = options.prediction_type {
        config.prediction_type = p;
    }
    config
}

/// How many OpenCLIP transformer blocks (`transformer.resblocks.N`) a file holds; 0 for CLIP.
fn open_clip_resblocks(shapes: &BTreeMap<String, Vec<usize>>) -> usize {
    shapes
        .keys()
        .filter_map(|k| {
            k.strip_prefix(OPEN_CLIP_PREFIX)?
                .strip_prefix("transformer.resblocks.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map(|m| m + 1)
        .unwrap_or(0)
}

/// Which tensors to copy, and where each goes; names the map does not understand are kept
/// under their checkpoint name so the model's weight check reports them as unexpected.
fn copy_plan(
    shapes: &BTreeMap<String, Vec<usize>>,
    layout: &LdmLayout,
) -> HashMap<String, (Component, Mapped)> {
    let mut plan = HashMap::new();
    for name in shapes.keys() {
        let (component, mapped) = map_ldm_key(name, layout).unwrap_or_else(|| {
            let component = if name.starts_with(UNET_PREFIX) {
                Component::Unet
            } else if name.starts_with(VAE_PREFIX) {
                Component::Vae
            } else {
                Component::TextEncoder
            };
            (component, Mapped::Rename(name.clone()))
        });
        if mapped != Mapped::Drop {
            plan.insert(name.clone(), (component, mapped));
        }
    }
    plan
}

/// The copied tensors under their diffusers names, per component, following `plan`.
fn split_components(
    tensors: HashMap<String, Tensor>,
    plan: &HashMap<String, (Component, Mapped)>,
) -> std::result::Result<HashMap<Component, HashMap<String, Tensor>>, CheckpointError> {
    let mut parts: HashMap<Component, HashMap<String, Tensor>> = HashMap::new();
    for (name, tensor) in tensors {
        let (component, mapped) = &plan[&name];
        let part = parts.entry(*component).or_default();
        match mapped {
            Mapped::Rename(new) => {
                part.insert(new.clone(), tensor);
            }
            Mapped::ConvToLinear(new) => {
                let s = tensor.size();
                let t = if s.len() == 4 && s[2] == 1 && s[3] == 1 {
                    tensor.reshape([s[0], s[1]])
                } else {
                    tensor
                };
                part.insert(new.clone(), t);
            }
            Mapped::SplitQkv(names) => {
                let shape = tensor.size();
                if shape.is_empty() || shape[0] % 3 != 0 {
                    return Err(CheckpointError::FusedQkv { name, shape });
                }
                for (new, chunk) in names.iter().zip(tensor.chunk(3, 0)) {
                    part.insert(new.clone(), chunk.contiguous());
                }
            }
            Mapped::Transpose(new) => {
                // Another rank passes as is: the model's shape check then names it.
                let t = if tensor.dim() == 2 {
                    tensor.tr().contiguous()
                } else {
                    tensor
                };
                part.insert(new.clone(), t);
            }
            Mapped::Drop => {}
        }
    }
    Ok(parts)
}

/// A checkpoint of its loaded parts; the text encoder's config is `text_encoder_config` where
/// the source has one, else derived from its tensors.
fn assemble(
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder_weights: HashMap<String, Tensor>,
    text_encoder_config: Option<Value>,
    version: SdVersion,
) -> StableDiffusionCheckpoint {
    StableDiffusionCheckpoint {
        text_encoder_config: text_encoder_config
            .unwrap_or_else(|| self::text_encoder_config(&text_encoder_weights, version)),
        unet,
        vae,
        text_encoder_weights,
        version,
    }
}

fn read_json(path: &Path, files: &FileAccess) -> Result<Value> {
    let text = files
        .read_to_string(path)
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Format {
        path: path.to_path_buf(),
        format: "JSON",
        message: e.to_string(),
    })
}

/// The first of `names` present in `dir` (diffusers also ships `*.fp16.safetensors` variants).
fn weights_file(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| ModelError::Io {
            path: dir.join(names[0]),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no weights file"),
        })
}

const MODEL_FILES: [&str; 2] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
];

fn read_all(path: &Path, options: &LoadOptions) -> Result<HashMap<String, Tensor>> {
    MappedFile::open_with(path, &options.files)?
        .read(options.device, Some(options.kind), |n| Some(n.to_string()))
}

/// Loads a diffusers `unet/` folder (`config.json` unless `options.unet_config` is given, and
/// the weights). The prediction type is `options.prediction_type`, else the config's.
pub fn load_unet_folder(unet_dir: &Path, options: &LoadOptions) -> Result<UNet2DConditionModel> {
    let mut config = match &options.unet_config {
        Some(c) => c.clone(),
        None => {
            let path = unet_dir.join("config.json");
            UNetConfig::from_diffusers_json(&read_json(&path, &options.files)?)
                .map_err(|source| ModelError::Config { path, source })?
        }
    };
    if let Some(p) = options.prediction_type {
        config.prediction_type = p;
    }
    let path = weights_file(unet_dir, &MODEL_FILES)?;
    let weights = Weights::new(path.display().to_string(), read_all(&path, options)?);
    UNet2DConditionModel::new(&weights, "", config)
}

/// Loads a diffusers `vae/` folder (`config.json` unless `options.vae_config` is given).
pub fn load_vae_folder(vae_dir: &Path, options: &LoadOptions) -> Result<AutoencoderKL> {
    let config = match &options.vae_config {
        Some(c) => c.clone(),
        None => {
            let path = vae_dir.join("config.json");
            VaeConfig::from_diffusers_json(&read_json(&path, &options.files)?)
                .map_err(|source| ModelError::Config { path, source })?
        }
    };
    let path = weights_file(vae_dir, &MODEL_FILES)?;
    let weights = Weights::new(path.display().to_string(), read_all(&path, options)?);
    AutoencoderKL::new(&weights, "", config)
}

/// Loads a diffusers folder: `unet/`, `vae/`, `text_encoder/` (each `config.json` + weights)
/// and, when present, `scheduler/scheduler_config.json` for the prediction type.
pub fn load_diffusers_folder(
    dir: &Path,
    options: &LoadOptions,
) -> Result<StableDiffusionCheckpoint> {
    let mut options = options.clone();
    let scheduler = dir.join("scheduler/scheduler_config.json");
    if options.prediction_type.is_none() && options.unet_config.is_none() && scheduler.is_file() {
        if let Some(s) = read_json(&scheduler, &options.files)?
            .get("prediction_type")
            .and_then(Value::as_str)
        {
            options.prediction_type =
                Some(PredictionType::parse(s).ok_or_else(|| ModelError::Config {
                    path: scheduler.clone(),
                    source: unsupported("prediction_type", &json!(s), None),
                })?);
        }
    }
    let unet = load_unet_folder(&dir.join("unet"), &options)?;
    let vae = load_vae_folder(&dir.join("vae"), &options)?;
    let version =
        if unet.config().use_linear_projection || unet.config().cross_attention_dim == 1024 {
            SdVersion::V2
        } else {
            SdVersion::V1
        };

    let te_dir = dir.join("text_encoder");
    let te_path = weights_file(&te_dir, &["model.safetensors", "model.fp16.safetensors"])?;
    // Files saved by transformers 5 drop the `text_model.` level; SD's own files keep it.
    let text_encoder_weights = MappedFile::open_with(&te_path, &options.files)?.read(
        options.device,
        Some(options.kind),
        |n| {
            if n.ends_with("position_ids") {
                None
            } else if n.starts_with("text_model.") || n.starts_with("text_projection") {
                Some(n.to_string())
            } else {
                Some(format!("text_model.{n}"))
            }
        },
    )?;
    let te_config_path = te_dir.join("config.json");
    let text_encoder_config = te_config_path
        .is_file()
        .then(|| read_json(&te_config_path, &options.files))
        .transpose()?;
    Ok(assemble(
        unet,
        vae,
        text_encoder_weights,
        text_encoder_config,
        version,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd_shapes(context: usize, linear: bool) -> BTreeMap<String, Vec<usize>> {
        let mut m = BTreeMap::new();
        m.insert(
            format!("{UNET_PREFIX}input_blocks.0.0.weight"),
            vec![320, 4, 3, 3],
        );
        let proj = if linear {
            vec![320, 320]
        } else {
            vec![320, 320, 1, 1]
        };
        m.insert(
            format!("{UNET_PREFIX}input_blocks.1.1.proj_in.weight"),
            proj,
        );
        m.insert(
            format!("{UNET_PREFIX}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"),
            vec![320, context],
        );
        m
    }

    #[test]
    fn tells_sd1_from_sd2_by_tensor_shapes() {
        assert_eq!(detect_version(&sd_shapes(768, false)), Ok(SdVersion::V1));
        assert_eq!(detect_version(&sd_shapes(1024, true)), Ok(SdVersion::V2));
        assert_eq!(detect_version(&sd_shapes(16, false)), Ok(SdVersion::V1));
        assert_eq!(detect_version(&sd_shapes(12, true)), Ok(SdVersion::V2));
    }

    #[test]
    fn rejects_other_architectures_by_name() {
        let mut sdxl = sd_shapes(2048, true);
        sdxl.insert(
            "conditioner.embedders.0.transformer.text_model.x".into(),
            vec![1],
        );
        assert_eq!(detect_version(&sdxl), Err(CheckpointError::Sdxl));
        let mut other = BTreeMap::new();
        other.insert(
            "vision_model.embeddings.patch_embedding.weight".to_string(),
            vec![1],
        );
        assert!(matches!(
            detect_version(&other),
            Err(CheckpointError::NoUnet { count: 1, .. })
        ));
    }
}
