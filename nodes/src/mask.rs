//! Masks (ComfyUI's MASK): float tensors [batch, height, width] in [0, 1], 1 where an image is
//! to be repainted; and the mask nodes (`LoadImageMask`, `SolidMask`, `InvertMask`,
//! `GrowMask`, `FeatherMask`, `ThresholdMask`, `ImageToMask`, `ImageColorToMask`,
//! `MaskToImage`), each computing
//! what ComfyUI's node of the same name computes.
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};
use weft_engine::{
    ConstantInputs, InputSpec as In, Inputs, ModelFolders, Node, NodeContext, NodeError,
    NodeResult, NodeSpec, OutputSpec as Out, Value, ValueType as T,
};

use crate::image::{check_image, load_image_and_alpha};

/// ComfyUI's `MAX_RESOLUTION`: the largest side a size input takes.
pub const MAX_RESOLUTION: f64 = 16384.0;

/// Checks a mask tensor's shape: [batch, height, width].
pub fn check_mask(t: &Tensor, what: &str) -> NodeResult<(i64, i64, i64)> {
    match t.size()[..] {
        [b, h, w] if b > 0 && h > 0 && w > 0 => Ok((b, h, w)),
        ref other => Err(NodeError::msg(format!(
            "{what} must be a mask [batch, height, width], got {other:?}"
        ))),
    }
}

/// The mask input `name`, checked, as float.
pub fn mask_input(inputs: &Inputs, name: &str) -> NodeResult<Tensor> {
    let mask = inputs.tensor(name)?;
    check_mask(mask, &format!("input '{name}'"))?;
    Ok(mask.f_to_kind(Kind::Float)?)
}

/// `mask` [B, H, W] resized (bilinear, as ComfyUI's `F.interpolate` default) to `height` x
/// `width`, as [B, 1, height, width].
pub fn resize_mask(mask: &Tensor, height: i64, width: i64) -> NodeResult<Tensor> {
    let size = mask.size();
    let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
    let mask = mask.f_reshape([-1, 1, h, w])?;
    if (h, w) == (height, width) {
        return Ok(mask);
    }
    Ok(mask.f_upsample_bilinear2d([height, width], false, None, None)?)
}

/// The channels LoadImageMask and ImageToMask read.
const CHANNELS: [&str; 4] = ["alpha", "red", "green", "blue"];

/// A mask read from one channel of an image file. The alpha channel is inverted (painted-out
/// pixels, alpha 0, are the ones to repaint); a channel the file lacks gives zeros.
pub struct LoadImageMask;
impl Node for LoadImageMask {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "LoadImageMask",
            category: "mask",
            doc:
                "loads one channel of an image file as a mask (alpha is inverted: transparent = 1)",
            version: 1,
            inputs: vec![
                In::new(
                    "path",
                    T::String,
                    "the image file, relative to the working folder",
                ),
                In::new("channel", T::Enum, "which channel becomes the mask")
                    .choices(&CHANNELS)
                    .default("alpha"),
            ],
            outputs: vec![Out::new("mask", T::Mask, "the mask, [1, height, width]")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let (rgb, alpha) = load_image_and_alpha(Path::new(inputs.string("path")?), ctx.files)?;
        let mask = match (inputs.string("channel")?, alpha) {
            ("alpha", Some(alpha)) => alpha.f_neg()?.f_add_scalar(1.0)?,
            ("alpha", None) => rgb.f_select(1, 0)?.f_zeros_like()?,
            (channel, _) => {
                let index = channel_index(channel)?;
                rgb.f_select(1, index)?
            }
        };
        Ok(vec![Value::Tensor(T::Mask, mask.f_to_device(ctx.device)?)])
    }
    fn input_files(
        &self,
        constants: &ConstantInputs,
        _models: &ModelFolders,
    ) -> NodeResult<Vec<PathBuf>> {
        Ok(constants.file("path"))
    }
}

fn channel_index(channel: &str) -> NodeResult<i64> {
    match channel {
        "red" => Ok(0),
        "green" => Ok(1),
        "blue" => Ok(2),
        other => Err(NodeError::msg(format!(
            "input 'channel': '{other}' is not one of red, green, blue"
        ))),
    }
}

