//! Pure name maps from original latent-diffusion (CompVis/Stability "LDM") single-file
//! checkpoint keys to diffusers / transformers state-dict keys, after the renames of
//! diffusers' `convert_from_ckpt.py`: the UNet (`model.diffusion_model.*`), the VAE
//! (`first_stage_model.*`), the SD 1.x CLIP-L text encoder (`cond_stage_model.transformer.*`)
//! the SD 2.x OpenCLIP-H text tower (`cond_stage_model.model.*`), and SDXL's two towers
//! (`conditioner.embedders.0.transformer.*` CLIP-L, `conditioner.embedders.1.model.*`
//! OpenCLIP-bigG) and added-conditioning MLP (`label_emb.0.{0,2}`).

/// What to do with one checkpoint tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    /// The same tensor under a new name.
    Rename(String),
    /// A 1x1-conv weight `[C, C, 1, 1]` used as a linear weight `[C, C]` (the VAE mid-block
    /// attention: convolutions in LDM, linear layers in diffusers). 2-D tensors pass as is.
    ConvToLinear(String),
    /// OpenCLIP's fused `in_proj` (`[3D, ...]`): split in three along dim 0 into q, k, v.
    SplitQkv([String; 3]),
    /// A `[in, out]` matrix used as `x @ M` (OpenCLIP's `text_projection`) stored as the
    /// `[out, in]` weight of a `Linear` (transformers' `text_projection.weight`): transposed.
    Transpose(String),
    /// Not part of the inference model (EMA copies, schedule buffers, unused projections).
    Drop,
}

use super::sdxl_text_keymap::{map_sdxl_text_key, TextTower};

/// Which model a mapped tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Unet,
    Vae,
    TextEncoder,
    /// SDXL's second text tower (OpenCLIP-bigG, transformers `CLIPTextModelWithProjection`).
    TextEncoder2,
}

pub const UNET_PREFIX: &str = "model.diffusion_model.";
pub const VAE_PREFIX: &str = "first_stage_model.";
pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
pub const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";

/// The architecture facts the maps need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LdmLayout {
    /// Resnets per UNet down block (2 for SD).
    pub unet_layers_per_block: usize,
    /// VAE resolution levels (4 for SD): LDM numbers the decoder's levels bottom-up,
    /// diffusers top-down.
    pub vae_blocks: usize,
    /// OpenCLIP resblocks to keep (SD 2.x uses the penultimate layer's output, so diffusers
    /// keeps 23 of 24); later ones are dropped.
    pub open_clip_layers_kept: usize,
}

/// Maps a full checkpoint key. `None` for a key under a model prefix that the map does not
/// understand (the loader reports it); `Some((_, Mapped::Drop))` for keys outside the models.
pub fn map_ldm_key(name: &str, layout: &LdmLayout) -> Option<(Component, Mapped)> {
    if let Some(rest) = name.strip_prefix(UNET_PREFIX) {
        unet_key(rest, layout.unet_layers_per_block).map(|n| (Component::Unet, Mapped::Rename(n)))
    } else if let Some(rest) = name.strip_prefix(VAE_PREFIX) {
        vae_key(rest, layout.vae_blocks).map(|m| (Component::Vae, m))
    } else if let Some(rest) = name.strip_prefix(CLIP_PREFIX) {
        clip_l_key(rest).map(|m| (Component::TextEncoder, m))
    } else if let Some(rest) = name.strip_prefix(OPEN_CLIP_PREFIX) {
        open_clip_key(rest, layout.open_clip_layers_kept).map(|m| (Component::TextEncoder, m))
    } else if let Some((tower, mapped)) = map_sdxl_text_key(name) {
        let component = match tower {
            TextTower::ClipL => Component::TextEncoder,
            TextTower::ClipG => Component::TextEncoder2,
        };
        mapped.map(|m| (component, m))
    } else {
        // model_ema.*, betas / alphas_cumprod / ... schedule buffers, and the like.
        Some((Component::Unet, Mapped::Drop))
    }
}

/// LDM `ResBlock` sub-module names -> diffusers `ResnetBlock2D` ones.
fn resnet_part(rest: &str) -> Option<String> {
    const PARTS: [(&str, &str); 6] = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    PARTS.iter().find_map(|(ldm, diffusers)| {
        rest.strip_prefix(ldm)
            .filter(|leaf| matches!(*leaf, "weight" | "bias"))
            .map(|leaf| format!("{diffusers}{leaf}"))
    })
}

/// Splits `"12.1.rest"` into `(12, 1, "rest")`.
fn two_indices(s: &str) -> Option<(usize, usize, &str)> {
    let (a, s) = s.split_once('.')?;
    let (b, rest) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?, rest))
}

