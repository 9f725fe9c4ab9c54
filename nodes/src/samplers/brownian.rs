//! The Brownian tree behind ComfyUI's SDE samplers (`BrownianTreeNoiseSampler`, which wraps
//! torchsde's `BrownianTree`), so that dpmpp_sde / dpmpp_2m_sde / dpmpp_3m_sde draw the same
//! step noise as ComfyUI for a seed.
//!
//! torchsde's `BrownianTree(t0, w0, t1, entropy=seed)` is a `BrownianInterval` with
//! `halfway_tree=True`, `tol=1e-6` and `pool_size=24`: a dyadic tree over [t0, t1] whose node
//! times are rounded to 6 decimals. The root's increment is `randn * sqrt(t1 - t0)`; a child's
//! increment comes from its parent's by the Brownian bridge, with the normal draw seeded from
//! the parent's place in the tree: numpy's `SeedSequence(entropy, spawn_key=(key, depth),
//! pool_size=24)` (reimplemented below), whose first word seeds a fresh torch CPU generator.
//! A query W(tb) - W(ta) descends from the root, splitting nodes at their midpoints until
//! [ta, tb] is a union of nodes, and sums their increments. The values therefore depend only on
//! the seed and the query times, not on the order of the queries.
//!
//! Arithmetic follows torchsde's operation by operation in float32 (the tree ComfyUI builds on
//! the CPU for a float32 latent), so the increments equal torchsde's
//! (nodes/tests/comfy_samplers_parity.rs checks them against a torchsde fixture).
use std::collections::VecDeque;

use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, Result};

/// numpy's `SeedSequence` constants (numpy/random/bit_generator.pyx).
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;

/// torchsde's `BrownianTree` defaults, as ComfyUI uses them.
const POOL_SIZE: usize = 24;
const DECIMALS: i32 = 6;
/// Deeper than any tree over sigmas with 6-decimal resolution needs (range 1e6 needs 40).
const MAX_DEPTH: u32 = 62;
/// Increments kept for reuse between queries (torchsde keeps 45; more only costs memory).
const CACHE_SIZE: usize = 64;

/// An integer as numpy's SeedSequence takes it: little-endian 32-bit words, `[0]` for zero.
fn u32_words(mut n: u64) -> Vec<u32> {
    if n == 0 {
        return vec![0];
    }
    let mut words = Vec::new();
    while n > 0 {
        words.push(n as u32);
        n >>= 32;
    }
    words
}

fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut value = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    value = value.wrapping_mul(*hash_const);
    value ^ (value >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let result = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    result ^ (result >> XSHIFT)
}

/// `numpy.random.SeedSequence(entropy, spawn_key=spawn_key, pool_size=pool_size)
/// .generate_state(n_words)` (uint32 words).
pub fn seed_sequence_state(
    entropy: u64,
    spawn_key: &[u64],
    pool_size: usize,
    n_words: usize,
) -> Vec<u32> {
    let mut assembled = u32_words(entropy);
    let spawn: Vec<u32> = spawn_key.iter().flat_map(|k| u32_words(*k)).collect();
    if !spawn.is_empty() && assembled.len() < pool_size {
        // numpy pads the run entropy so that spawn keys cannot collide with longer entropy.
        assembled.resize(pool_size, 0);
    }
    assembled.extend(spawn);

    let mut pool = vec![0u32; pool_size];
    let mut hash_const = INIT_A;
    for (i, slot) in pool.iter_mut().enumerate() {
        *slot = hashmix(assembled.get(i).copied().unwrap_or(0), &mut hash_const);
    }
    for src in 0..pool_size {
        for dst in 0..pool_size {
            if src != dst {
                let hashed = hashmix(pool[src], &mut hash_const);
                pool[dst] = mix(pool[dst], hashed);
            }
        }
    }
    for &word in assembled.iter().skip(pool_size) {
        for slot in pool.iter_mut() {
            *slot = mix(*slot, hashmix(word, &mut hash_const));
        }
    }

    let mut hash_const = INIT_B;
    (0..n_words)
        .map(|i| {
            let mut value = pool[i % pool_size] ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_B);
            value = value.wrapping_mul(hash_const);
            value ^ (value >> XSHIFT)
        })
        .collect()
}

/// Python's `round(x, 6)`: the decimal rounding of the exact binary value, read back.
fn round_time(x: f64) -> f64 {
    format!("{x:.prec$}", prec = DECIMALS as usize)
        .parse()
        .unwrap_or(x)
}

struct Node {
    start: f64,
    end: f64,
    parent: Option<usize>,
    is_left: bool,
    spawn_key: u64,
    depth: u32,
    /// Set once split: the rounded midpoint, the children and the seed of the bridge draw.
    split: Option<Split>,
}

#[derive(Clone, Copy)]
struct Split {
    midway: f64,
    left: usize,
    right: usize,
    w_seed: u32,
}

