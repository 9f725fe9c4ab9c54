//! Inpainting around any sampler, as ComfyUI's `KSamplerX0Inpaint` does it: the noise mask
//! [`MaskedDenoiser`] keeps the unmasked region at the input latent noised to each step's sigma
//! before the model sees it, and at the input latent itself in the prediction, so only the
//! masked region is sampled; and [`ConcatPredictor`], which shows a 9-channel inpainting UNet
//! (sd-v1-5-inpainting's layout) the mask and masked-image latent beside the noisy latent.
use tch::{Kind, Tensor};

use super::{
    sample_window, Denoiser, DiscreteSchedule, Hooks, NoisePredictor, SampleSettings, StepWindow,
};
use crate::error::{ModelError, Result};

/// A denoiser that changes only where `mask` is 1 (soft in between).
pub struct MaskedDenoiser<'a> {
    inner: &'a dyn Denoiser,
    latent: Tensor,
    noise: Tensor,
    /// `[B, C, h, w]`, the latent's shape.
    mask: Tensor,
    keep: Tensor,
}

impl<'a> MaskedDenoiser<'a> {
    /// `mask` is `[B or 1, H, W]` at any size: it is resized (bilinear) to the latent and
    /// repeated over its channels and batch (ComfyUI's `prepare_mask`). `noise` is the initial
    /// noise of the run (the unmasked region is `latent + noise * sigma` at each step).
    pub fn new(
        inner: &'a dyn Denoiser,
        latent: &Tensor,
        noise: &Tensor,
        mask: &Tensor,
    ) -> Result<Self> {
        let mask = latent_mask(mask, latent)?;
        let keep = mask.neg() + 1.0;
        Ok(Self {
            inner,
            latent: latent.shallow_clone(),
            noise: noise.to_device(latent.device()).to_kind(latent.kind()),
            mask,
            keep,
        })
    }

    fn masked_input(&self, x: &Tensor, sigma: f64) -> Tensor {
        let noised = &self.latent + &self.noise * sigma;
        x * &self.mask + noised * &self.keep
    }

    fn masked_output(&self, denoised: &Tensor) -> Tensor {
        denoised * &self.mask + &self.latent * &self.keep
    }
}

impl Denoiser for MaskedDenoiser<'_> {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let denoised = self.inner.denoise(&self.masked_input(x, sigma), sigma)?;
        Ok(self.masked_output(&denoised))
    }

    fn denoise_with_uncond(&self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        let (denoised, uncond) = self
            .inner
            .denoise_with_uncond(&self.masked_input(x, sigma), sigma)?;
        Ok((self.masked_output(&denoised), self.masked_output(&uncond)))
    }

    fn percent_to_sigma(&self, percent: f64) -> Option<f64> {
        self.inner.percent_to_sigma(percent)
    }
}

/// A mask `[B or 1, H, W]` (or `[B, 1, H, W]`) as `[B, C, h, w]` for `latent`: bilinear resize,
/// then repeated over channels and batch.
pub fn latent_mask(mask: &Tensor, latent: &Tensor) -> Result<Tensor> {
    let size = latent.size();
    let m = mask.size();
    if size.len() != 4 || !(m.len() == 3 || (m.len() == 4 && m[1] == 1)) {
        return Err(ModelError::Shape {
            context: "noise mask".into(),
            message: format!("a mask {m:?} for a latent {size:?}: expected [batch, height, width] and [batch, channels, h, w]"),
        });
    }
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    let mask = mask
        .to_device(latent.device())
        .to_kind(Kind::Float)
        .reshape([-1, 1, m[m.len() - 2], m[m.len() - 1]])
        .upsample_bilinear2d([h, w], false, None, None);
    // ComfyUI's repeat_to_batch_size: repeated, then cut to the batch.
    let mb = mask.size()[0];
    let mask = mask.repeat([(b + mb - 1) / mb, c, 1, 1]).narrow(0, 0, b);
    Ok(mask.to_kind(latent.kind()))
}

/// [`sample_window`] with a noise mask: `noise` as given, or drawn from the seed as
/// [`super::sample`] draws it.
#[allow(clippy::too_many_arguments)] // the sampling arguments plus the mask
pub fn sample_masked(
    denoiser: &dyn Denoiser,
    schedule: &DiscreteSchedule,
    latent: &Tensor,
    noise: Option<&Tensor>,
    mask: &Tensor,
    settings: &SampleSettings,
    window: StepWindow,
    hooks: &mut Hooks<'_>,
) -> Result<Tensor> {
    let noise = match noise {
        Some(noise) => noise.shallow_clone(),
        None => crate::noise::initial_noise(
            settings.seed,
            &latent.size(),
            latent.device(),
            latent.kind(),
        )?,
    };
    if noise.size() != latent.size() {
        // sample_window says what is wrong.
        return sample_window(denoiser, schedule, latent, &noise, settings, window, hooks);
    }
    let masked = MaskedDenoiser::new(denoiser, latent, &noise, mask)?;
    sample_window(&masked, schedule, latent, &noise, settings, window, hooks)
}

