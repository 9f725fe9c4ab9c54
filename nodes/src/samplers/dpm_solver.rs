//! DPM-Solver++(2M) and its SDE variant (Lu et al. 2022, "DPM-Solver++", multistep second order,
//! midpoint form; k-diffusion `sample_dpmpp_2m` / `sample_dpmpp_2m_sde` with eta 1, diffusers
//! `DPMSolverMultistepScheduler` algorithm "dpmsolver++" / "sde-dpmsolver++", order 2). Steps
//! in lambda = -log(sigma); the first step and the last (to sigma 0) are first order.
use tch::Tensor;

use super::{check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler};
use crate::error::Result;

/// Deterministic multistep DPM-Solver++ of order 2.
pub struct DpmPp2m;

/// Stochastic DPM-Solver++(2M) SDE, eta 1, step noise from the noise source's Brownian tree
/// (ComfyUI's); `heun` selects k-diffusion's Heun-type correction instead of the midpoint one
/// (`dpmpp_2m_sde_heun`).
pub struct DpmPp2mSde {
    pub heun: bool,
}

impl Sampler for DpmPp2m {
    fn name(&self) -> &'static str {
        "dpmpp_2m"
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
            let denoised = denoise_checked(denoiser, &x, sigma)?;
            x = if sigma_next == 0.0 {
                denoised.copy()
            } else {
                let h = (sigma / sigma_next).ln();
                let toward = match &previous {
                    Some(previous) => {
                        let h_last = (sigmas[i - 1] / sigma).ln();
                        let half_inv_r = h / (2.0 * h_last);
                        &denoised * (1.0 + half_inv_r) - previous * half_inv_r
                    }
                    None => denoised.shallow_clone(),
                };
                &x * (sigma_next / sigma) - toward * (-h).exp_m1()
            };
            hooks.step_done(i, total, &x, &denoised);
            previous = Some(denoised);
        }
        Ok(x)
    }
}

impl Sampler for DpmPp2mSde {
    fn name(&self) -> &'static str {
        if self.heun {
            "dpmpp_2m_sde_heun"
        } else {
            "dpmpp_2m_sde"
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
        let mut previous: Option<Tensor> = None;
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let denoised = denoise_checked(denoiser, &x, sigma)?;
            x = if sigma_next == 0.0 {
                denoised.copy()
            } else {
                let h = (sigma / sigma_next).ln();
                // 1 - exp(-2h): the share of the step that the SDE moves toward x0.
                let gain = -(-2.0 * h).exp_m1();
                let mut next = &x * ((sigma_next / sigma) * (-h).exp()) + &denoised * gain;
                if let Some(previous) = &previous {
                    let h_last = (sigmas[i - 1] / sigma).ln();
                    let correction = if self.heun {
                        // k-diffusion's Heun term: 1 - (1 - exp(-2h)) / (2h).
                        gain / (-2.0 * h) + 1.0
                    } else {
                        0.5 * gain
                    };
                    next += (&denoised - previous) * (correction * h / h_last);
                }
                let step_noise = noise.sde_noise(i, sigmas, sigma, sigma_next, &x)?;
                next + step_noise * (sigma_next * gain.sqrt())
            };
            hooks.step_done(i, total, &x, &denoised);
            previous = Some(denoised);
        }
        Ok(x)
    }
}
