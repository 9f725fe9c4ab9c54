//! SDXL's two text towers and how a prompt becomes its conditioning, as ComfyUI's
//! `CLIPTextEncode` does on SDXL (`comfy/sdxl_clip.py`, `comfy/sd1_clip.py`) and diffusers'
//! `StableDiffusionXLPipeline.encode_prompt` agrees for unweighted prompts:
//!
//! - CLIP ViT-L/14 ([`ClipTextModel`]) and OpenCLIP ViT-bigG/14
//!   ([`ClipTextModelWithProjection`]) each see the prompt tokenized the same way, except the
//!   padding: CLIP-L pads with the end token, bigG with 0 (`!`; ComfyUI `pad_with_end=False`);
//! - both give their penultimate layer's hidden states without the final LayerNorm
//!   (`hidden_states[-2]`, ComfyUI `layer_norm_hidden_state=False`), concatenated along the
//!   features: 768 + 1280 = 2048;
//! - the pooled output is bigG's final-LayerNorm state at the end token times its text
//!   projection, from the first 77-token window;
//! - `(word:1.2)` weights apply per tower, `z = (z - z_empty) * w + z_empty` with `z_empty`
//!   that tower's encoding of the empty prompt; prompts over 75 tokens take several windows,
//!   concatenated along the tokens.
use std::collections::HashMap;

use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::clip_text_model::{
    ClipLayer, ClipTextConfig, ClipTextModel, ClipTextModelWithProjection,
    ClipTextWithProjectionConfig,
};
use super::clip_tokenizer::{ClipTokenizer, CONTEXT_LENGTH};
use super::prompt_weighting::{encode_weighted, tokenize_weighted, SpecialTokens, WeightedWindow};
use crate::error::{ModelError, Result, TchContext};
use crate::weights::{WeightedModel, Weights};

/// CLIP-L's windows: `[bos, tokens, eos, eos...]`.
pub const CLIP_L_SPECIAL: SpecialTokens = SpecialTokens::SD1;
/// bigG's windows: `[bos, tokens, eos, 0...]`.
pub const CLIP_G_SPECIAL: SpecialTokens = SpecialTokens::SD2;
/// SDXL conditions on the penultimate layer of both towers, not normalised.
const SDXL_LAYER: ClipLayer = ClipLayer::Skip(1);

/// A prompt's SDXL conditioning, float32.
pub struct SdxlTextOutput {
    /// `[1, 77 * windows, width]`: CLIP-L ++ bigG (2048) for SDXL base, bigG (1280) for the
    /// refiner.
    pub context: Tensor,
    /// `[1, projection_dim]` (1280): bigG's projected pooled output of the first window.
    pub pooled: Tensor,
}

/// The 77-token windows each tower encodes, with their weights.
#[derive(Clone, Debug, PartialEq)]
pub struct SdxlWindows {
    pub clip_l: Vec<WeightedWindow>,
    pub clip_g: Vec<WeightedWindow>,
}

/// The two SDXL text towers and their shared BPE tokenizer.
pub struct SdxlTextEncoders {
    clip_l: ClipTextModel,
    clip_g: ClipTextModelWithProjection,
    tokenizer: ClipTokenizer,
}

/// SDXL base's CLIP-L: ViT-L/14 with GELU-approximating `quick_gelu`, as diffusers ships it.
pub fn sdxl_clip_l_config() -> ClipTextConfig {
    ClipTextConfig::clip_vit_l14()
}

/// SDXL base's bigG tower with its 1280-wide projection.
pub fn sdxl_clip_g_config() -> ClipTextWithProjectionConfig {
    ClipTextWithProjectionConfig::open_clip_vit_bigg14()
}

