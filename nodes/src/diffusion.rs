//! Stable Diffusion nodes: load a checkpoint, encode a prompt, sample, VAE decode/encode.
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use weft_engine::{
    ConstantInputs, InputSpec as In, Inputs, Node, NodeContext, NodeError, NodeResult, NodeSpec,
    OutputSpec as Out, Value, ValueType as T,
};

use crate::model_files::{file_bytes, model_files, resolve_model, CHECKPOINTS};
use crate::models::autoencoder_kl::{AutoencoderKL, TileOptions};
use crate::models::bert::MiniLm;
use crate::models::clip_text_model::{Activation, ClipLayer, ClipTextConfig, ClipTextModel};
use crate::models::clip_tokenizer::ClipTokenizer;
use crate::models::prompt_weighting::{encode_prompt, SpecialTokens};
use crate::models::unet_2d_condition::{PredictionType, UNet2DConditionModel};
use crate::samplers::{
    self, DiscreteSchedule, GuidedDenoiser, Hooks, Prediction, SampleSettings, SamplerKind,
    ScheduleKind,
};
use crate::weights::checkpoint::{
    load_checkpoint, load_unet_folder, load_vae_folder, LoadOptions, SdVersion,
};
use crate::weights::Weights;

/// Where set-up puts converted text-encoder assets, relative to the models folder.
pub const MINILM_DIR: &str = "converted/minilm";
pub const CLIP_VOCAB: &str = "converted/clip/bpe_simple_vocab_16e6.txt.gz";

/// A loaded UNet (the "model" socket).
pub struct DiffusionModel {
    pub unet: UNet2DConditionModel,
}

/// A loaded text encoder with its tokenizer (the "text_encoder" socket).
pub enum TextEncoder {
    Clip {
        model: Box<ClipTextModel>,
        tokenizer: Box<ClipTokenizer>,
        special: SpecialTokens,
    },
    /// all-MiniLM-L6-v2 token embeddings: the conditioning of the embedded tiny-shapes model.
    MiniLm(Box<MiniLm>),
}

/// A loaded VAE (the "vae" socket).
pub struct Vae {
    pub vae: AutoencoderKL,
}

fn precision(name: &str, device: Device) -> NodeResult<Kind> {
    Ok(match name {
        "auto" if device.is_cuda() => Kind::Half,
        "auto" | "fp32" => Kind::Float,
        "fp16" => Kind::Half,
        "bf16" => Kind::BFloat16,
        other => return Err(NodeError::msg(format!("unknown precision '{other}'"))),
    })
}

/// Weight and config files under a diffusers folder, or the single file itself.
fn clip_config_from_json(json: &serde_json::Value) -> NodeResult<ClipTextConfig> {
    let base = ClipTextConfig::clip_vit_l14();
    let int = |k: &str, d: i64| json.get(k).and_then(serde_json::Value::as_i64).unwrap_or(d);
    let hidden_act = match json
        .get("hidden_act")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("quick_gelu")
    {
        "quick_gelu" => Activation::QuickGelu,
        "gelu" => Activation::Gelu,
        other => {
            return Err(NodeError::msg(format!(
                "text encoder: unsupported activation '{other}'"
            )))
        }
    };
    Ok(ClipTextConfig {
        vocab_size: int("vocab_size", base.vocab_size),
        hidden_size: int("hidden_size", base.hidden_size),
        intermediate_size: int("intermediate_size", base.intermediate_size),
        num_hidden_layers: int("num_hidden_layers", base.num_hidden_layers as i64) as usize,
        num_attention_heads: int("num_attention_heads", base.num_attention_heads),
        max_position_embeddings: int("max_position_embeddings", base.max_position_embeddings),
        hidden_act,
        layer_norm_eps: json
            .get("layer_norm_eps")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(base.layer_norm_eps),
        eos_token_id: int("eos_token_id", base.eos_token_id),
    })
}

