//! Inpainting and outpainting: a latent that carries a noise mask (and, for 9-channel
//! inpainting UNets, the mask and masked-image latent they take), and the nodes that make and
//! use them: `SetLatentNoiseMask`, `VaeEncodeForInpaint`, `InpaintModelConditioning`,
//! `ImagePadForOutpaint`, `ImageCompositeMasked` (ComfyUI's nodes of those names).
//!
//! As a [`Value`], a latent with nothing attached stays the bare `[B, 4, h, w]` tensor; one with
//! a mask is a [`Value::Tensors`] of named parts, as ComfyUI's LATENT dict holds `samples` and
//! `noise_mask`.
use tch::{Kind, Tensor};
use weft_engine::{
    InputSpec as In, Inputs, Node, NodeContext, NodeError, NodeResult, NodeSpec, OutputSpec as Out,
    Value, ValueType as T,
};

use crate::diffusion::Vae;
use crate::image::check_image;
use crate::mask::{check_mask, mask_input, resize_mask, MAX_RESOLUTION};

const SAMPLES: &str = "samples";
const NOISE_MASK: &str = "noise_mask";
const CONCAT_LATENT: &str = "concat_latent";
const CONCAT_MASK: &str = "concat_mask";

/// A latent and what inpainting attaches to it.
#[derive(Debug)]
pub struct InpaintLatent {
    /// The latent `[B, C, h, w]` (scaled, as VaeEncode gives it).
    pub samples: Tensor,
    /// Where sampling may change the latent, `[B or 1, H, W]` at any size (usually the image's):
    /// the Sampler keeps the rest at the input latent (ComfyUI's `noise_mask`).
    pub noise_mask: Option<Tensor>,
    /// For 9-channel inpainting UNets: the latent of the image with the masked pixels greyed
    /// out (ComfyUI's `concat_latent_image`); without it the model gets `samples`.
    pub concat_latent: Option<Tensor>,
    /// For 9-channel inpainting UNets: the mask they are told about, `[B or 1, H, W]`
    /// (ComfyUI's `concat_mask`); without it the model gets `noise_mask`.
    pub concat_mask: Option<Tensor>,
}

impl InpaintLatent {
    pub fn plain(samples: Tensor) -> Self {
        Self {
            samples,
            noise_mask: None,
            concat_latent: None,
            concat_mask: None,
        }
    }

    /// The latent input `name`, whichever form it has.
    pub fn input(inputs: &Inputs, name: &str) -> NodeResult<Self> {
        let value = inputs
            .get(name)?
            .ok_or_else(|| NodeError::msg(format!("input '{name}' has no value")))?;
        Self::from_value(value, name)
    }

    /// The optional latent input `name`.
    pub fn optional_input(inputs: &Inputs, name: &str) -> NodeResult<Option<Self>> {
        inputs
            .get(name)?
            .map(|value| Self::from_value(value, name))
            .transpose()
    }

    fn from_value(value: &Value, name: &str) -> NodeResult<Self> {
        match value {
            Value::Tensor(_, t) => Ok(Self::plain(t.shallow_clone())),
            Value::Tensors(_, named) => {
                let part = |key: &str| {
                    named
                        .iter()
                        .find(|(n, _)| n == key)
                        .map(|(_, t)| t.shallow_clone())
                };
                let samples = part(SAMPLES).ok_or_else(|| {
                    NodeError::msg(format!("input '{name}': a latent without its samples"))
                })?;
                Ok(Self {
                    samples,
                    noise_mask: part(NOISE_MASK),
                    concat_latent: part(CONCAT_LATENT),
                    concat_mask: part(CONCAT_MASK),
                })
            }
            other => Err(NodeError::msg(format!(
                "input '{name}': expected a latent, found {}",
                other.describe()
            ))),
        }
    }