/// `tensors` on `device`, floating ones in `kind` — except fp16/bf16 ones when `kind` is
/// fp32: those stay as they are and the tower widens them per layer ([`computing_in`]), as
/// ComfyUI keeps its text encoders in fp16 on the CPU (half the memory of the two towers,
/// 1.6 GB for SDXL base, and the same values: an fp16 weight widens exactly).
fn to_device_kind(
    tensors: HashMap<String, Tensor>,
    device: Device,
    kind: Kind,
) -> Result<HashMap<String, Tensor>> {
    tensors
        .into_iter()
        .map(|(name, t)| {
            let kept_narrow =
                kind == Kind::Float && matches!(t.kind(), Kind::Half | Kind::BFloat16);
            let moved = if t.is_floating_point() && !kept_narrow {
                t.f_to_device(device).and_then(|t| t.f_to_kind(kind))
            } else {
                t.f_to_device(device)
            };
            moved.context(|| name.clone()).map(|t| (name, t))
        })
        .collect()
}

/// The compute kind a tower built by [`to_device_kind`] needs: `kind`, set on the tower only
/// where its weights were kept narrower.
fn computing_in(kind: Kind) -> Option<Kind> {
    (kind == Kind::Float).then_some(kind)
}

/// Refuses a tower that cannot take a 77-token window.
fn check_positions(config: &ClipTextConfig, tower: &str) -> Result<()> {
    if config.max_position_embeddings < CONTEXT_LENGTH as i64 {
        return Err(ModelError::Other(format!(
            "{tower}: max_position_embeddings {} is below the {CONTEXT_LENGTH} tokens of a \
             prompt window",
            config.max_position_embeddings
        )));
    }
    Ok(())
}

impl SdxlTextEncoders {
    /// Builds both towers. `clip_l`: tensors under transformers `CLIPTextModel` names
    /// (`text_model.*`); `clip_g`: under `CLIPTextModelWithProjection` names (`text_model.*`,
    /// `text_projection.weight`) — diffusers' `text_encoder/` and `text_encoder_2/`, or a
    /// single file's after [`crate::weights::sdxl_text_keymap::split_sdxl_text_tensors`].
    /// Configs are transformers `CLIPTextConfig` JSON; absent keys take SDXL base's sizes
    /// (`{}` for a single file). Every missing, mis-shaped or unexpected tensor is named.
    #[allow(clippy::too_many_arguments)]
    pub fn from_weights(
        clip_l: HashMap<String, Tensor>,
        clip_l_config: &Value,
        clip_g: HashMap<String, Tensor>,
        clip_g_config: &Value,
        tokenizer: ClipTokenizer,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        let l_config = ClipTextConfig::from_transformers_json(clip_l_config, &sdxl_clip_l_config())
            .map_err(|e| ModelError::Other(format!("SDXL CLIP-L text encoder config: {e}")))?;
        check_positions(&l_config, "SDXL CLIP-L text encoder")?;
        let l_weights = Weights::new(
            "SDXL text encoder 1 (CLIP-L)",
            to_device_kind(clip_l, device, kind)?,
        );
        let mut clip_l = ClipTextModel::new(&l_weights, "text_model", l_config)?;
        clip_l.set_compute_kind(computing_in(kind));
        Ok(Self {
            clip_l,
            clip_g: build_clip_g(clip_g, clip_g_config, device, kind)?,
            tokenizer,
        })
    }

    /// Both towers already built.
    pub fn new(
        clip_l: ClipTextModel,
        clip_g: ClipTextModelWithProjection,
        tokenizer: ClipTokenizer,
    ) -> Self {
        Self {
            clip_l,
            clip_g,
            tokenizer,
        }
    }

    pub fn clip_l(&self) -> &ClipTextModel {
        &self.clip_l
    }

