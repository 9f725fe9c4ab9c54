//! Tiled inference for image-to-image models (upscalers): the image is cut into tiles, each
//! run with `overlap` pixels of real context around it, and only each tile's core is kept,
//! as Real-ESRGAN's `RealESRGANer.tile_process` does, so any image size fits in memory.
//! Also the shared input checks and image-file reading of the image models.
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result, TchContext};

/// A model mapping an RGB image batch in [0, 1], NCHW, to one `scale` times larger.
pub trait ImageToImage {
    fn name(&self) -> &str;
    fn scale(&self) -> i64;
    /// The raw model output (not clamped); checks the input's shape and kind first.
    fn forward(&self, image: &Tensor) -> Result<Tensor>;

    /// The output clamped to [0, 1], as the reference pipelines return it.
    fn upscale(&self, image: &Tensor) -> Result<Tensor> {
        self.forward(image)?
            .f_clamp(0.0, 1.0)
            .context(|| format!("{} output", self.name()))
    }
}

/// Checks that `image` is a float NCHW batch with `channels` channels and sides that are a
/// non-zero multiple of `multiple`; returns it unchanged (a shallow clone).
pub fn check_image_batch(
    image: &Tensor,
    channels: i64,
    multiple: i64,
    context: &str,
) -> Result<Tensor> {
    let size = image.size();
    let problem = if size.len() != 4 {
        Some(format!(
            "expected an image batch [N, {channels}, H, W], got a tensor of shape {size:?}"
        ))
    } else if size[1] != channels {
        Some(format!(
            "expected {channels} channels (shape [N, {channels}, H, W]), got shape {size:?}"
        ))
    } else if size[0] == 0 || size[2] == 0 || size[3] == 0 {
        Some(format!("empty image batch of shape {size:?}"))
    } else if size[2] % multiple != 0 || size[3] % multiple != 0 {
        Some(format!(
            "height and width must be multiples of {multiple}, got shape {size:?}"
        ))
    } else if !image.is_floating_point() {
        Some(format!(
            "expected a floating-point image in [0, 1], got {:?}",
            image.kind()
        ))
    } else {
        None
    };
    match problem {
        Some(message) => Err(ModelError::Shape {
            context: context.to_string(),
            message,
        }),
        None => Ok(image.shallow_clone()),
    }
}

/// Reads an image file (PNG, JPEG, ...) into a [1, 3, H, W] fp32 RGB tensor in [0, 1].
pub fn read_image(path: &Path, device: Device) -> Result<Tensor> {
    let decoded = image::ImageReader::open(path)
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .decode()
        .map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            format: "image",
            message: e.to_string(),
        })?;
    Ok(rgb8_to_tensor(&decoded.to_rgb8(), device))
}

/// An 8-bit RGB image as a [1, 3, H, W] fp32 tensor in [0, 1].
pub fn rgb8_to_tensor(image: &image::RgbImage, device: Device) -> Tensor {
    let (w, h) = image.dimensions();
    Tensor::from_slice(image.as_raw())
        .view([1, h as i64, w as i64, 3])
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        .divide_scalar(255.0)
        .to_device(device)
}

/// Tile geometry, in input pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileConfig {
    /// Side of each tile's core (the part of the output it contributes).
    pub tile: i64,
    /// Context on each side of a core; the result equals the untiled one exactly when it
    /// covers the model's receptive radius, and closely when it covers most of it.
    pub overlap: i64,
}

impl Default for TileConfig {
    fn default() -> Self {
        Self {
            tile: 256,
            overlap: 16,
        }
    }
}

/// Runs `model` on `image` ([N, C, H, W]) tile by tile and stitches the tiles' cores into
/// the [N, C', H·s, W·s] result (raw model output, not clamped).
pub fn forward_tiled(
    model: &dyn ImageToImage,
    image: &Tensor,
    tiles: TileConfig,
) -> Result<Tensor> {
    let context = format!("{} tiled input", model.name());
    if tiles.tile <= 0 || tiles.overlap < 0 {
        return Err(ModelError::Shape {
            context,
            message: format!(
                "tile must be positive and overlap non-negative, got tile {} overlap {}",
                tiles.tile, tiles.overlap
            ),
        });
    }
    let size = image.size();
    if size.len() != 4 {
        return Err(ModelError::Shape {
            context,
            message: format!("expected an image batch [N, C, H, W], got shape {size:?}"),
        });
    }
    let (h, w) = (size[2], size[3]);
    if h <= tiles.tile && w <= tiles.tile {
        return model.forward(image);
    }
    let scale = model.scale();
    let mut output: Option<Tensor> = None;
    for y0 in (0..h).step_by(tiles.tile as usize) {
        for x0 in (0..w).step_by(tiles.tile as usize) {
            let (y1, x1) = ((y0 + tiles.tile).min(h), (x0 + tiles.tile).min(w));
            let (py0, px0) = ((y0 - tiles.overlap).max(0), (x0 - tiles.overlap).max(0));
            let (py1, px1) = ((y1 + tiles.overlap).min(h), (x1 + tiles.overlap).min(w));
            let patch = image
                .f_narrow(2, py0, py1 - py0)
                .and_then(|t| t.f_narrow(3, px0, px1 - px0))
                .context(|| context.clone())?;
            let result = model.forward(&patch)?;
            let core = result
                .f_narrow(2, (y0 - py0) * scale, (y1 - y0) * scale)
                .and_then(|t| t.f_narrow(3, (x0 - px0) * scale, (x1 - x0) * scale))
                .context(|| format!("{}: tile output", model.name()))?;
            let out = match &output {
                Some(out) => out,
                None => {
                    let rs = result.size();
                    output.insert(Tensor::zeros(
                        [rs[0], rs[1], h * scale, w * scale],
                        (result.kind(), result.device()),
                    ))
                }
            };
            out.narrow(2, y0 * scale, (y1 - y0) * scale)
                .narrow(3, x0 * scale, (x1 - x0) * scale)
                .copy_(&core);
        }
    }
    output.ok_or_else(|| ModelError::Other(format!("{context}: no tiles")))
}

/// `forward_tiled` clamped to [0, 1].
pub fn upscale_tiled(
    model: &dyn ImageToImage,
    image: &Tensor,
    tiles: TileConfig,
) -> Result<Tensor> {
    forward_tiled(model, image, tiles)?
        .f_clamp(0.0, 1.0)
        .context(|| format!("{} output", model.name()))
}
