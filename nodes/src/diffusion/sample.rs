//! The `Sampler` node: guided sampling of a latent (txt2img or img2img).

use tch::{Kind, Tensor};
use weft_engine::{
    InputSpec as In, Inputs, Node, NodeContext, NodeError, NodeResult, NodeSpec, OutputSpec as Out,
    Value, ValueType as T,
};

use crate::error::Result;
use crate::inpaint::InpaintLatent;
use crate::models::attention::KeyValueMemo;
use crate::models::unet_2d_condition::{PredictionType, UNet2DConditionModel};
use crate::samplers::{
    self, inpaint, Guidance, GuidedDenoiser, Hooks, NoisePredictor, Prediction, SampleSettings,
    SamplerKind, ScheduleKind, StepWindow,
};

use super::conditioning::{Conditioning, PromptSide};
use super::handles::DiffusionModel;
use crate::weights::family::{ModelFamily, SizeIds};

/// The loaded UNet as the sampler's model. On CUDA a call without added conditioning is
/// replayed from a graph kept with the model (captured at the first step of the first run of
/// this shape); elsewhere, or if that fails, it runs eagerly. The conditioning's
/// cross-attention keys and values are computed at the first step and reused by the others.
struct UNetPredictor<'a> {
    model: &'a DiffusionModel,
    unet: &'a UNet2DConditionModel,
    memo: KeyValueMemo,
}

impl NoisePredictor for UNetPredictor<'_> {
    fn predict(&self, sample: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<Tensor> {
        let unet = self.unet;
        match self.model.graphs.forward(unet, sample, timesteps, context) {
            Some(replayed) => replayed,
            None => unet.forward_with_memo(sample, timesteps, context, Some(&self.memo)),
        }
    }

    fn predict_added(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        added: Option<&Tensor>,
    ) -> Result<Tensor> {
        match added {
            None => self.predict(sample, timesteps, context),
            Some(added) => self.unet.forward_with_added(
                sample,
                timesteps,
                context,
                Some(added),
                Some(&self.memo),
            ),
        }
    }
}

/// Checks that the conditionings fit the model and each other, and makes SDXL's added
/// conditioning for each (`None` for SD 1.x/2.x), as the sampler nodes give it to the UNet.
/// `image_size`: the sampled image's height and width in pixels, SDXL's size ids when a
/// conditioning carries none (as ComfyUI does); the refiner's score defaults per side.
pub fn added_conditioning(
    unet: &UNet2DConditionModel,
    positive: &Conditioning,
    negative: Option<&Conditioning>,
    image_size: (f64, f64),
) -> NodeResult<Option<(Tensor, Option<Tensor>)>> {
    if let Some(negative) = negative {
        if negative.pooled.is_some() != positive.pooled.is_some() {
            return Err(NodeError::msg(format!(
                "inputs 'positive' and 'negative' come from different model families: {} and {}; \
                 encode both with the same checkpoint's text encoder",
                positive.family_name(),
                negative.family_name()
            )));
        }
    }
    let width = unet.config().cross_attention_dim;
    for (what, cond) in [("positive", Some(positive)), ("negative", negative)] {
        let Some(cond) = cond else { continue };
        let found = cond.context.size();
        if found.last() != Some(&width) {
            return Err(NodeError::msg(format!(
                "input '{what}': token states {found:?} do not fit this model, which takes \
                 {width}-wide ones; encode the prompt with this checkpoint's text encoder ({})",
                cond.family_name()
            )));
        }
    }
    let needs_added = unet.config().addition_embed.is_some();
    match (needs_added, positive.pooled.is_some()) {
        (false, false) => return Ok(None),
        (false, true) => {
            return Err(NodeError::msg(
                "input 'positive': an SDXL conditioning (with pooled text) given to an SD 1.x/2.x \
                 model; encode the prompt with this checkpoint's text encoder",
            ))
        }
        (true, false) => {
            return Err(NodeError::msg(
                "input 'positive': this SDXL model needs the pooled text embedding too; encode \
                 the prompt with this checkpoint's text encoder (PromptEncode or PromptEncodeSdxl)",
            ))
        }
        (true, true) => {}
    }
    // SDXL base takes size, crop and target ids; the refiner size, crop and aesthetic score.
    let size_ids = ModelFamily::of_unet_config(unet.config())
        .size_ids()
        .unwrap_or(SizeIds::SizeCropTarget);
    let added = |cond: &Conditioning, side: PromptSide| -> NodeResult<Tensor> {
        let ids: Vec<f32> = cond
            .size_ids(size_ids, image_size, side)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let ids = Tensor::from_slice(&ids)
            .view([1, size_ids.count()])
            .f_to_device(cond.context.device())?;
        let pooled = cond.pooled.as_ref().expect("checked above");
        Ok(unet.added_conditioning(pooled, &ids)?)
    };
    Ok(Some((
        added(positive, PromptSide::Positive)?,
        negative
            .map(|n| added(n, PromptSide::Negative))
            .transpose()?,
    )))
}

