//! The SDXL refiner against diffusers and ComfyUI on a tiny random-weight model of its
//! architecture (fixtures written by scripts/parity/sdxl_refiner.py): the single file is told
//! apart from SDXL base and loaded (bigG alone at `conditioner.embedders.0.model.*`), its UNet
//! with the 5-id added conditioning equals diffusers' UNet2DConditionModel, the added vector the
//! sampler makes (sizes, crop, aesthetic score, ComfyUI's default scores) equals ComfyUI's
//! `SDXLRefiner.encode_adm`; the key map covers a full-size refiner file; and a two-stage run
//! (tiny SDXL base to step k leaving its noise, the tiny refiner from k) hands the latent over.
use std::cell::RefCell;
use std::collections::HashMap;

use tch::{Device, Kind, Tensor};
use weft_nodes::diffusion::{added_conditioning, Conditioning, SizeConditioning};
use weft_nodes::models::autoencoder_kl::{AutoencoderKL, VaeConfig};
use weft_nodes::models::unet_2d_condition::{UNet2DConditionModel, UNetConfig};
use weft_nodes::samplers::{
    sample_window, Denoiser, DiscreteSchedule, Guidance, GuidedDenoiser, Hooks, NoisePredictor,
    Prediction, SampleSettings, SamplerKind, ScheduleKind, StepWindow,
};
use weft_nodes::weights::checkpoint::{
    detect_version, load_diffusers_folder, load_single_file, LoadOptions, ModelFamily,
    StableDiffusionCheckpoint,
};
use weft_nodes::weights::ldm_keymap::{map_ldm_key, Component, LdmLayout, Mapped};
use weft_nodes::weights::{read_safetensors, WeightedModel, Weights};
use weft_nodes::Result;
use weft_test_support::{fixtures, max_abs_diff, test_support_data};

fn io() -> HashMap<String, Tensor> {
    read_safetensors(
        &fixtures("sdxl_refiner").join("io.safetensors"),
        Device::Cpu,
        None,
    )
    .unwrap()
}

