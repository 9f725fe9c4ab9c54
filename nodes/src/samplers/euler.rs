//! Euler, Euler ancestral and DDIM samplers (k-diffusion `sample_euler`,
//! `sample_euler_ancestral`; Karras et al. 2022, Algorithm 2 without churn). DDIM with eta 0 is
//! the Euler method of the same ODE (Song et al. 2021; Karras et al. 2022, sec. 3), so `ddim` is
//! Euler run on whatever sigmas it is given (ComfyUI does the same; use `ddim_uniform` sigmas).
use tch::Tensor;

use super::{
    ancestral_step_eta, check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler,
};
use crate::error::Result;

/// First-order deterministic sampler: `x += (x - x0) / sigma * (sigma_next - sigma)`.
pub struct Euler;

/// [`Euler`] under the name ddim.
pub struct Ddim;

/// Euler to `sigma_down`, then fresh noise of size `sigma_up` (eta = 1).
pub struct EulerAncestral;

fn euler_loop(
    name: &str,
    denoiser: &dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    hooks: &mut Hooks<'_>,
) -> Result<Tensor> {
    check_sigmas(name, sigmas)?;
    let total = sigmas.len().saturating_sub(1);
    for i in 0..total {
        hooks.check_cancelled()?;
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = denoise_checked(denoiser, &x, sigma)?;
        let derivative = (&x - &denoised) / sigma;
        x = &x + derivative * (sigma_next - sigma);
        hooks.step_done(i, total, &x, &denoised);
    }
    Ok(x)
}

impl Sampler for Euler {
    fn name(&self) -> &'static str {
        "euler"
    }

    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        _noise: &mut dyn NoiseSource,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor> {
        euler_loop(self.name(), denoiser, x, sigmas, hooks)
    }
}

impl Sampler for Ddim {
    fn name(&self) -> &'static str {
        "ddim"
    }

    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        _noise: &mut dyn NoiseSource,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor> {
        euler_loop(self.name(), denoiser, x, sigmas, hooks)
    }
}

impl Sampler for EulerAncestral {
    fn name(&self) -> &'static str {
        "euler_ancestral"
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
            let derivative = (&x - &denoised) / sigma;
            x = &x + derivative * (sigma_down - sigma);
            if sigma_next > 0.0 {
                x = &x + noise.noise(i, &x)? * sigma_up;
            }
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}