    /// This latent with `samples` replaced, the attachments kept (as ComfyUI's nodes copy the
    /// LATENT dict and set its samples).
    pub fn with_samples(&self, samples: Tensor) -> Self {
        let keep = |t: &Option<Tensor>| t.as_ref().map(Tensor::shallow_clone);
        Self {
            samples,
            noise_mask: keep(&self.noise_mask),
            concat_latent: keep(&self.concat_latent),
            concat_mask: keep(&self.concat_mask),
        }
    }

    pub fn into_value(self) -> Value {
        if self.noise_mask.is_none() && self.concat_latent.is_none() && self.concat_mask.is_none() {
            return Value::Tensor(T::Latent, self.samples);
        }
        let mut named = vec![(SAMPLES.to_string(), self.samples)];
        for (key, part) in [
            (NOISE_MASK, self.noise_mask),
            (CONCAT_LATENT, self.concat_latent),
            (CONCAT_MASK, self.concat_mask),
        ] {
            if let Some(t) = part {
                named.push((key.to_string(), t));
            }
        }
        Value::Tensors(T::Latent, named)
    }
}

/// The samples of latent input `name`, whichever form it has (for nodes that ignore masks).
pub fn latent_samples(inputs: &Inputs, name: &str) -> NodeResult<Tensor> {
    Ok(InpaintLatent::input(inputs, name)?.samples)
}

/// Attaches a noise mask to a latent: sampling then changes only where the mask is 1.
pub struct SetLatentNoiseMask;
impl Node for SetLatentNoiseMask {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "SetLatentNoiseMask",
            category: "inpaint",
            doc: "attaches a mask to a latent: the Sampler repaints only where it is 1 and keeps the rest",
            version: 1,
            inputs: vec![
                In::new("latent", T::Latent, "the latent (an encoded image)"),
                In::new("mask", T::Mask, "where to repaint (1) and keep (0); any size, resized to the latent"),
            ],
            outputs: vec![Out::new("latent", T::Latent, "the latent with the mask")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let latent = InpaintLatent::input(inputs, "latent")?;
        let mask = mask_input(inputs, "mask")?;
        let mut out = latent.with_samples(latent.samples.shallow_clone());
        out.noise_mask = Some(mask);
        Ok(vec![out.into_value()])
    }
}

/// VaeEncodeForInpaint's pixel work: the mask resized to the image, both cropped to multiples
/// of `factor` (centred, as ComfyUI), the masked pixels (mask rounded) set to grey 0.5, and
/// the noise mask grown by `grow` pixels (a box of ones, as ComfyUI's conv2d) and rounded.
/// Returns (pixels [B, 3, H', W'], noise mask [B or 1, H', W']).
pub fn inpaint_pixels(
    image: &Tensor,
    mask: &Tensor,
    grow: i64,
    factor: i64,
) -> NodeResult<(Tensor, Tensor)> {
    let (_, h, w) = check_image(image, "input 'image'")?;
    check_mask(mask, "input 'mask'")?;
    let (ch, cw) = (h / factor * factor, w / factor * factor);
    if ch == 0 || cw == 0 {
        return Err(NodeError::msg(format!(
            "input 'image': {w}x{h} is smaller than one latent pixel ({factor}x{factor})"
        )));
    }
    let mask = resize_mask(&mask.f_to_device(image.device())?, h, w)?;
    let (top, left) = ((h % factor) / 2, (w % factor) / 2);
    let pixels = image.f_narrow(2, top, ch)?.f_narrow(3, left, cw)?;
    let mask = mask.f_narrow(2, top, ch)?.f_narrow(3, left, cw)?;
    let grown = if grow == 0 {
        mask.shallow_clone()
    } else {
        let kernel = Tensor::f_ones([1, 1, grow, grow], (Kind::Float, mask.device()))?;
        // ComfyUI's ceil((grow - 1) / 2).
        let padding = grow / 2;
        Tensor::f_conv2d(
            &mask.f_round()?,
            &kernel,
            None::<&Tensor>,
            [1, 1],
            [padding, padding],
            [1, 1],
            1,
        )?
        .f_clamp(0.0, 1.0)?
        // An even kernel with this padding gives one row and column more.
        .f_narrow(2, 0, ch)?
        .f_narrow(3, 0, cw)?
    };
    let keep = mask.f_round()?.f_neg()?.f_add_scalar(1.0)?;
    let pixels = pixels.f_sub_scalar(0.5)?.f_mul(&keep)?.f_add_scalar(0.5)?;
    Ok((pixels, grown.f_round()?.f_squeeze_dim(1)?))
}