/// A Brownian motion on [t0, t1] over tensors of one shape, fixed by its seed (torchsde's
/// `BrownianTree(t0, zeros(shape), t1, entropy=seed)` on the CPU in float32).
pub struct BrownianTree {
    seed: u64,
    shape: Vec<i64>,
    nodes: Vec<Node>,
    root_increment: Tensor,
    cache: VecDeque<(usize, Tensor)>,
}

impl BrownianTree {
    pub fn new(t0: f64, t1: f64, shape: &[i64], seed: u64) -> Result<Self> {
        if !(t0.is_finite() && t1.is_finite() && t0 < t1) {
            return Err(ModelError::Other(format!(
                "Brownian tree: need finite times t0 < t1, got [{t0}, {t1}]"
            )));
        }
        let state = seed_sequence_state(seed, &[], POOL_SIZE, 3);
        // torchsde scales by the unrounded interval length.
        let root_increment = randn(state[0], shape)? * (t1 - t0).sqrt();
        Ok(Self {
            seed,
            shape: shape.to_vec(),
            nodes: vec![Node {
                start: round_time(t0),
                end: round_time(t1),
                parent: None,
                is_left: false,
                spawn_key: 0,
                depth: 0,
                split: None,
            }],
            root_increment,
            cache: VecDeque::new(),
        })
    }

    /// W(tb) - W(ta) for t0 <= ta <= tb <= t1 (times outside are clamped, as torchsde does).
    pub fn increment(&mut self, ta: f64, tb: f64) -> Result<Tensor> {
        let (start, end) = (self.nodes[0].start, self.nodes[0].end);
        let ta = ta.clamp(start, end);
        let tb = tb.clamp(start, end);
        if ta.is_nan() || tb.is_nan() || ta > tb {
            return Err(ModelError::Other(format!(
                "Brownian tree: query times must satisfy ta <= tb, got {ta} and {tb}"
            )));
        }
        if ta == tb {
            return Ok(Tensor::zeros(
                self.shape.as_slice(),
                (Kind::Float, Device::Cpu),
            ));
        }
        let mut intervals = Vec::new();
        self.locate(0, round_time(ta), round_time(tb), &mut intervals)?;
        let mut total: Option<Tensor> = None;
        for node in intervals {
            let w = self.node_increment(node)?;
            total = Some(match total {
                None => w,
                Some(sum) => sum + w,
            });
        }
        total.ok_or_else(|| ModelError::Other("Brownian tree: empty query".into()))
    }

    /// The nodes whose union is [ta, tb], left to right, splitting nodes at their midpoints.
    fn locate(&mut self, node: usize, ta: f64, tb: f64, out: &mut Vec<usize>) -> Result<()> {
        let (start, end) = (self.nodes[node].start, self.nodes[node].end);
        if ta == start && tb == end {
            out.push(node);
            return Ok(());
        }
        let split = self.split(node)?;
        if tb <= split.midway {
            self.locate(split.left, ta, tb, out)
        } else if ta >= split.midway {
            self.locate(split.right, ta, tb, out)
        } else {
            self.locate(split.left, ta, split.midway, out)?;
            self.locate(split.right, split.midway, tb, out)
        }
    }

    /// Splits `node` at its (rounded) midpoint unless already split.
    fn split(&mut self, node: usize) -> Result<Split> {
        if let Some(split) = self.nodes[node].split {
            return Ok(split);
        }
        let parent = &self.nodes[node];
        if parent.depth >= MAX_DEPTH {
            return Err(ModelError::Other(format!(
                "Brownian tree: cannot resolve [{}, {}] further",
                parent.start, parent.end
            )));
        }
        let midway = round_time(0.5 * (parent.end + parent.start));
        let state = seed_sequence_state(
            self.seed,
            &[parent.spawn_key, u64::from(parent.depth)],
            POOL_SIZE,
            4,
        );
        let (start, end, key, depth) = (parent.start, parent.end, parent.spawn_key, parent.depth);
        let left = self.nodes.len();
        self.nodes.push(Node {
            start,
            end: midway,
            parent: Some(node),
            is_left: true,
            spawn_key: 2 * key,
            depth: depth + 1,
            split: None,
        });
        self.nodes.push(Node {
            start: midway,
            end,
            parent: Some(node),
            is_left: false,
            spawn_key: 2 * key + 1,
            depth: depth + 1,
            split: None,
        });
        let split = Split {
            midway,
            left,
            right: left + 1,
            w_seed: state[0],
        };
        self.nodes[node].split = Some(split);
        Ok(split)
    }

