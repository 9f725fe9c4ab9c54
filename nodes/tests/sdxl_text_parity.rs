//! Parity of weft's SDXL text side with transformers / open_clip / ComfyUI's rules, on fixtures
//! written by scripts/parity/sdxl_text.py: tiny random CLIP-L and bigG towers (real CLIP
//! vocabulary and special ids), loaded from transformers names and from SDXL single-file names;
//! each tower's penultimate states, bigG's projected pooled output, ComfyUI's tokenization of
//! both towers and the full weighted, chunked encode (max abs error <= 1e-4).
use std::collections::HashMap;

use tch::{Device, Kind, Tensor};
use weft_nodes::models::clip_text_model::ClipLayer;
use weft_nodes::models::clip_tokenizer::ClipTokenizer;
use weft_nodes::models::prompt_weighting::WeightedWindow;
use weft_nodes::models::sdxl_text::{SdxlRefinerTextEncoder, SdxlTextEncoders, SdxlWindows};
use weft_nodes::weights::read_safetensors;
use weft_nodes::weights::sdxl_text_keymap::split_sdxl_text_tensors;
use weft_test_support::fixtures;

const TOLERANCE: f64 = 1e-4;
const VOCAB: i64 = 49408;

fn fixture(name: &str) -> std::path::PathBuf {
    fixtures("sdxl_text").join(name)
}

