//! One descriptor per Stable Diffusion model family (SD 1.x, SD 2.x, SDXL base and refiner), after ComfyUI's
//! `supported_models.py` classes and candle's `StableDiffusionConfig::{v1_5, v2_1, sdxl}`: how
//! a checkpoint of the family is recognised (single-file tensor names and shapes, or a diffusers
//! UNet config), its UNet and VAE presets, its text-encoder stack, its latent format, its
//! prediction type and noise schedule, the LDM key-map layout its single files use, and its
//! LoRA key table. A new
//! family is a new variant here plus its modules, not edits across the loaders and nodes.
//! Files of families weft does not run (SD3, Flux, Stable Cascade, ...) are named as such.
use std::collections::BTreeMap;

use crate::error::CheckpointError;
use crate::models::autoencoder_kl::VaeConfig;
use crate::models::prompt_weighting::SpecialTokens;
use crate::models::unet_2d_condition::{PredictionType, UNetConfig};
use crate::samplers::DiscreteSchedule;
use crate::weights::ldm_keymap::{OPEN_CLIP_PREFIX, UNET_PREFIX};
use crate::weights::lora::{
    FamilyLoraKeys, SD1_LORA_KEYS, SD2_LORA_KEYS, SDXL_LORA_KEYS, SDXL_REFINER_LORA_KEYS,
};

/// A model family weft runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelFamily {
    /// SD 1.x: CLIP ViT-L/14 text encoder (768-wide context), conv transformer projections.
    Sd1,
    /// SD 2.x: OpenCLIP ViT-H/14 text encoder (1024-wide context), linear projections.
    Sd2,
    /// SDXL base: CLIP ViT-L/14 + OpenCLIP ViT-bigG/14 (2048-wide context, 1280 pooled),
    /// size/crop conditioning through `add_embedding`, 3 levels with [0, 2, 10] transformers.
    Sdxl,
    /// SDXL refiner: OpenCLIP ViT-bigG/14 alone (1280-wide context and pooled), size/crop and
    /// aesthetic-score conditioning, 4 levels with [0, 4, 4, 0] transformers of 384 x [1, 2, 4, 4]
    /// channels (ComfyUI's `SDXLRefiner`).
    SdxlRefiner,
}

/// The names the SD 1.x / 2.x loader used for the first two families.
pub type SdVersion = ModelFamily;

/// Which text towers a family conditions on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoderStack {
    /// One CLIP-architecture tower, its last (1.x) or penultimate (2.x, in the weights kept)
    /// hidden states as the context.
    Single { special: SpecialTokens },
    /// SDXL: CLIP-L and OpenCLIP-bigG penultimate states concatenated, bigG's pooled output.
    ClipLAndBigG,
    /// The SDXL refiner: OpenCLIP-bigG's penultimate states and its pooled output.
    BigG,
}

/// The ids SDXL's `add_embedding` takes after the pooled text, each as 256 sinusoids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeIds {
    /// SDXL base: height, width, crop top, crop left, target height, target width.
    SizeCropTarget,
    /// The refiner: height, width, crop top, crop left, aesthetic score.
    SizeCropAesthetic,
}

impl SizeIds {
    /// How many ids.
    pub fn count(self) -> i64 {
        match self {
            Self::SizeCropTarget => 6,
            Self::SizeCropAesthetic => 5,
        }
    }
}

/// How a latent is stored: the VAE's latents times `scale`, plus `shift` (SD3/Flux shift;
/// zero for every family here), is what the UNet works on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatentFormat {
    pub channels: i64,
    pub scale: f64,
    pub shift: f64,
}

impl ModelFamily {
    /// The 1.x / 2.x loader's names.
    pub const V1: Self = Self::Sd1;
    pub const V2: Self = Self::Sd2;

    pub const ALL: [ModelFamily; 4] = [Self::Sd1, Self::Sd2, Self::Sdxl, Self::SdxlRefiner];

