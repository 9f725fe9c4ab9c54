//! RES multistep (Zhang et al. 2023, "Improved order analysis and design of exponential
//! integrator for diffusion models", arXiv 2308.02157; ComfyUI's `res_multistep` and
//! `res_multistep_ancestral`): second-order exponential multistep steps in t = -ln(sigma), the
//! first (and the last, to sigma 0) an Euler step; eta 1 adds ancestral noise. The CFG++
//! variants (`res_multistep_cfg_pp`, `res_multistep_ancestral_cfg_pp`) step along the
//! unconditional prediction and add the guidance difference to the latent instead.
use tch::Tensor;

use super::{
    ancestral_step_eta, check_sigmas, denoise_checked, denoise_checked_with_uncond, Denoiser,
    Hooks, NoiseSource, Sampler,
};
use crate::error::Result;

/// `eta` 0 is `res_multistep`, 1 is `res_multistep_ancestral`; `cfg_pp` their CFG++ forms.
pub struct ResMultistep {
    pub eta: f64,
    pub cfg_pp: bool,
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
        match (self.eta == 0.0, self.cfg_pp) {
            (true, false) => "res_multistep",
            (true, true) => "res_multistep_cfg_pp",
            (false, false) => "res_multistep_ancestral",
            (false, true) => "res_multistep_ancestral_cfg_pp",
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
            // CFG++ steps along the unconditional prediction (and keeps it as the history).
            let (denoised, steered) = if self.cfg_pp {
                denoise_checked_with_uncond(denoiser, &x, sigma)?
            } else {
                let denoised = denoise_checked(denoiser, &x, sigma)?;
                (denoised.shallow_clone(), denoised)
            };
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
                    let x = if self.cfg_pp {
                        &x + (&denoised - &steered)
                    } else {
                        x.shallow_clone()
                    };
                    &x * (-h).exp() + (&steered * b1 + old_denoised * b2) * h
                }
                _ if self.cfg_pp => {
                    let d = (&x - &steered) / sigma;
                    &denoised + d * sigma_down
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
            old = Some((steered, sigma_down));
        }
        Ok(x)
    }
}
