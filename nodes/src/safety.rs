//! The safety filter: Yahoo open_nsfw scores each image; images over the threshold are
//! replaced by black ones so nothing unsafe is saved by accident.
use std::path::{Path, PathBuf};

use tch::Tensor;
use weft_engine::{
    ConstantInputs, InputSpec as In, Inputs, Node, NodeContext, NodeResult, NodeSpec,
    OutputSpec as Out, Value, ValueType as T,
};

use crate::model_files::{converted_file, MissingConverted};
use crate::models::open_nsfw::OpenNsfw;

const OPEN_NSFW: &str = "converted/open_nsfw/open_nsfw.safetensors";

fn weights(models_dir: &Path) -> Result<PathBuf, MissingConverted> {
    converted_file(models_dir, OPEN_NSFW, "open_nsfw")
}

pub struct LoadSafetyModel;
impl Node for LoadSafetyModel {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "LoadSafetyModel",
            category: "loaders",
            doc: "loads the open_nsfw image safety classifier converted at set-up",
            version: 1,
            inputs: vec![],
            outputs: vec![Out::new("safety_model", T::SafetyModel, "the classifier")],
            output_node: false,
        }
    }
    fn input_files(
        &self,
        _constants: &ConstantInputs,
        models_dir: &Path,
    ) -> NodeResult<Vec<PathBuf>> {
        Ok(vec![weights(models_dir)?])
    }
    fn run(&self, _inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let path = weights(ctx.models_dir)?;
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(vec![Value::object(
            T::SafetyModel,
            OpenNsfw::load(&path, ctx.device)?,
            bytes,
        )])
    }
}

pub struct SafetyFilter;
impl Node for SafetyFilter {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "SafetyFilter",
            category: "image",
            doc: "blacks out images that open_nsfw scores as unsafe",
            version: 1,
            inputs: vec![
                In::new("safety_model", T::SafetyModel, "the classifier"),
                In::new("image", T::Image, "the images to check"),
                In::new(
                    "threshold",
                    T::Float,
                    "P(unsafe) at or above which an image is blacked out",
                )
                .default(0.8)
                .range(0.0, 1.0),
            ],
            outputs: vec![
                Out::new("image", T::Image, "the images, unsafe ones black"),
                Out::new("score", T::Float, "the highest P(unsafe) in the batch"),
            ],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let model = inputs.object::<OpenNsfw>("safety_model")?;
        let image = inputs.tensor("image")?;
        let (batch, _, _) = crate::image::check_image(image, "input 'image'")?;
        let threshold = inputs.float("threshold")?;
        let mut kept = Vec::with_capacity(batch as usize);
        let mut highest: f64 = 0.0;
        for i in 0..batch {
            ctx.check_cancelled()?;
            let one = image.f_get(i)?;
            let score = model.classify(&one)?;
            highest = highest.max(score);
            kept.push(if score >= threshold {
                one.f_zeros_like()?
            } else {
                one
            });
        }
        Ok(vec![
            Value::Tensor(T::Image, Tensor::f_stack(&kept, 0)?),
            Value::Float(highest),
        ])
    }
}
