//! Sigma schedules of a discrete DDPM noise schedule (SD's scaled_linear betas), as ComfyUI's
//! `comfy/samplers.py` and k-diffusion's `sampling.py` define them (Karras et al. 2022, "Elucidating
//! the Design Space of Diffusion-Based Generative Models", for the karras schedule).
//!
//! Sigmas live in k-diffusion space: `x = x0 + sigma * eps`, with `sigma = sqrt((1 - a) / a)` for
//! the cumulative alpha `a` of training step `t`. Every schedule ends with sigma 0 appended.
use tch::Tensor;

use crate::error::{ModelError, Result};

/// Most sampling steps a run may ask for (ComfyUI's KSampler limit).
pub const MAX_STEPS: usize = 10_000;

/// Longest schedule computed, including the longer one img2img takes its tail from.
pub const MAX_SCHEDULE_STEPS: usize = 1_000_000;

/// How the training betas grow from `beta_start` to `beta_end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    /// Linear in sqrt(beta) (diffusers "scaled_linear", LDM/ComfyUI "linear"): SD 1.x/2.x.
    ScaledLinear,
    /// Linear in beta (diffusers "linear", the original DDPM).
    Linear,
}

impl BetaSchedule {
    /// Parses diffusers' `beta_schedule` names.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "scaled_linear" => Ok(Self::ScaledLinear),
            "linear" => Ok(Self::Linear),
            other => Err(ModelError::Other(format!(
                "unknown beta schedule {other:?} (expected \"scaled_linear\" or \"linear\")"
            ))),
        }
    }
}

/// The sigma schedules a sampler can run on (ComfyUI's scheduler names, in its menu order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// Every `train_steps / steps`-th training sigma from the top.
    Simple,
    /// `steps + 1` evenly spaced timesteps with the last dropped (SGM/SDXL style).
    SgmUniform,
    /// Karras et al. (2022) rho=7 spacing between sigma_max and sigma_min.
    Karras,
    /// Evenly spaced in log sigma.
    Exponential,
    /// DDIM's "leading" spacing with offset 1: training sigmas at timesteps 1, 1 + k, 1 + 2k,
    /// ... below the training length, for k = train_steps / steps (so ComfyUI's few extra steps
    /// when `steps` does not divide the training steps).
    DdimUniform,
    /// Training sigmas at the quantiles of a Beta(0.6, 0.6) distribution (Lee et al. 2024,
    /// arXiv 2407.12173): more steps at both ends; repeated timesteps are dropped.
    Beta,
    /// Timesteps evenly spaced from the last to the first training step.
    Normal,
    /// Mochi's schedule: linear in 1 - sigma / sigma_max for the first half of the steps (down to
    /// 0.025), quadratic after.
    LinearQuadratic,
    /// "Align your steps"-style KL-optimal spacing: evenly spaced in atan(sigma).
    KlOptimal,
}

impl ScheduleKind {
    pub const NAMES: [&'static str; 9] = [
        "simple",
        "sgm_uniform",
        "karras",
        "exponential",
        "ddim_uniform",
        "beta",
        "normal",
        "linear_quadratic",
        "kl_optimal",
    ];

    const ALL: [Self; 9] = [
        Self::Simple,
        Self::SgmUniform,
        Self::Karras,
        Self::Exponential,
        Self::DdimUniform,
        Self::Beta,
        Self::Normal,
        Self::LinearQuadratic,
        Self::KlOptimal,
    ];

    pub fn from_name(name: &str) -> Result<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| {
                ModelError::Other(format!(
                    "unknown schedule {name:?} (expected one of {})",
                    Self::NAMES.join(", ")
                ))
            })
    }

    pub fn name(self) -> &'static str {
        let index = Self::ALL
            .iter()
            .position(|k| *k == self)
            .expect("every kind is listed in ALL");
        Self::NAMES[index]
    }
}

