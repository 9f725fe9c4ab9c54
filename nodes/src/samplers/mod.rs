//! Samplers behind one trait, and sigma schedules.
//!
//! Samplers follow k-diffusion (Karras et al. 2022): they step `x = x0 + sigma * eps` through a
//! list of sigmas, asking a [`Denoiser`] for the denoised prediction x0 at each. The model, its
//! prediction type and classifier-free guidance stay behind the denoiser ([`GuidedDenoiser`]).
//! Noise drawn during sampling (ancestral, SDE and LCM steps) comes from a [`NoiseSource`],
//! seeded per sampling run ([`crate::noise::SeededNoise`]) to draw what ComfyUI draws on the CPU
//! for the seed: consecutive draws of one generator, or a Brownian tree ([`brownian`]) for the
//! SDE samplers. The samplers are ComfyUI's (k-diffusion's, its UniPC and DEIS), checked against
//! its code step by step (nodes/tests/comfy_samplers_parity.rs).
//!
//! A KSampler-style run (txt2img when `latent` is zeros):
//!
//! ```no_run
//! use tch::{Device, Kind, Tensor};
//! use weft_nodes::samplers::{
//!     self, DiscreteSchedule, Guidance, GuidedDenoiser, Hooks, Prediction,
//! };
//! use weft_nodes::samplers::{SampleSettings, SamplerKind, ScheduleKind};
//!
//! # fn main() -> weft_nodes::Result<()> {
//! // Any `Fn(sample, timesteps, context) -> Result<Tensor>` is a model (e.g. a UNet's forward).
//! let unet = |sample: &Tensor, _t: &Tensor, _context: &Tensor| Ok(sample.zeros_like());
//! let schedule = DiscreteSchedule::stable_diffusion();
//! let positive = Tensor::zeros([1, 77, 768], (Kind::Float, Device::Cpu));
//! let negative = Tensor::zeros([1, 77, 768], (Kind::Float, Device::Cpu));
//! let guidance = Guidance { positive, negative: Some(negative), cfg: 7.5 };
//! let denoiser = GuidedDenoiser::new(&unet, &schedule, Prediction::Epsilon, guidance)?;
//! let settings = SampleSettings {
//!     seed: 42,
//!     steps: 20,
//!     sampler: SamplerKind::from_name("dpmpp_2m")?,
//!     schedule: ScheduleKind::from_name("karras")?,
//!     denoise: 1.0,
//! };
//! let latent = Tensor::zeros([1, 4, 64, 64], (Kind::Float, Device::Cpu));
//! let mut progress = |e: &samplers::StepEvent<'_>| println!("{}/{}", e.step, e.total);
//! let stop = || false;
//! let mut hooks = Hooks { on_step: Some(&mut progress), cancelled: Some(&stop) };
//! let _latent = samplers::sample(&denoiser, &schedule, &latent, &settings, &mut hooks)?;
//! # Ok(())
//! # }
//! ```
pub mod ancestral;
pub mod brownian;
pub mod cfg_pp;
pub mod ddpm;
pub mod deis;
pub mod dpm;
pub mod dpm_fast;
pub mod dpm_solver;
pub mod dpmpp_cfg_pp;
pub mod er_sde;
pub mod euler;
pub mod gradient_estimation;
pub mod guidance;
pub mod heun;
pub mod heunpp2;
pub mod inpaint;
pub mod ipndm;
pub mod lcm;
pub mod lms;
pub mod res_multistep;
pub mod sa_solver;
pub mod schedules;
pub mod seeds;
pub mod unipc;

use tch::Tensor;

use crate::error::{ModelError, Result};

pub use crate::noise::{FixedNoise, NoiseSource};
pub use guidance::{Guidance, GuidedDenoiser, NoisePredictor, Prediction};
pub use schedules::{BetaSchedule, DiscreteSchedule, ScheduleKind};

/// The denoised prediction x0 of a noisy latent `x` at noise level `sigma` (k-diffusion space).
pub trait Denoiser {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor>;