/// Encodes `pixels` [B, 3, H, W] in [0, 1] with the VAE to a scaled latent (as VaeEncode).
fn encode(vae: &Vae, pixels: &Tensor) -> NodeResult<Tensor> {
    let vae = &vae.vae;
    let latent = vae
        .encode(&pixels.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?)?
        .mode();
    Ok(latent
        .f_mul_scalar(vae.config().scaling_factor)?
        .f_to_kind(Kind::Float)?)
}

/// Encodes an image for inpainting: the masked pixels greyed out, the (grown) mask attached
/// as the noise mask. With a 9-channel inpainting model use denoise 1.
pub struct VaeEncodeForInpaint;
impl Node for VaeEncodeForInpaint {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "VaeEncodeForInpaint",
            category: "inpaint",
            doc: "encodes an image for inpainting: masked pixels set to grey, the grown mask attached (for inpainting models, denoise 1)",
            version: 1,
            inputs: vec![
                In::new("vae", T::Vae, "the VAE"),
                In::new("image", T::Image, "RGB in [0, 1]; cropped (centred) to multiples of 8"),
                In::new("mask", T::Mask, "where to repaint (1)"),
                In::new("grow_mask_by", T::Int, "pixels to grow the mask by, so the seam is repainted too")
                    .default(6)
                    .range(0.0, 64.0),
            ],
            outputs: vec![Out::new("latent", T::Latent, "the latent with its noise mask")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let vae = inputs.object::<Vae>("vae")?;
        let image = inputs.tensor("image")?.f_to_device(ctx.device)?;
        let mask = mask_input(inputs, "mask")?;
        let factor = vae.vae.config().downscale_factor();
        let (pixels, noise_mask) =
            inpaint_pixels(&image, &mask, inputs.int("grow_mask_by")?, factor)?;
        let mut latent = InpaintLatent::plain(encode(&vae, &pixels)?);
        latent.noise_mask = Some(noise_mask);
        Ok(vec![latent.into_value()])
    }
}

/// InpaintModelConditioning's pixel work: the image cropped (centred) to multiples of `factor`,
/// the same with the masked pixels (mask rounded) greyed out, and the mask resized to the image
/// and cropped likewise, unrounded so that a noise mask keeps soft edges ([B or 1, H', W']).
pub fn inpaint_model_pixels(
    image: &Tensor,
    mask: &Tensor,
    factor: i64,
) -> NodeResult<(Tensor, Tensor, Tensor)> {
    let (_, h, w) = check_image(image, "input 'image'")?;
    check_mask(mask, "input 'mask'")?;
    let (ch, cw) = (h / factor * factor, w / factor * factor);
    let (top, left) = ((h % factor) / 2, (w % factor) / 2);
    let mask_at_image = resize_mask(&mask.f_to_device(image.device())?, h, w)?
        .f_narrow(2, top, ch)?
        .f_narrow(3, left, cw)?
        .f_squeeze_dim(1)?;
    let (greyed, _) = inpaint_pixels(image, mask, 0, factor)?;
    // ComfyUI's VAE crops its input to whole latent pixels the same way.
    let cropped = image.f_narrow(2, top, ch)?.f_narrow(3, left, cw)?;
    Ok((cropped, greyed, mask_at_image))
}

