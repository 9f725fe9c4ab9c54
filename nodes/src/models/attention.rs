//! Attention modules of the SD UNet and VAE, mirroring diffusers `models/attention.py`,
//! `attention_processor.py` and `transformers/transformer_2d.py`: `Attention` (multi-head,
//! self or cross, via `scaled_dot_product_attention`), `FeedForward` (GEGLU, Shazeer 2020),
//! `BasicTransformerBlock`, `Transformer2DModel` (the LDM "SpatialTransformer", Rombach et
//! al. 2022) and the single-head group-norm self-attention of the VAE mid block.
use std::cell::RefCell;

use tch::Tensor;

use crate::models::layers::{join, Conv2d, GroupNorm, LayerNorm, Linear, TchResult};
use crate::weights::Weights;

/// Softmax attention over `[B, heads, N, d]` tensors. Like diffusers' `AttnProcessor2_0`, no
/// explicit fp32 upcast even where the config asks for `upcast_attention` (SD 2.1): the fused
/// kernels accumulate the softmax in fp32 already, and an upcast would rule out flash attention.
fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor) -> TchResult<Tensor> {
    Tensor::f_scaled_dot_product_attention::<Tensor>(q, k, v, None, 0.0, false, None, false)
}

fn not_4d(x: &Tensor) -> tch::TchError {
    tch::TchError::Shape(format!(
        "expected a [B, C, H, W] feature map, got {:?}",
        x.size()
    ))
}

/// The text context a UNet's cross-attentions read, with an optional [`KeyValueMemo`].
#[derive(Clone, Copy)]
pub struct CrossContext<'a> {
    pub tokens: &'a Tensor,
    pub memo: Option<&'a KeyValueMemo>,
}

/// Cross-attention keys and values remembered while one sampler runs: the conditioning is
/// the same tensor at every step, so each layer projects it once instead of once per step
/// (for SD1.5, 16 layers and ~77 MB of fp32 weights per step). An entry is keyed by the layer
/// and by the context tensor's identity (data pointer, shape, strides, dtype, device) and holds
/// that tensor, so its memory cannot be reused by another tensor meanwhile. Whoever holds the
/// memo promises not to change a context tensor in place while it lives; drop it when the
/// sampler ends.
#[derive(Default)]
pub struct KeyValueMemo {
    entries: RefCell<Vec<MemoEntry>>,
}

struct MemoEntry {
    owner: usize,
    context: Tensor,
    remembered: Vec<Tensor>,
}

fn same_tensor(a: &Tensor, b: &Tensor) -> bool {
    a.data_ptr() == b.data_ptr()
        && a.size() == b.size()
        && a.stride() == b.stride()
        && a.kind() == b.kind()
        && a.device() == b.device()
}

impl KeyValueMemo {
    /// What `owner` (a layer's or model's address) computes from `context`, computed by
    /// `compute` the first time.
    pub fn remember(
        &self,
        owner: usize,
        context: &Tensor,
        compute: impl FnOnce() -> TchResult<Vec<Tensor>>,
    ) -> TchResult<Vec<Tensor>> {
        let shallow = |ts: &[Tensor]| ts.iter().map(Tensor::shallow_clone).collect::<Vec<_>>();
        if let Some(e) = self
            .entries
            .borrow()
            .iter()
            .find(|e| e.owner == owner && same_tensor(&e.context, context))
        {
            return Ok(shallow(&e.remembered));
        }
        let remembered = compute()?;
        self.entries.borrow_mut().push(MemoEntry {
            owner,
            context: context.shallow_clone(),
            remembered: shallow(&remembered),
        });
        Ok(remembered)
    }

    /// How many (layer, context) pairs are remembered.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// diffusers `Attention` as used in `BasicTransformerBlock`: bias-free q/k/v projections,
/// `to_out.0` with bias; keys and values come from `context` for cross-attention.
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: i64,
}

