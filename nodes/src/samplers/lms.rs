//! Linear multistep sampler of order 4 (k-diffusion `sample_lms`): each step integrates the
//! Lagrange polynomial through the last derivatives over [sigma, sigma_next]. k-diffusion
//! integrates it with scipy's adaptive quadrature; the polynomial has degree <= 3, so 4-point
//! Gauss-Legendre quadrature is exact.
use std::collections::VecDeque;

use tch::Tensor;

use super::{check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler};
use crate::error::Result;

const ORDER: usize = 4;

pub struct Lms;

/// Gauss-Legendre nodes and weights on [-1, 1], exact for polynomials of degree <= 7.
const GAUSS_NODES: [f64; 4] = [
    -0.861_136_311_594_052_6,
    -0.339_981_043_584_856_3,
    0.339_981_043_584_856_3,
    0.861_136_311_594_052_6,
];
const GAUSS_WEIGHTS: [f64; 4] = [
    0.347_854_845_137_453_85,
    0.652_145_154_862_546_1,
    0.652_145_154_862_546_1,
    0.347_854_845_137_453_85,
];

/// k-diffusion's `linear_multistep_coeff(order, t, i, j)`: the integral over [t[i], t[i+1]] of
/// the Lagrange basis polynomial of node t[i - j] among t[i], ..., t[i - order + 1].
pub fn linear_multistep_coeff(order: usize, t: &[f64], i: usize, j: usize) -> f64 {
    let basis = |tau: f64| {
        (0..order)
            .filter(|k| *k != j)
            .map(|k| (tau - t[i - k]) / (t[i - j] - t[i - k]))
            .product::<f64>()
    };
    let (a, b) = (t[i], t[i + 1]);
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    half * GAUSS_NODES
        .iter()
        .zip(GAUSS_WEIGHTS)
        .map(|(x, w)| w * basis(mid + half * x))
        .sum::<f64>()
}

impl Sampler for Lms {
    fn name(&self) -> &'static str {
        "lms"
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
        let mut derivatives: VecDeque<Tensor> = VecDeque::new();
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let denoised = denoise_checked(denoiser, &x, sigma)?;
            derivatives.push_back((&x - &denoised) / sigma);
            if derivatives.len() > ORDER {
                derivatives.pop_front();
            }
            if sigma_next == 0.0 {
                x = denoised.shallow_clone();
            } else {
                let order = (i + 1).min(ORDER);
                let mut step = x.zeros_like();
                for (j, d) in derivatives.iter().rev().enumerate().take(order) {
                    step += d * linear_multistep_coeff(order, sigmas, i, j);
                }
                x = &x + step;
            }
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_integrate_the_lagrange_basis_exactly() {
        let t = [10.0, 6.0, 3.0, 1.5, 0.5];
        // Order 1: the integral of 1 over the step.
        assert!((linear_multistep_coeff(1, &t, 0, 0) + 4.0).abs() < 1e-12);
        // The basis sums to 1, so the coefficients sum to the step length.
        let sum: f64 = (0..4).map(|j| linear_multistep_coeff(4, &t, 3, j)).sum();
        assert!((sum - (t[4] - t[3])).abs() < 1e-12, "{sum}");
    }
}
