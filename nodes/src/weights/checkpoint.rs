//! Loading Stable Diffusion 1.x / 2.x / SDXL (base and refiner) models: a diffusers folder
//! (`unet/`, `vae/`, `text_encoder/`, SDXL's `text_encoder_2/` (the refiner's only one), each with `config.json` and safetensors weights)
//! or an original LDM single-file `.safetensors` checkpoint, renamed to diffusers names by
//! [`crate::weights::ldm_keymap`]. What differs between families comes from their
//! descriptor, [`ModelFamily`]. Tensors are copied once from the memory-mapped file straight
//! to the chosen device and dtype; unused ones (EMA copies, ...) are never copied.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use weft_engine::FileAccess;

use crate::error::{CheckpointError, ModelError, Result};
use crate::models::autoencoder_kl::{AutoencoderKL, VaeConfig};
use crate::models::config_json::unsupported;
use crate::models::unet_2d_condition::{
    AdditionEmbed, PredictionType, UNet2DConditionModel, UNetConfig,
};
use crate::weights::ldm_keymap::{
    map_ldm_key, Component, LdmLayout, Mapped, OPEN_CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX,
};
use crate::weights::{MappedFile, WeightedModel, Weights};

pub use crate::weights::family::{ModelFamily, SdVersion};

/// How to load. Configs left `None` come from the folder's `config.json` files, or, for a
/// single file, from the presets of the detected family.
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
    /// The kind SDXL's text towers keep their weights in when it is not `kind` (they still
    /// compute in `kind`): LoadCheckpoint's `auto` on the CPU keeps them in fp16, as ComfyUI
    /// does, which for an fp16 file gives the fp32 load's values in 1.6 GB less memory.
    /// `None`: `kind`. SD 1.x/2.x towers are always loaded in `kind`.
    pub sdxl_text_kind: Option<Kind>,
    /// The kind the UNet keeps its weights in when it is not `kind` (it still computes in
    /// `kind`, each layer widening its weights per call): LoadCheckpoint's `fp16-storage`
    /// keeps an fp16 file's UNet in fp16 and computes in fp32 — the fp32 load's values in
    /// half its memory. `None`: `kind`. Any family.
    pub unet_kind: Option<Kind>,
    /// An SDXL UNet's weights stored in fp16 or bf16 in the file stay so (still computing in
    /// `kind`, each layer widening per call — the values of the fp32 load in half its memory);
    /// fp32 ones are converted to `kind` as usual. LoadCheckpoint's `auto` on the CPU, where an
    /// fp32 SDXL UNet takes 10.3 GB. Ignored when `unet_kind` is given.
    pub sdxl_unet_as_stored: bool,
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
            sdxl_text_kind: None,
            unet_kind: None,
            sdxl_unet_as_stored: false,
        }
    }
}

/// A loaded Stable Diffusion model. The text encoder is handed over as tensors under
/// transformers `CLIPTextModel` names (`text_model.embeddings.token_embedding.weight`, ...)
/// with a transformers-style `CLIPTextConfig` JSON, for the CLIP module to build from; SDXL's
/// second tower likewise, under `CLIPTextModelWithProjection` names.
pub struct StableDiffusionCheckpoint {
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub text_encoder_weights: HashMap<String, Tensor>,
    pub text_encoder_config: Value,
    /// SDXL's OpenCLIP-bigG tower (`text_model.*`, `text_projection.weight`); `None` for
    /// SD 1.x/2.x. The SDXL refiner has only this one (`text_encoder_weights` is empty).
    pub text_encoder_2: Option<TextTower>,
    /// The model family (named `version` when there were only SD 1.x and 2.x).
    pub version: ModelFamily,
}

/// One text tower's tensors under transformers names and its `CLIPTextConfig` JSON.
pub struct TextTower {
    pub weights: HashMap<String, Tensor>,
    pub config: Value,
}

impl StableDiffusionCheckpoint {
    pub fn family(&self) -> ModelFamily {
        self.version
    }
}