impl Attention {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        w: &Weights,
        prefix: &str,
        query_dim: i64,
        context_dim: Option<i64>,
        heads: i64,
        head_dim: i64,
    ) -> Self {
        let inner = heads * head_dim;
        let context_dim = context_dim.unwrap_or(query_dim);
        Self {
            to_q: Linear::new(w, &join(prefix, "to_q"), query_dim, inner, false),
            to_k: Linear::new(w, &join(prefix, "to_k"), context_dim, inner, false),
            to_v: Linear::new(w, &join(prefix, "to_v"), context_dim, inner, false),
            to_out: Linear::new(w, &join(prefix, "to_out.0"), inner, query_dim, true),
            heads,
        }
    }

    /// Self-attention over `x`: `[B, N, query_dim]`.
    pub fn forward(&self, x: &Tensor) -> TchResult<Tensor> {
        let k = self.to_k.forward(x)?;
        let v = self.to_v.forward(x)?;
        self.attend(x, &k, &v)
    }

    /// Cross-attention of `x` `[B, N, query_dim]` on `context.tokens` `[B, M, context_dim]`;
    /// with a memo, the keys and values of a context already seen are reused.
    pub fn forward_cross(&self, x: &Tensor, context: CrossContext<'_>) -> TchResult<Tensor> {
        let project = || {
            Ok(vec![
                self.to_k.forward(context.tokens)?,
                self.to_v.forward(context.tokens)?,
            ])
        };
        let kv = match context.memo {
            // The layer's address names it: layers live in the model, which outlives the memo.
            Some(memo) => memo.remember(self as *const Self as usize, context.tokens, project)?,
            None => project()?,
        };
        self.attend(x, &kv[0], &kv[1])
    }

    fn attend(&self, x: &Tensor, k: &Tensor, v: &Tensor) -> TchResult<Tensor> {
        let q = self.to_q.forward(x)?;
        let out = sdpa(
            &split_heads(&q, self.heads)?,
            &split_heads(k, self.heads)?,
            &split_heads(v, self.heads)?,
        )?;
        self.to_out.forward(&merge_heads(&out)?)
    }
}

/// `[B, N, H*d]` -> `[B, H, N, d]`.
fn split_heads(x: &Tensor, heads: i64) -> TchResult<Tensor> {
    let s = x.size();
    x.f_reshape([s[0], s[1], heads, s[2] / heads])?
        .f_transpose(1, 2)
}

/// `[B, H, N, d]` -> `[B, N, H*d]`.
fn merge_heads(x: &Tensor) -> TchResult<Tensor> {
    let s = x.size();
    x.f_transpose(1, 2)?.f_reshape([s[0], s[2], s[1] * s[3]])
}

/// diffusers `FeedForward` with the GEGLU activation (`net.0.proj` doubles the width; half of
/// it gates the other half through GELU), inner width 4x.
pub struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    pub fn new(w: &Weights, prefix: &str, dim: i64) -> Self {
        let inner = 4 * dim;
        Self {
            proj: Linear::new(w, &join(prefix, "net.0.proj"), dim, 2 * inner, true),
            out: Linear::new(w, &join(prefix, "net.2"), inner, dim, true),
        }
    }

    pub fn forward(&self, x: &Tensor) -> TchResult<Tensor> {
        let h = self.proj.forward(x)?;
        let halves = h.f_chunk(2, -1)?;
        let gated = halves[0].f_mul(&halves[1].f_gelu("none")?)?;
        self.out.forward(&gated)
    }
}

/// diffusers `BasicTransformerBlock` (pre-LayerNorm): self-attention, cross-attention on the
/// text context, GEGLU feed-forward, each with a residual connection.
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn new(
        w: &Weights,
        prefix: &str,
        dim: i64,
        heads: i64,
        head_dim: i64,
        context_dim: i64,
    ) -> Self {
        let p = |n: &str| join(prefix, n);
        Self {
            norm1: LayerNorm::new(w, &p("norm1"), dim, 1e-5),
            attn1: Attention::new(w, &p("attn1"), dim, None, heads, head_dim),
            norm2: LayerNorm::new(w, &p("norm2"), dim, 1e-5),
            attn2: Attention::new(w, &p("attn2"), dim, Some(context_dim), heads, head_dim),
            norm3: LayerNorm::new(w, &p("norm3"), dim, 1e-5),
            ff: FeedForward::new(w, &p("ff"), dim),
        }
    }

    pub fn forward(&self, x: &Tensor, context: CrossContext<'_>) -> TchResult<Tensor> {
        let x = x.f_add(&self.attn1.forward(&self.norm1.forward(x)?)?)?;
        let x = x.f_add(
            &self
                .attn2
                .forward_cross(&self.norm2.forward(&x)?, context)?,
        )?;
        x.f_add(&self.ff.forward(&self.norm3.forward(&x)?)?)
    }
}

