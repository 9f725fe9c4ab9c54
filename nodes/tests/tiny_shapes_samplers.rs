//! Every sampler and every schedule end to end on the embedded tiny-shapes model: a
//! txt2img (32x32: 4x4 latent, 4 steps, CFG 7) decodes to a finite image with structure (not flat), and
//! different samplers give different images. The prompt embedding is a fixed random context,
//! so this runs without set-up's MiniLM (nodes/tests/tiny_shapes.rs checks prompt colours).
use tch::{Device, Kind, Tensor};
use weft_nodes::samplers::{
    sample, DiscreteSchedule, Guidance, GuidedDenoiser, Hooks, Prediction, SampleSettings,
    SamplerKind, ScheduleKind,
};
use weft_nodes::weights::checkpoint::{load_unet_folder, load_vae_folder, LoadOptions};
use weft_test_support::repo_root;

#[test]
fn every_sampler_and_schedule_makes_a_finite_structured_image() {
    let dir = repo_root().join("models/tiny-shapes");
    let unet = load_unet_folder(&dir.join("unet"), &LoadOptions::default()).unwrap();
    let vae = load_vae_folder(&dir.join("vae"), &LoadOptions::default()).unwrap();
    let model = |x: &Tensor, t: &Tensor, c: &Tensor| unet.forward(x, t, c);
    let schedule = DiscreteSchedule::stable_diffusion();
    tch::manual_seed(5);
    let positive = Tensor::randn([1, 6, 384], (Kind::Float, Device::Cpu));
    let negative = Tensor::randn([1, 2, 384], (Kind::Float, Device::Cpu)) * 0.1;
    let denoiser = GuidedDenoiser::new(
        &model,
        &schedule,
        Prediction::Epsilon,
        Guidance {
            positive,
            negative: Some(negative),
            cfg: 7.0,
        },
    )
    .unwrap();
    let latent = Tensor::zeros([1, 4, 4, 4], (Kind::Float, Device::Cpu));
    let run = |sampler: SamplerKind, schedule_kind: ScheduleKind| {
        let settings = SampleSettings {
            seed: 42,
            steps: 4,
            sampler,
            schedule: schedule_kind,
            denoise: 1.0,
        };
        let out = sample(
            &denoiser,
            &schedule,
            &latent,
            &settings,
            &mut Hooks::default(),
        )
        .unwrap_or_else(|e| panic!("{sampler:?} {schedule_kind:?}: {e}"));
        let image = vae
            .decode(&(out / vae.config().scaling_factor))
            .unwrap()
            .clamp(-1.0, 1.0);
        let finite = image.isfinite().all().int64_value(&[]) == 1;
        let std = image.std(true).double_value(&[]);
        assert!(finite, "{sampler:?} {schedule_kind:?}: non-finite pixels");
        assert!(
            std > 0.05,
            "{sampler:?} {schedule_kind:?}: flat image (std {std})"
        );
        image
    };
    let mut images: Vec<(&str, Tensor)> = Vec::new();
    for name in SamplerKind::NAMES {
        let image = run(SamplerKind::from_name(name).unwrap(), ScheduleKind::Karras);
        images.push((name, image));
    }
    for name in ScheduleKind::NAMES {
        let _ = run(SamplerKind::Euler, ScheduleKind::from_name(name).unwrap());
    }
    // euler and ddim are the same method, and so are euler_ancestral and ddpm (ComfyUI's
    // trajectories of the two agree to 1e-14); every other pair differs.
    let same_methods = [["euler", "ddim"], ["euler_ancestral", "ddpm"]];
    let mut same = Vec::new();
    for (i, (a, image_a)) in images.iter().enumerate() {
        for (b, image_b) in &images[i + 1..] {
            let diff = (image_a - image_b).abs().max().double_value(&[]);
            if diff <= 1e-4 && !same_methods.contains(&[*a, *b]) {
                same.push(format!("{a} and {b}"));
            }
        }
    }
    assert!(same.is_empty(), "the same image from {}", same.join(", "));
}
