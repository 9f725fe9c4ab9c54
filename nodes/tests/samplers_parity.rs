//! Parity of weft's samplers, schedules and seeded noise with diffusers/PyTorch, on fixtures
//! written by scripts/parity/samplers.py: 10-step trajectories with classifier-free guidance
//! around an analytic epsilon model (the same formula as the script's), fp32, max abs <= 1e-4.
//! The stochastic samplers get the fixture's step noise (FixedNoise); weft's own seeded step
//! noise is ComfyUI's, checked in comfy_samplers_parity.rs.
use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use tch::{Device, Kind, Tensor};
use weft_nodes::noise::initial_noise;
use weft_nodes::samplers::{
    DiscreteSchedule, FixedNoise, Guidance, GuidedDenoiser, Hooks, NoiseSource, Prediction,
    SamplerKind, ScheduleKind, StepEvent,
};
use weft_nodes::weights::read_safetensors;
use weft_nodes::Result;

const TOLERANCE: f64 = 1e-4;

struct Fixture {
    tensors: HashMap<String, Tensor>,
    meta: Value,
}

fn fixture() -> Fixture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/samplers");
    let tensors = read_safetensors(&dir.join("samplers.safetensors"), Device::Cpu, None)
        .expect("run scripts/parity/samplers.py to write the fixtures");
    let meta = serde_json::from_str(
        &std::fs::read_to_string(dir.join("samplers.json")).expect("samplers.json"),
    )
    .expect("samplers.json parses");
    Fixture { tensors, meta }
}

impl Fixture {
    fn tensor(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no tensor {name}"))
    }

