//! Heun++ (ComfyUI's `sample_heunpp2`, from Carzit's sd-webui-samplers-scheduler): each step
//! averages the slopes at up to three points ahead (this sigma, the next, the one after),
//! weighted by those sigmas over the schedule's first; Heun's two points for the step before
//! last and Euler for the last. No churn (ComfyUI's defaults).
use tch::Tensor;

use super::{check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler};
use crate::error::Result;

pub struct HeunPp2;

impl Sampler for HeunPp2 {
    fn name(&self) -> &'static str {
        "heunpp2"
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
        let Some(&sigma_end) = sigmas.last() else {
            return Ok(x);
        };
        let slope = |x: &Tensor, sigma: f64| -> Result<Tensor> {
            let denoised = denoise_checked(denoiser, x, sigma)?;
            Ok((x - denoised) / sigma)
        };
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let denoised = denoise_checked(denoiser, &x, sigma)?;
            let d = (&x - &denoised) / sigma;
            let dt = sigma_next - sigma;
            x = if sigma_next == sigma_end {
                &x + d * dt
            } else if sigmas[i + 2] == sigma_end {
                let x_2 = &x + &d * dt;
                let d_2 = slope(&x_2, sigma_next)?;
                let w2 = sigma_next / (2.0 * sigmas[0]);
                let w1 = 1.0 - w2;
                &x + (d * w1 + d_2 * w2) * dt
            } else {
                let sigma_after = sigmas[i + 2];
                let x_2 = &x + &d * dt;
                let d_2 = slope(&x_2, sigma_next)?;
                let x_3 = &x_2 + &d_2 * (sigma_after - sigma_next);
                let d_3 = slope(&x_3, sigma_after)?;
                let w = 3.0 * sigmas[0];
                let (w2, w3) = (sigma_next / w, sigma_after / w);
                let w1 = 1.0 - w2 - w3;
                &x + (d * w1 + d_2 * w2 + d_3 * w3) * dt
            };
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}