    pub fn clip_g(&self) -> &ClipTextModelWithProjection {
        &self.clip_g
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    pub fn device(&self) -> Device {
        self.clip_g.text_model().device()
    }

    /// ComfyUI's `CLIPTextEncode` on SDXL: the same text through both towers.
    pub fn encode(&self, text: &str) -> Result<SdxlTextOutput> {
        self.encode_windows(&self.tokenize(text, text))
    }

    /// ComfyUI's `CLIPTextEncodeSDXL` text inputs: `text_l` for CLIP-L, `text_g` for bigG.
    pub fn encode_pair(&self, text_l: &str, text_g: &str) -> Result<SdxlTextOutput> {
        self.encode_windows(&self.tokenize(text_l, text_g))
    }

    /// Each tower's windows. When one text needs more windows than the other, the shorter
    /// side is padded with empty-prompt windows, as ComfyUI's `CLIPTextEncodeSDXL` does, so
    /// the two contexts line up.
    pub fn tokenize(&self, text_l: &str, text_g: &str) -> SdxlWindows {
        let mut clip_l = tokenize_weighted(&self.tokenizer, text_l, &CLIP_L_SPECIAL);
        let mut clip_g = tokenize_weighted(&self.tokenizer, text_g, &CLIP_G_SPECIAL);
        while clip_l.len() < clip_g.len() {
            clip_l.push(CLIP_L_SPECIAL.empty_window());
        }
        while clip_g.len() < clip_l.len() {
            clip_g.push(CLIP_G_SPECIAL.empty_window());
        }
        SdxlWindows { clip_l, clip_g }
    }

    /// Encodes windows made by [`Self::tokenize`] (or by hand, with the models' own ids).
    /// Unequal window counts keep the shorter count, as ComfyUI's `SDXLClipModel` cuts.
    pub fn encode_windows(&self, windows: &SdxlWindows) -> Result<SdxlTextOutput> {
        let ctx = || "SDXL text encoding".to_string();
        let (l_states, _) = encode_weighted(
            &self.clip_l,
            &windows.clip_l,
            SDXL_LAYER,
            false,
            &CLIP_L_SPECIAL,
        )?;
        let (g_states, pooled) = encode_clip_g(&self.clip_g, &windows.clip_g)?;
        let tokens = l_states.size()[1].min(g_states.size()[1]);
        let context = Tensor::f_cat(
            &[
                l_states.f_narrow(1, 0, tokens).context(ctx)?,
                g_states.f_narrow(1, 0, tokens).context(ctx)?,
            ],
            -1,
        )
        .and_then(|t| t.f_to_kind(Kind::Float))
        .context(ctx)?;
        Ok(SdxlTextOutput {
            context,
            pooled: pooled.f_to_kind(Kind::Float).context(ctx)?,
        })
    }
}

/// bigG's weighted penultimate states `[1, 77 * windows, width]` and its projected pooled
/// output of the first window `[1, projection_dim]`, in the model's kind.
fn encode_clip_g(
    model: &ClipTextModelWithProjection,
    windows: &[WeightedWindow],
) -> Result<(Tensor, Tensor)> {
    let (states, pooled) = encode_weighted(
        model.text_model(),
        windows,
        SDXL_LAYER,
        false,
        &CLIP_G_SPECIAL,
    )?;
    Ok((states, model.project(&pooled)?))
}

/// The SDXL refiner's text side: bigG alone (ComfyUI's `SDXLRefinerClipModel`), the context
/// its penultimate states `[1, 77 * windows, 1280]`, the pooled output as the base's.
pub struct SdxlRefinerTextEncoder {
    clip_g: ClipTextModelWithProjection,
    tokenizer: ClipTokenizer,
}

impl SdxlRefinerTextEncoder {
    /// `clip_g` as for [`SdxlTextEncoders::from_weights`] (a refiner single file holds it at
    /// `conditioner.embedders.0.model.*`, which the key map also reads).
    pub fn from_weights(
        clip_g: HashMap<String, Tensor>,
        clip_g_config: &Value,
        tokenizer: ClipTokenizer,
        device: Device,
        kind: Kind,
    ) -> Result<Self> {
        Ok(Self {
            clip_g: build_clip_g(clip_g, clip_g_config, device, kind)?,
            tokenizer,
        })
    }

    /// The tower already built.
    pub fn new(clip_g: ClipTextModelWithProjection, tokenizer: ClipTokenizer) -> Self {
        Self { clip_g, tokenizer }
    }

