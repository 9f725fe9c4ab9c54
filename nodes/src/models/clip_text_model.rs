//! CLIP text transformer (Radford et al. 2021) mirroring transformers' `CLIPTextModel`:
//! token + learned position embeddings, pre-norm causal self-attention layers, final LayerNorm,
//! pooled output at the end-of-text token. Tensor names as in diffusers' `text_encoder`
//! (`text_model.embeddings.token_embedding.weight`, ...). Presets: SD 1.x (OpenAI ViT-L/14),
//! SD 2.x (OpenCLIP ViT-H/14 with its last layer dropped, as diffusers ships it) and SDXL's
//! OpenCLIP ViT-bigG/14, which [`ClipTextModelWithProjection`] wraps with its text projection.
use serde_json::Value;
use tch::{Kind, Tensor};

use crate::error::{ConfigError, ModelError, Result, TchContext};
use crate::weights::lora::SourceWeights;
use crate::weights::{Checked, WeightedModel, Weights};

use super::layers::{embedding_table, join, LayerNorm, Linear};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`: OpenAI CLIP (SD 1.x).
    QuickGelu,
    /// Exact (erf) GELU: OpenCLIP (SD 2.x), BERT.
    Gelu,
}

impl Activation {
    pub(crate) fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::QuickGelu => x
                .f_mul_scalar(1.702)
                .and_then(|s| s.f_sigmoid())
                .and_then(|s| x.f_mul(&s))
                .context(|| "quick_gelu".to_string()),
            Activation::Gelu => x.f_gelu("none").context(|| "gelu".to_string()),
        }
    }
}

/// `CLIPTextConfig` fields the model uses.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: usize,
    pub num_attention_heads: i64,
    pub max_position_embeddings: i64,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    /// Where the pooled output is read. transformers keeps a legacy rule: configs with
    /// `eos_token_id == 2` (written before transformers PR #24773) pool at the argmax id.
    pub eos_token_id: i64,
}

impl ClipTextConfig {
    /// SD 1.x: OpenAI CLIP ViT-L/14 text tower (`openai/clip-vit-large-patch14`).
    pub fn clip_vit_l14() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }

    /// SD 2.x: OpenCLIP ViT-H/14 text tower as diffusers' `stabilityai/stable-diffusion-2-1`
    /// `text_encoder` holds it: 23 of the 24 layers (SD 2 conditions on the penultimate
    /// layer, so the last was dropped), GELU. Use with [`ClipLayer::Last`]; this equals
    /// ComfyUI's 24-layer model at layer -2 with the final LayerNorm applied.
    pub fn open_clip_vit_h14_sd2() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 23,
            num_attention_heads: 16,
            max_position_embeddings: 77,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }

    /// The full 24-layer OpenCLIP ViT-H/14 text tower (single-file SD 2.x checkpoints keep
    /// the last layer): use with `ClipLayer::Skip(1)` and `normalize_skipped = true` for SD 2.x.
    pub fn open_clip_vit_h14() -> Self {
        Self {
            num_hidden_layers: 24,
            ..Self::open_clip_vit_h14_sd2()
        }
    }

    /// SDXL's second text tower: OpenCLIP ViT-bigG/14 (32 layers, 1280 wide, GELU), as
    /// diffusers' `text_encoder_2` holds it. SDXL conditions on its penultimate layer
    /// (`ClipLayer::Skip(1)`, not normalised) and pools from its last.
    pub fn open_clip_vit_bigg14() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 1280,
            intermediate_size: 5120,
            num_hidden_layers: 32,
            num_attention_heads: 20,
            max_position_embeddings: 77,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }

    /// Reads a transformers `CLIPTextConfig` JSON; keys it leaves out take `defaults`' values.
    /// Refuses values the model cannot run (unknown activation, a width the heads do not
    /// divide, sizes below 1), naming the key.
    pub fn from_transformers_json(
        json: &Value,
        defaults: &ClipTextConfig,
    ) -> std::result::Result<Self, ConfigError> {
        let int = |key: &'static str, default: i64| -> std::result::Result<i64, ConfigError> {
            match json.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => match v.as_i64() {
                    // Token ids start at 0; sizes at 1.
                    Some(n) if n >= i64::from(key != "eos_token_id") => Ok(n),
                    _ => Err(ConfigError::Invalid {
                        key,
                        message: format!("expected a positive integer, found {v}"),
                    }),
                },
            }
        };
        let hidden_act = match json.get("hidden_act") {
            None | Some(Value::Null) => defaults.hidden_act,
            Some(v) => match v.as_str() {
                Some("quick_gelu") => Activation::QuickGelu,
                Some("gelu") => Activation::Gelu,
                _ => {
                    return Err(ConfigError::Unsupported {
                        key: "hidden_act",
                        found: v.to_string(),
                        expected: Some(r#""quick_gelu" or "gelu""#.into()),
                    })
                }
            },
        };
        let layer_norm_eps = match json.get("layer_norm_eps") {
            None | Some(Value::Null) => defaults.layer_norm_eps,
            Some(v) => v
                .as_f64()
                .filter(|e| *e > 0.0)
                .ok_or_else(|| ConfigError::Invalid {
                    key: "layer_norm_eps",
                    message: format!("expected a positive number, found {v}"),
                })?,
        };
        let config = Self {
            vocab_size: int("vocab_size", defaults.vocab_size)?,
            hidden_size: int("hidden_size", defaults.hidden_size)?,
            intermediate_size: int("intermediate_size", defaults.intermediate_size)?,
            num_hidden_layers: int("num_hidden_layers", defaults.num_hidden_layers as i64)?
                as usize,
            num_attention_heads: int("num_attention_heads", defaults.num_attention_heads)?,
            max_position_embeddings: int(
                "max_position_embeddings",
                defaults.max_position_embeddings,
            )?,
            hidden_act,
            layer_norm_eps,
            eos_token_id: int("eos_token_id", defaults.eos_token_id)?,
        };
        if config.hidden_size % config.num_attention_heads != 0 {
            return Err(ConfigError::Invalid {
                key: "num_attention_heads",
                message: format!(
                    "{} heads do not divide hidden_size {}",
                    config.num_attention_heads, config.hidden_size
                ),
            });
        }
        Ok(config)
    }

    /// A tiny config (about 50k parameters) for tests; the parity fixtures use it.
    pub fn tiny() -> Self {
        Self {
            vocab_size: 1000,
            hidden_size: 32,
            intermediate_size: 37,
            num_hidden_layers: 3,
            num_attention_heads: 4,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 999,
        }
    }
}

/// Which hidden state the encoder hands to the UNet ("CLIP skip").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipLayer {
    /// `last_hidden_state` (after the final LayerNorm): SD 1.x default.
    Last,
    /// Output of the last-but-`n` layer: `Skip(1)` is the penultimate layer (ComfyUI
    /// `CLIPSetLastLayer -2`, A1111 "clip skip 2").
    Skip(usize),
}

/// What [`ClipTextModel::forward_with`] returns.
pub struct ClipTextOutput {
    /// `[batch, seq, hidden]`, the layer asked for.
    pub hidden_state: Tensor,
    /// `[batch, hidden]`: final-LayerNorm output at the end-of-text token (always from the
    /// last layer, as transformers and ComfyUI compute it).
    pub pooled: Tensor,
}

struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: i64,
    activation: Activation,
    /// The layer's weight prefix, the context of its errors.
    name: String,
}

impl EncoderLayer {
    fn new(weights: &Weights, prefix: &str, config: &ClipTextConfig) -> Self {
        let d = config.hidden_size;
        let attn = join(prefix, "self_attn");
        let eps = config.layer_norm_eps;
        Self {
            layer_norm1: LayerNorm::new(weights, &join(prefix, "layer_norm1"), d, eps),
            q_proj: Linear::new(weights, &join(&attn, "q_proj"), d, d, true),
            k_proj: Linear::new(weights, &join(&attn, "k_proj"), d, d, true),
            v_proj: Linear::new(weights, &join(&attn, "v_proj"), d, d, true),
            out_proj: Linear::new(weights, &join(&attn, "out_proj"), d, d, true),
            layer_norm2: LayerNorm::new(weights, &join(prefix, "layer_norm2"), d, eps),
            fc1: Linear::new(
                weights,
                &join(prefix, "mlp.fc1"),
                d,
                config.intermediate_size,
                true,
            ),
            fc2: Linear::new(
                weights,
                &join(prefix, "mlp.fc2"),
                config.intermediate_size,
                d,
                true,
            ),
            heads: config.num_attention_heads,
            activation: config.hidden_act,
            name: prefix.to_string(),
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let ctx = || self.name.clone();
        let h = self.layer_norm1.forward(x).context(ctx)?;
        let attended = attention(
            &self.q_proj.forward(&h).context(ctx)?,
            &self.k_proj.forward(&h).context(ctx)?,
            &self.v_proj.forward(&h).context(ctx)?,
            self.heads,
            AttentionMask::Causal,
        )?;
        let x = self
            .out_proj
            .forward(&attended)
            .and_then(|a| x.f_add(&a))
            .context(|| format!("{}: attention residual", self.name))?;
        let h = self.layer_norm2.forward(&x).context(ctx)?;
        let h = self.activation.apply(&self.fc1.forward(&h).context(ctx)?)?;
        self.fc2
            .forward(&h)
            .and_then(|h| x.f_add(&h))
            .context(|| format!("{}: mlp residual", self.name))
    }
}

/// Token ids `[batch, seq]` as int64 on `device`, checked against the model's `(vocabulary
/// size, position count)`: a sequence length in 1..=positions and every id in the vocabulary.
/// `what` names the input in errors.
pub(crate) fn checked_ids(
    ids: &Tensor,
    device: tch::Device,
    (vocab_size, max_positions): (i64, i64),
    what: &str,
) -> Result<Tensor> {
    let ctx = || what.to_string();
    let seq = ids.size()[1];
    if seq == 0 || seq > max_positions {
        return Err(ModelError::Shape {
            context: ctx(),
            message: format!("sequence length {seq} is not in 1..={max_positions}"),
        });
    }
    let ids = ids
        .f_to_kind(Kind::Int64)
        .and_then(|t| t.f_to_device(device))
        .context(ctx)?;
    let (min, max) = (
        ids.f_min().context(ctx)?.int64_value(&[]),
        ids.f_max().context(ctx)?.int64_value(&[]),
    );
    if min < 0 || max >= vocab_size {
        return Err(ModelError::Shape {
            context: ctx(),
            message: format!(
                "token id range {min}..={max} is outside the vocabulary (0..{vocab_size})"
            ),
        });
    }
    Ok(ids)
}

pub(crate) enum AttentionMask<'a> {
    /// Each position sees itself and earlier positions (CLIP).
    Causal,
    /// `[batch, 1, 1, keys]` booleans, true where a key may be attended (BERT padding).
    Keys(&'a Tensor),
}

/// Multi-head scaled dot-product attention over `[batch, seq, hidden]` projections.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: i64,
    mask: AttentionMask<'_>,
) -> Result<Tensor> {
    let (batch, seq, hidden) = q.size3().context(|| "attention input".into())?;
    let split = |t: &Tensor| {
        t.f_view([batch, -1, heads, hidden / heads])
            .and_then(|t| t.f_transpose(1, 2))
    };
    let ctx = || "attention".to_string();
    let (q, k, v) = (
        split(q).context(ctx)?,
        split(k).context(ctx)?,
        split(v).context(ctx)?,
    );
    let out = match mask {
        AttentionMask::Causal => Tensor::f_scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, true, None, false,
        ),
        AttentionMask::Keys(m) => {
            Tensor::f_scaled_dot_product_attention(&q, &k, &v, Some(m), 0.0, false, None, false)
        }
    }
    .context(ctx)?;
    out.f_transpose(1, 2)
        .and_then(|t| t.f_reshape([batch, seq, hidden]))
        .context(ctx)
}

