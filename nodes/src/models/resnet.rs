//! ResNet building blocks shared by the SD UNet and VAE, mirroring diffusers `models/resnet.py`
//! (`ResnetBlock2D`, `Downsample2D`, `Upsample2D`) after Ho et al. 2020 (DDPM) and
//! Rombach et al. 2022 (LDM).
use tch::Tensor;

use crate::models::layers::{join, Conv2d, GroupNorm, Linear, TchResult};
use crate::weights::Weights;

/// diffusers `ResnetBlock2D` (time-scale-shift "default"): GroupNorm, SiLU, conv, plus the
/// projected time embedding, GroupNorm, SiLU, conv, and a 1x1 conv shortcut when the
/// channel count changes. Output scale factor 1 (as in SD).
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    /// `temb_channels` is `None` for the VAE, which has no time embedding.
    pub fn new(
        w: &Weights,
        prefix: &str,
        in_channels: i64,
        out_channels: i64,
        temb_channels: Option<i64>,
        groups: i64,
        eps: f64,
    ) -> Self {
        Self {
            norm1: GroupNorm::new(w, &join(prefix, "norm1"), groups, in_channels, eps),
            conv1: Conv2d::new(
                w,
                &join(prefix, "conv1"),
                in_channels,
                out_channels,
                3,
                1,
                1,
            ),
            time_emb_proj: temb_channels
                .map(|t| Linear::new(w, &join(prefix, "time_emb_proj"), t, out_channels, true)),
            norm2: GroupNorm::new(w, &join(prefix, "norm2"), groups, out_channels, eps),
            conv2: Conv2d::new(
                w,
                &join(prefix, "conv2"),
                out_channels,
                out_channels,
                3,
                1,
                1,
            ),
            conv_shortcut: (in_channels != out_channels).then(|| {
                Conv2d::new(
                    w,
                    &join(prefix, "conv_shortcut"),
                    in_channels,
                    out_channels,
                    1,
                    1,
                    0,
                )
            }),
        }
    }

    /// Each intermediate is dropped as soon as the next exists and SiLU and the residual add
    /// run in place (on tensors made here), so at most the input, one normalised tensor and
    /// one convolution output are alive at once: at a VAE's full resolution each is
    /// 128-256 MiB. The values are those of the out-of-place expression, bit for bit.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> TchResult<Tensor> {
        let mut h = norm_silu(&self.norm1, x)?;
        h = self.conv1.forward(&h)?;
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj
                .forward(&temb.f_silu()?)?
                .f_unsqueeze(-1)?
                .f_unsqueeze(-1)?;
            let _ = h.f_add_(&t)?;
        }
        h = norm_silu(&self.norm2, &h)?;
        let mut h = self.conv2.forward(&h)?;
        let _ = match &self.conv_shortcut {
            Some(conv) => h.f_add_(&conv.forward(x)?)?,
            None => h.f_add_(x)?,
        };
        Ok(h)
    }

    /// [`Self::forward`] without a time embedding (the VAE's) on an input that nothing else
    /// reads: a block that changes channels convolves its shortcut first and then normalises
    /// the input in place, so the input and its normalised copy are not held together (at the
    /// SDXL decoder's last block 256 MiB each at 512x512, and the decode's peak).
    pub fn forward_overwriting(&self, mut x: Tensor) -> TchResult<Tensor> {
        let Some(conv_shortcut) = &self.conv_shortcut else {
            return self.forward(&x, None);
        };
        let shortcut = conv_shortcut.forward(&x)?;
        self.norm1.forward_in_place(&mut x)?;
        let _ = x.f_silu_()?;
        let mut h = self.conv1.forward(&x)?;
        drop(x);
        h = norm_silu(&self.norm2, &h)?;
        let mut h = self.conv2.forward(&h)?;
        let _ = h.f_add_(&shortcut)?;
        Ok(h)
    }
}

/// `silu(norm(x))`, the SiLU in place on the fresh normalised tensor.
pub fn norm_silu(norm: &GroupNorm, x: &Tensor) -> TchResult<Tensor> {
    let mut h = norm.forward(x)?;
    let _ = h.f_silu_()?;
    Ok(h)
}

/// diffusers `Downsample2D` with a 3x3 stride-2 conv. The UNet pads by 1 on every side; the
/// VAE encoder (padding 0 in its config) pads only right and bottom, as the LDM code does.
pub struct Downsample2D {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample2D {
    pub fn new(w: &Weights, prefix: &str, channels: i64, pad_right_bottom: bool) -> Self {
        let padding = if pad_right_bottom { 0 } else { 1 };
        Self {
            conv: Conv2d::new(w, &join(prefix, "conv"), channels, channels, 3, 2, padding),
            pad_right_bottom,
        }
    }

    pub fn forward(&self, x: &Tensor) -> TchResult<Tensor> {
        if self.pad_right_bottom {
            self.conv.forward(&x.f_constant_pad_nd([0, 1, 0, 1])?)
        } else {
            self.conv.forward(x)
        }
    }
}

/// diffusers `Upsample2D`: nearest-neighbour upsampling, then a 3x3 conv. The UNet passes the
/// size of the skip connection it is about to meet, so odd sizes round-trip.
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(w: &Weights, prefix: &str, channels: i64) -> Self {
        Self {
            conv: Conv2d::new(w, &join(prefix, "conv"), channels, channels, 3, 1, 1),
        }
    }

    pub fn forward(&self, x: &Tensor, output_size: Option<[i64; 2]>) -> TchResult<Tensor> {
        let size = x.size();
        let output_size = output_size.unwrap_or([size[2] * 2, size[3] * 2]);
        let up = x.f_upsample_nearest2d(output_size, None, None)?;
        self.conv.forward(&up)
    }

    /// [`Self::forward`] at twice the size, letting go of `x` before the convolution: when
    /// the caller handed over its last handle, the input is freed while the upsampled tensor
    /// is convolved.
    pub fn forward_consuming(&self, x: Tensor) -> TchResult<Tensor> {
        let size = x.size();
        let up = x.f_upsample_nearest2d([size[2] * 2, size[3] * 2], None, None)?;
        drop(x);
        self.conv.forward(&up)
    }
}
