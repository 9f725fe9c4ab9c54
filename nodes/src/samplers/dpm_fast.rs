//! DPM-Solver (Lu et al. 2022) in k-diffusion's first form, as ComfyUI runs it: `dpm_fast`
//! takes as many model calls as the schedule has steps, in third-order steps evenly spaced in
//! log sigma (second and first order to finish), and `dpm_adaptive` chooses its own steps
//! with an embedded 2/3-order pair and a PID step-size controller. Both go from the
//! schedule's first sigma to its last above zero (ComfyUI's `ksampler` wrapper), so they
//! leave that much noise; neither adds noise (eta 0, ComfyUI's default).
use tch::{Kind, Tensor};

use super::{check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler};
use crate::error::{ModelError, Result};

pub struct DpmFast;

pub struct DpmAdaptive;

/// The noise prediction at time `t` (= -ln sigma), as k-diffusion's `DPMSolver.eps`.
fn eps_at(denoiser: &dyn Denoiser, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
    let denoised = denoise_checked(denoiser, x, sigma)?;
    Ok(((x - &denoised) / sigma, denoised))
}

/// The first and last sigma of the solve: the schedule's first, and its last above zero.
fn solve_range(name: &str, sigmas: &[f64]) -> Result<Option<(f64, f64)>> {
    check_sigmas(name, sigmas)?;
    if sigmas.len() < 2 {
        return Ok(None);
    }
    let last = sigmas[sigmas.len() - 1];
    let sigma_min = if last == 0.0 {
        sigmas[sigmas.len() - 2]
    } else {
        last
    };
    if sigma_min <= 0.0 {
        return Err(ModelError::Other(format!(
            "{name}: needs a schedule with a sigma above zero before its last, got {sigmas:?}"
        )));
    }
    Ok(Some((sigmas[0], sigma_min)))
}

/// `torch.linspace(start, end, steps)` in float32 (k-diffusion's time grid for dpm_fast).
fn linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