pub struct ClipTextModel {
    token_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    config: ClipTextConfig,
    /// The weights it was built from and the LoRAs on them (shared storage).
    source: SourceWeights,
    /// The kind it computes in when its weights are stored narrower (fp16 weights, fp32
    /// arithmetic); `None`: the weights' kind.
    compute_kind: Option<Kind>,
}

impl WeightedModel for ClipTextModel {
    type Config = ClipTextConfig;
    const NAME: &'static str = "CLIPTextModel";

    /// Builds the model from `weights` under `prefix` (`"text_model"` for diffusers'
    /// `text_encoder/model.safetensors`); reports every missing, mis-shaped or unexpected
    /// tensor at once, so `weights` must hold this model only (split combined checkpoints first).
    fn build(weights: &Weights, prefix: &str, config: ClipTextConfig, _: Checked) -> Result<Self> {
        let d = config.hidden_size;
        let emb = join(prefix, "embeddings");
        let table = |name: &str, rows| embedding_table(weights, &join(&emb, name), rows, d);
        // A buffer some exports carry; the model computes positions itself.
        let _ = weights.get_optional(&join(&emb, "position_ids"));
        Ok(Self {
            token_embedding: table("token_embedding", config.vocab_size),
            position_embedding: table("position_embedding", config.max_position_embeddings),
            layers: (0..config.num_hidden_layers)
                .map(|i| {
                    EncoderLayer::new(
                        weights,
                        &join(prefix, &format!("encoder.layers.{i}")),
                        &config,
                    )
                })
                .collect(),
            final_layer_norm: LayerNorm::new(
                weights,
                &join(prefix, "final_layer_norm"),
                d,
                config.layer_norm_eps,
            ),
            config,
            source: SourceWeights::new(weights.tensors_under(prefix)),
            compute_kind: None,
        })
    }
}

