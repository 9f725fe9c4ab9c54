//! The conditional denoising UNet of Stable Diffusion 1.x / 2.x (Rombach et al. 2022, "High-
//! Resolution Image Synthesis with Latent Diffusion Models"), mirroring diffusers
//! `UNet2DConditionModel` so that its state-dict keys load one to one. Configs follow
//! `runwayml/stable-diffusion-v1-5`, `stabilityai/stable-diffusion-2-1` and
//! `stabilityai/stable-diffusion-xl-base-1.0` `unet/config.json`; SDXL's size/crop and pooled
//! text conditioning (Podell et al. 2023, "SDXL") is diffusers' `addition_embed_type: text_time`.
use serde_json::{json, Value};
use tch::{Kind, Tensor};

use crate::error::{ModelError, Result, TchContext};
use crate::models::attention::{CrossContext, KeyValueMemo};
use crate::models::config_json::{self, ConfigError, ConfigResult};
use crate::models::embeddings::{timestep_sinusoids, TimestepEmbedding};
use crate::models::layers::{Conv2d, GroupNorm, TchResult};
use crate::models::unet_2d_blocks::{
    BlockLayout, UNetBlockShape, UNetDownBlock, UNetMidBlock2DCrossAttn, UNetUpBlock,
};
use crate::weights::lora::SourceWeights;
use crate::weights::{Checked, WeightedModel, Weights};

/// What the UNet's output means, i.e. what the sampler must convert it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// The noise added (SD 1.x, SD 2.x "base" 512 models).
    Epsilon,
    /// `v = alpha_t * eps - sigma_t * x0` (Salimans & Ho 2022; SD 2.x 768 models).
    VPrediction,
}

impl PredictionType {
    /// diffusers' scheduler-config spelling (`"epsilon"`, `"v_prediction"`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "epsilon" => Some(Self::Epsilon),
            "v_prediction" => Some(Self::VPrediction),
            _ => None,
        }
    }
}

/// SDXL's added conditioning (diffusers `addition_embed_type: "text_time"`): each of the
/// size/crop ids goes through `time_ids_dim`-wide sinusoids (`add_time_proj`), the flattened
/// result is appended to the pooled text embedding, and `add_embedding` (linear, SiLU, linear)
/// maps the `input_dim`-wide vector onto the time embedding, to which it is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdditionEmbed {
    /// `addition_time_embed_dim` (256 for SDXL).
    pub time_ids_dim: i64,
    /// `projection_class_embeddings_input_dim`: pooled width + ids x `time_ids_dim` (2816
    /// for SDXL base: 1280 + 6 x 256; 2560 for the refiner: 1280 + 5 x 256).
    pub input_dim: i64,
}

/// A UNet configuration (the subset of diffusers' `UNet2DConditionModel` config that SD 1.x,
/// 2.x and SDXL use).
#[derive(Debug, Clone, PartialEq)]
pub struct UNetConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    pub block_out_channels: Vec<i64>,
    /// Per down block: does it cross-attend (`CrossAttnDownBlock2D`) or not (`DownBlock2D`)?
    /// The up blocks mirror it (`CrossAttnUpBlock2D` / `UpBlock2D` in reverse order).
    pub cross_attention_blocks: Vec<bool>,
    pub layers_per_block: usize,
    /// Attention heads per down block (reversed for the up blocks; the last one for the mid
    /// block). diffusers' config calls this `attention_head_dim`, a historic misnomer: for
    /// SD it is the number of heads (`num_attention_heads` overrides it when set).
    pub num_attention_heads: Vec<i64>,
    pub cross_attention_dim: i64,
    /// Transformer layers per down block (reversed for the up blocks; the last one for the mid
    /// block, as diffusers does): 1 each for SD 1.x/2.x, [1, 2, 10] for SDXL base.
    pub transformer_layers_per_block: Vec<usize>,
    pub norm_num_groups: i64,
    pub norm_eps: f64,
    pub use_linear_projection: bool,
    /// Read from configs for completeness; like diffusers' SDPA attention path, the model
    /// does not act on it (fused attention kernels keep the softmax in fp32).
    pub upcast_attention: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    /// The latent size the model was trained at (64 for 512-pixel images).
    pub sample_size: i64,
    pub prediction_type: PredictionType,
    /// SDXL's pooled-text and size/crop conditioning; `None` for SD 1.x/2.x.
    pub addition_embed: Option<AdditionEmbed>,
}