/// ComfyUI's InpaintModelConditioning: the image encoded as it is (the latent to sample) and
/// with the masked pixels greyed out (what a 9-channel inpainting model is shown, with the
/// mask). ComfyUI puts the latter on the conditionings; weft carries it on the latent, so the
/// conditionings pass through unchanged and a model gets it from whichever latent it samples.
pub struct InpaintModelConditioning;
impl Node for InpaintModelConditioning {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "InpaintModelConditioning",
            category: "inpaint",
            doc: "prepares an inpainting model's inputs: the image's latent, the mask and the masked image's latent",
            version: 1,
            inputs: vec![
                In::new("positive", T::Conditioning, "what the image should show"),
                In::new("negative", T::Conditioning, "what it should not show"),
                In::new("vae", T::Vae, "the VAE"),
                In::new("image", T::Image, "RGB in [0, 1]"),
                In::new("mask", T::Mask, "where to repaint (1)"),
                In::new("noise_mask", T::Bool, "also attach the mask as a noise mask, so the rest is kept exactly (any model)")
                    .default(true),
            ],
            outputs: vec![
                Out::new("positive", T::Conditioning, "the positive conditioning"),
                Out::new("negative", T::Conditioning, "the negative conditioning"),
                Out::new("latent", T::Latent, "the image's latent with the inpainting inputs"),
            ],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let vae = inputs.object::<Vae>("vae")?;
        let image = inputs.tensor("image")?.f_to_device(ctx.device)?;
        let mask = mask_input(inputs, "mask")?;
        let factor = vae.vae.config().downscale_factor();
        let (cropped, greyed, mask_at_image) = inpaint_model_pixels(&image, &mask, factor)?;
        let mut latent = InpaintLatent::plain(encode(&vae, &cropped)?);
        latent.concat_latent = Some(encode(&vae, &greyed)?);
        latent.concat_mask = Some(mask_at_image.shallow_clone());
        if inputs.bool("noise_mask")? {
            latent.noise_mask = Some(mask_at_image);
        }
        let pass = |name: &str| -> NodeResult<Value> {
            inputs
                .get(name)?
                .cloned()
                .ok_or_else(|| NodeError::msg(format!("input '{name}' has no value")))
        };
        Ok(vec![
            pass("positive")?,
            pass("negative")?,
            latent.into_value(),
        ])
    }
}

/// ImagePadForOutpaint's work: the image on a grey canvas grown by the given sides, and the
/// mask of what to paint: 1 on the new border, inside the image 0 except a feathered band of
/// `feathering` pixels along the padded sides ((feathering - d) / feathering)^2.
pub fn pad_for_outpaint(
    image: &Tensor,
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
    feathering: i64,
) -> NodeResult<(Tensor, Tensor)> {
    let (b, h, w) = check_image(image, "input 'image'")?;
    let (nh, nw) = (h + top + bottom, w + left + right);
    let options = (Kind::Float, image.device());
    let canvas = Tensor::f_full([b, 3, nh, nw], 0.5, options)?;
    canvas
        .f_narrow(2, top, h)?
        .f_narrow(3, left, w)?
        .f_copy_(&image.f_to_kind(Kind::Float)?)?;
    let mut inside = vec![0.0f32; (h * w) as usize];
    if feathering > 0 && feathering * 2 < h && feathering * 2 < w {
        for i in 0..h {
            for j in 0..w {
                let dt = if top != 0 { i } else { h };
                let db = if bottom != 0 { h - i } else { h };
                let dl = if left != 0 { j } else { w };
                let dr = if right != 0 { w - j } else { w };
                let d = dt.min(db).min(dl).min(dr);
                if d < feathering {
                    let v = (feathering - d) as f32 / feathering as f32;
                    inside[(i * w + j) as usize] = v * v;
                }
            }
        }
    }
    let mask = Tensor::f_ones([1, nh, nw], options)?;
    mask.f_narrow(1, top, h)?
        .f_narrow(2, left, w)?
        .f_copy_(&Tensor::f_from_slice(&inside)?.f_reshape([1, h, w])?)?;
    Ok((canvas, mask))
}

