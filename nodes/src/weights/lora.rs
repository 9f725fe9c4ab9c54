//! LoRA adapter files (kohya/A1111 `lora_unet_*` / `lora_te_*`, diffusers and PEFT
//! `lora_A`/`lora_B`, LoCon convolutions): reading them, mapping their layer names onto a
//! model's own tensor names with one key table per model family, and the low-rank update
//! `W + strength * alpha / rank * up @ down` computed the way ComfyUI's `calculate_weight` does
//! (fp32, then cast back to the model's dtype), on top of a model's weights as loaded.
use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::weights::MappedFile;

/// A LoRA file that cannot be applied to the model it is given.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error(transparent)]
    Read(#[from] crate::error::ModelError),
    #[error("{}: {message}", path.display())]
    Refused { path: PathBuf, message: String },
    #[error("{}: layer {layer}: {source}", path.display())]
    Tch {
        path: PathBuf,
        layer: String,
        #[source]
        source: tch::TchError,
    },
}

pub type Result<T> = std::result::Result<T, LoraError>;

/// How a LoRA file names a model layer, given the layer's own module path (its tensor name
/// without `.weight`, e.g. `down_blocks.0.attentions.0.proj_in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    /// The prefix, then the module path with its dots turned into underscores (kohya/A1111:
    /// `lora_unet_down_blocks_0_attentions_0_proj_in`).
    Flat(&'static str),
    /// The prefix, then the module path as is (diffusers/PEFT: `unet.down_blocks.0...`).
    Dotted(&'static str),
    /// The prefix, then the module path with attention projections under `processor`
    /// (`attn1.processor.to_q`, `attn1.processor.to_out`): diffusers' older
    /// attention-processor LoRA files.
    Processor(&'static str),
    /// The prefix, then the original LDM module path (`input_blocks.1.1.proj_in`) flattened
    /// like `Flat`: kohya files named after single-file checkpoints' modules. UNet only.
    FlatLdm(&'static str),
}

impl KeyStyle {
    /// What every name of this style starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyStyle::Flat(p)
            | KeyStyle::Dotted(p)
            | KeyStyle::Processor(p)
            | KeyStyle::FlatLdm(p) => p,
        }
    }

    /// The name a LoRA file of this style gives the layer `module` (`None`: this style has no
    /// name for it). `layers_per_block` is the UNet's and `attention_up_levels` its up blocks
    /// that have transformers (for LDM names).
    pub fn name_in(
        self,
        module: &str,
        layers_per_block: usize,
        attention_up_levels: &[usize],
    ) -> Option<String> {
        match self {
            KeyStyle::FlatLdm(prefix) => {
                ldm_unet_module(module, layers_per_block, attention_up_levels)
                    .map(|ldm| format!("{prefix}{}", ldm.replace('.', "_")))
            }
            other => Some(other.name(module)),
        }
    }

    /// The name a LoRA file of this style gives the layer `module` (diffusers names; an LDM
    /// style names it as `name_in` with SD 1.x/2.x's layout does: 2 layers per block,
    /// transformers in up blocks 1 to 3).
    pub fn name(self, module: &str) -> String {
        match self {
            KeyStyle::FlatLdm(_) => self.name_in(module, 2, &[1, 2, 3]).unwrap_or_default(),
            KeyStyle::Flat(prefix) => format!("{prefix}{}", module.replace('.', "_")),
            KeyStyle::Dotted(prefix) => format!("{prefix}{module}"),
            KeyStyle::Processor(prefix) => {
                let path = module.replace(".to_", ".processor.to_");
                let path = path
                    .strip_suffix(".to_out.0")
                    .map_or(path.clone(), |p| format!("{p}.to_out"));
                format!("{prefix}{path}")
            }
        }
    }
}

/// One model family's LoRA key table: the styles its UNet's and each text encoder's layers
/// are named in, and the prefixes that mark a file as made for another family. A new family
/// is one table more, which its descriptor names ([`crate::weights::family::ModelFamily::lora_keys`]).
#[derive(Debug)]
pub struct FamilyLoraKeys {
    pub family: &'static str,
    pub unet: &'static [KeyStyle],
    /// One list of styles per text encoder of the family, in the family's order.
    pub text_encoders: &'static [&'static [KeyStyle]],
    /// A layer name starting with one of these is refused: (prefix, the family it is for).
    pub foreign: &'static [(&'static str, &'static str)],
}

const UNET_STYLES: &[KeyStyle] = &[
    KeyStyle::Flat("lora_unet_"),
    KeyStyle::FlatLdm("lora_unet_"),
    KeyStyle::Flat("lycoris_"),
    KeyStyle::Dotted("unet."),
    KeyStyle::Processor("unet."),
    KeyStyle::Processor(""),
];

const SD_FOREIGN: &[(&str, &str)] = &[
    ("lora_te2_", "SDXL (it patches a second text encoder)"),
    ("text_encoder_2.", "SDXL (it patches a second text encoder)"),
    ("lora_transformer_", "a transformer model (SD3 / Flux)"),
    ("transformer.", "a transformer model (SD3 / Flux)"),
];

