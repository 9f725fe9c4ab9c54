//! Model architectures in tch, mirroring diffusers/transformers module names so that
//! state-dict keys map one to one.

pub mod bert;
pub mod clip_text_model;
pub mod clip_tokenizer;
pub mod esrgan_slim;
pub mod open_nsfw;
pub mod prompt_weighting;
pub mod rrdbnet;
pub mod srvgg_compact;
pub mod tiled;