    /// How people call it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sd1 => "SD 1.x",
            Self::Sd2 => "SD 2.x",
            Self::Sdxl => "SDXL",
            Self::SdxlRefiner => "SDXL refiner",
        }
    }

    /// The full-size UNet config of a single file of this family (diffusers folders carry
    /// their own `config.json`).
    pub fn unet_preset(self) -> UNetConfig {
        match self {
            Self::Sd1 => UNetConfig::sd15(),
            Self::Sd2 => UNetConfig::sd21(),
            Self::Sdxl => UNetConfig::sdxl_base(),
            Self::SdxlRefiner => UNetConfig::sdxl_refiner(),
        }
    }

    /// The VAE config of a single file of this family.
    pub fn vae_preset(self) -> VaeConfig {
        match self {
            Self::Sd1 | Self::Sd2 => VaeConfig::sd(),
            Self::Sdxl | Self::SdxlRefiner => VaeConfig::sdxl(),
        }
    }

    /// The latent format (ComfyUI's `latent_formats.SD15` / `SDXL`).
    pub fn latent_format(self) -> LatentFormat {
        let scale = self.vae_preset().scaling_factor;
        LatentFormat {
            channels: 4,
            scale,
            shift: 0.0,
        }
    }

    /// The text towers and how they tokenize.
    pub fn text_encoders(self) -> TextEncoderStack {
        match self {
            Self::Sd1 => TextEncoderStack::Single {
                special: SpecialTokens::SD1,
            },
            Self::Sd2 => TextEncoderStack::Single {
                special: SpecialTokens::SD2,
            },
            Self::Sdxl => TextEncoderStack::ClipLAndBigG,
            Self::SdxlRefiner => TextEncoderStack::BigG,
        }
    }

    /// The LoRA key table of the family: how LoRA files name its UNet's and text encoders'
    /// layers, and which names mark a file as another family's.
    pub fn lora_keys(self) -> &'static FamilyLoraKeys {
        match self {
            Self::Sd1 => &SD1_LORA_KEYS,
            Self::Sd2 => &SD2_LORA_KEYS,
            Self::Sdxl => &SDXL_LORA_KEYS,
            Self::SdxlRefiner => &SDXL_REFINER_LORA_KEYS,
        }
    }

    /// The ids after the pooled text in the added conditioning; `None`: the family has none.
    pub fn size_ids(self) -> Option<SizeIds> {
        match self {
            Self::Sd1 | Self::Sd2 => None,
            Self::Sdxl => Some(SizeIds::SizeCropTarget),
            Self::SdxlRefiner => Some(SizeIds::SizeCropAesthetic),
        }
    }

    /// The precision the VAE is loaded in when the model is loaded in `kind`: SDXL's VAE
    /// overflows in fp16 (inf/NaN in the decoder, as ComfyUI and diffusers' `force_upcast`
    /// know), so an fp16 SDXL load keeps its VAE in fp32; bf16 has the range and stays.
    pub fn vae_kind(self, kind: tch::Kind) -> tch::Kind {
        match (self, kind) {
            (Self::Sdxl | Self::SdxlRefiner, tch::Kind::Half) => tch::Kind::Float,
            _ => kind,
        }
    }

    /// The prediction type of a single file of this family (a single SD 2.x file is taken as
    /// the 768-v model; `LoadOptions::prediction_type` overrides it).
    pub fn default_prediction(self) -> PredictionType {
        self.unet_preset().prediction_type
    }

    /// The training noise schedule: all three use SD's scaled-linear betas 0.00085..0.012
    /// over 1000 steps (SDXL's `scheduler_config.json` and ComfyUI's `model_sampling`).
    pub fn noise_schedule(self) -> DiscreteSchedule {
        DiscreteSchedule::stable_diffusion()
    }

    /// The activation of a single file's (first) CLIP tower: OpenAI CLIP's quick-GELU, or
    /// exact GELU for OpenCLIP.
    pub fn clip_activation(self) -> &'static str {
        match self {
            Self::Sd1 | Self::Sdxl => "quick_gelu",
            Self::Sd2 | Self::SdxlRefiner => "gelu",
        }
    }

    /// The family of a diffusers folder, from its UNet config. The refiner's pooled text is as
    /// wide as its context (bigG alone), so its added input is the context width plus 5 ids;
    /// the base's pooled bigG is narrower than its CLIP-L ++ bigG context.
    pub fn of_unet_config(config: &UNetConfig) -> Self {
        if let Some(add) = config.addition_embed {
            let refiner_width =
                config.cross_attention_dim + SizeIds::SizeCropAesthetic.count() * add.time_ids_dim;
            if add.input_dim == refiner_width {
                Self::SdxlRefiner
            } else {
                Self::Sdxl
            }
        } else if config.use_linear_projection || config.cross_attention_dim == 1024 {
            Self::Sd2
        } else {
            Self::Sd1
        }
    }

    /// The family of a single `.safetensors` file, from its tensor names and shapes; files
    /// of a family weft does not run get an error naming that family.
    pub fn detect(shapes: &BTreeMap<String, Vec<usize>>) -> Result<Self, CheckpointError> {
        if let Some(family) = unsupported_family(shapes) {
            return Err(CheckpointError::UnsupportedFamily { family });
        }
        let sdxl_text = shapes
            .keys()
            .any(|k| k.starts_with("conditioner.embedders."));
        // The base holds CLIP-L (`transformer.`) beside bigG (`model.`); the refiner bigG alone.
        let sdxl_clip_l = shapes.keys().any(|k| {
            k.strip_prefix("conditioner.embedders.")
                .and_then(|rest| rest.split_once('.'))
                .is_some_and(|(_, rest)| rest.starts_with("transformer."))
        });
        let label_emb = shapes.get(&format!("{UNET_PREFIX}label_emb.0.0.weight"));
        if sdxl_text || label_emb.is_some() {
            return match label_emb.and_then(|s| s.get(1)) {
                // The refiner: 5 size/score ids (5 x 256) + bigG's 1280 pooled.
                Some(2560) => Ok(Self::SdxlRefiner),
                _ if sdxl_text && !sdxl_clip_l => Ok(Self::SdxlRefiner),
                Some(_) | None if sdxl_text => Ok(Self::Sdxl),
                _ => Err(CheckpointError::ClassConditioned),
            };
        }
        if !shapes.keys().any(|k| k.starts_with(UNET_PREFIX)) {
            return Err(CheckpointError::NoUnet {
                count: shapes.len(),
                examples: shapes.keys().take(3).cloned().collect(),
            });
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
            (Some(768), false) => Self::Sd1,
            (Some(1024), true) => Self::Sd2,
            // Small custom configs: the projection and text-encoder layout still tell.
            _ if linear || open_clip => Self::Sd2,
            _ => Self::Sd1,
        })
    }
}

