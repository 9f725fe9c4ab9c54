//! RES multistep (Zhang et al. 2023, "Improved order analysis and design of exponential
//! integrator for diffusion models", arXiv 2308.02157; ComfyUI's `res_multistep` and
//! `res_multistep_ancestral`): second-order exponential multistep steps in t = -ln(sigma), the
//! first (and the last, to sigma 0) an Euler step; eta 1 adds ancestral noise.
use tch::Tensor;

use super::{
    ancestral_step_eta, check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler,
};
use crate::error::Result;

/// `eta` 0 is `res_multistep`, 1 is `res_multistep_ancestral`.
pub struct ResMultistep {
    pub eta: f64,
}

/// phi_1(t) = (e^t - 1) / t.
fn phi1(t: f64) -> f64 {
    t.exp_m1() / t
}

/// phi_2(t) = (phi_1(t) - 1) / t.
fn phi2(t: f64) -> f64 {
    (phi1(t) - 1.0) / t
}

/// torch.nan_to_num(v, nan=0): NaN to 0, infinities to the largest finite values.
fn nan_to_zero(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(f64::MIN, f64::MAX)
    }
}

impl Sampler for ResMultistep {
    fn name(&self) -> &'static str {
        if self.eta == 0.0 {
            "res_multistep"
        } else {
            "res_multistep_ancestral"
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
        let mut old: Option<(Tensor, f64)> = None;
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let denoised = denoise_checked(denoiser, &x, sigma)?;
            let (sigma_down, sigma_up) = ancestral_step_eta(sigma, sigma_next, self.eta);
            x = match &old {
                Some((old_denoised, old_sigma_down)) if sigma_down != 0.0 => {
                    let t_fn = |s: f64| -s.ln();
                    let (t, t_old, t_next, t_prev) = (
                        t_fn(sigma),
                        t_fn(*old_sigma_down),
                        t_fn(sigma_down),
                        t_fn(sigmas[i - 1]),
                    );
                    let h = t_next - t;
                    let c2 = (t_prev - t_old) / h;
                    let (phi1_val, phi2_val) = (phi1(-h), phi2(-h));
                    let b1 = nan_to_zero(phi1_val - phi2_val / c2);
                    let b2 = nan_to_zero(phi2_val / c2);
                    &x * (-h).exp() + (&denoised * b1 + old_denoised * b2) * h
                }
                _ => {
                    let d = (&x - &denoised) / sigma;
                    &x + d * (sigma_down - sigma)
                }
            };
            if sigma_next > 0.0 && sigma_up > 0.0 {
                x = &x + noise.noise(i, &x)? * sigma_up;
            }
            hooks.step_done(i, total, &x, &denoised);
            old = Some((denoised, sigma_down));
        }
        Ok(x)
    }
}
