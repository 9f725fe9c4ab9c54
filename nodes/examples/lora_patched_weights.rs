//! Writes the weights LoRAs patch in a single-file SD checkpoint, as weft's LoadLora chain
//! computes them, under the checkpoint's own (LDM) names, so a script can compare them with
//! another implementation's patched weights key by key
//! (scripts/parity/lora_inpaint_comfyui.py --weights does, against ComfyUI's loader).
//!
//! ```text
//! cargo run --release -p weft-nodes --example lora_patched_weights -- \
//!     CHECKPOINT (OUT.safetensors | --compare DIR) LORA STRENGTH_MODEL STRENGTH_CLIP [LORA SM SC ...]
//! ```
//! The checkpoint is loaded in fp32; the LoRAs patch in the order given (a chain of LoadLora
//! nodes). Every tensor some LoRA touches is written (fp32), or with `--compare DIR` compared
//! with the tensors of the `*.safetensors` files in DIR (the reference, same names): the last
//! line is a JSON summary (tensors only one side patches, the largest difference, patched
//! tensors equal to the base). The LoRA keys that match no layer are printed.
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
    let (checkpoint_path, target, lora_args) =
        match args {
            [checkpoint, flag, dir, rest @ ..] if flag == "--compare" => {
                (checkpoint, Target::Compare(dir), rest)
            }
            [checkpoint, out, rest @ ..] => (checkpoint, Target::Write(out), rest),
            _ => return Err(
                "usage: CHECKPOINT (OUT.safetensors | --compare DIR) LORA SM SC [LORA SM SC ...]"
                    .into(),
            ),
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
    let unet = unet
        .tensors()
        .map_err(|(k, e)| format!("patching {k}: {e}"))?;
    let clip = clip
        .tensors()
        .map_err(|(k, e)| format!("patching {k}: {e}"))?;

    // weft's (diffusers / transformers) name -> the checkpoint's name.
    let layout = LdmLayout {
        unet_layers_per_block: checkpoint.unet.config().layers_per_block,
        vae_blocks: 4,
        open_clip_layers_kept: 23,
    };
    let mut ldm_names: HashMap<(Component, String), String> = HashMap::new();
    for name in MappedFile::open(Path::new(checkpoint_path))?
        .shapes()?
        .keys()
    {
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
    println!(
        "weft patches {} tensors ({} UNet, {} text encoder)",
        written.len(),
        unet_touched.len(),
        clip_touched.len()
    );
    match target {
        Target::Write(out) => Tensor::write_safetensors(&written, out)?,
        Target::Compare(dir) => {
            let base = [
                (Component::Unet, &unet_base),
                (Component::TextEncoder, clip_base),
            ];
            compare(&written, Path::new(dir), |ldm| {
                base.iter().find_map(|(component, tensors)| {
                    let weft_name = ldm_names
                        .iter()
                        .find_map(|((c, w), l)| (c == component && l == ldm).then_some(w))?;
                    tensors.get(weft_name)
                })
            })?
        }
    }
    Ok(())
}

enum Target<'a> {
    Write(&'a String),
    Compare(&'a String),
}

/// Compares weft's patched tensors with every tensor of the safetensors files in `dir`.
fn compare<'a>(
    weft: &[(String, Tensor)],
    dir: &Path,
    base: impl Fn(&str) -> Option<&'a Tensor>,
) -> Result<(), Error> {
    let weft: HashMap<&str, &Tensor> = weft.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut seen = std::collections::HashSet::new();
    let (mut only_reference, mut unmoved) = (Vec::new(), Vec::new());
    let (mut worst, mut worst_key) = (0.0f64, String::new());
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    for file in files {
        for (name, reference) in Tensor::read_safetensors(&file)? {
            let Some(got) = weft.get(name.as_str()) else {
                only_reference.push(name);
                continue;
            };
            seen.insert(name.clone());
            let error = if got.size() == reference.size() {
                (*got - &reference).abs().max().double_value(&[])
            } else {
                f64::INFINITY
            };
            if error > worst {
                (worst, worst_key) = (error, name.clone());
            }
            if base(&name).is_some_and(|b| b.equal(got)) {
                unmoved.push(name);
            }
        }
    }
    let mut only_weft: Vec<&str> = weft
        .keys()
        .filter(|k| !seen.contains(**k))
        .copied()
        .collect();
    only_weft.sort_unstable();
    only_reference.sort();
    println!(
        "{{\"compared\": {}, \"only_reference\": {:?}, \"only_weft\": {:?}, \"max_abs_diff\": {worst:e}, \"at\": {worst_key:?}, \"unmoved\": {:?}}}",
        seen.len(),
        only_reference,
        only_weft,
        unmoved
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
