//! The plain layers every model here is built from, mirroring `torch.nn`: `Linear`,
//! `LayerNorm`, `Conv2d`, `GroupNorm`, embedding tables, and `join` for state-dict key prefixes.
use std::cell::RefCell;

use tch::{Device, Kind, TchError, Tensor};

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

thread_local! {
    /// The fp32 buffer this thread widens narrow weights into ([`with_rows_widened`]), grown
    /// to the largest request (118 MB for SDXL's largest kernel widened whole).
    static WIDENING_SCRATCH: RefCell<Option<Tensor>> = const { RefCell::new(None) };
}

/// Whether `weight` is kept narrower than `x` on the CPU, where widening it per call into a
/// reused buffer pays: a fresh fp32 tensor per call costs its page faults (34 ms for the
/// 13M-value GEGLU projection, against 7 ms to widen into memory already mapped).
fn widens_into_scratch(weight: &Tensor, x: &Tensor) -> bool {
    weight.kind() != x.kind()
        && x.kind() == Kind::Float
        && matches!(weight.kind(), Kind::Half | Kind::BFloat16)
        && weight.device() == Device::Cpu
        && x.device() == Device::Cpu
}

/// Calls `compute` with rows `start..start + rows` of `weight` widened to fp32 in this
/// thread's reused buffer. The view is valid only during `compute`, which must not widen again
/// (a nested call widens into a fresh tensor instead).
fn with_rows_widened<R>(
    weight: &Tensor,
    start: i64,
    rows: i64,
    compute: impl FnOnce(&Tensor) -> TchResult<R>,
) -> TchResult<R> {
    let rows_of = weight.f_narrow(0, start, rows)?;
    let mut shape = weight.size();
    shape[0] = rows;
    let needed: i64 = shape.iter().product();
    WIDENING_SCRATCH.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return compute(&rows_of.f_to_kind(Kind::Float)?);
        };
        // A buffer too small is dropped before the larger is made: the two never coexist.
        let scratch = match slot.take().filter(|t| t.numel() as i64 >= needed) {
            Some(t) => t,
            None => Tensor::f_empty([needed], (Kind::Float, Device::Cpu))?,
        };
        let mut wide = scratch.f_narrow(0, 0, needed)?.f_view(shape.as_slice())?;
        *slot = Some(scratch);
        wide.f_copy_(&rows_of)?;
        compute(&wide)
    })
}

/// Rows per chunk when a narrow weight is widened a chunk at a time for few input rows: about
/// 4 MiB of fp32 (widened into the cache and used there, so the weight crosses memory once, in
/// fp16), a multiple of 64 so the matrix kernels block the output as they do for the whole.
fn widening_chunk_rows(row_len: i64) -> i64 {
    let rows = (1 << 20) / row_len.max(1);
    (rows / 64 * 64).max(64)
}

/// Input rows (tokens x batch) up to which a narrow Linear widens chunk by chunk: a few rows
/// make the product cheap beside reading the weight; with more, the product dominates and one
/// whole widening is simpler.
const CHUNKED_WIDENING_MAX_ROWS: i64 = 256;

