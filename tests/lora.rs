//! LoadLora in real runs on the tiny SD1 fixture model: strength 0 gives the very pixels of no
//! LoRA, a LoRA changes them; a new strength_model re-runs the patch and the sampler but not
//! the checkpoint load nor the prompt encodes, a new strength_clip re-runs the encodes; layers
//! that match nothing are named in a notice; a LoRA of another family is refused.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weft_engine::{
    CancelToken, Event, Executor, ExecutorConfig, ModelFolders, NodeEntry, RunRequest, RunStatus,
    Workflow,
};
use weft_test_support::fixtures;

/// A models folder with the CLIP vocabulary and the fixture LoRAs in `loras/`.
fn models_folder(dir: &Path) -> PathBuf {
    let models = dir.join("models");
    std::fs::create_dir_all(models.join("converted/clip")).unwrap();
    std::fs::create_dir_all(models.join("loras")).unwrap();
    std::fs::copy(
        fixtures("text_encoders").join("bpe_simple_vocab_16e6.txt.gz"),
        models.join(weft_nodes::diffusion::CLIP_VOCAB),
    )
    .unwrap();
    for name in ["kohya.safetensors", "peft.safetensors"] {
        let from = fixtures("lora").join(name);
        assert!(
            from.is_file(),
            "{} is missing: run scripts/parity/lora.py",
            from.display()
        );
        std::fs::copy(from, models.join("loras").join(name)).unwrap();
    }
    models
}

fn executor(dir: &Path) -> Executor {
    Executor::new(
        Arc::new(weft_nodes::registry()),
        ExecutorConfig {
            output_dir: dir.join("out"),
            models: ModelFolders::single(models_folder(dir)),
            ..ExecutorConfig::default()
        },
    )
}