fn json(name: &str) -> serde_json::Value {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn tensors(name: &str) -> HashMap<String, Tensor> {
    read_safetensors(&fixture(name), Device::Cpu, None).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Rebuilds each token-embedding table the fixture stores sparsely (the rows the prompts use;
/// the reference model's other rows are zero).
fn densify(mut t: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let sparse: Vec<String> = t
        .keys()
        .filter_map(|k| k.strip_prefix("sparse_rows.").map(str::to_string))
        .collect();
    assert!(!sparse.is_empty(), "fixture without a sparse embedding");
    for name in sparse {
        let rows = t.remove(&format!("sparse_rows.{name}")).unwrap();
        let ids = t.remove(&format!("sparse_ids.{name}")).unwrap();
        let dim = rows.size()[1];
        let table = Tensor::zeros([VOCAB, dim], (rows.kind(), Device::Cpu));
        let table = table.index_put(&[Some(ids)], &rows, false);
        t.insert(name, table);
    }
    t
}

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_file(&fixtures("text_encoders").join("bpe_simple_vocab_16e6.txt.gz"))
        .unwrap()
}

fn from_transformers_names() -> SdxlTextEncoders {
    SdxlTextEncoders::from_weights(
        densify(tensors("clip_l.safetensors")),
        &json("clip_l.json"),
        densify(tensors("clip_g.safetensors")),
        &json("clip_g.json"),
        tokenizer(),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap()
}

fn from_single_file() -> SdxlTextEncoders {
    let split = split_sdxl_text_tensors(densify(tensors("single_file.safetensors"))).unwrap();
    assert!(split.other.is_empty(), "{:?}", split.other.keys());
    SdxlTextEncoders::from_weights(
        split.clip_l,
        &json("clip_l.json"),
        split.clip_g,
        &json("clip_g.json"),
        tokenizer(),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap()
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.size(), want.size(), "{what}: shapes differ");
    let err = (got - want).abs().max().double_value(&[]);
    println!("{what}: max abs error {err:.3e}");
    assert!(
        err <= TOLERANCE,
        "{what}: max abs error {err:.3e} > {TOLERANCE:e}"
    );
}

fn check_towers(enc: &SdxlTextEncoders, layout: &str) {
    let r = tensors("reference.safetensors");
    let l = enc
        .clip_l()
        .forward_with(&r["windows.l_ids"], ClipLayer::Skip(1), false)
        .unwrap();
    assert_close(
        &format!("{layout}: CLIP-L penultimate"),
        &l.hidden_state,
        &r["ref.l_penultimate"],
    );
    let g = enc
        .clip_g()
        .forward_with(&r["windows.g_ids"], ClipLayer::Skip(1), false)
        .unwrap();
    assert_close(
        &format!("{layout}: bigG penultimate"),
        &g.hidden_state,
        &r["ref.g_penultimate"],
    );
    assert_close(
        &format!("{layout}: bigG projected pooled"),
        &g.pooled,
        &r["ref.g_pooled"],
    );
}

#[test]
fn towers_from_transformers_names_match_transformers() {
    check_towers(&from_transformers_names(), "transformers names");
}

#[test]
fn towers_from_single_file_names_match_transformers_and_open_clip() {
    check_towers(&from_single_file(), "single-file names");
}

fn windows(ids: &serde_json::Value, weights: &serde_json::Value) -> Vec<WeightedWindow> {
    let ids = ids.as_array().unwrap();
    let weights = weights.as_array().unwrap();
    ids.iter()
        .zip(weights)
        .map(|(i, w)| WeightedWindow {
            ids: i
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect(),
            weights: w
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
}

/// Weights compare to 1e-6: the reference's are f64 parsed from text, weft's f32 products.
fn assert_same_windows(what: &str, got: &[WeightedWindow], want: &[WeightedWindow]) {
    assert_eq!(got.len(), want.len(), "{what}: window count");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.ids, w.ids, "{what}: window {k} ids");
        for (j, (a, b)) in g.weights.iter().zip(&w.weights).enumerate() {
            assert!(
                (a - b).abs() < 1e-6,
                "{what}: window {k} position {j}: weight {a} != {b}"
            );
        }
    }
}

fn check_prompts(enc: &SdxlTextEncoders, layout: &str) {
    let r = tensors("reference.safetensors");
    let cases = json("prompts.json");
    let cases = cases["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for (i, case) in cases.iter().enumerate() {
        let (text_l, text_g) = (
            case["text_l"].as_str().unwrap(),
            case["text_g"].as_str().unwrap(),
        );
        let want = SdxlWindows {
            clip_l: windows(&case["l_ids"], &case["l_weights"]),
            clip_g: windows(&case["g_ids"], &case["g_weights"]),
        };
        let got = enc.tokenize(text_l, text_g);
        assert_same_windows(&format!("prompt {i} CLIP-L"), &got.clip_l, &want.clip_l);
        assert_same_windows(&format!("prompt {i} bigG"), &got.clip_g, &want.clip_g);
        let out = if text_l == text_g {
            enc.encode(text_l).unwrap()
        } else {
            enc.encode_pair(text_l, text_g).unwrap()
        };
        let what = format!("{layout}: prompt {i} ({} windows)", want.clip_g.len());
        assert_eq!(out.context.kind(), Kind::Float);
        assert_close(
            &format!("{what} context"),
            &out.context,
            &r[&format!("ref.context.{i}")],
        );
        assert_close(
            &format!("{what} pooled"),
            &out.pooled,
            &r[&format!("ref.pooled.{i}")],
        );
    }
}

#[test]
fn prompts_encode_as_comfyui_sdxl_from_transformers_names() {
    check_prompts(&from_transformers_names(), "transformers names");
}

#[test]
fn prompts_encode_as_comfyui_sdxl_from_single_file_names() {
    check_prompts(&from_single_file(), "single-file names");
}

#[test]
fn a_wrong_single_file_tensor_is_named() {
    let mut t = densify(tensors("single_file.safetensors"));
    let bad = "conditioner.embedders.1.model.transformer.resblocks.1.mlp.c_fc.weight";
    t.insert(
        bad.to_string(),
        Tensor::zeros([95, 48], (Kind::Half, Device::Cpu)),
    );
    let split = split_sdxl_text_tensors(t).unwrap();
    let err = SdxlTextEncoders::from_weights(
        split.clip_l,
        &json("clip_l.json"),
        split.clip_g,
        &json("clip_g.json"),
        tokenizer(),
        Device::Cpu,
        Kind::Float,
    )
    .err()
    .expect("a mis-shaped tensor must be refused")
    .to_string();
    assert!(
        err.contains("mis-shaped tensor text_model.encoder.layers.1.mlp.fc1.weight"),
        "{err}"
    );
    assert!(err.contains("bigG"), "{err}");
}

/// Every text tensor of an SDXL-base-shaped single file (names and shapes from the real
/// transformers / open_clip modules, see the script) maps and loads with the default configs
/// (`{}`: SDXL base's sizes), nothing missing or left over. The tensors are uninitialised
/// (`empty`), so the 3.3 GB of real-size towers cost no memory pages.
#[test]
fn real_sdxl_base_text_keys_load_with_default_configs() {
    let fixture = json("sdxl_base_text_shapes.json");
    let shapes = fixture["shapes"].as_object().unwrap();
    let tensors: HashMap<String, Tensor> = shapes
        .iter()
        .map(|(name, shape)| {
            let shape: Vec<i64> = shape
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect();
            let kind = if name.ends_with("position_ids") {
                Kind::Int64
            } else {
                Kind::Float
            };
            (
                name.clone(),
                Tensor::empty(shape.as_slice(), (kind, Device::Cpu)),
            )
        })
        .collect();
    assert_eq!(tensors.len(), 587);
    let split = split_sdxl_text_tensors(tensors).unwrap();
    assert!(split.other.is_empty());
    assert_eq!(split.clip_g["text_projection.weight"].size(), [1280, 1280]);
    let empty = serde_json::json!({});
    let enc = SdxlTextEncoders::from_weights(
        split.clip_l,
        &empty,
        split.clip_g,
        &empty,
        tokenizer(),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let g = enc.clip_g().text_model().config();
    assert_eq!((g.hidden_size, g.num_hidden_layers), (1280, 32));
    assert_eq!(enc.clip_l().config().hidden_size, 768);
}

/// The refiner's text side is bigG alone: its context is the bigG half of the base's.
#[test]
fn refiner_encodes_with_bigg_alone() {
    let g = densify(tensors("clip_g.safetensors"));
    let refiner = SdxlRefinerTextEncoder::from_weights(
        g,
        &json("clip_g.json"),
        tokenizer(),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let r = tensors("reference.safetensors");
    let cases = json("prompts.json");
    for (i, case) in cases["cases"].as_array().unwrap().iter().enumerate() {
        let (text_l, text_g) = (
            case["text_l"].as_str().unwrap(),
            case["text_g"].as_str().unwrap(),
        );
        if text_l != text_g {
            continue;
        }
        let out = refiner.encode(text_g).unwrap();
        let want = r[&format!("ref.context.{i}")].narrow(2, 32, 48);
        assert_close(&format!("refiner prompt {i} context"), &out.context, &want);
        assert_close(
            &format!("refiner prompt {i} pooled"),
            &out.pooled,
            &r[&format!("ref.pooled.{i}")],
        );
    }
}