impl ClipTextModel {
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// The weights it was built from, as loaded, and the LoRA patches on them.
    pub fn source(&self) -> &SourceWeights {
        &self.source
    }

    /// Records what a LoRA-patched model was built from (its base weights and patches).
    pub fn set_source(&mut self, source: SourceWeights) {
        self.source = source;
    }

    pub fn device(&self) -> tch::Device {
        self.token_embedding.device()
    }

    /// Computes in `kind` whatever kind its weights are stored in: each layer widens its
    /// weights for the call (ComfyUI keeps its text encoders in fp16 on the CPU and runs them
    /// in fp32). An fp16 file's tower then gives exactly what it gives loaded in fp32, in half
    /// the memory. `None` computes in the weights' kind.
    pub fn set_compute_kind(&mut self, kind: Option<Kind>) {
        self.compute_kind = kind.filter(|k| *k != self.token_embedding.kind());
    }

    /// The kind it computes in, when that is not its weights' ([`Self::set_compute_kind`]).
    pub fn compute_kind(&self) -> Option<Kind> {
        self.compute_kind
    }

    /// `last_hidden_state` `[batch, seq, hidden]` of token ids `[batch, seq]` (or `[seq]`).
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        Ok(self
            .forward_with(input_ids, ClipLayer::Last, true)?
            .hidden_state)
    }

    /// The hidden state of `layer` and the pooled output. For `ClipLayer::Skip`,
    /// `normalize_skipped` applies the final LayerNorm to it (ComfyUI does for SD 1.x,
    /// `layer_norm_hidden_state=True`; transformers' `hidden_states[-2]` is raw).
    pub fn forward_with(
        &self,
        input_ids: &Tensor,
        layer: ClipLayer,
        normalize_skipped: bool,
    ) -> Result<ClipTextOutput> {
        let _guard = tch::no_grad_guard();
        let ids = self.check_ids(input_ids)?;
        let (_, seq) = ids.size2().context(|| "CLIP input ids".into())?;
        let positions = self
            .position_embedding
            .f_narrow(0, 0, seq)
            .context(|| "CLIP position embedding".into())?;
        let mut x = Tensor::f_embedding(&self.token_embedding, &ids, -1, false, false)
            .and_then(|t| match self.compute_kind {
                // Widened before the sum, as ComfyUI's embeddings cast each table.
                Some(kind) => t.f_to_kind(kind)?.f_add(&positions.f_to_kind(kind)?),
                None => t.f_add(&positions),
            })
            .context(|| "CLIP embeddings".into())?;
        let wanted = match layer {
            ClipLayer::Last => None,
            ClipLayer::Skip(n) => {
                if n >= self.layers.len() {
                    return Err(ModelError::Shape {
                        context: "CLIP layer".into(),
                        message: format!(
                            "cannot skip {n} of the model's {} layers",
                            self.layers.len()
                        ),
                    });
                }
                Some(self.layers.len() - 1 - n)
            }
        };
        let mut chosen = None;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if Some(i) == wanted {
                chosen = Some(x.shallow_clone());
            }
        }
        let final_norm = || "CLIP final_layer_norm".to_string();
        let last = self.final_layer_norm.forward(&x).context(final_norm)?;
        let pooled = self.pool(&last, &ids)?;
        let hidden_state = match chosen {
            None => last,
            Some(h) if normalize_skipped => {
                self.final_layer_norm.forward(&h).context(final_norm)?
            }
            Some(h) => h,
        };
        Ok(ClipTextOutput {
            hidden_state,
            pooled,
        })
    }

    fn pool(&self, last: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let ctx = || "CLIP pooled output".to_string();
        let position = if self.config.eos_token_id == 2 {
            ids.f_argmax(-1, false)
        } else {
            // First end-of-text token (SD 1.x pads with it, so not the last one).
            ids.f_eq(self.config.eos_token_id)
                .and_then(|m| m.f_to_kind(Kind::Int))
                .and_then(|m| m.f_argmax(-1, false))
        }
        .context(ctx)?;
        let rows = Tensor::f_arange(last.size()[0], (Kind::Int64, last.device())).context(ctx)?;
        last.f_index(&[Some(rows), Some(position)]).context(ctx)
    }

    /// `[batch, seq]` int64 ids on the model's device, each in the vocabulary.
    fn check_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let ctx = || "CLIP input ids".to_string();
        let ids = match input_ids.dim() {
            1 => input_ids.f_unsqueeze(0).context(ctx)?,
            2 => input_ids.shallow_clone(),
            n => {
                return Err(ModelError::Shape {
                    context: ctx(),
                    message: format!("expected [batch, seq] ids, got {n} dimensions"),
                })
            }
        };
        let c = &self.config;
        let limits = (c.vocab_size, c.max_position_embeddings);
        checked_ids(
            &ids,
            self.token_embedding.device(),
            limits,
            "CLIP input ids",
        )
    }
}

