//! The VAE encoder and decoder stacks of Stable Diffusion's KL autoencoder (Rombach et al.
//! 2022, after Esser et al. 2021), mirroring diffusers `models/autoencoders/vae.py`
//! (`Encoder`, `Decoder`).
use tch::Tensor;

use crate::models::layers::{join, Conv2d, GroupNorm, TchResult};
use crate::models::resnet::norm_silu;
use crate::models::unet_2d_blocks::{
    BlockLayout, DownEncoderBlock2D, UNetMidBlock2D, UpDecoderBlock2D,
};
use crate::weights::Weights;

/// The VAE uses eps 1e-6 in every norm.
const VAE_EPS: f64 = 1e-6;

/// What the encoder and decoder stacks share: latent channels, the blocks' widths (from the
/// image side), resnets per block and norm groups.
#[derive(Debug, Clone, Copy)]
pub struct StackShape<'a> {
    pub latent_channels: i64,
    pub block_out_channels: &'a [i64],
    pub layers_per_block: usize,
    pub groups: i64,
}

/// diffusers `Encoder` with `double_z`: image `[B, in, H, W]` -> `[B, 2*latent, H/f, W/f]`
/// (mean and log-variance stacked on channels).
pub struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<DownEncoderBlock2D>,
    mid_block: UNetMidBlock2D,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    /// `in_channels`: the image's channels.
    pub fn new(w: &Weights, prefix: &str, in_channels: i64, shape: &StackShape) -> Self {
        let p = |n: &str| join(prefix, n);
        let boc = shape.block_out_channels;
        let (n, groups, norm) = (boc.len(), shape.groups, (shape.groups, VAE_EPS));
        Self {
            conv_in: Conv2d::new(w, &p("conv_in"), in_channels, boc[0], 3, 1, 1),
            down_blocks: (0..n)
                .map(|i| {
                    let layout = BlockLayout {
                        in_channels: if i == 0 { boc[0] } else { boc[i - 1] },
                        out_channels: boc[i],
                        layers: shape.layers_per_block,
                        resample: i + 1 < n,
                    };
                    DownEncoderBlock2D::new(w, &p(&format!("down_blocks.{i}")), layout, norm)
                })
                .collect(),
            mid_block: UNetMidBlock2D::new(w, &p("mid_block"), boc[n - 1], groups, VAE_EPS),
            conv_norm_out: GroupNorm::new(w, &p("conv_norm_out"), groups, boc[n - 1], VAE_EPS),
            conv_out: Conv2d::new(
                w,
                &p("conv_out"),
                boc[n - 1],
                2 * shape.latent_channels,
                3,
                1,
                1,
            ),
        }
    }

    pub fn forward(&self, x: &Tensor) -> TchResult<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for block in &self.down_blocks {
            h = block.forward(&h)?;
        }
        h = self.mid_block.forward(&h)?;
        self.conv_out
            .forward(&self.conv_norm_out.forward(&h)?.f_silu()?)
    }
}

/// `x` (`[B, C, H, W]`) with the same values laid out channels-last (NHWC strides), which
/// libtorch's CPU kernels recognise and keep: oneDNN then convolves it without copying it
/// into its blocked layout. Other ranks pass as they are.
pub fn to_channels_last(x: &Tensor) -> TchResult<Tensor> {
    if x.dim() != 4 {
        return Ok(x.shallow_clone());
    }
    x.f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_permute([0, 3, 1, 2])
}

/// Whether a 4-D `x` is laid out channels-last (channels adjacent in memory, then width,
/// height, batch) and not also plain contiguous.
pub fn is_channels_last(x: &Tensor) -> bool {
    let (size, stride) = (x.size(), x.stride());
    if size.len() != 4 || x.is_contiguous() {
        return false;
    }
    let [_, c, h, w] = size[..] else {
        return false;
    };
    let walk = |dim: usize, expected: i64, len: i64| len == 1 || stride[dim] == expected;
    walk(1, 1, c) && walk(3, c, w) && walk(2, c * w, h)
}

