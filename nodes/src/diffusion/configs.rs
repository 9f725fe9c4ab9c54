//! Settings read for the diffusion nodes: weight precision names and the text encoder's
//! transformers `CLIPTextConfig` JSON.

use tch::{Device, Kind};
use weft_engine::{NodeError, NodeResult};

use crate::models::clip_text_model::{Activation, ClipTextConfig};

pub(super) fn precision(name: &str, device: Device) -> NodeResult<Kind> {
    Ok(match name {
        "auto" if device.is_cuda() => Kind::Half,
        "auto" | "fp32" => Kind::Float,
        "fp16" => Kind::Half,
        "bf16" => Kind::BFloat16,
        other => return Err(NodeError::msg(format!("unknown precision '{other}'"))),
    })
}

/// A [`ClipTextConfig`] from a transformers `CLIPTextConfig` JSON, ViT-L/14 values for what
/// it leaves out.
pub(super) fn clip_config_from_json(json: &serde_json::Value) -> NodeResult<ClipTextConfig> {
    let base = ClipTextConfig::clip_vit_l14();
    let int = |k: &str, d: i64| json.get(k).and_then(serde_json::Value::as_i64).unwrap_or(d);
    let hidden_act = match json
        .get("hidden_act")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("quick_gelu")
    {
        "quick_gelu" => Activation::QuickGelu,
        "gelu" => Activation::Gelu,
        other => {
            return Err(NodeError::msg(format!(
                "text encoder: unsupported activation '{other}'"
            )))
        }
    };
    Ok(ClipTextConfig {
        vocab_size: int("vocab_size", base.vocab_size),
        hidden_size: int("hidden_size", base.hidden_size),
        intermediate_size: int("intermediate_size", base.intermediate_size),
        num_hidden_layers: int("num_hidden_layers", base.num_hidden_layers as i64) as usize,
        num_attention_heads: int("num_attention_heads", base.num_attention_heads),
        max_position_embeddings: int("max_position_embeddings", base.max_position_embeddings),
        hidden_act,
        layer_norm_eps: json
            .get("layer_norm_eps")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(base.layer_norm_eps),
        eos_token_id: int("eos_token_id", base.eos_token_id),
    })
}
