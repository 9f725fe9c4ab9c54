//! The image nodes: `SaveImage`, `LoadImage`, `ImageScale`.
use std::path::{Component, Path, PathBuf};

use weft_engine::{
    ConstantInputs, InputSpec as In, Inputs, Node, NodeContext, NodeError, NodeResult, NodeSpec,
    OutputSpec as Out, Value, ValueType as T,
};

use crate::latent::{resize, UPSCALE_METHODS};

use super::files::{load_image, next_counter, write_png};
use super::tensor::{check_image, to_rgb8};

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
        Ok(constants.file("path"))
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
