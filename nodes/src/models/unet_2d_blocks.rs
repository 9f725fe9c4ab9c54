//! The down, mid and up blocks of the SD UNet and VAE, mirroring diffusers
//! `models/unets/unet_2d_blocks.py`: `CrossAttnDownBlock2D` / `DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D` / `UpBlock2D` (Rombach et al. 2022), and the
//! VAE's `DownEncoderBlock2D`, `UNetMidBlock2D`, `UpDecoderBlock2D`.
use tch::Tensor;

use crate::models::attention::{
    CrossContext, SpatialSelfAttention, Transformer2DModel, TransformerShape,
};
use crate::models::layers::{join, TchResult};
use crate::models::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::weights::Weights;

/// What every UNet block shares: resnet norm groups and eps, time-embedding width, and the
/// transformer settings (channels and heads are per block).
#[derive(Debug, Clone, Copy)]
pub struct UNetBlockShape {
    pub groups: i64,
    pub eps: f64,
    pub temb_channels: i64,
    pub context_dim: i64,
    pub transformer_layers: usize,
    pub use_linear_projection: bool,
}

impl UNetBlockShape {
    fn transformer(&self, channels: i64, heads: i64) -> TransformerShape {
        TransformerShape {
            channels,
            heads,
            context_dim: self.context_dim,
            groups: self.groups,
            layers: self.transformer_layers,
            use_linear_projection: self.use_linear_projection,
        }
    }
}

/// The layout of one block on a down or up path: how many resnets, the channels entering
/// and leaving it, and whether it ends in a 2x down/upsampler (all but the last block).
#[derive(Debug, Clone, Copy)]
pub struct BlockLayout {
    /// Channels entering the block (for a UNet up block: from the previous up block).
    pub in_channels: i64,
    pub out_channels: i64,
    pub layers: usize,
    pub resample: bool,
}

/// Resnet `i` of a block under `prefix` (`temb_channels` `None` in the VAE).
fn resnet_at(
    w: &Weights,
    prefix: &str,
    i: usize,
    (in_channels, out_channels): (i64, i64),
    temb_channels: Option<i64>,
    (groups, eps): (i64, f64),
) -> ResnetBlock2D {
    ResnetBlock2D::new(
        w,
        &join(prefix, &format!("resnets.{i}")),
        in_channels,
        out_channels,
        temb_channels,
        groups,
        eps,
    )
}

/// The body of `CrossAttnDownBlock2D` / `CrossAttnUpBlock2D` (and their plain variants):
/// time-conditioned resnets, each followed by a transformer when the block cross-attends.
struct CrossAttnLayers {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl CrossAttnLayers {
    /// `resnet_in(i)`: the channels entering resnet `i`.
    fn new(
        w: &Weights,
        prefix: &str,
        layout: &BlockLayout,
        heads: Option<i64>,
        s: &UNetBlockShape,
        resnet_in: impl Fn(usize) -> i64,
    ) -> Self {
        let out = layout.out_channels;
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for i in 0..layout.layers {
            let channels = (resnet_in(i), out);
            let norm = (s.groups, s.eps);
            resnets.push(resnet_at(
                w,
                prefix,
                i,
                channels,
                Some(s.temb_channels),
                norm,
            ));
            if let Some(heads) = heads {
                let name = join(prefix, &format!("attentions.{i}"));
                attentions.push(Transformer2DModel::new(w, &name, s.transformer(out, heads)));
            }
        }
        Self {
            resnets,
            attentions,
        }
    }

    /// Resnet `i`, then its transformer if there is one.
    fn step(
        &self,
        i: usize,
        h: &Tensor,
        temb: &Tensor,
        context: CrossContext<'_>,
    ) -> TchResult<Tensor> {
        let h = self.resnets[i].forward(h, Some(temb))?;
        match self.attentions.get(i) {
            Some(attn) => attn.forward(&h, context),
            None => Ok(h),
        }
    }
}

/// `CrossAttnDownBlock2D` (with `heads`) or `DownBlock2D` (without): resnets, each followed
/// by a transformer if cross-attending, then an optional stride-2 downsampler.
pub struct UNetDownBlock {
    layers: CrossAttnLayers,
    downsampler: Option<Downsample2D>,
}

impl UNetDownBlock {
    pub fn new(
        w: &Weights,
        prefix: &str,
        layout: BlockLayout,
        heads: Option<i64>,
        s: &UNetBlockShape,
    ) -> Self {
        let resnet_in = |i| match i {
            0 => layout.in_channels,
            _ => layout.out_channels,
        };
        Self {
            layers: CrossAttnLayers::new(w, prefix, &layout, heads, s, resnet_in),
            downsampler: layout.resample.then(|| {
                Downsample2D::new(
                    w,
                    &join(prefix, "downsamplers.0"),
                    layout.out_channels,
                    false,
                )
            }),
        }
    }