    /// The denoised prediction and the unconditional one (before guidance), for CFG++ samplers
    /// (ComfyUI reads the latter through a post-CFG hook). Without guidance both are the same.
    fn denoise_with_uncond(&self, x: &Tensor, sigma: f64) -> Result<(Tensor, Tensor)> {
        let denoised = self.denoise(x, sigma)?;
        Ok((denoised.shallow_clone(), denoised))
    }

    /// The model's sigma `percent` of the way through its noise schedule (ComfyUI's
    /// `model_sampling.percent_to_sigma`: 0 is the noisiest end), for samplers that place
    /// settings along the schedule (SA-Solver's stochastic interval). `None`: the denoiser does
    /// not know its schedule, and the sampler takes Stable Diffusion's (every model weft runs
    /// has it).
    fn percent_to_sigma(&self, _percent: f64) -> Option<f64> {
        None
    }
}

impl<F> Denoiser for F
where
    F: Fn(&Tensor, f64) -> Result<Tensor>,
{
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        self(x, sigma)
    }
}

/// What a sampler reports after each of its steps.
pub struct StepEvent<'a> {
    /// Steps done, 1-based.
    pub step: usize,
    /// Steps in this run.
    pub total: usize,
    /// The latent after this step.
    pub x: &'a Tensor,
    /// The denoised prediction this step used (for previews).
    pub denoised: &'a Tensor,
}

/// Progress reporting and cancellation for a sampling run.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Called after every step.
    pub on_step: Option<&'a mut dyn FnMut(&StepEvent<'_>)>,
    /// Checked before every step; returning true stops sampling with [`ModelError::Cancelled`].
    pub cancelled: Option<&'a dyn Fn() -> bool>,
}

impl Hooks<'_> {
    fn check_cancelled(&self) -> Result<()> {
        match self.cancelled {
            Some(cancelled) if cancelled() => Err(ModelError::Cancelled(weft_engine::Cancelled)),
            _ => Ok(()),
        }
    }

    fn step_done(&mut self, step: usize, total: usize, x: &Tensor, denoised: &Tensor) {
        if let Some(on_step) = self.on_step.as_mut() {
            on_step(&StepEvent {
                step: step + 1,
                total,
                x,
                denoised,
            });
        }
    }
}

/// A sampler: integrates from `sigmas[0]` down to `sigmas[last]` (normally 0).
pub trait Sampler {
    fn name(&self) -> &'static str;

    /// Runs `sigmas.len() - 1` steps from the noisy latent `x` (already at `sigmas[0]`).
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor,
        sigmas: &[f64],
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor>;
}

/// Declares [`SamplerKind`]: variants, ComfyUI names (in ComfyUI's menu order) and samplers.
macro_rules! sampler_kinds {
    ($($variant:ident => $name:literal => $sampler:expr,)*) => {
        /// The samplers by name (ComfyUI's names, in the order of its sampler menu).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum SamplerKind {
            $($variant,)*
        }

        impl SamplerKind {
            pub const NAMES: [&'static str; [$($name),*].len()] = [$($name),*];

            pub fn from_name(name: &str) -> Result<Self> {
                match name {
                    $($name => Ok(Self::$variant),)*
                    other => Err(ModelError::Other(format!(
                        "unknown sampler {other:?} (expected one of {})",
                        Self::NAMES.join(", ")
                    ))),
                }
            }

            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            pub fn sampler(self) -> Box<dyn Sampler> {
                match self {
                    $(Self::$variant => Box::new($sampler),)*
                }
            }
        }
    };
}