/// Pads an image for outpainting: grey new borders, and a mask that is 1 there and fades into
/// the image over `feathering` pixels.
pub struct ImagePadForOutpaint;
impl Node for ImagePadForOutpaint {
    fn spec(&self) -> NodeSpec {
        let side = |name: &'static str, doc: &'static str| {
            In::new(name, T::Int, doc)
                .default(0)
                .range(0.0, MAX_RESOLUTION)
                .step(8.0)
        };
        NodeSpec {
            type_name: "ImagePadForOutpaint",
            category: "inpaint",
            doc: "pads an image with grey for outpainting, with a mask of the new area (feathered into the image)",
            version: 1,
            inputs: vec![
                In::new("image", T::Image, "the images"),
                side("left", "pixels added on the left"),
                side("top", "pixels added at the top"),
                side("right", "pixels added on the right"),
                side("bottom", "pixels added at the bottom"),
                In::new("feathering", T::Int, "pixels over which the mask fades into the image")
                    .default(40)
                    .range(0.0, MAX_RESOLUTION),
            ],
            outputs: vec![
                Out::new("image", T::Image, "the padded images"),
                Out::new("mask", T::Mask, "1 where to paint, [1, height, width]"),
            ],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let image = inputs.tensor("image")?;
        let side = |name: &str| -> NodeResult<i64> {
            let v = inputs.int(name)?;
            if v < 0 {
                return Err(NodeError::msg(format!(
                    "input '{name}' must be >= 0, got {v}"
                )));
            }
            Ok(v)
        };
        let (canvas, mask) = pad_for_outpaint(
            image,
            side("left")?,
            side("top")?,
            side("right")?,
            side("bottom")?,
            side("feathering")?,
        )?;
        Ok(vec![
            Value::Tensor(T::Image, canvas),
            Value::Tensor(T::Mask, mask),
        ])
    }
}

/// ImageCompositeMasked's work: `source` pasted over `destination` with its top-left corner at
/// (x, y), weighted by `mask` (resized to the source; all ones when absent), clipped to the
/// destination. The source is resized to the destination first when `resize_source`.
pub fn composite_masked(
    destination: &Tensor,
    source: &Tensor,
    x: i64,
    y: i64,
    resize_source: bool,
    mask: Option<&Tensor>,
) -> NodeResult<Tensor> {
    let (db, dh, dw) = check_image(destination, "input 'destination'")?;
    check_image(source, "input 'source'")?;
    if x < 0 || y < 0 {
        return Err(NodeError::msg(format!(
            "inputs 'x' and 'y' must be >= 0, got {x}, {y}"
        )));
    }
    let destination = destination.f_to_kind(Kind::Float)?;
    let mut source = source
        .f_to_device(destination.device())?
        .f_to_kind(Kind::Float)?;
    if resize_source {
        source = source.f_upsample_bilinear2d([dh, dw], false, None, None)?;
    }
    let source = repeat_to_batch(&source, db)?;
    let (sh, sw) = (source.size()[2], source.size()[3]);
    let mask = match mask {
        None => source.f_ones_like()?,
        Some(mask) => {
            check_mask(mask, "input 'mask'")?;
            let mask = resize_mask(&mask.f_to_device(destination.device())?, sh, sw)?;
            repeat_to_batch(&mask, db)?
        }
    };
    let out = destination.copy();
    let (vh, vw) = ((dh - y).min(sh), (dw - x).min(sw));
    if vh <= 0 || vw <= 0 {
        return Ok(out);
    }
    let mask = mask.f_narrow(2, 0, vh)?.f_narrow(3, 0, vw)?;
    let source = source.f_narrow(2, 0, vh)?.f_narrow(3, 0, vw)?;
    let mut region = out.f_narrow(2, y, vh)?.f_narrow(3, x, vw)?;
    let blended = source
        .f_mul(&mask)?
        .f_add(&region.f_mul(&mask.f_neg()?.f_add_scalar(1.0)?)?)?;
    region.f_copy_(&blended)?;
    Ok(out)
}

/// `t` [b, ...] repeated (and cut) along the batch to `batch` (ComfyUI's `repeat_to_batch_size`).
fn repeat_to_batch(t: &Tensor, batch: i64) -> NodeResult<Tensor> {
    let b = t.size()[0];
    if b == batch {
        return Ok(t.shallow_clone());
    }
    let times = (batch + b - 1) / b;
    let mut repeats = vec![1i64; t.dim()];
    repeats[0] = times;
    Ok(t.f_repeat(repeats.as_slice())?.f_narrow(0, 0, batch)?)
}

/// Pastes one image over another through a mask: where the mask is 0 the destination's
/// pixels stay exactly as they were.
pub struct ImageCompositeMasked;
impl Node for ImageCompositeMasked {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "ImageCompositeMasked",
            category: "image",
            doc: "pastes the source over the destination at (x, y) through a mask (the destination is kept exactly where the mask is 0)",
            version: 1,
            inputs: vec![
                In::new("destination", T::Image, "the images pasted onto"),
                In::new("source", T::Image, "the images pasted"),
                In::new("x", T::Int, "left edge of the paste").default(0).range(0.0, MAX_RESOLUTION),
                In::new("y", T::Int, "top edge of the paste").default(0).range(0.0, MAX_RESOLUTION),
                In::new("resize_source", T::Bool, "resize the source to the destination's size first")
                    .default(false),
                In::new("mask", T::Mask, "how much of the source to take (1) at each pixel; all of it when absent")
                    .optional(),
            ],
            outputs: vec![Out::new("image", T::Image, "the composite")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let destination = inputs.tensor("destination")?.f_to_device(ctx.device)?;
        let source = inputs.tensor("source")?;
        let mask = inputs.optional_tensor("mask")?;
        let out = composite_masked(
            &destination,
            source,
            inputs.int("x")?,
            inputs.int("y")?,
            inputs.bool("resize_source")?,
            mask,
        )?;
        Ok(vec![Value::Tensor(T::Image, out)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

    #[test]
    fn latent_with_a_mask_round_trips_through_its_value_and_a_plain_one_stays_a_tensor() {
        let samples = Tensor::ones([1, 4, 2, 2], CPU);
        assert!(matches!(
            InpaintLatent::plain(samples.copy()).into_value(),
            Value::Tensor(T::Latent, _)
        ));
        let mut latent = InpaintLatent::plain(samples.copy());
        latent.noise_mask = Some(Tensor::zeros([1, 16, 16], CPU));
        let value = latent.into_value();
        let back = InpaintLatent::from_value(&value, "latent").unwrap();
        assert!(back.samples.equal(&samples));
        assert_eq!(back.noise_mask.unwrap().size(), [1, 16, 16]);
        assert!(back.concat_latent.is_none());
        let error = InpaintLatent::from_value(&Value::Int(3), "latent")
            .unwrap_err()
            .to_string();
        assert!(error.contains("input 'latent'"), "{error}");
    }

    #[test]
    fn inpaint_pixels_greys_the_masked_area_crops_to_eight_and_grows_the_mask() {
        let image = Tensor::full([1, 3, 20, 17], 0.9, CPU);
        let mask = Tensor::zeros([1, 20, 17], CPU);
        // A 2x2 hole at rows 8..10, columns 8..10 of the uncropped image.
        let _ = mask.narrow(1, 8, 2).narrow(2, 8, 2).fill_(1.0);
        let (pixels, noise_mask) = inpaint_pixels(&image, &mask, 6, 8).unwrap();
        assert_eq!(pixels.size(), [1, 3, 16, 16]);
        assert_eq!(noise_mask.size(), [1, 16, 16]);
        // Cropped centred: 2 rows off the top, 0 columns off the left.
        let greyed = pixels.narrow(2, 6, 2).narrow(3, 8, 2);
        assert!((greyed - 0.5).abs().max().double_value(&[]) < 1e-6);
        assert!((pixels.get(0).get(0).get(0).get(0).double_value(&[]) - 0.9).abs() < 1e-6);
        // A 6x6 box with padding 3 reaches 3 pixels up/left and 2 down/right: the hole at
        // rows 6..=7, columns 8..=9 grows to rows 4..=10, columns 6..=12.
        let grown = noise_mask.sum(Kind::Float).double_value(&[]);
        assert_eq!(grown, 49.0, "a 2x2 hole grown by a 6x6 box is 7x7");
        let (_, no_grow) = inpaint_pixels(&image, &mask, 0, 8).unwrap();
        assert_eq!(no_grow.sum(Kind::Float).double_value(&[]), 4.0);
        let error = inpaint_pixels(&Tensor::zeros([1, 3, 4, 4], CPU), &mask, 0, 8)
            .unwrap_err()
            .to_string();
        assert!(error.contains("input 'image'"), "{error}");
    }

    #[test]
    fn outpaint_padding_puts_the_image_on_grey_with_a_feathered_mask() {
        let image = Tensor::full([2, 3, 10, 10], 0.2, CPU);
        let (canvas, mask) = pad_for_outpaint(&image, 8, 0, 0, 0, 2).unwrap();
        assert_eq!(canvas.size(), [2, 3, 10, 18]);
        assert_eq!(mask.size(), [1, 10, 18]);
        assert_eq!(canvas.double_value(&[1, 2, 5, 0]), 0.5);
        assert!((canvas.double_value(&[1, 2, 5, 8]) - 0.2).abs() < 1e-6);
        // New area 1; the image's first column (d = 0) 1.0, second (d = 1) 0.25, then 0.
        assert_eq!(mask.double_value(&[0, 3, 7]), 1.0);
        assert_eq!(mask.double_value(&[0, 3, 8]), 1.0);
        assert_eq!(mask.double_value(&[0, 3, 9]), 0.25);
        assert_eq!(mask.double_value(&[0, 3, 10]), 0.0);
        // Feathering too wide for the image: no fade.
        let (_, mask) = pad_for_outpaint(&image, 8, 0, 0, 0, 5).unwrap();
        assert_eq!(mask.double_value(&[0, 3, 8]), 0.0);
    }

    #[test]
    fn composite_keeps_the_destination_exactly_where_the_mask_is_zero() {
        let destination = Tensor::rand([1, 3, 8, 8], CPU);
        let source = Tensor::ones([1, 3, 8, 8], CPU);
        let mask = Tensor::zeros([1, 8, 8], CPU);
        let _ = mask.narrow(1, 2, 3).narrow(2, 2, 3).fill_(1.0);
        let out = composite_masked(&destination, &source, 0, 0, false, Some(&mask)).unwrap();
        let keep = mask.neg() + 1.0;
        assert!((&out * &keep).equal(&(&destination * &keep)));
        assert_eq!(
            out.narrow(2, 2, 3).narrow(3, 2, 3).min().double_value(&[]),
            1.0
        );
        // Offset and clipped: a 8x8 source at (6, 7) covers 2 columns and 1 row.
        let out = composite_masked(&destination, &source, 6, 7, false, None).unwrap();
        let changed = out
            .ne_tensor(&destination)
            .sum(Kind::Int64)
            .int64_value(&[]);
        let expected_changed = destination
            .narrow(2, 7, 1)
            .narrow(3, 6, 2)
            .ne(1.0)
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert_eq!(changed, expected_changed);
        let error = composite_masked(&destination, &mask, 0, 0, false, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("input 'source'"), "{error}");
    }
}