    /// The increment over one node: the root's draw, or the Brownian bridge from its parent's.
    fn node_increment(&mut self, node: usize) -> Result<Tensor> {
        let Some(parent) = self.nodes[node].parent else {
            return Ok(self.root_increment.shallow_clone());
        };
        if let Some(pos) = self.cache.iter().position(|(n, _)| *n == node) {
            let entry = self.cache.remove(pos).expect("position is in range");
            let w = entry.1.shallow_clone();
            self.cache.push_back(entry);
            return Ok(w);
        }
        let parent_w = self.node_increment(parent)?;
        let (p_start, p_end) = (self.nodes[parent].start, self.nodes[parent].end);
        let split = self.nodes[parent].split.expect("a child's parent is split");
        let h_reciprocal = 1.0 / (p_end - p_start);
        let left_diff = split.midway - p_start;
        let right_diff = p_end - split.midway;
        // torchsde: mean = left_diff * W * h_reciprocal; left_W = mean + sqrt(var) * noise.
        let mean = &parent_w * left_diff * h_reciprocal;
        let var = left_diff * right_diff * h_reciprocal;
        let left_w = mean + randn(split.w_seed, &self.shape)? * var.sqrt();
        let w = if self.nodes[node].is_left {
            left_w
        } else {
            parent_w - left_w
        };
        if self.cache.len() >= CACHE_SIZE {
            self.cache.pop_front();
        }
        self.cache.push_back((node, w.shallow_clone()));
        Ok(w)
    }
}

/// `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` in float32.
fn randn(seed: u32, shape: &[i64]) -> Result<Tensor> {
    crate::noise::initial_noise(u64::from(seed), shape, Device::Cpu, Kind::Float)
}

/// ComfyUI's `BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed, cpu=True)`: unit-variance
/// noise for a step from `sigma` to `sigma_next`, `(W(sigma_next) - W(sigma)) /
/// sqrt(|sigma_next - sigma|)`, with times in float32 as ComfyUI passes them.
pub struct BrownianNoise {
    tree: BrownianTree,
    range: (f32, f32),
}

impl BrownianNoise {
    /// The tree over [smallest positive sigma, largest sigma] of a run's `sigmas`.
    pub fn for_sigmas(sigmas: &[f64], shape: &[i64], seed: u64) -> Result<Self> {
        let range = Self::range_of(sigmas)?;
        let tree = BrownianTree::new(f64::from(range.0), f64::from(range.1), shape, seed)?;
        Ok(Self { tree, range })
    }

    /// (min positive sigma, max sigma) in float32, as ComfyUI takes them from its sigma tensor.
    pub fn range_of(sigmas: &[f64]) -> Result<(f32, f32)> {
        let min = sigmas
            .iter()
            .filter(|s| **s > 0.0)
            .map(|s| *s as f32)
            .fold(f32::INFINITY, f32::min);
        let max = sigmas
            .iter()
            .map(|s| *s as f32)
            .fold(f32::NEG_INFINITY, f32::max);
        if !(min.is_finite() && max.is_finite() && min < max) {
            return Err(ModelError::Other(format!(
                "Brownian noise needs two distinct positive sigmas, got {sigmas:?}"
            )));
        }
        Ok((min, max))
    }

    /// Whether this tree serves a run over `sigmas` of latents of `shape`.
    pub fn fits(&self, sigmas: &[f64], shape: &[i64]) -> bool {
        self.tree.shape == shape && Self::range_of(sigmas).ok() == Some(self.range)
    }

    /// Float32 noise of the tree's shape for the step `sigma` -> `sigma_next`.
    pub fn noise(&mut self, sigma: f64, sigma_next: f64) -> Result<Tensor> {
        let (a, b) = (sigma as f32, sigma_next as f32);
        let (lo, hi, sign) = if a < b { (a, b, 1.0) } else { (b, a, -1.0) };
        let w = self.tree.increment(f64::from(lo), f64::from(hi))?;
        let scale = (b - a).abs().sqrt();
        Ok(w * sign / f64::from(scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_add_up_and_do_not_depend_on_query_order() {
        let shape = [1i64, 2, 3, 3];
        let mut a = BrownianTree::new(0.03, 14.6, &shape, 42).unwrap();
        let whole = a.increment(0.5, 9.0).unwrap();
        let left = a.increment(0.5, 2.25).unwrap();
        let right = a.increment(2.25, 9.0).unwrap();
        let err = (&whole - (left + right)).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{err}");

        let mut b = BrownianTree::new(0.03, 14.6, &shape, 42).unwrap();
        let _ = b.increment(1.0, 3.0).unwrap();
        assert!(b.increment(0.5, 9.0).unwrap().equal(&whole));
        let mut c = BrownianTree::new(0.03, 14.6, &shape, 43).unwrap();
        assert!(!c.increment(0.5, 9.0).unwrap().equal(&whole));
    }

    #[test]
    fn increments_have_the_variance_of_their_length() {
        let mut tree = BrownianTree::new(0.0, 10.0, &[20000], 7).unwrap();
        let w = tree.increment(1.0, 5.0).unwrap();
        let var = w.var(true).double_value(&[]);
        assert!((var - 4.0).abs() < 0.2, "{var}");
        let mut noise = BrownianNoise::for_sigmas(&[10.0, 5.0, 1.0, 0.0], &[20000], 7).unwrap();
        let unit = noise.noise(5.0, 1.0).unwrap();
        assert!((unit.var(true).double_value(&[]) - 1.0).abs() < 0.05);
    }

    #[test]
    fn bad_ranges_are_errors() {
        assert!(BrownianTree::new(1.0, 1.0, &[2], 0).is_err());
        assert!(BrownianNoise::for_sigmas(&[1.0, 0.0], &[2], 0).is_err());
    }
}