impl UNetConfig {
    /// Stable Diffusion 1.x (`runwayml/stable-diffusion-v1-5`).
    pub fn sd15() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            cross_attention_blocks: vec![true, true, true, false],
            layers_per_block: 2,
            num_attention_heads: vec![8; 4],
            cross_attention_dim: 768,
            transformer_layers_per_block: vec![1; 4],
            norm_num_groups: 32,
            norm_eps: 1e-5,
            use_linear_projection: false,
            upcast_attention: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            sample_size: 64,
            prediction_type: PredictionType::Epsilon,
            addition_embed: None,
        }
    }

    /// Stable Diffusion 2.1 768-v (`stabilityai/stable-diffusion-2-1`): 64-dim heads, linear
    /// transformer projections, OpenCLIP-H context, v-prediction. For the 512 "base" models
    /// set `sample_size = 64` and `prediction_type = Epsilon`.
    pub fn sd21() -> Self {
        Self {
            num_attention_heads: vec![5, 10, 20, 20],
            cross_attention_dim: 1024,
            use_linear_projection: true,
            upcast_attention: true,
            sample_size: 96,
            prediction_type: PredictionType::VPrediction,
            ..Self::sd15()
        }
    }

    /// Stable Diffusion 2.x 512 "base" models (`stabilityai/stable-diffusion-2-1-base`):
    /// the 2.1 architecture, epsilon prediction.
    pub fn sd21_base() -> Self {
        Self {
            sample_size: 64,
            prediction_type: PredictionType::Epsilon,
            ..Self::sd21()
        }
    }

    /// SDXL base 1.0 (`stabilityai/stable-diffusion-xl-base-1.0`): 3 levels, no attention in
    /// the first, [1, 2, 10] transformer layers, 64-dim heads, linear projections, a 2048-wide
    /// context (CLIP-L ++ bigG) and the text_time added conditioning.
    pub fn sdxl_base() -> Self {
        Self {
            block_out_channels: vec![320, 640, 1280],
            cross_attention_blocks: vec![false, true, true],
            num_attention_heads: vec![5, 10, 20],
            cross_attention_dim: 2048,
            transformer_layers_per_block: vec![1, 2, 10],
            use_linear_projection: true,
            sample_size: 128,
            addition_embed: Some(AdditionEmbed {
                time_ids_dim: 256,
                input_dim: 2816,
            }),
            ..Self::sd15()
        }
    }

    /// SDXL refiner 1.0 (ComfyUI's `supported_models.SDXLRefiner` and the refiner entry of its
    /// `model_detection.py`, read at 618b803d): model_channels 384, channel_mult [1, 2, 4, 4],
    /// transformer depth [0, 4, 4, 0] with 4 in the middle block, 64-dim heads, a 1280-wide
    /// context (bigG alone) and 2560 added inputs (1280 pooled + 5 ids x 256).
    pub fn sdxl_refiner() -> Self {
        Self {
            block_out_channels: vec![384, 768, 1536, 1536],
            cross_attention_blocks: vec![false, true, true, false],
            num_attention_heads: vec![6, 12, 24, 24],
            cross_attention_dim: 1280,
            // The blocks without attention ignore their count; the middle block takes the last.
            transformer_layers_per_block: vec![4; 4],
            use_linear_projection: true,
            sample_size: 128,
            addition_embed: Some(AdditionEmbed {
                time_ids_dim: 256,
                input_dim: 2560,
            }),
            ..Self::sd15()
        }
    }

    /// A tiny SD1-like config for tests and CPU benchmarks (matches the parity fixtures).
    pub fn tiny_sd1() -> Self {
        Self {
            block_out_channels: vec![16, 32],
            cross_attention_blocks: vec![true, false],
            layers_per_block: 1,
            num_attention_heads: vec![4, 4],
            cross_attention_dim: 16,
            transformer_layers_per_block: vec![1; 2],
            norm_num_groups: 8,
            sample_size: 16,
            ..Self::sd15()
        }
    }

    /// A tiny SD2-like config (linear projections, heads per block) matching the fixtures.
    pub fn tiny_sd2() -> Self {
        Self {
            block_out_channels: vec![8, 16, 16],
            cross_attention_blocks: vec![true, true, false],
            layers_per_block: 2,
            num_attention_heads: vec![2, 4, 4],
            cross_attention_dim: 12,
            transformer_layers_per_block: vec![1; 3],
            norm_num_groups: 4,
            use_linear_projection: true,
            upcast_attention: true,
            sample_size: 16,
            prediction_type: PredictionType::VPrediction,
            ..Self::sd15()
        }
    }

    /// Reads a diffusers `unet/config.json`. `prediction_type` is not part of it (it lives in
    /// `scheduler/scheduler_config.json`); it is left at epsilon for the caller to set.
    pub fn from_diffusers_json(json: &Value) -> ConfigResult<Self> {
        let block_out_channels = config_json::block_out_channels(json)?;
        let n = block_out_channels.len();
        let cross_attention_blocks = cross_attention_blocks(json, n)?;
        check_mid_block(json)?;
        let num_attention_heads = heads_per_block(json, n)?;
        let transformer_layers_per_block = transformer_layers(json, n)?;
        let addition_embed = addition_embed(json)?;
        refuse_unsupported(json)?;
        let int = |k: &str| json.get(k).and_then(Value::as_i64);
        let float = |k: &str| json.get(k).and_then(Value::as_f64);
        let boolean = |k: &str| json.get(k).and_then(Value::as_bool);
        Ok(Self {
            in_channels: int("in_channels").unwrap_or(4),
            out_channels: int("out_channels").unwrap_or(4),
            block_out_channels,
            cross_attention_blocks,
            layers_per_block: int("layers_per_block").unwrap_or(2) as usize,
            num_attention_heads,
            cross_attention_dim: int("cross_attention_dim").ok_or(ConfigError::Missing {
                key: "cross_attention_dim",
            })?,
            transformer_layers_per_block,
            norm_num_groups: int("norm_num_groups").unwrap_or(32),
            norm_eps: float("norm_eps").unwrap_or(1e-5),
            use_linear_projection: boolean("use_linear_projection").unwrap_or(false),
            upcast_attention: boolean("upcast_attention").unwrap_or(false),
            flip_sin_to_cos: boolean("flip_sin_to_cos").unwrap_or(true),
            freq_shift: float("freq_shift").unwrap_or(0.0),
            sample_size: int("sample_size").unwrap_or(Self::sd15().sample_size),
            prediction_type: PredictionType::Epsilon,
            addition_embed,
        })
    }

    fn time_embed_dim(&self) -> i64 {
        self.block_out_channels[0] * 4
    }

    fn check(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        let bad = |m: String| Err(ModelError::Other(format!("invalid UNet config: {m}")));
        if n == 0
            || self.cross_attention_blocks.len() != n
            || self.num_attention_heads.len() != n
            || self.transformer_layers_per_block.len() != n
        {
            return bad(format!(
                "{} block_out_channels, {} cross_attention_blocks, {} head counts, {} transformer layer counts",
                n,
                self.cross_attention_blocks.len(),
                self.num_attention_heads.len(),
                self.transformer_layers_per_block.len()
            ));
        }
        if let Some(add) = self.addition_embed {
            if add.time_ids_dim <= 0 || add.input_dim <= add.time_ids_dim {
                return bad(format!("addition embedding {add:?}"));
            }
        }
        for (&c, &h) in self
            .block_out_channels
            .iter()
            .zip(&self.num_attention_heads)
        {
            if h <= 0 || c % h != 0 || c % self.norm_num_groups != 0 {
                return bad(format!(
                    "{c} channels do not split into {h} heads / {} groups",
                    self.norm_num_groups
                ));
            }
        }
        if self.layers_per_block == 0 {
            return bad("layers_per_block is 0".into());
        }
        Ok(())
    }
}

