//! Timestep embeddings, mirroring diffusers `models/embeddings.py`: the sinusoidal
//! `Timesteps` projection (Vaswani et al. 2017, as used by DDPM, Ho et al. 2020) and the
//! two-layer `TimestepEmbedding` MLP.
use tch::{Kind, Tensor};

use crate::models::layers::{join, Linear, TchResult};
use crate::weights::Weights;

/// diffusers `get_timestep_embedding`: `[B]` timesteps -> `[B, dim]` sinusoids with
/// frequencies `exp(-ln(10000) * i / (dim/2 - freq_shift))`, sine half first unless
/// `flip_sin_to_cos`. Computed in fp32 whatever the model's dtype.
pub fn timestep_sinusoids(
    timesteps: &Tensor,
    dim: i64,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> TchResult<Tensor> {
    let half = dim / 2;
    let device = timesteps.device();
    let exponent = Tensor::f_arange(half, (Kind::Float, device))?
        .f_mul_scalar(-(10000f64.ln()) / (half as f64 - freq_shift))?;
    let freqs = exponent.f_exp()?;
    let args = timesteps
        .f_to_kind(Kind::Float)?
        .f_unsqueeze(1)?
        .f_mul(&freqs.f_unsqueeze(0)?)?;
    let (sin, cos) = (args.f_sin()?, args.f_cos()?);
    let mut emb = if flip_sin_to_cos {
        Tensor::f_cat(&[cos, sin], -1)?
    } else {
        Tensor::f_cat(&[sin, cos], -1)?
    };
    if dim % 2 == 1 {
        emb = emb.f_constant_pad_nd([0, 1])?;
    }
    Ok(emb)
}

/// diffusers `TimestepEmbedding`: `linear_1`, SiLU, `linear_2`.
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(w: &Weights, prefix: &str, in_dim: i64, embed_dim: i64) -> Self {
        Self {
            linear_1: Linear::new(w, &join(prefix, "linear_1"), in_dim, embed_dim, true),
            linear_2: Linear::new(w, &join(prefix, "linear_2"), embed_dim, embed_dim, true),
        }
    }

    pub fn forward(&self, x: &Tensor) -> TchResult<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.f_silu()?)
    }
}
