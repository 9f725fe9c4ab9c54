//! SDXL LoRA patching against the ComfyUI-order reference of scripts/parity/lora_sdxl.py: kohya
//! files (UNet under the single file's and under diffusers' module names, `lora_te1_` on CLIP-L,
//! `lora_te2_` on bigG) and a PEFT file (`unet.`, `text_encoder.`, `text_encoder_2.`) on the tiny
//! SDXL model of the sdxl fixtures, at two strengths and stacked, with the key table SDXL's family
//! descriptor names; every tensor a LoRA touches equals the reference within 1e-6.
use std::collections::HashMap;
use std::path::PathBuf;

use tch::{Device, Kind, Tensor};
use weft_nodes::weights::checkpoint::{load_diffusers_folder, LoadOptions, ModelFamily};
use weft_nodes::weights::lora::{
    read_lora, LoraLayers, LoraTarget, SourceWeights, TargetModel, WeightPatch,
};
use weft_nodes::weights::read_safetensors;
use weft_test_support::fixtures;

fn lora_file(name: &str) -> PathBuf {
    let path = fixtures("lora_sdxl").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run .venv/bin/python scripts/parity/lora_sdxl.py",
        path.display()
    );
    path
}

/// The tiny SDXL model's UNet, CLIP-L and bigG tensors (fp32).
struct Model {
    unet: HashMap<String, Tensor>,
    clip_l: HashMap<String, Tensor>,
    clip_g: HashMap<String, Tensor>,
}

fn model() -> Model {
    let checkpoint =
        load_diffusers_folder(&fixtures("sdxl").join("diffusers"), &LoadOptions::default())
            .expect("the tiny SDXL fixture loads");
    assert_eq!(checkpoint.family(), ModelFamily::Sdxl);
    let unet = checkpoint
        .unet
        .source()
        .base()
        .iter()
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    Model {
        unet,
        clip_l: checkpoint.text_encoder_weights,
        clip_g: checkpoint.text_encoder_2.expect("bigG").weights,
    }
}

fn read_with(
    path: &std::path::Path,
    model: &Model,
    family: ModelFamily,
) -> weft_nodes::weights::lora::Result<LoraLayers> {
    read_lora(
        path,
        &weft_engine::FileAccess::anywhere(),
        Device::Cpu,
        family.lora_keys(),
        &[
            TargetModel {
                target: LoraTarget::Unet,
                tensors: &model.unet,
            },
            TargetModel {
                target: LoraTarget::TextEncoder(0),
                tensors: &model.clip_l,
            },
            TargetModel {
                target: LoraTarget::TextEncoder(1),
                tensors: &model.clip_g,
            },
        ],
    )
}

