//! The `PromptEncode`, `PromptEncodeSdxl` and `PromptEncodeSdxlRefiner` nodes: prompt text to
//! conditioning.

use tch::Kind;
use weft_engine::{
    InputSpec as In, Inputs, Node, NodeContext, NodeError, NodeResult, NodeSpec, OutputSpec as Out,
    Value, ValueType as T,
};

use crate::models::clip_text_model::ClipLayer;
use crate::models::prompt_weighting::encode_prompt;

use super::conditioning::{Conditioning, SizeConditioning};
use super::handles::TextEncoder;
use super::lora::text_encoder_input;

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
                In::new("text", T::String, "the prompt")
                    .default("")
                    .multiline(),
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
        let encoder = text_encoder_input(inputs, "encoder")?;
        let text = inputs.string("text")?;
        let conditioning = match &*encoder {
            TextEncoder::Clip {
                model,
                tokenizer,
                special,
            } => encode_prompt(model, tokenizer, text, special, ClipLayer::Last, true)?.0,
            TextEncoder::MiniLm(minilm) => minilm.embed_tokens(text)?,
            // ComfyUI's CLIPTextEncode on SDXL: no sizes, so the sampler uses the image's.
            TextEncoder::Sdxl(encoders) => {
                let out = encoders.encode(text)?;
                return Ok(vec![Conditioning {
                    context: out.context.f_to_kind(Kind::Float)?,
                    pooled: Some(out.pooled.f_to_kind(Kind::Float)?),
                    size: None,
                    aesthetic_score: None,
                }
                .into_value()]);
            }
            // On the refiner likewise: the image's size and ComfyUI's default scores.
            TextEncoder::SdxlRefiner(encoder) => {
                let out = encoder.encode(text)?;
                return Ok(vec![Conditioning {
                    context: out.context,
                    pooled: Some(out.pooled),
                    size: None,
                    aesthetic_score: None,
                }
                .into_value()]);
            }
        };
        Ok(vec![Conditioning::tokens(
            conditioning.f_to_kind(Kind::Float)?,
        )
        .into_value()])
    }
}

/// SDXL prompt with size and crop conditioning (ComfyUI's CLIPTextEncodeSDXL).
pub struct PromptEncodeSdxl;
impl Node for PromptEncodeSdxl {
    fn spec(&self) -> NodeSpec {
        let pixels = |name: &'static str, doc: &'static str, default: i64| {
            In::new(name, T::Int, doc)
                .default(default)
                .range(0.0, 16384.0)
        };
        NodeSpec {
            type_name: "PromptEncodeSdxl",
            category: "conditioning",
            doc: "encodes an SDXL prompt with its size and crop conditioning (ComfyUI's CLIPTextEncodeSDXL): text_g goes to OpenCLIP-bigG, text_l to CLIP-L; (word:1.2) weights",
            version: 1,
            inputs: vec![
                In::new("encoder", T::TextEncoder, "the text encoder of an SDXL checkpoint"),
                pixels("width", "the original image width the model is told (SDXL size conditioning)", 1024),
                pixels("height", "the original image height the model is told", 1024),
                pixels("crop_w", "the crop's left offset in pixels (0: not cropped)", 0),
                pixels("crop_h", "the crop's top offset in pixels (0: not cropped)", 0),
                pixels("target_width", "the target image width", 1024),
                pixels("target_height", "the target image height", 1024),
                In::new("text_g", T::String, "the prompt for OpenCLIP-bigG")
                    .default("")
                    .multiline(),
                In::new("text_l", T::String, "the prompt for CLIP-L")
                    .default("")
                    .multiline(),
            ],
            outputs: vec![Out::new(
                "conditioning",
                T::Conditioning,
                "token states [1, tokens, 2048], pooled text [1, 1280] and the size ids",
            )],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let encoder = text_encoder_input(inputs, "encoder")?;
        let encoders = match &*encoder {
            TextEncoder::Sdxl(encoders) => encoders,
            TextEncoder::SdxlRefiner(_) => {
                return Err(NodeError::msg(
                    "input 'encoder': the SDXL refiner's text encoder (bigG alone, no text_l); use PromptEncodeSdxlRefiner",
                ))
            }
            _ => {
                return Err(NodeError::msg(
                    "input 'encoder': not an SDXL text encoder; use PromptEncode for SD 1.x/2.x checkpoints",
                ))
            }
        };
        let out = encoders.encode_pair(inputs.string("text_l")?, inputs.string("text_g")?)?;
        let int = |name: &str| inputs.int(name).map(|v| v as f64);
        let size = SizeConditioning {
            height: int("height")?,
            width: int("width")?,
            crop_top: int("crop_h")?,
            crop_left: int("crop_w")?,
            target_height: int("target_height")?,
            target_width: int("target_width")?,
        };
        Ok(vec![Conditioning {
            context: out.context.f_to_kind(Kind::Float)?,
            pooled: Some(out.pooled.f_to_kind(Kind::Float)?),
            size: Some(size),
            aesthetic_score: None,
        }
        .into_value()])
    }
}

/// SDXL refiner prompt with its aesthetic score and size (ComfyUI's CLIPTextEncodeSDXLRefiner).
pub struct PromptEncodeSdxlRefiner;
impl Node for PromptEncodeSdxlRefiner {
    fn spec(&self) -> NodeSpec {
        let pixels = |name: &'static str, doc: &'static str| {
            In::new(name, T::Int, doc).default(1024).range(0.0, 16384.0)
        };
        NodeSpec {
            type_name: "PromptEncodeSdxlRefiner",
            category: "conditioning",
            doc: "encodes a prompt for the SDXL refiner with its aesthetic score and size conditioning (ComfyUI's CLIPTextEncodeSDXLRefiner); (word:1.2) weights",
            version: 1,
            inputs: vec![
                In::new("encoder", T::TextEncoder, "the text encoder of an SDXL refiner checkpoint (an SDXL base encoder works too: the base ignores the score)"),
                In::new("ascore", T::Float, "aesthetic score the refiner is told (LAION aesthetics scale; ComfyUI: 6 for the positive prompt, 2.5 for the negative)")
                    .default(6.0)
                    .range(0.0, 1000.0)
                    .step(0.01),
                pixels("width", "the image width the refiner is told (size conditioning)"),
                pixels("height", "the image height the refiner is told"),
                In::new("text", T::String, "the prompt").default("").multiline(),
            ],
            outputs: vec![Out::new(
                "conditioning",
                T::Conditioning,
                "token states [1, tokens, 1280], pooled text [1, 1280], the size and the score",
            )],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let encoder = text_encoder_input(inputs, "encoder")?;
        let text = inputs.string("text")?;
        let out = match &*encoder {
            TextEncoder::SdxlRefiner(encoder) => encoder.encode(text)?,
            TextEncoder::Sdxl(encoders) => encoders.encode(text)?,
            _ => {
                return Err(NodeError::msg(
                    "input 'encoder': not an SDXL refiner (or SDXL) text encoder; use PromptEncode for SD 1.x/2.x checkpoints",
                ))
            }
        };
        let (width, height) = (inputs.int("width")? as f64, inputs.int("height")? as f64);
        // ComfyUI sets width and height only: no crop, and the base's target is the same size.
        Ok(vec![Conditioning {
            context: out.context.f_to_kind(Kind::Float)?,
            pooled: Some(out.pooled.f_to_kind(Kind::Float)?),
            size: Some(SizeConditioning::of_image(height, width)),
            aesthetic_score: Some(inputs.float("ascore")?),
        }
        .into_value()])
    }
}
