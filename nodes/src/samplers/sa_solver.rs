//! SA-Solver (Xue et al. 2023, "SA-Solver: Stochastic Adams solver for fast sampling of
//! diffusion models", arXiv 2309.05019; ComfyUI's `sample_sa_solver` and
//! `sample_sa_solver_pece`): a stochastic Adams predictor of order 3 and corrector of order 4
//! in half-log-SNR time, with data prediction. Stochastic (tau 1) while sigma lies between the
//! schedule's 20 % and 80 % points, deterministic outside; the orders drop near the end.
//! The step noise is the sampler's sequential draws (k-diffusion's `default_noise_sampler`).
use std::collections::VecDeque;

use tch::Tensor;

use super::{
    check_sigmas, denoise_checked, Denoiser, DiscreteSchedule, Hooks, NoiseSource, Sampler,
};
use crate::error::{ModelError, Result};

const PREDICTOR_ORDER: usize = 3;
const CORRECTOR_ORDER: usize = 4;

/// `pece` false is `sa_solver` (predict, evaluate, correct: the corrected state reuses the
/// evaluation of the prediction); true is `sa_solver_pece` (the corrected state is evaluated
/// again, one more model call a step).
pub struct SaSolver {
    pub pece: bool,
}

/// The half-log-SNR of a variance-exploding sigma (eps and v models).
fn lambda_of(sigma: f64) -> f64 {
    -sigma.ln()
}

/// ln(n!) for the small n of the solver orders.
fn ln_factorial(n: usize) -> f64 {
    (1..=n).map(|k| (k as f64).ln()).sum()
}

/// (1 + tau^2) times the integral of e^((1 + tau^2) x) x^p from `s` to `t`, with
/// e^((1 + tau^2) t) factored out, for p = 0..order, by integration by parts (each power
/// reduces to the one below it).
fn exponential_coeffs(s: f64, t: f64, order: usize, tau: f64) -> Vec<f64> {
    let tau_mul = 1.0 + tau * tau;
    let h = t - s;
    let decay = (-tau_mul * h).exp();
    let product: Vec<f64> = (0..order)
        .map(|p| t.powi(p as i32) - s.powi(p as i32) * decay)
        .collect();
    (0..order)
        .map(|p| {
            (0..=p)
                .map(|q| {
                    let depth = (p - q) as f64;
                    let mut log_coeff = ln_factorial(p) - ln_factorial(q);
                    if tau > 0.0 {
                        log_coeff -= depth * tau_mul.ln();
                    }
                    let sign = if (p - q) % 2 == 0 { 1.0 } else { -1.0 };
                    log_coeff.exp() * sign * product[q]
                })
                .sum()
        })
        .collect()
}

/// Solves `a x = b` for a small dense system by Gaussian elimination with partial pivoting;
/// `None` when it is singular (two equal lambdas).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col] == 0.0 || !a[pivot][col].is_finite() {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let factor = a[row][col] / a[col][col];
            let (upper, lower) = a.split_at_mut(row);
            for (entry, pivot_entry) in lower[0].iter_mut().zip(&upper[col]).skip(col) {
                *entry -= factor * pivot_entry;
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    Some(x)
}

/// The Adams coefficients b_k of one predictor or corrector step from `lambda_s` to
/// `lambda_t` (eqs. 15 and 18): the exponentially weighted integrals of the Lagrange basis
/// through `lambdas`, times alpha_t = sigma_t e^(lambda_t).
fn adams_coeffs(
    sigma_t: f64,
    lambdas: &[f64],
    lambda_s: f64,
    lambda_t: f64,
    tau: f64,
) -> Result<Vec<f64>> {
    let order = lambdas.len();
    let integrals = exponential_coeffs(lambda_s, lambda_t, order, tau);
    // The transposed Vandermonde matrix: row p holds every lambda to the power p.
    let vandermonde: Vec<Vec<f64>> = (0..order)
        .map(|p| lambdas.iter().map(|l| l.powi(p as i32)).collect())
        .collect();
    let lagrange = solve(vandermonde, integrals).ok_or_else(|| {
        ModelError::Other(format!(
            "sa_solver: the half-log-SNR points {lambdas:?} repeat, so no Adams step can be made; \
             use a schedule with distinct sigmas"
        ))
    })?;
    let alpha_t = sigma_t * lambda_t.exp();
    Ok(lagrange.into_iter().map(|b| b * alpha_t).collect())
}

/// `sum_k preds[k] * coeffs[k]`, over the newest `coeffs.len()` predictions in order.
fn combine(preds: &VecDeque<Tensor>, coeffs: &[f64]) -> Tensor {
    let first = preds.len() - coeffs.len();
    let mut terms = preds.iter().skip(first).zip(coeffs);
    let (pred, coeff) = terms.next().expect("at least one coefficient");
    terms.fold(pred * *coeff, |sum, (pred, coeff)| sum + pred * *coeff)
}

