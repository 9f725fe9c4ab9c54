//! Stable Diffusion's KL-regularised autoencoder (Rombach et al. 2022, "High-Resolution Image
//! Synthesis with Latent Diffusion Models"), mirroring diffusers `AutoencoderKL` so that its
//! state-dict keys load one to one; config after `runwayml/stable-diffusion-v1-5`
//! `vae/config.json`. Adds tiled encode / decode, blending overlapping tiles, for images too
//! large to process in one go.
use serde_json::{json, Value};
use tch::{Kind, Tensor};

use crate::error::{ModelError, Result, TchContext};
use crate::models::config_json::{self, ConfigResult};
use crate::models::layers::{join, Conv2d, TchResult};
use crate::models::vae::{Decoder, Encoder, StackShape};
use crate::weights::{Checked, WeightedModel, Weights};

/// An `AutoencoderKL` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    pub latent_channels: i64,
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: usize,
    pub norm_num_groups: i64,
    /// Latents go to the UNet as `sample * scaling_factor` and come back divided by it.
    pub scaling_factor: f64,
}

impl VaeConfig {
    /// The VAE of SD 1.x and 2.x (both use the same architecture and scale).
    pub fn sd() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
        }
    }

    /// SDXL's VAE: the SD architecture retrained, latents scaled by 0.13025
    /// (`stabilityai/stable-diffusion-xl-base-1.0` `vae/config.json`).
    pub fn sdxl() -> Self {
        Self {
            scaling_factor: 0.13025,
            ..Self::sd()
        }
    }

    /// A tiny config for tests (matches the parity fixtures).
    pub fn tiny() -> Self {
        Self {
            block_out_channels: vec![16, 32],
            layers_per_block: 1,
            norm_num_groups: 8,
            ..Self::sd()
        }
    }

    /// Reads a diffusers `vae/config.json`.
    pub fn from_diffusers_json(json: &Value) -> ConfigResult<Self> {
        let int = |k: &str| json.get(k).and_then(Value::as_i64);
        let block_out_channels = config_json::block_out_channels(json)?;
        for (key, want) in [
            ("down_block_types", "DownEncoderBlock2D"),
            ("up_block_types", "UpDecoderBlock2D"),
        ] {
            if let Some(Value::Array(a)) = json.get(key) {
                if let Some(other) = a.iter().find(|v| v.as_str() != Some(want)) {
                    return Err(config_json::unsupported(key, other, Some(&json!(want))));
                }
            }
        }
        config_json::require_values(json, &[("act_fn", json!("silu"))])?;
        config_json::refuse_set(json, &["shift_factor"], "VAE")?;
        for key in [
            "use_quant_conv",
            "use_post_quant_conv",
            "mid_block_add_attention",
        ] {
            if let Some(found @ Value::Bool(false)) = json.get(key) {
                return Err(config_json::unsupported(key, found, Some(&json!(true))));
            }
        }
        let sd = Self::sd();
        Ok(Self {
            in_channels: int("in_channels").unwrap_or(3),
            out_channels: int("out_channels").unwrap_or(3),
            latent_channels: int("latent_channels").unwrap_or(4),
            block_out_channels,
            layers_per_block: int("layers_per_block").unwrap_or(1) as usize,
            norm_num_groups: int("norm_num_groups").unwrap_or(32),
            scaling_factor: json
                .get("scaling_factor")
                .and_then(Value::as_f64)
                .unwrap_or(sd.scaling_factor),
        })
    }

    /// Image pixels per latent pixel (8 for SD).
    pub fn downscale_factor(&self) -> i64 {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// The encoder's diagonal Gaussian over latents (diffusers `DiagonalGaussianDistribution`).
pub struct LatentDistribution {
    pub mean: Tensor,
    /// Clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor,
}

impl LatentDistribution {
    /// The most likely latent (what img2img usually takes).
    pub fn mode(&self) -> Tensor {
        self.mean.shallow_clone()
    }

    /// `mean + std * noise`, with `noise` standard-normal of the mean's shape, drawn by the
    /// caller from its own seeded generator.
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        if noise.size() != self.mean.size() {
            return Err(ModelError::Shape {
                context: "LatentDistribution::sample".into(),
                message: format!(
                    "noise {:?} must match the latent {:?}",
                    noise.size(),
                    self.mean.size()
                ),
            });
        }
        let go = || -> TchResult<Tensor> {
            let std = self.logvar.f_mul_scalar(0.5)?.f_exp()?;
            self.mean.f_add(
                &std.f_mul(
                    &noise
                        .f_to_kind(self.mean.kind())?
                        .f_to_device(self.mean.device())?,
                )?,
            )
        };
        go().context(|| "LatentDistribution::sample".into())
    }
}