/// The latent-space value of a black image in the SD VAE's latent space, per channel
/// (ComfyUI's `blank_inpaint_image_like`): what an inpainting UNet is shown as the masked image
/// when a latent carries none.
const BLANK_LATENT: [f64; 4] = [0.8223, -0.6876, 0.6364, 0.1380];

/// The 5 channels a 9-channel inpainting UNet takes after the noisy latent: the mask (rounded,
/// 1 channel) and the masked image's latent (4), at `latent`'s size (ComfyUI's
/// `BaseModel.concat_cond`). Without a mask: all ones and a blank image.
pub fn inpaint_concat(
    latent: &Tensor,
    mask: Option<&Tensor>,
    masked_latent: Option<&Tensor>,
) -> Result<Tensor> {
    let size = latent.size();
    let (b, h, w) = (size[0], size[2], size[3]);
    let options = (latent.kind(), latent.device());
    let (mask, image) = match mask {
        Some(mask) => {
            let mask = latent_mask(mask, latent)?.narrow(1, 0, 1).round();
            let image = masked_latent.unwrap_or(latent).to_device(latent.device());
            let image = if image.size()[2..] != size[2..] {
                image.upsample_bilinear2d([h, w], false, None, None)
            } else {
                image
            };
            let ib = image.size()[0];
            let image = image.repeat([(b + ib - 1) / ib, 1, 1, 1]).narrow(0, 0, b);
            (mask, image.to_kind(latent.kind()))
        }
        None => {
            let blank = Tensor::from_slice(&BLANK_LATENT)
                .view([1, 4, 1, 1])
                .to_kind(latent.kind())
                .to_device(latent.device());
            (
                Tensor::ones([b, 1, h, w], options),
                blank.expand([b, 4, h, w], false).contiguous(),
            )
        }
    };
    if image.size()[1] != 4 {
        return Err(ModelError::Shape {
            context: "masked-image latent".into(),
            message: format!("expected 4 channels, got {:?}", image.size()),
        });
    }
    Ok(Tensor::cat(&[mask, image], 1))
}

/// A noise predictor for 9-channel inpainting UNets: each call gets `concat` (from
/// [`inpaint_concat`], batch 1 or the latent's) beside the c_in-scaled latent, as ComfyUI
/// concatenates `c_concat` after `calculate_input`.
pub struct ConcatPredictor<'a> {
    pub inner: &'a dyn NoisePredictor,
    pub concat: Tensor,
}

impl ConcatPredictor<'_> {
    fn with_concat(&self, sample: &Tensor) -> Result<Tensor> {
        let b = sample.size()[0];
        let cb = self.concat.size()[0];
        // Guidance stacks the latent batch twice (uncond, cond): repeat the concat likewise.
        let concat = if cb == b {
            self.concat.shallow_clone()
        } else if b % cb == 0 {
            self.concat.repeat([b / cb, 1, 1, 1])
        } else {
            return Err(ModelError::Shape {
                context: "inpainting model input".into(),
                message: format!("concat batch {cb} for a sample batch of {b}"),
            });
        };
        Ok(Tensor::cat(&[sample, &concat.to_kind(sample.kind())], 1))
    }
}