sampler_kinds! {
    Euler => "euler" => euler::Euler,
    EulerCfgPp => "euler_cfg_pp" => cfg_pp::EulerCfgPp { eta: 0.0 },
    EulerAncestral => "euler_ancestral" => euler::EulerAncestral,
    EulerAncestralCfgPp => "euler_ancestral_cfg_pp" => cfg_pp::EulerCfgPp { eta: 1.0 },
    Heun => "heun" => heun::Heun,
    HeunPp2 => "heunpp2" => heunpp2::HeunPp2,
    ExpHeun2X0 => "exp_heun_2_x0" => seeds::ExpHeun2X0 { sde: false },
    ExpHeun2X0Sde => "exp_heun_2_x0_sde" => seeds::ExpHeun2X0 { sde: true },
    Dpm2 => "dpm_2" => dpm::Dpm2,
    Dpm2Ancestral => "dpm_2_ancestral" => ancestral::Dpm2Ancestral,
    Lms => "lms" => lms::Lms,
    DpmFast => "dpm_fast" => dpm_fast::DpmFast,
    DpmAdaptive => "dpm_adaptive" => dpm_fast::DpmAdaptive,
    DpmPp2sAncestral => "dpmpp_2s_ancestral" => ancestral::DpmPp2sAncestral,
    DpmPp2sAncestralCfgPp => "dpmpp_2s_ancestral_cfg_pp" => dpmpp_cfg_pp::DpmPp2sAncestralCfgPp,
    DpmPpSde => "dpmpp_sde" => dpm::DpmPpSde,
    DpmPp2m => "dpmpp_2m" => dpm_solver::DpmPp2m,
    DpmPp2mCfgPp => "dpmpp_2m_cfg_pp" => dpmpp_cfg_pp::DpmPp2mCfgPp,
    DpmPp2mSde => "dpmpp_2m_sde" => dpm_solver::DpmPp2mSde { heun: false },
    DpmPp2mSdeHeun => "dpmpp_2m_sde_heun" => dpm_solver::DpmPp2mSde { heun: true },
    DpmPp3mSde => "dpmpp_3m_sde" => dpm::DpmPp3mSde,
    Ddpm => "ddpm" => ddpm::Ddpm,
    Lcm => "lcm" => lcm::Lcm,
    Ipndm => "ipndm" => ipndm::Ipndm,
    IpndmV => "ipndm_v" => ipndm::IpndmV,
    Deis => "deis" => deis::Deis,
    ResMultistep => "res_multistep" => res_multistep::ResMultistep { eta: 0.0, cfg_pp: false },
    ResMultistepCfgPp => "res_multistep_cfg_pp" => res_multistep::ResMultistep { eta: 0.0, cfg_pp: true },
    ResMultistepAncestral => "res_multistep_ancestral" => res_multistep::ResMultistep { eta: 1.0, cfg_pp: false },
    ResMultistepAncestralCfgPp => "res_multistep_ancestral_cfg_pp" => res_multistep::ResMultistep { eta: 1.0, cfg_pp: true },
    GradientEstimation => "gradient_estimation" => gradient_estimation::GradientEstimation { gamma: 2.0, cfg_pp: false },
    GradientEstimationCfgPp => "gradient_estimation_cfg_pp" => gradient_estimation::GradientEstimation { gamma: 2.0, cfg_pp: true },
    ErSde => "er_sde" => er_sde::ErSde,
    Seeds2 => "seeds_2" => seeds::Seeds2,
    Seeds3 => "seeds_3" => seeds::Seeds3,
    SaSolver => "sa_solver" => sa_solver::SaSolver { pece: false },
    SaSolverPece => "sa_solver_pece" => sa_solver::SaSolver { pece: true },
    Ddim => "ddim" => euler::Ddim,
    UniPc => "uni_pc" => unipc::UniPc { bh2: false },
    UniPcBh2 => "uni_pc_bh2" => unipc::UniPc { bh2: true },
}

impl SamplerKind {
    /// ComfyUI's `DISCARD_PENULTIMATE_SIGMA_SAMPLERS`: these run on a schedule of `steps + 1`
    /// steps with its second-to-last sigma dropped.
    pub fn discards_penultimate_sigma(self) -> bool {
        matches!(
            self,
            Self::Dpm2 | Self::Dpm2Ancestral | Self::UniPc | Self::UniPcBh2
        )
    }
}

/// The settings of a KSampler-style run.
#[derive(Clone, Copy, Debug)]
pub struct SampleSettings {
    pub seed: u64,
    pub steps: usize,
    pub sampler: SamplerKind,
    pub schedule: ScheduleKind,
    /// img2img strength in [0, 1]; 1 samples from pure noise.
    pub denoise: f64,
}