/// Loads a Stable Diffusion checkpoint (single .safetensors file or diffusers folder), or the
/// embedded tiny-shapes model (a diffusers folder whose text encoder is MiniLM).
pub struct LoadCheckpoint;
impl Node for LoadCheckpoint {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "LoadCheckpoint",
            category: "loaders",
            doc: "loads a Stable Diffusion checkpoint (.safetensors or diffusers folder) from the models folder",
            version: 1,
            inputs: vec![
                In::new("name", T::String, "file or folder under models/ (or a path)").default("tiny-shapes").listed_from(CHECKPOINTS),
                In::new("precision", T::Enum, "weight precision; auto is fp16 on GPU, fp32 on CPU")
                    .choices(&["auto", "fp32", "fp16", "bf16"])
                    .default("auto"),
            ],
            outputs: vec![
                Out::new("unet", T::Model, "the denoising UNet"),
                Out::new("vae", T::Vae, "the image autoencoder"),
                Out::new("text_encoder", T::TextEncoder, "the prompt encoder"),
            ],
            output_node: false,
        }
    }

    fn input_files(
        &self,
        constants: &ConstantInputs,
        models_dir: &Path,
    ) -> NodeResult<Vec<PathBuf>> {
        let name = constants.string("name").unwrap_or_default();
        Ok(model_files(&resolve_model(name, models_dir)?))
    }

    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let path = resolve_model(inputs.string("name")?, ctx.models_dir)?;
        let kind = precision(inputs.string("precision")?, ctx.device)?;
        let options = LoadOptions {
            device: ctx.device,
            kind,
            ..LoadOptions::default()
        };
        let files = model_files(&path);
        let bytes = file_bytes(&files);
        let (unet, vae, encoder) = if path.is_dir() && !path.join("text_encoder").exists() {
            // The embedded model: UNet and VAE in diffusers layout, MiniLM from set-up.
            let unet = load_unet_folder(&path.join("unet"), &options)?;
            let vae = load_vae_folder(&path.join("vae"), &options)?;
            let minilm_dir = ctx.models_dir.join(MINILM_DIR);
            if !minilm_dir.join("model.safetensors").exists() {
                return Err(NodeError::msg(format!(
                    "{} needs the MiniLM text encoder at {}; run the set-up (make setup) to convert it",
                    path.display(),
                    minilm_dir.display()
                )));
            }
            (
                unet,
                vae,
                TextEncoder::MiniLm(Box::new(MiniLm::load(&minilm_dir, ctx.device)?)),
            )
        } else {
            let checkpoint = load_checkpoint(&path, &options)?;
            let config = clip_config_from_json(&checkpoint.text_encoder_config)?;
            let weights = Weights::new(
                format!("{} (text encoder)", path.display()),
                checkpoint.text_encoder_weights,
            );
            let model = ClipTextModel::new(&weights, "text_model", config)?;
            let vocab = ctx.models_dir.join(CLIP_VOCAB);
            let tokenizer = ClipTokenizer::from_file(&vocab).map_err(|e| {
                NodeError::msg(format!(
                    "CLIP vocabulary: {e}; run the set-up (make setup) to fetch it"
                ))
            })?;
            let special = match checkpoint.version {
                SdVersion::V1 => SpecialTokens::SD1,
                SdVersion::V2 => SpecialTokens::SD2,
            };
            (
                checkpoint.unet,
                checkpoint.vae,
                TextEncoder::Clip {
                    model: Box::new(model),
                    tokenizer: Box::new(tokenizer),
                    special,
                },
            )
        };
        // The cache counts a node's outputs together, so the whole checkpoint's size is carried
        // by the first output and the others count zero.
        Ok(vec![
            Value::object(T::Model, DiffusionModel { unet }, bytes),
            Value::object(T::Vae, Vae { vae }, 0),
            Value::object(T::TextEncoder, encoder, 0),
        ])
    }
}

