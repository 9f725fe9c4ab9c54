//! LoRA patching against the ComfyUI-order reference of scripts/parity/lora.py: a kohya and a
//! PEFT LoRA on the tiny SD1 model of the unet_vae fixtures, at two strengths and stacked; every
//! tensor a LoRA touches equals the reference within 1e-6.
use std::collections::HashMap;
use std::path::PathBuf;

use tch::{Device, Kind, Tensor};
use weft_nodes::weights::checkpoint::{load_checkpoint, LoadOptions};
use weft_nodes::weights::lora::{
    read_lora, LoraLayers, LoraTarget, SourceWeights, TargetModel, WeightPatch, SD1_LORA_KEYS,
};
use weft_nodes::weights::read_safetensors;
use weft_test_support::fixtures;

fn lora_file(name: &str) -> PathBuf {
    let path = fixtures("lora").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run .venv/bin/python scripts/parity/lora.py",
        path.display()
    );
    path
}

struct Model {
    unet: HashMap<String, Tensor>,
    clip: HashMap<String, Tensor>,
}

fn model() -> Model {
    let checkpoint = load_checkpoint(&fixtures("unet_vae").join("sd1"), &LoadOptions::default())
        .expect("the tiny SD1 fixture loads");
    let unet = checkpoint
        .unet
        .source()
        .base()
        .iter()
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    Model {
        unet,
        clip: checkpoint.text_encoder_weights,
    }
}

fn read(name: &str, model: &Model) -> LoraLayers {
    read_lora(
        &lora_file(name),
        &weft_engine::FileAccess::anywhere(),
        Device::Cpu,
        &SD1_LORA_KEYS,
        &[
            TargetModel {
                target: LoraTarget::Unet,
                tensors: &model.unet,
            },
            TargetModel {
                target: LoraTarget::TextEncoder(0),
                tensors: &model.clip,
            },
        ],
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The patched tensors of `base` with each (LoRA, target, strength) applied in order.
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
        let adapters = layers.targets.remove(&target).expect("the LoRA patches it");
        source = source.with_patch(WeightPatch {
            adapters,
            strength: *strength,
        });
    }
    source.tensors().expect("patches apply")
}

/// Compares every reference tensor of `case` with the patched UNet and CLIP tensors; returns
/// how many were compared.
fn check_case(
    case: &str,
    reference: &HashMap<String, Tensor>,
    unet: &HashMap<String, Tensor>,
    clip: &HashMap<String, Tensor>,
    base: &Model,
) -> usize {
    let mut compared = 0;
    for (key, expected) in reference {
        let Some(name) = key.strip_prefix(&format!("{case}/")) else {
            continue;
        };
        let (got, original) = match (unet.get(name), clip.get(name)) {
            (Some(t), _) => (t, &base.unet[name]),
            (None, Some(t)) => (t, &base.clip[name]),
            _ => panic!("{case}: {name} is not a model tensor"),
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
fn kohya_and_peft_loras_patch_every_mapped_tensor_as_comfyui_does() {
    let base = model();
    let reference =
        read_safetensors(&lora_file("reference.safetensors"), Device::Cpu, None).unwrap();
    let touched = |case: &str| {
        reference
            .keys()
            .filter(|k| k.starts_with(&format!("{case}/")))
            .count()
    };

    // The one layer no SD1 model has is named, up and down.
    let kohya = read("kohya.safetensors", &base);
    assert_eq!(
        kohya.unmatched,
        [
            "lora_unet_down_blocks_9_attentions_0_proj_in (down)",
            "lora_unet_down_blocks_9_attentions_0_proj_in (up)"
        ]
    );

    for (case, strength_model, strength_clip) in
        [("kohya_1_1", 1.0, 1.0), ("kohya_05_025", 0.5, 0.25)]
    {
        let mut for_unet = read("kohya.safetensors", &base);
        let mut for_clip = read("kohya.safetensors", &base);
        let unet = patched(
            &base.unet,
            &mut [(&mut for_unet, strength_model)],
            LoraTarget::Unet,
        );
        let clip = patched(
            &base.clip,
            &mut [(&mut for_clip, strength_clip)],
            LoraTarget::TextEncoder(0),
        );
        let compared = check_case(case, &reference, &unet, &clip, &base);
        assert_eq!(compared, touched(case));
        assert!(compared >= 60, "{case}: only {compared} tensors");
    }

    // The same LoRA with LDM module names patches the same tensors to the same bits.
    let mut ldm_unet = read("kohya_ldm.safetensors", &base);
    let mut ldm_clip = read("kohya_ldm.safetensors", &base);
    assert!(ldm_unet.unmatched.is_empty(), "{:?}", ldm_unet.unmatched);
    let unet = patched(&base.unet, &mut [(&mut ldm_unet, 1.0)], LoraTarget::Unet);
    let clip = patched(
        &base.clip,
        &mut [(&mut ldm_clip, 1.0)],
        LoraTarget::TextEncoder(0),
    );
    assert_eq!(
        check_case("kohya_1_1", &reference, &unet, &clip, &base),
        touched("kohya_1_1")
    );

    // Chained: kohya, then PEFT, each model at its own strength.
    let (mut k1, mut k2) = (
        read("kohya.safetensors", &base),
        read("kohya.safetensors", &base),
    );
    let (mut p1, mut p2) = (
        read("peft.safetensors", &base),
        read("peft.safetensors", &base),
    );
    assert!(p1.unmatched.is_empty(), "{:?}", p1.unmatched);
    let unet = patched(
        &base.unet,
        &mut [(&mut k1, 0.7), (&mut p1, -0.4)],
        LoraTarget::Unet,
    );
    let clip = patched(
        &base.clip,
        &mut [(&mut k2, 0.3), (&mut p2, 1.5)],
        LoraTarget::TextEncoder(0),
    );
    let compared = check_case("stack", &reference, &unet, &clip, &base);
    assert_eq!(compared, touched("stack"));
}

#[test]
fn untouched_tensors_are_shared_with_the_base_model_not_copied() {
    let base = model();
    let mut kohya = read("kohya.safetensors", &base);
    let unet = patched(&base.unet, &mut [(&mut kohya, 1.0)], LoraTarget::Unet);
    let mut shared = 0;
    for (name, tensor) in &unet {
        let same = tensor.data_ptr() == base.unet[name].data_ptr();
        let is_touched = name.ends_with(".weight")
            && (name.contains(".attentions.")
                || name.contains("resnets")
                || name.contains("time_embedding"));
        if same {
            shared += 1;
        } else {
            assert!(is_touched, "{name} was copied but no LoRA touches it");
        }
    }
    assert!(shared > 50, "only {shared} shared tensors");
}
