//! The image nodes: `SaveImage`, `LoadImage`, `ImageScale`, `ImageBatch`.
use std::path::{Component, Path, PathBuf};

use weft_engine::{
    Constant, ConstantInputs, Diagnostic, InputSpec as In, Inputs, ModelFolders, Node, NodeContext,
    NodeError, NodeResult, NodeSpec, OutputSpec as Out, Value, ValueType as T,
};

use tch::Tensor;

use crate::latent::{resize, UPSCALE_METHODS};

use super::files::{load_image_and_alpha, next_counter, write_png};
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
                .default("weft")
                .check(check_prefix),
            ],
            outputs: vec![Out::new("image", T::Image, "the same images")],
            output_node: true,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let image = inputs.tensor("image")?;
        let (batch, _, _) = check_image(image, "input 'image'")?;
        let prefix = inputs.string("prefix")?;
        // Validation refused these already; a run handed over some other way is checked too.
        if let Some(why) = prefix_problem(prefix) {
            return Err(NodeError::msg(format!(
                "input 'prefix': '{prefix}' {why} ({PREFIX_RULE})"
            )));
        }
        let relative = Path::new(prefix);
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

/// What a SaveImage prefix may be, as its diagnostics say it.
const PREFIX_RULE: &str = "a prefix is a relative name inside the run's output folder: parts \
     separated by '/', none empty or starting with '.', no '\\', e.g. 'weft' or 'portraits/face'";

/// Why `prefix` cannot name files inside the run's output folder, if it cannot: empty, absolute,
/// a `..` (or any hidden) part, or a backslash. Parts starting with '.' are refused as a whole
/// because the outputs route serves no such part.
fn prefix_problem(prefix: &str) -> Option<&'static str> {
    if prefix.is_empty() {
        return Some("is empty");
    }
    if prefix.starts_with('/') || Path::new(prefix).is_absolute() {
        return Some("is an absolute path");
    }
    if prefix.contains(['\\', '\0']) {
        return Some("contains a backslash or NUL");
    }
    let parts_ok = prefix.split('/').all(|part| {
        !part.is_empty()
            && !part.starts_with('.')
            && part.len() <= 200
            && matches!(
                Path::new(part).components().next(),
                Some(Component::Normal(_))
            )
    });
    (!parts_ok).then_some("has an empty, '.'-led ('..' included) or over-long part")
}

/// SaveImage's `prefix` rule at validation time (see `prefix_problem`).
fn check_prefix(value: &Constant) -> Result<(), Diagnostic> {
    let Constant::String(prefix) = value else {
        return Ok(());
    };
    match prefix_problem(prefix) {
        Some(why) => {
            // A pasted megabyte must not come back whole in every diagnostic.
            let shown: String = prefix.chars().take(100).collect();
            let cut = if shown.len() < prefix.len() {
                "..."
            } else {
                ""
            };
            Err(Diagnostic::new(format!("prefix '{shown}{cut}' {why}")).hint(PREFIX_RULE))
        }
        None => Ok(()),
    }
}

