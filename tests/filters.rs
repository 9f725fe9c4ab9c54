//! The safety nodes through the CLI: PromptFilter stops a blocked prompt before any sampling
//! (and an unreadable blocklist before anything runs); SafetyFilter's actions black, blur,
//! reject and flag, image by image (threshold 0 makes every image count as unsafe), and at
//! threshold 0.5 on an image the classifier scores high (made at test time from its own
//! gradient) and one it scores low.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use weft_test_support::{converted_asset, repo_root};

fn weft_json(workflow: &Path, dir: &Path) -> (Output, Vec<serde_json::Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(repo_root())
        .args([
            "run",
            workflow.to_str().unwrap(),
            "--json",
            "--device",
            "cpu",
        ])
        .args(["--output", dir.join("out").to_str().unwrap()])
        .output()
        .expect("weft runs");
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    (out, events)
}

fn started(events: &[serde_json::Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e["event"] == "node_started")
        .map(|e| e["node"].as_str().unwrap())
        .collect()
}

/// txt2img with its prompt passed through a PromptFilter reading `blocklist`.
fn filtered_txt2img(dir: &Path, prompt: &str, blocklist: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("workflows/txt2img.yaml")).unwrap();
    let filter = format!(
        "nodes:\n  check:\n    type: PromptFilter\n    text: {}\n    blocklist: {}\n",
        serde_json::to_string(prompt).unwrap(),
        serde_json::to_string(blocklist.to_str().unwrap()).unwrap()
    );
    let text = text
        .replacen("nodes:\n", &filter, 1)
        .replace(
            "text: a red circle on a blue background",
            "text: $check.text",
        )
        .replace("steps: 20", "steps: 2");
    let path = dir.join("filtered.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn a_blocked_prompt_fails_before_any_sampling() {
    converted_asset("minilm/model.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("blocklist.txt");
    std::fs::write(&list, "# house rules\nred circle\n").unwrap();

    let workflow = filtered_txt2img(dir.path(), "A RED Circle, on blue", &list);
    let (out, events) = weft_json(&workflow, dir.path());
    assert_eq!(out.status.code(), Some(1));
    let error = events
        .iter()
        .find(|e| e["event"] == "error")
        .expect("an error");
    assert_eq!(error["node"], "check");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("blocked phrase 'red circle'") && message.contains("line 2"),
        "{message}"
    );
    assert!(!started(&events).contains(&"sample"), "nothing sampled");

    // The same workflow with a harmless prompt runs through.
    let workflow = filtered_txt2img(dir.path(), "a blue square on a red background", &list);
    let (out, _) = weft_json(&workflow, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unreadable_blocklist_is_reported_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = filtered_txt2img(dir.path(), "a circle", &dir.path().join("missing.txt"));
    let (out, events) = weft_json(&workflow, dir.path());
    assert_eq!(out.status.code(), Some(2), "invalid: nothing ran");
    assert!(started(&events).is_empty());
    let invalid = events
        .iter()
        .find(|e| e["event"] == "invalid")
        .expect("invalid");
    let error = &invalid["errors"][0];
    assert_eq!(error["node"], "check");
    assert!(
        error["message"].as_str().unwrap().contains("missing.txt"),
        "{error}"
    );
    assert!(error["pos"]["line"].as_u64().is_some(), "located: {error}");
}

/// Noise previewed as a 2-image batch, then SafetyFilter with `action` and threshold 0.
fn safety_workflow(dir: &Path, action: &str) -> PathBuf {
    let text = format!(
        "weft: 1
nodes:
  noise:
    type: RandomNoise
    seed: 3
    width: 256
    height: 256
    batch: 2
  preview:
    type: LatentPreview
    latent: $noise.latent
  safety:
    type: LoadSafetyModel
  filter:
    type: SafetyFilter
    safety_model: $safety.safety_model
    image: $preview.image
    threshold: 0.0
    action: {action}
  save:
    type: SaveImage
    image: $filter.image
    prefix: {action}
"
    );
    let path = dir.join(format!("{action}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn saved_pixels(events: &[serde_json::Value]) -> Vec<u8> {
    let output = events
        .iter()
        .find(|e| e["event"] == "output")
        .expect("an output");
    let path = output["path"].as_str().unwrap();
    image::open(path).unwrap().to_rgb8().into_raw()
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn safety_filter_actions_black_blur_reject_and_flag() {
    converted_asset("open_nsfw/open_nsfw.safetensors");
    let dir = tempfile::tempdir().unwrap();

    let (out, events) = weft_json(&safety_workflow(dir.path(), "black"), dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(saved_pixels(&events).iter().all(|&p| p == 0), "blacked out");

    let (out, events) = weft_json(&safety_workflow(dir.path(), "flag"), dir.path());
    assert!(out.status.success());
    let notices: Vec<_> = events.iter().filter(|e| e["event"] == "notice").collect();
    assert_eq!(notices.len(), 2, "one notice per image: {notices:?}");
    assert!(notices[0]["message"]
        .as_str()
        .unwrap()
        .contains("image 1 of 2"));
    let flagged = saved_pixels(&events);
    assert!(
        flagged.iter().any(|&p| p != 0),
        "flagged images pass unchanged"
    );

    let (out, events) = weft_json(&safety_workflow(dir.path(), "blur"), dir.path());
    assert!(out.status.success());
    let blurred = saved_pixels(&events);
    assert_eq!(blurred.len(), flagged.len());
    assert_ne!(blurred, flagged, "blurred differs from the original");
    // Blurring keeps the average colour roughly and removes detail: neighbours differ little.
    let roughness = |p: &[u8]| -> f64 {
        p.chunks(3)
            .zip(p.chunks(3).skip(1))
            .map(|(a, b)| a[0].abs_diff(b[0]) as f64)
            .sum::<f64>()
    };
    assert!(roughness(&blurred) < roughness(&flagged) / 2.0);

    let (out, events) = weft_json(&safety_workflow(dir.path(), "reject"), dir.path());
    assert_eq!(out.status.code(), Some(1));
    let error = events.iter().find(|e| e["event"] == "error").unwrap();
    assert_eq!(error["node"], "filter");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("image 1 of 2 scored P(unsafe) =") && message.contains("rejected"),
        "{message}"
    );
    assert!(!started(&events).contains(&"save"));
}

/// Side of the test images: the classifier's resize target, so its preprocessing only crops.
const SIDE: i64 = 256;

/// An image [1, 3, SIDE, SIDE] in [0, 1] as 8-bit RGB, saved as a PNG.
fn save_png(image: &tch::Tensor, path: &Path) {
    let pixels = (image.squeeze_dim(0).permute([1, 2, 0]) * 255.0)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(tch::Kind::Uint8)
        .contiguous()
        .view([-1]);
    let bytes = Vec::<u8>::try_from(&pixels).unwrap();
    image::RgbImage::from_raw(SIDE as u32, SIDE as u32, bytes)
        .unwrap()
        .save(path)
        .unwrap();
}

/// An image open_nsfw scores at least 0.9, made from its own gradient: fixed-seed smooth noise,
/// then signed gradient-ascent steps on log P(unsafe) of the centre crop the network sees,
/// clamped to valid pixels, until the score through the classifier's full preprocessing (8-bit
/// pixels, resize, crop, JPEG round trip, exactly as SafetyFilter scores) reaches 0.9.
/// Returns the image and its score; nothing of it is committed.
fn high_scoring_image(model: &weft_nodes::models::open_nsfw::OpenNsfw) -> (tch::Tensor, f64) {
    use weft_nodes::models::open_nsfw::{CROP, MEAN_BGR};
    const STEP: f64 = 3.0 / 255.0;
    const MAX_STEPS: usize = 60;
    tch::manual_seed(20);
    let offset = (SIDE - CROP) / 2;
    let mean = tch::Tensor::from_slice(&MEAN_BGR)
        .to_kind(tch::Kind::Float)
        .view([1, 3, 1, 1]);
    let mut x = tch::Tensor::rand([1, 3, 8, 8], (tch::Kind::Float, tch::Device::Cpu))
        .upsample_bicubic2d([SIDE, SIDE], false, None, None)
        .clamp(0.0, 1.0);
    let mut score = model.classify(&x).unwrap();
    eprintln!("open_nsfw scores the starting noise {score:.3}");
    let started = std::time::Instant::now();
    for step in 0..MAX_STEPS {
        if score >= 0.9 {
            eprintln!(
                "open_nsfw scores the gradient-made image {score:.3} after {step} steps ({:.1?})",
                started.elapsed()
            );
            return (x, score);
        }
        let leaf = x.detach().set_requires_grad(true);
        let crop = leaf.narrow(2, offset, CROP).narrow(3, offset, CROP);
        let input = (crop * 255.0).flip([1]) - &mean;
        let p_unsafe = model.forward_with_grad(&input).unwrap().select(1, 1);
        p_unsafe
            .clamp_min(1e-12)
            .log()
            .sum(tch::Kind::Float)
            .backward();
        let grad = leaf.grad();
        x = tch::no_grad(|| (&x + grad.sign() * STEP).clamp(0.0, 1.0));
        score = model.classify(&x).unwrap();
    }
    panic!("open_nsfw scored the image only {score:.3} after {MAX_STEPS} steps");
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn safety_actions_on_images_the_classifier_scores_high_and_low() {
    let weights = converted_asset("open_nsfw/open_nsfw.safetensors");
    let model = weft_nodes::models::open_nsfw::OpenNsfw::load(&weights, tch::Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (high, _) = high_scoring_image(&model);
    let high_png = dir.path().join("high.png");
    save_png(&high, &high_png);
    let high_score = model.classify_file(&high_png).unwrap();
    let low_png = dir.path().join("low.png");
    save_png(
        &tch::Tensor::full(
            [1, 3, SIDE, SIDE],
            0.5,
            (tch::Kind::Float, tch::Device::Cpu),
        ),
        &low_png,
    );
    let low_score = model.classify_file(&low_png).unwrap();
    eprintln!("scores: high {high_score:.3}, low {low_score:.3}");
    assert!(high_score >= 0.9 && low_score < 0.5);
    let pixels = |png: &Path| image::open(png).unwrap().to_rgb8().into_raw();
    let (high_pixels, low_pixels) = (pixels(&high_png), pixels(&low_png));

    // LoadImage -> SafetyFilter (threshold 0.5) -> SaveImage, once per action in one workflow
    // (`filter_ACTION`, `save_ACTION`), in a file named `name`.
    let run = |name: &str, actions: &[&str], png: &Path| {
        let mut text = format!(
            "weft: 1\nnodes:\n  load:\n    type: LoadImage\n    path: {}\n  safety:\n    type: LoadSafetyModel\n",
            serde_json::to_string(png.to_str().unwrap()).unwrap()
        );
        for action in actions {
            text.push_str(&format!(
                "  filter_{action}:
    type: SafetyFilter
    safety_model: $safety.safety_model
    image: $load.image
    threshold: 0.5
    action: {action}
  save_{action}:
    type: SaveImage
    image: $filter_{action}.image
    prefix: {name}_{action}
"
            ));
        }
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        weft_json(&path, dir.path())
    };
    let succeeded = |out: &Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let saved = |events: &[serde_json::Value], node: &str| -> Vec<u8> {
        let output = events
            .iter()
            .find(|e| e["event"] == "output" && e["node"] == node)
            .unwrap_or_else(|| panic!("no output from {node}: {events:?}"));
        image::open(output["path"].as_str().unwrap())
            .unwrap()
            .to_rgb8()
            .into_raw()
    };
    let notices = |events: &[serde_json::Value]| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|e| e["event"] == "notice")
            .map(|e| {
                (
                    e["node"].as_str().unwrap_or_default().to_string(),
                    e["message"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let all = ["black", "blur", "reject", "flag"];

    // A low score passes every action untouched, and nothing is flagged.
    let (out, events) = run("low", &all, &low_png);
    succeeded(&out);
    for action in all {
        assert_eq!(
            saved(&events, &format!("save_{action}")),
            low_pixels,
            "{action}: low passes unchanged"
        );
    }
    assert!(notices(&events).is_empty(), "{events:?}");

    // A high score: black blacks out, blur blurs, flag passes it on with a notice.
    let (out, events) = run("high", &["black", "blur", "flag"], &high_png);
    succeeded(&out);
    assert!(
        saved(&events, "save_black").iter().all(|&p| p == 0),
        "blacked out"
    );
    let blurred = saved(&events, "save_blur");
    assert_ne!(blurred, high_pixels);
    let roughness = |p: &[u8]| -> f64 {
        p.chunks(3)
            .zip(p.chunks(3).skip(1))
            .map(|(a, b)| a[0].abs_diff(b[0]) as f64)
            .sum::<f64>()
    };
    assert!(
        roughness(&blurred) < roughness(&high_pixels) / 2.0,
        "blurred: {} vs {}",
        roughness(&blurred),
        roughness(&high_pixels)
    );
    assert_eq!(
        saved(&events, "save_flag"),
        high_pixels,
        "flagged passes unchanged"
    );
    let flagged = notices(&events);
    assert_eq!(flagged.len(), 1, "only the flag action tells: {flagged:?}");
    assert_eq!(flagged[0].0, "filter_flag");
    assert!(
        flagged[0].1.contains("flagged") && flagged[0].1.contains(&format!("{high_score:.3}")),
        "{flagged:?}"
    );

    // Per image in a batch: ImageBatch [high, low] through each action; only the high one is
    // acted on, the low one passes untouched, and flag tells about the batch once.
    let mut text = format!(
        "weft: 1\nnodes:\n  high:\n    type: LoadImage\n    path: {}\n  low:\n    type: LoadImage\n    path: {}\n  batch:\n    type: ImageBatch\n    image1: $high.image\n    image2: $low.image\n  safety:\n    type: LoadSafetyModel\n",
        serde_json::to_string(high_png.to_str().unwrap()).unwrap(),
        serde_json::to_string(low_png.to_str().unwrap()).unwrap()
    );
    for action in ["black", "blur", "flag"] {
        text.push_str(&format!(
            "  filter_{action}:\n    type: SafetyFilter\n    safety_model: $safety.safety_model\n    image: $batch.image\n    threshold: 0.5\n    action: {action}\n  save_{action}:\n    type: SaveImage\n    image: $filter_{action}.image\n    prefix: batch_{action}\n"
        ));
    }
    let batch_yaml = dir.path().join("batch.yaml");
    std::fs::write(&batch_yaml, text).unwrap();
    let (out, events) = weft_json(&batch_yaml, dir.path());
    succeeded(&out);
    let saved_batch = |node: &str| -> Vec<Vec<u8>> {
        events
            .iter()
            .filter(|e| e["event"] == "output" && e["node"] == node)
            .map(|e| {
                image::open(e["path"].as_str().unwrap())
                    .unwrap()
                    .to_rgb8()
                    .into_raw()
            })
            .collect()
    };
    let black = saved_batch("save_black");
    assert_eq!(black.len(), 2, "{events:?}");
    assert!(black[0].iter().all(|&p| p == 0), "high blacked out");
    assert_eq!(black[1], low_pixels, "low untouched beside it");
    let blur = saved_batch("save_blur");
    assert!(
        roughness(&blur[0]) < roughness(&high_pixels) / 2.0,
        "high blurred"
    );
    assert_eq!(blur[1], low_pixels, "low untouched beside it");
    let flag = saved_batch("save_flag");
    assert_eq!((&flag[0], &flag[1]), (&high_pixels, &low_pixels));
    let told = notices(&events);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].1.contains("image 1 of 2") && told[0].1.contains("flagged"),
        "{told:?}"
    );

    // reject: the run fails, naming the node and the score; nothing is saved.
    let (out, events) = run("reject", &["reject"], &high_png);
    assert_eq!(out.status.code(), Some(1));
    let error = events.iter().find(|e| e["event"] == "error").unwrap();
    assert_eq!(error["node"], "filter_reject");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("P(unsafe) = {high_score:.3}")) && message.contains("rejected"),
        "{message}"
    );
    assert!(!started(&events).contains(&"save_reject"));
    // What a person sees without --json: the node and the score, located in the file.
    let human = Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(repo_root())
        .args(["run", dir.path().join("reject.yaml").to_str().unwrap()])
        .args(["--device", "cpu", "--output"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(human.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert!(
        stderr.contains("error: node 'filter_reject'")
            && stderr.contains(&format!("P(unsafe) = {high_score:.3}")),
        "{stderr}"
    );
}