/// For a 9-channel inpainting UNet (in_channels = out_channels + 5), the mask and masked-image
/// latent it takes beside the noisy latent, from what `input` carries (ComfyUI: the concat
/// mask, else the noise mask; the concat latent, else the latent itself); `None` for others.
fn inpainting_concat(
    unet: &UNet2DConditionModel,
    input: &InpaintLatent,
    latent: &Tensor,
) -> NodeResult<Option<Tensor>> {
    let config = unet.config();
    if config.in_channels == config.out_channels {
        return Ok(None);
    }
    if config.in_channels != config.out_channels + 5 {
        return Err(NodeError::msg(format!(
            "input 'model': a UNet taking {} channels and predicting {} is neither a plain nor \
             an inpainting (latent + mask + masked-image latent) model",
            config.in_channels, config.out_channels
        )));
    }
    let mask = input.concat_mask.as_ref().or(input.noise_mask.as_ref());
    let masked = input.concat_latent.as_ref().or(Some(&input.samples));
    Ok(Some(inpaint::inpaint_concat(latent, mask, masked)?))
}

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
                .range(0.0, 1.0)
                .slider(),
            ],
            outputs: vec![Out::new("latent", T::Latent, "the denoised latent")],
            output_node: false,
        }
    }
    fn run(&self, inputs: &Inputs, ctx: &mut NodeContext) -> NodeResult<Vec<Value>> {
        let denoise = inputs.float("denoise")?;
        sample_latent(inputs, ctx, denoise, StepWindow::FULL)
    }

    /// A sweep over seeds, cfg or prompts samples its cells as one batch: each cell's
    /// initial and step noise is what its seed draws alone, its guidance its own cfg, its
    /// conditioning its own prompts (stacked when their token counts are equal), so every
    /// cell's image is its own run's up to the batched model call's arithmetic.
    fn per_image_inputs(&self) -> &'static [&'static str] {
        &["seed", "cfg", "positive", "negative"]
    }

    fn run_batch(&self, variants: &[Inputs], ctx: &mut NodeContext) -> NodeResult<Vec<Vec<Value>>> {
        let Some(first) = variants.first() else {
            return Ok(Vec::new());
        };
        // A masked or inpainting-model latent carries per-batch tensors the repeated batch
        // would not fit, and prompts of different token counts do not stack: those cells are
        // sampled one after another (same images, no saving).
        let input = InpaintLatent::input(first, "latent")?;
        let model = first.object::<DiffusionModel>("model")?;
        let config = model.config();
        let plain = input.noise_mask.is_none()
            && input.concat_mask.is_none()
            && input.concat_latent.is_none()
            && config.in_channels == config.out_channels;
        let per_cell = PerCell::of(variants, ctx.device)?;
        let Some(per_cell) = per_cell.filter(|_| plain) else {
            return variants
                .iter()
                .map(|inputs| self.run(inputs, ctx))
                .collect();
        };
        let denoise = first.float("denoise")?;
        let (input, latent) =
            sample_tensor(first, Some(&per_cell), ctx, denoise, StepWindow::FULL)?;
        let parts = latent
            .f_chunk(variants.len() as i64, 0)
            .map_err(|e| NodeError::msg(format!("splitting the batch per cell: {e}")))?;
        Ok(parts
            .into_iter()
            .map(|part| vec![input.with_samples(part.contiguous()).into_value()])
            .collect())
    }
}

/// What differs between the cells of a batch: each cell's seed, cfg and conditionings.
struct PerCell {
    seeds: Vec<u64>,
    cfgs: Vec<f64>,
    /// Each cell's positive and negative conditioning, when they are not all the first
    /// cell's (then their token counts are equal, so they stack).
    prompts: Option<Vec<(Conditioning, Option<Conditioning>)>>,
}