    pub fn clip_g(&self) -> &ClipTextModelWithProjection {
        &self.clip_g
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// ComfyUI's `CLIPTextEncodeSDXLRefiner` text: float32 context and pooled output.
    pub fn encode(&self, text: &str) -> Result<SdxlTextOutput> {
        let ctx = || "SDXL refiner text encoding".to_string();
        let windows = tokenize_weighted(&self.tokenizer, text, &CLIP_G_SPECIAL);
        let (states, pooled) = encode_clip_g(&self.clip_g, &windows)?;
        Ok(SdxlTextOutput {
            context: states.f_to_kind(Kind::Float).context(ctx)?,
            pooled: pooled.f_to_kind(Kind::Float).context(ctx)?,
        })
    }
}

/// bigG from transformers-named tensors and its config JSON (absent keys: SDXL's sizes).
fn build_clip_g(
    tensors: HashMap<String, Tensor>,
    config: &Value,
    device: Device,
    kind: Kind,
) -> Result<ClipTextModelWithProjection> {
    let config =
        ClipTextWithProjectionConfig::from_transformers_json(config, &sdxl_clip_g_config())
            .map_err(|e| {
                ModelError::Other(format!("SDXL OpenCLIP bigG text encoder config: {e}"))
            })?;
    check_positions(&config.text, "SDXL OpenCLIP bigG text encoder")?;
    let weights = Weights::new(
        "SDXL text encoder 2 (OpenCLIP bigG)",
        to_device_kind(tensors, device, kind)?,
    );
    let mut tower = ClipTextModelWithProjection::new(&weights, "", config)?;
    tower.set_compute_kind(computing_in(kind));
    Ok(tower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::clip_text_model::Activation;
    use crate::models::clip_tokenizer::{BOS_TOKEN_ID, EOS_TOKEN_ID};

    fn tokenizer() -> ClipTokenizer {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/text_encoders/bpe_simple_vocab_16e6.txt.gz");
        ClipTokenizer::from_file(&path).expect("committed CLIP vocabulary")
    }

    /// Random weights for a tower of `config` (the real 49408-token vocabulary, tiny widths),
    /// named as `T` asks for them.
    fn random_weights<T: WeightedModel>(config: T::Config, seed: i64) -> HashMap<String, Tensor> {
        tch::manual_seed(seed);
        T::weight_shapes(config)
            .unwrap()
            .into_iter()
            .map(|(name, shape)| {
                let t = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)) * 0.2;
                let t = if name.contains("norm") && name.ends_with("weight") {
                    t + 1.0
                } else {
                    t
                };
                (name, t)
            })
            .collect()
    }

