//! weft-nodes: every concrete node type and the models behind them.

pub mod diffusion;
pub mod error;
pub mod image;
pub mod inpaint;
pub mod latent;
pub mod mask;
pub mod model_files;
pub mod models;
pub mod noise;
pub mod primitives;
pub mod prompt_filter;
pub mod safety;
pub mod samplers;
pub mod upscale;
pub mod weights;

pub use error::{ModelError, Result};

use weft_engine::Registry;

/// A registry with every node type weft ships.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(primitives::IntConstant)
        .register(primitives::AddInt)
        .register(primitives::MathFloat)
        .register(primitives::ConcatText)
        .register(primitives::ShowInt)
        .register(primitives::ShowText)
        .register(latent::EmptyLatent)
        .register(latent::RandomNoise)
        .register(latent::LatentUpscale)
        .register(latent::LatentPreview)
        .register(image::LoadImage)
        .register(image::ImageScale)
        .register(image::ImageBatch)
        .register(image::SaveImage)
        .register(mask::LoadImageMask)
        .register(mask::SolidMask)
        .register(mask::InvertMask)
        .register(mask::GrowMask)
        .register(mask::FeatherMask)
        .register(mask::ThresholdMask)
        .register(mask::ImageToMask)
        .register(mask::ImageColorToMask)
        .register(mask::MaskToImage)
        .register(inpaint::SetLatentNoiseMask)
        .register(inpaint::VaeEncodeForInpaint)
        .register(inpaint::InpaintModelConditioning)
        .register(inpaint::ImagePadForOutpaint)
        .register(inpaint::ImageCompositeMasked)
        .register(diffusion::LoadCheckpoint)
        .register(diffusion::LoadLora)
        .register(diffusion::LoadLoraModelOnly)
        .register(diffusion::PromptEncode)
        .register(diffusion::PromptEncodeSdxl)
        .register(diffusion::PromptEncodeSdxlRefiner)
        .register(diffusion::Sampler)
        .register(diffusion::SamplerAdvanced)
        .register(diffusion::VaeDecode)
        .register(diffusion::VaeEncode)
        .register(upscale::LoadUpscaleModel)
        .register(upscale::UpscaleImage)
        .register(safety::LoadSafetyModel)
        .register(safety::SafetyFilter)
        .register(prompt_filter::PromptFilter);
    r.set_choice_lister(|source, models| match source {
        model_files::CHECKPOINTS => model_files::find_checkpoints(models),
        diffusion::LORAS => diffusion::find_loras(models),
        _ => Vec::new(),
    });
    r
}
