//! Several seeds sampled as one batch (`samplers::sample_per_seed`, what a sweep over seeds
//! runs) against each seed sampled alone: the noise of every part is its seed's exactly, and
//! through a real (tiny, random-weight) UNet with classifier-free guidance each part of the
//! batch ends within 5e-6 (relative) of the seed's own run, for euler, an ancestral and an SDE
//! sampler.
use tch::{Device, Kind, Tensor};
use weft_nodes::models::autoencoder_kl::VaeConfig;
use weft_nodes::models::unet_2d_condition::UNetConfig;
use weft_nodes::samplers::{
    self, DiscreteSchedule, Guidance, GuidedDenoiser, Hooks, Prediction, SampleSettings,
    SamplerKind, ScheduleKind,
};
use weft_nodes::weights::checkpoint::{load_diffusers_folder, LoadOptions};
use weft_test_support::{fixtures, max_abs_diff};

const SEEDS: [u64; 4] = [7, 1234, 7, 99];
const SAMPLERS: [&str; 3] = ["euler", "euler_ancestral", "dpmpp_2m_sde"];

fn settings(sampler: &str, steps: usize) -> SampleSettings {
    SampleSettings {
        seed: 0,
        steps,
        sampler: SamplerKind::from_name(sampler).unwrap(),
        schedule: ScheduleKind::Karras,
        denoise: 1.0,
    }
}

/// Each seed alone, and the seeds as one batch of the latent repeated once per seed.
fn alone_and_batched(
    denoiser: &dyn samplers::Denoiser,
    latent: &Tensor,
    settings: &SampleSettings,
) -> (Vec<Tensor>, Tensor) {
    let schedule = DiscreteSchedule::stable_diffusion();
    let alone = SEEDS
        .iter()
        .map(|&seed| {
            let settings = SampleSettings { seed, ..*settings };
            samplers::sample(
                denoiser,
                &schedule,
                latent,
                &settings,
                &mut Hooks::default(),
            )
            .unwrap()
        })
        .collect();
    let batch = latent.repeat([SEEDS.len() as i64, 1, 1, 1]);
    let batched = samplers::sample_per_seed(
        denoiser,
        &schedule,
        &batch,
        None,
        &SEEDS,
        settings,
        &mut Hooks::default(),
    )
    .unwrap();
    (alone, batched)
}

/// A denoiser that works on each value on its own (no batch arithmetic): whatever differs
/// between a part of the batch and its seed's own run can only be the noise.
#[test]
fn with_an_elementwise_denoiser_each_part_is_bit_identical_to_its_seed_alone() {
    let denoiser =
        |x: &Tensor, sigma: f64| -> weft_nodes::Result<Tensor> { Ok(x * (0.3 / (1.0 + sigma))) };
    let latent = Tensor::zeros([1, 4, 8, 8], (Kind::Float, Device::Cpu));
    for sampler in SAMPLERS {
        let (alone, batched) = alone_and_batched(&denoiser, &latent, &settings(sampler, 12));
        for (i, alone) in alone.iter().enumerate() {
            let part = batched.narrow(0, i as i64, 1);
            assert!(part.equal(alone), "{sampler}: part {i} (seed {})", SEEDS[i]);
        }
        // Equal seeds give equal parts; different seeds do not.
        assert!(batched.get(0).equal(&batched.get(2)), "{sampler}");
        assert!(!batched.get(0).equal(&batched.get(1)), "{sampler}");
    }
}