impl Default for SampleSettings {
    /// ComfyUI's KSampler defaults: seed 0, 20 steps, Euler, normal schedule, full denoise.
    fn default() -> Self {
        Self {
            seed: 0,
            steps: 20,
            sampler: SamplerKind::Euler,
            schedule: ScheduleKind::Normal,
            denoise: 1.0,
        }
    }
}

/// Which part of the schedule a sampler runs, as ComfyUI's KSamplerAdvanced sets it
/// (`start_at_step`, `end_at_step`, `add_noise`, `return_with_leftover_noise`): a two-stage
/// run samples steps 0..k with one model, leaving the noise in, and k.. with another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepWindow {
    /// The first step to run (0: from the start).
    pub start: usize,
    /// The step to stop at; `None` (or one past the schedule): its end.
    pub end: Option<usize>,
    /// Add the initial noise at the first sigma; off when the latent already holds it (the
    /// second stage of a two-stage run).
    pub add_noise: bool,
    /// Stop at the window's last sigma with its noise left in; off, a window that stops early
    /// takes its last step down to sigma 0 (ComfyUI's `force_full_denoise`).
    pub leftover_noise: bool,
}

impl StepWindow {
    /// The whole schedule, from noise added here to a clean latent (KSampler).
    pub const FULL: Self = Self {
        start: 0,
        end: None,
        add_noise: true,
        leftover_noise: false,
    };

    /// The sigmas to run, sliced from the whole schedule as ComfyUI's `KSampler.sample` does;
    /// `None` when no step is left (the latent comes back unchanged, as in ComfyUI).
    pub fn apply(&self, sigmas: &[f64]) -> Option<Vec<f64>> {
        if sigmas.len() < 2 {
            return None;
        }
        let mut window = sigmas.to_vec();
        if let Some(end) = self.end.filter(|&end| end < sigmas.len() - 1) {
            window.truncate(end + 1);
            if !self.leftover_noise {
                *window.last_mut().expect("end + 1 >= 1 sigmas") = 0.0;
            }
        }
        (self.start < window.len() - 1).then(|| window.split_off(self.start))
    }
}

/// ComfyUI's `common_ksampler`: schedule (tail of a longer one when `denoise` < 1), initial
/// noise from `seed` ([`crate::noise::initial_noise`]) added to `latent` at the first sigma,
/// then the sampler with step noise from the same seed. `latent` is zeros for txt2img.
pub fn sample(
    denoiser: &dyn Denoiser,
    schedule: &DiscreteSchedule,
    latent: &Tensor,
    settings: &SampleSettings,
    hooks: &mut Hooks<'_>,
) -> Result<Tensor> {
    let noise = crate::noise::initial_noise(
        settings.seed,
        &latent.size(),
        latent.device(),
        latent.kind(),
    )?;
    sample_from_noise(denoiser, schedule, latent, &noise, settings, hooks)
}

/// As [`sample`], with the initial noise given (a RandomNoise node's output, which two
/// samplers may share) instead of drawn from `settings.seed`; it must have the latent's shape.
/// The step noise of ancestral and SDE samplers still comes from `settings.seed`.
pub fn sample_from_noise(
    denoiser: &dyn Denoiser,
    schedule: &DiscreteSchedule,
    latent: &Tensor,
    noise: &Tensor,
    settings: &SampleSettings,
    hooks: &mut Hooks<'_>,
) -> Result<Tensor> {
    sample_seeded(
        denoiser,
        schedule,
        latent,
        noise,
        &[settings.seed],
        settings,
        StepWindow::FULL,
        hooks,
    )
}

/// As [`sample_from_noise`], running only `window` of the schedule (ComfyUI's
/// KSamplerAdvanced); without `add_noise`, `noise` is not added (the latent already holds it).
pub fn sample_window(
    denoiser: &dyn Denoiser,
    schedule: &DiscreteSchedule,
    latent: &Tensor,
    noise: &Tensor,
    settings: &SampleSettings,
    window: StepWindow,
    hooks: &mut Hooks<'_>,
) -> Result<Tensor> {
    sample_seeded(
        denoiser,
        schedule,
        latent,
        noise,
        &[settings.seed],
        settings,
        window,
        hooks,
    )
}