fn weight_or_bias(leaf: &str) -> Option<&str> {
    matches!(leaf, "weight" | "bias").then_some(leaf)
}

/// UNet key without `model.diffusion_model.` -> diffusers `UNet2DConditionModel` key.
/// In LDM, `input_blocks.0` is `conv_in`; then each down level `b` holds `layers_per_block`
/// entries (a resnet `.0` and, when cross-attending, a transformer `.1`) plus a downsampler
/// entry (`.0.op`); `output_blocks` hold `layers_per_block + 1` entries per level, the last
/// also carrying the upsampler (`.1.conv` or `.2.conv` after a transformer).
pub fn unet_key(ldm: &str, layers_per_block: usize) -> Option<String> {
    let per_level = layers_per_block + 1;
    let simple = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("label_emb.0.0.", "add_embedding.linear_1."),
        ("label_emb.0.2.", "add_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    for (from, to) in simple {
        if let Some(leaf) = ldm.strip_prefix(from).and_then(weight_or_bias) {
            return Some(format!("{to}{leaf}"));
        }
    }
    if let Some(s) = ldm.strip_prefix("input_blocks.") {
        let (i, j, rest) = two_indices(s)?;
        let i = i.checked_sub(1)?;
        let (level, layer) = (i / per_level, i % per_level);
        return match j {
            0 if layer == layers_per_block => rest
                .strip_prefix("op.")
                .and_then(weight_or_bias)
                .map(|leaf| format!("down_blocks.{level}.downsamplers.0.conv.{leaf}")),
            0 => resnet_part(rest).map(|r| format!("down_blocks.{level}.resnets.{layer}.{r}")),
            1 if layer < layers_per_block => {
                Some(format!("down_blocks.{level}.attentions.{layer}.{rest}"))
            }
            _ => None,
        };
    }
    if let Some(s) = ldm.strip_prefix("middle_block.") {
        let (j, rest) = s.split_once('.')?;
        return match j {
            "0" => resnet_part(rest).map(|r| format!("mid_block.resnets.0.{r}")),
            "1" => Some(format!("mid_block.attentions.0.{rest}")),
            "2" => resnet_part(rest).map(|r| format!("mid_block.resnets.1.{r}")),
            _ => None,
        };
    }
    if let Some(s) = ldm.strip_prefix("output_blocks.") {
        let (i, j, rest) = two_indices(s)?;
        let (level, layer) = (i / per_level, i % per_level);
        if let Some(leaf) = rest.strip_prefix("conv.").and_then(weight_or_bias) {
            return (j > 0 && layer == layers_per_block)
                .then(|| format!("up_blocks.{level}.upsamplers.0.conv.{leaf}"));
        }
        return match j {
            0 => resnet_part(rest).map(|r| format!("up_blocks.{level}.resnets.{layer}.{r}")),
            1 => Some(format!("up_blocks.{level}.attentions.{layer}.{rest}")),
            _ => None,
        };
    }
    None
}

/// VAE resnet sub-modules: the same names except the shortcut.
fn vae_resnet_part(rest: &str) -> Option<String> {
    let (module, leaf) = rest.split_once('.')?;
    weight_or_bias(leaf)?;
    let module = match module {
        "norm1" | "conv1" | "norm2" | "conv2" => module,
        "nin_shortcut" => "conv_shortcut",
        _ => return None,
    };
    Some(format!("{module}.{leaf}"))
}