fn read(name: &str, model: &Model) -> LoraLayers {
    read_with(&lora_file(name), model, ModelFamily::Sdxl).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The patched tensors of `base` with each (LoRA, strength) applied to `target` in order.
fn patched(
    base: &HashMap<String, Tensor>,
    loras: &mut [(&mut LoraLayers, f64)],
    target: LoraTarget,
) -> HashMap<String, Tensor> {
    let mut source = SourceWeights::new(
        base.iter()
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect(),
    );
    for (layers, strength) in loras.iter_mut() {
        let adapters = layers
            .targets
            .remove(&target)
            .unwrap_or_else(|| panic!("the LoRA patches {target:?}"));
        source = source.with_patch(WeightPatch {
            adapters,
            strength: *strength,
        });
    }
    source.tensors().expect("patches apply")
}

/// Patches UNet, CLIP-L and bigG with `loras` (file, strength_model, strength_clip), in order,
/// and compares every reference tensor of `case`; returns how many were compared.
fn check_case(case: &str, base: &Model, loras: &[(&str, f64, f64)]) -> usize {
    let reference =
        read_safetensors(&lora_file("reference.safetensors"), Device::Cpu, None).unwrap();
    let patch = |target: LoraTarget, tensors: &HashMap<String, Tensor>, clip: bool| {
        let mut layers: Vec<(LoraLayers, f64)> = loras
            .iter()
            .map(|(file, m, c)| (read(file, base), if clip { *c } else { *m }))
            .collect();
        let mut refs: Vec<(&mut LoraLayers, f64)> =
            layers.iter_mut().map(|(l, s)| (l, *s)).collect();
        patched(tensors, &mut refs, target)
    };
    let unet = patch(LoraTarget::Unet, &base.unet, false);
    let clip_l = patch(LoraTarget::TextEncoder(0), &base.clip_l, true);
    let clip_g = patch(LoraTarget::TextEncoder(1), &base.clip_g, true);
    let mut compared = 0;
    for (key, expected) in &reference {
        let Some(name) = key.strip_prefix(&format!("{case}/")) else {
            continue;
        };
        let (got, original) = match name.strip_prefix("te2:") {
            Some(g) => (&clip_g[g], &base.clip_g[g]),
            None => match (unet.get(name), clip_l.get(name)) {
                (Some(t), _) => (t, &base.unet[name]),
                (None, Some(t)) => (t, &base.clip_l[name]),
                _ => panic!("{case}: {name} is not a model tensor"),
            },
        };
        assert_eq!(got.kind(), Kind::Float, "{name}");
        let error = (got - expected).abs().max().double_value(&[]);
        assert!(error <= 1e-6, "{case}: {name}: max abs error {error:e}");
        let moved = (got - original).abs().max().double_value(&[]);
        assert!(moved > 0.0, "{case}: {name} was not patched at all");
        compared += 1;
    }
    compared
}

#[test]
fn sdxl_kohya_and_peft_loras_patch_unet_clip_l_and_bigg_as_comfyui_does() {
    let base = model();
    let reference =
        read_safetensors(&lora_file("reference.safetensors"), Device::Cpu, None).unwrap();
    let touched = |case: &str| {
        reference
            .keys()
            .filter(|k| k.starts_with(&format!("{case}/")))
            .count()
    };
    let bigg_touched = reference
        .keys()
        .filter(|k| k.starts_with("kohya_1_1/te2:"))
        .count();
    assert!(bigg_touched >= 6, "{bigg_touched}");
    for file in [
        "kohya_ldm.safetensors",
        "kohya.safetensors",
        "peft.safetensors",
    ] {
        let layers = read(file, &base);
        assert!(
            layers.unmatched.is_empty(),
            "{file}: {:?}",
            layers.unmatched
        );
        for target in [
            LoraTarget::Unet,
            LoraTarget::TextEncoder(0),
            LoraTarget::TextEncoder(1),
        ] {
            assert!(layers.targets.contains_key(&target), "{file}: {target:?}");
        }
    }
    for (case, m, c) in [("kohya_1_1", 1.0, 1.0), ("kohya_05_025", 0.5, 0.25)] {
        let compared = check_case(case, &base, &[("kohya_ldm.safetensors", m, c)]);
        assert_eq!(compared, touched(case), "{case}");
        assert!(compared >= 40, "{case}: only {compared} tensors");
    }
    // The UNet under diffusers' module names patches the same tensors to the same bits.
    assert_eq!(
        check_case("kohya_1_1", &base, &[("kohya.safetensors", 1.0, 1.0)]),
        touched("kohya_1_1")
    );
    let compared = check_case(
        "stack",
        &base,
        &[
            ("kohya_ldm.safetensors", 0.7, 0.3),
            ("peft.safetensors", -0.4, 1.5),
        ],
    );
    assert_eq!(compared, touched("stack"));
}

#[test]
fn loras_of_the_other_family_are_refused_by_name() {
    let base = model();
    // An SD 1.x LoRA on SDXL: its layers do not fit (768-wide cross-attention and the like).
    let sd1 = fixtures("lora").join("kohya.safetensors");
    let e = read_with(&sd1, &base, ModelFamily::Sdxl)
        .err()
        .expect("an SD 1.x LoRA does not fit SDXL")
        .to_string();
    assert!(e.contains("SDXL"), "{e}");
    // An SDXL LoRA on an SD 1.x model: its second text encoder's layers name SDXL.
    let e = read_with(&lora_file("kohya_ldm.safetensors"), &base, ModelFamily::Sd1)
        .err()
        .expect("an SDXL LoRA is refused by an SD 1.x model")
        .to_string();
    assert!(e.contains("SDXL") && e.contains("lora_te2_"), "{e}");
    // And on the refiner, which has no CLIP-L.
    let e = read_with(
        &lora_file("kohya_ldm.safetensors"),
        &base,
        ModelFamily::SdxlRefiner,
    )
    .err()
    .expect("an SDXL base LoRA is refused by the refiner")
    .to_string();
    assert!(e.contains("SDXL base"), "{e}");
}
