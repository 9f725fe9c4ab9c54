//! ComfyUI clients, unchanged, against a real `weft serve` on tiny-shapes: ComfyUI's
//! `script_examples/basic_api_example.py` (its request reimplemented: POST /prompt with only
//! `{"prompt": ...}`, no client_id, as urllib sends it) and the PyPI client
//! `comfy-api-simplified` (pinned in scripts/requirements-setup.txt) driven by
//! scripts/comfy_client_check.py. Both get a 64x64 PNG back.
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{repo, start_comfy_server, urlencode, urlopen, ServerProcess};

/// basic_api_example.py's prompt_text (ComfyUI's default workflow), with the example's two
/// edits (text, seed 5) and tiny-shapes' 64x64 size.
fn basic_example_prompt() -> Value {
    json!({
        "3": {"class_type": "KSampler", "inputs": {"cfg": 8, "denoise": 1,
            "latent_image": ["5", 0], "model": ["4", 0], "negative": ["7", 0],
            "positive": ["6", 0], "sampler_name": "euler", "scheduler": "normal",
            "seed": 5, "steps": 20}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 64, "width": 64}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "masterpiece best quality man"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "bad hands"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}}
    })
}

fn start(dir: &Path) -> ServerProcess {
    start_comfy_server(Path::new(env!("CARGO_BIN_EXE_weft")), dir, "*=tiny-shapes")
}

/// Width and height from a PNG's IHDR, after checking the signature.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&png[16..20]), be(&png[20..24]))
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn comfyuis_basic_api_example_queues_without_a_client_id_and_the_png_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let port = server.port;
    // queue_prompt: `{"prompt": prompt}` and nothing else; the example reads no reply.
    let body = json!({"prompt": basic_example_prompt()}).to_string();
    let (status, reply) = urlopen(port, "POST", "/prompt", Some(body.as_bytes()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["node_errors"], json!({}));
    let prompt_id = reply["prompt_id"].as_str().expect("prompt_id").to_string();

    // Without a client_id nothing is sent on a socket; the history has the result.
    let deadline = Instant::now() + Duration::from_secs(120);
    let entry = loop {
        let (status, history) = urlopen(port, "GET", &format!("/history/{prompt_id}"), None);
        assert_eq!(status, 200);
        let history: Value = serde_json::from_slice(&history).unwrap();
        if history[&prompt_id]["status"]["completed"] == true {
            break history[&prompt_id].clone();
        }
        assert!(Instant::now() < deadline, "not finished: {history}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    let image = &entry["outputs"]["9"]["images"][0];
    assert_eq!(image["type"], "output", "{entry}");
    let query = format!(
        "filename={}&subfolder={}&type=output",
        urlencode(image["filename"].as_str().unwrap()),
        urlencode(image["subfolder"].as_str().unwrap()),
    );
    let (status, png) = urlopen(port, "GET", &format!("/view?{query}"), None);
    assert_eq!(status, 200);
    assert_eq!(png_size(&png), (64, 64));
}

#[test]
#[ignore = "needs comfy-api-simplified and models/converted from set-up; `make test` runs it"]
fn comfy_api_simplified_from_pypi_gets_a_64x64_png_from_weft_serve() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let out = dir.path().join("client-out");
    // The project venv set-up made (WEFT_PYTHON: another interpreter with the package).
    let python: std::path::PathBuf = std::env::var_os("WEFT_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    let workflow = repo().join("tests/comfy/01_txt2img_default.json");
    for seed in ["7", "7"] {
        // The second run is served from weft's cache, and still answers with the PNG.
        let run = Command::new(&python)
            .arg(repo().join("scripts/comfy_client_check.py"))
            .arg(format!("http://127.0.0.1:{}", server.port))
            .args([workflow.as_os_str(), out.as_os_str()])
            .arg(seed)
            .output()
            .expect("python runs");
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "scripts/comfy_client_check.py failed with {} (set-up installs comfy-api-simplified \
             into .venv; WEFT_PYTHON names another interpreter that has it):\n{stdout}{}",
            python.display(),
            String::from_utf8_lossy(&run.stderr)
        );
        let summary: Value = serde_json::from_str(stdout.trim()).expect(&stdout);
        let images = summary["images"].as_object().unwrap();
        assert_eq!(images.len(), 1, "{summary}");
        let name = images.keys().next().unwrap();
        let png = std::fs::read(out.join(Path::new(name).file_name().unwrap())).unwrap();
        assert_eq!(png.len() as u64, images[name].as_u64().unwrap());
        assert_eq!(png_size(&png), (64, 64));
        assert_eq!(summary["queue"]["queue_pending"], json!([]));
    }
}
