//! Stable Diffusion nodes: load a checkpoint, encode a prompt, sample, VAE decode/encode; the
//! model handles they pass between them; and the settings they read.

mod conditioning;
mod configs;
mod handles;
mod load_checkpoint;
mod lora;
mod prompt;
mod sample;
mod sample_advanced;
mod vae;

pub use conditioning::{Conditioning, PromptSide, SizeConditioning};
pub use handles::{DiffusionModel, TextEncoder, Vae};
pub use load_checkpoint::{LoadCheckpoint, CLIP_VOCAB, MINILM_DIR};
pub use lora::{
    find_loras, resolve_lora, text_encoder_input, LoadLora, LoadLoraModelOnly, PatchedTextEncoder,
    LORAS,
};
pub use prompt::{PromptEncode, PromptEncodeSdxl, PromptEncodeSdxlRefiner};
pub use sample::{added_conditioning, Sampler};
pub use sample_advanced::SamplerAdvanced;
pub use vae::{VaeDecode, VaeEncode};