    /// Returns the block output and the skip connections it leaves for the up path.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: CrossContext<'_>,
    ) -> TchResult<(Tensor, Vec<Tensor>)> {
        let mut h = x.shallow_clone();
        let mut skips = Vec::new();
        for i in 0..self.layers.resnets.len() {
            h = self.layers.step(i, &h, temb, context)?;
            skips.push(h.shallow_clone());
        }
        if let Some(down) = &self.downsampler {
            h = down.forward(&h)?;
            skips.push(h.shallow_clone());
        }
        Ok((h, skips))
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (transformer, resnet).
pub struct UNetMidBlock2DCrossAttn {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl UNetMidBlock2DCrossAttn {
    pub fn new(w: &Weights, prefix: &str, channels: i64, heads: i64, s: &UNetBlockShape) -> Self {
        let resnet = |i| {
            let norm = (s.groups, s.eps);
            resnet_at(
                w,
                prefix,
                i,
                (channels, channels),
                Some(s.temb_channels),
                norm,
            )
        };
        Self {
            resnets: vec![resnet(0), resnet(1)],
            attentions: vec![Transformer2DModel::new(
                w,
                &join(prefix, "attentions.0"),
                s.transformer(channels, heads),
            )],
        }
    }

    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: CrossContext<'_>,
    ) -> TchResult<Tensor> {
        let mut h = self.resnets[0].forward(x, Some(temb))?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            h = attn.forward(&h, context)?;
            h = resnet.forward(&h, Some(temb))?;
        }
        Ok(h)
    }
}

/// `CrossAttnUpBlock2D` (with `heads`) or `UpBlock2D` (without): each resnet takes the
/// previous output concatenated with one skip connection; then an optional upsampler.
pub struct UNetUpBlock {
    layers: CrossAttnLayers,
    upsampler: Option<Upsample2D>,
}

impl UNetUpBlock {
    /// `skip_in_channels`: channels of the down block below (its last skip);
    /// `layout.in_channels`: channels arriving from the previous up block.
    pub fn new(
        w: &Weights,
        prefix: &str,
        layout: BlockLayout,
        skip_in_channels: i64,
        heads: Option<i64>,
        s: &UNetBlockShape,
    ) -> Self {
        let out = layout.out_channels;
        let resnet_in = |i| {
            let skip = if i == layout.layers - 1 {
                skip_in_channels
            } else {
                out
            };
            let previous = if i == 0 { layout.in_channels } else { out };
            previous + skip
        };
        Self {
            layers: CrossAttnLayers::new(w, prefix, &layout, heads, s, resnet_in),
            upsampler: layout
                .resample
                .then(|| Upsample2D::new(w, &join(prefix, "upsamplers.0"), out)),
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.resnets.len()
    }

    /// Consumes `num_layers()` skips from the end of `skips`; `upsample_size` is the spatial
    /// size of the skip the next block will meet.
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        context: CrossContext<'_>,
        upsample_size: Option<[i64; 2]>,
    ) -> TchResult<Tensor> {
        let mut h = x.shallow_clone();
        for i in 0..self.num_layers() {
            let skip = skips.pop().ok_or_else(|| {
                tch::TchError::Shape("UNet up block: ran out of skip connections".into())
            })?;
            h = Tensor::f_cat(&[h, skip], 1)?;
            h = self.layers.step(i, &h, temb, context)?;
        }
        match &self.upsampler {
            Some(up) => up.forward(&h, upsample_size),
            None => Ok(h),
        }
    }
}

/// The resnets of a VAE block: no time embedding, the first one changing the width.
fn plain_resnets(
    w: &Weights,
    prefix: &str,
    layout: &BlockLayout,
    norm: (i64, f64),
) -> Vec<ResnetBlock2D> {
    (0..layout.layers)
        .map(|i| {
            let cin = if i == 0 {
                layout.in_channels
            } else {
                layout.out_channels
            };
            resnet_at(w, prefix, i, (cin, layout.out_channels), None, norm)
        })
        .collect()
}

fn run_plain_resnets(resnets: &[ResnetBlock2D], x: &Tensor) -> TchResult<Tensor> {
    let mut h = x.shallow_clone();
    for resnet in resnets {
        h = resnet.forward(&h, None)?;
    }
    Ok(h)
}

/// VAE `DownEncoderBlock2D`: resnets without time embedding, then the asymmetric-padded
/// downsampler (all but the last block).
pub struct DownEncoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
}

