//! Settings read for the diffusion nodes: weight precision names and the text encoder's
//! transformers `CLIPTextConfig` JSON.

use tch::{Device, Kind};
use weft_engine::{NodeError, NodeResult};

use crate::models::clip_text_model::ClipTextConfig;

pub(super) fn precision(name: &str, device: Device) -> NodeResult<Kind> {
    Ok(match name {
        "auto" if device.is_cuda() => Kind::Half,
        // fp16-storage computes in fp32; LoadCheckpoint keeps the UNet's weights in fp16.
        "auto" | "fp32" | "fp16-storage" => Kind::Float,
        "fp16" => Kind::Half,
        "bf16" => Kind::BFloat16,
        other => return Err(NodeError::msg(format!("unknown precision '{other}'"))),
    })
}

/// A [`ClipTextConfig`] from a transformers `CLIPTextConfig` JSON, ViT-L/14 values for what
/// it leaves out.
pub(super) fn clip_config_from_json(json: &serde_json::Value) -> NodeResult<ClipTextConfig> {
    ClipTextConfig::from_transformers_json(json, &ClipTextConfig::clip_vit_l14())
        .map_err(|e| NodeError::msg(format!("text encoder: {e}")))
}