/// Loads a diffusers folder or a single `.safetensors` file, whichever `path` is.
pub fn load_checkpoint(path: &Path, options: &LoadOptions) -> Result<StableDiffusionCheckpoint> {
    if path.is_dir() {
        load_diffusers_folder(path, options)
    } else {
        load_single_file(path, options)
    }
}

/// The family of a single file, from its tensor names and shapes ([`ModelFamily::detect`]).
pub fn detect_version(
    shapes: &BTreeMap<String, Vec<usize>>,
) -> std::result::Result<ModelFamily, CheckpointError> {
    ModelFamily::detect(shapes)
}

/// A transformers `CLIPTextConfig` for a single file's text encoder, from its tensor shapes.
/// Heads are taken as width / 64 (true of CLIP-L, OpenCLIP-H and -bigG); the activation is
/// CLIP's quick-GELU for OpenAI CLIP and exact GELU for OpenCLIP.
fn text_encoder_config(weights: &HashMap<String, Tensor>, activation: &str) -> Value {
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
    let mut config = json!({
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": dim("text_model.encoder.layers.0.mlp.fc1.weight", 0),
        "num_hidden_layers": layers,
        "num_attention_heads": (hidden / 64).max(1),
        "max_position_embeddings": dim("text_model.embeddings.position_embedding.weight", 0),
        "hidden_act": activation,
        "layer_norm_eps": 1e-5,
        // Both generations use the CLIP BPE tokenizer (<|startoftext|>, <|endoftext|>).
        "bos_token_id": 49406,
        "eos_token_id": 49407,
    });
    if let Some(projection) = weights.get("text_projection.weight") {
        config["projection_dim"] = json!(projection.size()[0]);
    }
    config
}

/// Loads an original LDM single-file `.safetensors` checkpoint (SD 1.x, 2.x or SDXL).
pub fn load_single_file(path: &Path, options: &LoadOptions) -> Result<StableDiffusionCheckpoint> {
    let not_sd = |source| ModelError::Checkpoint {
        path: path.to_path_buf(),
        source,
    };
    let file = MappedFile::open_with(path, &options.files)?;
    let shapes = file.shapes()?;
    let family = ModelFamily::detect(&shapes).map_err(not_sd)?;
    let unet_config = single_file_unet_config(&shapes, family, options).map_err(not_sd)?;
    let vae_config = options
        .vae_config
        .clone()
        .unwrap_or_else(|| family.vae_preset());
    let open_clip_layers = open_clip_resblocks(&shapes);
    let layout = LdmLayout {
        unet_layers_per_block: unet_config.layers_per_block,
        vae_blocks: vae_config.block_out_channels.len(),
        // SD 2.x conditions on the penultimate layer and diffusers keeps only the layers up
        // to it (SDXL's bigG keeps them all: its pooled output comes from the last).
        open_clip_layers_kept: open_clip_layers.saturating_sub(1),
    };
    let plan = copy_plan(&shapes, &layout);
    let text_kind = text_tower_kind(family, options);
    let is_sdxl = matches!(family, ModelFamily::Sdxl | ModelFamily::SdxlRefiner);
    let unet_kind = unet_stored_kind(is_sdxl, options);
    // Each tensor is converted once, straight from the file into the kind it is kept in.
    let tensors = file.read_each(options.device, |name| {
        plan.get(name).map(|(component, _)| {
            let kind = match component {
                Component::TextEncoder | Component::TextEncoder2 => Some(text_kind),
                Component::Unet => unet_kind,
                _ => Some(options.kind),
            };
            (name.to_string(), kind)
        })
    })?;
    let mut parts = split_components(tensors, &plan).map_err(not_sd)?;
    let mut take = |component, what: &'static str| {
        let part = parts.remove(&component).unwrap_or_default();
        if part.is_empty() {
            Err(not_sd(CheckpointError::MissingComponent {
                family: family.name(),
                what,
            }))
        } else {
            Ok(part)
        }
    };
    let unet_tensors = take(Component::Unet, "UNet (model.diffusion_model.*)")?;
    let vae_tensors = take(Component::Vae, "VAE (first_stage_model.*)")?;
    let (text_encoder_weights, text_encoder_2) = match family {
        ModelFamily::Sdxl => {
            let clip_l = take(
                Component::TextEncoder,
                "CLIP-L text encoder (conditioner.embedders.0.transformer.*)",
            )?;
            let clip_g = take(
                Component::TextEncoder2,
                "OpenCLIP-bigG text encoder (conditioner.embedders.1.model.*)",
            )?;
            let config = text_encoder_config(&clip_g, "gelu");
            (
                clip_l,
                Some(TextTower {
                    weights: clip_g,
                    config,
                }),
            )
        }
        ModelFamily::SdxlRefiner => {
            // bigG alone; there is no first tower, so its tensors stay empty.
            let clip_g = take(
                Component::TextEncoder2,
                "OpenCLIP-bigG text encoder (conditioner.embedders.0.model.*)",
            )?;
            let config = text_encoder_config(&clip_g, "gelu");
            (
                HashMap::new(),
                Some(TextTower {
                    weights: clip_g,
                    config,
                }),
            )
        }
        _ => (
            take(
                Component::TextEncoder,
                "text encoder (cond_stage_model.transformer.* / cond_stage_model.model.*)",
            )?,
            None,
        ),
    };
    let vae_kind = family.vae_kind(options.kind);
    let vae_tensors = if vae_kind != options.kind {
        vae_tensors
            .into_iter()
            .map(|(name, t)| (name, t.to_kind(vae_kind)))
            .collect()
    } else {
        vae_tensors
    };
    let unet_weights = Weights::new(format!("{} (UNet)", path.display()), unet_tensors);
    let vae_weights = Weights::new(format!("{} (VAE)", path.display()), vae_tensors);
    let mut unet = UNet2DConditionModel::new(&unet_weights, "", unet_config)?;
    unet.set_compute_kind(options.kind);
    Ok(assemble(
        unet,
        AutoencoderKL::new(&vae_weights, "", vae_config)?,
        text_encoder_weights,
        None,
        text_encoder_2,
        family,
    ))
}