fn json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The tiny refiner single file, read with its tiny UNet config and the tiny VAE's (a single
/// file's own configs are the full-size presets).
fn refiner() -> StableDiffusionCheckpoint {
    let unet =
        UNetConfig::from_diffusers_json(&json(&fixtures("sdxl_refiner").join("unet_config.json")))
            .unwrap();
    // The refiner fixture's VAE has the SDXL fixture's config (scripts/parity/sdxl.py VAE).
    let vae =
        VaeConfig::from_diffusers_json(&json(&fixtures("sdxl").join("diffusers/vae/config.json")))
            .unwrap();
    let options = LoadOptions {
        unet_config: Some(unet),
        vae_config: Some(vae),
        ..LoadOptions::default()
    };
    load_single_file(
        &fixtures("sdxl_refiner").join("single.safetensors"),
        &options,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn refiner_file_is_told_apart_and_its_unet_matches_diffusers() {
    let model = refiner();
    assert_eq!(model.family(), ModelFamily::SdxlRefiner);
    let config = model.unet.config();
    assert_eq!(
        ModelFamily::of_unet_config(config),
        ModelFamily::SdxlRefiner
    );
    assert_eq!(config.cross_attention_blocks, [false, true, true, false]);
    let add = config.addition_embed.expect("text_time");
    assert_eq!((add.time_ids_dim, add.input_dim), (8, 24 + 5 * 8));
    // bigG alone: no first tower, the second from conditioner.embedders.0.model.*.
    assert!(model.text_encoder_weights.is_empty());
    let clip_g = model.text_encoder_2.as_ref().expect("bigG");
    assert_eq!(clip_g.weights["text_projection.weight"].size(), [24, 24]);
    assert!(clip_g
        .weights
        .contains_key("text_model.encoder.layers.1.self_attn.q_proj.weight"));

    let io = io();
    let t = |k: &str| &io[&format!("unet.{k}")];
    let out = model
        .unet
        .forward_sdxl(
            t("sample"),
            t("timestep"),
            t("context"),
            t("pooled"),
            t("time_ids"),
        )
        .unwrap();
    let err = max_abs_diff(&out, t("out"));
    println!("SDXL refiner UNet max abs error {err:.3e}");
    assert!(err <= 1e-4, "SDXL refiner UNet: max abs error {err}");
    // Base-style 6 ids do not fit the refiner's add_embedding.
    let six = Tensor::zeros([2, 6], (Kind::Float, Device::Cpu));
    let e = model
        .unet
        .forward_sdxl(t("sample"), t("timestep"), t("context"), t("pooled"), &six)
        .unwrap_err()
        .to_string();
    assert!(e.contains("add_embedding"), "{e}");
}

/// The vector the sampler nodes give the refiner's add_embedding equals ComfyUI's: from
/// CLIPTextEncodeSDXLRefiner's ascore/width/height, and from a plain prompt (the latent's
/// pixels, score 6 for the positive side and 2.5 for the negative).
#[test]
fn refiner_added_conditioning_equals_comfyuis_encode_adm() {
    let model = refiner();
    let io = io();
    let pooled = &io["adm.pooled"];
    let context = Tensor::zeros([1, 77, 24], (Kind::Float, Device::Cpu));
    // What PromptEncodeSdxlRefiner makes of ascore 7.25, width 768, height 1024.
    let node = Conditioning {
        context: context.copy(),
        pooled: Some(pooled.copy()),
        size: Some(SizeConditioning::of_image(1024.0, 768.0)),
        aesthetic_score: Some(7.25),
    };
    // What PromptEncode makes on the refiner: no sizes, no score.
    let plain = Conditioning {
        context: context.copy(),
        pooled: Some(pooled.copy()),
        size: None,
        aesthetic_score: None,
    };
    // A 64 x 96 pixel image: latents of 8 x 12.
    let image = (64.0, 96.0);
    let (positive, negative) = added_conditioning(&model.unet, &node, Some(&plain), image)
        .unwrap()
        .unwrap();
    let check = |what: &str, ours: &Tensor, key: &str| {
        let err = max_abs_diff(ours, &io[key]);
        println!("{what}: max abs error {err:.3e}");
        assert!(err <= 1e-5, "{what}: max abs error {err}");
    };
    check("node's sizes and score", &positive, "adm.node");
    check(
        "plain prompt, negative side",
        &negative.unwrap(),
        "adm.negative_default",
    );
    let (positive, _) = added_conditioning(&model.unet, &plain, None, image)
        .unwrap()
        .unwrap();
    check(
        "plain prompt, positive side",
        &positive,
        "adm.positive_default",
    );
    // A base conditioning (2048-wide context here: any other width) is refused by name.
    let base = Conditioning {
        context: Tensor::zeros([1, 77, 80], (Kind::Float, Device::Cpu)),
        ..plain
    };
    let e = added_conditioning(&model.unet, &base, None, image)
        .unwrap_err()
        .to_string();
    assert!(e.contains("80") && e.contains("24"), "{e}");
}

/// Every tensor of a full-size SDXL refiner single file (its UNet names checked against
/// diffusers' converter by the fixture script) maps to a name the refiner presets accept with
/// its shape; the file is detected as the refiner. The tensors are allocated, never touched.
#[test]
fn ldm_key_map_covers_a_full_size_sdxl_refiner_file() {
    let text = std::fs::read_to_string(test_support_data("sdxl_refiner_ldm_shapes.json")).unwrap();
    let shapes: std::collections::BTreeMap<String, Vec<i64>> = serde_json::from_str(&text).unwrap();
    let as_usize = shapes
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|&d| d as usize).collect()))
        .collect();
    assert_eq!(detect_version(&as_usize), Ok(ModelFamily::SdxlRefiner));
    let layout = LdmLayout {
        unet_layers_per_block: 2,
        vae_blocks: 4,
        open_clip_layers_kept: 32,
    };
    let mut parts: HashMap<Component, HashMap<String, Tensor>> = HashMap::new();
    for (name, shape) in &shapes {
        let empty = |s: &[i64]| Tensor::empty(s, (Kind::Half, Device::Cpu));
        let (component, mapped) =
            map_ldm_key(name, &layout).unwrap_or_else(|| panic!("{name}: not mapped"));
        let part = parts.entry(component).or_default();
        match mapped {
            Mapped::Rename(n) => {
                part.insert(n, empty(shape));
            }
            Mapped::ConvToLinear(n) => {
                part.insert(n, empty(&shape[..2]));
            }
            Mapped::SplitQkv(names) => {
                for n in names {
                    part.insert(n, empty(&[shape[0] / 3, shape[1..].iter().product()]));
                }
            }
            Mapped::Transpose(n) => {
                part.insert(n, empty(&[shape[1], shape[0]]));
            }
            Mapped::Drop => {}
        }
    }
    assert!(!parts.contains_key(&Component::TextEncoder), "no CLIP-L");
    let unet = Weights::new("refiner unet", parts.remove(&Component::Unet).unwrap());
    if let Err(e) = UNet2DConditionModel::new(&unet, "", UNetConfig::sdxl_refiner()) {
        panic!("{e}");
    }
    let vae = Weights::new("refiner vae", parts.remove(&Component::Vae).unwrap());
    if let Err(e) = AutoencoderKL::new(&vae, "", VaeConfig::sdxl()) {
        panic!("{e}");
    }
    let clip_g = &parts[&Component::TextEncoder2];
    assert_eq!(clip_g["text_projection.weight"].size(), [1280, 1280]);
    assert_eq!(
        clip_g
            .keys()
            .filter(|k| k.ends_with("layer_norm1.weight"))
            .count(),
        32
    );
}

/// A UNet as the sampler's model, with the added conditioning.
struct Unet<'a>(&'a UNet2DConditionModel);

