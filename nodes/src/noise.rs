//! Seeded Gaussian noise, made on the CPU so a seed gives the same image on every device:
//! the initial latent noise equals PyTorch's `torch.manual_seed(seed); torch.randn(shape)`
//! (ComfyUI's `prepare_noise`), and sampler step noise is drawn the same way from a seed derived
//! from (seed, step).
//!
//! tch 0.24 exposes no local generator, only libtorch's global one (`tch::manual_seed`, which
//! also reseeds the CUDA generators). Each draw therefore reseeds it and samples while holding
//! [`GLOBAL_RNG`], so draws in this crate never interleave, and what other code drew from the
//! global generator before cannot change the result. Code outside this module that uses the
//! global generator concurrently must take the same lock. (The engine runs nodes on one worker
//! thread, so in practice only tests run in parallel.)
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result, TchContext};

/// Guards libtorch's global CPU generator between seeding and drawing.
pub static GLOBAL_RNG: Mutex<()> = Mutex::new(());

/// `torch.manual_seed(seed); torch.randn(shape)` (float32, CPU), then moved to `device` and
/// converted to `kind`.
pub fn initial_noise(seed: u64, shape: &[i64], device: Device, kind: Kind) -> Result<Tensor> {
    let noise = {
        // A poisoned lock only means another draw panicked; the generator is reseeded anyway.
        let _guard = GLOBAL_RNG
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // libtorch takes the seed as uint64; tch passes it as i64: same bits.
        tch::manual_seed(seed as i64);
        Tensor::f_randn(shape, (Kind::Float, Device::Cpu))
            .context(|| format!("drawing noise of shape {shape:?} for seed {seed}"))?
    };
    Ok(noise.to_device(device).to_kind(kind))
}

/// SplitMix64's output function (Steele et al. 2014): spreads nearby inputs over all 64 bits.
fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The torch seed of sampler step `step`'s noise in a run seeded with `seed`. Hashed, so that a
/// run's step noise does not repeat the initial noise of the run with the next seed (seed + 1).
pub fn step_seed(seed: u64, step: usize) -> u64 {
    splitmix64(seed ^ (step as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// Sampler step noise: step `i` draws `initial_noise(step_seed(seed, i), ...)`, so each step's
/// noise depends only on (seed, step), not on how many draws came before.
pub struct SeededNoise {
    seed: u64,
}

impl SeededNoise {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }
}

impl NoiseSource for SeededNoise {
    fn noise(&mut self, step: usize, like: &Tensor) -> Result<Tensor> {
        initial_noise(
            step_seed(self.seed, step),
            &like.size(),
            like.device(),
            like.kind(),
        )
    }
}

/// Standard normal noise for the stochastic part of sampler step `step`.
pub trait NoiseSource {
    /// Noise with the shape, device and kind of `like`.
    fn noise(&mut self, step: usize, like: &Tensor) -> Result<Tensor>;
}

/// Noise given in advance, one tensor per step (tests and reproductions of other tools' runs).
pub struct FixedNoise(pub Vec<Tensor>);

impl NoiseSource for FixedNoise {
    fn noise(&mut self, step: usize, like: &Tensor) -> Result<Tensor> {
        let noise = self.0.get(step).ok_or_else(|| {
            ModelError::Other(format!(
                "fixed noise: no noise for step {step} ({} given)",
                self.0.len()
            ))
        })?;
        if noise.size() != like.size() {
            return Err(ModelError::Shape {
                context: format!("fixed noise for step {step}"),
                message: format!("shape {:?}, latent {:?}", noise.size(), like.size()),
            });
        }
        Ok(noise.to_device(like.device()).to_kind(like.kind()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_noise_and_other_draws_do_not_interfere() {
        let a = initial_noise(5, &[2, 3], Device::Cpu, Kind::Float).unwrap();
        let _ = Tensor::randn([7], (Kind::Float, Device::Cpu));
        let b = initial_noise(5, &[2, 3], Device::Cpu, Kind::Float).unwrap();
        assert!(a.equal(&b));
        let c = initial_noise(6, &[2, 3], Device::Cpu, Kind::Float).unwrap();
        assert!(!a.equal(&c));
        let half = initial_noise(5, &[2, 3], Device::Cpu, Kind::Half).unwrap();
        assert_eq!(half.kind(), Kind::Half);
    }

    #[test]
    fn step_seeds_differ_from_neighbouring_run_seeds() {
        let seeds: Vec<u64> = (0..4).map(|i| step_seed(10, i)).collect();
        for (i, s) in seeds.iter().enumerate() {
            assert!(!(9..=14).contains(s));
            assert!(!seeds[i + 1..].contains(s));
        }
        assert_ne!(step_seed(10, 0), step_seed(11, 0));
    }
}