    fn tiny_text(hidden: i64, layers: usize) -> ClipTextConfig {
        ClipTextConfig {
            vocab_size: 49408,
            hidden_size: hidden,
            intermediate_size: hidden * 2,
            num_hidden_layers: layers,
            num_attention_heads: 2,
            max_position_embeddings: 77,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }

    fn tiny_config_json(hidden: i64, layers: usize, projection: i64) -> Value {
        serde_json::json!({
            "hidden_size": hidden, "intermediate_size": hidden * 2, "num_hidden_layers": layers,
            "num_attention_heads": 2, "hidden_act": "gelu", "projection_dim": projection,
        })
    }

    fn tiny_encoders() -> SdxlTextEncoders {
        tiny_encoders_as(|t| t, Kind::Float)
    }

    /// The random weights of [`tiny_encoders`]' two towers, drawn from the global generator:
    /// a test that builds several encoders draws once (tests beside it draw too).
    type TinyWeights = (HashMap<String, Tensor>, HashMap<String, Tensor>);

    fn tiny_weights() -> TinyWeights {
        let l = random_weights::<ClipTextModel>(tiny_text(8, 2), 1)
            .into_iter()
            .map(|(k, v)| (format!("text_model.{k}"), v))
            .collect();
        let g = random_weights::<ClipTextModelWithProjection>(
            ClipTextWithProjectionConfig {
                text: tiny_text(12, 3),
                projection_dim: 6,
            },
            2,
        );
        (l, g)
    }

    /// [`tiny_encoders`] with each tensor passed through `store` first (rounded to an fp16
    /// file's values, say), built to compute in `kind`.
    fn tiny_encoders_as(store: impl Fn(Tensor) -> Tensor, kind: Kind) -> SdxlTextEncoders {
        encoders_from(&tiny_weights(), store, kind)
    }

    fn encoders_from(
        (l, g): &TinyWeights,
        store: impl Fn(Tensor) -> Tensor,
        kind: Kind,
    ) -> SdxlTextEncoders {
        let pass = |w: &HashMap<String, Tensor>| -> HashMap<String, Tensor> {
            w.iter()
                .map(|(k, v)| (k.clone(), store(v.copy())))
                .collect()
        };
        SdxlTextEncoders::from_weights(
            pass(l),
            &tiny_config_json(8, 2, 8),
            pass(g),
            &tiny_config_json(12, 3, 6),
            tokenizer(),
            Device::Cpu,
            kind,
        )
        .unwrap()
    }

    /// LoadCheckpoint's `auto` on the CPU: fp16 weights are kept in fp16 and widened per layer,
    /// which gives bit for bit what the same weights give loaded as fp32, in half the memory.
    #[test]
    fn fp16_towers_computed_in_fp32_equal_the_fp32_load_of_the_same_weights() {
        let half = |t: Tensor| t.to_kind(Kind::Half);
        let weights = tiny_weights();
        let narrow = encoders_from(&weights, half, Kind::Float);
        let wide = encoders_from(&weights, |t| half(t).to_kind(Kind::Float), Kind::Float);
        let stored = |m: &ClipTextModel| {
            m.source().tensors().unwrap()["text_model.embeddings.token_embedding.weight"].kind()
        };
        assert_eq!(stored(narrow.clip_l()), Kind::Half);
        assert_eq!(stored(narrow.clip_g().text_model()), Kind::Half);
        assert_eq!(stored(wide.clip_l()), Kind::Float);
        let prompt = "a (lighthouse:1.2) at dusk, [fog], oil painting";
        let (a, b) = (narrow.encode(prompt).unwrap(), wide.encode(prompt).unwrap());
        assert_eq!(
            (a.context.kind(), a.pooled.kind()),
            (Kind::Float, Kind::Float)
        );
        assert!(a.context.equal(&b.context), "context differs");
        assert!(a.pooled.equal(&b.pooled), "pooled differs");
        // The comparison can fail: the same weights computed in fp16 give other values.
        let fp16_arithmetic = encoders_from(&weights, half, Kind::Half)
            .encode(prompt)
            .unwrap();
        assert!(!fp16_arithmetic.context.equal(&b.context));
    }

    #[test]
    fn clip_g_pads_with_zero_and_clip_l_with_the_end_token() {
        let enc = tiny_encoders();
        let w = enc.tokenize("a cat", "a cat");
        let (l, g) = (&w.clip_l[0].ids, &w.clip_g[0].ids);
        assert_eq!(l[..4], [BOS_TOKEN_ID, 320, 2368, EOS_TOKEN_ID]);
        assert_eq!(g[..4], l[..4]);
        assert!(l[4..].iter().all(|&i| i == EOS_TOKEN_ID));
        assert!(g[4..].iter().all(|&i| i == 0));
        assert_eq!((l.len(), g.len()), (CONTEXT_LENGTH, CONTEXT_LENGTH));
    }

    #[test]
    fn long_prompts_take_77_token_windows_in_both_towers() {
        let enc = tiny_encoders();
        let text = vec!["cat"; 160].join(" ");
        let w = enc.tokenize(&text, &text);
        assert_eq!((w.clip_l.len(), w.clip_g.len()), (3, 3));
        let out = enc.encode(&text).unwrap();
        assert_eq!(out.context.size(), [1, 3 * 77, 8 + 12]);
        assert_eq!(out.pooled.size(), [1, 6]);
        assert_eq!(out.context.kind(), Kind::Float);
    }

    #[test]
    fn pooled_comes_from_the_first_window_and_states_from_each() {
        let enc = tiny_encoders();
        let first = vec!["cat"; 75].join(" ");
        let long = format!("{first} dog dog");
        let short = enc.encode(&first).unwrap();
        let both = enc.encode(&long).unwrap();
        // The same first window: the same pooled output and the same first 77 states.
        assert_eq!(both.pooled.size(), [1, 6]);
        let diff = (&both.pooled - &short.pooled).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "pooled differs by {diff}");
        let head = both.context.narrow(1, 0, 77);
        let diff = (&head - &short.context).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "first window differs by {diff}");
        // ... and the projected pooled output is bigG's end-token state of window one alone.
        let ids = Tensor::from_slice(
            &enc.tokenize(&first, &first).clip_g[0]
                .ids
                .iter()
                .map(|&i| i as i64)
                .collect::<Vec<_>>(),
        );
        let alone = enc
            .clip_g()
            .forward_with(&ids, ClipLayer::Last, true)
            .unwrap();
        let diff = (&alone.pooled - &both.pooled).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "pooled is not window one's: {diff}");
    }

    #[test]
    fn the_shorter_text_is_padded_with_empty_windows() {
        let enc = tiny_encoders();
        let long = vec!["cat"; 100].join(" ");
        let w = enc.tokenize("a dog", &long);
        assert_eq!((w.clip_l.len(), w.clip_g.len()), (2, 2));
        assert_eq!(w.clip_l[1], CLIP_L_SPECIAL.empty_window());
        let w = enc.tokenize(&long, "a dog");
        assert_eq!(w.clip_g[1], CLIP_G_SPECIAL.empty_window());
        let out = enc.encode_pair(&long, "a dog").unwrap();
        assert_eq!(out.context.size(), [1, 154, 20]);
    }

    #[test]
    fn weights_move_only_the_weighted_tokens() {
        let enc = tiny_encoders();
        let plain = enc.encode("a red cat").unwrap();
        let weighted = enc.encode("a (red:1.5) cat").unwrap();
        let delta = (&weighted.context - &plain.context).abs().sum_dim_intlist(
            [2i64].as_slice(),
            false,
            Kind::Float,
        );
        let moved: Vec<f32> = Vec::try_from(delta.view([-1])).unwrap();
        // Position 2 is "red" (bos, a, red, cat, eos).
        assert!(moved[2] > 1e-4, "the weighted token did not change");
        for (i, m) in moved.iter().enumerate() {
            if i != 2 {
                assert!(*m == 0.0, "position {i} moved by {m}");
            }
        }
        // Weights do not touch the pooled output (ComfyUI pools the unweighted window).
        let diff = (&weighted.pooled - &plain.pooled)
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn errors_name_the_bad_tensor_and_tower() {
        let mut l: HashMap<String, Tensor> = random_weights::<ClipTextModel>(tiny_text(8, 2), 1)
            .into_iter()
            .map(|(k, v)| (format!("text_model.{k}"), v))
            .collect();
        l.insert(
            "text_model.encoder.layers.1.mlp.fc1.weight".into(),
            Tensor::zeros([3, 3], (Kind::Float, Device::Cpu)),
        );
        let mut g = random_weights::<ClipTextModelWithProjection>(
            ClipTextWithProjectionConfig {
                text: tiny_text(12, 3),
                projection_dim: 6,
            },
            2,
        );
        let build = |l: HashMap<String, Tensor>, g: HashMap<String, Tensor>| {
            SdxlTextEncoders::from_weights(
                l,
                &tiny_config_json(8, 2, 8),
                g,
                &tiny_config_json(12, 3, 6),
                tokenizer(),
                Device::Cpu,
                Kind::Float,
            )
            .err()
            .expect("bad weights must be refused")
            .to_string()
        };
        let g_ok = g.iter().map(|(k, v)| (k.clone(), v.copy())).collect();
        let err = build(l, g_ok);
        assert!(err.contains("CLIP-L"), "{err}");
        assert!(
            err.contains("mis-shaped tensor text_model.encoder.layers.1.mlp.fc1.weight"),
            "{err}"
        );
        let l_ok = random_weights::<ClipTextModel>(tiny_text(8, 2), 1)
            .into_iter()
            .map(|(k, v)| (format!("text_model.{k}"), v))
            .collect();
        g.remove("text_projection.weight");
        let err = build(l_ok, g);
        assert!(err.contains("bigG"), "{err}");
        assert!(
            err.contains("missing tensor text_projection.weight [6, 12]"),
            "{err}"
        );
    }

    #[test]
    fn bigg_pools_at_the_end_token_under_either_eos_rule() {
        // diffusers' text_encoder_2/config.json says eos_token_id 2 (transformers' legacy
        // argmax-of-id rule); with bigG's 0 padding that is the first end token too.
        let weights = random_weights::<ClipTextModelWithProjection>(
            ClipTextWithProjectionConfig {
                text: tiny_text(12, 3),
                projection_dim: 6,
            },
            2,
        );
        let copy = |w: &HashMap<String, Tensor>| -> HashMap<String, Tensor> {
            w.iter().map(|(k, v)| (k.clone(), v.copy())).collect()
        };
        let json = tiny_config_json(12, 3, 6);
        let first_eos = build_clip_g(copy(&weights), &json, Device::Cpu, Kind::Float).unwrap();
        assert_eq!(first_eos.text_model().config().eos_token_id, 49407);
        let mut legacy = json.clone();
        legacy["eos_token_id"] = serde_json::json!(2);
        let legacy = build_clip_g(weights, &legacy, Device::Cpu, Kind::Float).unwrap();
        let text = "a cat <|endoftext|> dog";
        let windows = tokenize_weighted(&tokenizer(), text, &CLIP_G_SPECIAL);
        assert_eq!(windows[0].ids[3], EOS_TOKEN_ID);
        let (_, want) = encode_clip_g(&first_eos, &windows).unwrap();
        let (_, got) = encode_clip_g(&legacy, &windows).unwrap();
        assert_eq!((&got - &want).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn diffusers_sdxl_text_encoder_2_config_reads_as_bigg() {
        let json = serde_json::json!({
            "architectures": ["CLIPTextModelWithProjection"], "attention_dropout": 0.0,
            "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": "gelu",
            "hidden_size": 1280, "initializer_factor": 1.0, "initializer_range": 0.02,
            "intermediate_size": 5120, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
            "model_type": "clip_text_model", "num_attention_heads": 20, "num_hidden_layers": 32,
            "pad_token_id": 1, "projection_dim": 1280, "torch_dtype": "float16",
            "transformers_version": "4.32.0.dev0", "vocab_size": 49408
        });
        let c = ClipTextWithProjectionConfig::from_transformers_json(&json, &sdxl_clip_g_config())
            .unwrap();
        let want = ClipTextWithProjectionConfig {
            text: ClipTextConfig {
                eos_token_id: 2,
                ..ClipTextConfig::open_clip_vit_bigg14()
            },
            projection_dim: 1280,
        };
        assert_eq!(c, want);
    }

    #[test]
    fn configs_default_to_sdxl_sizes_and_refuse_bad_values() {
        let g = ClipTextWithProjectionConfig::from_transformers_json(
            &serde_json::json!({}),
            &sdxl_clip_g_config(),
        )
        .unwrap();
        assert_eq!(g.text.hidden_size, 1280);
        assert_eq!(g.text.num_hidden_layers, 32);
        assert_eq!(g.text.num_attention_heads, 20);
        assert_eq!(g.text.intermediate_size, 5120);
        assert_eq!(g.text.hidden_act, Activation::Gelu);
        assert_eq!(g.projection_dim, 1280);
        let l = ClipTextConfig::from_transformers_json(
            &serde_json::json!({"projection_dim": 768}),
            &sdxl_clip_l_config(),
        )
        .unwrap();
        assert_eq!(l, ClipTextConfig::clip_vit_l14());
        let err = ClipTextConfig::from_transformers_json(
            &serde_json::json!({"hidden_act": "relu"}),
            &sdxl_clip_l_config(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("hidden_act"), "{err}");
        let err = ClipTextConfig::from_transformers_json(
            &serde_json::json!({"hidden_size": 100, "num_attention_heads": 3}),
            &sdxl_clip_l_config(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("num_attention_heads"), "{err}");
        let err = ClipTextConfig::from_transformers_json(
            &serde_json::json!({"num_hidden_layers": "many"}),
            &sdxl_clip_l_config(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("num_hidden_layers"), "{err}");
    }
}