/// The kind a family's text-tower weights are kept in ([`LoadOptions::sdxl_text_kind`]).
fn text_tower_kind(family: ModelFamily, options: &LoadOptions) -> Kind {
    match family {
        ModelFamily::Sdxl | ModelFamily::SdxlRefiner => {
            options.sdxl_text_kind.unwrap_or(options.kind)
        }
        _ => options.kind,
    }
}

/// The kind a UNet's weights are read into: `options.unet_kind`, else `None` (as the file
/// stores them) for an SDXL UNet under `sdxl_unet_as_stored` when the file's are narrower than
/// `kind`, else `kind`. `None` keeps an fp32 file's weights fp32, which is `kind` there.
fn unet_stored_kind(is_sdxl: bool, options: &LoadOptions) -> Option<Kind> {
    match options.unet_kind {
        Some(kind) => Some(kind),
        None if is_sdxl && options.sdxl_unet_as_stored && options.kind == Kind::Float => None,
        None => Some(options.kind),
    }
}

/// `options.unet_config`, else the family's preset with the file's input channels
/// (inpainting models take 9: latent, mask, masked-image latent) — for SDXL families the
/// config read from the file's shapes; the prediction type is `options.prediction_type` if set.
fn single_file_unet_config(
    shapes: &BTreeMap<String, Vec<usize>>,
    family: ModelFamily,
    options: &LoadOptions,
) -> Result<UNetConfig, CheckpointError> {
    let mut config = match options.unet_config.clone() {
        Some(config) => config,
        None if matches!(family, ModelFamily::Sdxl | ModelFamily::SdxlRefiner) => {
            sdxl_unet_config_from_shapes(shapes, family)?
        }
        None => {
            let mut c = family.unet_preset();
            if let Some(s) = shapes.get(&format!("{UNET_PREFIX}input_blocks.0.0.weight")) {
                c.in_channels = s.get(1).map(|&d| d as i64).unwrap_or(c.in_channels);
            }
            c
        }
    };
    if let Some(p) = options.prediction_type {
        config.prediction_type = p;
    }
    Ok(config)
}

