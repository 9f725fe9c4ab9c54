//! SRVGGNetCompact, the compact Real-ESRGAN upscaler (realesr-animevideov3,
//! realesr-general-x4v3), following basicsr's `srvgg_arch.py`: convolutions and PReLUs in one
//! list `body` (keys `body.N`), a pixel shuffle, plus the nearest-upsampled input.
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{Result, TchContext};
use crate::models::layers::Conv2d;
use crate::models::rrdbnet::upsample_nearest;
use crate::models::tiled::{check_image_batch, ImageToImage};
use crate::weights::Weights;

/// SRVGGNetCompact hyper-parameters (basicsr's constructor arguments; activation PReLU).
#[derive(Debug, Clone, PartialEq)]
pub struct SrVggNetCompactConfig {
    pub num_in_ch: i64,
    pub num_out_ch: i64,
    pub num_feat: i64,
    pub num_conv: i64,
    pub upscale: i64,
}

impl SrVggNetCompactConfig {
    /// realesr-animevideov3: 16 body convolutions, 64 features, x4.
    pub fn animevideov3() -> Self {
        Self {
            num_in_ch: 3,
            num_out_ch: 3,
            num_feat: 64,
            num_conv: 16,
            upscale: 4,
        }
    }
}

/// The compact upscaler. Input and output: RGB in [0, 1], NCHW (output not clamped).
#[derive(Debug)]
pub struct SrVggNetCompact {
    config: SrVggNetCompactConfig,
    convs: Vec<Conv2d>,
    /// One PReLU per convolution but the last.
    prelu_weights: Vec<Tensor>,
}

impl SrVggNetCompact {
    /// Builds the model from `w`; call `w.finish` afterwards.
    pub fn from_weights(w: &Weights, config: SrVggNetCompactConfig) -> Self {
        let nf = config.num_feat;
        let mut convs = vec![Conv2d::same(w, "body.0", config.num_in_ch, nf, 3)];
        let mut prelu_weights = vec![w.get("body.1.weight", &[nf])];
        for i in 0..config.num_conv {
            convs.push(Conv2d::same(w, &format!("body.{}", 2 * i + 2), nf, nf, 3));
            prelu_weights.push(w.get(&format!("body.{}.weight", 2 * i + 3), &[nf]));
        }
        let out_ch = config.num_out_ch * config.upscale * config.upscale;
        let last = format!("body.{}", 2 * config.num_conv + 2);
        convs.push(Conv2d::same(w, &last, nf, out_ch, 3));
        Self {
            config,
            convs,
            prelu_weights,
        }
    }

    /// Loads a safetensors file with basicsr's key names (what
    /// `scripts/convert/realesrgan_ncnn.py` writes), as fp32 on `device`.
    pub fn load(path: &Path, config: SrVggNetCompactConfig, device: Device) -> Result<Self> {
        let w = Weights::from_safetensors(path, device, Some(Kind::Float))?;
        let model = Self::from_weights(&w, config);
        w.finish("SRVGGNetCompact")?;
        Ok(model)
    }

    pub fn config(&self) -> &SrVggNetCompactConfig {
        &self.config
    }

    fn forward_unchecked(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let mut out = x.shallow_clone();
        for (i, conv) in self.convs.iter().enumerate() {
            out = conv.forward(&out)?;
            if let Some(slope) = self.prelu_weights.get(i) {
                out = out.f_prelu(slope)?;
            }
        }
        let out = out.f_pixel_shuffle(self.config.upscale)?;
        out.f_add(&upsample_nearest(x, self.config.upscale)?)
    }
}

impl ImageToImage for SrVggNetCompact {
    fn name(&self) -> &str {
        "SRVGGNetCompact"
    }

    fn scale(&self) -> i64 {
        self.config.upscale
    }

    fn forward(&self, image: &Tensor) -> Result<Tensor> {
        let x = check_image_batch(image, self.config.num_in_ch, 1, "SRVGGNetCompact input")?
            .to_device(self.convs[0].device())
            .to_kind(self.convs[0].kind());
        tch::no_grad(|| self.forward_unchecked(&x))
            .context(|| "SRVGGNetCompact forward".to_string())
    }
}