    fn step_noise(&self) -> Vec<Tensor> {
        let all = self.tensor("step_noise");
        (0..all.size()[0]).map(|i| all.get(i)).collect()
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

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// The script's stand-in for a UNet: elementwise in the sample, linear in t, plus one scalar per
/// batch item from the context. A real UNet is a drop-in `NoisePredictor` here.
fn analytic_model(prediction: Prediction) -> impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> {
    move |sample: &Tensor, timesteps: &Tensor, context: &Tensor| {
        let ctx = context
            .mean_dim([1i64, 2].as_slice(), false, Kind::Float)
            .view([-1, 1, 1, 1]);
        let t = timesteps.view([-1, 1, 1, 1]);
        let mut out = sample * 0.8 + (sample * 3.0).sin() * 0.1 + (t / 1000.0) * 0.05 + ctx * 0.2;
        if prediction == Prediction::V {
            out -= sample * 0.3;
        }
        Ok(out)
    }
}

/// Runs one fixture case with `noise` and returns the trajectory (start, then one per step).
fn run_case(fx: &Fixture, name: &str, case: &Value, noise: &mut dyn NoiseSource) -> Vec<Tensor> {
    let schedule = DiscreteSchedule::stable_diffusion();
    let prediction = Prediction::from_name(case["prediction"].as_str().unwrap()).unwrap();
    let model = analytic_model(prediction);
    let cfg = fx.meta["cfg"].as_f64().unwrap();
    let denoiser = GuidedDenoiser::new(
        &model,
        &schedule,
        prediction,
        Guidance {
            positive: fx.tensor("cond").shallow_clone(),
            negative: Some(fx.tensor("uncond").shallow_clone()),
            cfg,
        },
    )
    .unwrap()
    .with_quantized_timesteps(case["quantized"].as_bool().unwrap());
    let sampler = SamplerKind::from_name(case["sampler"].as_str().unwrap())
        .unwrap()
        .sampler();
    let sigmas = floats(&case["sigmas"]);
    let start = fx.tensor(&format!("{name}.trajectory")).get(0);
    let mut trajectory = vec![start.copy()];
    let mut on_step = |event: &StepEvent<'_>| trajectory.push(event.x.copy());
    let mut hooks = Hooks {
        on_step: Some(&mut on_step),
        cancelled: None,
    };
    let last = sampler
        .sample(&denoiser, start, &sigmas, noise, &mut hooks)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        last.equal(trajectory.last().unwrap()),
        "{name}: returned latent"
    );
    trajectory
}

fn assert_trajectory(fx: &Fixture, name: &str, trajectory: &[Tensor]) -> f64 {
    let expected = fx.tensor(&format!("{name}.trajectory"));
    assert_eq!(
        trajectory.len() as i64,
        expected.size()[0],
        "{name}: trajectory length"
    );
    let mut worst: f64 = 0.0;
    for (i, x) in trajectory.iter().enumerate() {
        let err = max_abs(x, &expected.get(i as i64));
        assert!(
            err <= TOLERANCE,
            "{name}: step {i} max abs error {err:e} > {TOLERANCE:e}"
        );
        worst = worst.max(err);
    }
    worst
}

#[test]
fn sampler_trajectories_match_diffusers_schedulers() {
    let fx = fixture();
    let cases = fx.meta["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 12);
    for (name, case) in cases {
        let trajectory = run_case(&fx, name, case, &mut FixedNoise(fx.step_noise()));
        let worst = assert_trajectory(&fx, name, &trajectory);
        let last = trajectory.last().unwrap().abs().max().double_value(&[]);
        println!("{name:24} max abs error {worst:.2e} (final |x| max {last:.3})");
    }
}

#[test]
fn initial_noise_equals_torch_manual_seed_randn() {
    let fx = fixture();
    for (i, entry) in fx.meta["initial_noise"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let seed = entry["seed"].as_u64().unwrap();
        let shape: Vec<i64> = entry["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let ours = initial_noise(seed, &shape, Device::Cpu, Kind::Float).unwrap();
        let expected = fx.tensor(&format!("initial_noise.{i}"));
        assert!(
            ours.equal(expected),
            "seed {seed} shape {shape:?}: max abs diff {:e}",
            max_abs(&ours, expected)
        );
    }
}

#[test]
fn schedules_match_diffusers_sigmas_and_timesteps() {
    let fx = fixture();
    let schedule = DiscreteSchedule::stable_diffusion();
    let train = floats(&fx.meta["train_sigmas_scaled_linear"]);
    for (ours, theirs) in schedule.train_sigmas().iter().zip(&train) {
        assert!(
            (ours - theirs).abs() <= 1e-12 * theirs,
            "{ours} vs {theirs}"
        );
    }
    let steps = fx.meta["steps"].as_u64().unwrap() as usize;
    for (kind, case) in [
        (ScheduleKind::Normal, "euler_normal"),
        (ScheduleKind::Karras, "euler_karras"),
        (ScheduleKind::DdimUniform, "ddim_uniform"),
    ] {
        let ours = schedule.sigmas(kind, steps).unwrap();
        let theirs = floats(&fx.meta["cases"][case]["sigmas"]);
        assert_eq!(ours.len(), theirs.len(), "{case}");
        for (a, b) in ours.iter().zip(&theirs) {
            // diffusers computes alphas_cumprod in float32, where 1 - alphas_cumprod near t = 0
            // cancels: its sigma_min is off by ~1.3e-5 relative, and karras sigmas inherit it.
            assert!((a - b).abs() <= 2e-5 * b, "{case}: {ours:?} vs {theirs:?}");
        }
    }
    for (name, case) in fx.meta["cases"].as_object().unwrap() {
        let sigmas = floats(&case["sigmas"]);
        let timesteps = floats(&case["timesteps"]);
        let quantized = case["quantized"].as_bool().unwrap();
        for (sigma, t) in sigmas.iter().zip(&timesteps) {
            let ours = if quantized {
                schedule.sigma_to_timestep_quantized(*sigma)
            } else {
                schedule.sigma_to_timestep(*sigma)
            };
            assert!(
                (ours - t).abs() < 2e-3,
                "{name}: sigma {sigma}: t {ours} vs {t}"
            );
        }
    }
}