/// How to split a large encode / decode into overlapping tiles. Sizes are in image pixels and
/// must be multiples of the VAE's downscale factor (8 for SD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileOptions {
    /// Side of a square tile.
    pub tile_size: i64,
    /// How far neighbouring tiles overlap; the overlap is cross-faded linearly.
    pub overlap: i64,
}

impl Default for TileOptions {
    fn default() -> Self {
        Self {
            tile_size: 512,
            overlap: 64,
        }
    }
}

/// diffusers `AutoencoderKL`: encoder + `quant_conv`, `post_quant_conv` + decoder.
pub struct AutoencoderKL {
    config: VaeConfig,
    encoder: Encoder,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
    decoder: Decoder,
    kind: Kind,
}

impl WeightedModel for AutoencoderKL {
    type Config = VaeConfig;
    const NAME: &'static str = "AutoencoderKL";

    fn build(w: &Weights, prefix: &str, config: VaeConfig, _: Checked) -> Result<Self> {
        let c = &config;
        if c.block_out_channels.is_empty()
            || c.layers_per_block == 0
            || c.block_out_channels
                .iter()
                .any(|&ch| ch % c.norm_num_groups != 0)
        {
            return Err(ModelError::Other(format!("invalid VAE config: {c:?}")));
        }
        let p = |n: &str| join(prefix, n);
        let l = c.latent_channels;
        let shape = StackShape {
            latent_channels: l,
            block_out_channels: &c.block_out_channels,
            layers_per_block: c.layers_per_block,
            groups: c.norm_num_groups,
        };
        let encoder = Encoder::new(w, &p("encoder"), c.in_channels, &shape);
        let decoder = Decoder::new(w, &p("decoder"), c.out_channels, &shape);
        let quant_conv = Conv2d::new(w, &p("quant_conv"), 2 * l, 2 * l, 1, 1, 0);
        let post_quant_conv = Conv2d::new(w, &p("post_quant_conv"), l, l, 1, 1, 0);
        let kind = w
            .get_optional(&p("quant_conv.weight"))
            .map(|t| t.kind())
            .unwrap_or(Kind::Float);
        Ok(Self {
            config,
            encoder,
            quant_conv,
            post_quant_conv,
            decoder,
            kind,
        })
    }
}

impl AutoencoderKL {
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn check(&self, what: &str, x: &Tensor, channels: i64, multiple: i64) -> Result<()> {
        let s = x.size();
        let ok = s.len() == 4
            && s[1] == channels
            && s[0] > 0
            && s[2] > 0
            && s[3] > 0
            && s[2] % multiple == 0
            && s[3] % multiple == 0;
        if ok && x.device() == self.quant_conv.device() {
            return Ok(());
        }
        Err(ModelError::Shape {
            context: format!("AutoencoderKL::{what}"),
            message: format!(
                "expected [B, {channels}, H, W] with H, W multiples of {multiple} on {:?}, got {s:?} on {:?}",
                self.quant_conv.device(),
                x.device()
            ),
        })
    }

    /// Image `[B, 3, H, W]` in [-1, 1] (H, W multiples of the downscale factor) -> the latent
    /// distribution, unscaled (multiply by `scaling_factor` before the UNet).
    pub fn encode(&self, image: &Tensor) -> Result<LatentDistribution> {
        let f = self.config.downscale_factor();
        self.check("encode", image, self.config.in_channels, f)?;
        let moments = tch::no_grad(|| self.encode_moments(&image.f_to_kind(self.kind)?))
            .context(|| format!("AutoencoderKL::encode {:?}", image.size()))?;
        Self::distribution(&moments)
    }

    fn encode_moments(&self, image: &Tensor) -> TchResult<Tensor> {
        self.quant_conv.forward(&self.encoder.forward(image)?)
    }

    fn distribution(moments: &Tensor) -> Result<LatentDistribution> {
        let go = || -> TchResult<LatentDistribution> {
            let halves = moments.f_chunk(2, 1)?;
            Ok(LatentDistribution {
                mean: halves[0].shallow_clone(),
                logvar: halves[1].f_clamp(-30.0, 20.0)?,
            })
        };
        go().context(|| "AutoencoderKL latent distribution".into())
    }

