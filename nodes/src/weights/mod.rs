//! Weight loading: memory-mapped safetensors, checkpoint key maps (LDM <-> diffusers).

pub mod safetensors;
pub use self::safetensors::{read_safetensors, MappedFile, Weights};
pub mod checkpoint;
pub mod model;
pub use self::model::{parameter_bytes, Checked, WeightedModel};
pub mod family;
pub mod ldm_keymap;
pub mod lora;
pub mod sdxl_text_keymap;