/// Which blocks cross-attend, from `down_block_types` (one per block); `up_block_types`, if
/// given, must mirror them.
fn cross_attention_blocks(json: &Value, n: usize) -> ConfigResult<Vec<bool>> {
    let names = |key: &'static str| -> Option<Vec<&str>> {
        let list = json.get(key)?.as_array()?;
        Some(
            list.iter()
                .map(|v| v.as_str().unwrap_or_default())
                .collect(),
        )
    };
    let down = names("down_block_types").ok_or(ConfigError::Missing {
        key: "down_block_types",
    })?;
    if down.len() != n {
        return Err(ConfigError::Invalid {
            key: "down_block_types",
            message: format!("{} of them for {n} block_out_channels", down.len()),
        });
    }
    let cross = down
        .iter()
        .map(|t| match *t {
            "CrossAttnDownBlock2D" => Ok(true),
            "DownBlock2D" => Ok(false),
            other => Err(config_json::unsupported(
                "down_block_types",
                &json!(other),
                None,
            )),
        })
        .collect::<ConfigResult<Vec<bool>>>()?;
    if let Some(found) = names("up_block_types") {
        let expected: Vec<&str> = cross
            .iter()
            .rev()
            .map(|&c| if c { "CrossAttnUpBlock2D" } else { "UpBlock2D" })
            .collect();
        if found != expected {
            return Err(ConfigError::Invalid {
                key: "up_block_types",
                message: format!("{found:?} do not mirror the down blocks (expected {expected:?})"),
            });
        }
    }
    Ok(cross)
}

fn check_mid_block(json: &Value) -> ConfigResult<()> {
    match json.get("mid_block_type") {
        Some(mid) if mid.as_str() != Some("UNetMidBlock2DCrossAttn") => {
            Err(config_json::unsupported(
                "mid_block_type",
                mid,
                Some(&json!("UNetMidBlock2DCrossAttn")),
            ))
        }
        _ => Ok(()),
    }
}

/// Attention heads per block: `num_attention_heads`, else (diffusers' historical misnomer)
/// `attention_head_dim`, else 8; one number for all blocks or one per block.
fn heads_per_block(json: &Value, n: usize) -> ConfigResult<Vec<i64>> {
    let (key, value) = match json.get("num_attention_heads") {
        Some(v) if !v.is_null() => ("num_attention_heads", v.clone()),
        _ => (
            "attention_head_dim",
            json.get("attention_head_dim").cloned().unwrap_or(json!(8)),
        ),
    };
    let invalid = || ConfigError::Invalid {
        key,
        message: format!("expected an integer or {n} integers"),
    };
    match value {
        Value::Number(x) => Ok(vec![x.as_i64().ok_or_else(invalid)?; n]),
        Value::Array(a) if a.len() == n => {
            a.iter().map(|x| x.as_i64().ok_or_else(invalid)).collect()
        }
        _ => Err(invalid()),
    }
}

