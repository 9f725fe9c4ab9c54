//! Improved pseudo numerical methods (iPNDM, Zhang & Chen 2023; ComfyUI's `sample_ipndm`):
//! Adams-Bashforth steps of up to fourth order on the derivative (x - x0) / sigma, with the
//! fixed coefficients of equally spaced steps, and the last step to sigma 0 landing on x0.
use std::collections::VecDeque;

use tch::Tensor;

use super::{check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler};
use crate::error::Result;

const MAX_ORDER: usize = 4;

pub struct Ipndm;

impl Sampler for Ipndm {
    fn name(&self) -> &'static str {
        "ipndm"
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
        // Earlier derivatives, newest last (at most MAX_ORDER - 1).
        let mut history: VecDeque<Tensor> = VecDeque::new();
        for i in 0..total {
            hooks.check_cancelled()?;
            let (t_cur, t_next) = (sigmas[i], sigmas[i + 1]);
            let denoised = denoise_checked(denoiser, &x, t_cur)?;
            let d_cur = (&x - &denoised) / t_cur;
            let dt = t_next - t_cur;
            let order = (i + 1).min(MAX_ORDER);
            let back = |k: usize| &history[history.len() - k];
            x = if t_next == 0.0 {
                denoised.shallow_clone()
            } else {
                match order {
                    1 => &x + &d_cur * dt,
                    2 => &x + (&d_cur * 3.0 - back(1)) * dt / 2.0,
                    3 => &x + (&d_cur * 23.0 - back(1) * 16.0 + back(2) * 5.0) * dt / 12.0,
                    _ => {
                        &x + (&d_cur * 55.0 - back(1) * 59.0 + back(2) * 37.0 - back(3) * 9.0) * dt
                            / 24.0
                    }
                }
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