impl PerCell {
    /// `None` when the cells' prompts cannot be stacked (token counts or batch sizes differ,
    /// a negative given to some cells only).
    fn of(variants: &[Inputs], device: tch::Device) -> NodeResult<Option<Self>> {
        let mut seeds = Vec::with_capacity(variants.len());
        let mut cfgs = Vec::with_capacity(variants.len());
        let mut prompts = Vec::with_capacity(variants.len());
        for inputs in variants {
            seeds.push(inputs.int("seed")? as u64);
            cfgs.push(inputs.float("cfg")?);
            let positive = Conditioning::input(inputs, "positive", device)?
                .ok_or_else(|| NodeError::msg("input 'positive' has no value"))?;
            let negative = Conditioning::input(inputs, "negative", device)?;
            prompts.push((positive, negative));
        }
        let (first_positive, first_negative) = &prompts[0];
        let same_as_first = |(positive, negative): &(Conditioning, Option<Conditioning>)| {
            same_conditioning(positive, first_positive)
                && match (negative, first_negative) {
                    (Some(a), Some(b)) => same_conditioning(a, b),
                    (None, None) => true,
                    _ => false,
                }
        };
        if prompts.iter().all(same_as_first) {
            return Ok(Some(Self {
                seeds,
                cfgs,
                prompts: None,
            }));
        }
        let stackable = |a: &Conditioning, b: &Conditioning| {
            a.context.size() == b.context.size()
                && a.context.size().first() == Some(&1)
                && a.pooled.is_some() == b.pooled.is_some()
        };
        let stack = prompts.iter().all(|(positive, negative)| {
            stackable(positive, first_positive)
                && match (negative, first_negative) {
                    (Some(a), Some(b)) => stackable(a, b),
                    (None, None) => true,
                    _ => false,
                }
        });
        Ok(stack.then_some(Self {
            seeds,
            cfgs,
            prompts: Some(prompts),
        }))
    }
}

/// Whether two conditionings hold the same values (the same prompt's encode, often the same
/// tensor): then a batch guides with it once instead of a stack of copies.
fn same_conditioning(a: &Conditioning, b: &Conditioning) -> bool {
    let same = |x: &Tensor, y: &Tensor| x.size() == y.size() && x.equal(y);
    same(&a.context, &b.context)
        && match (&a.pooled, &b.pooled) {
            (Some(x), Some(y)) => same(x, y),
            (None, None) => true,
            _ => false,
        }
        && a.size == b.size
        && a.aesthetic_score == b.aesthetic_score
}