/// A mask of one value everywhere.
pub struct SolidMask;
impl Node for SolidMask {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "SolidMask",
            category: "mask",
            doc: "a mask of one value everywhere",
            version: 1,
            inputs: vec![
                In::new("value", T::Float, "the mask value")
                    .default(1.0)
                    .range(0.0, 1.0)
                    .step(0.01)
                    .slider(),
                In::new("width", T::Int, "width in pixels")
                    .default(512)
                    .range(1.0, MAX_RESOLUTION),
                In::new("height", T::Int, "height in pixels")
                    .default(512)
                    .range(1.0, MAX_RESOLUTION),
            ],
            outputs: vec![Out::new("mask", T::Mask, "the mask, [1, height, width]")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let (w, h) = (inputs.int("width")?, inputs.int("height")?);
        if w < 1 || h < 1 {
            return Err(NodeError::msg(format!(
                "inputs 'width' and 'height' must be at least 1, got {w}x{h}"
            )));
        }
        let mask = Tensor::f_full([1, h, w], inputs.float("value")?, (Kind::Float, ctx.device))?;
        Ok(vec![Value::Tensor(T::Mask, mask)])
    }
}

/// 1 - mask.
pub struct InvertMask;
impl Node for InvertMask {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "InvertMask",
            category: "mask",
            doc: "1 - mask: what was kept is repainted and the other way round",
            version: 1,
            inputs: vec![In::new("mask", T::Mask, "the mask")],
            outputs: vec![Out::new("mask", T::Mask, "the inverted mask")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let mask = mask_input(inputs, "mask")?;
        Ok(vec![Value::Tensor(
            T::Mask,
            mask.f_neg()?.f_add_scalar(1.0)?,
        )])
    }
}

/// Grows (or with a negative `expand` shrinks) a mask by whole pixels, as ComfyUI's GrowMask
/// (scipy's grey dilation / erosion, once per pixel, with a 3x3 footprint that leaves out the
/// corners when `tapered_corners`).
pub struct GrowMask;
impl Node for GrowMask {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "GrowMask",
            category: "mask",
            doc: "grows the mask by some pixels (shrinks it when negative)",
            version: 1,
            inputs: vec![
                In::new("mask", T::Mask, "the mask"),
                In::new("expand", T::Int, "pixels to grow by (negative: shrink)")
                    .default(0)
                    .range(-MAX_RESOLUTION, MAX_RESOLUTION),
                In::new(
                    "tapered_corners",
                    T::Bool,
                    "round the corners (a cross-shaped step) instead of keeping them square",
                )
                .default(true),
            ],
            outputs: vec![Out::new("mask", T::Mask, "the grown mask")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let mask = mask_input(inputs, "mask")?;
        let expand = inputs.int("expand")?;
        let tapered = inputs.bool("tapered_corners")?;
        let mut out = mask;
        for _ in 0..expand.unsigned_abs() {
            ctx.check_cancelled()?;
            out = grow_mask(&out, expand.signum(), tapered)?;
        }
        Ok(vec![Value::Tensor(T::Mask, out)])
    }
}

/// GrowMask's work: `expand` grey dilations (erosions when negative) of [B, H, W] with a 3x3
/// footprint (without its corners when `tapered`), as ComfyUI's scipy calls do.
pub fn grow_mask(mask: &Tensor, expand: i64, tapered: bool) -> NodeResult<Tensor> {
    let mut out = mask.shallow_clone();
    for _ in 0..expand.unsigned_abs() {
        out = if expand > 0 {
            dilate_once(&out, tapered)?
        } else {
            // Erosion is dilation of the complement.
            dilate_once(&out.f_neg()?, tapered)?.f_neg()?
        };
    }
    Ok(out)
}