/// The family of a file weft does not run, told by names only that family uses (as ComfyUI's
/// `model_detection.py` tells them), whether or not under `model.diffusion_model.`.
fn unsupported_family(shapes: &BTreeMap<String, Vec<usize>>) -> Option<&'static str> {
    const MARKERS: [(&str, &str); 9] = [
        ("joint_blocks.", "Stable Diffusion 3 (MMDiT)"),
        ("double_blocks.", "Flux"),
        ("single_transformer_blocks.", "Flux (diffusers layout)"),
        (
            "transformer_blocks.0.ff_context.",
            "Stable Diffusion 3 (diffusers layout)",
        ),
        ("clip_txt_mapper.", "Stable Cascade (stage C)"),
        ("effnet_mapper.", "Stable Cascade (stage B)"),
        ("cond_seq_linear.", "AuraFlow"),
        ("t_block.", "PixArt"),
        ("extra_embedder.", "Hunyuan-DiT"),
    ];
    let bare = |k: &str| k.strip_prefix(UNET_PREFIX).unwrap_or(k).to_string();
    for key in shapes.keys().map(|k| bare(k)) {
        if let Some((_, family)) = MARKERS.iter().find(|(m, _)| key.starts_with(m)) {
            return Some(family);
        }
        if key.contains(".time_stack.") {
            return Some("Stable Video Diffusion");
        }
    }
    None
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
        let detect = ModelFamily::detect;
        assert_eq!(detect(&sd_shapes(768, false)), Ok(ModelFamily::Sd1));
        assert_eq!(detect(&sd_shapes(1024, true)), Ok(ModelFamily::Sd2));
        assert_eq!(detect(&sd_shapes(16, false)), Ok(ModelFamily::Sd1));
        assert_eq!(detect(&sd_shapes(12, true)), Ok(ModelFamily::Sd2));
    }

    #[test]
    fn sdxl_base_and_refiner_are_told_by_their_text_towers_and_added_width() {
        let mut base = BTreeMap::new();
        base.insert(
            format!("{UNET_PREFIX}label_emb.0.0.weight"),
            vec![1280, 2816],
        );
        base.insert(
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight".into(),
            vec![768],
        );
        base.insert(
            "conditioner.embedders.1.model.ln_final.weight".into(),
            vec![1280],
        );
        assert_eq!(ModelFamily::detect(&base), Ok(ModelFamily::Sdxl));
        let mut refiner = base.clone();
        refiner.insert(
            format!("{UNET_PREFIX}label_emb.0.0.weight"),
            vec![1536, 2560],
        );
        assert_eq!(ModelFamily::detect(&refiner), Ok(ModelFamily::SdxlRefiner));
        // A small refiner-shaped file: bigG alone at embedder 0, any added width.
        let mut small_refiner = BTreeMap::new();
        small_refiner.insert(format!("{UNET_PREFIX}label_emb.0.0.weight"), vec![32, 64]);
        small_refiner.insert(
            "conditioner.embedders.0.model.ln_final.weight".into(),
            vec![24],
        );
        assert_eq!(
            ModelFamily::detect(&small_refiner),
            Ok(ModelFamily::SdxlRefiner)
        );
        // A label embedding without SDXL's text towers: an upscaler or the like.
        let mut upscaler = sd_shapes(1024, true);
        upscaler.insert(format!("{UNET_PREFIX}label_emb.0.0.weight"), vec![4, 4]);
        assert_eq!(
            ModelFamily::detect(&upscaler),
            Err(CheckpointError::ClassConditioned)
        );
    }

    #[test]
    fn files_of_other_families_are_named() {
        for (key, family) in [
            (
                "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight",
                "Stable Diffusion 3",
            ),
            ("double_blocks.0.img_attn.qkv.weight", "Flux"),
            (
                "model.diffusion_model.double_blocks.0.img_mod.lin.weight",
                "Flux",
            ),
            ("clip_txt_mapper.weight", "Stable Cascade"),
            (
                "model.diffusion_model.input_blocks.1.0.time_stack.in_layers.0.weight",
                "Stable Video Diffusion",
            ),
        ] {
            let mut shapes = sd_shapes(768, false);
            shapes.insert(key.to_string(), vec![1]);
            let e = ModelFamily::detect(&shapes).unwrap_err().to_string();
            assert!(e.contains(family), "{key}: {e}");
        }
        let mut other = BTreeMap::new();
        other.insert(
            "vision_model.embeddings.patch_embedding.weight".to_string(),
            vec![1],
        );
        assert!(matches!(
            ModelFamily::detect(&other),
            Err(CheckpointError::NoUnet { count: 1, .. })
        ));
    }

    #[test]
    fn each_family_has_its_latent_scale_and_text_stack() {
        assert_eq!(ModelFamily::Sd1.latent_format().scale, 0.18215);
        assert_eq!(ModelFamily::Sd2.latent_format().scale, 0.18215);
        assert_eq!(ModelFamily::Sdxl.latent_format().scale, 0.13025);
        assert_eq!(
            ModelFamily::Sdxl.text_encoders(),
            TextEncoderStack::ClipLAndBigG
        );
        assert_eq!(ModelFamily::SdxlRefiner.latent_format().scale, 0.13025);
        assert_eq!(
            ModelFamily::SdxlRefiner.text_encoders(),
            TextEncoderStack::BigG
        );
        assert_eq!(
            ModelFamily::SdxlRefiner.size_ids().map(SizeIds::count),
            Some(5)
        );
        assert_eq!(ModelFamily::Sdxl.size_ids().map(SizeIds::count), Some(6));
        for family in ModelFamily::ALL {
            assert_eq!(
                ModelFamily::of_unet_config(&family.unet_preset()),
                family,
                "{}",
                family.name()
            );
        }
    }
}
