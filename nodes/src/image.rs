//! Image nodes: load, save (PNG carrying its workflow), resize, and a cheap latent preview.
//! Images are float tensors [batch, 3, height, width] in [0, 1], RGB.
use std::path::{Component, Path, PathBuf};

use tch::{Device, Kind, Tensor};
use weft_engine::{
    ConstantInputs, InputSpec as In, Inputs, Node, NodeContext, NodeError, NodeResult, NodeSpec,
    OutputSpec as Out, Value, ValueType as T,
};

use crate::latent::{resize, UPSCALE_METHODS};

/// The PNG text keyword under which a saved image carries the workflow that made it (JSON).
pub const WORKFLOW_PNG_KEY: &str = "weft-workflow";

/// Checks an image tensor's shape: [batch, 3, height, width].
pub fn check_image(t: &Tensor, what: &str) -> NodeResult<(i64, i64, i64)> {
    match t.size()[..] {
        [b, 3, h, w] if b > 0 && h > 0 && w > 0 => Ok((b, h, w)),
        ref other => Err(NodeError::msg(format!(
            "{what} must be an image [batch, 3, height, width], got {other:?}"
        ))),
    }
}

/// One image of a batch as 8-bit RGB rows.
pub fn to_rgb8(image: &Tensor, index: i64) -> NodeResult<(u32, u32, Vec<u8>)> {
    let (_, h, w) = check_image(image, "image")?;
    let pixels = image
        .f_get(index)?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_clamp(0.0, 1.0)?
        .f_mul_scalar(255.0)?
        .f_round()?
        .f_to_kind(Kind::Uint8)?
        .f_permute([1, 2, 0])?
        .f_contiguous()?
        .f_flatten(0, -1)?;
    let bytes = Vec::<u8>::try_from(&pixels)?;
    Ok((w as u32, h as u32, bytes))
}

/// Decodes an image file to a [1, 3, H, W] tensor in [0, 1].
pub fn load_image(path: &Path) -> NodeResult<Tensor> {
    let img = image::open(path)
        .map_err(|e| NodeError::msg(format!("{}: not a readable image ({e})", path.display())))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let t = Tensor::f_from_data_size(img.as_raw(), &[h as i64, w as i64, 3], Kind::Uint8)?;
    Ok(t.f_permute([2, 0, 1])?
        .f_unsqueeze(0)?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(255.0)?)
}

/// Saves images as PNG files named `<prefix>_<counter>.png` in the output folder, each carrying
/// the workflow (JSON) in a text chunk so dropping it on the editor restores the graph.
pub struct SaveImage;
impl Node for SaveImage {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "SaveImage",
            category: "image",
            doc: "saves images as PNG (with the workflow embedded) in the output folder",
            version: 1,
            inputs: vec![
                In::new("image", T::Image, "the images to save"),
                In::new(
                    "prefix",
                    T::String,
                    "file name prefix; may name a sub-folder (a/b)",
                )
                .default("weft"),
            ],
            outputs: vec![Out::new("image", T::Image, "the same images")],
            output_node: true,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let image = inputs.tensor("image")?;
        let (batch, _, _) = check_image(image, "input 'image'")?;
        let prefix = inputs.string("prefix")?;
        let relative = Path::new(prefix);
        if prefix.is_empty()
            || relative
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(NodeError::msg(format!(
                "input 'prefix': '{prefix}' must be a relative name without '..' (files go in the output folder)"
            )));
        }
        let target = ctx.output_dir.join(relative);
        let dir = target.parent().unwrap_or(ctx.output_dir).to_path_buf();
        let stem = target
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::fs::create_dir_all(&dir)
            .map_err(|e| NodeError::msg(format!("cannot create {}: {e}", dir.display())))?;
        let workflow_json = ctx.workflow.to_json().to_string();
        let first = next_counter(&dir, &stem);
        for (i, counter) in (0..batch).zip(first..) {
            ctx.check_cancelled()?;
            let (w, h, rgb) = to_rgb8(image, i)?;
            let path = dir.join(format!("{stem}_{counter:05}.png"));
            write_png(&path, w, h, &rgb, &workflow_json)?;
            ctx.output_file(path);
        }
        Ok(vec![Value::Tensor(T::Image, image.shallow_clone())])
    }
}

