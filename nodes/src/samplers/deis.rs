//! DEIS (Zhang & Chen 2023, "Fast sampling of diffusion models with exponential integrator";
//! ComfyUI's `sample_deis`, 'tab' mode, order 3): multistep steps on the derivative
//! (x - x0) / sigma whose coefficients integrate the Lagrange polynomial through the previous
//! steps against the VP-SDE weight, in the VP time of an EDM-style schedule (sigma 0.002..80).
//!
//! Like ComfyUI, the integral is a 10,000-point Riemann sum and the VP constants are computed in
//! float32; ComfyUI sums in float32, this in float64, so coefficients agree to about 1e-6.
use std::collections::VecDeque;

use tch::Tensor;

use super::{check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler};
use crate::error::Result;

const MAX_ORDER: usize = 3;
const INTEGRATION_POINTS: usize = 10_000;

pub struct Deis;

/// The VP-SDE (beta_0, beta_1) matching sigma 0.002..80 at epsilon 1e-3, in float32 as
/// ComfyUI's `edm2t` computes them.
fn vp_betas() -> (f32, f32) {
    let (sigma_min, sigma_max, epsilon) = (0.002f32, 80.0f32, 1e-3f32);
    let low = (sigma_min * sigma_min + 1.0).ln();
    let high = (sigma_max * sigma_max + 1.0).ln();
    let beta_d = 2.0 * (low / epsilon - high) / ((1e-3f64 - 1.0) as f32);
    let beta_min = high - 0.5 * beta_d;
    (beta_min, beta_d + beta_min)
}

/// ComfyUI's `get_deis_coeff_list(sigmas, max_order, deis_mode='tab')`: per step, the
/// coefficients of the current and previous derivatives (empty for first-order steps).
pub fn deis_coefficients(sigmas: &[f64], max_order: usize) -> Vec<Vec<f64>> {
    let (beta_0, beta_1) = vp_betas();
    let beta_d = beta_1 - beta_0;
    let (b_min_sq, two_b_d) = (f64::from(beta_0 * beta_0), f64::from(2.0 * beta_d));
    let t_steps: Vec<f64> = sigmas
        .iter()
        .map(|s| {
            ((b_min_sq + two_b_d * (s * s + 1.0).ln()).sqrt() - f64::from(beta_0))
                / f64::from(beta_d)
        })
        .collect();
    let (b0, bd) = (f64::from(beta_0), f64::from(beta_1) - f64::from(beta_0));
    let integrand = |tau: f64| {
        let alpha = (-0.5 * tau * tau * bd - tau * b0).exp();
        let d_log_alpha = -(tau * bd + b0);
        -0.5 * d_log_alpha / (alpha * (1.0 - alpha)).sqrt()
    };
    (0..t_steps.len().saturating_sub(1))
        .map(|i| {
            let order = (i + 1).min(max_order);
            if order == 1 {
                return Vec::new();
            }
            let (t_cur, t_next) = (t_steps[i], t_steps[i + 1]);
            let prev: Vec<f64> = (0..order).map(|k| t_steps[i - k]).collect();
            let n = INTEGRATION_POINTS;
            let dtau = (t_next - t_cur) / n as f64;
            let taus: Vec<f64> = super::schedules::linspace(t_cur, t_next, n);
            let weights: Vec<f64> = taus.iter().map(|t| integrand(*t)).collect();
            (0..order)
                .map(|j| {
                    let sum: f64 = taus
                        .iter()
                        .zip(&weights)
                        .map(|(tau, w)| {
                            let poly: f64 = (0..order)
                                .filter(|k| *k != j)
                                .map(|k| (tau - prev[k]) / (prev[j] - prev[k]))
                                .product();
                            w * poly
                        })
                        .sum();
                    sum * dtau
                })
                .collect()
        })
        .collect()
}

impl Sampler for Deis {
    fn name(&self) -> &'static str {
        "deis"
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
        let coefficients = deis_coefficients(sigmas, MAX_ORDER);
        let total = sigmas.len().saturating_sub(1);
        let mut history: VecDeque<Tensor> = VecDeque::new();
        for i in 0..total {
            hooks.check_cancelled()?;
            let (t_cur, t_next) = (sigmas[i], sigmas[i + 1]);
            let denoised = denoise_checked(denoiser, &x, t_cur)?;
            let d_cur = (&x - &denoised) / t_cur;
            let order = if t_next <= 0.0 {
                1
            } else {
                (i + 1).min(MAX_ORDER)
            };
            x = if order == 1 {
                &x + &d_cur * (t_next - t_cur)
            } else {
                let c = &coefficients[i];
                let mut next = &x + &d_cur * c[0];
                for (k, coefficient) in c.iter().enumerate().skip(1) {
                    next += &history[history.len() - k] * *coefficient;
                }
                next
            };
            hooks.step_done(i, total, &x, &denoised);
            if history.len() == MAX_ORDER - 1 {
                history.pop_front();
            }
            history.push_back(d_cur);
        }
        Ok(x)
    }
}
