//! SDXL parity with diffusers on a tiny random-weight SDXL-architecture pipeline (fixtures
//! written by scripts/parity/sdxl.py): the UNet with its added (pooled text + size ids)
//! conditioning, the VAE with SDXL's latent scale, the diffusers folder and the single-file
//! layout loading the same models, whole euler and dpmpp_2m trajectories against
//! StableDiffusionXLPipeline, and the key map on every tensor of a full-size SDXL base file.
use std::collections::HashMap;

use tch::{Device, Kind, Tensor};
use weft_nodes::models::autoencoder_kl::{AutoencoderKL, VaeConfig};
use weft_nodes::models::unet_2d_condition::{UNet2DConditionModel, UNetConfig};
use weft_nodes::samplers::{
    DiscreteSchedule, FixedNoise, Guidance, GuidedDenoiser, Hooks, NoisePredictor, Prediction,
    SamplerKind, StepEvent,
};
use weft_nodes::weights::checkpoint::{
    load_diffusers_folder, load_single_file, sdxl_unet_config_from_shapes, LoadOptions,
    ModelFamily, StableDiffusionCheckpoint,
};
use weft_nodes::weights::ldm_keymap::{map_ldm_key, Component, LdmLayout, Mapped};
use weft_nodes::weights::{read_safetensors, WeightedModel, Weights};
use weft_nodes::Result;
use weft_test_support::{fixtures, max_abs_diff, test_support_data};

fn io() -> HashMap<String, Tensor> {
    read_safetensors(&fixtures("sdxl").join("io.safetensors"), Device::Cpu, None).unwrap()
}

fn folder() -> StableDiffusionCheckpoint {
    load_diffusers_folder(&fixtures("sdxl").join("diffusers"), &LoadOptions::default()).unwrap()
}

/// The single file, read with the folder's (tiny) configs: a single file's own configs are
/// the full-size SDXL presets.
fn single(like: &StableDiffusionCheckpoint) -> StableDiffusionCheckpoint {
    let options = LoadOptions {
        unet_config: Some(like.unet.config().clone()),
        vae_config: Some(like.vae.config().clone()),
        ..LoadOptions::default()
    };
    load_single_file(&fixtures("sdxl").join("single.safetensors"), &options).unwrap()
}

fn check_unet(unet: &UNet2DConditionModel, io: &HashMap<String, Tensor>) {
    let t = |k: &str| &io[&format!("unet.{k}")];
    let out = unet
        .forward_sdxl(
            t("sample"),
            t("timestep"),
            t("context"),
            t("text_embeds"),
            t("time_ids"),
        )
        .unwrap();
    let err = max_abs_diff(&out, t("out"));
    println!("SDXL UNet max abs error {err:.3e}");
    assert!(err <= 1e-4, "SDXL UNet: max abs error {err}");
}

#[test]
fn unet_with_added_conditioning_and_vae_match_diffusers() {
    let io = io();
    let model = folder();
    assert_eq!(model.family(), ModelFamily::Sdxl);
    let config = model.unet.config();
    assert_eq!(config.transformer_layers_per_block, [1, 1, 2]);
    assert_eq!(config.cross_attention_blocks, [false, true, true]);
    let add = config.addition_embed.expect("text_time");
    assert_eq!((add.time_ids_dim, add.input_dim), (8, 64));
    check_unet(&model.unet, &io);

    assert_eq!(model.vae.config().scaling_factor, 0.13025);
    let decoded = model.vae.decode(&io["vae.latents"]).unwrap();
    let err = max_abs_diff(&decoded, &io["vae.decoded"]);
    println!("SDXL VAE decode max abs error {err:.3e}");
    assert!(err <= 1e-4, "SDXL VAE: max abs error {err}");
}

#[test]
fn unet_refuses_missing_or_foreign_added_conditioning() {
    let io = io();
    let model = folder();
    let t = |k: &str| &io[&format!("unet.{k}")];
    let e = model
        .unet
        .forward(t("sample"), t("timestep"), t("context"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("pooled text"), "{e}");
    let wrong = Tensor::zeros([2, 5], (Kind::Float, Device::Cpu));
    let e = model
        .unet
        .forward_sdxl(
            t("sample"),
            t("timestep"),
            t("context"),
            &wrong,
            t("time_ids"),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("add_embedding"), "{e}");
}

fn assert_same_tensors(what: &str, a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    let mut names_a: Vec<_> = a.keys().cloned().collect();
    let mut names_b: Vec<_> = b.keys().cloned().collect();
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b, "{what}");
    for name in names_a {
        assert_eq!(a[&name].size(), b[&name].size(), "{what} {name}");
        assert_eq!(max_abs_diff(&a[&name], &b[&name]), 0.0, "{what} {name}");
    }
}