/// The training noise levels of a discrete-time model, one sigma per training step (ascending),
/// with conversions between sigma and a (fractional) timestep.
#[derive(Clone, Debug)]
pub struct DiscreteSchedule {
    sigmas: Vec<f64>,
    log_sigmas: Vec<f64>,
}

impl DiscreteSchedule {
    /// Computed in f64 (as ComfyUI's `make_beta_schedule` does) and kept in f64.
    pub fn new(
        beta_schedule: BetaSchedule,
        beta_start: f64,
        beta_end: f64,
        train_steps: usize,
    ) -> Result<Self> {
        let valid = |b: f64| b.is_finite() && b > 0.0 && b < 1.0;
        if train_steps < 2 || !valid(beta_start) || !valid(beta_end) {
            return Err(ModelError::Other(format!(
                "invalid noise schedule: beta_start {beta_start}, beta_end {beta_end}, \
                 {train_steps} training steps"
            )));
        }
        let betas: Vec<f64> = match beta_schedule {
            BetaSchedule::ScaledLinear => linspace(beta_start.sqrt(), beta_end.sqrt(), train_steps)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            BetaSchedule::Linear => linspace(beta_start, beta_end, train_steps),
        };
        let mut alpha_cumprod = 1.0;
        let sigmas: Vec<f64> = betas
            .iter()
            .map(|beta| {
                alpha_cumprod *= 1.0 - beta;
                ((1.0 - alpha_cumprod) / alpha_cumprod).sqrt()
            })
            .collect();
        let log_sigmas = sigmas.iter().map(|s| s.ln()).collect();
        Ok(Self { sigmas, log_sigmas })
    }

    /// Stable Diffusion 1.x/2.x: scaled_linear betas 0.00085..0.012 over 1000 steps.
    pub fn stable_diffusion() -> Self {
        Self::new(BetaSchedule::ScaledLinear, 0.00085, 0.012, 1000)
            .expect("the SD noise schedule constants are valid")
    }

    /// One sigma per training step, ascending with the timestep.
    pub fn train_sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    pub fn sigma_min(&self) -> f64 {
        self.sigmas[0]
    }

    pub fn sigma_max(&self) -> f64 {
        self.sigmas[self.sigmas.len() - 1]
    }

    /// Fractional timestep of `sigma` by linear interpolation in log sigma (k-diffusion's
    /// `sigma_to_t`, diffusers' `_sigma_to_t`); clamped to [0, train_steps - 1].
    pub fn sigma_to_timestep(&self, sigma: f64) -> f64 {
        let log_sigma = sigma.max(1e-10).ln();
        let n = self.log_sigmas.len();
        // Index of the last training log sigma <= log_sigma, kept one below the end.
        let below = self.log_sigmas.partition_point(|&l| l <= log_sigma);
        let low = below.saturating_sub(1).min(n - 2);
        let (low_log, high_log) = (self.log_sigmas[low], self.log_sigmas[low + 1]);
        let w = ((low_log - log_sigma) / (low_log - high_log)).clamp(0.0, 1.0);
        low as f64 + w
    }

    /// The training step nearest to `sigma` in log sigma (ComfyUI's `timestep`, k-diffusion's
    /// `quantize=True`), as real UNets were trained on integer timesteps.
    pub fn sigma_to_timestep_quantized(&self, sigma: f64) -> f64 {
        self.sigma_to_timestep(sigma).round()
    }

