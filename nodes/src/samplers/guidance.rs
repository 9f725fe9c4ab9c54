//! A noise-prediction model (epsilon or v, SD 1.x/2.x/SDXL) as a k-diffusion denoiser with
//! classifier-free guidance (Ho & Salimans 2022): `uncond + cfg * (cond - uncond)`, both halves
//! in one batched model call. Scalings follow k-diffusion's `DiscreteEpsDDPMDenoiser` /
//! `DiscreteVDDPMDenoiser` and ComfyUI's `model_sampling.EPS` / `V_PREDICTION`.
use std::cell::RefCell;

use tch::{Kind, Tensor};

use super::{Denoiser, DiscreteSchedule};
use crate::error::{ModelError, Result, TchContext};

/// What the model predicts (diffusers' `prediction_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// The noise (SD 1.x, SD 2.x base).
    Epsilon,
    /// v = alpha * eps - sigma_vp * x0 (SD 2.x 768-v; Salimans & Ho 2022).
    V,
}

impl Prediction {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "epsilon" | "eps" => Ok(Self::Epsilon),
            "v_prediction" | "v" => Ok(Self::V),
            other => Err(ModelError::Other(format!(
                "unknown prediction type {other:?} (expected \"epsilon\" or \"v_prediction\")"
            ))),
        }
    }
}

/// A diffusion model called the diffusers way: `model(sample, timesteps, encoder_hidden_states)`
/// with `sample` [B, C, H, W] already scaled by c_in, `timesteps` [B] (float) and context
/// [B, L, D]; returns the prediction of `sample`'s shape.
pub trait NoisePredictor {
    fn predict(&self, sample: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<Tensor>;

    /// [`Self::predict`] with SDXL's added conditioning `added` `[B, D]` (pooled text and
    /// size-id sinusoids, ComfyUI's `y`). A model without one refuses it.
    fn predict_added(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        added: Option<&Tensor>,
    ) -> Result<Tensor> {
        match added {
            None => self.predict(sample, timesteps, context),
            Some(_) => Err(ModelError::Other(
                "this model takes no added (pooled text / size) conditioning".into(),
            )),
        }
    }
}

impl<F> NoisePredictor for F
where
    F: Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
{
    fn predict(&self, sample: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<Tensor> {
        self(sample, timesteps, context)
    }
}

/// What classifier-free guidance mixes: `positive`/`negative` are [1 or B, L, D]; without
/// `negative`, or with `cfg` == 1, the model runs once on `positive` only.
pub struct Guidance {
    pub positive: Tensor,
    pub negative: Option<Tensor>,
    pub cfg: f64,
}

/// A [`NoisePredictor`] with its noise schedule, prediction type and guidance.
pub struct GuidedDenoiser<'a> {
    model: &'a dyn NoisePredictor,
    schedule: &'a DiscreteSchedule,
    prediction: Prediction,
    guidance: Guidance,
    /// SDXL's added conditioning for the positive and negative sides, `[1 or B, D]`.
    added: Option<(Tensor, Option<Tensor>)>,
    quantize_timesteps: bool,
    /// Negative and positive conditioning concatenated for a latent batch, made once: the model
    /// then sees the same context tensor at every step (and can reuse its projections).
    both_conditionings: RefCell<Option<(i64, Tensor)>>,
    /// One guidance scale per image of the batch, `[B, 1, 1, 1]` (a sweep's cells over cfg
    /// sampled together); `None`: `guidance.cfg` for every image.
    cfg_per_image: Option<PerImageCfg>,
}

/// [`GuidedDenoiser::with_cfg_per_image`]'s scales as a tensor, and whether all are 1 (then
/// the negative side is skipped, as for a single cfg of 1).
struct PerImageCfg {
    scales: Tensor,
    count: i64,
    all_one: bool,
}

impl<'a> GuidedDenoiser<'a> {
    /// Checks the guidance's shapes and scale. Timesteps are quantized to training steps
    /// (ComfyUI).
    pub fn new(
        model: &'a dyn NoisePredictor,
        schedule: &'a DiscreteSchedule,
        prediction: Prediction,
        guidance: Guidance,
    ) -> Result<Self> {
        let Guidance {
            positive,
            negative,
            cfg,
        } = &guidance;
        if !cfg.is_finite() {
            return Err(ModelError::Other(format!("cfg must be finite, got {cfg}")));
        }
        for (what, cond) in [
            ("positive", Some(positive)),
            ("negative", negative.as_ref()),
        ] {
            if let Some(cond) = cond {
                if cond.dim() != 3 {
                    return Err(ModelError::Shape {
                        context: format!("{what} conditioning"),
                        message: format!("expected [batch, tokens, dim], got {:?}", cond.size()),
                    });
                }
            }
        }
        Ok(Self {
            model,
            schedule,
            prediction,
            guidance,
            added: None,
            quantize_timesteps: true,
            both_conditionings: RefCell::new(None),
            cfg_per_image: None,
        })
    }