#[test]
fn single_file_and_diffusers_folder_load_the_same_models() {
    let io = io();
    let folder = folder();
    let single = single(&folder);
    assert_eq!(single.family(), ModelFamily::Sdxl);
    assert_eq!(folder.unet.config(), single.unet.config());
    assert_eq!(folder.vae.config(), single.vae.config());
    check_unet(&single.unet, &io);
    let t = |k: &str| &io[&format!("unet.{k}")];
    let run = |m: &StableDiffusionCheckpoint| {
        m.unet
            .forward_sdxl(
                t("sample"),
                t("timestep"),
                t("context"),
                t("text_embeds"),
                t("time_ids"),
            )
            .unwrap()
    };
    assert_eq!(max_abs_diff(&run(&folder), &run(&single)), 0.0);
    let latents = &io["vae.latents"];
    assert_eq!(
        max_abs_diff(
            &folder.vae.decode(latents).unwrap(),
            &single.vae.decode(latents).unwrap()
        ),
        0.0
    );
    assert_same_tensors(
        "CLIP-L",
        &folder.text_encoder_weights,
        &single.text_encoder_weights,
    );
    let (g_folder, g_single) = (
        folder.text_encoder_2.as_ref().expect("bigG in the folder"),
        single.text_encoder_2.as_ref().expect("bigG in the file"),
    );
    assert_same_tensors("OpenCLIP-bigG", &g_folder.weights, &g_single.weights);
    assert!(g_single.weights.contains_key("text_projection.weight"));
}

/// The tiny UNet as the sampler's model, with the added conditioning.
struct Tiny<'a>(&'a UNet2DConditionModel);

impl NoisePredictor for Tiny<'_> {
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

#[test]
fn euler_and_dpmpp_2m_trajectories_match_the_diffusers_sdxl_pipeline() {
    let io = io();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures("sdxl").join("pipeline.json")).unwrap(),
    )
    .unwrap();
    let model = folder();
    let unet = &model.unet;
    let p = |k: &str| io[&format!("pipeline.{k}")].shallow_clone();
    let side = meta["height"].as_f64().unwrap();
    // diffusers' add_time_ids: original size, crop top-left, target size.
    let ids = Tensor::from_slice(&[side as f32, side as f32, 0.0, 0.0, side as f32, side as f32])
        .view([1, 6]);
    let added_positive = unet.added_conditioning(&p("pooled"), &ids).unwrap();
    let added_negative = unet
        .added_conditioning(&p("negative_pooled"), &ids)
        .unwrap();
    let schedule = DiscreteSchedule::stable_diffusion();
    let predictor = Tiny(unet);
    for name in ["euler", "dpmpp_2m"] {
        let denoiser = GuidedDenoiser::new(
            &predictor,
            &schedule,
            Prediction::Epsilon,
            Guidance {
                positive: p("positive"),
                negative: Some(p("negative")),
                cfg: meta["cfg"].as_f64().unwrap(),
            },
        )
        .unwrap()
        .with_quantized_timesteps(false)
        .with_added_conditioning(
            added_positive.shallow_clone(),
            Some(added_negative.shallow_clone()),
        )
        .unwrap();
        let sigmas: Vec<f64> = meta[name]["sigmas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_f64().unwrap())
            .collect();
        let expected = p(&format!("{name}.trajectory"));
        let start = expected.get(0).unsqueeze(0);
        let mut trajectory = vec![start.copy()];
        let mut on_step = |e: &StepEvent<'_>| trajectory.push(e.x.copy());
        let mut hooks = Hooks {
            on_step: Some(&mut on_step),
            cancelled: None,
        };
        let sampler = SamplerKind::from_name(name).unwrap().sampler();
        let mut noise = FixedNoise(Vec::new());
        // The trajectory (collected by the step hook) is what is compared; the result is its
        // last entry.
        let _result = sampler
            .sample(&denoiser, start, &sigmas, &mut noise, &mut hooks)
            .unwrap();
        assert_eq!(trajectory.len(), sigmas.len(), "{name}");
        for (i, x) in trajectory.iter().enumerate() {
            let err = max_abs_diff(&x.squeeze_dim(0), &expected.get(i as i64));
            println!("{name} step {i}: max abs error {err:.3e}");
            assert!(err <= 1e-4, "{name} step {i}: max abs error {err}");
        }
    }
}