/// Each cell's tensor `[1 or b, ...]` repeated to the `per_cell` images of its part of the
/// batch, the cells' parts stacked in order.
fn stacked(parts: &[&Tensor], per_cell: i64) -> NodeResult<Tensor> {
    let expanded: Vec<Tensor> = parts
        .iter()
        .map(|t| {
            let mut shape = t.size();
            shape[0] = per_cell;
            t.f_expand(shape.as_slice(), false)
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok(Tensor::f_cat(&expanded, 0)?)
}

/// The sampling both sampler nodes do: `window` of a schedule sized by `denoise`, from the
/// inputs model, positive, negative, latent, seed, noise, steps, cfg, sampler and schedule.
pub(super) fn sample_latent(
    inputs: &Inputs,
    ctx: &mut NodeContext,
    denoise: f64,
    window: StepWindow,
) -> NodeResult<Vec<Value>> {
    let (input, latent) = sample_tensor(inputs, None, ctx, denoise, window)?;
    // The mask stays with the latent, as ComfyUI's KSampler copies the LATENT's keys.
    Ok(vec![input.with_samples(latent).into_value()])
}

/// Why [`sample_tensor`] refuses seeds for a masked latent or a step window (`run_batch` does
/// not ask it to).
const BATCH_NEEDS_A_PLAIN_LATENT: &str = "sampling cells as one batch needs a latent without a \
     noise mask and the whole schedule; sample these cells one at a time";

/// [`sample_latent`]'s work, giving the latent input and the sampled tensor; with `per_cell`,
/// one batch of the latent repeated once per cell, each part with its cell's initial and step
/// noise, cfg and prompts (the `seed`, `cfg`, `positive` and `negative` inputs are then not
/// used; only for a plain latent and the full schedule).
fn sample_tensor(
    inputs: &Inputs,
    per_cell: Option<&PerCell>,
    ctx: &mut NodeContext,
    denoise: f64,
    window: StepWindow,
) -> NodeResult<(InpaintLatent, Tensor)> {
    let model = inputs.object::<DiffusionModel>("model")?;
    let unet = model.unet()?;
    let input = InpaintLatent::input(inputs, "latent")?;
    let latent = input
        .samples
        .f_to_device(ctx.device)?
        .f_to_kind(Kind::Float)?;
    // An inpainting UNet takes more channels than it predicts: the mask and the masked
    // image's latent ride along (see `samplers::inpaint`).
    let expected_channels = unet.config().out_channels;
    if latent.dim() != 4 || latent.size()[1] != expected_channels {
        return Err(NodeError::msg(format!(
            "input 'latent': the model takes [batch, {expected_channels}, h, w], got {:?}",
            latent.size()
        )));
    }
    let positive = Conditioning::input(inputs, "positive", ctx.device)?
        .ok_or_else(|| NodeError::msg("input 'positive' has no value"))?;
    let negative = Conditioning::input(inputs, "negative", ctx.device)?;
    // SDXL's default size ids are the image's pixels (ComfyUI: latent sides x 8).
    let latent_size = latent.size();
    let image_size = ((latent_size[2] * 8) as f64, (latent_size[3] * 8) as f64);
    let added = added_conditioning(unet, &positive, negative.as_ref(), image_size)?;
    // A batch of cells with their own prompts: each cell's conditioning (and SDXL's added
    // conditioning) repeated to its part of the batch, the parts stacked.
    let images_per_cell = latent_size[0];
    let (positive, negative, added) = match per_cell.and_then(|p| p.prompts.as_ref()) {
        None => (positive, negative, added),
        Some(prompts) => {
            let mut added_parts = Vec::with_capacity(prompts.len());
            for (positive, negative) in prompts {
                added_parts.push(added_conditioning(
                    unet,
                    positive,
                    negative.as_ref(),
                    image_size,
                )?);
            }
            let contexts: Vec<&Tensor> = prompts.iter().map(|(p, _)| &p.context).collect();
            let positive = Conditioning::tokens(stacked(&contexts, images_per_cell)?);
            let negative = match prompts
                .iter()
                .map(|(_, n)| n.as_ref())
                .collect::<Option<Vec<_>>>()
            {
                Some(negatives) => {
                    let contexts: Vec<&Tensor> = negatives.iter().map(|n| &n.context).collect();
                    Some(Conditioning::tokens(stacked(&contexts, images_per_cell)?))
                }
                None => None,
            };
            let added = match added_parts
                .iter()
                .map(Option::as_ref)
                .collect::<Option<Vec<_>>>()
            {
                Some(parts) => {
                    let positives: Vec<&Tensor> = parts.iter().map(|(p, _)| p).collect();
                    let negatives = parts
                        .iter()
                        .map(|(_, n)| n.as_ref())
                        .collect::<Option<Vec<_>>>();
                    Some((
                        stacked(&positives, images_per_cell)?,
                        negatives
                            .map(|n| stacked(&n, images_per_cell))
                            .transpose()?,
                    ))
                }
                None => None,
            };
            (positive, negative, added)
        }
    };
    let prediction = match unet.config().prediction_type {
        PredictionType::Epsilon => Prediction::Epsilon,
        PredictionType::VPrediction => Prediction::V,
    };
    let schedule = model.family().noise_schedule();
    // Lives as long as this sampling.
    let predictor = UNetPredictor {
        model: &model,
        unet,
        memo: KeyValueMemo::default(),
    };
    let inpainting_model =
        inpainting_concat(unet, &input, &latent)?.map(|concat| inpaint::ConcatPredictor {
            inner: &predictor,
            concat,
        });
    let predictor: &dyn NoisePredictor = match &inpainting_model {
        Some(with_concat) => with_concat,
        None => &predictor,
    };
    let mut denoiser = GuidedDenoiser::new(
        predictor,
        &schedule,
        prediction,
        Guidance {
            positive: positive.context,
            negative: negative.map(|n| n.context),
            cfg: inputs.float("cfg")?,
        },
    )?;
    if let Some((positive, negative)) = added {
        denoiser = denoiser.with_added_conditioning(positive, negative)?;
    }
    if let Some(per_cell) = per_cell {
        // Only when the cells' scales differ, so a batch over seeds guides as before.
        if per_cell.cfgs.iter().any(|&c| c != per_cell.cfgs[0]) {
            let scales: Vec<f64> = per_cell
                .cfgs
                .iter()
                .flat_map(|&c| std::iter::repeat_n(c, images_per_cell as usize))
                .collect();
            denoiser = denoiser.with_cfg_per_image(&scales)?;
        }
    }
    let settings = SampleSettings {
        seed: inputs.int("seed")? as u64,
        steps: inputs.int("steps")? as usize,
        sampler: SamplerKind::from_name(inputs.string("sampler")?)?,
        schedule: ScheduleKind::from_name(inputs.string("schedule")?)?,
        denoise,
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
    let noise = inputs.optional_tensor("noise")?;
    let full = window == StepWindow::FULL;
    let seeds = per_cell.map(|p| p.seeds.as_slice());
    let latent = match (seeds, &input.noise_mask, noise) {
        (Some(seeds), None, noise) if full => {
            let repeats: Vec<i64> = std::iter::once(seeds.len() as i64)
                .chain(std::iter::repeat_n(1, latent.dim() - 1))
                .collect();
            let batch = latent.f_repeat(repeats.as_slice())?;
            samplers::sample_per_seed(
                &denoiser, &schedule, &batch, noise, seeds, &settings, &mut hooks,
            )?
        }
        (Some(_), _, _) => return Err(NodeError::msg(BATCH_NEEDS_A_PLAIN_LATENT)),
        (None, Some(mask), noise) => inpaint::sample_masked(
            &denoiser, &schedule, &latent, noise, mask, &settings, window, &mut hooks,
        )?,
        (None, None, Some(noise)) => samplers::sample_window(
            &denoiser, &schedule, &latent, noise, &settings, window, &mut hooks,
        )?,
        (None, None, None) if full => {
            samplers::sample(&denoiser, &schedule, &latent, &settings, &mut hooks)?
        }
        (None, None, None) => {
            let noise = crate::noise::initial_noise(
                settings.seed,
                &latent.size(),
                latent.device(),
                latent.kind(),
            )?;
            samplers::sample_window(
                &denoiser, &schedule, &latent, &noise, &settings, window, &mut hooks,
            )?
        }
    };
    Ok((input, latent))
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;
    use crate::weights::checkpoint::{load_diffusers_folder, LoadOptions};

    /// The tiny SDXL UNet of the parity fixtures (scripts/parity/sdxl.py).
    fn sdxl_unet() -> UNet2DConditionModel {
        let dir = weft_test_support::fixtures("sdxl").join("diffusers");
        load_diffusers_folder(&dir, &LoadOptions::default())
            .unwrap()
            .unet
    }

    #[test]
    fn conditionings_that_do_not_fit_the_model_or_each_other_are_named() {
        let unet = sdxl_unet();
        let opts = (Kind::Float, Device::Cpu);
        let width = unet.config().cross_attention_dim;
        let sdxl = |fill: f64| Conditioning {
            context: Tensor::full([1, 7, width], fill, opts),
            pooled: Some(Tensor::full([1, 16], fill, opts)),
            size: None,
            aesthetic_score: None,
        };
        let tokens_only = Conditioning::tokens(Tensor::zeros([1, 7, width], opts));
        let error = |positive: &Conditioning, negative: Option<&Conditioning>| {
            added_conditioning(&unet, positive, negative, (64.0, 64.0))
                .unwrap_err()
                .to_string()
        };
        let e = error(&sdxl(0.0), Some(&tokens_only));
        assert!(e.contains("different model families"), "{e}");
        let e = error(&tokens_only, None);
        assert!(e.contains("needs the pooled text"), "{e}");
        let e = error(
            &Conditioning::tokens(Tensor::zeros([1, 7, 768], opts)),
            None,
        );
        assert!(e.contains("768") && e.contains(&width.to_string()), "{e}");

        // No sizes given: the image's (height 64, width 48), no crop, the same target.
        let (positive, negative) =
            added_conditioning(&unet, &sdxl(1.0), Some(&sdxl(0.5)), (64.0, 48.0))
                .unwrap()
                .unwrap();
        let ids = Tensor::from_slice(&[64.0f32, 48.0, 0.0, 0.0, 64.0, 48.0]).view([1, 6]);
        let expected = unet
            .added_conditioning(&Tensor::full([1, 16], 1.0, opts), &ids)
            .unwrap();
        assert!(positive.equal(&expected));
        assert_eq!(negative.unwrap().size(), [1, 64]);
    }
}