fn next_counter(dir: &Path, stem: &str) -> u32 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 1;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name
                .strip_prefix(stem)?
                .strip_prefix('_')?
                .strip_suffix(".png")?;
            rest.parse::<u32>().ok()
        })
        .max()
        .map_or(1, |m| m + 1)
}

fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    rgb: &[u8],
    workflow_json: &str,
) -> NodeResult<()> {
    let fail =
        |e: &dyn std::fmt::Display| NodeError::msg(format!("writing {}: {e}", path.display()));
    let file = std::fs::File::create(path).map_err(|e| fail(&e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .add_itxt_chunk(WORKFLOW_PNG_KEY.to_string(), workflow_json.to_string())
        .map_err(|e| fail(&e))?;
    let mut writer = encoder.write_header().map_err(|e| fail(&e))?;
    writer.write_image_data(rgb).map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))?;
    Ok(())
}

/// Reads the workflow JSON a weft PNG carries, if any.
pub fn workflow_from_png(path: &Path) -> Result<Option<String>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let reader = decoder
        .read_info()
        .map_err(|e| format!("{}: not a PNG ({e})", path.display()))?;
    let info = reader.info();
    for chunk in &info.utf8_text {
        if chunk.keyword == WORKFLOW_PNG_KEY {
            return chunk.get_text().map(Some).map_err(|e| e.to_string());
        }
    }
    Ok(None)
}

/// Loads an image file (PNG, JPEG).
pub struct LoadImage;
impl Node for LoadImage {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "LoadImage",
            category: "image",
            doc: "loads an image file (PNG or JPEG) as an RGB image",
            version: 1,
            inputs: vec![In::new(
                "path",
                T::String,
                "the image file, relative to the working folder",
            )],
            outputs: vec![Out::new(
                "image",
                T::Image,
                "the image, [1, 3, height, width]",
            )],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let image = load_image(Path::new(inputs.string("path")?))?;
        Ok(vec![Value::Tensor(
            T::Image,
            image.f_to_device(ctx.device)?,
        )])
    }
    fn input_files(
        &self,
        constants: &ConstantInputs,
        _models_dir: &Path,
    ) -> NodeResult<Vec<PathBuf>> {
        Ok(constants
            .string("path")
            .map(PathBuf::from)
            .into_iter()
            .collect())
    }
}

/// Resizes images by a factor.
pub struct ImageScale;
impl Node for ImageScale {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "ImageScale",
            category: "image",
            doc: "resizes images by a scale factor",
            version: 1,
            inputs: vec![
                In::new("image", T::Image, "the images"),
                In::new("scale", T::Float, "scale factor")
                    .default(2.0)
                    .range(0.05, 16.0),
                In::new("method", T::Enum, "interpolation")
                    .choices(&UPSCALE_METHODS)
                    .default("bicubic"),
            ],
            outputs: vec![Out::new("image", T::Image, "the resized images")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let image = inputs.tensor("image")?;
        let (_, h, w) = check_image(image, "input 'image'")?;
        let scale = inputs.float("scale")?;
        let (nh, nw) = (
            ((h as f64 * scale).round() as i64).max(1),
            ((w as f64 * scale).round() as i64).max(1),
        );
        Ok(vec![Value::Tensor(
            T::Image,
            resize(image, nh, nw, inputs.string("method")?)?.f_clamp(0.0, 1.0)?,
        )])
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
        let latent = inputs.tensor("latent")?;
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
    let (w, h, pixels) = to_rgb8(&rgb, 0)?;
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