/// Input rows from which a narrow Linear widens chunk by chunk. Fewer (the time and pooled-text
/// embeddings: 2 rows for a prompt and its negative) go through the whole widened weight, as
/// the fp32 layer does: MKL sums the chunks' transposed products `W x^T` for 2 to 11 rows in
/// another order than `x W^T` (1e-6 apart, enough to move a few pixels by 1/255), and those
/// layers are small. From 12 rows the two agree bit for bit at 1 and 2 threads; at 4 threads
/// some counts (17-27, 33-39 in a sweep, 2026-12-06) still sum in another order.
const CHUNKED_WIDENING_MIN_ROWS: i64 = 12;

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
        if self.is_few_positions_on_cpu(x) {
            return self.forward_as_product(x);
        }
        let direct = |weight: &Tensor| {
            x.f_conv2d(
                weight,
                Some(&self.bias.f_to_kind(x.kind())?),
                [self.stride, self.stride],
                [self.padding, self.padding],
                [1, 1],
                1,
            )
        };
        if widens_into_scratch(&self.weight, x) {
            return with_rows_widened(&self.weight, 0, self.weight.size()[0], direct);
        }
        let (weight, _) = widened_pair(&self.weight, &self.bias, x)?;
        direct(&weight)
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
    /// An fp16-stored kernel is widened a chunk of output channels at a time
    /// ([`with_rows_widened`]), each chunk's rows of the product computed from it.
    fn forward_as_product(&self, x: &Tensor) -> TchResult<Tensor> {
        let s = x.size();
        let (batch, channels) = (s[0], s[1]);
        let (out_channels, kernel) = (self.weight.size()[0], self.weight.size()[2]);
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
        let bias = self.bias.f_to_kind(x.kind())?.f_unsqueeze(1)?;
        let rows = if widens_into_scratch(&self.weight, x) {
            let row_len = channels * kernel * kernel;
            let chunk = widening_chunk_rows(row_len);
            let out = Tensor::f_empty(
                [out_channels, batch * height * width],
                (x.kind(), x.device()),
            )?;
            for start in (0..out_channels).step_by(chunk as usize) {
                let n = chunk.min(out_channels - start);
                // Written straight into its rows of the output: no temporary, no copy.
                let _written = with_rows_widened(&self.weight, start, n, |w| {
                    bias.f_narrow(0, start, n)?.f_addmm_out(
                        &out.f_narrow(0, start, n)?,
                        &w.f_reshape([n, -1])?,
                        &patches,
                    )
                })?;
            }
            out
        } else {
            let weight = self.weight.f_to_kind(x.kind())?;
            bias.f_addmm(&weight.f_reshape([out_channels, -1])?, &patches)?
        };
        rows.f_reshape([out_channels, batch, height, width])?
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
        if widens_into_scratch(&self.weight, x) {
            return self.forward_widening_in_scratch(x);
        }
        let weight = self.weight.f_to_kind(x.kind())?;
        let bias = self
            .bias
            .as_ref()
            .map(|b| b.f_to_kind(x.kind()))
            .transpose()?;
        x.f_linear(&weight, bias.as_ref())
    }

    /// An fp16-stored weight times fp32 `x` on the CPU: for a few input rows (SDXL's 1280-wide
    /// layers at 128x128 see 32) a chunk of output features at a time, each widened into this
    /// thread's reused buffer while it is in the cache, so the weight crosses memory once, in
    /// fp16; for more rows, the whole weight widened into that buffer. The values are the fp32
    /// load's: the same products, split by output feature.
    fn forward_widening_in_scratch(&self, x: &Tensor) -> TchResult<Tensor> {
        let (out_dim, in_dim) = (self.weight.size()[0], self.weight.size()[1]);
        let bias = self
            .bias
            .as_ref()
            .map(|b| b.f_to_kind(x.kind()))
            .transpose()?;
        let rows = x.numel() as i64 / in_dim.max(1);
        let chunk = widening_chunk_rows(in_dim);
        // An input of the wrong width goes whole, for libtorch's shape error.
        let fits = x.size().last() == Some(&in_dim);
        let chunked = (CHUNKED_WIDENING_MIN_ROWS..=CHUNKED_WIDENING_MAX_ROWS).contains(&rows);
        if !chunked || chunk >= out_dim || !fits {
            return with_rows_widened(&self.weight, 0, out_dim, |w| x.f_linear(w, bias.as_ref()));
        }
        // The product transposed, `W x^T`, so that each chunk of output features is a run of
        // whole rows written in place (no temporary and copy per chunk: each is one more
        // parallel region, and on a small box the spinning threads between them cost).
        let flat_t = x.f_reshape([rows, in_dim])?.f_transpose(0, 1)?;
        let out_t = Tensor::f_empty([out_dim, rows], (x.kind(), x.device()))?;
        for start in (0..out_dim).step_by(chunk as usize) {
            let n = chunk.min(out_dim - start);
            let rows_out = out_t.f_narrow(0, start, n)?;
            let _written = with_rows_widened(&self.weight, start, n, |w| match &bias {
                Some(b) => b
                    .f_narrow(0, start, n)?
                    .f_unsqueeze(1)?
                    .f_addmm_out(&rows_out, w, &flat_t),
                None => w.f_mm_out(&rows_out, &flat_t),
            })?;
        }
        let out = out_t.f_transpose(0, 1)?.f_contiguous()?;
        let mut shape = x.size();
        let Some(features) = shape.last_mut() else {
            return Err(TchError::Shape(format!(
                "Linear input {:?} has no feature dimension",
                x.size()
            )));
        };
        *features = out_dim;
        out.f_reshape(shape.as_slice())
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

    fn random(shape: &[i64], kind: Kind) -> Tensor {
        (Tensor::randn(shape, (Kind::Float, Device::Cpu)) / (shape[1] as f64).sqrt()).to_kind(kind)
    }

    #[test]
    fn an_fp16_linear_widened_in_chunks_computes_the_fp32_linear_bit_for_bit() {
        tch::manual_seed(11);
        // SDXL's GEGLU projection: 1280 -> 10240, 13 chunks of 768 output features.
        let stored = Linear {
            weight: random(&[10240, 1280], Kind::Half),
            bias: Some(random(&[10240, 1], Kind::Half).view([10240])),
        };
        let wide = Linear {
            weight: stored.weight.to_kind(Kind::Float),
            bias: stored.bias.as_ref().map(|b| b.to_kind(Kind::Float)),
        };
        // 2 x 16 tokens (chunked), 2 x 256 (widened whole) and the few rows of the time and
        // pooled-text embeddings (widened whole: chunked, MKL summed 2 to 11 rows otherwise).
        for shape in [
            [2, 16, 1280],
            [2, 256, 1280],
            [1, 2, 1280],
            [1, 5, 1280],
            [1, 11, 1280],
        ] {
            let x = Tensor::randn(shape, (Kind::Float, Device::Cpu));
            let got = stored.forward(&x).unwrap();
            let want = wide.forward(&x).unwrap();
            assert_eq!(got.size(), [shape[0], shape[1], 10240]);
            assert!(got.equal(&want), "{shape:?}: differs from the fp32 layer");
        }
        // Without a bias (SDXL's attention projections).
        let unbiased = Linear {
            weight: stored.weight.shallow_clone(),
            bias: None,
        };
        for rows in [2, 8, 32] {
            let x = Tensor::randn([rows, 1280], (Kind::Float, Device::Cpu));
            let want = x.linear::<Tensor>(&wide.weight, None);
            assert!(
                unbiased.forward(&x).unwrap().equal(&want),
                "no bias, {rows} rows"
            );
        }
        // Flattening must not make a wrong width fit: [2, 640] is 1 x 1280 values.
        let narrow = Tensor::randn([2, 640], (Kind::Float, Device::Cpu));
        assert!(stored.forward(&narrow).is_err());
    }

    #[test]
    fn an_fp16_kernel_over_few_positions_computes_the_fp32_convolution_bit_for_bit() {
        tch::manual_seed(12);
        let stored = Conv2d {
            weight: random(&[1280, 1280, 3, 3], Kind::Half),
            bias: random(&[1280, 1], Kind::Half).view([1280]),
            stride: 1,
            padding: 1,
        };
        let wide = Conv2d {
            weight: stored.weight.to_kind(Kind::Float),
            bias: stored.bias.to_kind(Kind::Float),
            stride: 1,
            padding: 1,
        };
        // 2 x 4 x 4 positions: the product, chunked; 2 x 16 x 16: the direct convolution.
        for shape in [[2, 1280, 4, 4], [2, 1280, 16, 16]] {
            let x = Tensor::randn(shape, (Kind::Float, Device::Cpu));
            let got = stored.forward(&x).unwrap();
            let want = wide.forward(&x).unwrap();
            assert!(
                got.equal(&want),
                "{shape:?}: differs from the fp32 convolution"
            );
        }
    }
}
