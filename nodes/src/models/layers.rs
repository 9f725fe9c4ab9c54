//! The plain layers every model here is built from, mirroring `torch.nn`: `Linear`,
//! `LayerNorm`, `Conv2d`, `GroupNorm`, embedding tables, and `join` for state-dict key prefixes.
use tch::{TchError, Tensor};

use crate::weights::Weights;

/// Result of the inner forward passes; the public model entry points add context.
pub type TchResult<T> = std::result::Result<T, TchError>;

/// `prefix.name`, or `name` alone at the root.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The `[rows, dim]` table of a `torch.nn.Embedding` under `prefix`.
pub fn embedding_table(w: &Weights, prefix: &str, rows: i64, dim: i64) -> Tensor {
    w.get(&join(prefix, "weight"), &[rows, dim])
}

/// `weight` and `bias` in `x`'s kind: the same tensors when the kinds agree, else copies
/// widened for one call (widening fp16 or bf16 to fp32 is exact, so the result is that of a
/// model loaded wide, while only the narrow weights stay resident).
fn widened_pair(weight: &Tensor, bias: &Tensor, x: &Tensor) -> TchResult<(Tensor, Tensor)> {
    if weight.kind() == x.kind() && bias.kind() == x.kind() {
        return Ok((weight.shallow_clone(), bias.shallow_clone()));
    }
    Ok((weight.f_to_kind(x.kind())?, bias.f_to_kind(x.kind())?))
}

/// `torch.nn.Conv2d` with a bias, square kernel, symmetric padding (shared by the UNet, the
/// VAE, the upscalers and open_nsfw).
#[derive(Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Tensor,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        w: &Weights,
        prefix: &str,
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
    ) -> Self {
        Self {
            weight: w.get(
                &join(prefix, "weight"),
                &[out_channels, in_channels, kernel, kernel],
            ),
            bias: w.get(&join(prefix, "bias"), &[out_channels]),
            stride,
            padding,
        }
    }

    /// Stride 1, padding `kernel / 2` ("same" size for odd kernels).
    pub fn same(
        w: &Weights,
        prefix: &str,
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
    ) -> Self {
        Self::new(w, prefix, in_channels, out_channels, kernel, 1, kernel / 2)
    }

    pub fn device(&self) -> tch::Device {
        self.weight.device()
    }

    pub fn kind(&self) -> tch::Kind {
        self.weight.kind()
    }

    /// Convolved in `x`'s kind: weights kept narrower than the input (a UNet stored in fp16
    /// and computed in fp32) are widened for this call only, as [`Linear::forward`] does.
    pub fn forward(&self, x: &Tensor) -> TchResult<Tensor> {
        let (weight, bias) = widened_pair(&self.weight, &self.bias, x)?;
        x.f_conv2d(
            &weight,
            Some(&bias),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }
}

/// `torch.nn.GroupNorm` with affine parameters.
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: i64,
    eps: f64,
}

impl GroupNorm {
    pub fn new(w: &Weights, prefix: &str, groups: i64, channels: i64, eps: f64) -> Self {
        Self {
            weight: w.get(&join(prefix, "weight"), &[channels]),
            bias: w.get(&join(prefix, "bias"), &[channels]),
            groups,
            eps,
        }
    }

    /// Normalised in `x`'s kind (narrower weights widened for the call, as [`Linear::forward`]).
    pub fn forward(&self, x: &Tensor) -> TchResult<Tensor> {
        let (weight, bias) = widened_pair(&self.weight, &self.bias, x)?;
        x.f_group_norm(self.groups, Some(&weight), Some(&bias), self.eps, true)
    }
}

/// `torch.nn.Linear`.
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(w: &Weights, prefix: &str, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        Self {
            weight: w.get(&join(prefix, "weight"), &[out_dim, in_dim]),
            bias: bias.then(|| w.get(&join(prefix, "bias"), &[out_dim])),
        }
    }

    /// `x` times the weight, in `x`'s kind: weights kept narrower than the input (a text
    /// tower stored in fp16 and computed in fp32, as ComfyUI does on the CPU) are widened for
    /// this call only, so the values are those of a model loaded wide.
    pub fn forward(&self, x: &Tensor) -> TchResult<Tensor> {
        if self.weight.kind() == x.kind() {
            return x.f_linear(&self.weight, self.bias.as_ref());
        }
        let weight = self.weight.f_to_kind(x.kind())?;
        let bias = self
            .bias
            .as_ref()
            .map(|b| b.f_to_kind(x.kind()))
            .transpose()?;
        x.f_linear(&weight, bias.as_ref())
    }

    /// The same layer on the same storage.
    pub fn shallow_clone(&self) -> Self {
        Self {
            weight: self.weight.shallow_clone(),
            bias: self.bias.as_ref().map(Tensor::shallow_clone),
        }
    }
}

/// `torch.nn.LayerNorm` over the last dimension, with affine parameters.
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    dim: i64,
    eps: f64,
}

impl LayerNorm {
    pub fn new(w: &Weights, prefix: &str, dim: i64, eps: f64) -> Self {
        Self {
            weight: w.get(&join(prefix, "weight"), &[dim]),
            bias: w.get(&join(prefix, "bias"), &[dim]),
            dim,
            eps,
        }
    }

    /// Normalised in `x`'s kind (narrower weights widened for the call, as [`Linear::forward`]).
    pub fn forward(&self, x: &Tensor) -> TchResult<Tensor> {
        if self.weight.kind() == x.kind() {
            return x.f_layer_norm(
                [self.dim],
                Some(&self.weight),
                Some(&self.bias),
                self.eps,
                true,
            );
        }
        let (weight, bias) = (
            self.weight.f_to_kind(x.kind())?,
            self.bias.f_to_kind(x.kind())?,
        );
        x.f_layer_norm([self.dim], Some(&weight), Some(&bias), self.eps, true)
    }
}
