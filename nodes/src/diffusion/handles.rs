//! The model handles the diffusion nodes pass between them (the values of the "model",
//! "text_encoder" and "vae" sockets).

use std::cell::OnceCell;

use weft_engine::{NodeError, NodeResult};

use crate::models::autoencoder_kl::AutoencoderKL;
use crate::models::bert::MiniLm;
use crate::models::clip_text_model::ClipTextModel;
use crate::models::clip_tokenizer::ClipTokenizer;
use crate::models::prompt_weighting::SpecialTokens;
use crate::models::sdxl_text::{SdxlRefinerTextEncoder, SdxlTextEncoders};
use crate::models::unet_2d_condition::{UNet2DConditionModel, UNetConfig};
use crate::models::unet_cuda_graph::UNetGraphs;
use crate::weights::family::ModelFamily;
use crate::weights::lora::{SourceWeights, WeightPatch};
use crate::weights::{WeightedModel, Weights};

/// A loaded UNet (the "model" socket), with the CUDA graphs of its calls made so far.
///
/// A LoRA-patched model is built the first time something runs it ([`DiffusionModel::unet`]):
/// a chain of LoadLora nodes only records patches, so the links no sampler uses never hold
/// patched tensors, and the one that is used holds one copy of what the whole chain touches.
pub struct DiffusionModel {
    config: UNetConfig,
    /// The weights as loaded and the LoRA patches on them (shared storage).
    source: SourceWeights,
    /// What the weights are, for errors.
    label: String,
    unet: OnceCell<UNet2DConditionModel>,
    /// The kind the UNet computes in (a patched UNet is rebuilt to compute in it too).
    compute_kind: tch::Kind,
    pub graphs: UNetGraphs,
}

impl DiffusionModel {
    pub fn new(unet: UNet2DConditionModel) -> Self {
        Self {
            config: unet.config().clone(),
            source: unet.source().shallow_clone(),
            label: "UNet".to_string(),
            compute_kind: unet.kind(),
            unet: OnceCell::from(unet),
            graphs: UNetGraphs::default(),
        }
    }

    /// The model with `patch` on top of this one's patches, built when first run; `label`
    /// names it in errors (the LoRA file).
    pub fn with_patch(&self, patch: WeightPatch, label: String) -> Self {
        Self {
            config: self.config.clone(),
            source: self.source.with_patch_kept_in(patch, self.compute_kind),
            label,
            unet: OnceCell::new(),
            compute_kind: self.compute_kind,
            graphs: UNetGraphs::default(),
        }
    }

    /// The UNet, built from the patched weights on the first call.
    pub fn unet(&self) -> NodeResult<&UNet2DConditionModel> {
        if let Some(unet) = self.unet.get() {
            return Ok(unet);
        }
        let tensors = self.source.tensors().map_err(|(tensor, e)| {
            NodeError::msg(format!(
                "{}: patching UNet tensor {tensor}: {e}",
                self.label
            ))
        })?;
        let weights = Weights::new(self.label.clone(), tensors);
        let mut unet = UNet2DConditionModel::new(&weights, "", self.config.clone())?;
        unet.set_source(self.source.shallow_clone());
        unet.set_compute_kind(self.compute_kind);
        Ok(self.unet.get_or_init(|| unet))
    }

    /// The UNet's configuration (known without building it).
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The weights as loaded and the LoRA patches on them.
    pub fn source(&self) -> &SourceWeights {
        &self.source
    }

    /// The bytes of the tensors the LoRA patches make (held once the model is built).
    pub fn patched_bytes(&self) -> u64 {
        self.source.patched_bytes()
    }

    /// The family its UNet belongs to (the schedule and conditioning it takes).
    pub fn family(&self) -> ModelFamily {
        ModelFamily::of_unet_config(&self.config)
    }
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
    /// SDXL's CLIP-L + OpenCLIP-bigG towers (context and pooled text).
    Sdxl(Box<SdxlTextEncoders>),
    /// The SDXL refiner's OpenCLIP-bigG tower alone.
    SdxlRefiner(Box<SdxlRefinerTextEncoder>),
}

/// A loaded VAE (the "vae" socket).
pub struct Vae {
    pub vae: AutoencoderKL,
}
