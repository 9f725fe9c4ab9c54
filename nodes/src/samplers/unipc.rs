//! UniPC (Zhao et al. 2023, "UniPC: a unified predictor-corrector framework for fast sampling
//! of diffusion models") as ComfyUI runs it (`uni_pc` = B(h) = h, `uni_pc_bh2` = B(h) = e^h - 1):
//! multistep data-prediction steps of order up to 3 in VP space (x / sqrt(1 + sigma^2)), each
//! corrected with the model output at its end point, which the next step reuses; lower orders
//! for the first and last steps. A final sigma of 0 is replaced by 0.001, as ComfyUI does.
use tch::Tensor;

use super::{check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler};
use crate::error::{ModelError, Result};

/// `bh2` selects B(h) = e^h - 1 (`uni_pc_bh2`) instead of B(h) = h (`uni_pc`).
pub struct UniPc {
    pub bh2: bool,
}

/// VP quantities of a k-diffusion sigma (ComfyUI's `SigmaConvert`).
fn log_alpha(sigma: f64) -> f64 {
    0.5 * (1.0 / (sigma * sigma + 1.0)).ln()
}

fn alpha(sigma: f64) -> f64 {
    log_alpha(sigma).exp()
}

fn std(sigma: f64) -> f64 {
    (1.0 - (2.0 * log_alpha(sigma)).exp()).sqrt()
}

fn lambda(sigma: f64) -> f64 {
    let lmc = log_alpha(sigma);
    lmc - 0.5 * (1.0 - (2.0 * lmc).exp()).ln()
}

/// Solves the small dense system `a x = b` (Gaussian elimination, partial pivoting).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|i, j| a[*i][col].abs().total_cmp(&a[*j][col].abs()))
            .unwrap_or(col);
        if a[pivot][col] == 0.0 || !a[pivot][col].is_finite() {
            return Err(ModelError::Other(
                "uni_pc: singular step-size system (repeated sigmas?)".into(),
            ));
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let factor = a[row][col] / a[col][col];
            let pivot_row = a[col].clone();
            for (k, value) in a[row].iter_mut().enumerate().skip(col) {
                *value -= factor * pivot_row[k];
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    Ok(x)
}

struct Run<'a> {
    denoiser: &'a dyn Denoiser,
    bh2: bool,
}

impl Run<'_> {
    /// The data prediction x0 of the VP-space latent `x` at `sigma` (and the denoised latent).
    fn model(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        // ComfyUI: eps = (x_k - D(x_k)) / sigma with x_k = x * sqrt(sigma^2 + 1), then
        // x0 = (x - std * eps) / alpha.
        let input = x * (sigma * sigma + 1.0).sqrt();
        let denoised = denoise_checked(self.denoiser, &input, sigma)?;
        let eps = (input - denoised) / sigma;
        Ok((x - eps * std(sigma)) / alpha(sigma))
    }

    /// One B(h) predictor(-corrector) step from the last of `t_prev` to `t`.
    fn update(
        &self,
        x: &Tensor,
        model_prev: &[Tensor],
        t_prev: &[f64],
        t: f64,
        order: usize,
        use_corrector: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let t_prev_0 = t_prev[t_prev.len() - 1];
        let model_prev_0 = &model_prev[model_prev.len() - 1];
        let (lambda_prev_0, lambda_t) = (lambda(t_prev_0), lambda(t));
        let (sigma_prev_0, sigma_t) = (std(t_prev_0), std(t));
        let alpha_t = log_alpha(t).exp();
        let h = lambda_t - lambda_prev_0;

        let mut rks = Vec::new();
        let mut d1s = Vec::new();
        for i in 1..order {
            let t_prev_i = t_prev[t_prev.len() - (i + 1)];
            let model_prev_i = &model_prev[model_prev.len() - (i + 1)];
            let rk = (lambda(t_prev_i) - lambda_prev_0) / h;
            rks.push(rk);
            d1s.push((model_prev_i - model_prev_0) / rk);
        }
        rks.push(1.0);

        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let b_h = if self.bh2 { hh.exp_m1() } else { hh };
        let mut r = Vec::new();
        let mut b = Vec::new();
        for i in 1..=order {
            r.push(
                rks.iter()
                    .map(|rk| rk.powi(i as i32 - 1))
                    .collect::<Vec<f64>>(),
            );
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }

        let rhos_p = if d1s.is_empty() {
            Vec::new()
        } else if order == 2 {
            vec![0.5]
        } else {
            let minor = r[..order - 1]
                .iter()
                .map(|row| row[..order - 1].to_vec())
                .collect();
            solve(minor, b[..order - 1].to_vec())?
        };

        let x_t_ = x * (sigma_t / sigma_prev_0) - model_prev_0 * (alpha_t * h_phi_1);
        let combine = |rhos: &[f64]| -> Option<Tensor> {
            d1s.iter()
                .zip(rhos)
                .map(|(d, rho)| d * *rho)
                .reduce(|a, b| a + b)
        };
        let x_t = match combine(&rhos_p) {
            Some(pred_res) => &x_t_ - pred_res * (alpha_t * b_h),
            None => x_t_.shallow_clone(),
        };
        if !use_corrector {
            return Ok((x_t, None));
        }
        let rhos_c = if order == 1 { vec![0.5] } else { solve(r, b)? };
        let model_t = self.model(&x_t, t)?;
        let d1_t = &model_t - model_prev_0;
        let last = rhos_c[rhos_c.len() - 1];
        let correction = match combine(&rhos_c[..rhos_c.len() - 1]) {
            Some(corr_res) => corr_res + d1_t * last,
            None => d1_t * last,
        };
        Ok((x_t_ - correction * (alpha_t * b_h), Some(model_t)))
    }
}

