//! Improved pseudo numerical methods (iPNDM, Zhang & Chen 2023; ComfyUI's `sample_ipndm` and
//! `sample_ipndm_v`): Adams-Bashforth steps of up to fourth order on the derivative
//! (x - x0) / sigma, and the last step to sigma 0 landing on x0. `ipndm` uses the fixed
//! coefficients of equally spaced steps, `ipndm_v` the coefficients of the actual step sizes.
use std::collections::VecDeque;

use tch::Tensor;

use super::{check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler};
use crate::error::Result;

const MAX_ORDER: usize = 4;

pub struct Ipndm;

/// iPNDM with variable step sizes (the `_v` of ComfyUI's name).
pub struct IpndmV;

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

/// The multistep update of `ipndm_v`: `dt * sum(coeff_k * d_k)` over the current derivative
/// and the history (newest first), coefficients from the step sizes h_n = t_next - t_cur,
/// h_n_1 = t_cur - t_prev, ... (diff-sampler's variable-step iPNDM).
fn variable_step_update(
    sigmas: &[f64],
    i: usize,
    order: usize,
    d_cur: &Tensor,
    back: &dyn Fn(usize) -> Tensor,
) -> Tensor {
    let dt = sigmas[i + 1] - sigmas[i];
    let h_n = dt;
    match order {
        1 => d_cur * dt,
        2 => {
            let h_n_1 = sigmas[i] - sigmas[i - 1];
            let coeff1 = (2.0 + h_n / h_n_1) / 2.0;
            let coeff2 = -(h_n / h_n_1) / 2.0;
            (d_cur * coeff1 + back(1) * coeff2) * dt
        }
        3 => {
            let h_n_1 = sigmas[i] - sigmas[i - 1];
            let h_n_2 = sigmas[i - 1] - sigmas[i - 2];
            let temp = (1.0
                - h_n / (3.0 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2)))
                / 2.0;
            let coeff1 = (2.0 + h_n / h_n_1) / 2.0 + temp;
            let coeff2 = -(h_n / h_n_1) / 2.0 - (1.0 + h_n_1 / h_n_2) * temp;
            let coeff3 = temp * h_n_1 / h_n_2;
            (d_cur * coeff1 + back(1) * coeff2 + back(2) * coeff3) * dt
        }
        _ => {
            let h_n_1 = sigmas[i] - sigmas[i - 1];
            let h_n_2 = sigmas[i - 1] - sigmas[i - 2];
            let h_n_3 = sigmas[i - 2] - sigmas[i - 3];
            let temp1 = (1.0
                - h_n / (3.0 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2)))
                / 2.0;
            let temp2 = ((1.0 - h_n / (3.0 * (h_n + h_n_1))) / 2.0
                + (1.0 - h_n / (2.0 * (h_n + h_n_1))) * h_n / (6.0 * (h_n + h_n_1 + h_n_2)))
                * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2))
                / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3));
            let ratio = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3));
            let coeff1 = (2.0 + h_n / h_n_1) / 2.0 + temp1 + temp2;
            let coeff2 = -(h_n / h_n_1) / 2.0
                - (1.0 + h_n_1 / h_n_2) * temp1
                - (1.0 + h_n_1 / h_n_2 + ratio) * temp2;
            let coeff3 =
                temp1 * h_n_1 / h_n_2 + (h_n_1 / h_n_2 + ratio * (1.0 + h_n_2 / h_n_3)) * temp2;
            let coeff4 = -temp2 * ratio * h_n_1 / h_n_2;
            (d_cur * coeff1 + back(1) * coeff2 + back(2) * coeff3 + back(3) * coeff4) * dt
        }
    }
}

impl Sampler for IpndmV {
    fn name(&self) -> &'static str {
        "ipndm_v"
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
        let mut history: VecDeque<Tensor> = VecDeque::new();
        for i in 0..total {
            hooks.check_cancelled()?;
            let (t_cur, t_next) = (sigmas[i], sigmas[i + 1]);
            let denoised = denoise_checked(denoiser, &x, t_cur)?;
            let d_cur = (&x - &denoised) / t_cur;
            let order = (i + 1).min(MAX_ORDER);
            x = if t_next == 0.0 {
                denoised.shallow_clone()
            } else {
                let back = |k: usize| history[history.len() - k].shallow_clone();
                &x + variable_step_update(sigmas, i, order, &d_cur, &back)
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