/// The tiny SD1 fixture model with its CLIP token table widened to the real vocabulary (rows
/// repeated), so the real tokenizer's ids fit; the rest is the fixture's, file for file.
fn tiny_sd1_full_vocab(dir: &Path) -> PathBuf {
    let from = fixtures("unet_vae").join("sd1");
    let to = dir.join("sd1");
    for part in ["unet", "vae", "scheduler", "text_encoder"] {
        std::fs::create_dir_all(to.join(part)).unwrap();
        for entry in std::fs::read_dir(from.join(part)).unwrap().flatten() {
            std::fs::copy(entry.path(), to.join(part).join(entry.file_name())).unwrap();
        }
    }
    let weights = to.join("text_encoder/model.safetensors");
    let mut tensors: Vec<(String, tch::Tensor)> = tch::Tensor::read_safetensors(&weights).unwrap();
    for (name, t) in tensors.iter_mut() {
        if name.ends_with("token_embedding.weight") {
            let rows = t.size()[0];
            let index =
                tch::Tensor::arange(49408, (tch::Kind::Int64, tch::Device::Cpu)).remainder(rows);
            *t = t.index_select(0, &index);
        }
    }
    tch::Tensor::write_safetensors(&tensors, &weights).unwrap();
    let config = to.join("text_encoder/config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["vocab_size"] = 49408.into();
    json["bos_token_id"] = 49406.into();
    json["eos_token_id"] = 49407.into();
    std::fs::write(&config, json.to_string()).unwrap();
    to
}

/// txt2img on the tiny SD1 model, through one LoadLora per (file, strength_model,
/// strength_clip) in order (none: no LoadLora at all).
fn workflow(checkpoint: &Path, loras: &[(&str, f64, f64)]) -> Workflow {
    let mut wf = Workflow::new();
    wf.add(
        "checkpoint",
        NodeEntry::new("LoadCheckpoint")
            .with("name", checkpoint.display().to_string().as_str())
            .with("precision", "fp32"),
    );
    let (mut model, mut encoder) = (("checkpoint", "unet"), ("checkpoint", "text_encoder"));
    let ids = ["lora_a", "lora_b", "lora_c"];
    for (i, (file, strength_model, strength_clip)) in loras.iter().enumerate() {
        wf.add(
            ids[i],
            NodeEntry::new("LoadLora")
                .link("model", model.0, model.1)
                .link("text_encoder", encoder.0, encoder.1)
                .with("lora", format!("loras/{file}").as_str())
                .with("strength_model", *strength_model)
                .with("strength_clip", *strength_clip),
        );
        model = (ids[i], "model");
        encoder = (ids[i], "text_encoder");
    }
    wf.add(
        "positive",
        NodeEntry::new("PromptEncode")
            .link("encoder", encoder.0, encoder.1)
            .with("text", "a red circle"),
    )
    .add(
        "negative",
        NodeEntry::new("PromptEncode")
            .link("encoder", encoder.0, encoder.1)
            .with("text", ""),
    )
    .add(
        "latent",
        NodeEntry::new("EmptyLatent")
            .with("width", 64i64)
            .with("height", 64i64),
    )
    .add(
        "sample",
        NodeEntry::new("Sampler")
            .link("model", model.0, model.1)
            .link("positive", "positive", "conditioning")
            .link("negative", "negative", "conditioning")
            .link("latent", "latent", "latent")
            .with("seed", 7i64)
            .with("steps", 3i64)
            .with("cfg", 5.0)
            .with("sampler", "euler"),
    )
    .add(
        "decode",
        NodeEntry::new("VaeDecode")
            .link("vae", "checkpoint", "vae")
            .link("latent", "sample", "latent"),
    )
    .add(
        "save",
        NodeEntry::new("SaveImage")
            .link("image", "decode", "image")
            .with("prefix", "lora"),
    );
    wf
}

struct Ran {
    events: Vec<Event>,
    error: Option<String>,
}

impl Ran {
    /// Each node that ran, with why.
    fn started(&self) -> HashMap<String, Vec<String>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::NodeStarted { node, why, .. } => Some((node.clone(), why.clone())),
                _ => None,
            })
            .collect()
    }

    fn pixels(&self) -> Vec<u8> {
        assert!(self.error.is_none(), "{:?}", self.error);
        let path = self
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Output { path, .. } => Some(path.clone()),
                _ => None,
            })
            .expect("an image was written");
        image::open(&path).expect("a PNG").to_rgb8().into_raw()
    }

    fn notices(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Notice { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
}

fn run(executor: &mut Executor, wf: &Workflow) -> Ran {
    let mut events = Vec::new();
    let report = executor.run(
        RunRequest::new(wf),
        &CancelToken::new(),
        &mut |e: &Event| events.push(e.clone()),
    );
    let error = events.iter().find_map(|e| match e {
        Event::Error { message, .. } => Some(message.clone()),
        _ => None,
    });
    if error.is_none() {
        assert_eq!(report.status, RunStatus::Succeeded, "{events:?}");
    }
    Ran { events, error }
}

#[test]
fn strength_zero_gives_the_pixels_of_no_lora_and_a_lora_changes_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut ex = executor(dir.path());
    let sd1 = tiny_sd1_full_vocab(dir.path());
    let plain = run(&mut ex, &workflow(&sd1, &[])).pixels();
    let zero = run(&mut ex, &workflow(&sd1, &[("kohya.safetensors", 0.0, 0.0)])).pixels();
    assert_eq!(
        plain, zero,
        "strength 0 must be the model without LoRA, bit for bit"
    );
    let one = run(&mut ex, &workflow(&sd1, &[("kohya.safetensors", 1.0, 1.0)])).pixels();
    assert_ne!(plain, one, "a LoRA at strength 1 changes the image");
    let stacked = run(
        &mut ex,
        &workflow(
            &sd1,
            &[
                ("kohya.safetensors", 1.0, 1.0),
                ("peft.safetensors", 0.5, 0.5),
            ],
        ),
    )
    .pixels();
    assert_ne!(one, stacked, "a second LoRA in the chain changes it again");
}