/// VAE key without `first_stage_model.` -> diffusers `AutoencoderKL` key. `blocks` is the
/// number of resolution levels (LDM's decoder `up.0` is diffusers' last up block).
pub fn vae_key(ldm: &str, blocks: usize) -> Option<Mapped> {
    let rename = |s: String| Some(Mapped::Rename(s));
    if ["quant_conv.", "post_quant_conv."]
        .iter()
        .any(|p| ldm.strip_prefix(p).and_then(weight_or_bias).is_some())
    {
        return rename(ldm.to_string());
    }
    if ldm.starts_with("loss.") {
        return Some(Mapped::Drop); // training-only discriminator / LPIPS weights
    }
    let (side, rest) = ldm.split_once('.')?;
    if side != "encoder" && side != "decoder" {
        return None;
    }
    if let Some(leaf) = rest.strip_prefix("norm_out.").and_then(weight_or_bias) {
        return rename(format!("{side}.conv_norm_out.{leaf}"));
    }
    for module in ["conv_in.", "conv_out."] {
        if let Some(leaf) = rest.strip_prefix(module).and_then(weight_or_bias) {
            return rename(format!("{side}.{module}{leaf}"));
        }
    }
    if let Some(s) = rest.strip_prefix("mid.") {
        let (module, tail) = s.split_once('.')?;
        return match module {
            "block_1" | "block_2" => {
                let k = if module == "block_1" { 0 } else { 1 };
                vae_resnet_part(tail)
                    .map(|r| Mapped::Rename(format!("{side}.mid_block.resnets.{k}.{r}")))
            }
            "attn_1" => {
                let (part, leaf) = tail.split_once('.')?;
                weight_or_bias(leaf)?;
                let target = match part {
                    "norm" => "group_norm",
                    "q" => "to_q",
                    "k" => "to_k",
                    "v" => "to_v",
                    "proj_out" => "to_out.0",
                    _ => return None,
                };
                let name = format!("{side}.mid_block.attentions.0.{target}.{leaf}");
                Some(if part != "norm" && leaf == "weight" {
                    Mapped::ConvToLinear(name)
                } else {
                    Mapped::Rename(name)
                })
            }
            _ => None,
        };
    }
    let (stage, s) = rest.split_once('.')?;
    let (level, s) = s.split_once('.')?;
    let level: usize = level.parse().ok()?;
    if level >= blocks {
        return None;
    }
    let (diffusers_stage, diffusers_level, sampler) = match (side, stage) {
        ("encoder", "down") => ("down_blocks", level, "downsample."),
        ("decoder", "up") => ("up_blocks", blocks - 1 - level, "upsample."),
        _ => return None,
    };
    if let Some(tail) = s.strip_prefix("block.") {
        let (j, r) = tail.split_once('.')?;
        let j: usize = j.parse().ok()?;
        let r = vae_resnet_part(r)?;
        return rename(format!(
            "{side}.{diffusers_stage}.{diffusers_level}.resnets.{j}.{r}"
        ));
    }
    let leaf = s.strip_prefix(sampler)?.strip_prefix("conv.")?;
    weight_or_bias(leaf)?;
    let samplers = if stage == "down" {
        "downsamplers"
    } else {
        "upsamplers"
    };
    rename(format!(
        "{side}.{diffusers_stage}.{diffusers_level}.{samplers}.0.conv.{leaf}"
    ))
}

/// SD 1.x text encoder key without `cond_stage_model.transformer.` -> transformers
/// `CLIPTextModel` key (`text_model.*`). Old checkpoints (transformers < 4.?) lack the
/// `text_model.` level; the `position_ids` buffer is dropped.
pub fn clip_l_key(ldm: &str) -> Option<Mapped> {
    if ldm.ends_with("position_ids") {
        return Some(Mapped::Drop);
    }
    let name = if ldm.starts_with("text_model.") {
        ldm.to_string()
    } else {
        format!("text_model.{ldm}")
    };
    let tail = name.strip_prefix("text_model.")?;
    let known = ["embeddings.", "encoder.layers.", "final_layer_norm."];
    known
        .iter()
        .any(|k| tail.starts_with(k))
        .then_some(Mapped::Rename(name))
}

