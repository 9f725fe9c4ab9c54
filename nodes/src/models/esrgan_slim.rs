//! ESRGAN-slim from UpscalerJS (npm `@upscalerjs/esrgan-slim`): despite the name a Residual
//! Dense Network (Zhang et al. 2018, "Residual Dense Network for Image Super-Resolution") as
//! built by idealo's image-super-resolution, C1-D2-G4-G064-T10, rebuilt from the TF.js
//! model.json topology; keys are the Keras layer names (`F_m1`, `F_0`, `F_d_c`, `LFF_d`,
//! `GFF_1`, `GFF_2`, `UPN1..3`, `SR`) with `.weight` in PyTorch layout [out, in, kh, kw].
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{Result, TchContext};
use crate::models::layers::Conv2d;
use crate::models::rrdbnet::upsample_nearest;
use crate::models::tiled::{check_image_batch, ImageToImage};
use crate::weights::Weights;

/// The model works on pixel values in [0, 255] (its UpscalerJS `inputRange`/`outputRange`).
const PIXEL_RANGE: f64 = 255.0;

/// RDN hyper-parameters, named as in the RDN paper and the package's model metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct EsrganSlimConfig {
    pub scale: i64,
    /// Features of the shallow and global layers.
    pub g0: i64,
    /// Growth of each dense convolution.
    pub g: i64,
    /// Residual dense blocks.
    pub d: i64,
    /// Convolutions per block.
    pub c: i64,
}

impl EsrganSlimConfig {
    /// The package's x2 / x4 models (C1-D2-G4-G064).
    pub fn slim(scale: i64) -> Self {
        Self {
            scale,
            g0: 64,
            g: 4,
            d: 2,
            c: 1,
        }
    }
}

#[derive(Debug)]
struct DenseBlock {
    convs: Vec<Conv2d>,
    local_fusion: Conv2d,
}

/// The RDN upscaler. Input and output: RGB in [0, 1], NCHW (output not clamped).
#[derive(Debug)]
pub struct EsrganSlim {
    config: EsrganSlimConfig,
    f_m1: Conv2d,
    f_0: Conv2d,
    blocks: Vec<DenseBlock>,
    gff_1: Conv2d,
    gff_2: Conv2d,
    upn: [Conv2d; 3],
    sr: Conv2d,
}

impl EsrganSlim {
    /// Builds the model from `w`; call `w.finish` afterwards.
    pub fn from_weights(w: &Weights, config: EsrganSlimConfig) -> Self {
        let EsrganSlimConfig { scale, g0, g, d, c } = config;
        let blocks = (1..=d)
            .map(|di| DenseBlock {
                convs: (1..=c)
                    .map(|ci| Conv2d::same(w, &format!("F_{di}_{ci}"), g0 + (ci - 1) * g, g, 3))
                    .collect(),
                local_fusion: Conv2d::same(w, &format!("LFF_{di}"), g0 + c * g, g0, 1),
            })
            .collect();
        Self {
            f_m1: Conv2d::same(w, "F_m1", 3, g0, 3),
            f_0: Conv2d::same(w, "F_0", g0, g0, 3),
            blocks,
            gff_1: Conv2d::same(w, "GFF_1", g0 * d, g0, 1),
            gff_2: Conv2d::same(w, "GFF_2", g0, g0, 3),
            upn: [
                Conv2d::same(w, "UPN1", g0, 64, 5),
                Conv2d::same(w, "UPN2", 64, 32, 3),
                Conv2d::same(w, "UPN3", 32, 3 * scale * scale, 3),
            ],
            sr: Conv2d::same(w, "SR", 3 * scale * scale, 3, 3),
            config,
        }
    }

    /// Loads a safetensors file written by `scripts/convert/esrgan_slim.py`, as fp32 on `device`.
    pub fn load(path: &Path, config: EsrganSlimConfig, device: Device) -> Result<Self> {
        let w = Weights::from_safetensors(path, device, Some(Kind::Float))?;
        let model = Self::from_weights(&w, config);
        w.finish("ESRGAN-slim (RDN)")?;
        Ok(model)
    }

    pub fn config(&self) -> &EsrganSlimConfig {
        &self.config
    }

    fn forward_unchecked(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let x = x.f_mul_scalar(PIXEL_RANGE)?;
        let shallow = self.f_m1.forward(&x)?;
        let mut local = self.f_0.forward(&shallow)?;
        let mut block_outputs = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let mut features = vec![local.shallow_clone()];
            for conv in &block.convs {
                let y = conv.forward(&Tensor::f_cat(&features, 1)?)?.f_relu()?;
                features.push(y);
            }
            local = block
                .local_fusion
                .forward(&Tensor::f_cat(&features, 1)?)?
                .f_add(&local)?;
            block_outputs.push(local.shallow_clone());
        }
        let global = self.gff_1.forward(&Tensor::f_cat(&block_outputs, 1)?)?;
        let global = self.gff_2.forward(&global)?.f_add(&shallow)?;
        let up = self.upn[0].forward(&global)?.f_relu()?;
        let up = self.upn[1].forward(&up)?.f_relu()?;
        let up = self.upn[2].forward(&up)?;
        // The Keras graph upsamples with UpSampling2D (nearest), not a pixel shuffle.
        let up = upsample_nearest(&up, self.config.scale)?;
        self.sr.forward(&up)?.f_div_scalar(PIXEL_RANGE)
    }
}

impl ImageToImage for EsrganSlim {
    fn name(&self) -> &str {
        "ESRGAN-slim"
    }

    fn scale(&self) -> i64 {
        self.config.scale
    }

    fn forward(&self, image: &Tensor) -> Result<Tensor> {
        let x = check_image_batch(image, 3, 1, "ESRGAN-slim input")?
            .to_device(self.f_m1.device())
            .to_kind(self.f_m1.kind());
        tch::no_grad(|| self.forward_unchecked(&x)).context(|| "ESRGAN-slim forward".to_string())
    }
}