/// SD 1.x: CLIP ViT-L/14 (`lora_te_`, SDXL-style `lora_te1_`, diffusers `text_encoder.`,
/// ComfyUI's generic `text_encoders.clip_l.transformer.`).
pub const SD1_LORA_KEYS: FamilyLoraKeys = FamilyLoraKeys {
    family: "SD 1.x",
    unet: UNET_STYLES,
    text_encoders: &[&[
        KeyStyle::Flat("lora_te_"),
        KeyStyle::Flat("lora_te1_"),
        KeyStyle::Dotted("text_encoder."),
        KeyStyle::Dotted("text_encoders.clip_l.transformer."),
    ]],
    foreign: SD_FOREIGN,
};

/// SD 2.x: OpenCLIP ViT-H/14, held under transformers names like SD 1.x's CLIP.
pub const SD2_LORA_KEYS: FamilyLoraKeys = FamilyLoraKeys {
    family: "SD 2.x",
    unet: UNET_STYLES,
    text_encoders: &[&[
        KeyStyle::Flat("lora_te_"),
        KeyStyle::Flat("lora_te1_"),
        KeyStyle::Dotted("text_encoder."),
        KeyStyle::Dotted("text_encoders.clip_h.transformer."),
    ]],
    foreign: SD_FOREIGN,
};

/// SDXL base: CLIP ViT-L/14 then OpenCLIP ViT-bigG/14, as ComfyUI's `model_lora_keys_clip`
/// names them (`lora_te_` and `lora_te1_` for CLIP-L, `lora_te2_` for bigG; diffusers
/// `text_encoder.` / `text_encoder_2.`; the generic `text_encoders.clip_l/clip_g.transformer.`).
/// The UNet takes kohya's names after diffusers' modules (`lora_unet_down_blocks_...`) and after
/// the single file's (`lora_unet_input_blocks_...`), and PEFT's `unet.` names.
pub const SDXL_LORA_KEYS: FamilyLoraKeys = FamilyLoraKeys {
    family: "SDXL",
    unet: UNET_STYLES,
    text_encoders: &[
        &[
            KeyStyle::Flat("lora_te_"),
            KeyStyle::Flat("lora_te1_"),
            KeyStyle::Dotted("text_encoder."),
            KeyStyle::Dotted("text_encoders.clip_l.transformer."),
        ],
        &[
            KeyStyle::Flat("lora_te2_"),
            KeyStyle::Dotted("text_encoder_2."),
            KeyStyle::Dotted("text_encoders.clip_g.transformer."),
        ],
    ],
    foreign: &[
        ("lora_transformer_", "a transformer model (SD3 / Flux)"),
        ("transformer.", "a transformer model (SD3 / Flux)"),
    ],
};

/// The SDXL refiner: bigG is its only text encoder, named as ComfyUI names a lone bigG
/// (`lora_te_`, diffusers `text_encoder.`, the generic `text_encoders.clip_g.transformer.`).
pub const SDXL_REFINER_LORA_KEYS: FamilyLoraKeys = FamilyLoraKeys {
    family: "SDXL refiner",
    unet: UNET_STYLES,
    text_encoders: &[&[
        KeyStyle::Flat("lora_te_"),
        KeyStyle::Dotted("text_encoder."),
        KeyStyle::Dotted("text_encoders.clip_g.transformer."),
    ]],
    foreign: &[
        (
            "lora_te1_",
            "SDXL base (it patches CLIP-L, which the refiner lacks)",
        ),
        ("lora_te2_", "SDXL base (it patches two text encoders)"),
        (
            "text_encoder_2.",
            "SDXL base (it patches two text encoders)",
        ),
        ("lora_transformer_", "a transformer model (SD3 / Flux)"),
        ("transformer.", "a transformer model (SD3 / Flux)"),
    ],
};

/// Which model of a checkpoint a LoRA layer patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LoraTarget {
    Unet,
    /// The family's text encoder of this index.
    TextEncoder(usize),
}