#[test]
fn a_new_strength_reruns_the_patch_and_what_follows_never_the_checkpoint_and_the_encodes_only_for_clip(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut ex = executor(dir.path());
    let sd1 = tiny_sd1_full_vocab(dir.path());
    let first = run(&mut ex, &workflow(&sd1, &[("kohya.safetensors", 1.0, 1.0)]));
    assert!(first.error.is_none(), "{:?}", first.error);
    assert!(first.started().contains_key("lora_a"));

    let model_changed = run(&mut ex, &workflow(&sd1, &[("kohya.safetensors", 0.5, 1.0)]));
    let ran = model_changed.started();
    assert_eq!(ran["lora_a"], ["input 'strength_model' changed"]);
    assert_eq!(ran["sample"], ["upstream 'lora_a' changed"]);
    for cached in ["checkpoint", "positive", "negative", "latent"] {
        assert!(!ran.contains_key(cached), "{cached} re-ran: {ran:?}");
    }

    let clip_changed = run(
        &mut ex,
        &workflow(&sd1, &[("kohya.safetensors", 0.5, 0.25)]),
    );
    let ran = clip_changed.started();
    assert_eq!(ran["lora_a"], ["input 'strength_clip' changed"]);
    assert_eq!(ran["positive"], ["upstream 'lora_a' changed"]);
    assert_eq!(ran["negative"], ["upstream 'lora_a' changed"]);
    assert!(!ran.contains_key("checkpoint"), "{ran:?}");
}

#[test]
fn unmatched_layers_are_named_in_a_notice_and_another_familys_lora_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut ex = executor(dir.path());
    let sd1 = tiny_sd1_full_vocab(dir.path());
    let ran = run(&mut ex, &workflow(&sd1, &[("kohya.safetensors", 1.0, 1.0)]));
    let notices = ran.notices();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("lora_unet_down_blocks_9_attentions_0_proj_in")),
        "{notices:?}"
    );

    // An SDXL LoRA: a second text encoder's layers (lora_te2_*).
    let sdxl = dir.path().join("models/loras/sdxl.safetensors");
    let tensors = [
        (
            "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight",
            tch::Tensor::zeros([8, 4], (tch::Kind::Half, tch::Device::Cpu)),
        ),
        (
            "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
            tch::Tensor::zeros([4, 8], (tch::Kind::Half, tch::Device::Cpu)),
        ),
    ];
    tch::Tensor::write_safetensors(&tensors, &sdxl).unwrap();
    let refused = run(&mut ex, &workflow(&sd1, &[("sdxl.safetensors", 1.0, 1.0)]));
    let error = refused.error.expect("an SDXL LoRA is refused");
    assert!(
        error.contains("SDXL") && error.contains("sdxl.safetensors"),
        "{error}"
    );
}

#[test]
fn model_only_patches_the_unet_and_warns_only_of_unet_layers_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let mut ex = executor(dir.path());
    let sd1 = tiny_sd1_full_vocab(dir.path());
    let plain = run(&mut ex, &workflow(&sd1, &[])).pixels();
    let mut wf = workflow(&sd1, &[]);
    wf.add(
        "model_only",
        NodeEntry::new("LoadLoraModelOnly")
            .link("model", "checkpoint", "unet")
            .with("lora", "loras/kohya.safetensors")
            .with("strength_model", 1.0),
    );
    wf.nodes.get_mut("sample").unwrap().inputs.insert(
        "model".into(),
        NodeEntry::new("x")
            .link("model", "model_only", "model")
            .inputs
            .swap_remove("model")
            .unwrap(),
    );
    let ran = run(&mut ex, &wf);
    assert_ne!(ran.pixels(), plain, "the UNet is patched");
    let notices = ran.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains("lora_unet_down_blocks_9") && !notices[0].contains("lora_te_"),
        "{notices:?}"
    );
}