/// Prompt text to conditioning. CLIP prompts take ComfyUI's weighting syntax: (word:1.2).
pub struct PromptEncode;
impl Node for PromptEncode {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "PromptEncode",
            category: "conditioning",
            doc: "encodes a prompt for the sampler; CLIP encoders accept (word:1.2) weights",
            version: 1,
            inputs: vec![
                In::new(
                    "encoder",
                    T::TextEncoder,
                    "the text encoder of the checkpoint",
                ),
                In::new("text", T::String, "the prompt").default(""),
            ],
            outputs: vec![Out::new(
                "conditioning",
                T::Conditioning,
                "token embeddings [1, tokens, dim]",
            )],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let encoder = inputs.object::<TextEncoder>("encoder")?;
        let text = inputs.string("text")?;
        let conditioning = match &*encoder {
            TextEncoder::Clip {
                model,
                tokenizer,
                special,
            } => encode_prompt(model, tokenizer, text, special, ClipLayer::Last, true)?.0,
            TextEncoder::MiniLm(minilm) => minilm.embed_tokens(text)?,
        };
        Ok(vec![Value::Tensor(
            T::Conditioning,
            conditioning.f_to_kind(Kind::Float)?,
        )])
    }
}

/// The sampler: txt2img from an empty latent, img2img from an encoded image with denoise < 1.
pub struct Sampler;
impl Node for Sampler {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "Sampler",
            category: "sampling",
            doc:
                "denoises a latent with the UNet, guided by the prompts (classifier-free guidance)",
            version: 1,
            inputs: vec![
                In::new("model", T::Model, "the UNet"),
                In::new("positive", T::Conditioning, "what the image should show"),
                In::new("negative", T::Conditioning, "what it should not show").optional(),
                In::new(
                    "latent",
                    T::Latent,
                    "the start: an empty latent (txt2img) or an encoded image (img2img)",
                ),
                In::new("seed", T::Seed, "noise seed (same meaning as ComfyUI's); with a noise input, it seeds only the step noise of ancestral and SDE samplers").default(0),
                In::new(
                    "noise",
                    T::Latent,
                    "initial noise from a RandomNoise node (its seed gives the same noise as this node's seed would); shared noise makes samplers comparable",
                )
                .optional(),
                In::new("steps", T::Int, "sampling steps")
                    .default(20)
                    .range(1.0, 10000.0),
                In::new("cfg", T::Float, "guidance scale")
                    .default(7.0)
                    .range(0.0, 100.0),
                In::new("sampler", T::Enum, "sampling method")
                    .choices(&SamplerKind::NAMES)
                    .default("euler"),
                In::new("schedule", T::Enum, "sigma schedule")
                    .choices(&ScheduleKind::NAMES)
                    .default("normal"),
                In::new(
                    "denoise",
                    T::Float,
                    "how much to change the latent (1 = from pure noise)",
                )
                .default(1.0)
                .range(0.0, 1.0),
            ],
            outputs: vec![Out::new("latent", T::Latent, "the denoised latent")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let model = inputs.object::<DiffusionModel>("model")?;
        let unet = &model.unet;
        let latent = inputs
            .tensor("latent")?
            .f_to_device(ctx.device)?
            .f_to_kind(Kind::Float)?;
        let expected_channels = unet.config().in_channels;
        if latent.dim() != 4 || latent.size()[1] != expected_channels {
            return Err(NodeError::msg(format!(
                "input 'latent': the model takes [batch, {expected_channels}, h, w], got {:?}",
                latent.size()
            )));
        }
        let positive = inputs.tensor("positive")?.f_to_device(ctx.device)?;
        let negative = inputs
            .optional_tensor("negative")?
            .map(|t| t.to_device(ctx.device));
        let prediction = match unet.config().prediction_type {
            PredictionType::Epsilon => Prediction::Epsilon,
            PredictionType::VPrediction => Prediction::V,
        };
        let schedule = DiscreteSchedule::stable_diffusion();
        let predictor = |sample: &Tensor, timesteps: &Tensor, context: &Tensor| {
            unet.forward(sample, timesteps, context)
        };
        let denoiser = GuidedDenoiser::new(
            &predictor,
            &schedule,
            prediction,
            positive,
            negative,
            inputs.float("cfg")?,
        )?;
        let settings = SampleSettings {
            seed: inputs.int("seed")? as u64,
            steps: inputs.int("steps")? as usize,
            sampler: SamplerKind::from_name(inputs.string("sampler")?)?,
            schedule: ScheduleKind::from_name(inputs.string("schedule")?)?,
            denoise: inputs.float("denoise")?,
        };
        let cancel = ctx.cancel_token().clone();
        let cancelled = move || cancel.is_cancelled();
        // Progress goes out as each step ends, so a UI can show it live.
        // Every few steps (when asked) a preview of the denoised prediction rides along.
        let mut on_step = |e: &samplers::StepEvent<'_>| {
            let step = e.step as u32;
            let preview = ctx
                .wants_preview(step)
                .then(|| crate::image::latent_preview_png(e.denoised).ok())
                .flatten();
            ctx.progress_with_preview(step, e.total as u32, preview)
        };
        let mut hooks = Hooks {
            on_step: Some(&mut on_step),
            cancelled: Some(&cancelled),
        };
        // A cancelled run comes back as ModelError::Cancelled, which `?` turns into
        // NodeError::Cancelled (found in the error's chain), not a failure.
        let latent = match inputs.optional_tensor("noise")? {
            Some(noise) => samplers::sample_from_noise(
                &denoiser, &schedule, &latent, noise, &settings, &mut hooks,
            )?,
            None => samplers::sample(&denoiser, &schedule, &latent, &settings, &mut hooks)?,
        };
        Ok(vec![Value::Tensor(T::Latent, latent)])
    }
}

