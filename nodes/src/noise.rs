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

/// The initial noise of a batch whose parts have their own seeds: part i (`part_shape`, batch
/// `part_shape[0]`) is [`initial_noise`] of `seeds[i]`, so each part is what its seed alone
/// would start from; the parts are concatenated along the batch.
pub fn initial_noise_per_seed(
    seeds: &[u64],
    part_shape: &[i64],
    device: Device,
    kind: Kind,
) -> Result<Tensor> {
    let parts = seeds
        .iter()
        .map(|&seed| initial_noise(seed, part_shape, device, kind))
        .collect::<Result<Vec<_>>>()?;
    Tensor::f_cat(&parts, 0).context(|| format!("joining the noise of {} seeds", seeds.len()))
}

/// Draws of step noise are made this many values at a time at most, so a long run of large
/// latents never holds more than 64 MiB of drawn-ahead noise.
const MAX_VALUES_PER_DRAW: i64 = 16 << 20;

/// Sampler step noise as ComfyUI draws it on the CPU for a seed: ancestral samplers (and LCM,
/// res_multistep, ...) take consecutive `randn(shape)` draws from one generator seeded with
/// `seed + 1` (k-diffusion's `default_noise_sampler`), and the SDE samplers ask a Brownian tree
/// seeded with `seed` ([`crate::samplers::brownian`], ComfyUI's `BrownianTreeNoiseSampler`).
///
/// libtorch's global generator cannot be kept between draws (see the module doc), so the
/// sequence is drawn ahead: the first draw reseeds the generator and draws as many as the run
/// is expected to take ([`SeededNoise::expecting`]) in one `randn`, which torch fills 16
/// values at a time, so when a draw's size is a multiple of 16 one `randn` of k draws' size
/// equals k draws one after another. A run that asks for more (or a size that is not a
/// multiple of 16) reseeds and replays what was handed out before, then draws at least as many
/// again: O(k) values drawn for k steps, as one generator kept alive would draw.
pub struct SeededNoise {
    seed: u64,
    /// Draws handed out so far (the position in the sequence).
    draws: usize,
    /// Draws made ahead of the position, of `ahead_shape`.
    ahead: std::collections::VecDeque<Tensor>,
    ahead_shape: Vec<i64>,
    /// How many draws the first refill makes.
    expected: usize,
    brownian: Option<crate::samplers::brownian::BrownianNoise>,
}

impl SeededNoise {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            draws: 0,
            ahead: std::collections::VecDeque::new(),
            ahead_shape: Vec::new(),
            expected: 4,
            brownian: None,
        }
    }

    /// Draws `draws` ahead at the first request (a sampler's step count): one `randn` for the
    /// whole run when it takes no more.
    pub fn expecting(mut self, draws: usize) -> Self {
        self.expected = draws.max(1);
        self
    }

    /// Reseeds, skips the `self.draws` draws handed out and draws `count` more of `shape`.
    fn refill(&mut self, shape: &[i64], count: usize) -> Result<()> {
        // ComfyUI adds 1 to the seed for a CPU noise sampler (its GPU samplers use the seed).
        let seed = self.seed.wrapping_add(1);
        let numel: i64 = shape.iter().product();
        let options = (Kind::Float, Device::Cpu);
        let context = || format!("drawing step noise of shape {shape:?} for seed {seed}");
        self.ahead.clear();
        self.ahead_shape = shape.to_vec();
        let _guard = GLOBAL_RNG
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tch::manual_seed(seed as i64);
        if numel >= 16 && numel % 16 == 0 {
            // Whole draws per randn, at most MAX_VALUES_PER_DRAW values (at least one draw).
            let per_randn = (MAX_VALUES_PER_DRAW / numel).max(1) as usize;
            let mut skip = self.draws;
            while skip > 0 {
                let n = skip.min(per_randn);
                let _ = Tensor::f_randn([numel * n as i64], options).context(context)?;
                skip -= n;
            }
            let mut left = count;
            while left > 0 {
                let n = left.min(per_randn);
                let drawn = Tensor::f_randn([numel * n as i64], options).context(context)?;
                for i in 0..n as i64 {
                    self.ahead
                        .push_back(drawn.narrow(0, i * numel, numel).reshape(shape));
                }
                left -= n;
            }
        } else {
            // Below 16 values torch draws each value on its own, and a size that is not a
            // multiple of 16 redraws its last 16: only the draws of this size replay it.
            for _ in 0..self.draws {
                let _ = Tensor::f_randn(shape, options).context(context)?;
            }
            for _ in 0..count {
                self.ahead
                    .push_back(Tensor::f_randn(shape, options).context(context)?);
            }
        }
        Ok(())
    }
}