/// Several seeds' images sampled as one batch: `latent` holds `seeds.len()` equal parts along
/// its batch (each the latent one seed's run would start from), and part i gets the initial
/// noise and step noise of `seeds[i]` (`settings.seed` is not used). `noise`, when given
/// (a RandomNoise node's, the same for every part), replaces the initial noise of every part.
/// Part i of the result is what [`sample`] (or [`sample_from_noise`]) with `seeds[i]` gives for
/// that part alone, up to the model's own batch arithmetic (see the parity test in
/// nodes/tests/batched_seeds.rs).
pub fn sample_per_seed(
    denoiser: &dyn Denoiser,
    schedule: &DiscreteSchedule,
    latent: &Tensor,
    noise: Option<&Tensor>,
    seeds: &[u64],
    settings: &SampleSettings,
    hooks: &mut Hooks<'_>,
) -> Result<Tensor> {
    let size = latent.size();
    let parts = seeds.len() as i64;
    if parts == 0 || size.is_empty() || size[0] % parts != 0 {
        return Err(ModelError::Shape {
            context: "sampling per seed".into(),
            message: format!(
                "a latent of shape {size:?} cannot be cut into {parts} equal parts, one per seed"
            ),
        });
    }
    let drawn;
    let noise = match noise {
        Some(noise) => {
            let repeats: Vec<i64> = std::iter::once(parts)
                .chain(std::iter::repeat_n(1, size.len() - 1))
                .collect();
            drawn = noise.repeat(repeats.as_slice());
            &drawn
        }
        None => {
            let mut part = size.clone();
            part[0] /= parts;
            drawn =
                crate::noise::initial_noise_per_seed(seeds, &part, latent.device(), latent.kind())?;
            &drawn
        }
    };
    sample_seeded(
        denoiser,
        schedule,
        latent,
        noise,
        seeds,
        settings,
        StepWindow::FULL,
        hooks,
    )
}

/// The common tail of the sampling entry points: `seeds` has one seed (step noise of the whole
/// batch from it) or one per equal part of the batch; `window` as in [`sample_window`].
#[allow(clippy::too_many_arguments)] // every entry point's arguments meet here
fn sample_seeded(
    denoiser: &dyn Denoiser,
    schedule: &DiscreteSchedule,
    latent: &Tensor,
    noise: &Tensor,
    seeds: &[u64],
    settings: &SampleSettings,
    window: StepWindow,
    hooks: &mut Hooks<'_>,
) -> Result<Tensor> {
    if noise.size() != latent.size() {
        return Err(ModelError::Shape {
            context: "input 'noise'".into(),
            message: format!(
                "noise of shape {:?} for a latent of shape {:?}: give the noise node the latent's width, height and batch",
                noise.size(),
                latent.size()
            ),
        });
    }
    let sigmas = schedule.sampler_sigmas(
        settings.schedule,
        settings.steps,
        settings.denoise,
        settings.sampler.discards_penultimate_sigma(),
    )?;
    let Some(sigmas) = window.apply(&sigmas) else {
        return Ok(latent.copy());
    };
    // Nothing here needs gradients; the guard also covers models that do not set it themselves.
    let _no_grad = tch::no_grad_guard();
    let x = if window.add_noise {
        let noise = noise.to_device(latent.device()).to_kind(latent.kind());
        noise_latent(schedule, latent, &noise, sigmas[0])
    } else {
        latent.copy()
    };
    // A sampler draws at most about one step noise a step: drawn ahead in one go.
    let expected_draws = sigmas.len();
    let sampler = settings.sampler.sampler();
    match seeds {
        [seed] => {
            let mut step_noise = crate::noise::SeededNoise::new(*seed).expecting(expected_draws);
            sampler.sample(denoiser, x, &sigmas, &mut step_noise, hooks)
        }
        seeds => {
            let mut step_noise = crate::noise::PerSeedNoise::new(seeds, expected_draws);
            sampler.sample(denoiser, x, &sigmas, &mut step_noise, hooks)
        }
    }
}