    /// Guides image i of the latent batch with `scales[i]` instead of the guidance's one cfg:
    /// each image is what it would be sampled alone at its cfg (up to the batched model call's
    /// arithmetic).
    pub fn with_cfg_per_image(mut self, scales: &[f64]) -> Result<Self> {
        if let Some(bad) = scales.iter().find(|s| !s.is_finite()) {
            return Err(ModelError::Other(format!("cfg must be finite, got {bad}")));
        }
        let count = scales.len() as i64;
        let values: Vec<f32> = scales.iter().map(|&s| s as f32).collect();
        self.cfg_per_image = Some(PerImageCfg {
            scales: Tensor::from_slice(&values).view([count, 1, 1, 1]),
            count,
            all_one: scales.iter().all(|&s| s == 1.0),
        });
        Ok(self)
    }

    /// `uncond + scale * (cond - uncond)` with the one cfg or each image's.
    fn guide(&self, uncond: &Tensor, cond: &Tensor) -> Result<Tensor> {
        match &self.cfg_per_image {
            None => Ok(uncond + (cond - uncond) * self.guidance.cfg),
            Some(per_image) if per_image.count == uncond.size()[0] => {
                let scales = per_image
                    .scales
                    .to_device(uncond.device())
                    .to_kind(uncond.kind());
                Ok(uncond + (cond - uncond) * scales)
            }
            Some(per_image) => Err(ModelError::Shape {
                context: "per-image cfg".into(),
                message: format!(
                    "{} scales for a latent batch of {}",
                    per_image.count,
                    uncond.size()[0]
                ),
            }),
        }
    }

    /// Whether the model sees the nearest training step (true, ComfyUI) or the fractional
    /// timestep of each sigma (false, k-diffusion's default and diffusers' Euler/Heun).
    pub fn with_quantized_timesteps(mut self, quantize: bool) -> Self {
        self.quantize_timesteps = quantize;
        self
    }

    /// Gives the model SDXL's added conditioning `[1 or B, D]` with each side's context
    /// (`negative` is needed when the guidance has a negative conditioning).
    pub fn with_added_conditioning(
        mut self,
        positive: Tensor,
        negative: Option<Tensor>,
    ) -> Result<Self> {
        for (what, added) in [
            ("positive", Some(&positive)),
            ("negative", negative.as_ref()),
        ] {
            if let Some(added) = added {
                if added.dim() != 2 {
                    return Err(ModelError::Shape {
                        context: format!("{what} added conditioning"),
                        message: format!("expected [batch, dim], got {:?}", added.size()),
                    });
                }
            }
        }
        if self.guidance.negative.is_some() && negative.is_none() {
            return Err(ModelError::Other(
                "the negative conditioning has no added (pooled text / size) conditioning".into(),
            ));
        }
        self.added = Some((positive, negative));
        Ok(self)
    }

    fn timestep(&self, sigma: f64) -> f64 {
        if self.quantize_timesteps {
            self.schedule.sigma_to_timestep_quantized(sigma)
        } else {
            self.schedule.sigma_to_timestep(sigma)
        }
    }

    /// The conditioning repeated to the latent batch.
    fn batched(cond: &Tensor, like: &Tensor, what: &str) -> Result<Tensor> {
        let batch = like.size()[0];
        let cond = cond.to_device(like.device());
        let mut shape = vec![-1; cond.dim()];
        if let Some(first) = shape.first_mut() {
            *first = batch;
        }
        match cond.size()[0] {
            b if b == batch => Ok(cond),
            1 => Ok(cond.expand(shape.as_slice(), false)),
            b => Err(ModelError::Shape {
                context: format!("{what} conditioning"),
                message: format!("batch {b} does not fit a latent batch of {batch}"),
            }),
        }
    }