/// `transformer_layers_per_block`: one number for all blocks or one per block (SDXL).
fn transformer_layers(json: &Value, n: usize) -> ConfigResult<Vec<usize>> {
    let key = "transformer_layers_per_block";
    let invalid = |v: &Value| ConfigError::Unsupported {
        key,
        found: v.to_string(),
        expected: Some(format!("a positive integer or {n} of them")),
    };
    let count = |v: &Value| v.as_u64().filter(|&x| x > 0).map(|x| x as usize);
    match json.get(key) {
        None | Some(Value::Null) => Ok(vec![1; n]),
        Some(v @ Value::Number(_)) => Ok(vec![count(v).ok_or_else(|| invalid(v))?; n]),
        Some(v @ Value::Array(a)) if a.len() == n => a
            .iter()
            .map(|x| count(x).ok_or_else(|| invalid(v)))
            .collect(),
        Some(v) => Err(invalid(v)),
    }
}

/// SDXL's `addition_embed_type: "text_time"` with its two widths; other added embeddings
/// (Kandinsky's "text", "image", ...) are refused.
fn addition_embed(json: &Value) -> ConfigResult<Option<AdditionEmbed>> {
    match json.get("addition_embed_type") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "text_time" => {
            let width = |key: &'static str| {
                json.get(key)
                    .and_then(Value::as_i64)
                    .filter(|&x| x > 0)
                    .ok_or(ConfigError::Missing { key })
            };
            Ok(Some(AdditionEmbed {
                time_ids_dim: width("addition_time_embed_dim")?,
                input_dim: width("projection_class_embeddings_input_dim")?,
            }))
        }
        Some(other) => Err(config_json::unsupported(
            "addition_embed_type",
            other,
            Some(&json!("text_time")),
        )),
    }
}

/// Refuses keys only other architectures set, and options this implementation does not
/// vary: present with another value, the model would silently compute something else.
fn refuse_unsupported(json: &Value) -> ConfigResult<()> {
    config_json::refuse_set(
        json,
        &[
            "class_embed_type",
            "encoder_hid_dim",
            "num_class_embeds",
            "time_cond_proj_dim",
            "time_embedding_dim",
            "timestep_post_act",
            "time_embedding_act_fn",
            "cross_attention_norm",
            "encoder_hid_dim_type",
        ],
        "UNet",
    )?;
    config_json::require_values(
        json,
        &[
            ("act_fn", json!("silu")),
            ("center_input_sample", json!(false)),
            ("downsample_padding", json!(1)),
            ("mid_block_scale_factor", json!(1)),
            ("dual_cross_attention", json!(false)),
            ("resnet_time_scale_shift", json!("default")),
            ("time_embedding_type", json!("positional")),
            ("conv_in_kernel", json!(3)),
            ("conv_out_kernel", json!(3)),
            ("attention_type", json!("default")),
        ],
    )?;
    match json.get("only_cross_attention") {
        None | Some(Value::Bool(false)) => Ok(()),
        Some(Value::Array(a)) if a.iter().all(|v| v == &json!(false)) => Ok(()),
        Some(v) => Err(config_json::unsupported(
            "only_cross_attention",
            v,
            Some(&json!(false)),
        )),
    }
}

/// Stable Diffusion's conditional UNet.
pub struct UNet2DConditionModel {
    config: UNetConfig,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    add_embedding: Option<TimestepEmbedding>,
    down_blocks: Vec<UNetDownBlock>,
    mid_block: UNetMidBlock2DCrossAttn,
    up_blocks: Vec<UNetUpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    /// The kind it computes in (inputs are cast to it); the weights' own kind unless
    /// [`Self::set_compute_kind`] widened it.
    kind: Kind,
    /// The kind its weights are kept in.
    weight_kind: Kind,
    /// The weights it was built from and the LoRAs on them (shared storage).
    source: SourceWeights,
}

impl WeightedModel for UNet2DConditionModel {
    type Config = UNetConfig;
    const NAME: &'static str = "UNet2DConditionModel";