impl NoisePredictor for Unet<'_> {
    fn predict(&self, sample: &Tensor, timesteps: &Tensor, context: &Tensor) -> Result<Tensor> {
        self.0.forward(sample, timesteps, context)
    }

    fn predict_added(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        context: &Tensor,
        added: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.0
            .forward_with_added(sample, timesteps, context, added, None)
    }
}

/// A denoiser that remembers the first latent it was asked about.
struct FirstInput<'a> {
    inner: &'a dyn Denoiser,
    first: RefCell<Option<Tensor>>,
}

impl Denoiser for FirstInput<'_> {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        self.first.borrow_mut().get_or_insert_with(|| x.copy());
        self.inner.denoise(x, sigma)
    }
}

/// `model` guided by random conditionings of its widths (`pooled` wide pooled text), as the
/// sampler nodes build it.
fn guided<'a>(
    predictor: &'a Unet<'a>,
    schedule: &'a DiscreteSchedule,
    pooled: i64,
    seed: i64,
) -> GuidedDenoiser<'a> {
    tch::manual_seed(seed);
    let unet = predictor.0;
    let width = unet.config().cross_attention_dim;
    let cond = || Conditioning {
        context: Tensor::randn([1, 7, width], (Kind::Float, Device::Cpu)),
        pooled: Some(Tensor::randn([1, pooled], (Kind::Float, Device::Cpu))),
        size: None,
        aesthetic_score: None,
    };
    let (positive, negative) = (cond(), cond());
    let (added_positive, added_negative) =
        added_conditioning(unet, &positive, Some(&negative), (16.0, 16.0))
            .unwrap()
            .unwrap();
    GuidedDenoiser::new(
        predictor,
        schedule,
        Prediction::Epsilon,
        Guidance {
            positive: positive.context,
            negative: Some(negative.context),
            cfg: 5.0,
        },
    )
    .unwrap()
    .with_added_conditioning(added_positive, added_negative)
    .unwrap()
}

/// Base for steps 0..8 of 10 leaving the noise in, the refiner for 8..10 adding none (what
/// workflows/sdxl_refiner.yaml does at full size): the refiner's first input is the base's
/// noisy latent, and the result is finite and of the latent's shape.
#[test]
fn two_stage_base_then_refiner_hands_over_the_noisy_latent() {
    let base = load_diffusers_folder(&fixtures("sdxl").join("diffusers"), &LoadOptions::default())
        .unwrap();
    assert_eq!(base.family(), ModelFamily::Sdxl);
    let refiner = refiner();
    let schedule = DiscreteSchedule::stable_diffusion();
    let (base_unet, refiner_unet) = (Unet(&base.unet), Unet(&refiner.unet));
    let base_denoiser = guided(&base_unet, &schedule, 16, 1);
    let refiner_denoiser = guided(&refiner_unet, &schedule, 24, 2);
    let latent = Tensor::zeros([1, 4, 8, 8], (Kind::Float, Device::Cpu));
    let noise =
        weft_nodes::noise::initial_noise(42, &[1, 4, 8, 8], Device::Cpu, Kind::Float).unwrap();
    let settings = SampleSettings {
        seed: 42,
        steps: 10,
        sampler: SamplerKind::Euler,
        schedule: ScheduleKind::Normal,
        denoise: 1.0,
    };
    let split = 8;
    let first = sample_window(
        &base_denoiser,
        &schedule,
        &latent,
        &noise,
        &settings,
        StepWindow {
            end: Some(split),
            leftover_noise: true,
            ..StepWindow::FULL
        },
        &mut Hooks::default(),
    )
    .unwrap();
    let watched = FirstInput {
        inner: &refiner_denoiser,
        first: RefCell::new(None),
    };
    let mut steps = Vec::new();
    let mut on_step = |e: &weft_nodes::samplers::StepEvent<'_>| steps.push((e.step, e.total));
    let second = sample_window(
        &watched,
        &schedule,
        &first,
        &noise,
        &settings,
        StepWindow {
            start: split,
            add_noise: false,
            ..StepWindow::FULL
        },
        &mut Hooks {
            on_step: Some(&mut on_step),
            cancelled: None,
        },
    )
    .unwrap();
    // The refiner ran the last two steps, starting from the base's latent as it was.
    assert_eq!(steps, [(1, 2), (2, 2)]);
    let handed = watched
        .first
        .borrow()
        .as_ref()
        .expect("refiner called")
        .copy();
    assert!(handed.equal(&first), "the refiner started elsewhere");
    // The base's latent still holds noise of about sigma_8; the refiner's result is finite.
    let sigmas = schedule
        .sampler_sigmas(ScheduleKind::Normal, 10, 1.0, false)
        .unwrap();
    assert!(sigmas[split] > 0.1, "{sigmas:?}");
    let std = |t: &Tensor| t.std(false).double_value(&[]);
    assert!(std(&first) > 0.1, "base latent std {}", std(&first));
    assert_eq!(second.size(), [1, 4, 8, 8]);
    let finite = second.isfinite().all().int64_value(&[]) == 1;
    assert!(finite, "NaN or inf in the result");
    assert!(!second.equal(&first));
}