/// The LoRA names of a model's layers in `styles`: LoRA layer name -> the model's tensor name
/// (`<module>.weight`). Built from the model's own tensor names, so no name is guessed.
pub fn layer_names<'a>(
    tensor_names: impl IntoIterator<Item = &'a String>,
    styles: &[KeyStyle],
) -> HashMap<String, String> {
    let names: Vec<&String> = tensor_names.into_iter().collect();
    // A UNet's resnets per down block, for LDM names (`down_blocks.0.resnets.N`).
    let layers_per_block = names
        .iter()
        .filter_map(|n| {
            n.strip_prefix("down_blocks.0.resnets.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(2, |m| m + 1);
    // Up blocks with transformers: LDM numbers their upsampler after the transformer.
    let mut attention_up_levels: Vec<usize> = names
        .iter()
        .filter_map(|n| {
            n.strip_prefix("up_blocks.")?
                .split_once(".attentions.")?
                .0
                .parse::<usize>()
                .ok()
        })
        .collect();
    attention_up_levels.sort_unstable();
    attention_up_levels.dedup();
    let mut map = HashMap::new();
    for name in names {
        let Some(module) = name.strip_suffix(".weight") else {
            continue;
        };
        for style in styles {
            if let Some(lora_name) = style.name_in(module, layers_per_block, &attention_up_levels) {
                map.insert(lora_name, name.clone());
            }
        }
    }
    map
}

/// The original LDM module path of a diffusers UNet module (`down_blocks.0.attentions.1` ->
/// `input_blocks.2.1`), checked against the loader's own LDM -> diffusers map, so a name is
/// only given where that map agrees; `None` for modules outside the UNet's layout.
fn ldm_unet_module(
    module: &str,
    layers_per_block: usize,
    attention_up_levels: &[usize],
) -> Option<String> {
    use crate::weights::ldm_keymap::unet_key;
    let per_level = layers_per_block + 1;
    let resnet = |rest: &str| -> Option<String> {
        const PARTS: [(&str, &str); 6] = [
            ("norm1", "in_layers.0"),
            ("conv1", "in_layers.2"),
            ("time_emb_proj", "emb_layers.1"),
            ("norm2", "out_layers.0"),
            ("conv2", "out_layers.3"),
            ("conv_shortcut", "skip_connection"),
        ];
        PARTS
            .iter()
            .find(|(d, _)| *d == rest)
            .map(|(_, l)| l.to_string())
    };
    let parts: Vec<&str> = module.splitn(5, '.').collect();
    let index = |i: usize| parts.get(i).and_then(|p| p.parse::<usize>().ok());
    let tail = |from: usize| parts[from..].join(".");
    let candidates: Vec<String> = match parts.as_slice() {
        ["conv_in"] => vec!["input_blocks.0.0".into()],
        ["time_embedding", "linear_1"] => vec!["time_embed.0".into()],
        ["time_embedding", "linear_2"] => vec!["time_embed.2".into()],
        // SDXL's added-conditioning MLP.
        ["add_embedding", "linear_1"] => vec!["label_emb.0.0".into()],
        ["add_embedding", "linear_2"] => vec!["label_emb.0.2".into()],
        ["conv_norm_out"] => vec!["out.0".into()],
        ["conv_out"] => vec!["out.2".into()],
        ["down_blocks", _, "resnets", _, rest] => {
            let k = 1 + index(1)? * per_level + index(3)?;
            vec![format!("input_blocks.{k}.0.{}", resnet(rest)?)]
        }
        ["down_blocks", _, "attentions", _, _] => {
            let k = 1 + index(1)? * per_level + index(3)?;
            vec![format!("input_blocks.{k}.1.{}", tail(4))]
        }
        ["down_blocks", _, "downsamplers", "0", "conv"] => {
            vec![format!("input_blocks.{}.0.op", (index(1)? + 1) * per_level)]
        }
        ["mid_block", "resnets", _, rest] => {
            vec![format!("middle_block.{}.{}", 2 * index(2)?, resnet(rest)?)]
        }
        ["mid_block", "attentions", "0", _, ..] => vec![format!("middle_block.1.{}", tail(3))],
        ["up_blocks", _, "resnets", _, rest] => {
            let k = index(1)? * per_level + index(3)?;
            vec![format!("output_blocks.{k}.0.{}", resnet(rest)?)]
        }
        ["up_blocks", _, "attentions", _, _] => {
            let k = index(1)? * per_level + index(3)?;
            vec![format!("output_blocks.{k}.1.{}", tail(4))]
        }
        ["up_blocks", _, "upsamplers", "0", "conv"] => {
            let level = index(1)?;
            let k = level * per_level + layers_per_block;
            // The upsampler follows the level's last resnet and, where it has one, transformer.
            let entry = if attention_up_levels.contains(&level) {
                2
            } else {
                1
            };
            vec![format!("output_blocks.{k}.{entry}.conv")]
        }
        _ => return None,
    };
    let want = format!("{module}.weight");
    candidates.into_iter().find(|ldm| {
        unet_key(&format!("{ldm}.weight"), layers_per_block).as_deref() == Some(want.as_str())
    })
}

/// The part of a LoRA layer a file tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Up,
    Down,
    Mid,
    Alpha,
    /// A kind of adapter weft does not apply (named for the error).
    Unsupported(&'static str),
}

/// Tensor-name endings of each adapter part, in the order ComfyUI tries them.
const SUFFIXES: &[(&str, Part)] = &[
    (".lora_up.weight", Part::Up),
    (".lora_down.weight", Part::Down),
    (".lora_mid.weight", Part::Mid),
    ("_lora.up.weight", Part::Up),
    ("_lora.down.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".lora_A.weight", Part::Down),
    (".lora.up.weight", Part::Up),
    (".lora.down.weight", Part::Down),
    (".lora_linear_layer.up.weight", Part::Up),
    (".lora_linear_layer.down.weight", Part::Down),
    (".alpha", Part::Alpha),
    (".dora_scale", Part::Unsupported("DoRA")),
    (".hada_w1_a", Part::Unsupported("LoHa")),
    (".hada_w1_b", Part::Unsupported("LoHa")),
    (".hada_w2_a", Part::Unsupported("LoHa")),
    (".hada_w2_b", Part::Unsupported("LoHa")),
    (".hada_t1", Part::Unsupported("LoHa")),
    (".hada_t2", Part::Unsupported("LoHa")),
    (".lokr_w1", Part::Unsupported("LoKr")),
    (".lokr_w2", Part::Unsupported("LoKr")),
    (".lokr_w1_a", Part::Unsupported("LoKr")),
    (".lokr_w1_b", Part::Unsupported("LoKr")),
    (".lokr_w2_a", Part::Unsupported("LoKr")),
    (".lokr_w2_b", Part::Unsupported("LoKr")),
    (".lokr_t2", Part::Unsupported("LoKr")),
    (".diff", Part::Unsupported("full weight difference")),
    (".diff_b", Part::Unsupported("full bias difference")),
    (".w_norm", Part::Unsupported("norm difference")),
    (".b_norm", Part::Unsupported("norm difference")),
];

fn split_key(key: &str) -> Option<(&str, Part)> {
    SUFFIXES
        .iter()
        .find_map(|(suffix, part)| key.strip_suffix(suffix).map(|layer| (layer, *part)))
}

/// One layer's low-rank update: `up` `[out, rank(, 1, 1)]`, `down` `[rank, in(, kh, kw)]`,
/// an optional LoCon/Tucker `mid` `[rank, rank, kh, kw]` and `alpha` (the update is scaled by
/// `alpha / rank`; 1 without it).
pub struct Adapter {
    pub up: Tensor,
    pub down: Tensor,
    pub mid: Option<Tensor>,
    pub alpha: Option<f64>,
}

impl Adapter {
    fn shallow_clone(&self) -> Self {
        Self {
            up: self.up.shallow_clone(),
            down: self.down.shallow_clone(),
            mid: self.mid.as_ref().map(Tensor::shallow_clone),
            alpha: self.alpha,
        }
    }

    /// Elements of the full update `up @ down` (what it must reshape to).
    fn update_numel(&self) -> i64 {
        let up = self.up.size();
        let down = self.down.size();
        let inner: i64 = match &self.mid {
            Some(mid) => down[1] * mid.size()[2..].iter().product::<i64>(),
            None => down[1..].iter().product(),
        };
        up[0] * inner
    }

    /// `weight += strength * alpha / rank * (up @ down)`, in the kind of `weight` (fp32): the
    /// order of ComfyUI's `LoRAAdapter.calculate_weight` (the scale is a product of doubles,
    /// applied to the product before adding), so the result is the same to the bit.
    pub fn add_to(
        &self,
        weight: &mut Tensor,
        strength: f64,
    ) -> std::result::Result<(), tch::TchError> {
        let up = self.up.f_to_kind(Kind::Float)?;
        let mut down = self.down.f_to_kind(Kind::Float)?;
        let rank = down.size()[0];
        let alpha = self.alpha.map_or(1.0, |a| a / rank as f64);
        if let Some(mid) = &self.mid {
            let mid = mid.f_to_kind(Kind::Float)?;
            let (d, m) = (down.size(), mid.size());
            down = down
                .f_transpose(0, 1)?
                .f_flatten(1, -1)?
                .f_mm(&mid.f_transpose(0, 1)?.f_flatten(1, -1)?)?
                .f_reshape([d[1], d[0], m[2], m[3]])?
                .f_transpose(0, 1)?;
        }
        let diff = up
            .f_flatten(1, -1)?
            .f_mm(&down.f_flatten(1, -1)?)?
            .f_reshape(weight.size())?;
        let _ = weight.f_add_(&diff.f_mul_scalar(strength * alpha)?)?;
        Ok(())
    }
}

/// A LoRA file's layers, matched to one model family: per target model, the tensor name each
/// update patches; and the layer names that matched nothing (reported, not silent).
pub struct LoraLayers {
    pub path: PathBuf,
    pub targets: BTreeMap<LoraTarget, BTreeMap<String, Adapter>>,
    pub unmatched: Vec<String>,
}

impl LoraLayers {
    pub fn for_target(&self, target: LoraTarget) -> Option<&BTreeMap<String, Adapter>> {
        self.targets.get(&target).filter(|m| !m.is_empty())
    }
}

/// A model's tensors as one of the targets sees them: names and shapes.
pub struct TargetModel<'a> {
    pub target: LoraTarget,
    pub tensors: &'a HashMap<String, Tensor>,
}

/// Reads a LoRA `.safetensors` file (tensors kept in their own dtype, on `device`) and matches
/// its layers to `models` (the UNet and the text encoders the caller has) with `keys`. A file
/// for another family, a layer whose update does not fit its tensor, or an adapter kind weft
/// does not apply is refused with the reason.
pub fn read_lora(
    path: &Path,
    files: &weft_engine::FileAccess,
    device: Device,
    keys: &FamilyLoraKeys,
    models: &[TargetModel],
) -> Result<LoraLayers> {
    let tensors =
        MappedFile::open_with(path, files)?.read(device, None, |n| Some(n.to_string()))?;
    match_layers(path, tensors, keys, models)
}

/// [`read_lora`] for tensors already read.
pub fn match_layers(
    path: &Path,
    tensors: HashMap<String, Tensor>,
    keys: &FamilyLoraKeys,
    models: &[TargetModel],
) -> Result<LoraLayers> {
    let refuse = |message: String| LoraError::Refused {
        path: path.to_path_buf(),
        message,
    };
    // Layer name -> its parts.
    let mut layers: BTreeMap<String, HashMap<&'static str, Tensor>> = BTreeMap::new();
    let mut unmatched = BTreeSet::new();
    for (key, tensor) in tensors {
        let Some((layer, part)) = split_key(&key) else {
            unmatched.insert(key);
            continue;
        };
        if let Some((prefix, family)) = keys.foreign.iter().find(|(p, _)| layer.starts_with(p)) {
            return Err(refuse(format!(
                "this LoRA is for {family}, not {}: its layer {layer} (prefix {prefix}) has no \
                 counterpart here; load it with a checkpoint of that family",
                keys.family
            )));
        }
        let slot = match part {
            Part::Up => "up",
            Part::Down => "down",
            Part::Mid => "mid",
            Part::Alpha => "alpha",
            Part::Unsupported(kind) => {
                return Err(refuse(format!(
                    "layer {layer} is a {kind} adapter ({key}); weft applies LoRA and LoCon \
                     (lora_up/lora_down, lora_A/lora_B) layers only"
                )))
            }
        };
        layers
            .entry(layer.to_string())
            .or_default()
            .insert(slot, tensor);
    }
    // Per target: its tensors, and its layers' LoRA names -> tensor names.
    type Named<'m> = (
        LoraTarget,
        &'m HashMap<String, Tensor>,
        HashMap<String, String>,
    );
    let names: Vec<Named> = models
        .iter()
        .map(|m| {
            let styles = match m.target {
                LoraTarget::Unet => keys.unet,
                LoraTarget::TextEncoder(i) => keys.text_encoders.get(i).copied().unwrap_or(&[]),
            };
            (m.target, m.tensors, layer_names(m.tensors.keys(), styles))
        })
        .collect();
    let mut targets: BTreeMap<LoraTarget, BTreeMap<String, Adapter>> = BTreeMap::new();
    let mut misfits = Vec::new();
    let total = layers.len();
    for (layer, mut parts) in layers {
        let Some((target, model, tensor_name)) = names
            .iter()
            .find_map(|(t, model, map)| map.get(&layer).map(|n| (*t, *model, n)))
        else {
            unmatched.extend(parts.keys().map(|p| format!("{layer} ({p})")));
            continue;
        };
        let (Some(up), Some(down)) = (parts.remove("up"), parts.remove("down")) else {
            return Err(refuse(format!(
                "layer {layer} lacks its up or down weight (a damaged or truncated file?)"
            )));
        };
        let alpha = match parts.remove("alpha") {
            Some(a) if a.numel() == 1 => Some(
                a.f_reshape([1])
                    .and_then(|a| a.f_double_value(&[0]))
                    .map_err(|source| LoraError::Tch {
                        path: path.to_path_buf(),
                        layer: layer.clone(),
                        source,
                    })?,
            ),
            Some(a) => {
                return Err(refuse(format!(
                    "layer {layer}: alpha is a tensor of shape {:?}, expected one number",
                    a.size()
                )))
            }
            None => None,
        };
        let adapter = Adapter {
            up,
            down,
            mid: parts.remove("mid"),
            alpha,
        };
        let weight = &model[tensor_name];
        let (u, d) = (adapter.up.size(), adapter.down.size());
        let fits = u.len() >= 2
            && d.len() >= 2
            && u[1] == d[0]
            && u[0] == weight.size()[0]
            && adapter.update_numel() == weight.numel() as i64
            && adapter
                .mid
                .as_ref()
                .is_none_or(|m| m.dim() == 4 && m.size()[0] == d[0]);
        if !fits {
            misfits.push(format!(
                "  {layer}: up {u:?} x down {d:?} does not fit {tensor_name} {:?}",
                weight.size()
            ));
            continue;
        }
        targets
            .entry(target)
            .or_default()
            .insert(tensor_name.clone(), adapter);
    }
    if !misfits.is_empty() {
        let shown = misfits.len().min(8);
        return Err(refuse(format!(
            "{} of its layers do not fit this {} model, so it was made for another model \
             family or size (a 2048-wide cross-attention to_k is SDXL's, 1024 SD 2.x's, 768 SD \
             1.x's):\n{}{}",
            misfits.len(),
            keys.family,
            misfits[..shown].join("\n"),
            if misfits.len() > shown {
                format!("\n  ... and {} more", misfits.len() - shown)
            } else {
                String::new()
            }
        )));
    }
    if targets.is_empty() {
        let examples: Vec<&String> = unmatched.iter().take(5).collect();
        return Err(refuse(format!(
            "none of its {total} layers matches a layer of this {} model (is it a LoRA for \
             another model family?); its names look like {examples:?}",
            keys.family
        )));
    }
    Ok(LoraLayers {
        path: path.to_path_buf(),
        targets,
        unmatched: unmatched.into_iter().collect(),
    })
}

/// One LoRA's updates for one model, at one strength.
pub struct WeightPatch {
    /// The model's tensor name -> its update.
    pub adapters: BTreeMap<String, Adapter>,
    pub strength: f64,
}

impl WeightPatch {
    fn shallow_clone(&self) -> Self {
        Self {
            adapters: self
                .adapters
                .iter()
                .map(|(k, a)| (k.clone(), a.shallow_clone()))
                .collect(),
            strength: self.strength,
        }
    }
}

/// The weights a model was built from: as loaded (`base`) and the LoRA patches applied on top
/// in order. Adding a patch only records it; the patched tensors are computed when a model is
/// built from these weights ([`SourceWeights::tensors`]), once, and kept. So a chain of LoRAs
/// feeding one sampler makes one patched copy of the tensors the chain touches, not one per
/// link, and every untouched tensor stays shared with the loaded model, whose tensors are never
/// written.
///
/// The arithmetic is ComfyUI's for stacked LoRAs: each touched weight in fp32, every update
/// added in order, one cast back to the model's dtype (fp16 / bf16 models round once, not once
/// per LoRA; for fp32 models this is bit for bit the previous patched tensor plus the new
/// update).
pub struct SourceWeights {
    base: HashMap<String, Tensor>,
    patches: Vec<WeightPatch>,
    /// The kind patched tensors are kept in; `None`: each base tensor's.
    patched_kind: Option<Kind>,
    /// The tensors the patches made, once a model was built from these weights.
    patched: OnceCell<HashMap<String, Tensor>>,
}

fn shallow_map(map: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    map.iter()
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect()
}

impl SourceWeights {
    pub fn new(base: HashMap<String, Tensor>) -> Self {
        Self {
            base,
            patches: Vec::new(),
            patched_kind: None,
            patched: OnceCell::new(),
        }
    }

    /// The same weights, patches and (if computed) patched tensors, sharing their storage.
    pub fn shallow_clone(&self) -> Self {
        let patched = OnceCell::new();
        if let Some(made) = self.patched.get() {
            let _ = patched.set(shallow_map(made));
        }
        Self {
            base: shallow_map(&self.base),
            patches: self
                .patches
                .iter()
                .map(WeightPatch::shallow_clone)
                .collect(),
            patched_kind: self.patched_kind,
            patched,
        }
    }

    /// The tensors as loaded, before any LoRA.
    pub fn base(&self) -> &HashMap<String, Tensor> {
        &self.base
    }

    pub fn patches(&self) -> &[WeightPatch] {
        &self.patches
    }

    /// Whether the patched tensors have been computed (a model was built from these weights).
    pub fn is_materialized(&self) -> bool {
        self.patches.is_empty() || self.patched.get().is_some()
    }

    /// The names of the base tensors some patch changes, each once.
    fn touched(&self) -> BTreeSet<&String> {
        self.patches
            .iter()
            .flat_map(|p| p.adapters.keys())
            .filter(|name| self.base.contains_key(*name))
            .collect()
    }

    /// The bytes the patched tensors take (computed or not): a model built from these weights
    /// holds them on top of the shared base.
    pub fn patched_bytes(&self) -> u64 {
        self.touched()
            .into_iter()
            .map(|name| {
                let t = &self.base[name];
                let kind = self.patched_kind.unwrap_or(t.kind());
                (t.numel() * kind.elt_size_in_bytes()) as u64
            })
            .sum()
    }

    /// These weights with `patch` applied after the present ones. Nothing is computed yet.
    pub fn with_patch(&self, patch: WeightPatch) -> Self {
        let mut next = self.shallow_clone();
        next.patched = OnceCell::new();
        next.patches.push(patch);
        next
    }

    /// [`Self::with_patch`], the patched tensors kept in `kind` rather than their base's: a
    /// UNet stored in fp16 and computing in fp32 keeps what a LoRA made in fp32, as the fp32
    /// load (and ComfyUI on the CPU) does, so its images do not depend on how it is stored.
    pub fn with_patch_kept_in(&self, patch: WeightPatch, kind: Kind) -> Self {
        let mut next = self.with_patch(patch);
        next.patched_kind = Some(kind);
        next
    }

    /// The tensors the model is made of: the patched ones (computed on the first call) and the
    /// base's, shared. An error names the tensor whose patch failed.
    pub fn tensors(&self) -> std::result::Result<HashMap<String, Tensor>, (String, tch::TchError)> {
        let mut tensors = shallow_map(&self.base);
        if self.patches.is_empty() {
            return Ok(tensors);
        }
        if self.patched.get().is_none() {
            let made = self.compute_patched()?;
            let _ = self.patched.set(made);
        }
        for (name, t) in self.patched.get().into_iter().flatten() {
            tensors.insert(name.clone(), t.shallow_clone());
        }
        Ok(tensors)
    }

    fn compute_patched(
        &self,
    ) -> std::result::Result<HashMap<String, Tensor>, (String, tch::TchError)> {
        let mut made = HashMap::new();
        for name in self.touched() {
            let base = &self.base[name];
            let patched = (|| {
                // A new fp32 tensor (a copy even for fp32 weights): the base stays as loaded.
                let mut weight = base.f_to_dtype(Kind::Float, false, true)?;
                for patch in &self.patches {
                    if let Some(adapter) = patch.adapters.get(name) {
                        adapter.add_to(&mut weight, patch.strength)?;
                    }
                }
                weight.f_to_kind(self.patched_kind.unwrap_or(base.kind()))
            })()
            .map_err(|e| (name.clone(), e))?;
            made.insert(name.clone(), patched);
        }
        Ok(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> HashMap<String, Tensor> {
        list.iter()
            .map(|n| {
                (
                    n.to_string(),
                    Tensor::zeros([4, 6], (Kind::Float, Device::Cpu)),
                )
            })
            .collect()
    }

    #[test]
    fn kohya_diffusers_peft_and_processor_names_map_to_the_models_own_tensor() {
        let unet = names(&[
            "down_blocks.0.attentions.0.proj_in.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.bias",
        ]);
        let map = layer_names(unet.keys(), SD1_LORA_KEYS.unet);
        let to_q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight";
        let to_out = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight";
        for (lora, tensor) in [
            (
                "lora_unet_down_blocks_0_attentions_0_proj_in",
                "down_blocks.0.attentions.0.proj_in.weight",
            ),
            (
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                to_q,
            ),
            (
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0",
                to_out,
            ),
            (
                "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                to_q,
            ),
            (
                "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q",
                to_q,
            ),
            (
                "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out",
                to_out,
            ),
        ] {
            assert_eq!(map.get(lora).map(String::as_str), Some(tensor), "{lora}");
        }
        assert!(
            !map.keys().any(|k| k.contains("bias")),
            "biases get no LoRA name"
        );
        let clip = names(&["text_model.encoder.layers.0.self_attn.q_proj.weight"]);
        let map = layer_names(clip.keys(), SD1_LORA_KEYS.text_encoders[0]);
        for lora in [
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
        ] {
            assert!(map.contains_key(lora), "{lora}");
        }
    }

    fn lora(entries: &[(&str, &[i64])]) -> HashMap<String, Tensor> {
        entries
            .iter()
            .map(|(n, s)| (n.to_string(), Tensor::ones(*s, (Kind::Float, Device::Cpu))))
            .collect()
    }

    #[test]
    fn kohya_ldm_names_number_an_upsampler_after_its_levels_transformer() {
        // SD1's up block 0 has no transformers (its upsampler is LDM's output_blocks.2.1),
        // up block 1 has (output_blocks.5.2): ComfyUI maps both, so weft must too.
        let unet = names(&[
            "down_blocks.0.resnets.1.conv1.weight",
            "up_blocks.0.upsamplers.0.conv.weight",
            "up_blocks.1.attentions.2.proj_in.weight",
            "up_blocks.1.upsamplers.0.conv.weight",
        ]);
        let map = layer_names(unet.keys(), SD1_LORA_KEYS.unet);
        for (lora, tensor) in [
            (
                "lora_unet_output_blocks_2_1_conv",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "lora_unet_output_blocks_5_2_conv",
                "up_blocks.1.upsamplers.0.conv.weight",
            ),
            (
                "lora_unet_output_blocks_5_1_proj_in",
                "up_blocks.1.attentions.2.proj_in.weight",
            ),
        ] {
            assert_eq!(map.get(lora).map(String::as_str), Some(tensor), "{lora}");
        }
        assert!(!map.contains_key("lora_unet_output_blocks_5_1_conv"));
    }

    #[test]
    fn unmatched_layers_are_listed_and_other_families_and_misfits_refused() {
        let unet = names(&["conv_in.weight"]);
        let models = [TargetModel {
            target: LoraTarget::Unet,
            tensors: &unet,
        }];
        let path = Path::new("x.safetensors");
        let file = lora(&[
            ("lora_unet_conv_in.lora_up.weight", &[4, 2]),
            ("lora_unet_conv_in.lora_down.weight", &[2, 6]),
            ("lora_unet_conv_in.alpha", &[]),
            ("lora_unet_nowhere.lora_up.weight", &[4, 2]),
            ("stray", &[1]),
        ]);
        let layers = match_layers(path, file, &SD1_LORA_KEYS, &models).unwrap();
        assert_eq!(layers.unmatched, ["lora_unet_nowhere (up)", "stray"]);
        let adapters = layers.for_target(LoraTarget::Unet).unwrap();
        assert_eq!(adapters["conv_in.weight"].alpha, Some(1.0));

        let sdxl = lora(&[(
            "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight",
            &[4, 2],
        )]);
        let err = match_layers(path, sdxl, &SD1_LORA_KEYS, &models)
            .err()
            .unwrap();
        assert!(err.to_string().contains("SDXL"), "{err}");

        let wide = lora(&[
            ("lora_unet_conv_in.lora_up.weight", &[4, 2]),
            ("lora_unet_conv_in.lora_down.weight", &[2, 2048]),
        ]);
        let err = match_layers(path, wide, &SD1_LORA_KEYS, &models)
            .err()
            .unwrap();
        assert!(err.to_string().contains("another model"), "{err}");

        let loha = lora(&[("lora_unet_conv_in.hada_w1_a", &[4, 2])]);
        let err = match_layers(path, loha, &SD1_LORA_KEYS, &models)
            .err()
            .unwrap();
        assert!(err.to_string().contains("LoHa"), "{err}");

        let nothing = lora(&[("lora_unet_elsewhere.lora_up.weight", &[4, 2])]);
        let err = match_layers(path, nothing, &SD1_LORA_KEYS, &models)
            .err()
            .unwrap();
        assert!(err.to_string().contains("none of its 1 layers"), "{err}");
    }

    #[test]
    fn patched_weights_are_base_plus_scaled_low_rank_update_and_untouched_ones_shared() {
        tch::manual_seed(1);
        let base_w = Tensor::randn([4, 6], (Kind::Float, Device::Cpu));
        let other = Tensor::randn([3], (Kind::Float, Device::Cpu));
        let base: HashMap<String, Tensor> = [
            ("w.weight".to_string(), base_w.shallow_clone()),
            ("b".to_string(), other.shallow_clone()),
        ]
        .into();
        let up = Tensor::randn([4, 2], (Kind::Float, Device::Cpu));
        let down = Tensor::randn([2, 6], (Kind::Float, Device::Cpu));
        let adapter = |alpha| Adapter {
            up: up.shallow_clone(),
            down: down.shallow_clone(),
            mid: None,
            alpha,
        };
        let once = SourceWeights::new(base).with_patch(WeightPatch {
            adapters: [("w.weight".to_string(), adapter(Some(1.0)))].into(),
            strength: 0.5,
        });
        let source = once.with_patch(WeightPatch {
            adapters: [("w.weight".to_string(), adapter(None))].into(),
            strength: -1.0,
        });
        assert!(
            !once.is_materialized() && !source.is_materialized(),
            "adding a patch computes nothing"
        );
        assert_eq!(source.patched_bytes(), 4 * 6 * 4, "one copy for the chain");
        let patched = source.tensors().unwrap();
        assert!(source.is_materialized() && !once.is_materialized());
        // 0.5 * (1 / 2) * up@down - 1.0 * up@down.
        let expected = &base_w + up.mm(&down) * 0.25 - up.mm(&down);
        let error = (&patched["w.weight"] - expected)
            .abs()
            .max()
            .double_value(&[]);
        assert!(error < 1e-5, "{error}");
        assert_eq!(
            patched["b"].data_ptr(),
            other.data_ptr(),
            "untouched tensors are shared"
        );
        assert_eq!(
            source.tensors().unwrap()["w.weight"].data_ptr(),
            patched["w.weight"].data_ptr(),
            "computed once"
        );
        assert_eq!(
            source.shallow_clone().tensors().unwrap()["w.weight"].data_ptr(),
            patched["w.weight"].data_ptr(),
            "a shallow clone shares the patched tensors"
        );
        assert_eq!(source.base()["w.weight"].data_ptr(), base_w.data_ptr());
        assert!(
            base_w.equal(&source.base()["w.weight"]),
            "the base is never written"
        );
        // fp32: the chain computed at once equals the earlier link's tensor plus the update.
        let mut stepwise = once.tensors().unwrap()["w.weight"].copy();
        adapter(None).add_to(&mut stepwise, -1.0).unwrap();
        assert!(stepwise.equal(&patched["w.weight"]), "bit for bit");

        let zero =
            SourceWeights::new([("w.weight".to_string(), base_w.to_kind(Kind::Half))].into())
                .with_patch(WeightPatch {
                    adapters: [("w.weight".to_string(), adapter(Some(8.0)))].into(),
                    strength: 0.0,
                });
        let patched = zero.tensors().unwrap();
        assert!(
            patched["w.weight"].equal(&base_w.to_kind(Kind::Half)),
            "strength 0 is the base, bit for bit"
        );
        // fp16: a chain rounds once, from the loaded tensor, as ComfyUI's stacked patches do.
        let half = base_w.to_kind(Kind::Half);
        let patch = |strength| WeightPatch {
            adapters: [("w.weight".to_string(), adapter(None))].into(),
            strength,
        };
        let one = SourceWeights::new([("w.weight".to_string(), half.shallow_clone())].into())
            .with_patch(patch(0.3));
        let two = one.with_patch(patch(0.6));
        let mut expected = half.to_kind(Kind::Float);
        let _ = expected.f_add_(&(up.mm(&down) * 0.3)).unwrap();
        let _ = expected.f_add_(&(up.mm(&down) * 0.6)).unwrap();
        assert!(two.tensors().unwrap()["w.weight"].equal(&expected.to_kind(Kind::Half)));
        assert!(
            half.equal(&base_w.to_kind(Kind::Half)),
            "the base is never written"
        );
        // Kept in fp32 (a UNet stored in fp16 computing in fp32): the fp32 load's tensor, not
        // rounded back to fp16; its bytes counted in fp32.
        let kept = SourceWeights::new([("w.weight".to_string(), half.shallow_clone())].into())
            .with_patch_kept_in(patch(0.3), Kind::Float);
        let wide = SourceWeights::new([("w.weight".to_string(), half.to_kind(Kind::Float))].into())
            .with_patch(patch(0.3));
        assert_eq!(kept.patched_bytes(), 4 * 24);
        let kept = kept.tensors().unwrap();
        assert_eq!(kept["w.weight"].kind(), Kind::Float);
        assert!(kept["w.weight"].equal(&wide.tensors().unwrap()["w.weight"]));
        assert!(!kept["w.weight"].equal(&one.tensors().unwrap()["w.weight"].to_kind(Kind::Float)));
    }

    #[test]
    fn locon_conv_updates_reshape_and_tucker_mid_matches_the_plain_product() {
        tch::manual_seed(2);
        let opts = (Kind::Float, Device::Cpu);
        // A 3x3 conv LoCon: down is a 3x3 conv to rank 2, up a 1x1 conv.
        let up = Tensor::randn([5, 2, 1, 1], opts);
        let down = Tensor::randn([2, 3, 3, 3], opts);
        let mut weight = Tensor::zeros([5, 3, 3, 3], opts);
        Adapter {
            up: up.shallow_clone(),
            down: down.shallow_clone(),
            mid: None,
            alpha: Some(2.0),
        }
        .add_to(&mut weight, 1.0)
        .unwrap();
        let expected = up
            .reshape([5, 2])
            .mm(&down.reshape([2, 27]))
            .reshape([5, 3, 3, 3]);
        assert!(weight.allclose(&expected, 1e-6, 1e-6, false));
        // Tucker: down [rank, in, 1, 1], mid [rank, rank, 3, 3].
        let down1 = Tensor::randn([2, 3, 1, 1], opts);
        let mid = Tensor::randn([2, 2, 3, 3], opts);
        let mut tucker = Tensor::zeros([5, 3, 3, 3], opts);
        Adapter {
            up: up.shallow_clone(),
            down: down1.shallow_clone(),
            mid: Some(mid.shallow_clone()),
            alpha: None,
        }
        .add_to(&mut tucker, 1.0)
        .unwrap();
        // Per output o, input i, position p: sum_r,s up[o,r] mid[r,s,p] down1[s,i].
        let expected = Tensor::einsum(
            "or,rsp,si->oip",
            &[
                up.reshape([5, 2]),
                mid.reshape([2, 2, 9]),
                down1.reshape([2, 3]),
            ],
            None::<&[i64]>,
        )
        .reshape([5, 3, 3, 3]);
        assert!(tucker.allclose(&expected, 1e-5, 1e-5, false));
    }
}