/// diffusers `Decoder`: latent `[B, latent, h, w]` -> image `[B, out, h*f, w*f]`.
pub struct Decoder {
    conv_in: Conv2d,
    mid_block: UNetMidBlock2D,
    up_blocks: Vec<UpDecoderBlock2D>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    /// `out_channels`: the image's channels.
    pub fn new(w: &Weights, prefix: &str, out_channels: i64, shape: &StackShape) -> Self {
        let p = |n: &str| join(prefix, n);
        let boc = shape.block_out_channels;
        let (n, groups, norm) = (boc.len(), shape.groups, (shape.groups, VAE_EPS));
        Self {
            conv_in: Conv2d::new(w, &p("conv_in"), shape.latent_channels, boc[n - 1], 3, 1, 1),
            mid_block: UNetMidBlock2D::new(w, &p("mid_block"), boc[n - 1], groups, VAE_EPS),
            up_blocks: (0..n)
                .map(|i| {
                    let block = n - 1 - i;
                    let layout = BlockLayout {
                        in_channels: boc[(block + 1).min(n - 1)],
                        out_channels: boc[block],
                        layers: shape.layers_per_block + 1,
                        resample: i + 1 < n,
                    };
                    UpDecoderBlock2D::new(w, &p(&format!("up_blocks.{i}")), layout, norm)
                })
                .collect(),
            conv_norm_out: GroupNorm::new(w, &p("conv_norm_out"), groups, boc[0], VAE_EPS),
            conv_out: Conv2d::new(w, &p("conv_out"), boc[0], out_channels, 3, 1, 1),
        }
    }

    /// On the CPU the decoder runs in channels-last (NHWC) layout: oneDNN convolves NHWC
    /// tensors as they are, where it copies NCHW inputs and outputs into its blocked layout
    /// (a 256-channel 3x3 convolution at 512x512 held 634 MB more than its 256 MB output),
    /// and GroupNorm, SiLU, the upsampler and the adds keep the layout. With the
    /// intermediates dropped early this halves the peak of an SDXL decode at 512x512. The
    /// image comes back contiguous NCHW.
    pub fn forward(&self, z: &Tensor) -> TchResult<Tensor> {
        self.forward_laid_out(z, z.device() == tch::Device::Cpu)
    }

