//! The `SamplerAdvanced` node: the Sampler over a window of its schedule (ComfyUI's
//! KSamplerAdvanced), for two-stage runs such as SDXL base then refiner.
use weft_engine::{
    InputSpec as In, Inputs, Node, NodeContext, NodeError, NodeResult, NodeSpec, OutputSpec as Out,
    Value, ValueType as T,
};

use crate::samplers::{SamplerKind, ScheduleKind, StepWindow};

use super::sample::sample_latent;

/// The Sampler from `start_at_step` to `end_at_step` of its schedule, with or without adding
/// noise and leaving the noise in at the end. A separate node, not more Sampler inputs, so
/// that the Sampler's inputs and cache keys stay what existing workflows have.
pub struct SamplerAdvanced;
impl Node for SamplerAdvanced {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "SamplerAdvanced",
            category: "sampling",
            doc: "the Sampler over part of its schedule (ComfyUI's KSamplerAdvanced): steps start_at_step..end_at_step of `steps`; two of them make a two-stage run (base to step k leaving the noise in, then another model from k without adding noise)",
            version: 1,
            inputs: vec![
                In::new("model", T::Model, "the UNet"),
                In::new("positive", T::Conditioning, "what the image should show"),
                In::new("negative", T::Conditioning, "what it should not show").optional(),
                In::new(
                    "latent",
                    T::Latent,
                    "the start: an empty latent, an encoded image, or the noisy latent of an earlier stage (then add_noise off)",
                ),
                In::new("seed", T::Seed, "noise seed (same meaning as ComfyUI's noise_seed); also seeds the step noise of ancestral and SDE samplers").default(0),
                In::new(
                    "noise",
                    T::Latent,
                    "initial noise from a RandomNoise node instead of the seed's",
                )
                .optional(),
                In::new("add_noise", T::Bool, "add the initial noise at the first step run; off when the latent already holds it (a second stage)").default(true),
                In::new("steps", T::Int, "steps of the whole schedule")
                    .default(20)
                    .range(1.0, 10000.0),
                In::new("cfg", T::Float, "guidance scale")
                    .default(8.0)
                    .range(0.0, 100.0),
                In::new("sampler", T::Enum, "sampling method")
                    .choices(&SamplerKind::NAMES)
                    .default("euler"),
                In::new("schedule", T::Enum, "sigma schedule")
                    .choices(&ScheduleKind::NAMES)
                    .default("normal"),
                In::new("start_at_step", T::Int, "the first step to run")
                    .default(0)
                    .range(0.0, 10000.0),
                In::new("end_at_step", T::Int, "the step to stop at (at or past `steps`: the end)")
                    .default(10000)
                    .range(0.0, 10000.0),
                In::new("leftover_noise", T::Bool, "stopping before the end, return the latent with its noise (for a next stage); off: the last step denoises fully (ComfyUI's return_with_leftover_noise)").default(false),
            ],
            outputs: vec![Out::new("latent", T::Latent, "the latent after the last step run")],
            output_node: false,
        }
    }

    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let step = |name: &str| -> NodeResult<usize> {
            let v = inputs.int(name)?;
            usize::try_from(v)
                .map_err(|_| NodeError::msg(format!("input '{name}': {v} is below 0")))
        };
        let window = StepWindow {
            start: step("start_at_step")?,
            end: Some(step("end_at_step")?),
            add_noise: inputs.bool("add_noise")?,
            leftover_noise: inputs.bool("leftover_noise")?,
        };
        sample_latent(inputs, ctx, 1.0, window)
    }
}
