//! The `LoadCheckpoint` node: a Stable Diffusion checkpoint, or the embedded tiny-shapes
//! model, as UNet, VAE and text encoder.
use std::path::{Path, PathBuf};

use weft_engine::{
    ConstantInputs, InputSpec as In, Inputs, ModelFolders, Node, NodeContext, NodeError,
    NodeResult, NodeSpec, OutputSpec as Out, Value, ValueType as T,
};

use crate::model_files::{model_files, resolve_model, CHECKPOINTS};
use crate::models::autoencoder_kl::AutoencoderKL;
use crate::models::bert::MiniLm;
use crate::models::clip_text_model::ClipTextModel;
use crate::models::clip_tokenizer::ClipTokenizer;
use crate::models::sdxl_text::{SdxlRefinerTextEncoder, SdxlTextEncoders};
use crate::models::unet_2d_condition::UNet2DConditionModel;
use crate::weights::checkpoint::{load_checkpoint, load_unet_folder, load_vae_folder, LoadOptions};
use crate::weights::family::{ModelFamily, TextEncoderStack};
use crate::weights::{parameter_bytes, WeightedModel, Weights};

use super::configs::{clip_config_from_json, precision};
use super::handles::{DiffusionModel, TextEncoder, Vae};

/// Where set-up puts converted text-encoder assets, relative to the models folder.
pub const MINILM_DIR: &str = "converted/minilm";
pub const CLIP_VOCAB: &str = "converted/clip/bpe_simple_vocab_16e6.txt.gz";

/// Loads a Stable Diffusion checkpoint (single .safetensors file or diffusers folder), or the
/// embedded tiny-shapes model (a diffusers folder whose text encoder is MiniLM).
pub struct LoadCheckpoint;
impl Node for LoadCheckpoint {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "LoadCheckpoint",
            category: "loaders",
            doc: "loads a Stable Diffusion 1.x, 2.x, SDXL or SDXL refiner checkpoint (.safetensors or diffusers folder) from the models folder; the family is told from the file (SD3, Flux and other families are named and refused); an fp16 SDXL load keeps its VAE in fp32, since SDXL's VAE overflows in fp16",
            version: 1,
            inputs: vec![
                In::new("name", T::String, "file or folder under models/ (or a path)").default("tiny-shapes").listed_from(CHECKPOINTS),
                In::new("precision", T::Enum, "weight precision; auto is fp16 on GPU, fp32 on CPU (where an SDXL file's fp16 UNet weights stay fp16, computed in fp32: the fp32 images in half the memory); fp16-storage keeps the UNet's (and SDXL's text towers') weights in fp16 and computes in fp32, each layer widening its weights per call: for an fp16 file the fp32 images exactly, in about half the UNet's memory, at the cost of the widening per step")
                    .choices(&["auto", "fp32", "fp16", "bf16", "fp16-storage"])
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
        models: &ModelFolders,
    ) -> NodeResult<Vec<PathBuf>> {
        let name = constants.string("name").unwrap_or_default();
        Ok(model_files(&resolve_model(name, models)?))
    }

    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let path = resolve_model(inputs.string("name")?, ctx.models)?;
        let precision_name = inputs.string("precision")?;
        let kind = precision(precision_name, ctx.device)?;
        let fp16_storage = precision_name == "fp16-storage";
        let options = LoadOptions {
            device: ctx.device,
            kind,
            files: ctx.files.clone(),
            // auto on the CPU: SDXL's text towers in fp16, computed in fp32 (ComfyUI's way);
            // fp16-storage: the UNet too.
            sdxl_text_kind: ((precision_name == "auto" && kind == tch::Kind::Float)
                || fp16_storage)
                .then_some(tch::Kind::Half),
            unet_kind: fp16_storage.then_some(tch::Kind::Half),
            // auto on the CPU: an fp16 SDXL file's UNet stays fp16 too (the fp32 images in
            // 5 GB less; the widening costs each step, at 2 threads about 4% at 128x128 and
            // 3% at 512x512 against precision fp32 — README).
            sdxl_unet_as_stored: precision_name == "auto" && kind == tch::Kind::Float,
            ..LoadOptions::default()
        };
        let ((unet, vae, encoder), text_encoder_bytes) = if path.is_dir()
            && !path.join("text_encoder").exists()
            && !path.join("text_encoder_2").exists()
        {
            load_embedded(&path, &options, ctx.models)?
        } else {
            load_with_clip(&path, &options, ctx.models)?
        };
        // The cache counts a node's outputs together, so the whole model's size is carried by
        // the first output and the others count zero. It is the size of the weights as loaded
        // (a fp16 file loaded in fp32 takes twice its size on the device).
        let bytes = model_bytes(&unet, &vae) + text_encoder_bytes;
        Ok(vec![
            Value::object(T::Model, DiffusionModel::new(unet), bytes),
            Value::object(T::Vae, Vae { vae }, 0),
            Value::object(T::TextEncoder, encoder, 0),
        ])
    }
}

/// The parts of a loaded model: UNet, VAE, text encoder; and the text encoder's bytes.
type Parts = ((UNet2DConditionModel, AutoencoderKL, TextEncoder), u64);