    fn forward_laid_out(&self, z: &Tensor, channels_last: bool) -> TchResult<Tensor> {
        let z = if channels_last {
            to_channels_last(z)?
        } else {
            z.shallow_clone()
        };
        let mut h = self.conv_in.forward(&z)?;
        h = self.mid_block.forward(&h)?;
        for block in &self.up_blocks {
            // Handing over the only handle frees each block's input inside the block.
            h = block.forward(h)?;
        }
        h = norm_silu(&self.conv_norm_out, &h)?;
        self.conv_out.forward(&h)?.f_contiguous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::autoencoder_kl::VaeConfig;
    use crate::models::resnet::ResnetBlock2D;
    use std::collections::HashMap;
    use tch::{Device, Kind};

    /// Seeded random weights for whatever `build` asks of a [`Weights`] (each kernel scaled
    /// by its fan-in so activations stay near unit size through a stack).
    fn random_weights(build: impl Fn(&Weights)) -> Weights {
        let probe = Weights::new("probe", HashMap::new());
        build(&probe);
        tch::manual_seed(11);
        let tensors = probe
            .requested()
            .into_iter()
            .map(|(name, dims)| {
                let fan_in: i64 = dims.iter().skip(1).product();
                let t = Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu))
                    / (fan_in.max(1) as f64).sqrt();
                (name, t)
            })
            .collect();
        Weights::new("random", tensors)
    }

    /// A decoder of `config`'s shape with seeded random weights.
    fn random_decoder(config: &VaeConfig) -> Decoder {
        let shape = StackShape {
            latent_channels: config.latent_channels,
            block_out_channels: &config.block_out_channels,
            layers_per_block: config.layers_per_block,
            groups: config.norm_num_groups,
        };
        let weights = random_weights(|w| {
            let _ = Decoder::new(w, "", config.out_channels, &shape);
        });
        Decoder::new(&weights, "", config.out_channels, &shape)
    }

    fn max_error(got: &Tensor, want: &Tensor) -> (f64, f64) {
        let scale = want.abs().max().double_value(&[]);
        (
            (got - want).abs().max().double_value(&[]),
            scale.max(f64::MIN_POSITIVE),
        )
    }

    #[test]
    fn group_norm_in_place_equals_group_norm_in_either_layout() {
        let weights = random_weights(|w| {
            let _ = GroupNorm::new(w, "norm", 4, 16, VAE_EPS);
        });
        let norm = GroupNorm::new(&weights, "norm", 4, 16, VAE_EPS);
        // Off-centre values: the shift must use the group's mean.
        let x = Tensor::randn([2, 16, 9, 7], (Kind::Float, Device::Cpu)) * 3.0 + 5.0;
        let want = norm.forward(&x).unwrap();
        for layout in [x.copy(), to_channels_last(&x).unwrap()] {
            let mut got = layout.shallow_clone();
            norm.forward_in_place(&mut got).unwrap();
            assert_eq!(got.data_ptr(), layout.data_ptr(), "written over the input");
            let (err, scale) = max_error(&got, &want);
            assert!(err <= 1e-5 * scale, "max error {err}, scale {scale}");
        }
        // Another kind takes the out-of-place norm.
        let mut double = x.to_kind(Kind::Double);
        let want = norm.forward(&double).unwrap();
        norm.forward_in_place(&mut double).unwrap();
        assert_eq!(max_error(&double, &want).0, 0.0);
    }

    #[test]
    fn the_overwriting_resnet_equals_the_resnet() {
        for (cin, cout) in [(16, 8), (8, 8)] {
            let weights = random_weights(|w| {
                let _ = ResnetBlock2D::new(w, "r", cin, cout, None, 4, VAE_EPS);
            });
            let resnet = ResnetBlock2D::new(&weights, "r", cin, cout, None, 4, VAE_EPS);
            let x = to_channels_last(&Tensor::randn([1, cin, 10, 6], (Kind::Float, Device::Cpu)))
                .unwrap();
            let want = resnet.forward(&x, None).unwrap();
            let got = resnet.forward_overwriting(x.copy()).unwrap();
            let (err, scale) = max_error(&got, &want);
            assert!(
                err <= 1e-5 * scale,
                "{cin}->{cout}: max error {err}, scale {scale}"
            );
        }
    }

    /// A named op on a tensor, for the layout test.
    type Op<'a> = (&'a str, Box<dyn Fn(&Tensor) -> Tensor + 'a>);

    #[test]
    fn the_decoder_ops_keep_channels_last_and_their_values() {
        // The decoder's memory saving rests on every op keeping NHWC (an op that returned
        // NCHW would bring oneDNN's copies back for the convolution after it).
        tch::manual_seed(3);
        let cpu = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([1, 32, 12, 10], cpu);
        let xl = to_channels_last(&x).unwrap();
        assert!(is_channels_last(&xl) && !is_channels_last(&x));
        assert_eq!(xl.size(), x.size());
        let weights = Weights::new(
            "layout test",
            HashMap::from([
                ("norm.weight".to_string(), Tensor::randn([32], cpu)),
                ("norm.bias".to_string(), Tensor::randn([32], cpu)),
                (
                    "conv.weight".to_string(),
                    Tensor::randn([16, 32, 3, 3], cpu) / 17.0,
                ),
                ("conv.bias".to_string(), Tensor::randn([16], cpu)),
                (
                    "skip.weight".to_string(),
                    Tensor::randn([16, 32, 1, 1], cpu) / 6.0,
                ),
                ("skip.bias".to_string(), Tensor::randn([16], cpu)),
            ]),
        );
        let norm = GroupNorm::new(&weights, "norm", 8, 32, VAE_EPS);
        let conv = Conv2d::new(&weights, "conv", 32, 16, 3, 1, 1);
        let skip = Conv2d::new(&weights, "skip", 32, 16, 1, 1, 0);
        let ops: Vec<Op> = vec![
            ("group norm", Box::new(|t| norm.forward(t).unwrap())),
            ("norm and silu", Box::new(|t| norm_silu(&norm, t).unwrap())),
            ("silu", Box::new(|t| t.silu())),
            (
                "upsample",
                Box::new(|t| t.upsample_nearest2d([24, 20], None, None)),
            ),
            ("conv 3x3", Box::new(|t| conv.forward(t).unwrap())),
            ("conv 1x1", Box::new(|t| skip.forward(t).unwrap())),
            ("add", Box::new(|t| t + t.sin())),
        ];
        for (name, op) in ops {
            let (want, got) = (op(&x), op(&xl));
            assert!(
                is_channels_last(&got),
                "{name} gave strides {:?}",
                got.stride()
            );
            let scale = want.abs().max().double_value(&[]);
            let err = (got - &want).abs().max().double_value(&[]);
            assert!(
                err <= 1e-5 * scale,
                "{name}: max error {err}, scale {scale}"
            );
        }
    }

    #[test]
    fn the_channels_last_decode_equals_the_nchw_decode() {
        let config = VaeConfig {
            block_out_channels: vec![32, 64, 64],
            layers_per_block: 2,
            norm_num_groups: 8,
            ..VaeConfig::sd()
        };
        let decoder = random_decoder(&config);
        let z = Tensor::randn([2, 4, 6, 5], (Kind::Float, Device::Cpu)) * 3.0;
        let nchw = tch::no_grad(|| decoder.forward_laid_out(&z, false)).unwrap();
        let nhwc = tch::no_grad(|| decoder.forward(&z)).unwrap();
        assert_eq!(nhwc.size(), [2, 3, 24, 20]);
        assert!(nhwc.is_contiguous(), "the image comes back NCHW");
        assert!(!is_channels_last(&nhwc));
        let scale = nchw.abs().max().double_value(&[]);
        let err = (&nhwc - &nchw).abs().max().double_value(&[]);
        assert!(scale > 0.1, "a decode of {scale} tests nothing");
        assert!(err <= 1e-5 * scale, "max error {err}, scale {scale}");
    }
}
