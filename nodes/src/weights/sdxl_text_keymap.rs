//! Name maps for the text towers of single-file SDXL checkpoints (Stability's `sgm` layout):
//! `conditioner.embedders.N.transformer.*` is a CLIP-L already in transformers names
//! (`text_model.*`), `conditioner.embedders.N.model.*` an OpenCLIP text tower (ViT-bigG/14)
//! in open_clip names, mapped to transformers' `CLIPTextModelWithProjection` as ComfyUI's
//! `clip_text_transformers_convert` does: fused `in_proj` split into q/k/v, `text_projection`
//! (`[width, embed]`, used as `x @ P`) transposed into a `Linear` weight.
//!
//! The tower is told by the module under the embedder (`transformer` or `model`), not by its
//! index: SDXL base has CLIP-L at 0 and bigG at 1, the refiner bigG alone at 0.
use std::collections::HashMap;

use tch::Tensor;

use super::ldm_keymap::{clip_l_key, open_clip_key, Mapped};
use crate::error::{ModelError, Result};

/// Where every SDXL text-tower tensor lives in a single-file checkpoint.
pub const SDXL_EMBEDDERS_PREFIX: &str = "conditioner.embedders.";

/// Which text tower a checkpoint tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextTower {
    /// OpenAI CLIP ViT-L/14 (`text_encoder` in diffusers' SDXL folders).
    ClipL,
    /// OpenCLIP ViT-bigG/14 with its projection (`text_encoder_2`).
    ClipG,
}

/// The tower of a checkpoint key and its name below the tower's module
/// (`conditioner.embedders.1.model.ln_final.weight` -> `(ClipG, "ln_final.weight")`);
/// `None` for keys outside the text embedders.
pub fn sdxl_text_tower(name: &str) -> Option<(TextTower, &str)> {
    let rest = name.strip_prefix(SDXL_EMBEDDERS_PREFIX)?;
    let (index, rest) = rest.split_once('.')?;
    index.parse::<usize>().ok()?;
    if let Some(tail) = rest.strip_prefix("transformer.") {
        Some((TextTower::ClipL, tail))
    } else {
        rest.strip_prefix("model.")
            .map(|tail| (TextTower::ClipG, tail))
    }
}

/// CLIP-L key below `conditioner.embedders.N.transformer.` -> transformers `CLIPTextModel`
/// key. The `position_ids` buffer and a `text_projection` / `logit_scale` some exports carry
/// are dropped (SDXL uses CLIP-L's hidden states only, never its pooled output).
pub fn sdxl_clip_l_key(rest: &str) -> Option<Mapped> {
    match rest {
        "text_projection.weight" | "text_projection" | "logit_scale" => Some(Mapped::Drop),
        _ => clip_l_key(rest),
    }
}

/// OpenCLIP key below `conditioner.embedders.N.model.` -> transformers
/// `CLIPTextModelWithProjection` key. All resblocks are kept (SDXL pools from the last layer);
/// `logit_scale` and the `attn_mask` buffer are dropped.
pub fn sdxl_clip_g_key(rest: &str) -> Option<Mapped> {
    match rest {
        // open_clip stores `x @ P` with P [width, embed]; a Linear holds P transposed.
        "text_projection" => Some(Mapped::Transpose("text_projection.weight".into())),
        // Some conversions already wrote it as a Linear weight.
        "text_projection.weight" => Some(Mapped::Rename("text_projection.weight".into())),
        _ => open_clip_key(rest, usize::MAX),
    }
}

/// Maps a full checkpoint key: `None` outside the text embedders; `Some((tower, None))` for a
/// key under a tower that the map does not understand (the caller reports it).
pub fn map_sdxl_text_key(name: &str) -> Option<(TextTower, Option<Mapped>)> {
    let (tower, rest) = sdxl_text_tower(name)?;
    let mapped = match tower {
        TextTower::ClipL => sdxl_clip_l_key(rest),
        TextTower::ClipG => sdxl_clip_g_key(rest),
    };
    Some((tower, mapped))
}

