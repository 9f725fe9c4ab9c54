//! Parity of weft's samplers, schedules and step noise with ComfyUI's own code, on fixtures
//! written by scripts/parity/comfy_samplers.py from a ComfyUI checkout: 10-step trajectories of
//! every sampler on two schedules with CFG 7.5 around an analytic epsilon model and ComfyUI's
//! step noise for the seed (float64);
//! KSampler sigmas for all nine schedulers; torchsde Brownian tree increments; numpy
//! SeedSequence states; k-diffusion's default_noise_sampler draws.
use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use tch::{Device, Kind, Tensor};
use weft_nodes::noise::SeededNoise;
use weft_nodes::samplers::brownian::{seed_sequence_state, BrownianTree};
use weft_nodes::samplers::{
    self, DiscreteSchedule, Guidance, GuidedDenoiser, Hooks, NoisePredictor, NoiseSource,
    Prediction, SampleSettings, SamplerKind, ScheduleKind, StepEvent,
};
use weft_nodes::weights::read_safetensors;
use weft_nodes::Result;

/// Trajectory tolerance in float64 (the bound).
const TOLERANCE_F64: f64 = 1e-5;
/// Trajectory tolerance for float32 cases (none in the current fixture).
const TOLERANCE_F32: f64 = 1e-4;

struct Fixture {
    tensors: HashMap<String, Tensor>,
    meta: Value,
}

fn fixture() -> Fixture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/comfy_samplers");
    let tensors = read_safetensors(&dir.join("comfy_samplers.safetensors"), Device::Cpu, None)
        .expect("run scripts/parity/comfy_samplers.py to write the fixtures");
    let meta = serde_json::from_str(
        &std::fs::read_to_string(dir.join("comfy_samplers.json")).expect("comfy_samplers.json"),
    )
    .expect("comfy_samplers.json parses");
    Fixture { tensors, meta }
}

impl Fixture {
    fn tensor(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no tensor {name}"))
    }
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect()
}

fn ints(value: &Value) -> Vec<i64> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_i64().expect("integer"))
        .collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// scripts/parity/samplers.py's stand-in model, computed in the sample's precision.
fn analytic_model(sample: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<Tensor> {
    let kind = sample.kind();
    let ctx = context
        .to_kind(kind)
        .mean_dim([1i64, 2].as_slice(), false, kind)
        .view([-1, 1, 1, 1]);
    let t = timesteps.to_kind(kind).view([-1, 1, 1, 1]);
    Ok(sample * 0.8 + (sample * 3.0).sin() * 0.1 + (t / 1000.0) * 0.05 + ctx * 0.2)
}

fn denoiser<'a>(
    fx: &Fixture,
    model: &'a dyn NoisePredictor,
    schedule: &'a DiscreteSchedule,
) -> GuidedDenoiser<'a> {
    GuidedDenoiser::new(
        model,
        schedule,
        Prediction::Epsilon,
        Guidance {
            positive: fx.tensor("cond").shallow_clone(),
            negative: Some(fx.tensor("uncond").shallow_clone()),
            cfg: fx.meta["cfg"].as_f64().unwrap(),
        },
    )
    .unwrap()
    .with_quantized_timesteps(true)
}

#[test]
fn seed_sequence_matches_numpy() {
    let fx = fixture();
    for case in fx.meta["seed_sequence"].as_array().unwrap() {
        let entropy = case["entropy"].as_u64().unwrap();
        let key: Vec<u64> = ints(&case["spawn_key"]).iter().map(|k| *k as u64).collect();
        let pool = case["pool_size"].as_u64().unwrap() as usize;
        let expected: Vec<u32> = ints(&case["state"]).iter().map(|v| *v as u32).collect();
        assert_eq!(
            seed_sequence_state(entropy, &key, pool, 4),
            expected,
            "{case}"
        );
    }
}