/// One grey dilation step of [B, H, W] with a 3x3 footprint (without its corners when
/// `tapered`). The edge is repeated outward, which for a maximum is what scipy's default
/// 'reflect' border gives.
pub fn dilate_once(mask: &Tensor, tapered: bool) -> NodeResult<Tensor> {
    let size = mask.size();
    let (h, w) = (size[1], size[2]);
    let padded = mask
        .f_unsqueeze(1)?
        .f_replication_pad2d([1, 1, 1, 1])?
        .f_squeeze_dim(1)?;
    let mut out = mask.shallow_clone();
    for dy in 0..3i64 {
        for dx in 0..3i64 {
            let corner = dy != 1 && dx != 1;
            if (dy, dx) == (1, 1) || (tapered && corner) {
                continue;
            }
            let shifted = padded.f_narrow(1, dy, h)?.f_narrow(2, dx, w)?;
            out = out.f_maximum(&shifted)?;
        }
    }
    Ok(out)
}

/// Fades a mask toward its edges: the outermost `left` columns are scaled by 1/left, 2/left,
/// ... and so on for each side, as ComfyUI's FeatherMask (including its indexing of the right
/// and bottom sides, which starts at column/row 0 and then counts back from the far edge, so
/// that its masks are reproduced exactly).
pub struct FeatherMask;
impl Node for FeatherMask {
    fn spec(&self) -> NodeSpec {
        let side = |name: &'static str, doc: &'static str| {
            In::new(name, T::Int, doc)
                .default(0)
                .range(0.0, MAX_RESOLUTION)
        };
        NodeSpec {
            type_name: "FeatherMask",
            category: "mask",
            doc: "fades the mask linearly toward each edge over the given widths",
            version: 1,
            inputs: vec![
                In::new("mask", T::Mask, "the mask"),
                side("left", "pixels faded on the left"),
                side("top", "pixels faded at the top"),
                side("right", "pixels faded on the right"),
                side("bottom", "pixels faded at the bottom"),
            ],
            outputs: vec![Out::new("mask", T::Mask, "the feathered mask")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let mask = mask_input(inputs, "mask")?;
        let out = feather_mask(
            &mask,
            inputs.int("left")?,
            inputs.int("top")?,
            inputs.int("right")?,
            inputs.int("bottom")?,
        )?;
        Ok(vec![Value::Tensor(T::Mask, out)])
    }
}

/// FeatherMask's work on a mask [B, H, W]; each width is cut to the mask's side.
pub fn feather_mask(
    mask: &Tensor,
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
) -> NodeResult<Tensor> {
    let (_, h, w) = check_mask(mask, "input 'mask'")?;
    let feather = feather_weights(
        h,
        w,
        left.clamp(0, w),
        top.clamp(0, h),
        right.clamp(0, w),
        bottom.clamp(0, h),
    );
    let weights = Tensor::f_from_slice(&feather)?
        .f_reshape([1, h, w])?
        .f_to_device(mask.device())?;
    Ok(mask.f_mul(&weights)?)
}

/// FeatherMask's factor for each pixel, row-major [h * w].
fn feather_weights(h: i64, w: i64, left: i64, top: i64, right: i64, bottom: i64) -> Vec<f32> {
    let (hu, wu) = (h as usize, w as usize);
    let mut weights = vec![1.0f32; hu * wu];
    // Python's negative index: -0 is 0, -k is len - k.
    let from_end = |k: i64, len: i64| if k == 0 { 0 } else { (len - k) as usize };
    let mut scale_column = |column: usize, factor: f32| {
        for row in 0..hu {
            weights[row * wu + column] *= factor;
        }
    };
    for x in 0..left {
        scale_column(x as usize, (x as f32 + 1.0) / left as f32);
    }
    for x in 0..right {
        scale_column(from_end(x, w), (x as f32 + 1.0) / right as f32);
    }
    let mut scale_row = |row: usize, factor: f32| {
        for column in 0..wu {
            weights[row * wu + column] *= factor;
        }
    };
    for y in 0..top {
        scale_row(y as usize, (y as f32 + 1.0) / top as f32);
    }
    for y in 0..bottom {
        scale_row(from_end(y, h), (y as f32 + 1.0) / bottom as f32);
    }
    weights
}

/// 1 where the mask is above a value, else 0.
pub struct ThresholdMask;
impl Node for ThresholdMask {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "ThresholdMask",
            category: "mask",
            doc: "a hard mask: 1 where the mask is above the value, else 0",
            version: 1,
            inputs: vec![
                In::new("mask", T::Mask, "the mask"),
                In::new("value", T::Float, "the threshold")
                    .default(0.5)
                    .range(0.0, 1.0)
                    .step(0.01)
                    .slider(),
            ],
            outputs: vec![Out::new("mask", T::Mask, "the hard mask")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let mask = mask_input(inputs, "mask")?;
        let hard = mask.f_gt(inputs.float("value")?)?.f_to_kind(Kind::Float)?;
        Ok(vec![Value::Tensor(T::Mask, hard)])
    }
}

/// One colour channel of an image as a mask.
pub struct ImageToMask;
impl Node for ImageToMask {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "ImageToMask",
            category: "mask",
            doc: "one colour channel of an image as a mask",
            version: 1,
            inputs: vec![
                In::new("image", T::Image, "the images"),
                In::new("channel", T::Enum, "the channel")
                    .choices(&CHANNELS[1..])
                    .default("red"),
            ],
            outputs: vec![Out::new(
                "mask",
                T::Mask,
                "the channel, [batch, height, width]",
            )],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let image = inputs.tensor("image")?;
        check_image(image, "input 'image'")?;
        let channel = channel_index(inputs.string("channel")?)?;
        Ok(vec![Value::Tensor(
            T::Mask,
            image.f_select(1, channel)?.f_to_kind(Kind::Float)?,
        )])
    }
}

/// 1 where an image has exactly one colour (ComfyUI's ImageColorToMask).
pub struct ImageColorToMask;
impl Node for ImageColorToMask {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "ImageColorToMask",
            category: "mask",
            doc: "a mask that is 1 where a pixel has exactly the colour 0xRRGGBB (8-bit, rounded as ComfyUI does), else 0",
            version: 1,
            inputs: vec![
                In::new("image", T::Image, "the images"),
                In::new("color", T::Int, "the colour as 0xRRGGBB (16711680 is red)")
                    .default(0)
                    .range(0.0, 16777215.0),
            ],
            outputs: vec![Out::new(
                "mask",
                T::Mask,
                "1 where the colour is, [batch, height, width]",
            )],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let image = inputs.tensor("image")?;
        check_image(image, "input 'image'")?;
        let color = inputs.int("color")?;
        if !(0..=0xFF_FFFF).contains(&color) {
            return Err(NodeError::msg(format!(
                "input 'color': {color} is not a colour 0xRRGGBB (0 to 16777215)"
            )));
        }
        Ok(vec![Value::Tensor(T::Mask, color_mask(image, color)?)])
    }
}