/// Bytes of the UNet's and the VAE's weights in the precision they were loaded in.
fn model_bytes(unet: &UNet2DConditionModel, vae: &AutoencoderKL) -> u64 {
    let unet_bytes = UNet2DConditionModel::weight_shapes(unet.config().clone())
        .map(|shapes| parameter_bytes(&shapes, unet.weight_kind()));
    let vae_bytes = AutoencoderKL::weight_shapes(vae.config().clone())
        .map(|shapes| parameter_bytes(&shapes, vae.kind()));
    unet_bytes.unwrap_or(0) + vae_bytes.unwrap_or(0)
}

/// The embedded model: UNet and VAE in diffusers layout, MiniLM from set-up.
fn load_embedded(path: &Path, options: &LoadOptions, models: &ModelFolders) -> NodeResult<Parts> {
    let unet = load_unet_folder(&path.join("unet"), options)?;
    let vae = load_vae_folder(&path.join("vae"), options)?;
    let minilm_dir = models.whole_folder_file(MINILM_DIR);
    if !minilm_dir.join("model.safetensors").exists() {
        return Err(NodeError::msg(format!(
            "{} needs the MiniLM text encoder at {}; run the set-up (make setup) to convert it",
            path.display(),
            minilm_dir.display()
        )));
    }
    let minilm = MiniLm::load(&minilm_dir, options.device)?;
    let bytes = minilm.parameter_bytes();
    Ok(((unet, vae, TextEncoder::MiniLm(Box::new(minilm))), bytes))
}

/// Bytes of a set of text-encoder tensors as loaded.
fn tensor_bytes(weights: &std::collections::HashMap<String, tch::Tensor>) -> u64 {
    weights
        .values()
        .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
        .sum()
}

/// A Stable Diffusion checkpoint (file or diffusers folder) with its CLIP text encoder and
/// the CLIP vocabulary from set-up.
fn load_with_clip(path: &Path, options: &LoadOptions, models: &ModelFolders) -> NodeResult<Parts> {
    // The vocabulary first: without it the gigabytes of weights would be read for nothing.
    let vocab = models.whole_folder_file(CLIP_VOCAB);
    let tokenizer = ClipTokenizer::from_file(&vocab).map_err(|e| {
        if vocab.exists() {
            return NodeError::msg(format!(
                "CLIP vocabulary: {e}; run the set-up (make setup) to make it again"
            ));
        }
        NodeError::msg(format!(
            "the CLIP vocabulary {CLIP_VOCAB} is in none of the model folders ({models}); \
             the set-up (make setup) makes it in the repository's models/ folder: run it, or \
             when --models names other folders, name that one too (--models models)"
        ))
    })?;
    let mut checkpoint = load_checkpoint(path, options)?;
    let family = checkpoint.family();
    if family == ModelFamily::SdxlRefiner {
        let clip_g = checkpoint.text_encoder_2.take().ok_or_else(|| {
            NodeError::msg(format!(
                "{}: an SDXL refiner checkpoint without its OpenCLIP-bigG text encoder",
                path.display()
            ))
        })?;
        let bytes = tensor_bytes(&clip_g.weights);
        let encoder = SdxlRefinerTextEncoder::from_weights(
            clip_g.weights,
            &clip_g.config,
            tokenizer,
            options.device,
            options.kind,
        )
        .map_err(|e| NodeError::msg(format!("{}: {e}", path.display())))?;
        let encoder = TextEncoder::SdxlRefiner(Box::new(encoder));
        return Ok(((checkpoint.unet, checkpoint.vae, encoder), bytes));
    }
    if let Some(clip_g) = checkpoint.text_encoder_2.take() {
        let bytes = tensor_bytes(&checkpoint.text_encoder_weights) + tensor_bytes(&clip_g.weights);
        let encoders = SdxlTextEncoders::from_weights(
            checkpoint.text_encoder_weights,
            &checkpoint.text_encoder_config,
            clip_g.weights,
            &clip_g.config,
            tokenizer,
            options.device,
            options.kind,
        )
        .map_err(|e| NodeError::msg(format!("{}: {e}", path.display())))?;
        let encoder = TextEncoder::Sdxl(Box::new(encoders));
        return Ok(((checkpoint.unet, checkpoint.vae, encoder), bytes));
    }
    let config = clip_config_from_json(&checkpoint.text_encoder_config)?;
    let bytes = tensor_bytes(&checkpoint.text_encoder_weights);
    let weights = Weights::new(
        format!("{} (text encoder)", path.display()),
        checkpoint.text_encoder_weights,
    );
    let model = ClipTextModel::new(&weights, "text_model", config)?;
    let special = match family.text_encoders() {
        TextEncoderStack::Single { special } => special,
        TextEncoderStack::ClipLAndBigG | TextEncoderStack::BigG => {
            return Err(NodeError::msg(format!(
                "{}: an SDXL checkpoint without its second text encoder (OpenCLIP-bigG)",
                path.display()
            )))
        }
    };
    let encoder = TextEncoder::Clip {
        model: Box::new(model),
        tokenizer: Box::new(tokenizer),
        special,
    };
    Ok(((checkpoint.unet, checkpoint.vae, encoder), bytes))
}
