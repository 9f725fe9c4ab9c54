//! The `PromptEncode` node: prompt text to conditioning.

use tch::Kind;
use weft_engine::{
    InputSpec as In, Inputs, Node, NodeContext, NodeResult, NodeSpec, OutputSpec as Out, Value,
    ValueType as T,
};

use crate::models::clip_text_model::ClipLayer;
use crate::models::prompt_weighting::encode_prompt;

use super::conditioning::Conditioning;
use super::handles::TextEncoder;

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
        Ok(vec![Conditioning::tokens(
            conditioning.f_to_kind(Kind::Float)?,
        )
        .into_value()])
    }
}
