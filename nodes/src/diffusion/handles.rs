//! The model handles the diffusion nodes pass between them (the values of the "model",
//! "text_encoder" and "vae" sockets).

use crate::models::autoencoder_kl::AutoencoderKL;
use crate::models::bert::MiniLm;
use crate::models::clip_text_model::ClipTextModel;
use crate::models::clip_tokenizer::ClipTokenizer;
use crate::models::prompt_weighting::SpecialTokens;
use crate::models::sdxl_text::{SdxlRefinerTextEncoder, SdxlTextEncoders};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::models::unet_cuda_graph::UNetGraphs;
use crate::weights::family::ModelFamily;

/// A loaded UNet (the "model" socket), with the CUDA graphs of its calls made so far.
pub struct DiffusionModel {
    pub unet: UNet2DConditionModel,
    pub graphs: UNetGraphs,
}

impl DiffusionModel {
    pub fn new(unet: UNet2DConditionModel) -> Self {
        Self {
            unet,
            graphs: UNetGraphs::default(),
        }
    }

    /// The family its UNet belongs to (the schedule and conditioning it takes).
    pub fn family(&self) -> ModelFamily {
        ModelFamily::of_unet_config(self.unet.config())
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
