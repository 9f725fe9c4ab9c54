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
        if self.is_few_positions_on_cpu(x) {
            return self.forward_as_product(x, &weight, &bias);
        }
        x.f_conv2d(
            &weight,
            Some(&bias),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }

    /// `(height, width)` of the output for an input of `height` x `width`.
    fn output_size(&self, height: i64, width: i64) -> (i64, i64) {
        let kernel = self.weight.size()[2];
        let out = |n: i64| (n + 2 * self.padding - kernel) / self.stride + 1;
        (out(height), out(width))
    }

    /// A large kernel over few output positions on the CPU in fp32: SDXL's 1280-channel
    /// convolutions at 4x4 and 8x8 (a 128x128 image). oneDNN's direct convolution reads such a
    /// kernel at a third of the speed a matrix product does (profiled at 2 threads: 41 ms per
    /// 1280-channel 3x3 at 4x4, 9 ms as a product), and the step is mostly those reads.
    fn is_few_positions_on_cpu(&self, x: &Tensor) -> bool {
        if x.device() != tch::Device::Cpu || x.kind() != tch::Kind::Float || x.dim() != 4 {
            return false;
        }
        let s = x.size();
        let (height, width) = self.output_size(s[2], s[3]);
        let positions = s[0] * height * width;
        positions > 0
            && positions <= PRODUCT_CONV_MAX_POSITIONS
            && self.weight.numel() >= PRODUCT_CONV_MIN_WEIGHTS
    }

    /// The convolution as one matrix product: the kernel `[out, in*k*k]` times the input's
    /// unfolded patches `[in*k*k, batch*positions]`. Sums in another order than the direct
    /// convolution, so values agree to float rounding (relative 1e-6), not bit for bit.
    fn forward_as_product(&self, x: &Tensor, weight: &Tensor, bias: &Tensor) -> TchResult<Tensor> {
        let s = x.size();
        let (batch, channels) = (s[0], s[1]);
        let (out_channels, kernel) = (weight.size()[0], weight.size()[2]);
        let (height, width) = self.output_size(s[2], s[3]);
        let patches = x
            .f_im2col(
                [kernel, kernel],
                [1, 1],
                [self.padding, self.padding],
                [self.stride, self.stride],
            )?
            .f_transpose(0, 1)?
            .f_reshape([channels * kernel * kernel, batch * height * width])?;
        bias.f_unsqueeze(1)?
            .f_addmm(&weight.f_reshape([out_channels, -1])?, &patches)?
            .f_reshape([out_channels, batch, height, width])?
            .f_transpose(0, 1)?
            .f_contiguous()
    }
}

/// Output positions (batch x height x width) up to which a large convolution runs as one
/// matrix product on the CPU ([`Conv2d::forward`]); above it oneDNN's direct convolution is
/// as fast or faster (1280 channels at 2 x 16 x 16: 84 ms direct, 90 ms as a product).
const PRODUCT_CONV_MAX_POSITIONS: i64 = 128;