/// Loads an image file (PNG, JPEG), and its alpha channel as a mask as ComfyUI's LoadImage
/// does (mask = 1 - alpha: the transparent pixels a mask painter erased are the ones to
/// repaint).
pub struct LoadImage;
impl Node for LoadImage {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "LoadImage",
            category: "image",
            doc: "loads an image file (PNG or JPEG) as an RGB image, and its transparency as a mask",
            version: 2,
            inputs: vec![In::new(
                "path",
                T::String,
                "the image file, relative to the working folder",
            )
            .image_file()],
            outputs: vec![
                Out::new("image", T::Image, "the image, [1, 3, height, width]"),
                Out::new(
                    "mask",
                    T::Mask,
                    "1 - alpha, [1, height, width]: 1 where the image is transparent; zeros without alpha",
                ),
            ],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let (image, alpha) = load_image_and_alpha(Path::new(inputs.string("path")?), ctx.files)?;
        let mask = match alpha {
            Some(alpha) => alpha.f_neg()?.f_add_scalar(1.0)?,
            None => image.f_select(1, 0)?.f_zeros_like()?,
        };
        Ok(vec![
            Value::Tensor(T::Image, image.f_to_device(ctx.device)?),
            Value::Tensor(T::Mask, mask.f_to_device(ctx.device)?),
        ])
    }
    fn input_files(
        &self,
        constants: &ConstantInputs,
        _models: &ModelFolders,
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

/// Stacks two image batches into one, so that one chain of nodes handles them together (as
/// ComfyUI's ImageBatch does). The second is resized to the first's size when they differ.
pub struct ImageBatch;
impl Node for ImageBatch {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "ImageBatch",
            category: "image",
            doc: "stacks two image batches into one (the second is resized to the first's size if it differs)",
            version: 1,
            inputs: vec![
                In::new("image1", T::Image, "the first images"),
                In::new("image2", T::Image, "the images appended after them"),
            ],
            outputs: vec![Out::new(
                "image",
                T::Image,
                "image1's images, then image2's",
            )],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, _ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let batch = stack_images(inputs.tensor("image1")?, inputs.tensor("image2")?)?;
        Ok(vec![Value::Tensor(T::Image, batch)])
    }
}

/// `first`'s images then `second`'s, `second` resized (bilinear) to `first`'s size.
fn stack_images(first: &Tensor, second: &Tensor) -> NodeResult<Tensor> {
    let (_, h, w) = check_image(first, "input 'image1'")?;
    let (_, h2, w2) = check_image(second, "input 'image2'")?;
    let second = if (h2, w2) == (h, w) {
        second.shallow_clone()
    } else {
        resize(second, h, w, "bilinear")?.f_clamp(0.0, 1.0)?
    };
    let second = second.f_to_device(first.device())?;
    Ok(Tensor::f_cat(&[first, &second], 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_batch_stacks_in_order_and_resizes_the_second() {
        let options = (tch::Kind::Float, tch::Device::Cpu);
        let first = Tensor::full([2, 3, 4, 6], 0.25, options);
        let second = Tensor::ones([1, 3, 2, 3], options);
        let batch = stack_images(&first, &second).unwrap();
        assert_eq!(batch.size(), [3, 3, 4, 6]);
        assert_eq!(batch.get(1).mean(tch::Kind::Float).double_value(&[]), 0.25);
        assert_eq!(batch.get(2).mean(tch::Kind::Float).double_value(&[]), 1.0);
        let not_an_image = Tensor::ones([3, 4, 6], options);
        let error = stack_images(&first, &not_an_image).unwrap_err().to_string();
        assert!(error.contains("image2"), "{error}");
    }

    #[test]
    fn save_image_prefix_outside_the_output_folder_is_refused_by_validation() {
        let registry = crate::registry();
        let workflow_with = |prefix: &str| {
            let doc = serde_json::json!({"weft": 1, "nodes": {
                "img": {"type": "LoadImage", "path": "x.png"},
                "save": {"type": "SaveImage", "image": "$img.image", "prefix": prefix},
            }});
            weft_engine::Workflow::parse_str(&doc.to_string()).unwrap()
        };
        for bad in [
            "",
            "../../etc/x",
            "/tmp/abs",
            "a/../b",
            "a//b",
            "a/",
            ".hidden",
            "a\\b",
        ] {
            let errors = weft_engine::validate(&workflow_with(bad), &registry, None);
            assert_eq!(errors.len(), 1, "{bad:?}: {errors:?}");
            assert_eq!(errors[0].node.as_deref(), Some("save"));
            assert_eq!(errors[0].input.as_deref(), Some("prefix"));
            assert!(errors[0].hint.as_deref().unwrap().contains("relative name"));
        }
        for good in ["weft", "portraits/face", "a-b_c 1"] {
            let errors = weft_engine::validate(&workflow_with(good), &registry, None);
            assert!(errors.is_empty(), "{good:?}: {errors:?}");
        }
    }
}