/// 1 where `image` [B, 3, H, W] is `color` (0xRRGGBB) once each channel is clamped to 0..1,
/// scaled to 0..255 and rounded (half to even, as torch rounds), else 0.
pub fn color_mask(image: &Tensor, color: i64) -> NodeResult<Tensor> {
    let bytes = image
        .f_to_kind(Kind::Float)?
        .f_clamp(0.0, 1.0)?
        .f_mul_scalar(255.0)?
        .f_round()?
        .f_to_kind(Kind::Int64)?;
    let packed = bytes.f_select(1, 0)?.f_mul_scalar(1 << 16)?
        + bytes.f_select(1, 1)?.f_mul_scalar(1 << 8)?
        + bytes.f_select(1, 2)?;
    Ok(packed.f_eq(color)?.f_to_kind(Kind::Float)?)
}

/// A mask as a grey image (to look at it, or to save it).
pub struct MaskToImage;
impl Node for MaskToImage {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "MaskToImage",
            category: "mask",
            doc: "a mask as a grey image (white = 1)",
            version: 1,
            inputs: vec![In::new("mask", T::Mask, "the mask")],
            outputs: vec![Out::new(
                "image",
                T::Image,
                "the grey images, [batch, 3, height, width]",
            )],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let mask = mask_input(inputs, "mask")?;
        let (b, h, w) = check_mask(&mask, "input 'mask'")?;
        let image = mask
            .f_unsqueeze(1)?
            .f_expand([b, 3, h, w], false)?
            .f_contiguous()?;
        Ok(vec![Value::Tensor(T::Image, image)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn colour_mask_marks_exactly_the_rounded_colour() {
        // Pixels: pure red, red one step off in blue, a red that rounds to 255/0/0 (0.999 ->
        // 254.7 -> 255, green 0.4 -> 0), and green.
        let r = [1.0f32, 1.0, 0.999, 0.0];
        let g = [0.0f32, 0.0, 0.4 / 255.0, 1.0];
        let b = [0.0f32, 1.0 / 255.0, 0.0, 0.0];
        let flat: Vec<f32> = r.iter().chain(&g).chain(&b).copied().collect();
        let image = Tensor::from_slice(&flat).view([1, 3, 2, 2]);
        let mask = color_mask(&image, 0xFF0000).unwrap();
        assert_eq!(mask.size(), [1, 2, 2]);
        assert_eq!(
            Vec::<f32>::try_from(mask.flatten(0, -1)).unwrap(),
            [1.0, 0.0, 1.0, 0.0]
        );
        let green = color_mask(&image, 0x00FF00).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(green.flatten(0, -1)).unwrap(),
            [0.0, 0.0, 0.0, 1.0]
        );
        let off = color_mask(&image, 0xFF0001).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(off.flatten(0, -1)).unwrap(),
            [0.0, 1.0, 0.0, 0.0]
        );
    }