    fn build(w: &Weights, prefix: &str, config: UNetConfig, _: Checked) -> Result<Self> {
        config.check()?;
        let p = |n: &str| crate::models::layers::join(prefix, n);
        let boc = &config.block_out_channels;
        let n = boc.len();
        let shape = UNetBlockShape {
            groups: config.norm_num_groups,
            eps: config.norm_eps,
            temb_channels: config.time_embed_dim(),
            context_dim: config.cross_attention_dim,
            transformer_layers: 1,
            use_linear_projection: config.use_linear_projection,
        };
        let shape_of = |i: usize| UNetBlockShape {
            transformer_layers: config.transformer_layers_per_block[i],
            ..shape
        };
        let heads_of =
            |i: usize| config.cross_attention_blocks[i].then_some(config.num_attention_heads[i]);

        let conv_in = Conv2d::new(w, &p("conv_in"), config.in_channels, boc[0], 3, 1, 1);
        let time_embedding =
            TimestepEmbedding::new(w, &p("time_embedding"), boc[0], config.time_embed_dim());
        let add_embedding = config.addition_embed.map(|add| {
            TimestepEmbedding::new(
                w,
                &p("add_embedding"),
                add.input_dim,
                config.time_embed_dim(),
            )
        });
        let down_blocks = (0..n)
            .map(|i| {
                let layout = BlockLayout {
                    in_channels: if i == 0 { boc[0] } else { boc[i - 1] },
                    out_channels: boc[i],
                    layers: config.layers_per_block,
                    resample: i + 1 < n,
                };
                let name = p(&format!("down_blocks.{i}"));
                UNetDownBlock::new(w, &name, layout, heads_of(i), &shape_of(i))
            })
            .collect();
        let mid_block = UNetMidBlock2DCrossAttn::new(
            w,
            &p("mid_block"),
            boc[n - 1],
            config.num_attention_heads[n - 1],
            &shape_of(n - 1),
        );
        let up_blocks = (0..n)
            .map(|i| {
                let block = n - 1 - i; // the down block this up block mirrors
                let layout = BlockLayout {
                    in_channels: if i == 0 { boc[n - 1] } else { boc[block + 1] },
                    out_channels: boc[block],
                    layers: config.layers_per_block + 1,
                    resample: i + 1 < n,
                };
                let skip_in = boc[block.saturating_sub(1)];
                let name = p(&format!("up_blocks.{i}"));
                UNetUpBlock::new(w, &name, layout, skip_in, heads_of(block), &shape_of(block))
            })
            .collect();
        let conv_norm_out = GroupNorm::new(
            w,
            &p("conv_norm_out"),
            config.norm_num_groups,
            boc[0],
            config.norm_eps,
        );
        let conv_out = Conv2d::new(w, &p("conv_out"), boc[0], config.out_channels, 3, 1, 1);
        let kind = w
            .get_optional(&p("conv_in.weight"))
            .map(|t| t.kind())
            .unwrap_or(Kind::Float);
        Ok(Self {
            config,
            conv_in,
            time_embedding,
            add_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            kind,
            weight_kind: kind,
            source: SourceWeights::new(w.tensors_under(prefix)),
        })
    }
}

impl UNet2DConditionModel {
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The dtype it computes in; inputs are cast to it and the output has it.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The dtype its weights are kept in (narrower than [`Self::kind`] for a UNet stored in
    /// fp16 and computed in fp32).
    pub fn weight_kind(&self) -> Kind {
        self.weight_kind
    }

    /// Computes in `kind` while the weights stay as stored: each layer widens its weights for
    /// the call only (LoadCheckpoint's `fp16-storage`: fp16 weights, fp32 activations, the
    /// values of a model loaded in fp32 from the same fp16 file, in half the resident memory).
    pub fn set_compute_kind(&mut self, kind: Kind) {
        self.kind = kind;
    }

    /// The weights it was built from, as loaded, and the LoRA patches on them.
    pub fn source(&self) -> &SourceWeights {
        &self.source
    }

    /// Records what a LoRA-patched model was built from (its base weights and patches).
    pub fn set_source(&mut self, source: SourceWeights) {
        self.source = source;
    }

    /// Predicts noise (or v, per `config().prediction_type`) for `sample` `[B, in, H, W]` at
    /// `timestep` (a scalar or `[B]` tensor) given `encoder_hidden_states` `[B, T, D]` (or
    /// `[1, T, D]`, broadcast). Any H, W >= 1 work; multiples of 2^(blocks-1) avoid rounding.
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        self.forward_with_memo(sample, timestep, encoder_hidden_states, None)
    }

    /// [`Self::forward`] remembering the context's cross-attention keys and values in `memo`
    /// (see [`KeyValueMemo`]): a sampler calls this at every step with the same context tensor
    /// and computes them once. The result equals `forward`'s exactly.
    pub fn forward_with_memo(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        memo: Option<&KeyValueMemo>,
    ) -> Result<Tensor> {
        self.forward_with_added(sample, timestep, encoder_hidden_states, None, memo)
    }

    /// [`Self::forward_with_memo`] with SDXL's added conditioning `added` `[B or 1,
    /// input_dim]` (see [`Self::added_conditioning`]); required when the config has an
    /// [`AdditionEmbed`], refused otherwise.
    pub fn forward_with_added(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        added: Option<&Tensor>,
        memo: Option<&KeyValueMemo>,
    ) -> Result<Tensor> {
        let batch = self.check_inputs(sample, timestep, encoder_hidden_states)?;
        self.check_added(added, batch)?;
        tch::no_grad(|| {
            self.forward_unchecked(sample, timestep, encoder_hidden_states, added, memo, batch)
        })
        .context(|| {
            format!(
                "UNet2DConditionModel forward (sample {:?}, context {:?})",
                sample.size(),
                encoder_hidden_states.size()
            )
        })
    }

