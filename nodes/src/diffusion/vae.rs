//! The `VaeDecode` and `VaeEncode` nodes: latents to images and back, tiled when large.

use tch::Kind;
use weft_engine::{
    InputSpec as In, Inputs, Node, NodeContext, NodeError, NodeResult, NodeSpec, OutputSpec as Out,
    Value, ValueType as T,
};

use crate::models::autoencoder_kl::TileOptions;

use super::handles::Vae;

fn tile_options(tile: i64) -> TileOptions {
    TileOptions {
        tile_size: tile,
        overlap: (tile / 8).max(8) / 8 * 8,
    }
}

/// Latent to image through the VAE; large images decode in tiles.
pub struct VaeDecode;
impl Node for VaeDecode {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "VaeDecode",
            category: "latent",
            doc: "decodes a latent into an image with the VAE",
            version: 1,
            inputs: vec![
                In::new("vae", T::Vae, "the VAE"),
                In::new("latent", T::Latent, "the latent to decode"),
                In::new("tile", T::Int, "tile side in pixels for large images; 0 decodes whole images up to 1024 px, tiled above").default(0).range(0.0, 4096.0).multiple_of(8),
            ],
            outputs: vec![Out::new("image", T::Image, "RGB in [0, 1]")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let vae = &inputs.object::<Vae>("vae")?.vae;
        let latent = crate::inpaint::latent_samples(inputs, "latent")?.f_to_device(ctx.device)?;
        let scaled = latent.f_div_scalar(vae.config().scaling_factor)?;
        let factor = vae.config().downscale_factor();
        let side = latent.size().iter().skip(2).copied().max().unwrap_or(0) * factor;
        let tile = inputs.int("tile")?;
        let decoded = if tile > 0 {
            vae.decode_tiled(&scaled, tile_options(tile))?
        } else if side > 1024 {
            vae.decode_tiled(&scaled, tile_options(512))?
        } else {
            vae.decode(&scaled)?
        };
        let image = decoded
            .f_to_kind(Kind::Float)?
            .f_add_scalar(1.0)?
            .f_div_scalar(2.0)?
            .f_clamp(0.0, 1.0)?;
        Ok(vec![Value::Tensor(T::Image, image)])
    }
}

/// Image to latent through the VAE (the start of img2img).
pub struct VaeEncode;
impl Node for VaeEncode {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "VaeEncode",
            category: "latent",
            doc: "encodes an image into a latent with the VAE (for img2img)",
            version: 1,
            inputs: vec![
                In::new("vae", T::Vae, "the VAE"),
                In::new("image", T::Image, "RGB in [0, 1]; sides a multiple of 8"),
            ],
            outputs: vec![Out::new(
                "latent",
                T::Latent,
                "the latent (mean of the posterior, scaled)",
            )],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let vae = &inputs.object::<Vae>("vae")?.vae;
        let image = inputs.tensor("image")?.f_to_device(ctx.device)?;
        crate::image::check_image(&image, "input 'image'")?;
        let factor = vae.config().downscale_factor();
        let size = image.size();
        if size[2] % factor != 0 || size[3] % factor != 0 {
            return Err(NodeError::msg(format!(
                "input 'image': sides must be multiples of {factor}, got {}x{}; resize it first (ImageScale)",
                size[3], size[2]
            )));
        }
        let latent = vae
            .encode(&image.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?)?
            .mode();
        Ok(vec![Value::Tensor(
            T::Latent,
            latent
                .f_mul_scalar(vae.config().scaling_factor)?
                .f_to_kind(Kind::Float)?,
        )])
    }
}