/// SD 2.x OpenCLIP text-tower key without `cond_stage_model.model.` -> transformers
/// `CLIPTextModel` key. Resblocks from `layers_kept` on, the text projection and the logit
/// scale are dropped (SD 2.x conditions on the penultimate layer).
pub fn open_clip_key(ldm: &str, layers_kept: usize) -> Option<Mapped> {
    let rename = |s: &str| Some(Mapped::Rename(format!("text_model.{s}")));
    match ldm {
        "token_embedding.weight" => return rename("embeddings.token_embedding.weight"),
        "positional_embedding" => return rename("embeddings.position_embedding.weight"),
        "ln_final.weight" => return rename("final_layer_norm.weight"),
        "ln_final.bias" => return rename("final_layer_norm.bias"),
        "text_projection" | "logit_scale" | "attn_mask" => return Some(Mapped::Drop),
        _ => {}
    }
    let s = ldm.strip_prefix("transformer.resblocks.")?;
    let (i, rest) = s.split_once('.')?;
    let i: usize = i.parse().ok()?;
    if i >= layers_kept {
        return Some(Mapped::Drop);
    }
    let layer = format!("text_model.encoder.layers.{i}");
    if let Some(leaf) = rest.strip_prefix("attn.in_proj_").and_then(weight_or_bias) {
        return Some(Mapped::SplitQkv(
            ["q", "k", "v"].map(|p| format!("{layer}.self_attn.{p}_proj.{leaf}")),
        ));
    }
    let (module, leaf) = rest.rsplit_once('.')?;
    weight_or_bias(leaf)?;
    let module = match module {
        "ln_1" => "layer_norm1",
        "ln_2" => "layer_norm2",
        "attn.out_proj" => "self_attn.out_proj",
        "mlp.c_fc" => "mlp.fc1",
        "mlp.c_proj" => "mlp.fc2",
        _ => return None,
    };
    Some(Mapped::Rename(format!("{layer}.{module}.{leaf}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unet(n: &str) -> Option<String> {
        unet_key(n, 2)
    }

    #[test]
    fn unet_top_level_names() {
        assert_eq!(
            unet("time_embed.0.weight").unwrap(),
            "time_embedding.linear_1.weight"
        );
        assert_eq!(
            unet("time_embed.2.bias").unwrap(),
            "time_embedding.linear_2.bias"
        );
        assert_eq!(unet("input_blocks.0.0.weight").unwrap(), "conv_in.weight");
        assert_eq!(unet("out.0.weight").unwrap(), "conv_norm_out.weight");
        assert_eq!(unet("out.2.bias").unwrap(), "conv_out.bias");
    }

    #[test]
    fn unet_down_path_sd_layout() {
        assert_eq!(
            unet("input_blocks.1.0.in_layers.0.weight").unwrap(),
            "down_blocks.0.resnets.0.norm1.weight"
        );
        assert_eq!(
            unet("input_blocks.2.0.emb_layers.1.bias").unwrap(),
            "down_blocks.0.resnets.1.time_emb_proj.bias"
        );
        assert_eq!(
            unet("input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight").unwrap(),
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
        );
        assert_eq!(
            unet("input_blocks.3.0.op.weight").unwrap(),
            "down_blocks.0.downsamplers.0.conv.weight"
        );
        assert_eq!(
            unet("input_blocks.4.0.skip_connection.weight").unwrap(),
            "down_blocks.1.resnets.0.conv_shortcut.weight"
        );
        assert_eq!(
            unet("input_blocks.11.0.out_layers.3.weight").unwrap(),
            "down_blocks.3.resnets.1.conv2.weight"
        );
        assert_eq!(unet("input_blocks.3.0.in_layers.0.weight"), None);
        assert_eq!(unet("input_blocks.1.0.op.weight"), None);
    }

    #[test]
    fn unet_mid_and_up_path_sd_layout() {
        assert_eq!(
            unet("middle_block.0.in_layers.2.weight").unwrap(),
            "mid_block.resnets.0.conv1.weight"
        );
        assert_eq!(
            unet("middle_block.1.proj_in.weight").unwrap(),
            "mid_block.attentions.0.proj_in.weight"
        );
        assert_eq!(
            unet("middle_block.2.out_layers.0.bias").unwrap(),
            "mid_block.resnets.1.norm2.bias"
        );
        // Level 0 of the up path is SD's UpBlock2D: its upsampler sits at `.1`.
        assert_eq!(
            unet("output_blocks.2.1.conv.weight").unwrap(),
            "up_blocks.0.upsamplers.0.conv.weight"
        );
        assert_eq!(
            unet("output_blocks.5.2.conv.bias").unwrap(),
            "up_blocks.1.upsamplers.0.conv.bias"
        );
        assert_eq!(
            unet("output_blocks.5.1.norm.weight").unwrap(),
            "up_blocks.1.attentions.2.norm.weight"
        );
        assert_eq!(
            unet("output_blocks.11.0.skip_connection.bias").unwrap(),
            "up_blocks.3.resnets.2.conv_shortcut.bias"
        );
        assert_eq!(
            unet("output_blocks.9.1.transformer_blocks.0.ff.net.0.proj.weight").unwrap(),
            "up_blocks.3.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"
        );
        assert_eq!(unet("output_blocks.4.1.conv.weight"), None);
        assert_eq!(unet("something.else"), None);
    }

    #[test]
    fn vae_names_and_reshapes() {
        let r = |s: &str| Some(Mapped::Rename(s.to_string()));
        assert_eq!(
            vae_key("encoder.norm_out.weight", 4),
            r("encoder.conv_norm_out.weight")
        );
        assert_eq!(vae_key("quant_conv.bias", 4), r("quant_conv.bias"));
        assert_eq!(
            vae_key("post_quant_conv.weight", 4),
            r("post_quant_conv.weight")
        );
        assert_eq!(
            vae_key("encoder.down.1.block.0.nin_shortcut.weight", 4),
            r("encoder.down_blocks.1.resnets.0.conv_shortcut.weight")
        );
        assert_eq!(
            vae_key("encoder.down.2.downsample.conv.weight", 4),
            r("encoder.down_blocks.2.downsamplers.0.conv.weight")
        );
        assert_eq!(
            vae_key("decoder.up.3.block.2.conv1.bias", 4),
            r("decoder.up_blocks.0.resnets.2.conv1.bias")
        );
        assert_eq!(
            vae_key("decoder.up.1.upsample.conv.weight", 4),
            r("decoder.up_blocks.2.upsamplers.0.conv.weight")
        );
        assert_eq!(
            vae_key("decoder.mid.block_2.norm2.weight", 4),
            r("decoder.mid_block.resnets.1.norm2.weight")
        );
        assert_eq!(
            vae_key("encoder.mid.attn_1.norm.weight", 4),
            r("encoder.mid_block.attentions.0.group_norm.weight")
        );
        assert_eq!(
            vae_key("encoder.mid.attn_1.q.weight", 4),
            Some(Mapped::ConvToLinear(
                "encoder.mid_block.attentions.0.to_q.weight".into()
            ))
        );
        assert_eq!(
            vae_key("decoder.mid.attn_1.proj_out.bias", 4),
            r("decoder.mid_block.attentions.0.to_out.0.bias")
        );
        assert_eq!(vae_key("loss.logvar", 4), Some(Mapped::Drop));
        assert_eq!(vae_key("decoder.up.4.block.0.conv1.bias", 4), None);
        assert_eq!(vae_key("encoder.up.0.block.0.conv1.bias", 4), None);
    }

    #[test]
    fn clip_l_names() {
        assert_eq!(
            clip_l_key("text_model.encoder.layers.3.self_attn.q_proj.weight"),
            Some(Mapped::Rename(
                "text_model.encoder.layers.3.self_attn.q_proj.weight".into()
            ))
        );
        assert_eq!(
            clip_l_key("embeddings.token_embedding.weight"),
            Some(Mapped::Rename(
                "text_model.embeddings.token_embedding.weight".into()
            ))
        );
        assert_eq!(
            clip_l_key("text_model.embeddings.position_ids"),
            Some(Mapped::Drop)
        );
        assert_eq!(clip_l_key("text_model.bogus.weight"), None);
    }

    #[test]
    fn open_clip_names() {
        assert_eq!(
            open_clip_key("positional_embedding", 23),
            Some(Mapped::Rename(
                "text_model.embeddings.position_embedding.weight".into()
            ))
        );
        assert_eq!(
            open_clip_key("transformer.resblocks.0.attn.in_proj_weight", 23),
            Some(Mapped::SplitQkv([
                "text_model.encoder.layers.0.self_attn.q_proj.weight".into(),
                "text_model.encoder.layers.0.self_attn.k_proj.weight".into(),
                "text_model.encoder.layers.0.self_attn.v_proj.weight".into(),
            ]))
        );
        assert_eq!(
            open_clip_key("transformer.resblocks.22.mlp.c_fc.bias", 23),
            Some(Mapped::Rename(
                "text_model.encoder.layers.22.mlp.fc1.bias".into()
            ))
        );
        assert_eq!(
            open_clip_key("transformer.resblocks.5.ln_2.weight", 23),
            Some(Mapped::Rename(
                "text_model.encoder.layers.5.layer_norm2.weight".into()
            ))
        );
        assert_eq!(
            open_clip_key("transformer.resblocks.23.ln_1.weight", 23),
            Some(Mapped::Drop)
        );
        assert_eq!(open_clip_key("text_projection", 23), Some(Mapped::Drop));
    }

    #[test]
    fn full_keys_pick_the_component() {
        let layout = LdmLayout {
            unet_layers_per_block: 2,
            vae_blocks: 4,
            open_clip_layers_kept: 23,
        };
        assert_eq!(
            map_ldm_key("model.diffusion_model.out.2.weight", &layout),
            Some((Component::Unet, Mapped::Rename("conv_out.weight".into())))
        );
        assert_eq!(
            map_ldm_key("first_stage_model.decoder.conv_in.bias", &layout),
            Some((
                Component::Vae,
                Mapped::Rename("decoder.conv_in.bias".into())
            ))
        );
        assert_eq!(
            map_ldm_key(
                "cond_stage_model.transformer.text_model.final_layer_norm.bias",
                &layout
            ),
            Some((
                Component::TextEncoder,
                Mapped::Rename("text_model.final_layer_norm.bias".into())
            ))
        );
        assert!(matches!(
            map_ldm_key("model_ema.decay", &layout),
            Some((_, Mapped::Drop))
        ));
        assert_eq!(map_ldm_key("model.diffusion_model.nonsense", &layout), None);
    }
}