    /// Sigma at a fractional timestep, interpolating log sigma (ComfyUI's `sigma`).
    pub fn timestep_to_sigma(&self, timestep: f64) -> f64 {
        let t = timestep.clamp(0.0, (self.sigmas.len() - 1) as f64);
        let low = t.floor() as usize;
        let high = t.ceil() as usize;
        let w = t - low as f64;
        ((1.0 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()
    }

    /// The sigma `percent` of the way through the schedule, 0 the noisiest end (ComfyUI's
    /// `ModelSamplingDiscrete.percent_to_sigma`; beyond the ends: a huge sigma, or 0).
    pub fn percent_to_sigma(&self, percent: f64) -> f64 {
        if percent <= 0.0 {
            return 999_999_999.9;
        }
        if percent >= 1.0 {
            return 0.0;
        }
        self.timestep_to_sigma((1.0 - percent) * (self.sigmas.len() - 1) as f64)
    }

    /// `steps + 1` sigmas, descending, the last one 0.
    pub fn sigmas(&self, kind: ScheduleKind, steps: usize) -> Result<Vec<f64>> {
        if steps == 0 {
            return Err(ModelError::Other("a schedule needs at least 1 step".into()));
        }
        if steps > MAX_SCHEDULE_STEPS {
            return Err(ModelError::Other(format!(
                "a schedule of {steps} steps is too long (at most {MAX_SCHEDULE_STEPS}; \
                 a very small denoise asks for steps / denoise)"
            )));
        }
        // ComfyUI keeps the training sigmas, and computes every schedule, in float32 (the
        // Brownian tree of the SDE samplers resolves sigmas to 6 decimals, so a last-digit
        // difference changes their noise): the same torch operations in the same order here.
        let (sigma_min, sigma_max) = (to_f32(self.sigma_min()), to_f32(self.sigma_max()));
        let mut sigmas: Vec<f64> = match kind {
            ScheduleKind::Normal | ScheduleKind::SgmUniform => {
                let start = self.sigma_to_timestep_quantized(sigma_max);
                let end = self.sigma_to_timestep_quantized(sigma_min);
                let timesteps = if kind == ScheduleKind::SgmUniform {
                    let t = Tensor::linspace(start, end, (steps + 1) as i64, FLOAT32);
                    t.narrow(0, 0, steps as i64)
                } else {
                    Tensor::linspace(start, end, steps as i64, FLOAT32)
                };
                // ComfyUI evaluates `sigma(t)` one timestep at a time, in float32.
                let log_sigmas = self.log_sigmas_f32();
                (0..steps as i64)
                    .map(|i| self.timestep_to_sigma_f32(&log_sigmas, &timesteps.get(i)))
                    .collect()
            }
            ScheduleKind::Karras => {
                const RHO: f64 = 7.0;
                let min_inv_rho = sigma_min.powf(1.0 / RHO);
                let max_inv_rho = sigma_max.powf(1.0 / RHO);
                let ramp = Tensor::linspace(0.0, 1.0, steps as i64, FLOAT32);
                f32_values(
                    &(ramp * (min_inv_rho - max_inv_rho) + max_inv_rho).pow_tensor_scalar(RHO),
                )
            }
            ScheduleKind::Exponential => f32_values(
                &Tensor::linspace(sigma_max.ln(), sigma_min.ln(), steps as i64, FLOAT32).exp(),
            ),
            ScheduleKind::Simple => {
                let stride = self.sigmas.len() as f64 / steps as f64;
                (0..steps)
                    .map(|i| {
                        to_f32(self.sigmas[self.sigmas.len() - 1 - (i as f64 * stride) as usize])
                    })
                    .collect()
            }
            ScheduleKind::DdimUniform => {
                // ComfyUI's loop: every k-th training sigma from timestep 1 while below the
                // training length (so a few more than `steps` when `steps` does not divide it).
                let train_steps = self.sigmas.len();
                let stride = (train_steps / steps).max(1);
                let mut picked: Vec<f64> = (1..train_steps)
                    .step_by(stride)
                    .map(|t| to_f32(self.sigmas[t]))
                    .collect();
                picked.reverse();
                picked
            }
            ScheduleKind::Beta => {
                const ALPHA: f64 = 0.6;
                const BETA: f64 = 0.6;
                let last = (self.sigmas.len() - 1) as f64;
                let mut picked = Vec::with_capacity(steps);
                let mut last_t = -1.0;
                for i in 0..steps {
                    let q = 1.0 - i as f64 * (1.0 / steps as f64);
                    let t = round_half_even(beta_quantile(q, ALPHA, BETA) * last);
                    if t != last_t {
                        picked.push(to_f32(self.sigmas[t as usize]));
                    }
                    last_t = t;
                }
                picked
            }
            ScheduleKind::LinearQuadratic => {
                // The schedule ends at sigma 0 by itself; the push below is undone.
                let schedule: Vec<f32> = linear_quadratic(steps, 0.025)
                    .into_iter()
                    .map(|x| x as f32)
                    .collect();
                let sigma_max = Tensor::from(sigma_max as f32);
                let mut sigmas = f32_values(&(Tensor::from_slice(&schedule) * sigma_max));
                sigmas.pop();
                sigmas
            }
            ScheduleKind::KlOptimal => {
                if steps == 1 {
                    // ComfyUI divides by zero here (NaN); the limit is sigma_max.
                    vec![sigma_max]
                } else {
                    let w = Tensor::arange(steps as i64, FLOAT32) / (steps - 1) as i64;
                    let mixed = &w * sigma_min.atan() + (w.ones_like() - &w) * sigma_max.atan();
                    f32_values(&mixed.tan())
                }
            }
        };
        sigmas.push(0.0);
        Ok(sigmas)
    }

    /// The schedule for img2img with strength `denoise` (ComfyUI's `KSampler.set_steps`): the
    /// last `steps + 1` sigmas of a `floor(steps / denoise)`-step schedule. `denoise` >= 0.9999
    /// is the full schedule; 0 gives no sigmas (the latent is returned unchanged).
    pub fn sigmas_for_denoise(
        &self,
        kind: ScheduleKind,
        steps: usize,
        denoise: f64,
    ) -> Result<Vec<f64>> {
        if !(0.0..=1.0).contains(&denoise) {
            return Err(ModelError::Other(format!(
                "denoise must be in [0, 1], got {denoise}"
            )));
        }
        if steps > MAX_STEPS {
            return Err(ModelError::Other(format!(
                "{steps} steps is too many (at most {MAX_STEPS})"
            )));
        }
        if denoise > 0.9999 {
            return self.sigmas(kind, steps);
        }
        if denoise <= 0.0 {
            return Ok(Vec::new());
        }
        let total_steps = (steps as f64 / denoise) as usize;
        let full = self.sigmas(kind, total_steps)?;
        Ok(full[full.len() - (steps + 1)..].to_vec())
    }

    /// The training log sigmas in float32 (ComfyUI's `log_sigmas` buffer).
    fn log_sigmas_f32(&self) -> Vec<f32> {
        self.log_sigmas.iter().map(|l| *l as f32).collect()
    }

    /// ComfyUI's `ModelSamplingDiscrete.sigma(t)` of a 0-dim float32 timestep, in float32.
    fn timestep_to_sigma_f32(&self, log_sigmas: &[f32], t: &Tensor) -> f64 {
        let t = t.clamp(0.0, (log_sigmas.len() - 1) as f64);
        let low = t.floor().double_value(&[]) as usize;
        let high = t.ceil().double_value(&[]) as usize;
        let w = t.frac();
        let low_log = Tensor::from(log_sigmas[low]);
        let high_log = Tensor::from(log_sigmas[high]);
        let log_sigma = (w.ones_like() - &w) * low_log + &w * high_log;
        log_sigma.exp().double_value(&[])
    }

    /// The sigmas a sampler runs on: [`Self::sigmas_for_denoise`], except that samplers which
    /// discard the penultimate sigma (ComfyUI's dpm_2, dpm_2_ancestral, uni_pc, uni_pc_bh2) get
    /// each schedule computed for one step more with its second-to-last sigma dropped.
    pub fn sampler_sigmas(
        &self,
        kind: ScheduleKind,
        steps: usize,
        denoise: f64,
        discard_penultimate: bool,
    ) -> Result<Vec<f64>> {
        if !discard_penultimate {
            return self.sigmas_for_denoise(kind, steps, denoise);
        }
        let discarding = |n: usize| -> Result<Vec<f64>> {
            let mut sigmas = self.sigmas(kind, n + 1)?;
            let len = sigmas.len();
            if len >= 2 {
                sigmas.remove(len - 2);
            }
            Ok(sigmas)
        };
        if !(0.0..=1.0).contains(&denoise) {
            return Err(ModelError::Other(format!(
                "denoise must be in [0, 1], got {denoise}"
            )));
        }
        if denoise > 0.9999 {
            return discarding(steps);
        }
        if denoise <= 0.0 {
            return Ok(Vec::new());
        }
        let full = discarding((steps as f64 / denoise) as usize)?;
        Ok(full[full.len().saturating_sub(steps + 1)..].to_vec())
    }

    /// Whether `first_sigma` starts from (or above) pure noise, in which case the initial noise
    /// is scaled by sqrt(1 + sigma^2) rather than sigma (ComfyUI's `max_denoise`).
    pub fn is_max_denoise(&self, first_sigma: f64) -> bool {
        let max = self.sigma_max();
        first_sigma > max || (first_sigma - max).abs() <= 1e-5 * first_sigma.abs().max(max.abs())
    }
}

const FLOAT32: (tch::Kind, tch::Device) = (tch::Kind::Float, tch::Device::Cpu);

/// `x` rounded to float32, as ComfyUI's float32 sigma buffers hold it.
fn to_f32(x: f64) -> f64 {
    f64::from(x as f32)
}

/// The values of a 1-D float32 tensor.
fn f32_values(t: &Tensor) -> Vec<f64> {
    Vec::<f32>::try_from(&t.to_kind(tch::Kind::Float).contiguous().view(-1))
        .expect("a 1-D float tensor")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Mochi's linear-quadratic schedule in [0, 1] (1 first, 0 last), `steps + 1` values
/// (ComfyUI's `linear_quadratic_schedule` before scaling by sigma_max).
fn linear_quadratic(steps: usize, threshold_noise: f64) -> Vec<f64> {
    if steps == 1 {
        return vec![1.0, 0.0];
    }
    let linear_steps = steps / 2;
    let (n, lin) = (steps as f64, linear_steps as f64);
    let mut schedule: Vec<f64> = (0..linear_steps)
        .map(|i| i as f64 * threshold_noise / lin)
        .collect();
    let threshold_noise_step_diff = lin - threshold_noise * n;
    let quadratic_steps = n - lin;
    let quadratic_coef = threshold_noise_step_diff / (lin * (quadratic_steps * quadratic_steps));
    let linear_coef = threshold_noise / lin
        - 2.0 * threshold_noise_step_diff / (quadratic_steps * quadratic_steps);
    let constant = quadratic_coef * (lin * lin);
    schedule.extend((linear_steps..steps).map(|i| {
        let i = i as f64;
        quadratic_coef * (i * i) + linear_coef * i + constant
    }));
    schedule.push(1.0);
    schedule.into_iter().map(|x| 1.0 - x).collect()
}

/// numpy's `rint`: to the nearest integer, ties to even.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn incomplete_beta_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let fix = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / fix(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..1000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / fix(1.0 + aa * d);
        c = fix(1.0 + aa / c);
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / fix(1.0 + aa * d);
        c = fix(1.0 + aa / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// x^a (1 - x)^b / a times the continued fraction: B(x; a, b), the unnormalised incomplete
/// beta function, accurate for x below about (a + 1) / (a + b + 2).
fn incomplete_beta_lower(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    (a * x.ln() + b * (1.0 - x).ln()).exp() * incomplete_beta_fraction(a, b, x) / a
}

/// The regularised incomplete beta function I_x(a, b) (the Beta(a, b) CDF).
fn beta_cdf(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let split = (a + 1.0) / (a + b + 2.0);
    let total = incomplete_beta_lower(a, b, split) + incomplete_beta_lower(b, a, 1.0 - split);
    if x < split {
        incomplete_beta_lower(a, b, x) / total
    } else {
        1.0 - incomplete_beta_lower(b, a, 1.0 - x) / total
    }
}

/// The Beta(a, b) quantile function (scipy's `beta.ppf`), by bisection to full precision.
fn beta_quantile(q: f64, a: f64, b: f64) -> f64 {
    if q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 1.0;
    }
    // A symmetric distribution's median is exactly 1/2 (an even step count asks for it, and
    // 0.5 * 999 must round to 500 as scipy's exact 0.5 does).
    if a == b && q == 0.5 {
        return 0.5;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if beta_cdf(mid, a, b) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// `n` evenly spaced values from `start` to `end` inclusive (numpy/torch `linspace`).
pub fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            (0..n)
                .map(|i| {
                    // Anchor the second half on `end` so the last value is exact (as torch does).
                    if i < n / 2 {
                        start + step * i as f64
                    } else {
                        end - step * (n - 1 - i) as f64
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd() -> DiscreteSchedule {
        DiscreteSchedule::stable_diffusion()
    }

    fn assert_descending_to_zero(sigmas: &[f64], what: &str) {
        assert_eq!(*sigmas.last().unwrap(), 0.0, "{what}: last sigma");
        for pair in sigmas.windows(2) {
            assert!(pair[0] > pair[1], "{what}: not descending: {sigmas:?}");
        }
    }

    #[test]
    fn sd_training_sigmas_span_the_known_range() {
        let s = sd();
        assert!((s.sigma_min() - 0.029168).abs() < 1e-5, "{}", s.sigma_min());
        assert!(
            (s.sigma_max() - 14.614642).abs() < 1e-5,
            "{}",
            s.sigma_max()
        );
    }

    #[test]
    fn every_schedule_descends_to_zero_with_steps_plus_one_sigmas() {
        let s = sd();
        for name in ScheduleKind::NAMES {
            let kind = ScheduleKind::from_name(name).unwrap();
            for steps in [1, 2, 7, 10, 25, 999] {
                let sigmas = s.sigmas(kind, steps).unwrap();
                let what = format!("{name} x{steps}");
                match kind {
                    // Beta drops repeated timesteps; ddim_uniform adds a few when `steps` does
                    // not divide the training steps (both as ComfyUI).
                    ScheduleKind::Beta => assert!(sigmas.len() <= steps + 1, "{what}"),
                    ScheduleKind::DdimUniform => assert!(sigmas.len() > steps, "{what}"),
                    _ => assert_eq!(sigmas.len(), steps + 1, "{what}: length"),
                }
                assert_descending_to_zero(&sigmas, &what);
            }
        }
    }

    #[test]
    fn karras_and_exponential_start_at_sigma_max_and_end_at_sigma_min() {
        let s = sd();
        for kind in [
            ScheduleKind::Karras,
            ScheduleKind::Exponential,
            ScheduleKind::Normal,
        ] {
            // float32 schedules (ComfyUI's): within float32 rounding of the float64 ends.
            let sigmas = s.sigmas(kind, 20).unwrap();
            assert!((sigmas[0] / s.sigma_max() - 1.0).abs() < 1e-6, "{kind:?}");
            assert!((sigmas[19] / s.sigma_min() - 1.0).abs() < 1e-6, "{kind:?}");
        }
    }

    #[test]
    fn simple_takes_training_sigmas_from_the_top() {
        let s = sd();
        let sigmas = s.sigmas(ScheduleKind::Simple, 4).unwrap();
        let train = s.train_sigmas();
        let expected: Vec<f64> = [train[999], train[749], train[499], train[249], 0.0]
            .iter()
            .map(|s| to_f32(*s))
            .collect();
        assert_eq!(sigmas, expected);
    }

    #[test]
    fn ddim_uniform_uses_leading_timesteps_with_offset_one() {
        let s = sd();
        let sigmas = s.sigmas(ScheduleKind::DdimUniform, 10).unwrap();
        let train = s.train_sigmas();
        let expected: Vec<f64> = (0..10)
            .rev()
            .map(|i| to_f32(train[1 + 100 * i]))
            .chain([0.0])
            .collect();
        assert_eq!(sigmas, expected);
    }

    #[test]
    fn sgm_uniform_drops_the_last_of_steps_plus_one_timesteps() {
        let s = sd();
        let sigmas = s.sigmas(ScheduleKind::SgmUniform, 10).unwrap();
        assert!((sigmas[0] / s.sigma_max() - 1.0).abs() < 1e-6);
        assert!((sigmas[9] / s.timestep_to_sigma(99.9) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn sigma_and_timestep_round_trip() {
        let s = sd();
        for t in [0.0, 0.5, 1.0, 123.25, 500.0, 998.7, 999.0] {
            let back = s.sigma_to_timestep(s.timestep_to_sigma(t));
            assert!((back - t).abs() < 1e-6, "{t} -> {back}");
        }
        assert_eq!(s.sigma_to_timestep(0.0), 0.0);
        assert_eq!(s.sigma_to_timestep(1e6), 999.0);
        assert_eq!(
            s.sigma_to_timestep_quantized(s.timestep_to_sigma(41.4)),
            41.0
        );
        assert_eq!(
            s.sigma_to_timestep_quantized(s.timestep_to_sigma(41.6)),
            42.0
        );
    }

    #[test]
    fn img2img_keeps_the_tail_of_a_longer_schedule() {
        let s = sd();
        let full = s.sigmas(ScheduleKind::Normal, 20).unwrap();
        let half = s.sigmas_for_denoise(ScheduleKind::Normal, 10, 0.5).unwrap();
        assert_eq!(half, full[10..].to_vec());
        // floor(10 / 0.3) = 33 steps, keep the last 11 sigmas.
        let tail = s.sigmas_for_denoise(ScheduleKind::Karras, 10, 0.3).unwrap();
        let long = s.sigmas(ScheduleKind::Karras, 33).unwrap();
        assert_eq!(tail, long[23..].to_vec());
        assert!(!s.is_max_denoise(tail[0]));
        assert!(s.is_max_denoise(full[0]));
        assert_eq!(
            s.sigmas_for_denoise(ScheduleKind::Normal, 10, 1.0).unwrap(),
            s.sigmas(ScheduleKind::Normal, 10).unwrap()
        );
        assert!(s
            .sigmas_for_denoise(ScheduleKind::Normal, 10, 0.0)
            .unwrap()
            .is_empty());
        assert!(s.sigmas_for_denoise(ScheduleKind::Normal, 10, 1.5).is_err());
        assert!(s
            .sigmas_for_denoise(ScheduleKind::Normal, 10, f64::NAN)
            .is_err());
    }

    #[test]
    fn linear_betas_are_accepted_and_differ() {
        let linear = DiscreteSchedule::new(
            BetaSchedule::from_name("linear").unwrap(),
            0.00085,
            0.012,
            1000,
        )
        .unwrap();
        assert!(linear.sigma_max() > sd().sigma_max());
        assert!(BetaSchedule::from_name("cosine").is_err());
        assert!(DiscreteSchedule::new(BetaSchedule::Linear, 0.0, 0.012, 1000).is_err());
        assert!(ScheduleKind::from_name("bogus").is_err());
        assert!(sd().sigmas(ScheduleKind::Normal, 0).is_err());
        assert_eq!(
            sd().sigmas(ScheduleKind::DdimUniform, 1000).unwrap().len(),
            1000
        );
    }

    #[test]
    fn linspace_matches_numpy_endpoints() {
        assert_eq!(linspace(999.0, 0.0, 10)[9], 0.0);
        assert_eq!(linspace(999.0, 0.0, 10)[1], 888.0);
        assert_eq!(linspace(2.0, 5.0, 1), vec![2.0]);
    }
}