#[test]
fn brownian_tree_increments_match_torchsde() {
    let fx = fixture();
    let mut worst: f64 = 0.0;
    for (i, case) in fx.meta["brownian"].as_array().unwrap().iter().enumerate() {
        let shape = ints(&case["shape"]);
        let mut tree = BrownianTree::new(
            case["t0"].as_f64().unwrap(),
            case["t1"].as_f64().unwrap(),
            &shape,
            case["seed"].as_u64().unwrap(),
        )
        .unwrap();
        for (j, query) in case["queries"].as_array().unwrap().iter().enumerate() {
            let q = floats(query);
            let ours = tree.increment(q[0], q[1]).unwrap();
            let err = max_abs(&ours, fx.tensor(&format!("brownian.{i}.{j}")));
            assert!(err <= 1e-6, "tree {i} query {q:?}: max abs error {err:e}");
            worst = worst.max(err);
        }
    }
    println!("Brownian tree vs torchsde: max abs error {worst:.2e}");
}

#[test]
fn step_noise_equals_comfyuis_default_noise_sampler() {
    let fx = fixture();
    let expected = fx.tensor("default_noise");
    let mut seeded = SeededNoise::new(fx.meta["seed"].as_u64().unwrap());
    for k in 0..expected.size()[0] {
        let draw = expected.get(k);
        let ours = seeded.noise(k as usize, &draw).unwrap();
        assert!(ours.equal(&draw), "draw {k} differs");
    }
}

#[test]
fn schedules_match_comfyuis_ksampler_sigmas() {
    let fx = fixture();
    let names: Vec<&str> = fx.meta["scheduler_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ScheduleKind::NAMES,
        "scheduler names or order differ"
    );
    let schedule = DiscreteSchedule::stable_diffusion();
    let mut worst: f64 = 0.0;
    let mut one_step_off = 0;
    for case in fx.meta["schedules"].as_array().unwrap() {
        let kind = ScheduleKind::from_name(case["scheduler"].as_str().unwrap()).unwrap();
        let sampler = SamplerKind::from_name(case["sampler"].as_str().unwrap()).unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let denoise = case["denoise"].as_f64().unwrap();
        let theirs = floats(&case["sigmas"]);
        let ours = schedule
            .sampler_sigmas(kind, steps, denoise, sampler.discards_penultimate_sigma())
            .unwrap();
        assert_eq!(ours.len(), theirs.len(), "{case}: {ours:?}");
        for (a, b) in ours.iter().zip(&theirs) {
            // Both float32 values, equal or one float32 step apart: libtorch's vectorised
            // float32 kernels round differently on different CPUs (the fixture's sgm_uniform at 25
            // steps has one sigma a step off on an AVX-512 EPYC, and so does ComfyUI run there).
            let steps_apart = ((*a as f32).to_bits() as i64 - (*b as f32).to_bits() as i64).abs();
            assert!(
                steps_apart <= 1 && (*a as f32) as f64 == *a,
                "{case}: {ours:?}"
            );
            one_step_off += usize::from(steps_apart == 1);
            worst = worst.max((a - b).abs() / b.abs().max(1e-3));
        }
    }
    println!(
        "schedules vs ComfyUI: max relative error {worst:.2e}, {one_step_off} sigmas one float32 \
         step off"
    );
}

