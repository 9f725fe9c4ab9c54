//! The safety filter: Yahoo open_nsfw scores each image; images at or over the threshold are
//! blacked out, blurred, rejected (the run fails) or flagged, image by image in a batch.
use std::path::PathBuf;

use tch::Tensor;
use weft_engine::{
    ConstantInputs, InputSpec as In, Inputs, ModelFolders, Node, NodeContext, NodeError,
    NodeResult, NodeSpec, OutputSpec as Out, Value, ValueType as T,
};

use crate::model_files::{converted_file, MissingConverted};
use crate::models::open_nsfw::OpenNsfw;

const OPEN_NSFW: &str = "converted/open_nsfw/open_nsfw.safetensors";

fn weights(models: &ModelFolders) -> Result<PathBuf, MissingConverted> {
    converted_file(models, OPEN_NSFW, "open_nsfw")
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
        models: &ModelFolders,
    ) -> NodeResult<Vec<PathBuf>> {
        Ok(vec![weights(models)?])
    }
    fn run(&self, _inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let path = weights(ctx.models)?;
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
            doc: "scores each image with open_nsfw; unsafe ones are blacked out, blurred, rejected (the run fails) or flagged",
            version: 2,
            inputs: vec![
                In::new("safety_model", T::SafetyModel, "the classifier"),
                In::new("image", T::Image, "the images to check"),
                In::new(
                    "threshold",
                    T::Float,
                    "P(unsafe) at or above which an image counts as unsafe",
                )
                .default(0.8)
                .range(0.0, 1.0)
                .slider(),
                In::new(
                    "action",
                    T::Enum,
                    "what happens to an unsafe image: black, blur, reject (the run fails, naming the score) or flag (it passes; the flagged output and a notice say so)",
                )
                .choices(&SafetyAction::NAMES)
                .default("black"),
            ],
            outputs: vec![
                Out::new("image", T::Image, "the images, unsafe ones blacked out or blurred"),
                Out::new("score", T::Float, "the highest P(unsafe) in the batch"),
                Out::new("flagged", T::Bool, "whether any image of the batch was unsafe"),
            ],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let model = inputs.object::<OpenNsfw>("safety_model")?;
        let image = inputs.tensor("image")?;
        let (batch, _, _) = crate::image::check_image(image, "input 'image'")?;
        let threshold = inputs.float("threshold")?;
        let action = SafetyAction::from_name(inputs.string("action")?)?;
        let mut kept = Vec::with_capacity(batch as usize);
        let (mut highest, mut flagged): (f64, bool) = (0.0, false);
        for i in 0..batch {
            ctx.check_cancelled()?;
            let one = image.f_get(i)?;
            let score = model.classify(&one)?;
            highest = highest.max(score);
            if score < threshold {
                kept.push(one);
                continue;
            }
            flagged = true;
            let which = format!(
                "image {} of {batch} scored P(unsafe) = {score:.3} (threshold {threshold})",
                i + 1
            );
            kept.push(match action {
                SafetyAction::Black => one.f_zeros_like()?,
                SafetyAction::Blur => blur_beyond_recognition(&one)?,
                SafetyAction::Flag => {
                    ctx.notice(format!("{which}: flagged as unsafe, passed on"));
                    one
                }
                SafetyAction::Reject => {
                    return Err(NodeError::msg(format!("{which}: rejected as unsafe")))
                }
            });
        }
        Ok(vec![
            Value::Tensor(T::Image, Tensor::f_stack(&kept, 0)?),
            Value::Float(highest),
            Value::Bool(flagged),
        ])
    }
}

/// What the safety filter does with an image at or over the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafetyAction {
    Black,
    Blur,
    Reject,
    Flag,
}

impl SafetyAction {
    pub const NAMES: [&'static str; 4] = ["black", "blur", "reject", "flag"];

    pub fn from_name(name: &str) -> NodeResult<Self> {
        Ok(match name {
            "black" => Self::Black,
            "blur" => Self::Blur,
            "reject" => Self::Reject,
            "flag" => Self::Flag,
            other => {
                return Err(NodeError::msg(format!(
                    "unknown action '{other}' (one of {})",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }
}

/// A `[3, H, W]` image averaged over blocks of 1/8 of its shorter side and scaled back up
/// bilinearly: colours survive, shapes and details do not.
fn blur_beyond_recognition(image: &Tensor) -> NodeResult<Tensor> {
    let size = image.size();
    let (h, w) = (size[1], size[2]);
    let block = (h.min(w) / 8).max(1);
    let small = image
        .f_unsqueeze(0)?
        .f_adaptive_avg_pool2d([(h / block).max(1), (w / block).max(1)])?;
    Ok(small
        .f_upsample_bilinear2d([h, w], false, None, None)?
        .f_squeeze_dim(0)?)
}