impl NoisePredictor for ConcatPredictor<'_> {
    fn predict(&self, sample: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<Tensor> {
        self.inner
            .predict(&self.with_concat(sample)?, timesteps, context)
    }

    fn predict_added(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        added: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.inner
            .predict_added(&self.with_concat(sample)?, timesteps, context, added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samplers::{SamplerKind, ScheduleKind};
    use tch::Device;

    const CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

    /// A denoiser that predicts a constant 3 everywhere: unmasked, every sampler lands on 3.
    fn constant_three(x: &Tensor, _sigma: f64) -> Result<Tensor> {
        Ok(x.zeros_like() + 3.0)
    }

    #[test]
    fn the_unmasked_region_ends_at_the_input_latent_and_the_masked_one_is_sampled() {
        let schedule = DiscreteSchedule::stable_diffusion();
        let latent = Tensor::randn([1, 4, 8, 8], CPU);
        // Left half of the image repainted (at the mask's own resolution, 64x64).
        let mask = Tensor::zeros([1, 64, 64], CPU);
        let _ = mask.narrow(2, 0, 32).fill_(1.0);
        for name in [
            "euler",
            "euler_ancestral",
            "dpmpp_2m",
            "dpmpp_2m_sde",
            "heun",
            "uni_pc",
        ] {
            let settings = SampleSettings {
                seed: 5,
                steps: 8,
                sampler: SamplerKind::from_name(name).unwrap(),
                schedule: ScheduleKind::Karras,
                denoise: 1.0,
            };
            let out = sample_masked(
                &constant_three,
                &schedule,
                &latent,
                None,
                &mask,
                &settings,
                StepWindow::FULL,
                &mut Hooks::default(),
            )
            .unwrap();
            let kept = out.narrow(3, 4, 4);
            let kept_err = (kept - latent.narrow(3, 4, 4))
                .abs()
                .max()
                .double_value(&[]);
            let painted_err = (out.narrow(3, 0, 4) - 3.0).abs().max().double_value(&[]);
            // uni_pc stops at sigma 0.001 (as ComfyUI's), leaving noise of that size.
            let tolerance = if name == "uni_pc" { 1e-2 } else { 1e-5 };
            assert!(kept_err < tolerance, "{name}: unmasked moved by {kept_err}");
            assert!(
                painted_err < tolerance,
                "{name}: masked is {painted_err} off"
            );
        }
    }

    #[test]
    fn the_model_sees_the_noised_input_latent_outside_the_mask() {
        let latent = Tensor::full([1, 1, 2, 2], 0.5, CPU);
        let noise = Tensor::full([1, 1, 2, 2], 2.0, CPU);
        let mask = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0]).view([1, 2, 2]);
        let seen = std::cell::RefCell::new(None);
        let spy = |x: &Tensor, _s: f64| -> Result<Tensor> {
            *seen.borrow_mut() = Some(x.copy());
            Ok(x.zeros_like() - 1.0)
        };
        let masked = MaskedDenoiser::new(&spy, &latent, &noise, &mask).unwrap();
        let x = Tensor::full([1, 1, 2, 2], 9.0, CPU);
        let out = masked.denoise(&x, 3.0).unwrap();
        let seen = seen.borrow_mut().take().unwrap();
        let seen = Vec::<f32>::try_from(seen.reshape([-1])).unwrap();
        assert_eq!(seen, [9.0, 6.5, 6.5, 6.5]);
        let out = Vec::<f32>::try_from(out.reshape([-1])).unwrap();
        assert_eq!(out, [-1.0, 0.5, 0.5, 0.5]);
    }

    #[test]
    fn inpainting_concat_is_the_rounded_mask_and_the_masked_latent_repeated_for_guidance() {
        let latent = Tensor::zeros([1, 4, 2, 2], CPU);
        let mask = Tensor::from_slice(&[0.6f32, 0.4, 0.0, 1.0]).view([1, 2, 2]);
        let masked_latent = Tensor::full([1, 4, 2, 2], 0.25, CPU);
        let concat = inpaint_concat(&latent, Some(&mask), Some(&masked_latent)).unwrap();
        assert_eq!(concat.size(), [1, 5, 2, 2]);
        let m = Vec::<f32>::try_from(concat.get(0).get(0).reshape([-1])).unwrap();
        assert_eq!(m, [1.0, 0.0, 0.0, 1.0]);
        assert_eq!(
            concat.narrow(1, 1, 4).mean(Kind::Float).double_value(&[]),
            0.25
        );
        let blank = inpaint_concat(&latent, None, None).unwrap();
        assert_eq!(blank.get(0).get(0).mean(Kind::Float).double_value(&[]), 1.0);
        assert!((blank.double_value(&[0, 2, 1, 1]) + 0.6876).abs() < 1e-6);

        let calls = std::cell::RefCell::new(Vec::new());
        let model = |sample: &Tensor, _t: &Tensor, _c: &Tensor| -> Result<Tensor> {
            calls.borrow_mut().push(sample.size());
            Ok(sample.narrow(1, 0, 4).zeros_like())
        };
        let predictor = ConcatPredictor {
            inner: &model,
            concat,
        };
        let cond = Tensor::zeros([2, 3, 8], CPU);
        let t = Tensor::zeros([2], CPU);
        let out = predictor
            .predict(&Tensor::zeros([2, 4, 2, 2], CPU), &t, &cond)
            .unwrap();
        assert_eq!(out.size(), [2, 4, 2, 2]);
        assert_eq!(calls.borrow().as_slice(), &[vec![2, 9, 2, 2]]);
    }
}
