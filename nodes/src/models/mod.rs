//! Model architectures in tch, mirroring diffusers/transformers module names so that
//! state-dict keys map one to one.

pub mod attention;
pub mod autoencoder_kl;
pub mod bert;
pub mod clip_text_model;
pub mod clip_tokenizer;
pub mod config_json;
pub mod embeddings;
pub mod esrgan_slim;
pub mod layers;
pub mod open_nsfw;
pub mod prompt_weighting;
pub mod resnet;
pub mod rrdbnet;
pub mod sdxl_text;
pub mod srvgg_compact;
pub mod tiled;
pub mod unet_2d_blocks;
pub mod unet_2d_condition;
pub mod unet_cuda_graph;
pub mod vae;
