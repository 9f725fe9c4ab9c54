//! Model architectures in tch, mirroring diffusers/transformers module names so that
//! state-dict keys map one to one.

pub mod attention;
pub mod autoencoder_kl;
pub mod embeddings;
pub mod resnet;
pub mod unet_2d_blocks;
pub mod unet_2d_condition;
pub mod vae;