/// Kernel elements from which the product pays (2M, 8 MiB in fp32: a 3x3 kernel of about
/// 490 -> 490 channels);
/// a small kernel stays in cache and the direct convolution wins (320 channels at 2 x 8 x 8).
const PRODUCT_CONV_MIN_WEIGHTS: usize = 2 << 20;

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

    /// [`Self::forward`] written over `x`, which nothing else may read, so that a large
    /// activation (256 MiB in the SDXL VAE decoder's last block at 512x512) is not held next
    /// to its normalised copy. On the CPU in fp32 it is libtorch's own formula, `x * scale +
    /// shift` with `scale = weight * rstd` and `shift = bias - mean * scale`, equal to
    /// [`Self::forward`] within float rounding; elsewhere the out-of-place norm replaces `x`.
    pub fn forward_in_place(&self, x: &mut Tensor) -> TchResult<()> {
        if x.device() != tch::Device::Cpu || x.kind() != tch::Kind::Float || x.dim() != 4 {
            *x = self.forward(x)?;
            return Ok(());
        }
        let (weight, bias) = widened_pair(&self.weight, &self.bias, x)?;
        let s = x.size();
        let (batch, channels, groups) = (s[0], s[1], self.groups);
        let per_group = channels / groups;
        // Splitting the channel dimension is a view in any layout: no copy of `x`.
        let (var, mean) = x
            .f_reshape([batch, groups, per_group, s[2], s[3]])?
            .f_var_mean_correction([2i64, 3, 4].as_slice(), 0, true)?;
        let rstd = var.f_add_scalar(self.eps)?.f_rsqrt()?;
        let by_channel = |t: &Tensor| -> TchResult<Tensor> {
            t.f_reshape([batch, groups, 1])?
                .f_expand([batch, groups, per_group], false)?
                .f_reshape([batch, channels, 1, 1])
        };
        let scale = by_channel(&rstd)?.f_mul(&weight.f_reshape([1, channels, 1, 1])?)?;
        let shift = bias
            .f_reshape([1, channels, 1, 1])?
            .f_sub(&by_channel(&mean)?.f_mul(&scale)?)?;
        let _ = x.f_mul_(&scale)?;
        let _ = x.f_add_(&shift)?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn conv(in_channels: i64, out_channels: i64, kernel: i64, stride: i64) -> Conv2d {
        let fan_in = (in_channels * kernel * kernel) as f64;
        Conv2d {
            weight: Tensor::randn(
                [out_channels, in_channels, kernel, kernel],
                (Kind::Float, Device::Cpu),
            ) / fan_in.sqrt(),
            bias: Tensor::randn([out_channels], (Kind::Float, Device::Cpu)),
            stride,
            padding: kernel / 2,
        }
    }

    fn direct(c: &Conv2d, x: &Tensor) -> Tensor {
        x.conv2d(
            &c.weight,
            Some(&c.bias),
            [c.stride, c.stride],
            [c.padding, c.padding],
            [1, 1],
            1,
        )
    }

    #[test]
    fn a_large_kernel_over_few_positions_is_a_product_equal_to_the_direct_convolution() {
        tch::manual_seed(7);
        // 3x3 same, 3x3 stride 2 (a downsampler), 1x1 (a skip), a non-square input.
        for (c, shape) in [
            (conv(512, 512, 3, 1), [2, 512, 4, 4]),
            (conv(512, 512, 3, 2), [2, 512, 8, 8]),
            (conv(2048, 1024, 1, 1), [2, 2048, 4, 4]),
            (conv(512, 480, 3, 1), [1, 512, 4, 7]),
        ] {
            let x = Tensor::randn(shape, (Kind::Float, Device::Cpu));
            assert!(c.is_few_positions_on_cpu(&x), "{shape:?} takes the product");
            let got = c.forward(&x).unwrap();
            let want = direct(&c, &x);
            assert_eq!(got.size(), want.size(), "{shape:?}");
            let scale = want.abs().max().double_value(&[]);
            let err = (got - &want).abs().max().double_value(&[]);
            assert!(
                err <= 1e-5 * scale,
                "{shape:?}: max error {err}, scale {scale}"
            );
        }
    }

    #[test]
    fn small_kernels_many_positions_and_other_kinds_stay_direct() {
        let small = conv(320, 320, 3, 1);
        assert!(!small
            .is_few_positions_on_cpu(&Tensor::zeros([2, 320, 4, 4], (Kind::Float, Device::Cpu))));
        let large = conv(512, 512, 3, 1);
        let many = Tensor::zeros([2, 512, 16, 16], (Kind::Float, Device::Cpu));
        assert!(!large.is_few_positions_on_cpu(&many));
        let half = Tensor::zeros([2, 512, 4, 4], (Kind::Half, Device::Cpu));
        assert!(!large.is_few_positions_on_cpu(&half));
        // The boundary: 2 x 8 x 8 = 128 positions still take the product, 2 x 9 x 8 not.
        let at = Tensor::zeros([2, 512, 8, 8], (Kind::Float, Device::Cpu));
        assert!(large.is_few_positions_on_cpu(&at));
        let above = Tensor::zeros([2, 512, 9, 8], (Kind::Float, Device::Cpu));
        assert!(!large.is_few_positions_on_cpu(&above));
    }
}