    fn call_model(
        &self,
        sample: &Tensor,
        timestep: f64,
        context: &Tensor,
        added: Option<&Tensor>,
    ) -> Result<Tensor> {
        let batch = sample.size()[0];
        let timesteps = Tensor::full([batch], timestep, (Kind::Float, sample.device()));
        let out = match added {
            None => self.model.predict(sample, &timesteps, context)?,
            Some(added) => self
                .model
                .predict_added(sample, &timesteps, context, Some(added))?,
        };
        if out.size() != sample.size() {
            return Err(ModelError::Shape {
                context: "model prediction".into(),
                message: format!(
                    "shape {:?} for a sample of shape {:?}",
                    out.size(),
                    sample.size()
                ),
            });
        }
        Ok(out.to_kind(sample.kind()))
    }

    /// The guided model output (eps or v) for `x` at `sigma`, and with `want_uncond` the
    /// unconditional output too (computed even at cfg 1, as ComfyUI's CFG++ samplers ask).
    fn guided_output(
        &self,
        x: &Tensor,
        sigma: f64,
        want_uncond: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let size = x.size();
        if size.len() != 4 {
            return Err(ModelError::Shape {
                context: "latent".into(),
                message: format!("expected [batch, channels, height, width], got {size:?}"),
            });
        }
        let sample = x * (1.0 / (sigma * sigma + 1.0).sqrt());
        let t = self.timestep(sigma);
        let Guidance {
            positive,
            negative,
            cfg,
        } = &self.guidance;
        let positive = Self::batched(positive, x, "positive")?;
        let (added_positive, added_negative) = match &self.added {
            Some((p, n)) => (
                Some(Self::batched(p, x, "positive added")?),
                n.as_ref()
                    .map(|n| Self::batched(n, x, "negative added"))
                    .transpose()?,
            ),
            None => (None, None),
        };
        let guided_at_all = match &self.cfg_per_image {
            Some(per_image) => !per_image.all_one,
            None => *cfg != 1.0,
        };
        let negative = match negative {
            Some(negative) if guided_at_all || want_uncond => {
                Self::batched(negative, x, "negative")?
            }
            _ => {
                return Ok((
                    self.call_model(&sample, t, &positive, added_positive.as_ref())?,
                    None,
                ))
            }
        };
        if negative.size()[1..] == positive.size()[1..] {
            let batch = size[0];
            let mut memo = self.both_conditionings.borrow_mut();
            let both = match &*memo {
                Some((b, both)) if *b == batch => both.shallow_clone(),
                _ => {
                    let both = Tensor::f_cat(&[&negative, &positive], 0).context(|| {
                        "concatenating negative and positive conditioning".to_string()
                    })?;
                    *memo = Some((batch, both.shallow_clone()));
                    both
                }
            };
            drop(memo);
            let both_added = match (&added_positive, &added_negative) {
                (Some(p), Some(n)) => Some(Tensor::f_cat(&[n, p], 0).context(|| {
                    "concatenating negative and positive added conditioning".to_string()
                })?),
                _ => None,
            };
            let out = self.call_model(
                &Tensor::cat(&[&sample, &sample], 0),
                t,
                &both,
                both_added.as_ref(),
            )?;
            let halves = out.chunk(2, 0);
            let guided = self.guide(&halves[0], &halves[1])?;
            Ok((guided, want_uncond.then(|| halves[0].shallow_clone())))
        } else {
            // Token counts differ: two calls instead of padding one conditioning.
            let uncond = self.call_model(&sample, t, &negative, added_negative.as_ref())?;
            let cond = self.call_model(&sample, t, &positive, added_positive.as_ref())?;
            let guided = self.guide(&uncond, &cond)?;
            Ok((guided, want_uncond.then_some(uncond)))
        }
    }
}

impl GuidedDenoiser<'_> {
    /// The denoised latent x0 from a model output (eps or v) at `sigma`.
    fn to_denoised(&self, x: &Tensor, out: Tensor, sigma: f64) -> Tensor {
        match self.prediction {
            Prediction::Epsilon => x - out * sigma,
            Prediction::V => {
                let denom = sigma * sigma + 1.0;
                x * (1.0 / denom) - out * (sigma / denom.sqrt())
            }
        }
    }
}