impl NoiseSource for SeededNoise {
    /// The next draw of the sequence; `step` is ignored (ComfyUI counts draws, not steps).
    fn noise(&mut self, _step: usize, like: &Tensor) -> Result<Tensor> {
        let shape = like.size();
        if self.ahead_shape != shape {
            // Samplers draw one shape per run; a new shape continues the sequence afresh.
            self.ahead.clear();
        }
        if self.ahead.is_empty() {
            let count = if self.draws == 0 {
                self.expected
            } else {
                self.draws.max(4)
            };
            self.refill(&shape, count)?;
        }
        let noise = self.ahead.pop_front().expect("refilled above");
        self.draws += 1;
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

/// Step noise for a batch whose equal parts along the batch have their own seeds: part i draws
/// from `SeededNoise::new(seeds[i])` with the part's shape, so each part gets exactly the noise
/// its seed gives when sampled alone (a sweep's seeds sampled as one batch).
pub struct PerSeedNoise {
    parts: Vec<SeededNoise>,
}

impl PerSeedNoise {
    pub fn new(seeds: &[u64], expected_draws: usize) -> Self {
        Self {
            parts: seeds
                .iter()
                .map(|&seed| SeededNoise::new(seed).expecting(expected_draws))
                .collect(),
        }
    }

    /// `like` cut into the parts' slices along the batch.
    fn slices(&self, like: &Tensor) -> Result<Vec<Tensor>> {
        let batch = like.size().first().copied().unwrap_or(0);
        let parts = self.parts.len() as i64;
        if parts == 0 || batch % parts != 0 {
            return Err(ModelError::Shape {
                context: "step noise per seed".into(),
                message: format!("a batch of {batch} cannot be cut into {parts} equal parts"),
            });
        }
        let per = batch / parts;
        Ok((0..parts).map(|i| like.narrow(0, i * per, per)).collect())
    }

    fn join(parts: Vec<Tensor>) -> Result<Tensor> {
        Tensor::f_cat(&parts, 0).context(|| "joining step noise per seed".to_string())
    }
}

impl NoiseSource for PerSeedNoise {
    fn noise(&mut self, step: usize, like: &Tensor) -> Result<Tensor> {
        let slices = self.slices(like)?;
        let drawn = self
            .parts
            .iter_mut()
            .zip(&slices)
            .map(|(part, slice)| part.noise(step, slice))
            .collect::<Result<Vec<_>>>()?;
        Self::join(drawn)
    }

    fn sde_noise(
        &mut self,
        step: usize,
        sigmas: &[f64],
        sigma: f64,
        sigma_next: f64,
        like: &Tensor,
    ) -> Result<Tensor> {
        let slices = self.slices(like)?;
        let drawn = self
            .parts
            .iter_mut()
            .zip(&slices)
            .map(|(part, slice)| part.sde_noise(step, sigmas, sigma, sigma_next, slice))
            .collect::<Result<Vec<_>>>()?;
        Self::join(drawn)
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

    /// `count` consecutive `randn(shape)` draws of one generator seeded with `seed`.
    fn sequential_draws(seed: u64, shape: &[i64], count: usize) -> Vec<Tensor> {
        let _guard = GLOBAL_RNG.lock().unwrap_or_else(|p| p.into_inner());
        tch::manual_seed(seed as i64);
        (0..count)
            .map(|_| Tensor::randn(shape, (Kind::Float, Device::Cpu)))
            .collect()
    }

    #[test]
    fn drawing_ahead_and_refilling_give_the_draws_of_one_generator() {
        // 64 values (one randn for many draws), 6 values (drawn one at a time) and 40 values
        // (a multiple of 8 but not of 16: torch redraws the tail of each draw).
        for shape in [vec![1i64, 4, 4, 4], vec![2, 3], vec![1, 5, 8]] {
            let like = Tensor::zeros(shape.as_slice(), (Kind::Float, Device::Cpu));
            let expected = sequential_draws(12, &shape, 11);
            // Expecting 3 draws: the run outgrows it twice (refills replay what went before).
            let mut seeded = SeededNoise::new(11).expecting(3);
            for (k, want) in expected.iter().enumerate() {
                let got = seeded.noise(k, &like).unwrap();
                assert!(got.equal(want), "shape {shape:?}, draw {k}");
            }
        }
    }

    #[test]
    fn per_seed_noise_gives_each_part_of_the_batch_its_own_seeds_noise() {
        let seeds = [3u64, 40, 3, 7];
        let part = [1i64, 4, 2, 2];
        let batch = Tensor::zeros([4, 4, 2, 2], (Kind::Float, Device::Cpu));
        let initial = initial_noise_per_seed(&seeds, &part, Device::Cpu, Kind::Float).unwrap();
        let mut per_seed = PerSeedNoise::new(&seeds, 2);
        let steps: Vec<Tensor> = (0..5).map(|k| per_seed.noise(k, &batch).unwrap()).collect();
        for (i, &seed) in seeds.iter().enumerate() {
            let alone = initial_noise(seed, &part, Device::Cpu, Kind::Float).unwrap();
            assert!(
                initial.narrow(0, i as i64, 1).equal(&alone),
                "initial, part {i}"
            );
            let mut seeded = SeededNoise::new(seed);
            let like = Tensor::zeros(part, (Kind::Float, Device::Cpu));
            for (k, step) in steps.iter().enumerate() {
                let want = seeded.noise(k, &like).unwrap();
                assert!(
                    step.narrow(0, i as i64, 1).equal(&want),
                    "part {i}, draw {k}"
                );
            }
        }
        // Parts 0 and 2 share a seed, parts 0 and 1 do not.
        assert!(steps[0].get(0).equal(&steps[0].get(2)));
        assert!(!steps[0].get(0).equal(&steps[0].get(1)));
        let odd = Tensor::zeros([3, 4, 2, 2], (Kind::Float, Device::Cpu));
        let err = per_seed.noise(5, &odd).unwrap_err().to_string();
        assert!(err.contains("3") && err.contains("4 equal parts"), "{err}");
    }
}
