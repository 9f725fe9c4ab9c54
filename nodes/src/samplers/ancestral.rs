//! Ancestral samplers with second-order steps (k-diffusion `sample_dpm_2_ancestral`,
//! `sample_dpmpp_2s_ancestral`, eta 1): a deterministic step down to `sigma_down`, then fresh
//! noise of size `sigma_up` from the noise source (ComfyUI's seeded sequential draws).
use tch::Tensor;

use super::{
    ancestral_step_eta, check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler,
};
use crate::error::Result;

/// DPM-Solver-2 steps (midpoint in log sigma) to `sigma_down`, then ancestral noise.
pub struct Dpm2Ancestral;

/// DPM-Solver++(2S) steps to `sigma_down`, then ancestral noise.
pub struct DpmPp2sAncestral;

/// `exp(lerp(ln a, ln b, 0.5))`, as torch's `lerp` computes a weight of 0.5.
pub(crate) fn log_midpoint(a: f64, b: f64) -> f64 {
    let (la, lb) = (a.ln(), b.ln());
    (lb - (lb - la) * 0.5).exp()
}

impl Sampler for Dpm2Ancestral {
    fn name(&self) -> &'static str {
        "dpm_2_ancestral"
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
            let (sigma_down, sigma_up) = ancestral_step_eta(sigma, sigma_next, 1.0);
            let d = (&x - &denoised) / sigma;
            if sigma_down == 0.0 {
                x = &x + d * (sigma_down - sigma);
            } else {
                let sigma_mid = log_midpoint(sigma, sigma_down);
                let x_2 = &x + &d * (sigma_mid - sigma);
                let denoised_2 = denoise_checked(denoiser, &x_2, sigma_mid)?;
                let d_2 = (&x_2 - denoised_2) / sigma_mid;
                x = &x + d_2 * (sigma_down - sigma);
                x = &x + noise.noise(i, &x)? * sigma_up;
            }
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}

impl Sampler for DpmPp2sAncestral {
    fn name(&self) -> &'static str {
        "dpmpp_2s_ancestral"
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
            let (sigma_down, sigma_up) = ancestral_step_eta(sigma, sigma_next, 1.0);
            if sigma_down == 0.0 {
                let d = (&x - &denoised) / sigma;
                x = &x + d * (sigma_down - sigma);
            } else {
                // In t = -ln(sigma): a half step to s, then the full step with its prediction.
                let (t, t_next) = (-sigma.ln(), -sigma_down.ln());
                let h = t_next - t;
                let s = t + 0.5 * h;
                let sigma_s = (-s).exp();
                let x_2 = &x * (sigma_s / (-t).exp()) - &denoised * (-h * 0.5).exp_m1();
                let denoised_2 = denoise_checked(denoiser, &x_2, sigma_s)?;
                x = &x * ((-t_next).exp() / (-t).exp()) - denoised_2 * (-h).exp_m1();
            }
            if sigma_next > 0.0 {
                x = &x + noise.noise(i, &x)? * sigma_up;
            }
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}