    /// Unscaled latents `[B, 4, h, w]` -> image `[B, 3, h*f, w*f]`, roughly in [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        self.check("decode", latents, self.config.latent_channels, 1)?;
        tch::no_grad(|| self.decode_raw(&latents.f_to_kind(self.kind)?))
            .context(|| format!("AutoencoderKL::decode {:?}", latents.size()))
    }

    fn decode_raw(&self, latents: &Tensor) -> TchResult<Tensor> {
        self.decoder
            .forward(&self.post_quant_conv.forward(latents)?)
    }

    fn tile_in_latents(&self, tiles: TileOptions) -> Result<(i64, i64)> {
        let f = self.config.downscale_factor();
        if tiles.tile_size <= 0
            || tiles.overlap < 0
            || tiles.overlap >= tiles.tile_size
            || tiles.tile_size % f != 0
            || tiles.overlap % f != 0
        {
            return Err(ModelError::Other(format!(
                "invalid tiles {tiles:?}: need 0 <= overlap < tile_size, both multiples of {f}"
            )));
        }
        Ok((tiles.tile_size / f, tiles.overlap / f))
    }

    /// `decode` in overlapping tiles, cross-fading the overlaps; the same as `decode` when the
    /// image fits in one tile. The VAE's mid-block attention then sees one tile at a time, so
    /// results differ slightly from `decode` on larger images.
    pub fn decode_tiled(&self, latents: &Tensor, tiles: TileOptions) -> Result<Tensor> {
        self.check("decode_tiled", latents, self.config.latent_channels, 1)?;
        let (tile, overlap) = self.tile_in_latents(tiles)?;
        let latents = latents
            .f_to_kind(self.kind)
            .context(|| "AutoencoderKL::decode_tiled".into())?;
        let f = self.config.downscale_factor();
        tch::no_grad(|| {
            blend_tiles(
                &latents,
                tile,
                overlap,
                1,
                f,
                self.config.out_channels,
                |t| self.decode_raw(t),
            )
        })
        .context(|| format!("AutoencoderKL::decode_tiled {:?}", latents.size()))
    }

    /// `encode` in overlapping tiles (blending the moments); the same as `encode` when the
    /// image fits in one tile.
    pub fn encode_tiled(&self, image: &Tensor, tiles: TileOptions) -> Result<LatentDistribution> {
        let f = self.config.downscale_factor();
        self.check("encode_tiled", image, self.config.in_channels, f)?;
        let (tile, overlap) = self.tile_in_latents(tiles)?;
        let image = image
            .f_to_kind(self.kind)
            .context(|| "AutoencoderKL::encode_tiled".into())?;
        let moments = tch::no_grad(|| {
            blend_tiles(
                &image,
                tile,
                overlap,
                f,
                1,
                2 * self.config.latent_channels,
                |t| self.encode_moments(t),
            )
        })
        .context(|| format!("AutoencoderKL::encode_tiled {:?}", image.size()))?;
        Self::distribution(&moments)
    }
}

/// Start offsets of tiles of `tile` along an axis of `len`, stepping by `tile - overlap`; the
/// last tile is moved back to end at `len` so every tile is whole.
pub fn tile_starts(len: i64, tile: i64, overlap: i64) -> Vec<i64> {
    if len <= tile {
        return vec![0];
    }
    let stride = (tile - overlap).max(1);
    let mut starts = Vec::new();
    let mut s = 0;
    while s + tile < len {
        starts.push(s);
        s += stride;
    }
    starts.push(len - tile);
    starts
}

/// Per-position blend weights `[len]` for a tile: 1 inside, ramping down linearly over `ramp`
/// positions at each edge that is not the image border. Where only one tile covers a position
/// the weight is exactly 1, so the result there is that tile's, bit for bit.
fn edge_ramp(len: i64, ramp: i64, ramp_start: bool, ramp_end: bool) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let mut w = 1f32;
            if ramp > 0 {
                let fade = |d: i64| ((d as f32 + 0.5) / ramp as f32).min(1.0);
                if ramp_start {
                    w = w.min(fade(i));
                }
                if ramp_end {
                    w = w.min(fade(len - 1 - i));
                }
            }
            w
        })
        .collect()
}

