//! Latent consistency model sampler (Luo et al. 2023; ComfyUI `sample_lcm`, diffusers
//! `LCMScheduler`): jump to the denoised prediction, then re-noise it to the next sigma.
use tch::Tensor;

use super::{check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler};
use crate::error::Result;

pub struct Lcm;

impl Sampler for Lcm {
    fn name(&self) -> &'static str {
        "lcm"
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
            let sigma_next = sigmas[i + 1];
            let denoised = denoise_checked(denoiser, &x, sigmas[i])?;
            x = if sigma_next > 0.0 {
                &denoised + noise.noise(i, &denoised)? * sigma_next
            } else {
                denoised.shallow_clone()
            };
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}
