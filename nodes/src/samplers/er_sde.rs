//! ER-SDE-Solver-3 (Cui et al. 2023, extended reverse-time SDE in variance-preserving form;
//! ComfyUI's `sample_er_sde`): a first-order step in the ER-SDE's lambda = sigma / alpha with
//! ComfyUI's noise scaler, corrected by the first and second divided differences of the
//! predictions (their integrals taken on 200 points, as ComfyUI does, in float32), plus the
//! SDE's noise (sequential step noise).
use tch::Tensor;

use super::{check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler};
use crate::error::Result;

pub struct ErSde;

/// Stages used at most (ComfyUI's `max_stage`).
const MAX_STAGE: usize = 3;

/// Points of the integrals' Riemann sums.
const INTEGRATION_POINTS: usize = 200;

/// ComfyUI's default ER-SDE noise scaler, `x (e^(x^0.3) + 10)`.
fn noise_scaler(x: f64) -> f64 {
    x * (x.powf(0.3).exp() + 10.0)
}

fn noise_scaler_f32(x: f32) -> f32 {
    x * (x.powf(0.3).exp() + 10.0)
}

/// The sums `sum 1 / scaler(l)` and `sum (l - lambda_s) / scaler(l)` over the points `l`
/// from `lambda_t` towards `lambda_s`, each times the point spacing. ComfyUI takes the points
/// in float32 (a float32 `arange` promotes the lambdas), so they are rounded alike here.
fn integrals(lambda_s: f64, lambda_t: f64) -> (f64, f64) {
    let spacing = -(lambda_t - lambda_s) / INTEGRATION_POINTS as f64;
    let (start, spacing32, lambda_s32) = (lambda_t as f32, spacing as f32, lambda_s as f32);
    let (mut plain, mut weighted) = (0f64, 0f64);
    for k in 0..INTEGRATION_POINTS {
        let point = start + k as f32 * spacing32;
        let scaled = noise_scaler_f32(point);
        plain += f64::from(1.0 / scaled);
        weighted += f64::from((point - lambda_s32) / scaled);
    }
    (plain * spacing, weighted * spacing)
}

impl Sampler for ErSde {
    fn name(&self) -> &'static str {
        "er_sde"
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
        // lambda = sigma / alpha = exp(-half-log-SNR), rounded as ComfyUI computes it.
        let lambdas: Vec<f64> = sigmas.iter().map(|s| s.ln().exp()).collect();
        let mut old_denoised: Option<Tensor> = None;
        let mut old_difference: Option<Tensor> = None;
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let denoised = denoise_checked(denoiser, &x, sigma)?;
            let stage = MAX_STAGE.min(i + 1);
            if sigma_next == 0.0 {
                x = denoised.shallow_clone();
            } else {
                let (lambda_s, lambda_t) = (lambdas[i], lambdas[i + 1]);
                let alpha_s = sigma / lambda_s;
                let alpha_t = sigma_next / lambda_t;
                let r_alpha = alpha_t / alpha_s;
                let r = noise_scaler(lambda_t) / noise_scaler(lambda_s);
                x = &x * (r_alpha * r) + &denoised * (alpha_t * (1.0 - r));
                if stage >= 2 {
                    if let Some(old) = &old_denoised {
                        let dt = lambda_t - lambda_s;
                        let (s, s_u) = integrals(lambda_s, lambda_t);
                        let difference = (&denoised - old) / (lambda_s - lambdas[i - 1]);
                        x = &x + &difference * (alpha_t * (dt + s * noise_scaler(lambda_t)));
                        if stage >= 3 {
                            if let Some(old_difference) = &old_difference {
                                let second = (&difference - old_difference)
                                    / ((lambda_s - lambdas[i - 2]) / 2.0);
                                x = &x
                                    + second
                                        * (alpha_t
                                            * (dt * dt / 2.0 + s_u * noise_scaler(lambda_t)));
                            }
                        }
                        old_difference = Some(difference);
                    }
                }
                let spread = (lambda_t * lambda_t - lambda_s * lambda_s * r * r).sqrt();
                let spread = if spread.is_nan() { 0.0 } else { spread };
                x = &x + noise.noise(i, &x)? * (alpha_t * spread);
            }
            old_denoised = Some(denoised.shallow_clone());
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}
