//! DPM-Solver family samplers beside the 2M ones (k-diffusion as ComfyUI ships it):
//! `dpm_2` (Karras et al. 2022's DPM-Solver-2 variant), `dpmpp_sde` (DPM-Solver++ stochastic,
//! r = 1/2) and `dpmpp_3m_sde` (third-order multistep SDE), eta 1. The SDE ones take their
//! noise from the noise source's Brownian tree, at the same (sigma, sigma_next) pairs ComfyUI
//! queries, so their images equal ComfyUI's for a seed.
use tch::Tensor;

use super::ancestral::log_midpoint;
use super::{
    ancestral_step_eta, check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler,
};
use crate::error::Result;

/// Second-order: Euler to the log-midpoint sigma, then the full step with its derivative.
pub struct Dpm2;

/// DPM-Solver++ (stochastic), two model calls per step.
pub struct DpmPpSde;

/// DPM-Solver++(3M) SDE.
pub struct DpmPp3mSde;

impl Sampler for Dpm2 {
    fn name(&self) -> &'static str {
        "dpm_2"
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
            let d = (&x - &denoised) / sigma;
            if sigma_next == 0.0 {
                x = &x + d * (sigma_next - sigma);
            } else {
                let sigma_mid = log_midpoint(sigma, sigma_next);
                let x_2 = &x + &d * (sigma_mid - sigma);
                let denoised_2 = denoise_checked(denoiser, &x_2, sigma_mid)?;
                let d_2 = (&x_2 - denoised_2) / sigma_mid;
                x = &x + d_2 * (sigma_next - sigma);
            }
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}

impl Sampler for DpmPpSde {
    fn name(&self) -> &'static str {
        "dpmpp_sde"
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
        const R: f64 = 0.5;
        let fac = 1.0 / (2.0 * R);
        let total = sigmas.len().saturating_sub(1);
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let denoised = denoise_checked(denoiser, &x, sigma)?;
            if sigma_next == 0.0 {
                x = denoised.shallow_clone();
            } else {
                // lambda = -ln(sigma) (half log-SNR of an epsilon model in k-diffusion space).
                let (lambda_s, lambda_t) = (-sigma.ln(), -sigma_next.ln());
                let h = lambda_t - lambda_s;
                let lambda_s_1 = lambda_s + R * h;
                let sigma_s_1 = (-lambda_s_1).exp();
                let alpha_s = sigma * lambda_s.exp();
                let alpha_s_1 = sigma_s_1 * lambda_s_1.exp();
                let alpha_t = sigma_next * lambda_t.exp();

                // Step 1: to sigma_s_1, with its share of the noise.
                let (sd, su) = ancestral_step_eta((-lambda_s).exp(), (-lambda_s_1).exp(), 1.0);
                let h_ = -sd.ln() - lambda_s;
                let mut x_2 = &x * ((alpha_s_1 / alpha_s) * (-h_).exp())
                    - &denoised * (alpha_s_1 * (-h_).exp_m1());
                let step_noise = noise.sde_noise(i, sigmas, sigma, sigma_s_1, &x)?;
                x_2 += step_noise * (alpha_s_1 * su);
                let denoised_2 = denoise_checked(denoiser, &x_2, sigma_s_1)?;

                // Step 2: the full step with the averaged prediction.
                let (sd, su) = ancestral_step_eta((-lambda_s).exp(), (-lambda_t).exp(), 1.0);
                let h_ = -sd.ln() - lambda_s;
                let denoised_d = &denoised * (1.0 - fac) + denoised_2 * fac;
                x = &x * ((alpha_t / alpha_s) * (-h_).exp())
                    - denoised_d * (alpha_t * (-h_).exp_m1());
                let step_noise = noise.sde_noise(i, sigmas, sigma, sigma_next, &x)?;
                x += step_noise * (alpha_t * su);
            }
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}

impl Sampler for DpmPp3mSde {
    fn name(&self) -> &'static str {
        "dpmpp_3m_sde"
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
        const ETA: f64 = 1.0;
        let total = sigmas.len().saturating_sub(1);
        // The two previous predictions and step sizes (newest first).
        let mut denoised_1: Option<Tensor> = None;
        let mut denoised_2: Option<Tensor> = None;
        let (mut h_1, mut h_2): (Option<f64>, Option<f64>) = (None, None);
        let mut h: Option<f64> = None;
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let denoised = denoise_checked(denoiser, &x, sigma)?;
            if sigma_next == 0.0 {
                x = denoised.shallow_clone();
            } else {
                let (lambda_s, lambda_t) = (-sigma.ln(), -sigma_next.ln());
                let step = lambda_t - lambda_s;
                h = Some(step);
                let h_eta = step * (ETA + 1.0);
                let alpha_t = sigma_next * lambda_t.exp();
                x = &x * (sigma_next / sigma * (-step * ETA).exp())
                    + &denoised * (alpha_t * -(-h_eta).exp_m1());
                match (&denoised_1, &denoised_2, h_1, h_2) {
                    (Some(d_1), Some(d_2), Some(h1), Some(h2)) => {
                        let r0 = h1 / step;
                        let r1 = h2 / step;
                        let d1_0 = (&denoised - d_1) / r0;
                        let d1_1 = (d_1 - d_2) / r1;
                        let d1 = &d1_0 + (&d1_0 - &d1_1) * (r0 / (r0 + r1));
                        let d2 = (d1_0 - d1_1) / (r0 + r1);
                        let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
                        let phi_3 = phi_2 / h_eta - 0.5;
                        x = &x + d1 * (alpha_t * phi_2) - d2 * (alpha_t * phi_3);
                    }
                    (Some(d_1), _, Some(h1), _) => {
                        let r = h1 / step;
                        let d = (&denoised - d_1) / r;
                        let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
                        x = &x + d * (alpha_t * phi_2);
                    }
                    _ => {}
                }
                let step_noise = noise.sde_noise(i, sigmas, sigma, sigma_next, &x)?;
                x = &x + step_noise * (sigma_next * (-(-2.0 * step * ETA).exp_m1()).sqrt());
            }
            hooks.step_done(i, total, &x, &denoised);
            denoised_2 = denoised_1.take();
            denoised_1 = Some(denoised);
            h_2 = h_1;
            h_1 = h;
        }
        Ok(x)
    }
}
