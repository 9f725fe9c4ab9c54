//! Writes the weights LoRAs patch in a single-file SD checkpoint, as weft's LoadLora chain
//! computes them, under the checkpoint's own (LDM) names, so a script can compare them with
//! another implementation's patched weights key by key
//! (scripts/parity/lora_inpaint_comfyui.py --weights does, against ComfyUI's loader).
//!
//! ```text
//! cargo run --release -p weft-nodes --example lora_patched_weights -- \
//!     CHECKPOINT OUT.safetensors LORA STRENGTH_MODEL STRENGTH_CLIP [LORA SM SC ...]
//! ```
//! The checkpoint is loaded in fp32; the LoRAs patch in the order given (a chain of LoadLora
//! nodes). Every tensor some LoRA touches is written (fp32); the LoRA keys that match no layer
//! are printed.
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use tch::{Device, Kind, Tensor};
use weft_nodes::weights::checkpoint::{load_checkpoint, LoadOptions};
use weft_nodes::weights::ldm_keymap::{map_ldm_key, Component, LdmLayout, Mapped};
use weft_nodes::weights::lora::{read_lora, LoraTarget, SourceWeights, TargetModel, WeightPatch};
use weft_nodes::weights::MappedFile;

type Error = Box<dyn std::error::Error>;

fn run(args: &[String]) -> Result<(), Error> {
    let [checkpoint_path, out, lora_args @ ..] = args else {
        return Err("usage: CHECKPOINT OUT.safetensors LORA SM SC [LORA SM SC ...]".into());
    };
    if lora_args.is_empty() || lora_args.len() % 3 != 0 {
        return Err("give each LoRA as three arguments: FILE STRENGTH_MODEL STRENGTH_CLIP".into());
    }
    let options = LoadOptions {
        kind: Kind::Float,
        ..LoadOptions::default()
    };
    let checkpoint = load_checkpoint(Path::new(checkpoint_path), &options)
        .map_err(|e| format!("{checkpoint_path}: {e}"))?;
    let keys = checkpoint.version.lora_keys();
    let unet_base: HashMap<String, Tensor> = checkpoint
        .unet
        .source()
        .base()
        .iter()
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    let clip_base = &checkpoint.text_encoder_weights;
    let shallow = |map: &HashMap<String, Tensor>| -> HashMap<String, Tensor> {
        map.iter()
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect()
    };
    let mut unet = SourceWeights::new(shallow(&unet_base));
    let mut clip = SourceWeights::new(shallow(clip_base));
    for lora in lora_args.chunks(3) {
        let (file, strength_model, strength_clip) =
            (&lora[0], lora[1].parse::<f64>()?, lora[2].parse::<f64>()?);
        let mut layers = read_lora(
            Path::new(file),
            &weft_engine::FileAccess::anywhere(),
            Device::Cpu,
            keys,
            &[
                TargetModel {
                    target: LoraTarget::Unet,
                    tensors: &unet_base,
                },
                TargetModel {
                    target: LoraTarget::TextEncoder(0),
                    tensors: clip_base,
                },
            ],
        )
        .map_err(|e| format!("{file}: {e}"))?;
        for name in &layers.unmatched {
            println!("{file}: matches no layer: {name}");
        }
        if let Some(adapters) = layers.targets.remove(&LoraTarget::Unet) {
            unet = unet.with_patch(WeightPatch {
                adapters,
                strength: strength_model,
            });
        }
        if let Some(adapters) = layers.targets.remove(&LoraTarget::TextEncoder(0)) {
            clip = clip.with_patch(WeightPatch {
                adapters,
                strength: strength_clip,
            });
        }
    }
    let touched = |source: &SourceWeights| -> Vec<String> {
        let mut names: Vec<String> = source
            .patches()
            .iter()
            .flat_map(|p| p.adapters.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let (unet_touched, clip_touched) = (touched(&unet), touched(&clip));
    let unet = unet.tensors().map_err(|(k, e)| format!("patching {k}: {e}"))?;
    let clip = clip.tensors().map_err(|(k, e)| format!("patching {k}: {e}"))?;

    // weft's (diffusers / transformers) name -> the checkpoint's name.
    let layout = LdmLayout {
        unet_layers_per_block: checkpoint.unet.config().layers_per_block,
        vae_blocks: 4,
        open_clip_layers_kept: 23,
    };
    let mut ldm_names: HashMap<(Component, String), String> = HashMap::new();
    for name in MappedFile::open(Path::new(checkpoint_path))?.shapes()?.keys() {
        if let Some((component, Mapped::Rename(weft_name))) = map_ldm_key(name, &layout) {
            ldm_names.insert((component, weft_name), name.clone());
        }
    }
    let mut written = Vec::new();
    for (component, names, tensors) in [
        (Component::Unet, &unet_touched, &unet),
        (Component::TextEncoder, &clip_touched, &clip),
    ] {
        for name in names {
            let ldm = ldm_names
                .get(&(component, name.clone()))
                .ok_or_else(|| format!("{name}: no checkpoint tensor maps to it"))?;
            written.push((ldm.clone(), tensors[name].to_kind(Kind::Float)));
        }
    }
    Tensor::write_safetensors(&written, out)?;
    println!(
        "wrote {} patched tensors ({} UNet, {} text encoder) to {out}",
        written.len(),
        unet_touched.len(),
        clip_touched.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lora_patched_weights: {e}");
            ExitCode::FAILURE
        }
    }
}