    /// diffusers' SDXL call: `added_cond_kwargs = {text_embeds, time_ids}` (pooled text
    /// `[B, P]`, size/crop ids `[B, k]`).
    pub fn forward_sdxl(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        text_embeds: &Tensor,
        time_ids: &Tensor,
    ) -> Result<Tensor> {
        let added = self.added_conditioning(text_embeds, time_ids)?;
        self.forward_with_added(sample, timestep, encoder_hidden_states, Some(&added), None)
    }

    /// The vector `add_embedding` takes (ComfyUI's `y`): the pooled text `[B, P]` followed by
    /// each of the ids `[B, k]` as `time_ids_dim` sinusoids (cos half first), fp32.
    pub fn added_conditioning(&self, pooled: &Tensor, time_ids: &Tensor) -> Result<Tensor> {
        let Some(add) = self.config.addition_embed else {
            return Err(ModelError::Other(
                "this UNet takes no added (pooled text / size) conditioning".into(),
            ));
        };
        let (p, ids) = (pooled.size(), time_ids.size());
        let fits = p.len() == 2
            && ids.len() == 2
            && p[0] == ids[0]
            && p[1] + ids[1] * add.time_ids_dim == add.input_dim;
        if !fits {
            return Err(ModelError::Shape {
                context: "UNet added conditioning".into(),
                message: format!(
                    "pooled {p:?} and ids {ids:?} do not make the {} values add_embedding takes \
                     (pooled width + ids x {})",
                    add.input_dim, add.time_ids_dim
                ),
            });
        }
        let c = &self.config;
        (|| {
            let sinusoids = timestep_sinusoids(
                &time_ids.f_reshape([-1])?,
                add.time_ids_dim,
                c.flip_sin_to_cos,
                c.freq_shift,
            )?
            .f_reshape([ids[0], -1])?;
            Tensor::f_cat(&[pooled.f_to_kind(Kind::Float)?, sinusoids], 1)
        })()
        .context(|| "UNet added conditioning".to_string())
    }

    fn check_added(&self, added: Option<&Tensor>, batch: i64) -> Result<()> {
        let err = |message: String| {
            Err(ModelError::Shape {
                context: "UNet2DConditionModel added conditioning".into(),
                message,
            })
        };
        match (self.config.addition_embed, added) {
            (None, None) => Ok(()),
            (None, Some(_)) => err(
                "this UNet (SD 1.x/2.x) takes no pooled text / size conditioning; \
                 the conditioning comes from another model family"
                    .into(),
            ),
            (Some(add), None) => err(format!(
                "this UNet (SDXL) needs the pooled text and size conditioning ({} values); \
                 encode the prompt with this checkpoint's text encoder",
                add.input_dim
            )),
            (Some(add), Some(y)) => {
                let s = y.size();
                if s.len() != 2 || (s[0] != batch && s[0] != 1) || s[1] != add.input_dim {
                    return err(format!("expected [{batch}, {}], got {s:?}", add.input_dim));
                }
                Ok(())
            }
        }
    }

    /// `forward` with a plain-number timestep.
    pub fn forward_t(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        let t = Tensor::from(timestep).to_device(sample.device());
        self.forward(sample, &t, encoder_hidden_states)
    }

    fn check_inputs(&self, sample: &Tensor, timestep: &Tensor, context: &Tensor) -> Result<i64> {
        let c = &self.config;
        let err = |message: String| {
            Err(ModelError::Shape {
                context: "UNet2DConditionModel input".into(),
                message,
            })
        };
        let s = sample.size();
        if s.len() != 4 || s[1] != c.in_channels || s[0] == 0 || s[2] == 0 || s[3] == 0 {
            return err(format!(
                "sample must be [B, {}, H, W] with B, H, W >= 1, got {s:?}",
                c.in_channels
            ));
        }
        let b = s[0];
        let t = timestep.size();
        let t_numel: i64 = t.iter().product();
        if t.len() > 1 || (t_numel != 1 && t_numel != b) {
            return err(format!("timestep must be a scalar or [{b}], got {t:?}"));
        }
        let e = context.size();
        if e.len() != 3 || (e[0] != b && e[0] != 1) || e[2] != c.cross_attention_dim || e[1] == 0 {
            return err(format!(
                "encoder_hidden_states must be [{b}, T, {}], got {e:?}",
                c.cross_attention_dim
            ));
        }
        if sample.device() != context.device() || sample.device() != self.conv_out.device() {
            return err(format!(
                "sample on {:?}, context on {:?}, model on {:?}",
                sample.device(),
                context.device(),
                self.conv_out.device()
            ));
        }
        Ok(b)
    }