/// The initial noise given (a RandomNoise node's): every part starts from it, and only the
/// step noise follows each part's seed.
#[test]
fn given_initial_noise_is_shared_and_the_step_noise_follows_each_seed() {
    let denoiser =
        |x: &Tensor, sigma: f64| -> weft_nodes::Result<Tensor> { Ok(x * (0.3 / (1.0 + sigma))) };
    let schedule = DiscreteSchedule::stable_diffusion();
    let latent = Tensor::zeros([1, 4, 8, 8], (Kind::Float, Device::Cpu));
    let noise =
        weft_nodes::noise::initial_noise(5, &[1, 4, 8, 8], Device::Cpu, Kind::Float).unwrap();
    let settings = settings("euler_ancestral", 8);
    let batch = latent.repeat([SEEDS.len() as i64, 1, 1, 1]);
    let batched = samplers::sample_per_seed(
        &denoiser,
        &schedule,
        &batch,
        Some(&noise),
        &SEEDS,
        &settings,
        &mut Hooks::default(),
    )
    .unwrap();
    for (i, &seed) in SEEDS.iter().enumerate() {
        let settings = SampleSettings { seed, ..settings };
        let alone = samplers::sample_from_noise(
            &denoiser,
            &schedule,
            &latent,
            &noise,
            &settings,
            &mut Hooks::default(),
        )
        .unwrap();
        assert!(batched.narrow(0, i as i64, 1).equal(&alone), "part {i}");
    }
    // A latent that cannot be cut into one equal part per seed is an error, not a panic.
    let odd = Tensor::zeros([3, 4, 8, 8], (Kind::Float, Device::Cpu));
    let err = samplers::sample_per_seed(
        &denoiser,
        &schedule,
        &odd,
        None,
        &SEEDS,
        &settings,
        &mut Hooks::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("4 equal parts"), "{err}");
}

/// Through the tiny SD1 UNet of the parity fixtures with guidance (negative and positive in
/// one model call, so the batch of 4 runs as 8): each part within 5e-6 of its seed's own run,
/// relative to the largest value (measured 0.6e-6 to 1.9e-6: a few float32 roundings). Not
/// bit-identical: libtorch's convolutions and matrix products over 8 samples sum in another
/// order than over 2 (the same with one thread, so not the threads' split), and the sampler
/// carries each step's last-bit difference into the next.
#[test]
fn through_a_unet_each_part_is_within_5e_6_relative_of_its_seed_alone() {
    let options = LoadOptions {
        unet_config: Some(UNetConfig::tiny_sd1()),
        vae_config: Some(VaeConfig::tiny()),
        ..LoadOptions::default()
    };
    let model = load_diffusers_folder(&fixtures("unet_vae").join("sd1"), &options).unwrap();
    let unet = model.unet;
    let predictor =
        |sample: &Tensor, t: &Tensor, context: &Tensor| unet.forward(sample, t, context);
    let schedule = DiscreteSchedule::stable_diffusion();
    let positive =
        weft_nodes::noise::initial_noise(1, &[1, 7, 16], Device::Cpu, Kind::Float).unwrap();
    let negative = positive.zeros_like();
    let denoiser = GuidedDenoiser::new(
        &predictor,
        &schedule,
        Prediction::Epsilon,
        Guidance {
            positive,
            negative: Some(negative),
            cfg: 5.0,
        },
    )
    .unwrap();
    let latent = Tensor::zeros([1, 4, 8, 8], (Kind::Float, Device::Cpu));
    for sampler in SAMPLERS {
        let (alone, batched) = alone_and_batched(&denoiser, &latent, &settings(sampler, 5));
        for (i, alone) in alone.iter().enumerate() {
            let part = batched.narrow(0, i as i64, 1);
            let err = max_abs_diff(&part, alone);
            let scale = alone.abs().max().double_value(&[]);
            println!(
                "{sampler}: part {i} (seed {}) max abs difference {err:.3e} (values up to {scale:.3}){}",
                SEEDS[i],
                if part.equal(alone) {
                    " (bit-identical)"
                } else {
                    ""
                }
            );
            assert!(
                err <= 5e-6 * scale,
                "{sampler}: part {i}: {err} for values up to {scale}"
            );
        }
        assert!(
            max_abs_diff(&batched.get(0), &batched.get(1)) > 1e-2,
            "{sampler}"
        );
    }
}