impl Denoiser for GuidedDenoiser<'_> {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let (out, _) = self.guided_output(x, sigma, false)?;
        Ok(self.to_denoised(x, out, sigma))
    }

    fn denoise_with_uncond(&self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        let (out, uncond) = self.guided_output(x, sigma, true)?;
        let denoised = self.to_denoised(x, out, sigma);
        let uncond = match uncond {
            Some(uncond) => self.to_denoised(x, uncond, sigma),
            // No negative conditioning: the prediction is its own unconditional one.
            None => denoised.shallow_clone(),
        };
        Ok((denoised, uncond))
    }

    fn percent_to_sigma(&self, percent: f64) -> Option<f64> {
        Some(self.schedule.percent_to_sigma(percent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// A prediction equal to the mean of the context, so cfg mixing is visible directly.
    fn context_mean(sample: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let mean = ctx.mean_dim([1i64, 2].as_slice(), false, Kind::Float);
        Ok(sample.zeros_like() + mean.view([-1, 1, 1, 1]))
    }

    fn guidance(positive: &Tensor, negative: Option<&Tensor>, cfg: f64) -> Guidance {
        Guidance {
            positive: positive.copy(),
            negative: negative.map(Tensor::copy),
            cfg,
        }
    }

    #[test]
    fn guidance_batches_both_conditionings_in_one_call_on_one_context_tensor() {
        let schedule = DiscreteSchedule::stable_diffusion();
        let calls = RefCell::new(Vec::new());
        let model = |sample: &Tensor, t: &Tensor, ctx: &Tensor| -> Result<Tensor> {
            // The context is held, so that a fresh tensor could not reuse a freed one's address.
            calls
                .borrow_mut()
                .push((sample.size()[0], t.size(), ctx.shallow_clone()));
            context_mean(sample, ctx)
        };
        let opts = (Kind::Float, Device::Cpu);
        let positive = Tensor::ones([1, 3, 8], opts);
        let negative = Tensor::zeros([1, 3, 8], opts);
        let denoiser = GuidedDenoiser::new(
            &model,
            &schedule,
            Prediction::Epsilon,
            guidance(&positive, Some(&negative), 3.0),
        )
        .unwrap();
        let x = Tensor::zeros([2, 4, 2, 2], opts);
        for sigma in [2.0, 1.0] {
            let denoised = denoiser.denoise(&x, sigma).unwrap();
            // eps = 0 + 3 * (1 - 0) = 3; x0 = x - sigma * eps.
            assert!((denoised + 3.0 * sigma).abs().max().double_value(&[]) < 1e-6);
        }
        let calls = calls.into_inner();
        let shapes: Vec<_> = calls.iter().map(|(b, t, _)| (*b, t.clone())).collect();
        assert_eq!(shapes, [(4, vec![4]), (4, vec![4])]);
        // The UNet's key/value memo knows a context by identity: the concatenated conditioning
        // is made once, not at each step.
        assert_eq!(calls[0].2.data_ptr(), calls[1].2.data_ptr());
    }

    #[test]
    fn each_image_of_a_batch_is_guided_with_its_own_cfg_and_prompts_as_if_alone() {
        let schedule = DiscreteSchedule::stable_diffusion();
        let model = |sample: &Tensor, _: &Tensor, ctx: &Tensor| context_mean(sample, ctx);
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([1, 4, 2, 2], opts);
        let prompts = [0.5, 1.0, 2.0].map(|v| Tensor::full([1, 3, 8], v, opts));
        let negatives = [-1.0, 0.0, 0.25].map(|v| Tensor::full([1, 3, 8], v, opts));
        let cfgs = [1.0, 4.0, 7.5];
        let alone: Vec<Tensor> = (0..3)
            .map(|i| {
                GuidedDenoiser::new(
                    &model,
                    &schedule,
                    Prediction::Epsilon,
                    guidance(&prompts[i], Some(&negatives[i]), cfgs[i]),
                )
                .unwrap()
                .denoise(&x, 3.0)
                .unwrap()
            })
            .collect();
        let stack = |parts: &[Tensor]| Tensor::cat(parts, 0);
        let batched = GuidedDenoiser::new(
            &model,
            &schedule,
            Prediction::Epsilon,
            guidance(&stack(&prompts), Some(&stack(&negatives)), 0.0),
        )
        .unwrap()
        .with_cfg_per_image(&cfgs)
        .unwrap()
        .denoise(&x.repeat([3, 1, 1, 1]), 3.0)
        .unwrap();
        for (i, alone) in alone.iter().enumerate() {
            let part = batched.narrow(0, i as i64, 1);
            let off = (&part - alone).abs().max().double_value(&[]);
            assert!(off < 1e-5, "image {i} (cfg {}) is {off} off alone", cfgs[i]);
        }
        // A count of scales that does not fit the batch is an error, not a broadcast.
        let wrong = GuidedDenoiser::new(
            &model,
            &schedule,
            Prediction::Epsilon,
            guidance(&prompts[0], Some(&negatives[0]), 0.0),
        )
        .unwrap()
        .with_cfg_per_image(&[1.0, 2.0])
        .unwrap();
        assert!(wrong.denoise(&x.repeat([3, 1, 1, 1]), 3.0).is_err());
    }

    #[test]
    fn cfg_one_runs_once_and_unequal_token_counts_run_twice() {
        let schedule = DiscreteSchedule::stable_diffusion();
        let calls = RefCell::new(Vec::new());
        let model = |sample: &Tensor, t: &Tensor, ctx: &Tensor| -> Result<Tensor> {
            calls.borrow_mut().push((sample.size()[0], ctx.size()[1]));
            assert_eq!(t.double_value(&[0]), 500.0);
            context_mean(sample, ctx)
        };
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::zeros([1, 4, 2, 2], opts);
        let sigma = schedule.timestep_to_sigma(500.0);
        let positive = Tensor::ones([1, 3, 8], opts);
        let negative = Tensor::zeros([1, 5, 8], opts);
        let once = GuidedDenoiser::new(
            &model,
            &schedule,
            Prediction::Epsilon,
            guidance(&positive, Some(&negative), 1.0),
        )
        .unwrap();
        let _ = once.denoise(&x, sigma).unwrap();
        assert_eq!(calls.borrow().as_slice(), &[(1, 3)]);
        calls.borrow_mut().clear();
        let twice = GuidedDenoiser::new(
            &model,
            &schedule,
            Prediction::Epsilon,
            guidance(&positive, Some(&negative), 2.0),
        )
        .unwrap();
        let denoised = twice.denoise(&x, sigma).unwrap();
        assert_eq!(calls.borrow().as_slice(), &[(1, 5), (1, 3)]);
        // eps = 0 + 2 * (1 - 0) = 2.
        assert!((denoised + 2.0 * sigma).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn v_prediction_of_the_true_v_recovers_x0() {
        let schedule = DiscreteSchedule::stable_diffusion();
        let opts = (Kind::Float, Device::Cpu);
        let x0 = Tensor::full([1, 1, 2, 2], 0.7, opts);
        let eps = Tensor::full([1, 1, 2, 2], -0.4, opts);
        let sigma = 3.0_f64;
        let x = &x0 + &eps * sigma;
        // In variance-preserving terms: alpha = 1 / sqrt(1 + sigma^2), sigma_vp = sigma * alpha.
        let alpha = 1.0 / (1.0 + sigma * sigma).sqrt();
        let v = &eps * alpha - &x0 * (sigma * alpha);
        let model = move |_s: &Tensor, _t: &Tensor, _c: &Tensor| -> Result<Tensor> { Ok(v.copy()) };
        let denoiser = GuidedDenoiser::new(
            &model,
            &schedule,
            Prediction::V,
            guidance(&Tensor::zeros([1, 1, 4], opts), None, 5.0),
        )
        .unwrap();
        let denoised = denoiser.denoise(&x, sigma).unwrap();
        assert!((denoised - x0).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn mismatched_conditioning_batch_is_an_error() {
        let schedule = DiscreteSchedule::stable_diffusion();
        let model = |s: &Tensor, _t: &Tensor, _c: &Tensor| -> Result<Tensor> { Ok(s.zeros_like()) };
        let opts = (Kind::Float, Device::Cpu);
        let denoiser = GuidedDenoiser::new(
            &model,
            &schedule,
            Prediction::Epsilon,
            guidance(&Tensor::ones([3, 3, 8], opts), None, 1.0),
        )
        .unwrap();
        assert!(denoiser
            .denoise(&Tensor::zeros([2, 4, 2, 2], opts), 1.0)
            .is_err());
        assert!(GuidedDenoiser::new(
            &model,
            &schedule,
            Prediction::V,
            guidance(&Tensor::ones([3, 8], opts), None, 1.0)
        )
        .is_err());
    }
}
