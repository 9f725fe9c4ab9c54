//! The safety nodes through the CLI: PromptFilter stops a blocked prompt before any sampling
//! (and an unreadable blocklist before anything runs); SafetyFilter's actions black, blur,
//! reject and flag, image by image (threshold 0 makes every image count as unsafe).
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