    fn forward_unchecked(
        &self,
        sample: &Tensor,
        timestep: &Tensor,
        context: &Tensor,
        added: Option<&Tensor>,
        memo: Option<&KeyValueMemo>,
        batch: i64,
    ) -> TchResult<Tensor> {
        let c = &self.config;
        give_back_free_pages_before_large_step(sample);
        let sample = sample.f_to_kind(self.kind)?;
        let prepare = || {
            let mut context = context.f_to_kind(self.kind)?;
            if context.size()[0] != batch {
                context = context.f_expand([batch, -1, -1], false)?;
            }
            Ok(vec![context])
        };
        // The converted context is remembered too: a fresh conversion at each step would be a
        // new tensor, which the attention layers' memo could not recognise.
        let context = match memo {
            Some(memo) => {
                let remembered = memo.remember(self as *const Self as usize, context, prepare)?;
                // Prepared for another batch size: the same context with a different sample.
                match remembered.into_iter().next() {
                    Some(c) if c.size()[0] == batch => c,
                    _ => prepare()?.remove(0),
                }
            }
            None => prepare()?.remove(0),
        };
        let context = CrossContext {
            tokens: &context,
            memo,
        };
        let timesteps = timestep
            .f_reshape([-1])?
            .f_to_device(sample.device())?
            .f_expand([batch], false)?;
        let t_emb = timestep_sinusoids(
            &timesteps,
            c.block_out_channels[0],
            c.flip_sin_to_cos,
            c.freq_shift,
        )?
        .f_to_kind(self.kind)?;
        let mut temb = self.time_embedding.forward(&t_emb)?;
        if let (Some(add_embedding), Some(added)) = (&self.add_embedding, added) {
            let mut added = added.f_to_device(sample.device())?.f_to_kind(self.kind)?;
            if added.size()[0] != batch {
                added = added.f_expand([batch, -1], false)?;
            }
            temb = temb.f_add(&add_embedding.forward(&added)?)?;
        }

        let mut h = self.conv_in.forward(&sample)?;
        let mut skips = vec![h.shallow_clone()];
        for block in &self.down_blocks {
            let (out, block_skips) = block.forward(&h, &temb, context)?;
            h = out;
            skips.extend(block_skips);
        }
        h = self.mid_block.forward(&h, &temb, context)?;
        for block in &self.up_blocks {
            let remaining = skips.len().saturating_sub(block.num_layers());
            let upsample_size = remaining.checked_sub(1).map(|i| {
                let s = skips[i].size();
                [s[2], s[3]]
            });
            h = block.forward(&h, &mut skips, &temb, context, upsample_size)?;
        }
        let h = self.conv_norm_out.forward(&h)?.f_silu()?;
        self.conv_out.forward(&h)
    }
}

/// Latent positions (batch x height x width) from which a CPU forward starts by giving the
/// heap's free pages back to the kernel: 2 x 64 x 64 is a 512x512 SDXL or SD1.5 step with its
/// negative prompt.
const TRIM_BEFORE_STEP_MIN_POSITIONS: i64 = 8192;

