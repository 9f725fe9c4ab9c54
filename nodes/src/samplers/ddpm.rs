//! DDPM ancestral sampling (Ho et al. 2020; ComfyUI's `sample_ddpm`): each step is the DDPM
//! posterior mean computed in variance-preserving space from the model's noise prediction,
//! plus the posterior's noise (ComfyUI's sequential step noise), scaled back to k-diffusion's
//! variance-exploding space.
use tch::Tensor;

use super::{check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler};
use crate::error::Result;

pub struct Ddpm;

impl Sampler for Ddpm {
    fn name(&self) -> &'static str {
        "ddpm"
    }

    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        mut x: Tensor,
        sigmas: &[f64],
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor> {
        check_sigmas(self.name(), sigmas)?;
        let total = sigmas.len().saturating_sub(1);
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let denoised = denoise_checked(denoiser, &x, sigma)?;
            let eps = (&x - &denoised) / sigma;
            let vp = &x / (1.0 + sigma * sigma).sqrt();
            let alpha_cumprod = 1.0 / (sigma * sigma + 1.0);
            let alpha_cumprod_next = 1.0 / (sigma_next * sigma_next + 1.0);
            let alpha = alpha_cumprod / alpha_cumprod_next;
            let mut mean =
                (vp - eps * (1.0 - alpha) / (1.0 - alpha_cumprod).sqrt()) * (1.0 / alpha).sqrt();
            if sigma_next > 0.0 {
                let spread =
                    ((1.0 - alpha) * (1.0 - alpha_cumprod_next) / (1.0 - alpha_cumprod)).sqrt();
                mean = &mean + noise.noise(i, &mean)? * spread;
                mean *= (1.0 + sigma_next * sigma_next).sqrt();
            }
            x = mean;
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}