impl Sampler for SaSolver {
    fn name(&self) -> &'static str {
        if self.pece {
            "sa_solver_pece"
        } else {
            "sa_solver"
        }
    }

    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor> {
        check_sigmas(self.name(), sigmas)?;
        if sigmas.len() <= 1 {
            return Ok(x);
        }
        let percent_to_sigma = |percent: f64| {
            denoiser
                .percent_to_sigma(percent)
                .unwrap_or_else(|| DiscreteSchedule::stable_diffusion().percent_to_sigma(percent))
        };
        // Stochastic (tau 1) inside this sigma interval, an ODE step outside it.
        let (start_sigma, end_sigma) = (percent_to_sigma(0.2), percent_to_sigma(0.8));
        let tau_of = |sigma: f64| {
            if start_sigma >= sigma && sigma >= end_sigma {
                1.0
            } else {
                0.0
            }
        };
        let lambdas: Vec<f64> = sigmas.iter().map(|&s| lambda_of(s)).collect();
        let total = sigmas.len() - 1;
        let max_order = PREDICTOR_ORDER.max(CORRECTOR_ORDER);
        let lower_order_to_end = sigmas[total] == 0.0;

        let mut x_pred = x;
        let mut x = x_pred.shallow_clone();
        let mut h = 0.0;
        let mut tau = 0.0;
        // The noise the last predictor step added, added again to the corrected state.
        let mut step_noise: Option<Tensor> = None;
        let mut preds: VecDeque<Tensor> = VecDeque::new();
        let mut draws = 0;
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let mut denoised = denoise_checked(denoiser, &x_pred, sigma)?;
            preds.push_back(denoised.shallow_clone());
            if preds.len() > max_order {
                preds.pop_front();
            }
            let mut predictor_order = PREDICTOR_ORDER.min(preds.len());
            let mut corrector_order = if i == 0 || (sigma_next == 0.0 && !self.pece) {
                0
            } else {
                CORRECTOR_ORDER.min(preds.len())
            };
            if lower_order_to_end {
                predictor_order = predictor_order.min(total - 1 - i);
                corrector_order = corrector_order.min(total - i);
            }

            if corrector_order == 0 {
                x = x_pred.shallow_clone();
            } else {
                let coeffs = adams_coeffs(
                    sigma,
                    &lambdas[i + 1 - corrector_order..=i],
                    lambdas[i - 1],
                    lambdas[i],
                    tau,
                )?;
                x = &x * (sigma / sigmas[i - 1] * (-(tau * tau) * h).exp())
                    + combine(&preds, &coeffs);
                if tau > 0.0 {
                    if let Some(step_noise) = &step_noise {
                        x = &x + step_noise;
                    }
                }
                if self.pece {
                    denoised = denoise_checked(denoiser, &x, sigma)?;
                    *preds.back_mut().expect("pushed above") = denoised.shallow_clone();
                }
            }

            if sigma_next == 0.0 {
                x_pred = denoised.shallow_clone();
            } else {
                tau = tau_of(sigma_next);
                let coeffs = adams_coeffs(
                    sigma_next,
                    &lambdas[i + 1 - predictor_order..=i],
                    lambdas[i],
                    lambdas[i + 1],
                    tau,
                )?;
                h = lambdas[i + 1] - lambdas[i];
                x_pred =
                    &x * (sigma_next / sigma * (-(tau * tau) * h).exp()) + combine(&preds, &coeffs);
                if tau > 0.0 {
                    let drawn = noise.noise(draws, &x)?;
                    draws += 1;
                    let scaled = drawn * (sigma_next * (-(-2.0 * tau * tau * h).exp_m1()).sqrt());
                    x_pred = &x_pred + &scaled;
                    step_noise = Some(scaled);
                }
            }
            hooks.step_done(i, total, &x_pred, &denoised);
        }
        Ok(x_pred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adams_coefficients_of_order_one_are_the_exponential_euler_step() {
        // One point: b = alpha_t * (1 - e^-(1+tau^2) h) (data-prediction DDIM/Euler weight).
        let (sigma_s, sigma_t, tau) = (2.0_f64, 1.0_f64, 1.0);
        let (ls, lt) = (lambda_of(sigma_s), lambda_of(sigma_t));
        let b = adams_coeffs(sigma_t, &[ls], ls, lt, tau).unwrap();
        let expected = sigma_t * lt.exp() * (1.0 - (-(1.0 + tau * tau) * (lt - ls)).exp());
        assert!((b[0] - expected).abs() < 1e-12, "{b:?} vs {expected}");
    }

    #[test]
    fn adams_coefficients_integrate_polynomials_exactly() {
        // The coefficients of any order sum to the order-one weight: the Lagrange basis sums
        // to 1 at every point.
        let lambdas = [-2.0, -1.5, -1.1, -0.7];
        let (ls, lt) = (-1.1, -0.4);
        for tau in [0.0, 1.0] {
            let one = adams_coeffs(0.7, &lambdas[3..], ls, lt, tau).unwrap()[0];
            for order in 2..=4 {
                let b = adams_coeffs(0.7, &lambdas[4 - order..], ls, lt, tau).unwrap();
                let sum: f64 = b.iter().sum();
                assert!(
                    (sum - one).abs() < 1e-10,
                    "order {order} tau {tau}: {sum} vs {one}"
                );
            }
        }
    }

    #[test]
    fn repeated_lambdas_are_an_error_not_a_panic() {
        let err = adams_coeffs(0.5, &[-1.0, -1.0], -1.0, -0.5, 0.0).unwrap_err();
        assert!(err.to_string().contains("repeat"), "{err}");
    }
}
