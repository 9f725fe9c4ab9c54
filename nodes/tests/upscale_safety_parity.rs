//! Parity of the upscalers and the open_nsfw classifier with their references, from the
//! fixtures of scripts/parity/upscale_safety.py, plus tiling and bad-input checks. Tests on
//! real weights need `scripts/convert_models.sh` to have run; without it they print why and
//! pass.
use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};
use weft_nodes::models::esrgan_slim::{EsrganSlim, EsrganSlimConfig};
use weft_nodes::models::open_nsfw::{self, OpenNsfw};
use weft_nodes::models::rrdbnet::{RrdbNet, RrdbNetConfig};
use weft_nodes::models::srvgg_compact::{SrVggNetCompact, SrVggNetCompactConfig};
use weft_nodes::models::tiled::{forward_tiled, read_image, ImageToImage, TileConfig};
use weft_nodes::weights::{read_safetensors, Weights};
use weft_nodes::ModelError;
use weft_test_support::{converted_asset, fixtures, max_abs_diff};

/// A fixture file's tensors, and its `model.`-prefixed ones as a weight set.
fn fixture(name: &str) -> (HashMap<String, Tensor>, Weights) {
    let path = fixtures("upscale_safety").join(name);
    let tensors = read_safetensors(&path, Device::Cpu, Some(Kind::Float)).unwrap();
    let model = tensors
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("model.")
                .map(|k| (k.to_string(), v.shallow_clone()))
        })
        .collect();
    (tensors, Weights::new(path.display().to_string(), model))
}

fn tiny_rrdbnet_config() -> RrdbNetConfig {
    RrdbNetConfig {
        num_feat: 8,
        num_block: 2,
        num_grow_ch: 4,
        ..RrdbNetConfig::x4plus()
    }
}

fn tiny_srvgg_config() -> SrVggNetCompactConfig {
    SrVggNetCompactConfig {
        num_feat: 8,
        num_conv: 2,
        ..SrVggNetCompactConfig::animevideov3()
    }
}

fn tiny_rrdbnet() -> (HashMap<String, Tensor>, RrdbNet) {
    let (t, w) = fixture("tiny_rrdbnet.safetensors");
    let model = RrdbNet::from_weights(&w, tiny_rrdbnet_config()).unwrap();
    w.finish("RRDBNet").unwrap();
    (t, model)
}

fn tiny_srvgg() -> (HashMap<String, Tensor>, SrVggNetCompact) {
    let (t, w) = fixture("tiny_srvgg.safetensors");
    let model = SrVggNetCompact::from_weights(&w, tiny_srvgg_config());
    w.finish("SRVGGNetCompact").unwrap();
    (t, model)
}

#[test]
fn tiny_rrdbnet_matches_basicsr() {
    let (t, model) = tiny_rrdbnet();
    let out = model.forward(&t["input"]).unwrap();
    let err = max_abs_diff(&out, &t["output"]);
    println!("tiny RRDBNet max abs error {err:.3e}");
    assert!(err <= 1e-4, "tiny RRDBNet max abs error {err}");
}

#[test]
fn tiny_srvgg_matches_basicsr() {
    let (t, model) = tiny_srvgg();
    let out = model.forward(&t["input"]).unwrap();
    let err = max_abs_diff(&out, &t["output"]);
    println!("tiny SRVGGNetCompact max abs error {err:.3e}");
    assert!(err <= 1e-4, "tiny SRVGGNetCompact max abs error {err}");
}

#[test]
fn tiled_srvgg_equals_untiled_when_overlap_covers_receptive_field() {
    let (_, model) = tiny_srvgg();
    tch::manual_seed(1);
    let image = Tensor::rand([1, 3, 30, 26], (Kind::Float, Device::Cpu));
    let whole = model.forward(&image).unwrap();
    // Four 3x3 convolutions: each output pixel sees 4 input pixels each way.
    let tiled = forward_tiled(
        &model,
        &image,
        TileConfig {
            tile: 8,
            overlap: 4,
        },
    )
    .unwrap();
    let err = max_abs_diff(&tiled, &whole);
    println!("tiled SRVGGNetCompact (tile 8, overlap 4) max abs error {err:.3e}");
    assert!(err <= 1e-5, "tiled result differs by {err}");
}

