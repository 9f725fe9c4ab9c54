//! SEEDS-2 and SEEDS-3 (Gonzalez et al. 2023, stochastic explicit exponential derivative-free
//! solvers in data prediction; ComfyUI's `sample_seeds_2` and `sample_seeds_3`, eta 1): two or
//! three model calls per step at points spaced in half-log-SNR, each stage re-noised so that
//! the noise of one step is one Brownian path (sequential step noise, as ComfyUI draws it).
//! ComfyUI's exponential Heun samplers (`exp_heun_2_x0`, `exp_heun_2_x0_sde`) are its SEEDS-2
//! code with other settings, so they live here too.
use tch::Tensor;

use super::{check_sigmas, denoise_checked, Denoiser, Hooks, NoiseSource, Sampler};
use crate::error::Result;

/// SEEDS-2 (`r` 0.5, the phi_1 solver).
pub struct Seeds2;

/// ComfyUI's `exp_heun_2_x0` (`sde` false: deterministic) and `exp_heun_2_x0_sde`: its SEEDS-2
/// code with the second stage at the end of the step (`r` 1) and the phi_2 solver, an
/// exponential Heun method in data prediction and half-log-SNR time.
pub struct ExpHeun2X0 {
    pub sde: bool,
}

/// How a two-stage SEEDS step is set up (ComfyUI's `sample_seeds_2` arguments).
struct TwoStage {
    /// Where the second model call sits, as a fraction of the step in half-log-SNR.
    r: f64,
    /// Stochastic strength; 0 draws no noise at all.
    eta: f64,
    /// The phi_2 solver (both predictions weighted by phi functions) instead of phi_1 (the
    /// predictions mixed, then one exponential step).
    phi_2: bool,
}

/// SEEDS-3 (`r_1` 1/3, `r_2` 2/3).
pub struct Seeds3;

/// Stochastic strength (ComfyUI's `eta`, 1 for both).
const ETA: f64 = 1.0;

/// Half-log-SNR of a variance-exploding sigma, and back.
fn lambda_of(sigma: f64) -> f64 {
    -sigma.ln()
}

fn sigma_of(lambda: f64) -> f64 {
    (-lambda).exp()
}

/// `torch.lerp` of two numbers (its two formulas either side of weight 0.5).
fn lerp(start: f64, end: f64, weight: f64) -> f64 {
    if weight < 0.5 {
        start + weight * (end - start)
    } else {
        end - (end - start) * (1.0 - weight)
    }
}

/// h * phi_2(h) of exponential integrators.
fn h_phi_2(h: f64) -> f64 {
    (h.exp_m1() - h) / h
}

/// The noise of the next stage: the stage's noise carried over (`factor` = (r_a - r_b) h eta)
/// plus a fresh draw for the new part of the path.
fn carried_noise(
    previous: &Tensor,
    factor: f64,
    draw: usize,
    x: &Tensor,
    noise: &mut dyn NoiseSource,
) -> Result<Tensor> {
    let fresh = noise.noise(draw, x)?;
    Ok(previous * factor.exp() + fresh * (-(2.0 * factor).exp_m1()).sqrt())
}

impl Sampler for Seeds2 {
    fn name(&self) -> &'static str {
        "seeds_2"
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
        let stage = TwoStage {
            r: 0.5,
            eta: ETA,
            phi_2: false,
        };
        two_stage_steps(&stage, denoiser, x, sigmas, noise, hooks)
    }
}

impl Sampler for ExpHeun2X0 {
    fn name(&self) -> &'static str {
        if self.sde {
            "exp_heun_2_x0_sde"
        } else {
            "exp_heun_2_x0"
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
        let stage = TwoStage {
            r: 1.0,
            eta: if self.sde { ETA } else { 0.0 },
            phi_2: true,
        };
        two_stage_steps(&stage, denoiser, x, sigmas, noise, hooks)
    }
}

