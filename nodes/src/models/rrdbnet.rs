//! RRDBNet, the ESRGAN / Real-ESRGAN generator (Wang et al. 2018, "ESRGAN", and 2021,
//! "Real-ESRGAN"), following basicsr's `rrdbnet_arch.py`: state-dict keys `conv_first`,
//! `body.N.rdbK.convM`, `conv_body`, `conv_up1`, `conv_up2`, `conv_hr`, `conv_last`.
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{Result, TchContext};
use crate::models::tiled::{check_image_batch, ImageToImage};
use crate::weights::Weights;

/// Residual scaling of the dense blocks (basicsr uses 0.2 throughout).
const RESIDUAL_SCALE: f64 = 0.2;
const LEAKY_SLOPE: f64 = 0.2;

use super::layers::Conv2d;

/// Leaky ReLU with slope 0.2; `max(x, 0.2 x)` equals it exactly for a slope below one
/// (tch's `leaky_relu` has no slope argument).
pub(crate) fn leaky_relu(x: &Tensor) -> Result<Tensor, tch::TchError> {
    x.f_maximum(&x.f_mul_scalar(LEAKY_SLOPE)?)
}

/// Nearest-neighbour upsampling by an integer factor.
pub(crate) fn upsample_nearest(x: &Tensor, factor: i64) -> Result<Tensor, tch::TchError> {
    let (h, w) = (x.size()[2], x.size()[3]);
    x.f_upsample_nearest2d([h * factor, w * factor], None, None)
}

/// RRDBNet hyper-parameters (basicsr's constructor arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct RrdbNetConfig {
    pub num_in_ch: i64,
    pub num_out_ch: i64,
    /// 1, 2 or 4; scales 1 and 2 pixel-unshuffle the input first, as basicsr does.
    pub scale: i64,
    pub num_feat: i64,
    pub num_block: i64,
    pub num_grow_ch: i64,
}

impl RrdbNetConfig {
    /// RealESRGAN_x4plus: 23 blocks, 64 features, growth 32, x4.
    pub fn x4plus() -> Self {
        Self {
            num_in_ch: 3,
            num_out_ch: 3,
            scale: 4,
            num_feat: 64,
            num_block: 23,
            num_grow_ch: 32,
        }
    }
}

#[derive(Debug)]
struct ResidualDenseBlock {
    convs: [Conv2d; 5],
}

impl ResidualDenseBlock {
    fn new(w: &Weights, prefix: &str, nf: i64, gc: i64) -> Self {
        let conv = |i: i64, out: i64| {
            Conv2d::same(w, &format!("{prefix}.conv{i}"), nf + (i - 1) * gc, out, 3)
        };
        Self {
            convs: [
                conv(1, gc),
                conv(2, gc),
                conv(3, gc),
                conv(4, gc),
                conv(5, nf),
            ],
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let mut features = vec![x.shallow_clone()];
        for conv in &self.convs[..4] {
            let y = leaky_relu(&conv.forward(&Tensor::f_cat(&features, 1)?)?)?;
            features.push(y);
        }
        let out = self.convs[4].forward(&Tensor::f_cat(&features, 1)?)?;
        out.f_mul_scalar(RESIDUAL_SCALE)?.f_add(x)
    }
}

#[derive(Debug)]
struct Rrdb {
    rdbs: [ResidualDenseBlock; 3],
}

impl Rrdb {
    fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let mut out = x.shallow_clone();
        for rdb in &self.rdbs {
            out = rdb.forward(&out)?;
        }
        out.f_mul_scalar(RESIDUAL_SCALE)?.f_add(x)
    }
}

/// The RRDBNet generator. Input and output: RGB in [0, 1], NCHW (output not clamped).
#[derive(Debug)]
pub struct RrdbNet {
    config: RrdbNetConfig,
    conv_first: Conv2d,
    body: Vec<Rrdb>,
    conv_body: Conv2d,
    conv_up1: Conv2d,
    conv_up2: Conv2d,
    conv_hr: Conv2d,
    conv_last: Conv2d,
}

impl RrdbNet {
    /// Builds the model from `w` (keys without prefix); call `w.finish` afterwards.
    pub fn from_weights(w: &Weights, config: RrdbNetConfig) -> Result<Self> {
        let unshuffle = match config.scale {
            4 => 1,
            2 => 4,
            1 => 16,
            other => {
                return Err(crate::ModelError::Other(format!(
                    "RRDBNet: scale must be 1, 2 or 4, not {other}"
                )))
            }
        };
        let (nf, gc) = (config.num_feat, config.num_grow_ch);
        let body = (0..config.num_block)
            .map(|b| Rrdb {
                rdbs: [1, 2, 3]
                    .map(|r| ResidualDenseBlock::new(w, &format!("body.{b}.rdb{r}"), nf, gc)),
            })
            .collect();
        Ok(Self {
            conv_first: Conv2d::same(w, "conv_first", config.num_in_ch * unshuffle, nf, 3),
            body,
            conv_body: Conv2d::same(w, "conv_body", nf, nf, 3),
            conv_up1: Conv2d::same(w, "conv_up1", nf, nf, 3),
            conv_up2: Conv2d::same(w, "conv_up2", nf, nf, 3),
            conv_hr: Conv2d::same(w, "conv_hr", nf, nf, 3),
            conv_last: Conv2d::same(w, "conv_last", nf, config.num_out_ch, 3),
            config,
        })
    }

    /// Loads a safetensors file with basicsr's key names (what
    /// `scripts/convert/realesrgan_ncnn.py` writes), as fp32 on `device`.
    pub fn load(path: &Path, config: RrdbNetConfig, device: Device) -> Result<Self> {
        let w = Weights::from_safetensors(path, device, Some(Kind::Float))?;
        let model = Self::from_weights(&w, config)?;
        w.finish("RRDBNet")?;
        Ok(model)
    }

    pub fn config(&self) -> &RrdbNetConfig {
        &self.config
    }

    fn forward_unchecked(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let x = match self.config.scale {
            2 => x.f_pixel_unshuffle(2)?,
            1 => x.f_pixel_unshuffle(4)?,
            _ => x.shallow_clone(),
        };
        let feat = self.conv_first.forward(&x)?;
        let mut body = feat.shallow_clone();
        for block in &self.body {
            body = block.forward(&body)?;
        }
        let feat = feat.f_add(&self.conv_body.forward(&body)?)?;
        let feat = leaky_relu(&self.conv_up1.forward(&upsample_nearest(&feat, 2)?)?)?;
        let feat = leaky_relu(&self.conv_up2.forward(&upsample_nearest(&feat, 2)?)?)?;
        self.conv_last
            .forward(&leaky_relu(&self.conv_hr.forward(&feat)?)?)
    }
}

impl ImageToImage for RrdbNet {
    fn name(&self) -> &str {
        "RRDBNet"
    }

    fn scale(&self) -> i64 {
        self.config.scale
    }

    fn forward(&self, image: &Tensor) -> Result<Tensor> {
        // Scales 1 and 2 pixel-unshuffle by 4 and 2, so the sides must divide by that.
        let multiple = match self.config.scale {
            1 => 4,
            2 => 2,
            _ => 1,
        };
        let x = check_image_batch(image, self.config.num_in_ch, multiple, "RRDBNet input")?
            .to_device(self.conv_first.device())
            .to_kind(self.conv_first.kind());
        tch::no_grad(|| self.forward_unchecked(&x)).context(|| "RRDBNet forward".to_string())
    }
}
