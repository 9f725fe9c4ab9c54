//! CFG++ Euler samplers (Chung et al. 2024; ComfyUI's `sample_euler_ancestral_cfg_pp`, and
//! `euler_cfg_pp` as its eta 0 case): the step re-noises along the *unconditional* prediction
//! while landing on the guided one, which keeps low guidance scales (about 1-2) sharp.
use tch::Tensor;

use super::{
    ancestral_step_eta, check_sigmas, denoise_checked_with_uncond, Denoiser, Hooks, NoiseSource,
    Sampler,
};
use crate::error::Result;

/// Euler CFG++; `eta` 0 is `euler_cfg_pp`, 1 is `euler_ancestral_cfg_pp`.
pub struct EulerCfgPp {
    pub eta: f64,
}

impl Sampler for EulerCfgPp {
    fn name(&self) -> &'static str {
        if self.eta == 0.0 {
            "euler_cfg_pp"
        } else {
            "euler_ancestral_cfg_pp"
        }
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
            let (denoised, uncond) = denoise_checked_with_uncond(denoiser, &x, sigma)?;
            if sigma_next == 0.0 {
                x = denoised.shallow_clone();
            } else {
                // alpha = sigma * exp(-ln sigma): 1 up to rounding for an epsilon model, kept
                // so the arithmetic follows ComfyUI's.
                let alpha_s = sigma * (-sigma.ln()).exp();
                let alpha_t = sigma_next * (-sigma_next.ln()).exp();
                let d = (&x - uncond * alpha_s) / sigma;
                let (sigma_down, sigma_up) =
                    ancestral_step_eta(sigma / alpha_s, sigma_next / alpha_t, self.eta);
                let sigma_down = alpha_t * sigma_down;
                x = &denoised * alpha_t + d * sigma_down;
                if self.eta > 0.0 {
                    x = &x + noise.noise(i, &x)? * (alpha_t * sigma_up);
                }
            }
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}