fn tile_options(tile: i64) -> TileOptions {
    TileOptions {
        tile_size: tile,
        overlap: (tile / 8).max(8) / 8 * 8,
    }
}

/// Latent to image through the VAE; large images decode in tiles.
pub struct VaeDecode;
impl Node for VaeDecode {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "VaeDecode",
            category: "latent",
            doc: "decodes a latent into an image with the VAE",
            version: 1,
            inputs: vec![
                In::new("vae", T::Vae, "the VAE"),
                In::new("latent", T::Latent, "the latent to decode"),
                In::new("tile", T::Int, "tile side in pixels for large images; 0 decodes whole images up to 1024 px, tiled above").default(0).range(0.0, 4096.0).multiple_of(8),
            ],
            outputs: vec![Out::new("image", T::Image, "RGB in [0, 1]")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let vae = &inputs.object::<Vae>("vae")?.vae;
        let latent = inputs.tensor("latent")?.f_to_device(ctx.device)?;
        let scaled = latent.f_div_scalar(vae.config().scaling_factor)?;
        let factor = vae.config().downscale_factor();
        let side = latent.size().iter().skip(2).copied().max().unwrap_or(0) * factor;
        let tile = inputs.int("tile")?;
        let decoded = if tile > 0 {
            vae.decode_tiled(&scaled, tile_options(tile))?
        } else if side > 1024 {
            vae.decode_tiled(&scaled, tile_options(512))?
        } else {
            vae.decode(&scaled)?
        };
        let image = decoded
            .f_to_kind(Kind::Float)?
            .f_add_scalar(1.0)?
            .f_div_scalar(2.0)?
            .f_clamp(0.0, 1.0)?;
        Ok(vec![Value::Tensor(T::Image, image)])
    }
}

/// Image to latent through the VAE (the start of img2img).
pub struct VaeEncode;
impl Node for VaeEncode {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "VaeEncode",
            category: "latent",
            doc: "encodes an image into a latent with the VAE (for img2img)",
            version: 1,
            inputs: vec![
                In::new("vae", T::Vae, "the VAE"),
                In::new("image", T::Image, "RGB in [0, 1]; sides a multiple of 8"),
            ],
            outputs: vec![Out::new(
                "latent",
                T::Latent,
                "the latent (mean of the posterior, scaled)",
            )],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let vae = &inputs.object::<Vae>("vae")?.vae;
        let image = inputs.tensor("image")?.f_to_device(ctx.device)?;
        crate::image::check_image(&image, "input 'image'")?;
        let factor = vae.config().downscale_factor();
        let size = image.size();
        if size[2] % factor != 0 || size[3] % factor != 0 {
            return Err(NodeError::msg(format!(
                "input 'image': sides must be multiples of {factor}, got {}x{}; resize it first (ImageScale)",
                size[3], size[2]
            )));
        }
        let latent = vae
            .encode(&image.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?)?
            .mode();
        Ok(vec![Value::Tensor(
            T::Latent,
            latent
                .f_mul_scalar(vae.config().scaling_factor)?
                .f_to_kind(Kind::Float)?,
        )])
    }
}
