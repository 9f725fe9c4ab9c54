//! Seeded Gaussian noise, made on the CPU so a seed gives the same image on every device:
//! the initial latent noise equals PyTorch's `torch.manual_seed(seed); torch.randn(shape)`
//! (ComfyUI's `prepare_noise`), and sampler step noise is what ComfyUI draws on the CPU for the
//! same seed ([`SeededNoise`]).
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

/// Sampler step noise as ComfyUI draws it on the CPU for a seed: ancestral samplers (and LCM,
/// res_multistep, ...) take consecutive `randn(shape)` draws from one generator seeded with
/// `seed + 1` (k-diffusion's `default_noise_sampler`), and the SDE samplers ask a Brownian tree
/// seeded with `seed` ([`crate::samplers::brownian`], ComfyUI's `BrownianTreeNoiseSampler`).
///
/// libtorch's global generator cannot be saved between draws (see the module doc), so the k-th
/// draw reseeds it and replays the k draws before it under [`GLOBAL_RNG`]: O(k^2) draws in a
/// run, a few milliseconds for SD-sized latents.
pub struct SeededNoise {
    seed: u64,
    draws: usize,
    brownian: Option<crate::samplers::brownian::BrownianNoise>,
}

impl SeededNoise {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            draws: 0,
            brownian: None,
        }
    }
}

impl NoiseSource for SeededNoise {
    /// The next draw of the sequence; `step` is ignored (ComfyUI counts draws, not steps).
    fn noise(&mut self, _step: usize, like: &Tensor) -> Result<Tensor> {
        let shape = like.size();
        let skip = self.draws;
        self.draws += 1;
        // ComfyUI adds 1 to the seed for a CPU noise sampler (its GPU samplers use the seed).
        let seed = self.seed.wrapping_add(1);
        let noise = {
            let _guard = GLOBAL_RNG
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            tch::manual_seed(seed as i64);
            for _ in 0..skip {
                let _ = Tensor::f_randn(shape.as_slice(), (Kind::Float, Device::Cpu))
                    .context(|| format!("replaying step noise of shape {shape:?}"))?;
            }
            Tensor::f_randn(shape.as_slice(), (Kind::Float, Device::Cpu))
                .context(|| format!("drawing step noise of shape {shape:?} for seed {seed}"))?
        };
        Ok(noise.to_device(like.device()).to_kind(like.kind()))
    }

    fn sde_noise(
        &mut self,
        _step: usize,
        sigmas: &[f64],
        sigma: f64,
        sigma_next: f64,
        like: &Tensor,
    ) -> Result<Tensor> {
        let shape = like.size();
        let fits = matches!(&self.brownian, Some(tree) if tree.fits(sigmas, &shape));
        if !fits {
            self.brownian = Some(crate::samplers::brownian::BrownianNoise::for_sigmas(
                sigmas, &shape, self.seed,
            )?);
        }
        let tree = self.brownian.as_mut().expect("set above");
        let noise = tree.noise(sigma, sigma_next)?;
        Ok(noise.to_device(like.device()).to_kind(like.kind()))
    }
}

/// Standard normal noise for the stochastic part of sampler step `step`.
pub trait NoiseSource {
    /// Noise with the shape, device and kind of `like`.
    fn noise(&mut self, step: usize, like: &Tensor) -> Result<Tensor>;

    /// Unit-variance noise for an SDE (sub)step from `sigma` to `sigma_next` within a run over
    /// `sigmas`, where ComfyUI uses a Brownian tree. Sources without one give `noise(step)`.
    fn sde_noise(
        &mut self,
        step: usize,
        sigmas: &[f64],
        sigma: f64,
        sigma_next: f64,
        like: &Tensor,
    ) -> Result<Tensor> {
        let _ = (sigmas, sigma, sigma_next);
        self.noise(step, like)
    }
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
        {
            // Another draw from the global generator (under the lock, as the module asks).
            let _guard = GLOBAL_RNG.lock().unwrap_or_else(|p| p.into_inner());
            let _ = Tensor::randn([7], (Kind::Float, Device::Cpu));
        }
        let b = initial_noise(5, &[2, 3], Device::Cpu, Kind::Float).unwrap();
        assert!(a.equal(&b));
        let c = initial_noise(6, &[2, 3], Device::Cpu, Kind::Float).unwrap();
        assert!(!a.equal(&c));
        let half = initial_noise(5, &[2, 3], Device::Cpu, Kind::Half).unwrap();
        assert_eq!(half.kind(), Kind::Half);
    }

    #[test]
    fn step_noise_is_one_generator_seeded_with_seed_plus_one_drawn_in_sequence() {
        let like = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        let mut seeded = SeededNoise::new(9);
        let first = seeded.noise(0, &like).unwrap();
        let second = seeded.noise(5, &like).unwrap();
        let expected = {
            let _guard = GLOBAL_RNG.lock().unwrap_or_else(|p| p.into_inner());
            tch::manual_seed(10);
            let a = Tensor::randn([2, 3], (Kind::Float, Device::Cpu));
            let b = Tensor::randn([2, 3], (Kind::Float, Device::Cpu));
            (a, b)
        };
        assert!(first.equal(&expected.0));
        assert!(second.equal(&expected.1));
        assert!(!first.equal(&initial_noise(9, &[2, 3], Device::Cpu, Kind::Float).unwrap()));
    }
}