/// Runs one fixture case; returns the max abs error over the compared latents.
fn run_case(fx: &Fixture, name: &str, case: &Value) -> f64 {
    let schedule = DiscreteSchedule::stable_diffusion();
    let model = analytic_model;
    let denoiser = denoiser(fx, &model, &schedule);
    let sampler = SamplerKind::from_name(case["sampler"].as_str().unwrap()).unwrap();
    let kind = match case["dtype"].as_str().unwrap() {
        "float32" => Kind::Float,
        _ => Kind::Double,
    };
    let sigmas = floats(&case["sigmas"]);
    let expected = fx.tensor(&format!("{name}.trajectory")).to_kind(kind);
    let start = expected.get(0);
    let mut trajectory = vec![start.copy()];
    let mut on_step = |event: &StepEvent<'_>| trajectory.push(event.x.copy());
    let mut hooks = Hooks {
        on_step: Some(&mut on_step),
        cancelled: None,
    };
    let mut noise = SeededNoise::new(fx.meta["seed"].as_u64().unwrap());
    let last = sampler
        .sampler()
        .sample(&denoiser, start, &sigmas, &mut noise, &mut hooks)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        last.equal(trajectory.last().unwrap()),
        "{name}: returned latent"
    );
    // dpm_fast and dpm_adaptive step on their own grids (one report per step).
    if !matches!(sampler, SamplerKind::DpmFast | SamplerKind::DpmAdaptive) {
        assert_eq!(trajectory.len(), sigmas.len(), "{name}: steps");
    }
    // Only start and result where ComfyUI's callback does not report each step's latent.
    let compared: Vec<&Tensor> = if expected.size()[0] == 2 {
        vec![&trajectory[0], &trajectory[trajectory.len() - 1]]
    } else {
        trajectory.iter().collect()
    };
    assert_eq!(compared.len() as i64, expected.size()[0], "{name}: length");
    let tolerance = if kind == Kind::Float {
        TOLERANCE_F32
    } else {
        TOLERANCE_F64
    };
    let mut worst: f64 = 0.0;
    for (i, x) in compared.iter().enumerate() {
        let err = max_abs(x, &expected.get(i as i64));
        assert!(
            err <= tolerance,
            "{name}: latent {i} max abs error {err:e} > {tolerance:e}"
        );
        worst = worst.max(err);
    }
    worst
}

#[test]
fn every_sampler_follows_comfyuis_trajectory() {
    let fx = fixture();
    let cases = fx.meta["cases"].as_object().unwrap();
    let mut covered: Vec<&str> = Vec::new();
    for (name, case) in cases {
        let worst = run_case(&fx, name, case);
        let last = fx
            .tensor(&format!("{name}.trajectory"))
            .abs()
            .max()
            .double_value(&[]);
        println!(
            "{name:34} {:8} max abs error {worst:.2e} (|x| max {last:.2})",
            case["dtype"].as_str().unwrap()
        );
        covered.push(case["sampler"].as_str().unwrap());
    }
    for name in SamplerKind::NAMES {
        assert!(covered.contains(&name), "no ComfyUI fixture for {name}");
    }
    // weft's names are ComfyUI's, in ComfyUI's order.
    let comfy: Vec<&str> = fx.meta["sampler_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let positions: Vec<usize> = SamplerKind::NAMES
        .iter()
        .map(|n| comfy.iter().position(|c| c == n).expect("a ComfyUI name"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
}

/// `samplers::sample` end to end (weft's own schedule, initial noise and step noise from the
/// seed) lands where ComfyUI's run on its float32 sigmas does.
#[test]
fn ksampler_runs_from_a_seed_land_on_comfyuis_results() {
    let fx = fixture();
    let schedule = DiscreteSchedule::stable_diffusion();
    let model = analytic_model;
    let denoiser = denoiser(&fx, &model, &schedule);
    let shape = ints(&fx.meta["shape"]);
    let latent = Tensor::zeros(shape.as_slice(), (Kind::Double, Device::Cpu));
    for name in [
        "euler_ancestral.karras",
        "dpmpp_2m_sde.karras",
        "dpmpp_sde.normal",
        "dpmpp_3m_sde.karras",
        "dpm_2_ancestral.normal",
        "lcm.karras",
    ] {
        let case = &fx.meta["cases"][name];
        let settings = SampleSettings {
            seed: fx.meta["seed"].as_u64().unwrap(),
            steps: fx.meta["steps"].as_u64().unwrap() as usize,
            sampler: SamplerKind::from_name(case["sampler"].as_str().unwrap()).unwrap(),
            schedule: ScheduleKind::from_name(case["scheduler"].as_str().unwrap()).unwrap(),
            denoise: 1.0,
        };
        let out = samplers::sample(
            &denoiser,
            &schedule,
            &latent,
            &settings,
            &mut Hooks::default(),
        )
        .unwrap();
        let expected = fx.tensor(&format!("{name}.trajectory"));
        let err = max_abs(&out, &expected.get(expected.size()[0] - 1));
        println!("{name:28} end to end max abs error {err:.2e}");
        // weft's sigmas are float64, ComfyUI's float32 (relative 1e-7 apart).
        assert!(err <= 1e-4, "{name}: {err:e}");
    }
}
