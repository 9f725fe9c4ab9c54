//! Heun's second-order sampler (Karras et al. 2022, Algorithm 1 without churn; k-diffusion
//! `sample_heun`, diffusers `HeunDiscreteScheduler`): two model calls per step, one (Euler) for
//! the last step to sigma 0.
use tch::Tensor;

use super::{check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler};
use crate::error::Result;

pub struct Heun;

impl Sampler for Heun {
    fn name(&self) -> &'static str {
        "heun"
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
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let denoised = denoise_checked(denoiser, &x, sigma)?;
            let derivative = (&x - &denoised) / sigma;
            let dt = sigma_next - sigma;
            let euler = &x + &derivative * dt;
            x = if sigma_next == 0.0 {
                euler
            } else {
                let denoised_next = denoise_checked(denoiser, &euler, sigma_next)?;
                let derivative_next = (&euler - denoised_next) / sigma_next;
                &x + (derivative + derivative_next) * (dt / 2.0)
            };
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}
