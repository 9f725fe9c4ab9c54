//! Latent nodes: empty latents, seeded noise, latent upscaling, and a cheap RGB preview.
use tch::{Kind, Tensor};
use weft_engine::{
    InputSpec as In, Inputs, Node, NodeContext, NodeError, NodeResult, NodeSpec, OutputSpec as Out,
    Value, ValueType as T,
};

/// Latent channels of the SD VAE; a latent pixel covers 8x8 image pixels.
pub const LATENT_CHANNELS: i64 = 4;
pub const LATENT_SCALE: i64 = 8;

fn size_inputs() -> Vec<In> {
    vec![
        In::new("width", T::Int, "image width in pixels (a multiple of 8)")
            .default(512)
            .range(8.0, 8192.0)
            .multiple_of(8),
        In::new("height", T::Int, "image height in pixels (a multiple of 8)")
            .default(512)
            .range(8.0, 8192.0)
            .multiple_of(8),
        In::new("batch", T::Int, "images per batch")
            .default(1)
            .range(1.0, 64.0),
    ]
}

fn latent_shape(inputs: &Inputs) -> NodeResult<[i64; 4]> {
    let (w, h, b) = (
        inputs.int("width")?,
        inputs.int("height")?,
        inputs.int("batch")?,
    );
    if w % LATENT_SCALE != 0 || h % LATENT_SCALE != 0 {
        return Err(NodeError::msg(format!(
            "width and height must be multiples of 8, got {w}x{h}"
        )));
    }
    Ok([b, LATENT_CHANNELS, h / LATENT_SCALE, w / LATENT_SCALE])
}

/// A latent of zeros, the start of txt2img.
pub struct EmptyLatent;
impl Node for EmptyLatent {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "EmptyLatent",
            category: "latent",
            doc: "a latent of zeros for the given image size",
            version: 1,
            inputs: size_inputs(),
            outputs: vec![Out::new(
                "latent",
                T::Latent,
                "zeros, [batch, 4, height/8, width/8]",
            )],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let shape = latent_shape(inputs)?;
        Ok(vec![Value::Tensor(
            T::Latent,
            Tensor::f_zeros(shape, (Kind::Float, ctx.device))?,
        )])
    }
}