/// The latent at `sigma`: `latent + noise * sigma`, or `* sqrt(1 + sigma^2)` when `sigma` is the
/// schedule's maximum (ComfyUI's `EPS.noise_scaling`).
pub fn noise_latent(
    schedule: &DiscreteSchedule,
    latent: &Tensor,
    noise: &Tensor,
    sigma: f64,
) -> Tensor {
    let scale = if schedule.is_max_denoise(sigma) {
        (1.0 + sigma * sigma).sqrt()
    } else {
        sigma
    };
    latent + noise * scale
}

/// Runs the denoiser and checks that it kept the latent's shape, so the sampler's arithmetic
/// cannot panic on a misbehaving model.
fn denoise_checked(denoiser: &dyn Denoiser, x: &Tensor, sigma: f64) -> Result<Tensor> {
    let denoised = denoiser.denoise(x, sigma)?;
    check_denoised(&denoised, x, sigma)
}

/// As [`denoise_checked`], also returning the unconditional prediction (CFG++ samplers).
fn denoise_checked_with_uncond(
    denoiser: &dyn Denoiser,
    x: &Tensor,
    sigma: f64,
) -> Result<(Tensor, Tensor)> {
    let (denoised, uncond) = denoiser.denoise_with_uncond(x, sigma)?;
    Ok((
        check_denoised(&denoised, x, sigma)?,
        check_denoised(&uncond, x, sigma)?,
    ))
}

fn check_denoised(denoised: &Tensor, x: &Tensor, sigma: f64) -> Result<Tensor> {
    if denoised.size() != x.size() {
        return Err(ModelError::Shape {
            context: format!("denoiser at sigma {sigma}"),
            message: format!(
                "returned shape {:?} for a latent of shape {:?}",
                denoised.size(),
                x.size()
            ),
        });
    }
    Ok(denoised.to_kind(x.kind()))
}

/// k-diffusion's `get_ancestral_step`: the step `sigma -> sigma_next` as a deterministic part
/// down to `sigma_down` plus fresh noise of size `sigma_up` (`eta` scales the noise; 0 is none).
pub fn ancestral_step_eta(sigma: f64, sigma_next: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 {
        return (sigma_next, 0.0);
    }
    let sigma_up = (eta
        * (sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) / (sigma * sigma))
            .sqrt())
    .min(sigma_next);
    let sigma_down = (sigma_next * sigma_next - sigma_up * sigma_up).sqrt();
    (sigma_down, sigma_up)
}

