//! The VAE encoder and decoder stacks of Stable Diffusion's KL autoencoder (Rombach et al.
//! 2022, after Esser et al. 2021), mirroring diffusers `models/autoencoders/vae.py`
//! (`Encoder`, `Decoder`).
use tch::Tensor;

use crate::models::layers::{join, Conv2d, GroupNorm, TchResult};
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

    pub fn forward(&self, z: &Tensor) -> TchResult<Tensor> {
        let mut h = self.conv_in.forward(z)?;
        h = self.mid_block.forward(&h)?;
        for block in &self.up_blocks {
            h = block.forward(&h)?;
        }
        self.conv_out
            .forward(&self.conv_norm_out.forward(&h)?.f_silu()?)
    }
}