/// An SDXL checkpoint's tensors, the text towers' under transformers names.
#[derive(Default)]
pub struct SdxlTextTensors {
    /// For `CLIPTextModel` (`text_model.*`).
    pub clip_l: HashMap<String, Tensor>,
    /// For `CLIPTextModelWithProjection` (`text_model.*`, `text_projection.weight`).
    pub clip_g: HashMap<String, Tensor>,
    /// Everything outside `conditioner.embedders.*`, unchanged.
    pub other: HashMap<String, Tensor>,
}

/// Splits single-file tensors into the two towers' transformers-named sets. Keys under a tower
/// that the map does not understand are kept under their checkpoint name, so the model's weight
/// check reports them as unexpected instead of their being lost.
pub fn split_sdxl_text_tensors(tensors: HashMap<String, Tensor>) -> Result<SdxlTextTensors> {
    let mut out = SdxlTextTensors::default();
    for (name, tensor) in tensors {
        let Some((tower, mapped)) = map_sdxl_text_key(&name) else {
            out.other.insert(name, tensor);
            continue;
        };
        let part = match tower {
            TextTower::ClipL => &mut out.clip_l,
            TextTower::ClipG => &mut out.clip_g,
        };
        match mapped.unwrap_or_else(|| Mapped::Rename(name.clone())) {
            Mapped::Rename(new) | Mapped::ConvToLinear(new) => {
                part.insert(new, tensor);
            }
            Mapped::Transpose(new) => {
                if tensor.dim() != 2 {
                    return Err(ModelError::Shape {
                        context: name,
                        message: format!("expected a 2-D projection, found {:?}", tensor.size()),
                    });
                }
                part.insert(new, tensor.tr().contiguous());
            }
            Mapped::SplitQkv(names) => {
                let shape = tensor.size();
                if shape.is_empty() || shape[0] % 3 != 0 {
                    return Err(ModelError::Shape {
                        context: name,
                        message: format!(
                            "a fused q/k/v projection needs a first dimension divisible by 3, \
                             found {shape:?}"
                        ),
                    });
                }
                for (new, chunk) in names.into_iter().zip(tensor.chunk(3, 0)) {
                    part.insert(new, chunk.contiguous());
                }
            }
            Mapped::Drop => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn rename(s: &str) -> Option<Mapped> {
        Some(Mapped::Rename(s.to_string()))
    }

    #[test]
    fn towers_are_told_by_module_not_index() {
        assert_eq!(
            sdxl_text_tower("conditioner.embedders.0.transformer.text_model.final_layer_norm.bias"),
            Some((TextTower::ClipL, "text_model.final_layer_norm.bias"))
        );
        assert_eq!(
            sdxl_text_tower("conditioner.embedders.1.model.ln_final.weight"),
            Some((TextTower::ClipG, "ln_final.weight"))
        );
        // The refiner: bigG alone, at index 0.
        assert_eq!(
            sdxl_text_tower("conditioner.embedders.0.model.positional_embedding"),
            Some((TextTower::ClipG, "positional_embedding"))
        );
        assert_eq!(sdxl_text_tower("model.diffusion_model.out.0.weight"), None);
        assert_eq!(sdxl_text_tower("conditioner.embedders.x.model.a"), None);
        assert_eq!(sdxl_text_tower("conditioner.embedders.2.other.a"), None);
    }

    #[test]
    fn clip_l_keeps_transformers_names() {
        let k = |s: &str| map_sdxl_text_key(&format!("conditioner.embedders.0.transformer.{s}"));
        assert_eq!(
            k("text_model.encoder.layers.11.mlp.fc2.weight"),
            Some((
                TextTower::ClipL,
                rename("text_model.encoder.layers.11.mlp.fc2.weight")
            ))
        );
        assert_eq!(
            k("text_model.embeddings.position_ids"),
            Some((TextTower::ClipL, Some(Mapped::Drop)))
        );
        assert_eq!(
            k("text_projection.weight"),
            Some((TextTower::ClipL, Some(Mapped::Drop)))
        );
        assert_eq!(
            k("text_model.pooler.weight"),
            Some((TextTower::ClipL, None))
        );
    }

    #[test]
    fn clip_g_maps_open_clip_names_keeping_all_32_layers() {
        let k = |s: &str| sdxl_clip_g_key(s);
        assert_eq!(
            k("token_embedding.weight"),
            rename("text_model.embeddings.token_embedding.weight")
        );
        assert_eq!(
            k("positional_embedding"),
            rename("text_model.embeddings.position_embedding.weight")
        );
        assert_eq!(
            k("ln_final.bias"),
            rename("text_model.final_layer_norm.bias")
        );
        assert_eq!(
            k("transformer.resblocks.31.mlp.c_fc.weight"),
            rename("text_model.encoder.layers.31.mlp.fc1.weight")
        );
        assert_eq!(
            k("transformer.resblocks.31.attn.out_proj.bias"),
            rename("text_model.encoder.layers.31.self_attn.out_proj.bias")
        );
        assert_eq!(
            k("transformer.resblocks.0.ln_2.weight"),
            rename("text_model.encoder.layers.0.layer_norm2.weight")
        );
        assert_eq!(
            k("transformer.resblocks.30.attn.in_proj_weight"),
            Some(Mapped::SplitQkv(["q", "k", "v"].map(|p| format!(
                "text_model.encoder.layers.30.self_attn.{p}_proj.weight"
            ))))
        );
        assert_eq!(
            k("text_projection"),
            Some(Mapped::Transpose("text_projection.weight".into()))
        );
        assert_eq!(
            k("text_projection.weight"),
            rename("text_projection.weight")
        );
        assert_eq!(k("logit_scale"), Some(Mapped::Drop));
        assert_eq!(k("attn_mask"), Some(Mapped::Drop));
        assert_eq!(k("transformer.resblocks.3.attn.mystery.weight"), None);
    }

    #[test]
    fn split_transposes_the_projection_splits_qkv_and_keeps_unknown_names() {
        let arange = |n: i64| Tensor::arange(n, (Kind::Float, Device::Cpu));
        let mut tensors = HashMap::new();
        let g = "conditioner.embedders.1.model.";
        tensors.insert(format!("{g}text_projection"), arange(6).view([2, 3]));
        tensors.insert(
            format!("{g}transformer.resblocks.0.attn.in_proj_bias"),
            arange(6),
        );
        tensors.insert(format!("{g}logit_scale"), arange(1));
        tensors.insert(format!("{g}strange.weight"), arange(1));
        tensors.insert(
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight".into(),
            arange(2),
        );
        tensors.insert("first_stage_model.decoder.conv_in.bias".into(), arange(2));
        let out = split_sdxl_text_tensors(tensors).unwrap();
        let p = &out.clip_g["text_projection.weight"];
        assert_eq!(p.size(), [3, 2]);
        assert_eq!(p.double_value(&[2, 1]), 5.0); // P[1, 2]
        let v = &out.clip_g["text_model.encoder.layers.0.self_attn.v_proj.bias"];
        assert_eq!(Vec::<f32>::try_from(v).unwrap(), [4.0, 5.0]);
        assert!(out.clip_g.contains_key(&format!("{g}strange.weight")));
        assert!(!out.clip_g.keys().any(|k| k.contains("logit_scale")));
        assert_eq!(out.clip_g.len(), 5);
        assert!(out
            .clip_l
            .contains_key("text_model.final_layer_norm.weight"));
        assert!(out
            .other
            .contains_key("first_stage_model.decoder.conv_in.bias"));
    }

    #[test]
    fn split_names_a_bad_fused_projection() {
        let mut tensors = HashMap::new();
        let name = "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight";
        tensors.insert(
            name.to_string(),
            Tensor::zeros([4, 2], (Kind::Float, Device::Cpu)),
        );
        let err = split_sdxl_text_tensors(tensors).err().unwrap().to_string();
        assert!(
            err.contains(name) && err.contains("divisible by 3"),
            "{err}"
        );
        let mut tensors = HashMap::new();
        let name = "conditioner.embedders.1.model.text_projection";
        tensors.insert(
            name.to_string(),
            Tensor::zeros([4], (Kind::Float, Device::Cpu)),
        );
        let err = split_sdxl_text_tensors(tensors).err().unwrap().to_string();
        assert!(err.contains(name) && err.contains("2-D"), "{err}");
    }
}