fn check_sigmas(name: &str, sigmas: &[f64]) -> Result<()> {
    let bad = sigmas.iter().any(|s| !s.is_finite() || *s < 0.0)
        || sigmas.windows(2).any(|w| w[1] >= w[0]);
    if bad {
        return Err(ModelError::Other(format!(
            "{name}: sigmas must be finite, >= 0 and strictly descending, got {sigmas:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use tch::{Device, Kind};

    /// Denoiser of a point mass at 0.5: every sampler must end at 0.5 deterministically.
    fn point_mass(x: &Tensor, _sigma: f64) -> Result<Tensor> {
        Ok(x.zeros_like() + 0.5)
    }

    /// `sample` of the point mass on the SD schedule, without hooks.
    fn sample_point_mass(latent: &Tensor, settings: &SampleSettings) -> Tensor {
        let schedule = DiscreteSchedule::stable_diffusion();
        sample(
            &point_mass,
            &schedule,
            latent,
            settings,
            &mut Hooks::default(),
        )
        .unwrap()
    }

    /// `sampler` over `sigmas` from `x` with `denoiser`: whether it refuses (errors, no panic).
    fn refuses(sampler: SamplerKind, denoiser: &dyn Denoiser, x: &Tensor, sigmas: &[f64]) -> bool {
        let mut noise = FixedNoise(Vec::new());
        let run = sampler.sampler().sample(
            denoiser,
            x.copy(),
            sigmas,
            &mut noise,
            &mut Hooks::default(),
        );
        run.is_err()
    }

    #[test]
    fn every_sampler_lands_on_the_data_of_a_point_mass() {
        let latent = Tensor::zeros([1, 4, 4, 4], (Kind::Float, Device::Cpu));
        for name in SamplerKind::NAMES {
            let settings = SampleSettings {
                seed: 7,
                steps: 6,
                sampler: SamplerKind::from_name(name).unwrap(),
                schedule: ScheduleKind::Karras,
                ..SampleSettings::default()
            };
            let out = sample_point_mass(&latent, &settings);
            let err = (out - 0.5).abs().max().double_value(&[]);
            // uni_pc stops at sigma 0.001 instead of 0 (as ComfyUI's does), dpm_fast and
            // dpm_adaptive at the last sigma above 0 (0.029 here): noise of that size is left.
            let tolerance = if name.starts_with("uni_pc") {
                1e-2
            } else if name.starts_with("dpm_fast") || name.starts_with("dpm_adaptive") {
                0.2
            } else {
                1e-5
            };
            assert!(err < tolerance, "{name}: {err}");
        }
    }

    #[test]
    fn progress_is_reported_per_step_and_cancellation_stops() {
        let schedule = DiscreteSchedule::stable_diffusion();
        let latent = Tensor::zeros([1, 4, 4, 4], (Kind::Float, Device::Cpu));
        let settings = SampleSettings {
            seed: 1,
            steps: 5,
            sampler: SamplerKind::Heun,
            ..SampleSettings::default()
        };
        let mut seen = Vec::new();
        let mut on_step = |e: &StepEvent<'_>| seen.push((e.step, e.total));
        let mut hooks = Hooks {
            on_step: Some(&mut on_step),
            cancelled: None,
        };
        let _ = sample(&point_mass, &schedule, &latent, &settings, &mut hooks).unwrap();
        assert_eq!(seen, vec![(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]);

        let calls = Cell::new(0);
        let cancel_after_two = || {
            calls.set(calls.get() + 1);
            calls.get() > 2
        };
        let mut hooks = Hooks {
            on_step: None,
            cancelled: Some(&cancel_after_two),
        };
        let err = sample(&point_mass, &schedule, &latent, &settings, &mut hooks).unwrap_err();
        assert!(matches!(err, ModelError::Cancelled(_)), "{err}");
    }

    #[test]
    fn step_windows_slice_the_schedule_as_comfyuis_ksampler_advanced() {
        let full = [14.6, 7.0, 3.0, 1.0, 0.3, 0.0];
        let window = |start, end, leftover_noise| StepWindow {
            start,
            end,
            add_noise: true,
            leftover_noise,
        };
        assert_eq!(StepWindow::FULL.apply(&full), Some(full.to_vec()));
        // Stop at step 3 with the noise left in, or forced down to 0.
        assert_eq!(
            window(0, Some(3), true).apply(&full),
            Some(vec![14.6, 7.0, 3.0, 1.0])
        );
        assert_eq!(
            window(0, Some(3), false).apply(&full),
            Some(vec![14.6, 7.0, 3.0, 0.0])
        );
        // From step 3 to the end; an end past the schedule (ComfyUI's default 10000) is its end.
        assert_eq!(
            window(3, Some(10_000), false).apply(&full),
            Some(vec![1.0, 0.3, 0.0])
        );
        assert_eq!(
            window(1, Some(3), true).apply(&full),
            Some(vec![7.0, 3.0, 1.0])
        );
        // No step left: the latent comes back as it is.
        assert_eq!(window(5, None, false).apply(&full), None);
        assert_eq!(window(3, Some(3), false).apply(&full), None);
        assert_eq!(window(0, Some(0), false).apply(&full), None);
        assert_eq!(StepWindow::FULL.apply(&[]), None);
    }

    /// A deterministic sampler run in two windows (the first leaving its noise in, the second
    /// adding none) takes exactly the steps of the one-window run.
    #[test]
    fn two_windows_of_euler_equal_one_run_and_the_first_keeps_its_noise() {
        let schedule = DiscreteSchedule::stable_diffusion();
        let latent = Tensor::zeros([1, 4, 4, 4], (Kind::Float, Device::Cpu));
        let noise =
            crate::noise::initial_noise(5, &[1, 4, 4, 4], Device::Cpu, Kind::Float).unwrap();
        // x0 is a shrunk x: the result depends on every step taken.
        let shrink = |x: &Tensor, sigma: f64| -> Result<Tensor> { Ok(x / (1.0 + sigma)) };
        let settings = SampleSettings {
            steps: 10,
            ..SampleSettings::default()
        };
        let run = |latent: &Tensor, window: StepWindow, hooks: &mut Hooks<'_>| {
            sample_window(&shrink, &schedule, latent, &noise, &settings, window, hooks).unwrap()
        };
        let mut after_step_8 = None;
        let mut keep_step_8 = |e: &StepEvent<'_>| {
            if e.step == 8 {
                after_step_8 = Some(e.x.copy());
            }
        };
        let mut hooks = Hooks {
            on_step: Some(&mut keep_step_8),
            cancelled: None,
        };
        let whole = run(&latent, StepWindow::FULL, &mut hooks);
        let first_window = StepWindow {
            end: Some(8),
            leftover_noise: true,
            ..StepWindow::FULL
        };
        let first = run(&latent, first_window, &mut Hooks::default());
        // The first window stops at sigma_8 with the noise in: the whole run's latent there.
        assert!(first.equal(&after_step_8.unwrap()));
        let second_window = StepWindow {
            start: 8,
            add_noise: false,
            ..StepWindow::FULL
        };
        let second = run(&first, second_window, &mut Hooks::default());
        assert!(second.equal(&whole), "two windows differ from one run");
        // Forced down to 0 instead, the first window ends elsewhere.
        let forced_window = StepWindow {
            leftover_noise: false,
            ..first_window
        };
        let forced = run(&latent, forced_window, &mut Hooks::default());
        assert!(!forced.equal(&first) && !first.equal(&whole));
    }

    #[test]
    fn zero_denoise_returns_the_latent_and_img2img_starts_near_it() {
        let schedule = DiscreteSchedule::stable_diffusion();
        let latent = Tensor::ones([1, 4, 4, 4], (Kind::Float, Device::Cpu));
        let mut settings = SampleSettings {
            seed: 3,
            steps: 4,
            denoise: 0.0,
            ..SampleSettings::default()
        };
        let out = sample_point_mass(&latent, &settings);
        assert_eq!(out.sum(Kind::Float).double_value(&[]), 64.0);

        settings.denoise = 0.25;
        let mut first = None;
        let mut on_step = |e: &StepEvent<'_>| {
            if first.is_none() {
                first = Some(e.denoised.shallow_clone());
            }
        };
        // x0 = x: the first denoiser input is what img2img started from.
        let identity = |x: &Tensor, _s: f64| -> Result<Tensor> { Ok(x.copy()) };
        let mut hooks = Hooks {
            on_step: Some(&mut on_step),
            cancelled: None,
        };
        let _ = sample(&identity, &schedule, &latent, &settings, &mut hooks).unwrap();
        // 4 steps at denoise 0.25: the tail of a 16-step schedule, noise added at its sigma.
        let sigma0 = schedule.sigmas(ScheduleKind::Normal, 16).unwrap()[12];
        let noise =
            crate::noise::initial_noise(3, &[1, 4, 4, 4], Device::Cpu, Kind::Float).unwrap();
        let expected = &latent + noise * sigma0;
        let err = (first.unwrap() - expected).abs().max().double_value(&[]);
        assert!(err < 1e-6, "{err}");
    }

    #[test]
    fn bad_sigmas_and_misshapen_denoisers_are_errors_not_panics() {
        let x = Tensor::zeros([1, 4, 2, 2], (Kind::Float, Device::Cpu));
        assert!(refuses(
            SamplerKind::Euler,
            &point_mass,
            &x,
            &[1.0, 2.0, 0.0]
        ));
        let wrong = |_x: &Tensor, _s: f64| -> Result<Tensor> {
            Ok(Tensor::zeros([3], (Kind::Float, Device::Cpu)))
        };
        assert!(refuses(SamplerKind::Euler, &wrong, &x, &[1.0, 0.0]));
        assert!(refuses(
            SamplerKind::EulerAncestral,
            &point_mass,
            &x,
            &[2.0, 1.0, 0.0]
        ));
        assert!(SamplerKind::from_name("dpmpp_3m").is_err());
    }
}