/// Runs `op` on overlapping tiles of `input` and blends the outputs. Tile geometry is given
/// in a "grid" unit: input pixels are `grid * in_per_grid`, output pixels
/// `grid * out_per_grid`.
fn blend_tiles(
    input: &Tensor,
    tile: i64,
    overlap: i64,
    in_per_grid: i64,
    out_per_grid: i64,
    out_channels: i64,
    op: impl Fn(&Tensor) -> TchResult<Tensor>,
) -> TchResult<Tensor> {
    let s = input.size();
    let (b, grid_h, grid_w) = (s[0], s[2] / in_per_grid, s[3] / in_per_grid);
    let ys = tile_starts(grid_h, tile, overlap);
    let xs = tile_starts(grid_w, tile, overlap);
    if ys.len() == 1 && xs.len() == 1 {
        return op(input);
    }
    let opts = (input.kind(), input.device());
    let out = Tensor::f_zeros(
        [
            b,
            out_channels,
            grid_h * out_per_grid,
            grid_w * out_per_grid,
        ],
        opts,
    )?;
    let weight_sum = Tensor::f_zeros([1, 1, grid_h * out_per_grid, grid_w * out_per_grid], opts)?;
    let ramp = overlap * out_per_grid;
    for &y in &ys {
        for &x in &xs {
            let th = tile.min(grid_h);
            let tw = tile.min(grid_w);
            let crop = input
                .f_narrow(2, y * in_per_grid, th * in_per_grid)?
                .f_narrow(3, x * in_per_grid, tw * in_per_grid)?;
            let decoded = op(&crop)?;
            let (oh, ow) = (th * out_per_grid, tw * out_per_grid);
            let wy = edge_ramp(oh, ramp, y > 0, y + th < grid_h);
            let wx = edge_ramp(ow, ramp, x > 0, x + tw < grid_w);
            let wy = Tensor::from_slice(&wy)
                .f_to_device(opts.1)?
                .f_to_kind(opts.0)?;
            let wx = Tensor::from_slice(&wx)
                .f_to_device(opts.1)?
                .f_to_kind(opts.0)?;
            let weight = wy
                .f_unsqueeze(1)?
                .f_mul(&wx.f_unsqueeze(0)?)?
                .f_reshape([1, 1, oh, ow])?;
            let mut out_view =
                out.f_narrow(2, y * out_per_grid, oh)?
                    .f_narrow(3, x * out_per_grid, ow)?;
            let _ = out_view.f_add_(&decoded.f_mul(&weight)?)?;
            let mut weight_view =
                weight_sum
                    .f_narrow(2, y * out_per_grid, oh)?
                    .f_narrow(3, x * out_per_grid, ow)?;
            let _ = weight_view.f_add_(&weight)?;
        }
    }
    out.f_div(&weight_sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_sd_vae_config_parses_to_the_preset() {
        // `runwayml/stable-diffusion-v1-5` `vae/config.json` (no scaling_factor: the default).
        let json: Value = serde_json::from_str(
            r#"{"_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0", "act_fn": "silu",
            "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
            "out_channels": 3, "sample_size": 512,
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}"#,
        )
        .unwrap();
        assert_eq!(VaeConfig::from_diffusers_json(&json), Ok(VaeConfig::sd()));
        assert_eq!(VaeConfig::sd().downscale_factor(), 8);
    }

    #[test]
    fn tiles_cover_the_axis_and_stay_whole() {
        assert_eq!(tile_starts(8, 8, 2), vec![0]);
        assert_eq!(tile_starts(5, 8, 2), vec![0]);
        assert_eq!(tile_starts(14, 8, 2), vec![0, 6]);
        assert_eq!(tile_starts(15, 8, 2), vec![0, 6, 7]);
        assert_eq!(tile_starts(20, 8, 0), vec![0, 8, 12]);
    }

    #[test]
    fn blending_reproduces_a_local_op_exactly() {
        // Nearest 4x upsampling is local, so tiles must blend back to the untiled result.
        let x = Tensor::randn([1, 2, 23, 37], (Kind::Float, tch::Device::Cpu));
        let up =
            |t: &Tensor| t.f_upsample_nearest2d([t.size()[2] * 4, t.size()[3] * 4], None, None);
        let full = up(&x).unwrap();
        let tiled = blend_tiles(&x, 8, 3, 1, 4, 2, up).unwrap();
        let err = (full - tiled).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{err}");
    }

    #[test]
    fn ramps_only_at_inner_edges() {
        assert_eq!(edge_ramp(4, 2, false, false), vec![1.0; 4]);
        assert_eq!(edge_ramp(4, 2, true, false), vec![0.25, 0.75, 1.0, 1.0]);
        assert_eq!(edge_ramp(4, 2, false, true), vec![1.0, 1.0, 0.75, 0.25]);
    }
}