/// SDXL's attention heads are 64 channels wide at every level (ComfyUI: `num_head_channels`).
const SDXL_HEAD_WIDTH: i64 = 64;

/// An SDXL base or refiner UNet config read from a single file's tensor shapes, as ComfyUI's
/// `detect_unet_config` reads one: widths, levels, res blocks per level, transformer depths,
/// context width and added-input width come from the tensors, so SDXL-architecture files of
/// other sizes (distilled models, the reduced-width checkpoints of the ComfyUI comparison)
/// load too. Heads stay 64 channels wide and the size ids 256 wide, which the shapes cannot
/// tell. A full-size file gives the family's preset (blocks without attention carry 1, the
/// last level the middle block's depth: diffusers gives the middle block the last count).
pub fn sdxl_unet_config_from_shapes(
    shapes: &BTreeMap<String, Vec<usize>>,
    family: ModelFamily,
) -> Result<UNetConfig, CheckpointError> {
    let layout = |reason: String| CheckpointError::UnetLayout { reason };
    let has = |name: &str| shapes.contains_key(&format!("{UNET_PREFIX}{name}"));
    let dim = |name: &str, i: usize| -> Result<i64, CheckpointError> {
        shapes
            .get(&format!("{UNET_PREFIX}{name}"))
            .and_then(|s| s.get(i))
            .map(|&d| d as i64)
            .ok_or_else(|| layout(format!("no tensor {UNET_PREFIX}{name}")))
    };
    let depth = |block: &str| {
        (0..)
            .take_while(|k| has(&format!("{block}.transformer_blocks.{k}.attn1.to_q.weight")))
            .count()
    };
    let preset = family.unet_preset();
    let in_conv = dim("input_blocks.0.0.weight", 1)?;
    // Levels: runs of res blocks (`input_blocks.N.0.in_layers`) split by downsamplers
    // (`input_blocks.N.0.op`).
    let mut levels: Vec<(i64, Vec<usize>)> = Vec::new();
    let mut block = 1;
    loop {
        let (mut channels, mut depths) = (0, Vec::new());
        while has(&format!("input_blocks.{block}.0.in_layers.0.weight")) {
            channels = dim(&format!("input_blocks.{block}.0.out_layers.3.weight"), 0)?;
            depths.push(depth(&format!("input_blocks.{block}.1")));
            block += 1;
        }
        if depths.is_empty() {
            break;
        }
        levels.push((channels, depths));
        if !has(&format!("input_blocks.{block}.0.op.weight")) {
            break;
        }
        block += 1;
    }
    let layers_per_block = levels.first().map(|(_, d)| d.len()).unwrap_or(0);
    if layers_per_block == 0 {
        return Err(layout("no res blocks under input_blocks".into()));
    }
    let mut transformer_layers = Vec::new();
    for (level, (_, depths)) in levels.iter().enumerate() {
        if depths.len() != layers_per_block || depths.iter().any(|&d| d != depths[0]) {
            return Err(layout(format!(
                "level {level} has res blocks with transformer depths {depths:?} \
                 (weft builds {layers_per_block} blocks per level, one depth per level)"
            )));
        }
        transformer_layers.push(depths[0]);
    }
    let middle = depth("middle_block.1");
    let last = transformer_layers.len() - 1;
    if transformer_layers[last] != 0 && transformer_layers[last] != middle {
        return Err(layout(format!(
            "the middle block has {middle} transformer layers, the last level {} \
             (weft gives the middle block the last level's depth)",
            transformer_layers[last]
        )));
    }
    let cross_attention_blocks: Vec<bool> = transformer_layers.iter().map(|&d| d > 0).collect();
    let (first_attention, _) = cross_attention_blocks
        .iter()
        .enumerate()
        .find(|(_, &cross)| cross)
        .ok_or_else(|| layout("no cross-attention transformer in any level".into()))?;
    let attention_block = 1 + first_attention * (layers_per_block + 1);
    let attention = format!("input_blocks.{attention_block}.1");
    let use_linear_projection = shapes
        .get(&format!("{UNET_PREFIX}{attention}.proj_in.weight"))
        .is_some_and(|s| s.len() == 2);
    let block_out_channels: Vec<i64> = levels.iter().map(|(c, _)| *c).collect();
    for (i, &d) in transformer_layers.iter().enumerate() {
        let c = block_out_channels[i];
        if d > 0 && c % SDXL_HEAD_WIDTH != 0 {
            return Err(layout(format!(
                "level {i} is {c} channels wide, not a multiple of SDXL's {SDXL_HEAD_WIDTH}-wide heads"
            )));
        }
    }
    let mut transformer_layers_per_block: Vec<usize> =
        transformer_layers.iter().map(|&d| d.max(1)).collect();
    transformer_layers_per_block[last] = middle.max(1);
    let addition_embed = preset.addition_embed.map(|add| AdditionEmbed {
        input_dim: dim("label_emb.0.0.weight", 1).unwrap_or(add.input_dim),
        ..add
    });
    Ok(UNetConfig {
        in_channels: in_conv,
        out_channels: dim("out.2.weight", 0)?,
        num_attention_heads: block_out_channels
            .iter()
            .map(|c| (c / SDXL_HEAD_WIDTH).max(1))
            .collect(),
        block_out_channels,
        cross_attention_blocks,
        layers_per_block,
        cross_attention_dim: dim(
            &format!("{attention}.transformer_blocks.0.attn2.to_k.weight"),
            1,
        )?,
        transformer_layers_per_block,
        use_linear_projection,
        addition_embed,
        ..preset
    })
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
    text_encoder_2: Option<TextTower>,
    family: ModelFamily,
) -> StableDiffusionCheckpoint {
    StableDiffusionCheckpoint {
        text_encoder_config: text_encoder_config.unwrap_or_else(|| {
            self::text_encoder_config(&text_encoder_weights, family.clip_activation())
        }),
        unet,
        vae,
        text_encoder_weights,
        text_encoder_2,
        version: family,
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
    let stored_kind = unet_stored_kind(config.addition_embed.is_some(), options);
    let tensors =
        MappedFile::open_with(&path, &options.files)?
            .read(options.device, stored_kind, |n| Some(n.to_string()))?;
    let weights = Weights::new(path.display().to_string(), tensors);
    let mut unet = UNet2DConditionModel::new(&weights, "", config)?;
    unet.set_compute_kind(options.kind);
    Ok(unet)
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
    let family = ModelFamily::of_unet_config(unet.config());
    let vae_options = LoadOptions {
        kind: family.vae_kind(options.kind),
        ..options.clone()
    };
    let vae = load_vae_folder(&dir.join("vae"), &vae_options)?;
    let options = LoadOptions {
        kind: text_tower_kind(family, &options),
        ..options
    };
    // The refiner's folder has only text_encoder_2/ (bigG).
    let (text_encoder_weights, text_encoder_config) = match family {
        ModelFamily::SdxlRefiner => (HashMap::new(), Some(json!({}))),
        _ => load_text_folder(&dir.join("text_encoder"), &options)?,
    };
    let text_encoder_2 = match family {
        ModelFamily::Sdxl | ModelFamily::SdxlRefiner => {
            let (weights, config) = load_text_folder(&dir.join("text_encoder_2"), &options)?;
            let config = config.unwrap_or_else(|| self::text_encoder_config(&weights, "gelu"));
            Some(TextTower { weights, config })
        }
        _ => None,
    };
    Ok(assemble(
        unet,
        vae,
        text_encoder_weights,
        text_encoder_config,
        text_encoder_2,
        family,
    ))
}

/// A transformers text-encoder folder: its weights under `text_model.*` names (plus
/// `text_projection.weight` if it has one) and its `config.json` if present.
fn load_text_folder(
    te_dir: &Path,
    options: &LoadOptions,
) -> Result<(HashMap<String, Tensor>, Option<Value>)> {
    let te_path = weights_file(te_dir, &["model.safetensors", "model.fp16.safetensors"])?;
    // Files saved by transformers 5 drop the `text_model.` level; SD's own files keep it.
    let weights = MappedFile::open_with(&te_path, &options.files)?.read(
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
    let config_path = te_dir.join("config.json");
    let config = config_path
        .is_file()
        .then(|| read_json(&config_path, &options.files))
        .transpose()?;
    Ok((weights, config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_test_support::fixtures;

    /// The UNet's output for fixed random inputs (SDXL's added conditioning when it takes one).
    fn unet_output(unet: &UNet2DConditionModel) -> Tensor {
        tch::manual_seed(7);
        let c = unet.config();
        let sample = Tensor::randn([2, c.in_channels, 16, 16], (Kind::Float, Device::Cpu));
        let context = Tensor::randn([2, 9, c.cross_attention_dim], (Kind::Float, Device::Cpu));
        let added = c
            .addition_embed
            .map(|a| Tensor::randn([2, a.input_dim], (Kind::Float, Device::Cpu)));
        let t = Tensor::from(601.0f64);
        unet.forward_with_added(&sample, &t, &context, added.as_ref(), None)
            .unwrap()
    }

    /// fp16-storage's UNet keeps every weight in fp16 (so every layer runs on widened weights:
    /// one that did not widen would meet fp32 activations with fp16 weights and fail), computes
    /// in fp32, and gives bit for bit `reference`'s output.
    fn assert_fp16_storage_is_fp32_compute(
        stored: &UNet2DConditionModel,
        reference: &UNet2DConditionModel,
    ) {
        assert_eq!(
            (stored.weight_kind(), stored.kind()),
            (Kind::Half, Kind::Float)
        );
        let wide: Vec<&String> = stored
            .source()
            .base()
            .iter()
            .filter(|(_, t)| t.kind() != Kind::Half)
            .map(|(name, _)| name)
            .collect();
        assert!(wide.is_empty(), "UNet tensors not kept in fp16: {wide:?}");
        assert_eq!(reference.weight_kind(), Kind::Float);
        let (out, expected) = (unet_output(stored), unet_output(reference));
        assert_eq!(out.kind(), Kind::Float);
        assert!(
            out.equal(&expected),
            "max abs difference {}",
            weft_test_support::max_abs_diff(&out, &expected)
        );
    }

    fn fp16_storage(options: LoadOptions) -> LoadOptions {
        LoadOptions {
            unet_kind: Some(Kind::Half),
            ..options
        }
    }

    #[test]
    fn an_fp16_sd1_file_stored_in_fp16_computes_the_fp32_loads_values() {
        let file = fixtures("unet_vae").join("sd1.safetensors");
        let options = LoadOptions {
            unet_config: Some(UNetConfig::tiny_sd1()),
            vae_config: Some(VaeConfig::tiny()),
            ..LoadOptions::default()
        };
        let stored = load_single_file(&file, &fp16_storage(options.clone())).unwrap();
        let fp32 = load_single_file(&file, &options).unwrap();
        assert_fp16_storage_is_fp32_compute(&stored.unet, &fp32.unet);
    }

    #[test]
    fn a_reduced_width_fp16_sdxl_file_stored_in_fp16_computes_the_fp32_loads_values() {
        let dir = std::env::temp_dir().join(format!("weft-fp16-storage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (base, refiner) = weft_test_support::write_tiny_sdxl_checkpoints(&dir).unwrap();
        std::fs::remove_file(refiner).unwrap();
        let stored = load_single_file(&base, &fp16_storage(LoadOptions::default()));
        let fp32 = load_single_file(&base, &LoadOptions::default());
        std::fs::remove_dir_all(&dir).unwrap();
        let (stored, fp32) = (stored.unwrap(), fp32.unwrap());
        assert!(stored.unet.config().addition_embed.is_some());
        assert_fp16_storage_is_fp32_compute(&stored.unet, &fp32.unet);
    }

    /// LoadCheckpoint's `auto` on the CPU: an fp16 SDXL file's UNet stays fp16 and computes
    /// the fp32 load's values; an SD 1.x file's is loaded in fp32 as before.
    #[test]
    fn auto_on_the_cpu_keeps_an_fp16_sdxl_unet_as_stored_and_only_sdxl() {
        let as_stored = LoadOptions {
            sdxl_unet_as_stored: true,
            ..LoadOptions::default()
        };
        let dir = std::env::temp_dir().join(format!("weft-sdxl-as-stored-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (base, refiner) = weft_test_support::write_tiny_sdxl_checkpoints(&dir).unwrap();
        let stored = load_single_file(&base, &as_stored);
        let stored_refiner = load_single_file(&refiner, &as_stored);
        let fp32 = load_single_file(&base, &LoadOptions::default());
        std::fs::remove_dir_all(&dir).unwrap();
        let (stored, fp32) = (stored.unwrap(), fp32.unwrap());
        assert_fp16_storage_is_fp32_compute(&stored.unet, &fp32.unet);
        assert_eq!(stored_refiner.unwrap().unet.weight_kind(), Kind::Half);

        let sd1 = LoadOptions {
            unet_config: Some(UNetConfig::tiny_sd1()),
            vae_config: Some(VaeConfig::tiny()),
            ..as_stored
        };
        let sd1 = load_single_file(&fixtures("unet_vae").join("sd1.safetensors"), &sd1).unwrap();
        assert_eq!(
            (sd1.unet.weight_kind(), sd1.unet.kind()),
            (Kind::Float, Kind::Float)
        );
    }

    /// A diffusers folder of fp32 weights (fp16-exact values): fp16-storage narrows them on
    /// load and computes as an fp32 UNet built on the narrowed weights, which here is the fp32
    /// load itself. Control: computing in fp16 does change the output, so bit equality is a
    /// claim the comparison can refuse.
    #[test]
    fn an_fp32_unet_folder_stored_in_fp16_computes_as_fp32_on_the_narrowed_weights() {
        let unet_dir = fixtures("unet_vae").join("sd1").join("unet");
        let stored = load_unet_folder(&unet_dir, &fp16_storage(LoadOptions::default())).unwrap();
        let narrowed: HashMap<String, Tensor> = stored
            .source()
            .base()
            .iter()
            .map(|(name, t)| (name.clone(), t.to_kind(Kind::Float)))
            .collect();
        let reference = UNet2DConditionModel::new(
            &Weights::new("narrowed", narrowed),
            "",
            stored.config().clone(),
        )
        .unwrap();
        assert_fp16_storage_is_fp32_compute(&stored, &reference);
        let fp32 = load_unet_folder(&unet_dir, &LoadOptions::default()).unwrap();
        assert!(unet_output(&stored).equal(&unet_output(&fp32)));

        let half = LoadOptions {
            kind: Kind::Half,
            ..LoadOptions::default()
        };
        let mut fp16_compute = load_unet_folder(&unet_dir, &half).unwrap();
        assert_eq!(fp16_compute.kind(), Kind::Half);
        fp16_compute.set_compute_kind(Kind::Half);
        let out = unet_output(&fp16_compute).to_kind(Kind::Float);
        assert!(
            !out.equal(&unet_output(&stored)),
            "fp16 compute gave the fp32 values"
        );
    }

    #[test]
    fn an_sdxl_file_without_its_text_towers_names_the_family_and_the_part() {
        let mut shapes = BTreeMap::new();
        shapes.insert(format!("{UNET_PREFIX}input_blocks.0.0.weight"), vec![4, 4]);
        shapes.insert(
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight".into(),
            vec![4],
        );
        assert_eq!(detect_version(&shapes), Ok(ModelFamily::Sdxl));
        let e = CheckpointError::MissingComponent {
            family: ModelFamily::Sdxl.name(),
            what: "VAE (first_stage_model.*)",
        }
        .to_string();
        assert!(e.contains("SDXL") && e.contains("first_stage_model"), "{e}");
    }
}