    fn mask_of(rows: &[&[f32]]) -> Tensor {
        let h = rows.len() as i64;
        let w = rows[0].len() as i64;
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([1, h, w])
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        let size = t.size();
        let flat = Vec::<f32>::try_from(t.reshape([-1])).unwrap();
        flat.chunks(size[size.len() - 1] as usize)
            .map(<[f32]>::to_vec)
            .collect()
    }

    #[test]
    fn dilation_grows_a_point_into_a_cross_or_a_square_and_erosion_undoes_a_square() {
        let point = mask_of(&[&[0., 0., 0.], &[0., 1., 0.], &[0., 0., 0.]]);
        let cross = dilate_once(&point, true).unwrap();
        assert_eq!(
            rows(&cross),
            [[0., 1., 0.], [1., 1., 1.], [0., 1., 0.]].map(|r| r.to_vec())
        );
        let square = dilate_once(&point, false).unwrap();
        assert_eq!(square.sum(Kind::Float).double_value(&[]), 9.0);
        // Erosion of the full square: the repeated edge keeps the border cells at 1 only where
        // all their neighbours (edge repeated) are 1, i.e. everywhere.
        let eroded = dilate_once(&square.neg(), false).unwrap().neg();
        assert_eq!(eroded.sum(Kind::Float).double_value(&[]), 9.0);
        let eroded_point = dilate_once(&point.neg(), false).unwrap().neg();
        assert_eq!(eroded_point.sum(Kind::Float).double_value(&[]), 0.0);
    }

    #[test]
    fn feathering_follows_comfyui_including_its_first_column_quirk() {
        // left 2: columns 0 and 1 scaled by 1/2 and 2/2.
        let w = feather_weights(1, 4, 2, 0, 0, 0);
        assert_eq!(w, [0.5, 1.0, 1.0, 1.0]);
        // right 2: ComfyUI's output[:, :, -x] for x = 0, 1 scales column 0 by 1/2 and the
        // last column by 2/2.
        let w = feather_weights(1, 4, 0, 0, 2, 0);
        assert_eq!(w, [0.5, 1.0, 1.0, 1.0]);
        let w = feather_weights(4, 1, 0, 4, 0, 0);
        assert_eq!(w, [0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn mask_shapes_are_checked_and_named() {
        let image = Tensor::zeros([1, 3, 4, 4], (Kind::Float, Device::Cpu));
        let error = check_mask(&image, "input 'mask'").unwrap_err().to_string();
        assert!(
            error.contains("input 'mask'") && error.contains("[1, 3, 4, 4]"),
            "{error}"
        );
        let resized =
            resize_mask(&Tensor::ones([2, 8, 8], (Kind::Float, Device::Cpu)), 2, 2).unwrap();
        assert_eq!(resized.size(), [2, 1, 2, 2]);
        assert_eq!(resized.min().double_value(&[]), 1.0);
    }
}