/// weft keeps freed buffers in the heap (`weft_engine::host_memory`), so the pages a step
/// touched stay resident; the next step's buffers land partly in other holes, and across a
/// sampler run the resident set creeps by the union of them all (a 512x512 SDXL run: +0.6 GiB
/// over two steps, measured 2026-12-06). Returned before each large step, the resident set
/// holds one step's pages, and the refaults did not show against such a step (512x512 SDXL
/// steps of 17.8-18.0 s with it, 18.5-20.2 s in runs before it). Small steps skip it: their
/// pages are few and the step short.
fn give_back_free_pages_before_large_step(sample: &Tensor) {
    if sample.device() != tch::Device::Cpu || sample.dim() != 4 {
        return;
    }
    let s = sample.size();
    if s[0] * s[2] * s[3] >= TRIM_BEFORE_STEP_MIN_POSITIONS {
        weft_engine::host_memory::release_free_memory();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOWN: &str = r#"["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]"#;
    const UP: &str =
        r#"["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]"#;

    /// `runwayml/stable-diffusion-v1-5` `unet/config.json`.
    fn sd15_json() -> Value {
        serde_json::from_str(&format!(
            r#"{{"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0",
            "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
            "center_input_sample": false, "cross_attention_dim": 768, "down_block_types": {DOWN},
            "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
            "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
            "norm_num_groups": 32, "out_channels": 4, "sample_size": 64, "up_block_types": {UP}}}"#
        ))
        .unwrap()
    }

    /// `stabilityai/stable-diffusion-2-1` `unet/config.json`.
    fn sd21_json() -> Value {
        serde_json::from_str(&format!(
            r#"{{"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.10.0.dev0",
            "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20],
            "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
            "cross_attention_dim": 1024, "down_block_types": {DOWN}, "downsample_padding": 1,
            "dual_cross_attention": false, "flip_sin_to_cos": true, "freq_shift": 0,
            "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1,
            "norm_eps": 1e-05, "norm_num_groups": 32, "num_class_embeds": null,
            "only_cross_attention": false, "out_channels": 4, "sample_size": 96,
            "up_block_types": {UP}, "use_linear_projection": true, "upcast_attention": true}}"#
        ))
        .unwrap()
    }

    #[test]
    fn real_sd_configs_parse_to_the_presets() {
        assert_eq!(
            UNetConfig::from_diffusers_json(&sd15_json()),
            Ok(UNetConfig::sd15())
        );
        let mut sd21 = UNetConfig::from_diffusers_json(&sd21_json()).unwrap();
        assert_eq!(sd21.prediction_type, PredictionType::Epsilon); // scheduler config's job
        sd21.prediction_type = PredictionType::VPrediction;
        assert_eq!(sd21, UNetConfig::sd21());
    }

    /// `stabilityai/stable-diffusion-xl-base-1.0` `unet/config.json`.
    fn sdxl_base_json() -> Value {
        serde_json::from_str(
            r#"{"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.19.0.dev0",
            "act_fn": "silu", "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
            "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
            "block_out_channels": [320, 640, 1280], "center_input_sample": false,
            "class_embed_type": null, "class_embeddings_concat": false, "conv_in_kernel": 3,
            "conv_out_kernel": 3, "cross_attention_dim": 2048, "cross_attention_norm": null,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "downsample_padding": 1, "dual_cross_attention": false, "encoder_hid_dim": null,
            "encoder_hid_dim_type": null, "flip_sin_to_cos": true, "freq_shift": 0,
            "in_channels": 4, "layers_per_block": 2, "mid_block_only_cross_attention": null,
            "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn",
            "norm_eps": 1e-05, "norm_num_groups": 32, "num_attention_heads": null,
            "num_class_embeds": null, "only_cross_attention": false, "out_channels": 4,
            "projection_class_embeddings_input_dim": 2816, "resnet_out_scale_factor": 1.0,
            "resnet_skip_time_act": false, "resnet_time_scale_shift": "default",
            "sample_size": 128, "time_cond_proj_dim": null, "time_embedding_act_fn": null,
            "time_embedding_dim": null, "time_embedding_type": "positional",
            "timestep_post_act": null, "transformer_layers_per_block": [1, 2, 10],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "upcast_attention": null, "use_linear_projection": true}"#,
        )
        .unwrap()
    }

    #[test]
    fn sdxl_base_config_parses_to_the_preset() {
        assert_eq!(
            UNetConfig::from_diffusers_json(&sdxl_base_json()),
            Ok(UNetConfig::sdxl_base())
        );
        let mut j = sdxl_base_json();
        j.as_object_mut()
            .unwrap()
            .remove("projection_class_embeddings_input_dim");
        assert_eq!(
            UNetConfig::from_diffusers_json(&j),
            Err(ConfigError::Missing {
                key: "projection_class_embeddings_input_dim"
            })
        );
    }

    /// The refiner preset against ComfyUI's description of the same model (`model_detection.py`
    /// at 618b803d: model_channels 384, channel_mult [1, 2, 4, 4], transformer_depth
    /// [0, 0, 4, 4, 4, 4, 0, 0], transformer_depth_middle 4, num_head_channels 64, context_dim
    /// 1280, adm_in_channels 2560).
    #[test]
    fn sdxl_refiner_preset_is_comfyuis_refiner() {
        let c = UNetConfig::sdxl_refiner();
        let mult = [1, 2, 4, 4];
        assert_eq!(
            c.block_out_channels,
            mult.map(|m| 384 * m).to_vec(),
            "channels"
        );
        let depth = [0, 0, 4, 4, 4, 4, 0, 0];
        for (level, attends) in c.cross_attention_blocks.iter().enumerate() {
            let comfy = depth[2 * level];
            assert_eq!(*attends, comfy > 0, "level {level}");
            if comfy > 0 {
                assert_eq!(c.transformer_layers_per_block[level], comfy);
            }
        }
        assert_eq!(c.transformer_layers_per_block.last(), Some(&4), "middle");
        for (heads, channels) in c.num_attention_heads.iter().zip(&c.block_out_channels) {
            assert_eq!(heads * 64, *channels);
        }
        assert_eq!(c.cross_attention_dim, 1280);
        assert_eq!(c.addition_embed.map(|a| a.input_dim), Some(1280 + 5 * 256));
        assert!(c.check().is_ok(), "{:?}", c.check().err());
    }

    #[test]
    fn configs_this_model_cannot_honour_are_refused() {
        for (key, value) in [
            ("act_fn", json!("gelu")),
            ("resnet_time_scale_shift", json!("scale_shift")),
            ("class_embed_type", json!("timestep")),
            ("addition_embed_type", json!("text_image")),
            ("transformer_layers_per_block", json!([1, 2])),
            ("only_cross_attention", json!(true)),
            ("mid_block_type", json!("UNetMidBlock2DSimpleCrossAttn")),
        ] {
            let mut j = sd15_json();
            j[key] = value;
            let e = UNetConfig::from_diffusers_json(&j).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        let mut j = sd15_json();
        j["up_block_types"] = json!([
            "UpBlock2D",
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D"
        ]);
        assert!(matches!(
            UNetConfig::from_diffusers_json(&j),
            Err(ConfigError::Invalid {
                key: "up_block_types",
                ..
            })
        ));
        let mut j = sd15_json();
        j.as_object_mut().unwrap().remove("cross_attention_dim");
        assert_eq!(
            UNetConfig::from_diffusers_json(&j),
            Err(ConfigError::Missing {
                key: "cross_attention_dim"
            })
        );
    }
}
