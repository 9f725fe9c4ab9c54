//! The CFG++ forms of DPM-Solver++ (ComfyUI's `sample_dpmpp_2m_cfg_pp` and
//! `sample_dpmpp_2s_ancestral_cfg_pp`): as their plain forms, but the latent is carried along
//! the *unconditional* prediction while the step lands on the guided one (Chung et al. 2024),
//! for low guidance scales.
use tch::Tensor;

use super::{
    ancestral_step_eta, check_sigmas, denoise_checked_with_uncond, Denoiser, Hooks, NoiseSource,
    Sampler,
};
use crate::error::Result;

/// DPM-Solver++(2M) CFG++.
pub struct DpmPp2mCfgPp;

/// DPM-Solver++(2S) ancestral CFG++ (eta 1).
pub struct DpmPp2sAncestralCfgPp;

impl Sampler for DpmPp2mCfgPp {
    fn name(&self) -> &'static str {
        "dpmpp_2m_cfg_pp"
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
        let t_of = |sigma: f64| -sigma.ln();
        let mut old_uncond: Option<Tensor> = None;
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let (denoised, uncond) = denoise_checked_with_uncond(denoiser, &x, sigma)?;
            let (t, t_next) = (t_of(sigma), t_of(sigma_next));
            let h = t_next - t;
            let mix = match &old_uncond {
                Some(old) if sigma_next != 0.0 => {
                    let r = (t - t_of(sigmas[i - 1])) / h;
                    &uncond * -(-h).exp() - (&denoised - old) * ((-h).exp_m1() * (1.0 / (2.0 * r)))
                }
                _ => &uncond * -(-h).exp(),
            };
            x = &denoised + mix + &x * (-h).exp();
            old_uncond = Some(uncond);
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}

impl Sampler for DpmPp2sAncestralCfgPp {
    fn name(&self) -> &'static str {
        "dpmpp_2s_ancestral_cfg_pp"
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
        let t_of = |sigma: f64| -sigma.ln();
        let sigma_of = |t: f64| (-t).exp();
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let (denoised, uncond) = denoise_checked_with_uncond(denoiser, &x, sigma)?;
            let (sigma_down, sigma_up) = ancestral_step_eta(sigma, sigma_next, 1.0);
            if sigma_down == 0.0 {
                let d = (&x - &uncond) / sigma;
                x = &denoised + d * sigma_down;
            } else {
                let (t, t_next) = (t_of(sigma), t_of(sigma_down));
                let r = 0.5;
                let h = t_next - t;
                let s = t + r * h;
                let x_2 = (&x + (&denoised - &uncond)) * (sigma_of(s) / sigma_of(t))
                    - &denoised * (-h * r).exp_m1();
                let (denoised_2, uncond_2) =
                    denoise_checked_with_uncond(denoiser, &x_2, sigma_of(s))?;
                // ComfyUI's hook keeps the latest unconditional prediction, so the full step
                // carries the latent along the midpoint's (as its code does).
                x = (&x + (&denoised - uncond_2)) * (sigma_of(t_next) / sigma_of(t))
                    - denoised_2 * (-h).exp_m1();
            }
            if sigma_next > 0.0 {
                x = &x + noise.noise(i, &x)? * sigma_up;
            }
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}