/// Standard normal noise made on the CPU from the seed (so a seed means the same on every
/// device), then moved to the run's device.
pub struct RandomNoise;
impl Node for RandomNoise {
    fn spec(&self) -> NodeSpec {
        let mut inputs = vec![In::new("seed", T::Seed, "the noise seed").default(0)];
        inputs.extend(size_inputs());
        NodeSpec {
            type_name: "RandomNoise",
            category: "latent",
            doc: "seeded standard normal noise in latent shape",
            version: 1,
            inputs,
            outputs: vec![Out::new(
                "latent",
                T::Latent,
                "noise, [batch, 4, height/8, width/8]",
            )],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let shape = latent_shape(inputs)?;
        let seed = inputs.int("seed")? as u64;
        let noise = crate::noise::initial_noise(seed, &shape, ctx.device, Kind::Float)?;
        Ok(vec![Value::Tensor(T::Latent, noise)])
    }
}

pub const UPSCALE_METHODS: [&str; 4] = ["nearest-exact", "bilinear", "bicubic", "area"];

/// Resizes a tensor [B, C, H, W] to `height` x `width` with the named method.
pub fn resize(t: &Tensor, height: i64, width: i64, method: &str) -> NodeResult<Tensor> {
    let size = [height, width];
    Ok(match method {
        "nearest-exact" => t.f_upsample_nearest2d(size, None, None)?,
        "bilinear" => t.f_upsample_bilinear2d(size, false, None, None)?,
        "bicubic" => t.f_upsample_bicubic2d(size, false, None, None)?,
        "area" => t.f_adaptive_avg_pool2d(size)?,
        other => return Err(NodeError::msg(format!("unknown resize method '{other}'"))),
    })
}

/// Scales a latent by a factor (cheap: before decoding, for a hires pass).
pub struct LatentUpscale;
impl Node for LatentUpscale {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "LatentUpscale",
            category: "latent",
            doc: "resizes a latent by a scale factor",
            version: 1,
            inputs: vec![
                In::new("latent", T::Latent, "the latent to resize"),
                In::new("scale", T::Float, "scale factor")
                    .default(2.0)
                    .range(0.125, 8.0),
                In::new("method", T::Enum, "interpolation")
                    .choices(&UPSCALE_METHODS)
                    .default("nearest-exact"),
            ],
            outputs: vec![Out::new("latent", T::Latent, "the resized latent")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let input = crate::inpaint::InpaintLatent::input(inputs, "latent")?;
        let latent = &input.samples;
        let size = latent.size();
        if size.len() != 4 {
            return Err(NodeError::msg(format!(
                "latent must be [batch, channels, height, width], got {size:?}"
            )));
        }
        let scale = inputs.float("scale")?;
        let h = ((size[2] as f64 * scale).round() as i64).max(1);
        let w = ((size[3] as f64 * scale).round() as i64).max(1);
        // A noise mask stays attached (ComfyUI keeps the LATENT's other keys): it is resized to
        // whatever latent the Sampler gets.
        Ok(vec![input
            .with_samples(resize(latent, h, w, inputs.string("method")?)?)
            .into_value()])
    }
}

/// Maps latents to RGB without the VAE: a fixed linear mix of the four latent channels, then
/// a nearest x8 enlargement. A fast look at a latent, not a decode.
pub struct LatentPreview;
impl Node for LatentPreview {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "LatentPreview",
            category: "latent",
            doc: "a rough RGB view of a latent without the VAE (fast, approximate)",
            version: 1,
            inputs: vec![In::new("latent", T::Latent, "the latent to view")],
            outputs: vec![Out::new(
                "image",
                T::Image,
                "an RGB image 8x the latent size",
            )],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let latent = &crate::inpaint::latent_samples(inputs, "latent")?;
        let size = latent.size();
        if size.len() != 4 || size[1] != 4 {
            return Err(NodeError::msg(format!(
                "input 'latent' must be [batch, 4, height, width], got {size:?}"
            )));
        }
        let rgb = latent_rgb(latent)?;
        let rgb = rgb.f_upsample_nearest2d([size[2] * 8, size[3] * 8], None, None)?;
        Ok(vec![Value::Tensor(T::Image, rgb)])
    }
}

/// A latent [batch, 4, h, w] as RGB [batch, 3, h, w] in [0, 1]: each RGB channel a fixed mix
/// of the latent channels (weights chosen by the project for contrast).
fn latent_rgb(latent: &Tensor) -> NodeResult<Tensor> {
    let mix = Tensor::from_slice(&[
        0.45f32, 0.25, 0.25, 0.05, 0.15, 0.45, 0.15, 0.25, 0.10, 0.15, 0.45, 0.30,
    ])
    .f_reshape([3, 4])?
    .f_to_device(latent.device())?;
    let rgb = Tensor::f_einsum(
        "oc,bchw->bohw",
        &[mix, latent.f_to_kind(Kind::Float)?],
        None::<&[i64]>,
    )?;
    Ok(rgb
        .f_mul_scalar(0.25)?
        .f_add_scalar(0.5)?
        .f_clamp(0.0, 1.0)?)
}

/// The first latent of a batch as a small PNG `data:` URL (LatentPreview's mapping, enlarged
/// to about 128 pixels at most), for progress previews.
pub fn latent_preview_png(latent: &Tensor) -> NodeResult<String> {
    use base64::Engine as _;
    let size = latent.size();
    if size.len() != 4 || size[1] != 4 {
        return Err(NodeError::msg(format!(
            "a preview needs a latent [batch, 4, height, width], got {size:?}"
        )));
    }
    let first = latent.f_narrow(0, 0, 1)?;
    let rgb = latent_rgb(&first)?;
    let scale = (128 / size[2].max(size[3]).max(1)).clamp(1, 8);
    let rgb = rgb.f_upsample_nearest2d([size[2] * scale, size[3] * scale], None, None)?;
    let (w, h, pixels) = crate::image::to_rgb8(&rgb, 0)?;
    let mut png_bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png_bytes, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let fail = |e: png::EncodingError| NodeError::msg(format!("preview: {e}"));
        let mut writer = encoder.write_header().map_err(fail)?;
        writer.write_image_data(&pixels).map_err(fail)?;
        writer.finish().map_err(fail)?;
    }
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png_bytes)
    ))
}