/// [`ClipTextModelWithProjection::forward_with`]'s settings: the text tower and the width of
/// its projection (transformers' `projection_dim`).
#[derive(Clone, Debug, PartialEq)]
pub struct ClipTextWithProjectionConfig {
    pub text: ClipTextConfig,
    pub projection_dim: i64,
}

impl ClipTextWithProjectionConfig {
    /// SDXL's OpenCLIP ViT-bigG/14 text tower with its 1280 x 1280 projection.
    pub fn open_clip_vit_bigg14() -> Self {
        Self {
            text: ClipTextConfig::open_clip_vit_bigg14(),
            projection_dim: 1280,
        }
    }

    /// Reads a transformers `CLIPTextConfig` JSON (`projection_dim` included); keys it leaves
    /// out take `defaults`' values.
    pub fn from_transformers_json(
        json: &Value,
        defaults: &Self,
    ) -> std::result::Result<Self, ConfigError> {
        let projection_dim = match json.get("projection_dim") {
            None | Some(Value::Null) => defaults.projection_dim,
            Some(v) => v
                .as_i64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ConfigError::Invalid {
                    key: "projection_dim",
                    message: format!("expected a positive integer, found {v}"),
                })?,
        };
        Ok(Self {
            text: ClipTextConfig::from_transformers_json(json, &defaults.text)?,
            projection_dim,
        })
    }
}

