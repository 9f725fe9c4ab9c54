//! What a user sees when handed the wrong file: a truncated download, a pickle, a text file,
//! a checkpoint of another architecture, weights that do not fit the config, a folder with a
//! part missing. Each must be a clear error naming the file and the problem, never a panic.
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use weft_nodes::models::autoencoder_kl::VaeConfig;
use weft_nodes::models::unet_2d_condition::UNetConfig;
use weft_nodes::weights::checkpoint::{load_checkpoint, load_single_file, LoadOptions};
use weft_nodes::weights::read_safetensors;
use weft_test_support::fixtures;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-checkpoint-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn tiny_sd1() -> LoadOptions {
    LoadOptions {
        unet_config: Some(UNetConfig::tiny_sd1()),
        vae_config: Some(VaeConfig::tiny()),
        ..LoadOptions::default()
    }
}

fn error_of(path: &Path, options: &LoadOptions) -> String {
    match load_checkpoint(path, options) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_file_says_truncated() {
    let bytes = std::fs::read(fixtures("unet_vae").join("sd1.safetensors")).unwrap();
    let path = scratch("truncated.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = error_of(&path, &tiny_sd1());
    println!("{e}");
    assert!(
        e.contains("truncated.safetensors") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn non_safetensors_files_are_named_as_such() {
    let text = scratch("notes.safetensors");
    std::fs::write(&text, "these are not the weights you are looking for\n").unwrap();
    let e = error_of(&text, &tiny_sd1());
    println!("{e}");
    assert!(e.contains("not a valid safetensors file"), "{e}");

    let pickle = scratch("model.ckpt");
    std::fs::write(&pickle, b"PK\x03\x04archive/data.pkl....").unwrap();
    let e = error_of(&pickle, &tiny_sd1());
    println!("{e}");
    assert!(e.contains("pickle") && e.contains("model.ckpt"), "{e}");

    let empty = scratch("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(error_of(&empty, &tiny_sd1()).contains("empty.safetensors"));

    let missing = scratch("does-not-exist.safetensors");
    assert!(error_of(&missing, &tiny_sd1()).contains("does-not-exist"));
}

#[test]
fn other_architectures_are_rejected_by_name() {
    let vit = scratch("vit.safetensors");
    let t = Tensor::zeros([4, 4], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(
        &[
            ("vision_model.embeddings.patch_embedding.weight", &t),
            ("vision_model.post_layernorm.weight", &t),
        ],
        &vit,
    )
    .unwrap();
    let e = error_of(&vit, &LoadOptions::default());
    println!("{e}");
    assert!(e.contains("not a Stable Diffusion checkpoint"), "{e}");

    let sdxl = scratch("sdxl.safetensors");
    Tensor::write_safetensors(
        &[
            ("model.diffusion_model.input_blocks.0.0.weight", &t),
            (
                "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
                &t,
            ),
        ],
        &sdxl,
    )
    .unwrap();
    let e = error_of(&sdxl, &LoadOptions::default());
    println!("{e}");
    assert!(e.contains("SDXL"), "{e}");
}

#[test]
fn wrong_config_lists_missing_unexpected_and_misshaped_tensors() {
    // The SD1 file read with the SD2 config: every kind of problem at once.
    let options = LoadOptions {
        unet_config: Some(UNetConfig::tiny_sd2()),
        vae_config: Some(VaeConfig::tiny()),
        ..LoadOptions::default()
    };
    let e = match load_single_file(&fixtures("unet_vae").join("sd1.safetensors"), &options) {
        Ok(_) => panic!("loaded with the wrong config"),
        Err(e) => e.to_string(),
    };
    println!("{}", &e[..e.len().min(1500)]);
    assert!(e.contains("sd1.safetensors (UNet)"), "{e}");
    assert!(e.contains("missing tensor"), "{e}");
    assert!(e.contains("mis-shaped tensor"), "{e}");
    assert!(e.contains("unexpected tensor"), "{e}");
}

#[test]
fn edited_checkpoint_names_each_bad_tensor() {
    let mut tensors = read_safetensors(
        &fixtures("unet_vae").join("sd1.safetensors"),
        Device::Cpu,
        None,
    )
    .unwrap();
    let _ = tensors
        .remove("model.diffusion_model.out.2.bias")
        .expect("fixture has conv_out bias");
    tensors.insert(
        "model.diffusion_model.time_embed.0.weight".into(),
        Tensor::zeros([3, 3], (Kind::Half, Device::Cpu)),
    );
    tensors.insert(
        "model.diffusion_model.input_blocks.1.0.extra_layer.weight".into(),
        Tensor::zeros([2], (Kind::Half, Device::Cpu)),
    );
    let path = scratch("edited.safetensors");
    let list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    Tensor::write_safetensors(&list, &path).unwrap();
    let e = match load_single_file(&path, &tiny_sd1()) {
        Ok(_) => panic!("edited checkpoint loaded"),
        Err(e) => e.to_string(),
    };
    println!("{e}");
    assert!(e.contains("missing tensor conv_out.bias [4]"), "{e}");
    assert!(
        e.contains(
            "mis-shaped tensor time_embedding.linear_1.weight: expected [64, 16], found [3, 3]"
        ),
        "{e}"
    );
    assert!(
        e.contains("unexpected tensor model.diffusion_model.input_blocks.1.0.extra_layer.weight"),
        "{e}"
    );
}

#[test]
fn diffusers_folder_with_a_part_missing_names_the_file() {
    let dir = scratch("folder");
    for part in ["unet", "text_encoder", "scheduler"] {
        std::fs::create_dir_all(dir.join(part)).unwrap();
        for entry in std::fs::read_dir(fixtures("unet_vae").join("sd1").join(part)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(part).join(entry.file_name())).unwrap();
        }
    }
    let e = error_of(&dir, &LoadOptions::default());
    println!("{e}");
    assert!(e.contains("vae") && e.contains("config.json"), "{e}");
}
