//! Parity of weft's text encoders with transformers, on fixtures written by
//! scripts/parity/text_encoders.py: CLIP tokenizer ids (exact), tiny random-weight
//! CLIPTextModel and BertModel (max abs error <= 1e-4), ComfyUI-style weighted prompts, and
//! all-MiniLM-L6-v2 with its real weights (cosine >= 0.9999; ignored by a plain `cargo test` before set-up).
use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};
use weft_nodes::models::bert::{mean_pool_normalized, BertConfig, BertModel, MiniLm};
use weft_nodes::models::clip_text_model::{Activation, ClipLayer, ClipTextConfig, ClipTextModel};
use weft_nodes::models::clip_tokenizer::{ClipTokenizer, EOS_TOKEN_ID};
use weft_nodes::models::prompt_weighting::{
    encode_weighted, tokenize_weighted, SpecialTokens, WeightedWindow,
};
use weft_nodes::weights::{read_safetensors, Weights};
use weft_test_support::{converted_asset, fixtures};

const TOLERANCE: f64 = 1e-4;

fn json(name: &str) -> serde_json::Value {
    let path = fixtures("text_encoders").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Fixture tensors split into model weights (under `prefix`) and everything else.
fn load(name: &str, prefix: &str) -> (Weights, HashMap<String, Tensor>) {
    let path = fixtures("text_encoders").join(name);
    let all = read_safetensors(&path, Device::Cpu, None).unwrap();
    let (model, rest): (HashMap<_, _>, HashMap<_, _>) =
        all.into_iter().partition(|(k, _)| k.starts_with(prefix));
    (Weights::new(name, model), rest)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    let err = max_abs(got, want);
    println!("{what}: max abs error {err:.3e}");
    assert!(
        err <= TOLERANCE,
        "{what}: max abs error {err:.3e} > {TOLERANCE:e}"
    );
}

#[test]
fn clip_tokenizer_matches_transformers_on_50_prompts() {
    let tok =
        ClipTokenizer::from_file(&fixtures("text_encoders").join("bpe_simple_vocab_16e6.txt.gz"))
            .unwrap();
    assert_eq!(tok.vocab_size(), 49408);
    let fixture = json("clip_tokens.json");
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 50);
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let checks = [
            (
                "with special",
                tok.encode_with_special(text),
                ids(&case["ids"]),
            ),
            ("raw", tok.encode(text), ids(&case["raw_ids"])),
            (
                "padded 77",
                tok.encode_padded(text, 77, EOS_TOKEN_ID),
                ids(&case["padded77"]),
            ),
        ];
        for (kind, got, want) in checks {
            if got != want {
                failures.push(format!(
                    "{text:?} ({kind}):\n  got  {got:?}\n  want {want:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        tok.decode(&tok.encode("A photo of a CAT!")),
        "a photo of a cat !"
    );

    // One enormous word must not take quadratic time.
    let start = std::time::Instant::now();
    let huge = "ab".repeat(100_000);
    let ids = tok.encode(&huge);
    assert_eq!(tok.decode(&ids), huge);
    assert!(start.elapsed().as_secs_f64() < 5.0, "{:?}", start.elapsed());
}

#[test]
fn weighted_prompt_windows_match_comfyui() {
    let tok =
        ClipTokenizer::from_file(&fixtures("text_encoders").join("bpe_simple_vocab_16e6.txt.gz"))
            .unwrap();
    let fixture = json("clip_weighted_tokens.json");
    let mut failures = Vec::new();
    for case in fixture["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let pad = case["pad"].as_u64().unwrap() as u32;
        let special = if pad == 0 {
            SpecialTokens::SD2
        } else {
            SpecialTokens::SD1
        };
        let got = tokenize_weighted(&tok, text, &special);
        let want_ids: Vec<Vec<u32>> = serde_json::from_value(case["ids"].clone()).unwrap();
        let want_weights: Vec<Vec<f32>> = serde_json::from_value(case["weights"].clone()).unwrap();
        let got_ids: Vec<Vec<u32>> = got.iter().map(|w| w.ids.clone()).collect();
        let weights_match = got.len() == want_weights.len()
            && got.iter().zip(&want_weights).all(|(g, w)| {
                g.weights.len() == w.len()
                    && g.weights.iter().zip(w).all(|(a, b)| (a - b).abs() < 1e-5)
            });
        if got_ids != want_ids || !weights_match {
            failures.push(format!(
                "{text:?} (pad {pad}):\n  got  {got_ids:?}\n  want {want_ids:?}\n  got weights  {:?}\n  want weights {want_weights:?}",
                got.iter().map(|w| &w.weights).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn tiny_clip_config(meta: &serde_json::Value) -> ClipTextConfig {
    let int = |k: &str| meta[k].as_i64().unwrap();
    ClipTextConfig {
        vocab_size: int("vocab_size"),
        hidden_size: int("hidden_size"),
        intermediate_size: int("intermediate_size"),
        num_hidden_layers: int("num_hidden_layers") as usize,
        num_attention_heads: int("num_attention_heads"),
        max_position_embeddings: int("max_position_embeddings"),
        hidden_act: match meta["hidden_act"].as_str().unwrap() {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => panic!("activation {other}"),
        },
        layer_norm_eps: meta["layer_norm_eps"].as_f64().unwrap(),
        eos_token_id: int("eos_token_id"),
    }
}

fn check_tiny_clip(name: &str) {
    let meta = json(&format!("{name}.json"));
    let config = tiny_clip_config(&meta);
    let (weights, data) = load(&format!("{name}.safetensors"), "text_model.");
    let model = ClipTextModel::new(&weights, "text_model", config).unwrap();
    let ids = &data["input_ids"];

    assert_close(
        &format!("{name} last_hidden_state"),
        &model.forward(ids).unwrap(),
        &data["ref.last_hidden_state"],
    );
    let out = model.forward_with(ids, ClipLayer::Skip(1), false).unwrap();
    assert_close(
        &format!("{name} penultimate"),
        &out.hidden_state,
        &data["ref.penultimate_hidden_state"],
    );
    assert_close(
        &format!("{name} pooled"),
        &out.pooled,
        &data["ref.pooler_output"],
    );
    let normed = model.forward_with(ids, ClipLayer::Skip(1), true).unwrap();
    assert_close(
        &format!("{name} penultimate + final norm"),
        &normed.hidden_state,
        &data["ref.penultimate_hidden_state_normed"],
    );

    // ComfyUI's weighted-prompt rule over two windows.
    let window_ids = &data["weighted.window_ids"];
    let window_weights = &data["weighted.weights"];
    let windows: Vec<WeightedWindow> = (0..2)
        .map(|k| WeightedWindow {
            ids: Vec::<i64>::try_from(window_ids.get(k))
                .unwrap()
                .into_iter()
                .map(|i| i as u32)
                .collect(),
            weights: Vec::<f32>::try_from(window_weights.get(k)).unwrap(),
        })
        .collect();
    let id = |k: &str| meta[k].as_i64().unwrap() as u32;
    let special = SpecialTokens {
        bos: id("bos_token_id"),
        eos: id("eos_token_id"),
        pad: id("pad_token_id"),
    };
    let (z, pooled) = encode_weighted(&model, &windows, ClipLayer::Last, true, &special).unwrap();
    assert_close(&format!("{name} weighted"), &z, &data["ref.weighted"]);
    assert_close(
        &format!("{name} weighted pooled"),
        &pooled,
        &data["ref.weighted_pooled"],
    );
}

#[test]
fn tiny_clip_quick_gelu_matches_transformers() {
    check_tiny_clip("clip_tiny_quick_gelu");
}

#[test]
fn tiny_clip_gelu_with_legacy_eos_matches_transformers() {
    check_tiny_clip("clip_tiny_gelu_legacy_eos");
}

#[test]
fn tiny_bert_matches_transformers() {
    let meta = json("bert_tiny.json");
    let int = |k: &str| meta[k].as_i64().unwrap();
    let config = BertConfig {
        vocab_size: int("vocab_size"),
        hidden_size: int("hidden_size"),
        num_hidden_layers: int("num_hidden_layers") as usize,
        num_attention_heads: int("num_attention_heads"),
        intermediate_size: int("intermediate_size"),
        max_position_embeddings: int("max_position_embeddings"),
        type_vocab_size: int("type_vocab_size"),
        layer_norm_eps: meta["layer_norm_eps"].as_f64().unwrap(),
    };
    assert_eq!(config, BertConfig::tiny());
    let path = fixtures("text_encoders").join("bert_tiny.safetensors");
    let all = read_safetensors(&path, Device::Cpu, None).unwrap();
    let (model_tensors, data): (HashMap<_, _>, HashMap<_, _>) = all
        .into_iter()
        .partition(|(k, _)| k.starts_with("embeddings.") || k.starts_with("encoder."));
    let weights = Weights::new("bert_tiny", model_tensors);
    let model = BertModel::new(&weights, "", config).unwrap();
    let mask = &data["attention_mask"];
    let hidden = model.forward(&data["input_ids"], Some(mask)).unwrap();
    assert_close(
        "tiny BERT last_hidden_state",
        &hidden,
        &data["ref.last_hidden_state"],
    );
    let pooled = mean_pool_normalized(&hidden, Some(mask)).unwrap();
    assert_close(
        "tiny BERT sentence embedding",
        &pooled,
        &data["ref.sentence_embedding"],
    );
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn minilm_real_weights_match_transformers() {
    let dir = converted_asset("minilm");
    converted_asset("minilm/tokenizer.json");
    let minilm = MiniLm::load(&dir, Device::Cpu).unwrap();
    let fixture = json("minilm_sentences.json");
    let reference = read_safetensors(
        &fixtures("text_encoders").join("minilm_reference.safetensors"),
        Device::Cpu,
        None,
    )
    .unwrap();
    let sentences = fixture["sentences"].as_array().unwrap();
    let mut worst = 1.0f64;
    for (i, s) in sentences.iter().enumerate() {
        let text = s.as_str().unwrap();
        let want_ids: Vec<u32> = fixture["ids"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            minilm.token_ids(text).unwrap(),
            want_ids,
            "token ids of {text:?}"
        );
        let got = minilm.sentence_embedding(text).unwrap();
        let want = reference["sentence_embeddings"].get(i as i64);
        let cosine = Tensor::cosine_similarity(&got, &want, 0, 1e-8).double_value(&[]);
        worst = worst.min(cosine);
        assert!(cosine >= 0.9999, "{text:?}: cosine {cosine}");
        assert!((got.norm().double_value(&[]) - 1.0).abs() < 1e-5);
    }
    println!(
        "MiniLM: {} sentences, worst cosine {worst:.7}",
        sentences.len()
    );
    // Batched (padded, masked) equals one at a time.
    let texts: Vec<&str> = sentences.iter().map(|s| s.as_str().unwrap()).collect();
    let batched = minilm.sentence_embeddings(&texts).unwrap();
    assert_close(
        "MiniLM batched sentence embeddings",
        &batched,
        &reference["sentence_embeddings"],
    );
    let tokens = minilm.embed_tokens(sentences[0].as_str().unwrap()).unwrap();
    assert_close(
        "MiniLM token embeddings",
        &tokens.squeeze_dim(0),
        &reference["first_token_embeddings"],
    );
    assert_eq!(tokens.kind(), Kind::Float);
}

#[test]
fn bad_weights_and_inputs_are_errors_not_panics() {
    let (weights, _) = load("clip_tiny_quick_gelu.safetensors", "text_model.");
    // Built for a wider model: every tensor is mis-shaped, reported together.
    let wide = ClipTextConfig {
        hidden_size: 64,
        ..ClipTextConfig::tiny()
    };
    let err = ClipTextModel::new(&weights, "text_model", wide)
        .err()
        .expect("mis-shaped weights");
    let message = err.to_string();
    assert!(
        message.contains("mis-shaped tensor text_model.embeddings.token_embedding.weight"),
        "{message}"
    );
    assert!(
        message.contains("text_model.final_layer_norm.bias"),
        "{message}"
    );

    let (weights, _) = load("clip_tiny_quick_gelu.safetensors", "text_model.");
    let message = ClipTextModel::new(&weights, "wrong_prefix", ClipTextConfig::tiny())
        .err()
        .expect("wrong prefix")
        .to_string();
    assert!(
        message.contains("missing tensor wrong_prefix.embeddings.token_embedding.weight"),
        "{message}"
    );
    assert!(
        message.contains("unexpected tensor text_model."),
        "{message}"
    );

    let (weights, _) = load("clip_tiny_quick_gelu.safetensors", "text_model.");
    let model = ClipTextModel::new(&weights, "text_model", ClipTextConfig::tiny()).unwrap();
    let out_of_vocab = Tensor::from_slice(&[998i64, 49407, 999]).unsqueeze(0);
    assert!(model.forward(&out_of_vocab).is_err());
    assert!(model
        .forward(&Tensor::zeros([1, 78], (Kind::Int64, Device::Cpu)))
        .is_err());
    assert!(model
        .forward(&Tensor::zeros([1, 2, 3], (Kind::Int64, Device::Cpu)))
        .is_err());
    assert!(model
        .forward_with(
            &Tensor::zeros([1, 5], (Kind::Int64, Device::Cpu)),
            ClipLayer::Skip(3),
            true
        )
        .is_err());
    let bad_window = WeightedWindow {
        ids: vec![998, 999],
        weights: vec![1.0, 1.0],
    };
    assert!(encode_weighted(
        &model,
        &[bad_window],
        ClipLayer::Last,
        true,
        &SpecialTokens::SD1
    )
    .is_err());
    assert!(encode_weighted(&model, &[], ClipLayer::Last, true, &SpecialTokens::SD1).is_err());

    assert!(ClipTokenizer::from_file(Path::new("/nonexistent/bpe.txt.gz")).is_err());
    assert!(MiniLm::load(Path::new("/nonexistent/minilm"), Device::Cpu).is_err());
}
