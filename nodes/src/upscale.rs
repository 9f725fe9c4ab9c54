//! Upscaling nodes: Real-ESRGAN (x4plus, animevideov3) and ESRGAN-slim, tiled so any size fits.
use std::path::PathBuf;

use weft_engine::{
    ConstantInputs, InputSpec as In, Inputs, ModelFolders, Node, NodeContext, NodeError,
    NodeResult, NodeSpec, OutputSpec as Out, Value, ValueType as T,
};

use crate::model_files::converted_file;
use crate::models::esrgan_slim::{EsrganSlim, EsrganSlimConfig};
use crate::models::rrdbnet::{RrdbNet, RrdbNetConfig};
use crate::models::srvgg_compact::{SrVggNetCompact, SrVggNetCompactConfig};
use crate::models::tiled::{upscale_tiled, ImageToImage, TileConfig};

pub const UPSCALERS: [&str; 4] = [
    "realesr-animevideov3",
    "realesrgan-x4plus",
    "esrgan-slim-x2",
    "esrgan-slim-x4",
];

fn weights_path(name: &str, models: &ModelFolders) -> NodeResult<PathBuf> {
    let relative = match name {
        "realesr-animevideov3" => "converted/realesrgan/realesr-animevideov3.safetensors",
        "realesrgan-x4plus" => "converted/realesrgan/realesrgan-x4plus.safetensors",
        "esrgan-slim-x2" => "converted/esrgan-slim/esrgan-slim-x2.safetensors",
        "esrgan-slim-x4" => "converted/esrgan-slim/esrgan-slim-x4.safetensors",
        other => return Err(NodeError::msg(format!("unknown upscaler '{other}'"))),
    };
    Ok(converted_file(models, relative, "the upscalers")?)
}

/// The upscale_model socket's value.
pub struct UpscaleModel(pub Box<dyn ImageToImage>);

pub struct LoadUpscaleModel;
impl Node for LoadUpscaleModel {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "LoadUpscaleModel",
            category: "loaders",
            doc: "loads an image upscaler converted at set-up (Real-ESRGAN, ESRGAN-slim)",
            version: 1,
            inputs: vec![In::new(
                "name",
                T::Enum,
                "which upscaler; animevideov3 is fast on CPU, x4plus is best",
            )
            .choices(&UPSCALERS)
            .default("realesr-animevideov3")],
            outputs: vec![Out::new("upscale_model", T::UpscaleModel, "the upscaler")],
            output_node: false,
        }
    }
    fn input_files(
        &self,
        constants: &ConstantInputs,
        models: &ModelFolders,
    ) -> NodeResult<Vec<PathBuf>> {
        Ok(vec![weights_path(
            constants.string("name").unwrap_or_default(),
            models,
        )?])
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let name = inputs.string("name")?;
        let path = weights_path(name, ctx.models)?;
        let model: Box<dyn ImageToImage> = match name {
            "realesr-animevideov3" => Box::new(SrVggNetCompact::load(
                &path,
                SrVggNetCompactConfig::animevideov3(),
                ctx.device,
            )?),
            "realesrgan-x4plus" => {
                Box::new(RrdbNet::load(&path, RrdbNetConfig::x4plus(), ctx.device)?)
            }
            "esrgan-slim-x2" => Box::new(EsrganSlim::load(
                &path,
                EsrganSlimConfig::slim(2),
                ctx.device,
            )?),
            _ => Box::new(EsrganSlim::load(
                &path,
                EsrganSlimConfig::slim(4),
                ctx.device,
            )?),
        };
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(vec![Value::object(
            T::UpscaleModel,
            UpscaleModel(model),
            bytes,
        )])
    }
}

pub struct UpscaleImage;
impl Node for UpscaleImage {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "UpscaleImage",
            category: "image",
            doc: "upscales images with a model, tile by tile so any size fits in memory",
            version: 1,
            inputs: vec![
                In::new("upscale_model", T::UpscaleModel, "the upscaler"),
                In::new("image", T::Image, "the images"),
                In::new("tile", T::Int, "tile side in input pixels")
                    .default(256)
                    .range(16.0, 4096.0),
                In::new("overlap", T::Int, "context around each tile in pixels")
                    .default(16)
                    .range(0.0, 256.0),
            ],
            outputs: vec![Out::new("image", T::Image, "the upscaled images")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let model = inputs.object::<UpscaleModel>("upscale_model")?;
        let image = inputs.tensor("image")?.f_to_device(ctx.device)?;
        crate::image::check_image(&image, "input 'image'")?;
        let tiles = TileConfig {
            tile: inputs.int("tile")?,
            overlap: inputs.int("overlap")?,
        };
        Ok(vec![Value::Tensor(
            T::Image,
            upscale_tiled(model.0.as_ref(), &image, tiles)?,
        )])
    }
}