/// The projection into and out of the token sequence: a 1x1 conv (SD 1.x) or, with
/// `use_linear_projection` (SD 2.x), a linear layer applied after flattening.
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// diffusers `Transformer2DModel` for continuous input: GroupNorm (eps 1e-6), projection in,
/// transformer blocks over the `H*W` tokens, projection out, residual.
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

/// Shape of one `Transformer2DModel`.
#[derive(Debug, Clone, Copy)]
pub struct TransformerShape {
    pub channels: i64,
    pub heads: i64,
    pub context_dim: i64,
    pub groups: i64,
    pub layers: usize,
    pub use_linear_projection: bool,
}

impl Transformer2DModel {
    pub fn new(w: &Weights, prefix: &str, s: TransformerShape) -> Self {
        let c = s.channels;
        let projection = |name: &str| {
            if s.use_linear_projection {
                Projection::Linear(Linear::new(w, &join(prefix, name), c, c, true))
            } else {
                Projection::Conv(Conv2d::new(w, &join(prefix, name), c, c, 1, 1, 0))
            }
        };
        Self {
            norm: GroupNorm::new(w, &join(prefix, "norm"), s.groups, c, 1e-6),
            proj_in: projection("proj_in"),
            transformer_blocks: (0..s.layers)
                .map(|i| {
                    BasicTransformerBlock::new(
                        w,
                        &join(prefix, &format!("transformer_blocks.{i}")),
                        c,
                        s.heads,
                        c / s.heads,
                        s.context_dim,
                    )
                })
                .collect(),
            proj_out: projection("proj_out"),
        }
    }

    pub fn forward(&self, x: &Tensor, context: CrossContext<'_>) -> TchResult<Tensor> {
        let [b, c, h, wd] = x.size()[..] else {
            return Err(not_4d(x));
        };
        let normed = self.norm.forward(x)?;
        let to_tokens = |t: &Tensor| t.f_permute([0, 2, 3, 1])?.f_reshape([b, h * wd, c]);
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(&normed)?)?,
        };
        for block in &self.transformer_blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let to_image = |t: &Tensor| t.f_reshape([b, h, wd, c])?.f_permute([0, 3, 1, 2]);
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_image(&tokens)?.f_contiguous()?)?,
            Projection::Linear(lin) => to_image(&lin.forward(&tokens)?)?.f_contiguous()?,
        };
        out.f_add(x)
    }
}

/// The VAE mid-block attention (diffusers `Attention` with `group_norm`, one head, biased
/// q/k/v, residual connection): self-attention over the `H*W` positions of a feature map.
pub struct SpatialSelfAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
}

impl SpatialSelfAttention {
    pub fn new(w: &Weights, prefix: &str, channels: i64, groups: i64, eps: f64) -> Self {
        let p = |n: &str| join(prefix, n);
        Self {
            group_norm: GroupNorm::new(w, &p("group_norm"), groups, channels, eps),
            to_q: Linear::new(w, &p("to_q"), channels, channels, true),
            to_k: Linear::new(w, &p("to_k"), channels, channels, true),
            to_v: Linear::new(w, &p("to_v"), channels, channels, true),
            to_out: Linear::new(w, &p("to_out.0"), channels, channels, true),
        }
    }

    pub fn forward(&self, x: &Tensor) -> TchResult<Tensor> {
        let [b, c, h, wd] = x.size()[..] else {
            return Err(not_4d(x));
        };
        let tokens = self
            .group_norm
            .forward(x)?
            .f_reshape([b, c, h * wd])?
            .f_transpose(1, 2)?;
        let one_head = |t: Tensor| t.f_unsqueeze(1);
        let q = one_head(self.to_q.forward(&tokens)?)?;
        let k = one_head(self.to_k.forward(&tokens)?)?;
        let v = one_head(self.to_v.forward(&tokens)?)?;
        let attended = sdpa(&q, &k, &v)?.f_squeeze_dim(1)?;
        let out = self
            .to_out
            .forward(&attended)?
            .f_transpose(1, 2)?
            .f_reshape([b, c, h, wd])?;
        out.f_add(x)
    }
}
