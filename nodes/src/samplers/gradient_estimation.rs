//! The gradient-estimation sampler (Permenter & Yuan 2024; ComfyUI's
//! `sample_gradient_estimation`, gamma 2): Euler steps whose slope is corrected by the change
//! of slope since the previous step, a second-order estimate at one model call per step.
//! `gradient_estimation_cfg_pp` takes the slope from the unconditional prediction (CFG++).
use tch::Tensor;

use super::{
    check_sigmas, denoise_checked, denoise_checked_with_uncond, Denoiser, Hooks, NoiseSource,
    Sampler,
};
use crate::error::Result;

pub struct GradientEstimation {
    /// ComfyUI's `ge_gamma` (2).
    pub gamma: f64,
    /// CFG++: slopes from the unconditional prediction, steps from the guided one.
    pub cfg_pp: bool,
}

impl Sampler for GradientEstimation {
    fn name(&self) -> &'static str {
        if self.cfg_pp {
            "gradient_estimation_cfg_pp"
        } else {
            "gradient_estimation"
        }
    }

    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        mut x: Tensor,
        sigmas: &[f64],
        _noise: &mut dyn NoiseSource,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor> {
        check_sigmas(self.name(), sigmas)?;
        let total = sigmas.len().saturating_sub(1);
        let mut previous: Option<Tensor> = None;
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let (denoised, steered) = if self.cfg_pp {
                denoise_checked_with_uncond(denoiser, &x, sigma)?
            } else {
                let denoised = denoise_checked(denoiser, &x, sigma)?;
                (denoised.shallow_clone(), denoised)
            };
            let d = (&x - &steered) / sigma;
            let dt = sigma_next - sigma;
            if sigma_next == 0.0 {
                x = denoised.shallow_clone();
            } else {
                x = if self.cfg_pp {
                    &denoised + &d * sigma_next
                } else {
                    &x + &d * dt
                };
                if let Some(old) = &previous {
                    x = &x + (&d - old) * (self.gamma - 1.0) * dt;
                }
            }
            previous = Some(d);
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}