/// transformers' `CLIPTextModelWithProjection`: the text transformer under `text_model.` and
/// a bias-free `text_projection` applied to the pooled output (SDXL's bigG tower, whose
/// projected pooled output conditions the UNet's added embedding).
pub struct ClipTextModelWithProjection {
    text_model: ClipTextModel,
    text_projection: Linear,
}

impl WeightedModel for ClipTextModelWithProjection {
    type Config = ClipTextWithProjectionConfig;
    const NAME: &'static str = "CLIPTextModelWithProjection";

    /// Builds from `text_model.*` and `text_projection.weight` under `prefix` (`""` for
    /// diffusers' `text_encoder_2/model.safetensors`).
    fn build(
        weights: &Weights,
        prefix: &str,
        config: ClipTextWithProjectionConfig,
        checked: Checked,
    ) -> Result<Self> {
        let hidden = config.text.hidden_size;
        let text_projection = Linear::new(
            weights,
            &join(prefix, "text_projection"),
            hidden,
            config.projection_dim,
            false,
        );
        Ok(Self {
            text_model: ClipTextModel::build(
                weights,
                &join(prefix, "text_model"),
                config.text,
                checked,
            )?,
            text_projection,
        })
    }
}

impl ClipTextModelWithProjection {
    pub fn text_model(&self) -> &ClipTextModel {
        &self.text_model
    }

    /// The same tower with its text transformer replaced (by a LoRA-patched one), the
    /// projection shared.
    pub fn with_text_model(&self, text_model: ClipTextModel) -> Self {
        Self {
            text_model,
            text_projection: self.text_projection.shallow_clone(),
        }
    }

    /// [`ClipTextModel::set_compute_kind`] of its text transformer (the projection follows
    /// its input's kind).
    pub fn set_compute_kind(&mut self, kind: Option<Kind>) {
        self.text_model.set_compute_kind(kind);
    }

    /// [`ClipTextModel::forward_with`], the pooled output then projected (`text_embeds`).
    pub fn forward_with(
        &self,
        input_ids: &Tensor,
        layer: ClipLayer,
        normalize_skipped: bool,
    ) -> Result<ClipTextOutput> {
        let out = self
            .text_model
            .forward_with(input_ids, layer, normalize_skipped)?;
        Ok(ClipTextOutput {
            hidden_state: out.hidden_state,
            pooled: self.project(&out.pooled)?,
        })
    }

    /// `[batch, hidden]` pooled states (final-LayerNorm output at the end token) to
    /// `[batch, projection_dim]`.
    pub fn project(&self, pooled: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        self.text_projection
            .forward(pooled)
            .context(|| "CLIP text_projection".to_string())
    }
}