impl DownEncoderBlock2D {
    /// `norm`: the resnets' GroupNorm groups and eps.
    pub fn new(w: &Weights, prefix: &str, layout: BlockLayout, norm: (i64, f64)) -> Self {
        let out = layout.out_channels;
        Self {
            resnets: plain_resnets(w, prefix, &layout, norm),
            downsampler: layout
                .resample
                .then(|| Downsample2D::new(w, &join(prefix, "downsamplers.0"), out, true)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> TchResult<Tensor> {
        let h = run_plain_resnets(&self.resnets, x)?;
        match &self.downsampler {
            Some(down) => down.forward(&h),
            None => Ok(h),
        }
    }
}

/// VAE `UpDecoderBlock2D`: resnets without time embedding, then a 2x upsampler (all but the
/// last block).
pub struct UpDecoderBlock2D {
    resnets: Vec<ResnetBlock2D>,
    upsampler: Option<Upsample2D>,
}

impl UpDecoderBlock2D {
    /// `norm`: the resnets' GroupNorm groups and eps.
    pub fn new(w: &Weights, prefix: &str, layout: BlockLayout, norm: (i64, f64)) -> Self {
        let out = layout.out_channels;
        Self {
            resnets: plain_resnets(w, prefix, &layout, norm),
            upsampler: layout
                .resample
                .then(|| Upsample2D::new(w, &join(prefix, "upsamplers.0"), out)),
        }
    }

    /// Takes `x` by value, and may write over it: the decoder hands over a tensor nothing
    /// else reads, so each resnet's input (at the last block 256 MiB for a 512x512 image) is
    /// reused or freed as soon as it has been read.
    pub fn forward(&self, x: Tensor) -> TchResult<Tensor> {
        let mut h = x;
        for resnet in &self.resnets {
            give_back_free_pages(&h);
            h = resnet.forward_overwriting(h)?;
        }
        match &self.upsampler {
            Some(up) => {
                give_back_free_pages(&h);
                up.forward_consuming(h)
            }
            None => Ok(h),
        }
    }
}

/// On the CPU, hands the heap's free pages back to the kernel before a decoder step. weft keeps
/// freed buffers in the heap (`weft_engine::host_memory`), where they stay resident; a step's
/// buffers often fit none of the holes the last ones left (the upsampler's are 4x a resnet's)
/// and were added on top: a 512x512 SDXL decode rose by 1.1 GiB where 0.5 GiB was alive at
/// once, by 0.63 GiB with this before each resnet and upsampler. The pages the next buffers
/// reuse are faulted in again: the decode took about 7% longer than without it. Small
/// feature maps skip it ([`GIVE_BACK_MIN_ELEMENTS`]).
fn give_back_free_pages(h: &Tensor) {
    if h.device() == tch::Device::Cpu && h.numel() >= GIVE_BACK_MIN_ELEMENTS {
        weft_engine::host_memory::release_free_memory();
    }
}

/// Feature-map elements (16 MiB in fp32) below which a decoder step does not give free pages
/// back: the holes such steps leave are small, and the trims and refaults were 11% of a 128x128
/// SDXL decode (0.95 -> 0.85 s; its resident rise 45 -> 65 MB; the 512x512 decode's rise the
/// same 0.63 GiB; `examples/vae_decode_peak`, 2026-12-06).
const GIVE_BACK_MIN_ELEMENTS: usize = 4 << 20;

/// VAE `UNetMidBlock2D`: resnet, single-head spatial self-attention, resnet.
pub struct UNetMidBlock2D {
    resnet_0: ResnetBlock2D,
    attention: SpatialSelfAttention,
    resnet_1: ResnetBlock2D,
}

impl UNetMidBlock2D {
    pub fn new(w: &Weights, prefix: &str, channels: i64, groups: i64, eps: f64) -> Self {
        let resnet = |i| resnet_at(w, prefix, i, (channels, channels), None, (groups, eps));
        Self {
            resnet_0: resnet(0),
            attention: SpatialSelfAttention::new(
                w,
                &join(prefix, "attentions.0"),
                channels,
                groups,
                eps,
            ),
            resnet_1: resnet(1),
        }
    }

    pub fn forward(&self, x: &Tensor) -> TchResult<Tensor> {
        let h = self.resnet_0.forward(x, None)?;
        let h = self.attention.forward(&h)?;
        self.resnet_1.forward(&h, None)
    }
}