impl Sampler for DpmFast {
    fn name(&self) -> &'static str {
        "dpm_fast"
    }

    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        mut x: Tensor,
        sigmas: &[f64],
        _noise: &mut dyn NoiseSource,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor> {
        let Some((sigma_max, sigma_min)) = solve_range(self.name(), sigmas)? else {
            return Ok(x);
        };
        let calls = sigmas.len() - 1;
        let steps = calls / 3 + 1;
        // k-diffusion's grid is float32 (linspace of the default dtype), so each step's
        // coefficients are float32 arithmetic on it; they are computed the same way here.
        let ts = linspace_f32(-sigma_max.ln(), -sigma_min.ln(), steps + 1);
        let mut orders = vec![3usize; steps - 1];
        if calls.is_multiple_of(3) {
            orders.truncate(steps - 2);
            orders.extend([2, 1]);
        } else {
            orders.push(calls % 3);
        }
        let sigma = |t: f32| (-t).exp();
        let total = orders.len();
        for (i, &order) in orders.iter().enumerate() {
            hooks.check_cancelled()?;
            let (t, t_next) = (ts[i], ts[i + 1]);
            let h = t_next - t;
            let (eps, denoised) = eps_at(denoiser, &x, f64::from(sigma(t)))?;
            x = match order {
                1 => &x - &eps * f64::from(sigma(t_next) * h.exp_m1()),
                2 => {
                    let r1 = 0.5f32;
                    let s1 = t + r1 * h;
                    let u1 = &x - &eps * f64::from(sigma(s1) * (r1 * h).exp_m1());
                    let (eps_r1, _) = eps_at(denoiser, &u1, f64::from(sigma(s1)))?;
                    &x - &eps * f64::from(sigma(t_next) * h.exp_m1())
                        - (eps_r1 - &eps) * f64::from(sigma(t_next) / (2.0 * r1) * h.exp_m1())
                }
                _ => third_order_f32(denoiser, &x, &eps, t, t_next)?,
            };
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}

/// k-diffusion's `dpm_solver_3_step` with float32 times (dpm_fast).
fn third_order_f32(
    denoiser: &dyn Denoiser,
    x: &Tensor,
    eps: &Tensor,
    t: f32,
    t_next: f32,
) -> Result<Tensor> {
    let sigma = |t: f32| (-t).exp();
    let (r1, r2) = ((1.0f64 / 3.0) as f32, (2.0f64 / 3.0) as f32);
    let h = t_next - t;
    let (s1, s2) = (t + r1 * h, t + r2 * h);
    let u1 = x - eps * f64::from(sigma(s1) * (r1 * h).exp_m1());
    let (eps_r1, _) = eps_at(denoiser, &u1, f64::from(sigma(s1)))?;
    let ratio = ((2.0f64 / 3.0) / (1.0 / 3.0)) as f32;
    let u2 = x
        - eps * f64::from(sigma(s2) * (r2 * h).exp_m1())
        - (&eps_r1 - eps) * f64::from(sigma(s2) * ratio * ((r2 * h).exp_m1() / (r2 * h) - 1.0));
    let (eps_r2, _) = eps_at(denoiser, &u2, f64::from(sigma(s2)))?;
    Ok(x - eps * f64::from(sigma(t_next) * h.exp_m1())
        - (eps_r2 - eps) * f64::from(sigma(t_next) / r2 * (h.exp_m1() / h - 1.0)))
}

/// k-diffusion's `PIDStepSizeController` with ComfyUI's defaults (integral only).
struct StepSizeController {
    h: f64,
    b1: f64,
    b2: f64,
    b3: f64,
    accept_safety: f64,
    errors: Option<[f64; 3]>,
}

impl StepSizeController {
    fn new(h: f64, order: f64) -> Self {
        let (pcoeff, icoeff, dcoeff) = (0.0, 1.0, 0.0);
        Self {
            h,
            b1: (pcoeff + icoeff + dcoeff) / order,
            b2: -(pcoeff + 2.0 * dcoeff) / order,
            b3: dcoeff / order,
            accept_safety: 0.81,
            errors: None,
        }
    }

    /// Scales the step size by the error of the last step; whether that step is accepted.
    fn propose_step(&mut self, error: f64) -> bool {
        let inverse = 1.0 / (error + 1e-8);
        let errors = self.errors.get_or_insert([inverse; 3]);
        errors[0] = inverse;
        let factor = errors[0].powf(self.b1) * errors[1].powf(self.b2) * errors[2].powf(self.b3);
        let factor = 1.0 + (factor - 1.0).atan();
        let accept = factor >= self.accept_safety;
        if accept {
            errors[2] = errors[1];
            errors[1] = errors[0];
        }
        self.h *= factor;
        accept
    }
}

/// Tries (accepted and rejected) after which dpm_adaptive gives up: its error control did not
/// converge (a model returning NaN, say).
const MAX_ADAPTIVE_TRIES: usize = 10_000;

impl Sampler for DpmAdaptive {
    fn name(&self) -> &'static str {
        "dpm_adaptive"
    }

    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        mut x: Tensor,
        sigmas: &[f64],
        _noise: &mut dyn NoiseSource,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor> {
        let Some((sigma_max, sigma_min)) = solve_range(self.name(), sigmas)? else {
            return Ok(x);
        };
        let sigma = |t: f64| (-t).exp();
        let (t_start, t_end) = (-sigma_max.ln(), -sigma_min.ln());
        // k-diffusion's tolerances are float32 tensors.
        let (rtol, atol) = (f64::from(0.05f32), f64::from(0.0078f32));
        let elements = (x.numel() as f64).sqrt();
        let mut controller = StepSizeController::new(0.05, 3.0);
        let mut s = t_start;
        let mut x_prev = x.shallow_clone();
        // The number of steps is not known in advance: progress counts against the
        // schedule's, growing when the solver takes more.
        let nominal = sigmas.len() - 1;
        let mut tries = 0;
        while s < t_end - 1e-5 {
            hooks.check_cancelled()?;
            if tries == MAX_ADAPTIVE_TRIES || !controller.h.is_finite() {
                return Err(ModelError::Other(format!(
                    "dpm_adaptive: no convergence after {tries} steps (at sigma {}); use another sampler",
                    sigma(s)
                )));
            }
            let t = t_end.min(s + controller.h);
            let h = t - s;
            let (eps, denoised) = eps_at(denoiser, &x, sigma(s))?;
            // The 2nd-order estimate (r1 = 1/3) shares its midpoint evaluation with the 3rd.
            let r1 = 1.0 / 3.0;
            let s1 = s + r1 * h;
            let u1 = &x - &eps * (sigma(s1) * (r1 * h).exp_m1());
            let (eps_r1, _) = eps_at(denoiser, &u1, sigma(s1))?;
            let base = &x - &eps * (sigma(t) * h.exp_m1());
            let x_low = &base - (&eps_r1 - &eps) * (sigma(t) / (2.0 * r1) * h.exp_m1());
            let r2 = 2.0 / 3.0;
            let s2 = s + r2 * h;
            let u2 = &x
                - &eps * (sigma(s2) * (r2 * h).exp_m1())
                - (&eps_r1 - &eps) * (sigma(s2) * (r2 / r1) * ((r2 * h).exp_m1() / (r2 * h) - 1.0));
            let (eps_r2, _) = eps_at(denoiser, &u2, sigma(s2))?;
            let x_high = &base - (eps_r2 - &eps) * (sigma(t) / r2 * (h.exp_m1() / h - 1.0));
            let delta = (x_low.abs().maximum(&x_prev.abs()) * rtol).clamp_min(atol);
            let error = ((&x_low - &x_high) / delta)
                .to_kind(Kind::Double)
                .square()
                .sum(Kind::Double)
                .sqrt()
                .double_value(&[])
                / elements;
            if controller.propose_step(error) {
                x_prev = x_low;
                x = x_high;
                s = t;
            }
            hooks.step_done(tries, nominal.max(tries + 1), &x, &denoised);
            tries += 1;
        }
        Ok(x)
    }
}