#[allow(clippy::needless_range_loop)] // indices follow ComfyUI's loop over timesteps
impl Sampler for UniPc {
    fn name(&self) -> &'static str {
        if self.bh2 {
            "uni_pc_bh2"
        } else {
            "uni_pc"
        }
    }

    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        _noise: &mut dyn NoiseSource,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor> {
        check_sigmas(self.name(), sigmas)?;
        if sigmas.len() < 2 {
            return Ok(x);
        }
        let mut ts = sigmas.to_vec();
        let last = ts.len() - 1;
        if ts[last] == 0.0 {
            ts[last] = 0.001;
        }
        let steps = ts.len() - 1;
        let order = 3.min(ts.len() - 2);
        let run = Run {
            denoiser,
            bh2: self.bh2,
        };
        let mut x = x / (1.0 + ts[0] * ts[0]).sqrt();
        let mut model_prev: Vec<Tensor> = Vec::new();
        let mut t_prev: Vec<f64> = Vec::new();
        let mut current_t = ts[0];
        for step_index in 0..steps {
            hooks.check_cancelled()?;
            if step_index == 0 {
                model_prev.push(run.model(&x, ts[0])?);
                t_prev.push(ts[0]);
            } else if step_index < order {
                let t = ts[step_index];
                let (next, model_x) = run.update(&x, &model_prev, &t_prev, t, step_index, true)?;
                x = next;
                model_prev.push(match model_x {
                    Some(m) => m,
                    None => run.model(&x, t)?,
                });
                t_prev.push(t);
                current_t = t;
            } else {
                let extra_final_step = usize::from(step_index == steps - 1);
                for step in step_index..=step_index + extra_final_step {
                    let t = ts[step];
                    let step_order = order.min(steps + 1 - step);
                    let use_corrector = step != steps;
                    let (next, model_x) =
                        run.update(&x, &model_prev, &t_prev, t, step_order, use_corrector)?;
                    x = next;
                    for i in 0..order.saturating_sub(1) {
                        t_prev[i] = t_prev[i + 1];
                        model_prev[i] = model_prev[i + 1].shallow_clone();
                    }
                    let end = t_prev.len() - 1;
                    t_prev[end] = t;
                    if step < steps {
                        model_prev[end] = match model_x {
                            Some(m) => m,
                            None => run.model(&x, t)?,
                        };
                    }
                    current_t = t;
                }
            }
            // Report the latent in k-diffusion space (x / alpha), as the other samplers do.
            let x_k = &x / alpha(current_t);
            hooks.step_done(step_index, steps, &x_k, &model_prev[model_prev.len() - 1]);
        }
        Ok(&x / alpha(ts[last]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_recovers_a_known_solution() {
        let a = vec![
            vec![1.0, 1.0, 1.0],
            vec![0.5, -0.7, 1.0],
            vec![0.25, 0.49, 1.0],
        ];
        let x = [0.3, -1.2, 2.0];
        let b = a
            .iter()
            .map(|row| row.iter().zip(&x).map(|(a, x)| a * x).sum())
            .collect();
        let solved = solve(a, b).unwrap();
        for (s, e) in solved.iter().zip(&x) {
            assert!((s - e).abs() < 1e-12);
        }
    }
}