#[test]
fn tiled_rrdbnet_is_close_to_untiled_in_the_interior() {
    let (_, model) = tiny_rrdbnet();
    tch::manual_seed(2);
    let image = Tensor::rand([1, 3, 40, 36], (Kind::Float, Device::Cpu));
    let whole = model.forward(&image).unwrap();
    let tiles = TileConfig {
        tile: 16,
        overlap: 12,
    };
    let tiled = forward_tiled(&model, &image, tiles).unwrap();
    assert_eq!(tiled.size(), [1, 3, 160, 144]);
    let err = max_abs_diff(&tiled, &whole);
    let mean = (&tiled - &whole).abs().mean(Kind::Float).double_value(&[]);
    println!("tiled RRDBNet (tile 16, overlap 12): max abs error {err:.3e}, mean {mean:.3e}");
    assert!(
        err <= 1e-2 && mean <= 1e-4,
        "tiled result differs: max {err}, mean {mean}"
    );
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn real_esrgan_converted_weights_match_pytorch() {
    let x4plus = converted_asset("realesrgan/realesrgan-x4plus.safetensors");
    let anime = converted_asset("realesrgan/realesr-animevideov3.safetensors");
    let t = read_safetensors(
        &fixtures("upscale_safety").join("real_upscalers.safetensors"),
        Device::Cpu,
        None,
    )
    .unwrap();
    let rrdb = RrdbNet::load(&x4plus, RrdbNetConfig::x4plus(), Device::Cpu).unwrap();
    let err = max_abs_diff(&rrdb.forward(&t["input"]).unwrap(), &t["x4plus"]);
    println!("RealESRGAN_x4plus max abs error {err:.3e}");
    assert!(err <= 1e-3, "RealESRGAN_x4plus max abs error {err}");
    let srvgg =
        SrVggNetCompact::load(&anime, SrVggNetCompactConfig::animevideov3(), Device::Cpu).unwrap();
    let err = max_abs_diff(&srvgg.forward(&t["input"]).unwrap(), &t["animevideov3"]);
    println!("realesr-animevideov3 max abs error {err:.3e}");
    assert!(err <= 1e-3, "realesr-animevideov3 max abs error {err}");
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn esrgan_slim_reproduces_the_packages_own_samples() {
    let dir = converted_asset("esrgan-slim/samples");
    let input = read_image(&dir.join("fixture.png"), Device::Cpu).unwrap();
    for scale in [2, 4] {
        let weights = dir
            .parent()
            .unwrap()
            .join(format!("esrgan-slim-x{scale}.safetensors"));
        let model = EsrganSlim::load(&weights, EsrganSlimConfig::slim(scale), Device::Cpu).unwrap();
        let out = model.upscale(&input).unwrap();
        let reference = read_image(&dir.join(format!("result-x{scale}.png")), Device::Cpu).unwrap();
        // The samples are 8-bit PNGs written by the TF.js model: compare at 8 bits.
        let diff = (out * 255.0).round() - reference * 255.0;
        let max = diff.abs().max().double_value(&[]);
        let mean = diff.abs().mean(Kind::Float).double_value(&[]);
        println!("ESRGAN-slim x{scale} vs package sample: max {max} levels, mean {mean:.2e}");
        assert!(
            max <= 1.0 && mean <= 1e-3,
            "x{scale}: max {max}, mean {mean}"
        );
    }
}

/// Log-odds ln(p / (1 - p)): most fixture scores are near zero, where an absolute tolerance
/// alone says little.
fn log_odds(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn nsfw_records() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixtures("upscale_safety").join("nsfw.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["images"].as_array().unwrap().clone()
}

#[test]
fn open_nsfw_preprocessing_reproduces_the_packages_crops_exactly() {
    // PIL's resize and libjpeg's JPEG round trip, pixel for pixel; needs no weights.
    for record in nsfw_records() {
        let dir = fixtures("upscale_safety").join("nsfw");
        let raw = read_image(&dir.join(record["raw"].as_str().unwrap()), Device::Cpu).unwrap();
        let crop = read_image(&dir.join(record["crop"].as_str().unwrap()), Device::Cpu).unwrap();
        let ours = open_nsfw::preprocess(&raw, true).unwrap();
        let package = open_nsfw::model_input(&crop).unwrap();
        let differing = (&ours - &package)
            .abs()
            .gt(0.0)
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert_eq!(
            differing, 0,
            "{}: {differing} values differ",
            record["name"]
        );
    }
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn open_nsfw_matches_onnxruntime_on_preprocessed_crops() {
    let path = converted_asset("open_nsfw/open_nsfw.safetensors");
    let model = OpenNsfw::load(&path, Device::Cpu).unwrap();
    let records = nsfw_records();
    assert_eq!(records.len(), 12);
    let (mut worst, mut worst_log_odds): (f64, f64) = (0.0, 0.0);
    for record in &records {
        let crop = read_image(
            &fixtures("upscale_safety")
                .join("nsfw")
                .join(record["crop"].as_str().unwrap()),
            Device::Cpu,
        )
        .unwrap();
        let probabilities = model
            .forward(&open_nsfw::model_input(&crop).unwrap())
            .unwrap();
        let p = probabilities.double_value(&[0, 1]);
        let want = record["p_unsafe_crop"].as_f64().unwrap();
        println!(
            "{:22} P(unsafe) {p:.6} onnxruntime {want:.6}",
            record["name"]
        );
        worst = worst.max((p - want).abs());
        worst_log_odds = worst_log_odds.max((log_odds(p) - log_odds(want)).abs());
    }
    println!("open_nsfw max abs error {worst:.3e}, in log-odds {worst_log_odds:.3e}");
    assert!(worst <= 1e-4, "open_nsfw max abs error {worst}");
    assert!(
        worst_log_odds <= 1e-3,
        "open_nsfw log-odds error {worst_log_odds}"
    );
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn open_nsfw_classify_follows_the_packages_preprocessing() {
    let path = converted_asset("open_nsfw/open_nsfw.safetensors");
    let model = OpenNsfw::load(&path, Device::Cpu).unwrap();
    // With the JPEG round trip (the package's default) and without it.
    let mut worst = [(0.0f64, 0.0f64); 2];
    for record in nsfw_records() {
        let raw = fixtures("upscale_safety")
            .join("nsfw")
            .join(record["raw"].as_str().unwrap());
        let with_jpeg = model.classify_file(&raw).unwrap();
        let image = read_image(&raw, Device::Cpu).unwrap();
        let without_jpeg = model.classify_with(&image, false).unwrap();
        let want = [
            record["p_unsafe_crop"].as_f64().unwrap(),
            record["p_unsafe_raw_no_jpeg"].as_f64().unwrap(),
        ];
        println!(
            "{:22} classify {with_jpeg:.6} package {:.6}; without JPEG {without_jpeg:.6} package {:.6}",
            record["name"], want[0], want[1]
        );
        for (i, p) in [with_jpeg, without_jpeg].into_iter().enumerate() {
            worst[i].0 = worst[i].0.max((p - want[i]).abs());
            worst[i].1 = worst[i].1.max((log_odds(p) - log_odds(want[i])).abs());
        }
    }
    // Resize and JPEG round trip are reproduced pixel for pixel, so only float noise remains.
    for (mode, (abs, log)) in ["with JPEG", "without JPEG"].iter().zip(worst) {
        println!("open_nsfw classify {mode}: max abs error {abs:.3e}, in log-odds {log:.3e}");
        assert!(
            abs <= 1e-4 && log <= 1e-3,
            "{mode}: abs {abs}, log-odds {log}"
        );
    }
}

fn assert_shape_error<T: std::fmt::Debug>(result: weft_nodes::Result<T>, expect: &str) {
    match result {
        Err(e @ ModelError::Shape { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(expect),
                "message {message:?} lacks {expect:?}"
            );
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
}

#[test]
fn wrong_shaped_images_are_rejected_with_clear_errors() {
    let (_, rrdb) = tiny_rrdbnet();
    let (_, srvgg) = tiny_srvgg();
    let cpu = (Kind::Float, Device::Cpu);
    assert_shape_error(rrdb.forward(&Tensor::zeros([3, 8, 8], cpu)), "[N, 3, H, W]");
    assert_shape_error(
        srvgg.forward(&Tensor::zeros([1, 4, 8, 8], cpu)),
        "3 channels",
    );
    assert_shape_error(srvgg.forward(&Tensor::zeros([1, 3, 0, 8], cpu)), "empty");
    assert_shape_error(
        srvgg.forward(&Tensor::zeros([1, 3, 8, 8], (Kind::Uint8, Device::Cpu))),
        "floating-point",
    );
    assert_shape_error(
        forward_tiled(
            &srvgg,
            &Tensor::zeros([1, 3, 8, 8], cpu),
            TileConfig {
                tile: 0,
                overlap: 2,
            },
        ),
        "tile must be positive",
    );
    // open_nsfw's input checks run before any weight is touched, so empty weights do.
    let nsfw = OpenNsfw::from_weights(&Weights::new("none", HashMap::new()));
    assert_shape_error(
        nsfw.forward(&Tensor::zeros([1, 3, 200, 224], cpu)),
        "[N, 3, 224, 224]",
    );
    assert_shape_error(
        nsfw.classify(&Tensor::zeros([2, 3, 64, 64], cpu)),
        "one RGB image",
    );
}

#[test]
fn a_non_image_file_is_a_format_error() {
    let path = std::env::temp_dir().join(format!("weft-not-an-image-{}.png", std::process::id()));
    std::fs::write(&path, b"this is text, not a PNG").unwrap();
    let result = read_image(&path, Device::Cpu);
    std::fs::remove_file(&path).unwrap();
    match result {
        Err(e @ ModelError::Format { .. }) => assert!(e.to_string().contains("weft-not-an-image")),
        other => panic!("expected a format error, got {other:?}"),
    }
    let missing = read_image(Path::new("/nonexistent/picture.png"), Device::Cpu);
    assert!(matches!(missing, Err(ModelError::Io { .. })), "{missing:?}");
}

#[test]
fn weights_of_another_model_are_reported_not_used() {
    let path = fixtures("upscale_safety").join("tiny_srvgg.safetensors");
    let err = RrdbNet::load(&path, tiny_rrdbnet_config(), Device::Cpu).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("missing tensor conv_first.weight"),
        "{message}"
    );
    assert!(message.contains("unexpected tensor"), "{message}");
    let not_safetensors = fixtures("upscale_safety").join("nsfw.json");
    let err = OpenNsfw::load(&not_safetensors, Device::Cpu).unwrap_err();
    assert!(matches!(err, ModelError::Format { .. }), "{err:?}");
}
