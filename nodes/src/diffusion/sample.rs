//! The `Sampler` node: guided sampling of a latent (txt2img or img2img).

use tch::{Kind, Tensor};
use weft_engine::{
    InputSpec as In, Inputs, Node, NodeContext, NodeError, NodeResult, NodeSpec, OutputSpec as Out,
    Value, ValueType as T,
};

use crate::models::attention::KeyValueMemo;
use crate::models::unet_2d_condition::PredictionType;
use crate::samplers::{
    self, DiscreteSchedule, Guidance, GuidedDenoiser, Hooks, Prediction, SampleSettings,
    SamplerKind, ScheduleKind,
};

use super::handles::DiffusionModel;

/// The sampler: txt2img from an empty latent, img2img from an encoded image with denoise < 1.
pub struct Sampler;
impl Node for Sampler {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_name: "Sampler",
            category: "sampling",
            doc:
                "denoises a latent with the UNet, guided by the prompts (classifier-free guidance)",
            version: 1,
            inputs: vec![
                In::new("model", T::Model, "the UNet"),
                In::new("positive", T::Conditioning, "what the image should show"),
                In::new("negative", T::Conditioning, "what it should not show").optional(),
                In::new(
                    "latent",
                    T::Latent,
                    "the start: an empty latent (txt2img) or an encoded image (img2img)",
                ),
                In::new("seed", T::Seed, "noise seed (same meaning as ComfyUI's); with a noise input, it seeds only the step noise of ancestral and SDE samplers").default(0),
                In::new(
                    "noise",
                    T::Latent,
                    "initial noise from a RandomNoise node (its seed gives the same noise as this node's seed would); shared noise makes samplers comparable",
                )
                .optional(),
                In::new("steps", T::Int, "sampling steps")
                    .default(20)
                    .range(1.0, 10000.0),
                In::new("cfg", T::Float, "guidance scale")
                    .default(7.0)
                    .range(0.0, 100.0),
                In::new("sampler", T::Enum, "sampling method")
                    .choices(&SamplerKind::NAMES)
                    .default("euler"),
                In::new("schedule", T::Enum, "sigma schedule")
                    .choices(&ScheduleKind::NAMES)
                    .default("normal"),
                In::new(
                    "denoise",
                    T::Float,
                    "how much to change the latent (1 = from pure noise)",
                )
                .default(1.0)
                .range(0.0, 1.0),
            ],
            outputs: vec![Out::new("latent", T::Latent, "the denoised latent")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let model = inputs.object::<DiffusionModel>("model")?;
        let unet = &model.unet;
        let latent = inputs
            .tensor("latent")?
            .f_to_device(ctx.device)?
            .f_to_kind(Kind::Float)?;
        let expected_channels = unet.config().in_channels;
        if latent.dim() != 4 || latent.size()[1] != expected_channels {
            return Err(NodeError::msg(format!(
                "input 'latent': the model takes [batch, {expected_channels}, h, w], got {:?}",
                latent.size()
            )));
        }
        let positive = inputs.tensor("positive")?.f_to_device(ctx.device)?;
        let negative = inputs
            .optional_tensor("negative")?
            .map(|t| t.to_device(ctx.device));
        let prediction = match unet.config().prediction_type {
            PredictionType::Epsilon => Prediction::Epsilon,
            PredictionType::VPrediction => Prediction::V,
        };
        let schedule = DiscreteSchedule::stable_diffusion();
        // Lives as long as this sampling: the conditioning's cross-attention keys and values are
        // computed at the first step and reused by the others.
        let memo = KeyValueMemo::default();
        // On CUDA the call is replayed from a graph kept with the model (captured at the first
        // step of the first run of this shape); elsewhere, or if that fails, it runs eagerly.
        let predictor = |sample: &Tensor, timesteps: &Tensor, context: &Tensor| match model
            .graphs
            .forward(unet, sample, timesteps, context)
        {
            Some(replayed) => replayed,
            None => unet.forward_with_memo(sample, timesteps, context, Some(&memo)),
        };
        let denoiser = GuidedDenoiser::new(
            &predictor,
            &schedule,
            prediction,
            Guidance {
                positive,
                negative,
                cfg: inputs.float("cfg")?,
            },
        )?;
        let settings = SampleSettings {
            seed: inputs.int("seed")? as u64,
            steps: inputs.int("steps")? as usize,
            sampler: SamplerKind::from_name(inputs.string("sampler")?)?,
            schedule: ScheduleKind::from_name(inputs.string("schedule")?)?,
            denoise: inputs.float("denoise")?,
        };
        let cancel = ctx.cancel_token().clone();
        let cancelled = move || cancel.is_cancelled();
        // Progress goes out as each step ends, so a UI can show it live.
        // Every few steps (when asked) a preview of the denoised prediction rides along.
        let mut on_step = |e: &samplers::StepEvent<'_>| {
            let step = e.step as u32;
            let preview = ctx
                .wants_preview(step)
                .then(|| crate::latent::latent_preview_png(e.denoised).ok())
                .flatten();
            ctx.progress_with_preview(step, e.total as u32, preview)
        };
        let mut hooks = Hooks {
            on_step: Some(&mut on_step),
            cancelled: Some(&cancelled),
        };
        // A cancelled run comes back as ModelError::Cancelled, which `?` turns into
        // NodeError::Cancelled (found in the error's chain), not a failure.
        let latent = match inputs.optional_tensor("noise")? {
            Some(noise) => samplers::sample_from_noise(
                &denoiser, &schedule, &latent, noise, &settings, &mut hooks,
            )?,
            None => samplers::sample(&denoiser, &schedule, &latent, &settings, &mut hooks)?,
        };
        Ok(vec![Value::Tensor(T::Latent, latent)])
    }
}