/// Every tensor of a full-size SDXL base single file (test-support/data/sdxl_ldm_shapes.json,
/// its UNet names checked against diffusers' converter by the fixture script) maps to a name
/// the SDXL presets accept with its shape; the tensors are allocated but never touched.
#[test]
fn ldm_key_map_covers_a_full_size_sdxl_base_file() {
    let text = std::fs::read_to_string(test_support_data("sdxl_ldm_shapes.json")).unwrap();
    let shapes: std::collections::BTreeMap<String, Vec<i64>> = serde_json::from_str(&text).unwrap();
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
    let unet = Weights::new("sdxl unet", parts.remove(&Component::Unet).unwrap());
    if let Err(e) = UNet2DConditionModel::new(&unet, "", UNetConfig::sdxl_base()) {
        panic!("{e}");
    }
    let vae = Weights::new("sdxl vae", parts.remove(&Component::Vae).unwrap());
    if let Err(e) = AutoencoderKL::new(&vae, "", VaeConfig::sdxl()) {
        panic!("{e}");
    }
    let clip_l = &parts[&Component::TextEncoder];
    assert_eq!(
        clip_l["text_model.embeddings.token_embedding.weight"].size(),
        [49408, 768]
    );
    assert_eq!(
        clip_l
            .keys()
            .filter(|k| k.ends_with("layer_norm1.weight"))
            .count(),
        12
    );
    let clip_g = &parts[&Component::TextEncoder2];
    assert_eq!(clip_g["text_projection.weight"].size(), [1280, 1280]);
    assert_eq!(
        clip_g["text_model.encoder.layers.31.self_attn.v_proj.weight"].size(),
        [1280, 1280]
    );
}

/// A single file's SDXL UNet config is read from its shapes: the full-size base and refiner
/// files give their presets (the blocks without attention aside: their count is unused,
/// the preset's and the read config build the same tensors), a block of unexpected layout
/// is refused with a reason.
#[test]
fn sdxl_unet_configs_read_from_full_size_shapes_equal_the_presets() {
    let cases = [
        (weft_test_support::sdxl_ldm_shapes(), ModelFamily::Sdxl),
        (
            weft_test_support::sdxl_refiner_ldm_shapes(),
            ModelFamily::SdxlRefiner,
        ),
    ];
    for (shapes, family) in cases {
        let shapes: std::collections::BTreeMap<String, Vec<usize>> = shapes
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().map(|d| d as usize).collect()))
            .collect();
        let read = sdxl_unet_config_from_shapes(&shapes, family).unwrap();
        let preset = family.unet_preset();
        let used = |c: &UNetConfig| {
            let last = c.transformer_layers_per_block.len() - 1;
            let mut c = c.clone();
            for (i, d) in c.transformer_layers_per_block.iter_mut().enumerate() {
                if !c.cross_attention_blocks[i] && i != last {
                    *d = 0;
                }
            }
            c
        };
        assert_eq!(used(&read), used(&preset), "{family:?}");

        // A middle block shallower than the last level: the base's last level cross-attends,
        // and weft gives the middle block its depth, so that file is refused; the refiner's
        // last level has no attention, so its middle block's depth is free.
        let mut odd = shapes.clone();
        odd.retain(|k, _| {
            !k.starts_with("model.diffusion_model.middle_block.1.transformer_blocks.3.")
        });
        match family {
            ModelFamily::Sdxl => {
                let e = sdxl_unet_config_from_shapes(&odd, family)
                    .unwrap_err()
                    .to_string();
                assert!(e.contains("middle block has 3 transformer layers"), "{e}");
            }
            _ => {
                let c = sdxl_unet_config_from_shapes(&odd, family).unwrap();
                assert_eq!(c.transformer_layers_per_block, [1, 4, 4, 3]);
            }
        }
    }
}