/// The steps of ComfyUI's `sample_seeds_2` with `stage`'s settings.
fn two_stage_steps(
    stage: &TwoStage,
    denoiser: &dyn Denoiser,
    mut x: Tensor,
    sigmas: &[f64],
    noise: &mut dyn NoiseSource,
    hooks: &mut Hooks<'_>,
) -> Result<Tensor> {
    let TwoStage { r, eta, phi_2 } = *stage;
    let inject_noise = eta > 0.0;
    let total = sigmas.len().saturating_sub(1);
    let mut draws = 0;
    for i in 0..total {
        hooks.check_cancelled()?;
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = denoise_checked(denoiser, &x, sigma)?;
        if sigma_next == 0.0 {
            x = denoised.shallow_clone();
            hooks.step_done(i, total, &x, &denoised);
            continue;
        }
        let (lambda_s, lambda_t) = (lambda_of(sigma), lambda_of(sigma_next));
        let h = lambda_t - lambda_s;
        let h_eta = h * (eta + 1.0);
        let lambda_1 = lerp(lambda_s, lambda_t, r);
        let sigma_1 = sigma_of(lambda_1);
        let alpha_1 = sigma_1 * lambda_1.exp();
        let alpha_t = sigma_next * lambda_t.exp();

        let mut x_2 = &x * (sigma_1 / sigma * (-r * h * eta).exp())
            - &denoised * (alpha_1 * (-r * h_eta).exp_m1());
        let mut stage_noise = None;
        if inject_noise {
            let first = noise.noise(draws, &x)?;
            draws += 1;
            let scaled = first * (-(-2.0 * r * h * eta).exp_m1()).sqrt();
            x_2 += &scaled * sigma_1;
            stage_noise = Some(scaled);
        }
        let denoised_2 = denoise_checked(denoiser, &x_2, sigma_1)?;

        let decay = sigma_next / sigma * (-h * eta).exp();
        x = if phi_2 {
            let b2 = h_phi_2(-h_eta) / r;
            let b1 = (-h_eta).exp_m1() - b2;
            &x * decay - (&denoised * b1 + &denoised_2 * b2) * alpha_t
        } else {
            // The two predictions mixed with weight 1 / (2r) (torch.lerp's form).
            let fac = 1.0 / (2.0 * r);
            let mixed = if fac < 0.5 {
                &denoised + (&denoised_2 - &denoised) * fac
            } else {
                &denoised_2 - (&denoised_2 - &denoised) * (1.0 - fac)
            };
            &x * decay - mixed * (alpha_t * (-h_eta).exp_m1())
        };
        if let Some(stage_noise) = &stage_noise {
            // With r 1 the carried part is all of it and the fresh draw weighs 0, but ComfyUI
            // still draws it: drawn here too, so later steps get the same noise.
            let step_noise = carried_noise(stage_noise, (r - 1.0) * h * eta, draws, &x, noise)?;
            draws += 1;
            x = &x + step_noise * sigma_next;
        }
        hooks.step_done(i, total, &x, &denoised);
    }
    Ok(x)
}

impl Sampler for Seeds3 {
    fn name(&self) -> &'static str {
        "seeds_3"
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
        let (r_1, r_2) = (1.0 / 3.0, 2.0 / 3.0);
        let mut draws = 0;
        for i in 0..total {
            hooks.check_cancelled()?;
            let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
            let denoised = denoise_checked(denoiser, &x, sigma)?;
            if sigma_next == 0.0 {
                x = denoised.shallow_clone();
                hooks.step_done(i, total, &x, &denoised);
                continue;
            }
            let (lambda_s, lambda_t) = (lambda_of(sigma), lambda_of(sigma_next));
            let h = lambda_t - lambda_s;
            let h_eta = h * (ETA + 1.0);
            let (lambda_1, lambda_2) =
                (lerp(lambda_s, lambda_t, r_1), lerp(lambda_s, lambda_t, r_2));
            let (sigma_1, sigma_2) = (sigma_of(lambda_1), sigma_of(lambda_2));
            let alpha_1 = sigma_1 * lambda_1.exp();
            let alpha_2 = sigma_2 * lambda_2.exp();
            let alpha_t = sigma_next * lambda_t.exp();

            let mut x_2 = &x * (sigma_1 / sigma * (-r_1 * h * ETA).exp())
                - &denoised * (alpha_1 * (-r_1 * h_eta).exp_m1());
            let first = noise.noise(draws, &x)?;
            draws += 1;
            let stage_noise = first * (-(-2.0 * r_1 * h * ETA).exp_m1()).sqrt();
            x_2 += &stage_noise * sigma_1;
            let denoised_2 = denoise_checked(denoiser, &x_2, sigma_1)?;

            let a3_2 = r_2 / r_1 * h_phi_2(-r_2 * h_eta);
            let a3_1 = (-r_2 * h_eta).exp_m1() - a3_2;
            let mut x_3 = &x * (sigma_2 / sigma * (-r_2 * h * ETA).exp())
                - (&denoised * a3_1 + &denoised_2 * a3_2) * alpha_2;
            let stage_noise = carried_noise(&stage_noise, (r_1 - r_2) * h * ETA, draws, &x, noise)?;
            draws += 1;
            x_3 += &stage_noise * sigma_2;
            let denoised_3 = denoise_checked(denoiser, &x_3, sigma_2)?;

            let b3 = h_phi_2(-h_eta) / r_2;
            let b1 = (-h_eta).exp_m1() - b3;
            x = &x * (sigma_next / sigma * (-h * ETA).exp())
                - (&denoised * b1 + denoised_3 * b3) * alpha_t;
            let step_noise = carried_noise(&stage_noise, (r_2 - 1.0) * h * ETA, draws, &x, noise)?;
            draws += 1;
            x = &x + step_noise * sigma_next;
            hooks.step_done(i, total, &x, &denoised);
        }
        Ok(x)
    }
}
