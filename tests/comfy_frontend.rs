//! The routes only ComfyUI's frontend calls, beyond the API scripts use: weft's own frontend
//! extension (listed by `/extensions`, served compiled in), the workflow-file messages it
//! listens for on ComfyUI's socket (a real `weft serve`, a YAML edited on disk),
//! `/upload/mask`, `/view_metadata` and `/free` (which unloads the models).
mod common;
mod support;

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use common::{small_png, Fixture, HOST};
use support::{start_comfy_server, ServerProcess};

/// weft's extension, as `/extensions` lists it (the frontend prefixes its API base).
const EXTENSION: &str = "/extensions/weft/follow_yaml.js";

fn fixture() -> Fixture {
    Fixture::start(None, |_| {})
}

fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "weftcomfyfrontendboundary";
    let mut body = Vec::new();
    for (name, file, value) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(
    fx: &Fixture,
    uri: &str,
    fields: &[(&str, Option<&str>, &[u8])],
) -> (StatusCode, Value) {
    let (content_type, body) = multipart(fields);
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap();
    let (status, bytes, _) = fx.send(request).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn weft_extension_is_listed_and_served_to_comfyuis_frontend() {
    let fx = fixture();
    for prefix in ["/comfy", "/comfy/api"] {
        let (status, list) = fx
            .call(Method::GET, &format!("{prefix}/extensions"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let list: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(list.contains(&EXTENSION), "{prefix}/extensions: {list:?}");
    }
    let request = Request::builder()
        .uri(format!("/comfy{EXTENSION}"))
        .header(header::HOST, HOST)
        .body(Body::empty())
        .unwrap();
    let (status, bytes, headers) = fx.send(request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"),
        "{headers:?}"
    );
    let text = String::from_utf8(bytes).unwrap();
    // What the frontend needs of it: an extension, listening for weft's message type.
    assert!(text.contains("app.registerExtension("), "{text}");
    assert!(text.contains("'weft.workflow_file'"), "{text}");
}

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// The next `weft.workflow_file` message for `name`, skipping others (`status` and the like);
/// panics after a generous deadline with what was seen.
fn next_workflow_message(ws: &mut Socket, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                if message["type"] == "weft.workflow_file" && message["data"]["name"] == name {
                    return message["data"].clone();
                }
                seen.push(message);
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("socket closed ({e}); seen {seen:?}"),
        }
    }
    panic!("no weft.workflow_file message for {name} in 120 s; seen {seen:?}");
}

const WORKFLOW: &str =
    "weft: 1\nnodes:\n  seed:\n    type: Int\n    value: 4\n  show:\n    type: ShowInt\n    value: $seed.value\n";

#[test]
fn yaml_edits_on_disk_are_announced_on_comfyuis_socket() {
    let dir = tempfile::tempdir().unwrap();
    let server: ServerProcess = start_comfy_server(
        Path::new(env!("CARGO_BIN_EXE_weft")),
        dir.path(),
        "*=tiny-shapes",
    );
    let workflows = dir.path().join("workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    let (mut ws, _) =
        tungstenite::connect(format!("ws://127.0.0.1:{}/comfy/ws", server.port)).unwrap();
    if let MaybeTlsStream::Plain(stream) = ws.get_mut() {
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
    }
    let first: Value = match ws.read().unwrap() {
        Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("a status message first, got {other:?}"),
    };
    assert_eq!(first["type"], "status", "{first}");

    let file = workflows.join("followed.yaml");
    std::fs::write(&file, WORKFLOW).unwrap();
    let changed = next_workflow_message(&mut ws, "followed");
    assert_eq!(changed["event"], "workflow_changed", "{changed}");
    assert_eq!(changed["path"], "workflows/followed.json", "{changed}");
    assert!(changed["revision"].is_string(), "{changed}");

    std::fs::write(&file, WORKFLOW.replace("type: Int", "type: NoSuchNode")).unwrap();
    let invalid = next_workflow_message(&mut ws, "followed");
    assert_eq!(invalid["event"], "workflow_invalid", "{invalid}");
    let diagnostics = invalid["diagnostics"].to_string();
    assert!(diagnostics.contains("NoSuchNode"), "{invalid}");

    std::fs::remove_file(&file).unwrap();
    let deleted = next_workflow_message(&mut ws, "followed");
    assert_eq!(deleted["event"], "workflow_deleted", "{deleted}");
}

/// An input image for the mask editor's original.
fn write_input(fx: &Fixture, name: &str, png: &[u8]) {
    let inputs = &fx.state.roots.inputs;
    std::fs::create_dir_all(inputs).unwrap();
    std::fs::write(inputs.join(name), png).unwrap();
}

#[tokio::test]
async fn upload_mask_stores_the_original_with_the_masks_alpha() {
    let fx = fixture();
    write_input(&fx, "photo.png", &small_png());
    // The mask editor's mask: transparent left half, opaque right half, 4x4 (resized to 8x8).
    let mut mask = image::RgbaImage::from_pixel(4, 4, image::Rgba([0, 0, 0, 255]));
    for y in 0..4 {
        for x in 0..2 {
            mask.put_pixel(x, y, image::Rgba([0, 0, 0, 0]));
        }
    }
    let mut mask_png = Vec::new();
    mask.write_to(
        &mut std::io::Cursor::new(&mut mask_png),
        image::ImageFormat::Png,
    )
    .unwrap();
    let original = json!({"filename": "photo.png", "subfolder": "", "type": "input"}).to_string();
    let (status, reply) = upload(
        &fx,
        "/comfy/api/upload/mask",
        &[
            ("image", Some("clipspace-mask.png"), &mask_png),
            ("original_ref", None, original.as_bytes()),
            ("type", None, b"input"),
            ("subfolder", None, b"clipspace"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["name"], "clipspace-mask.png", "{reply}");
    assert_eq!(reply["subfolder"], "clipspace", "{reply}");
    assert_eq!(reply["type"], "input", "{reply}");
    let stored = fx.state.roots.inputs.join("clipspace/clipspace-mask.png");
    assert!(stored.starts_with(fx.dir.path()), "{}", stored.display());
    let stored = image::open(&stored).unwrap().to_rgba8();
    assert_eq!(stored.dimensions(), (8, 8), "the original's size");
    // The original's colour, the mask's alpha.
    let left = stored.get_pixel(0, 4);
    let right = stored.get_pixel(7, 4);
    assert_eq!(&left.0[..3], &[200, 30, 30], "{left:?}");
    assert_eq!(left.0[3], 0, "{left:?}");
    assert_eq!(right.0, [200, 30, 30, 255], "{right:?}");

    // No original, an original outside the inputs, one that is not there: refused, named.
    let (status, reply) = upload(
        &fx,
        "/comfy/api/upload/mask",
        &[("image", Some("m.png"), &mask_png)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    let (status, _) = upload(
        &fx,
        "/comfy/api/upload/mask",
        &[
            ("image", Some("m.png"), &mask_png),
            (
                "original_ref",
                None,
                json!({"filename": "../secret.png", "type": "input"})
                    .to_string()
                    .as_bytes(),
            ),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = upload(
        &fx,
        "/comfy/api/upload/mask",
        &[
            ("image", Some("m.png"), &mask_png),
            (
                "original_ref",
                None,
                json!({"filename": "gone.png", "type": "input"})
                    .to_string()
                    .as_bytes(),
            ),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A safetensors file with one tensor and `metadata` as its `__metadata__`.
fn safetensors_with(metadata: &Value) -> Vec<u8> {
    let header = json!({
        "__metadata__": metadata,
        "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
    })
    .to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&1f32.to_le_bytes());
    out
}

#[tokio::test]
async fn view_metadata_reads_a_models_safetensors_header() {
    let models = tempfile::tempdir().unwrap();
    let loras = models.path().join("loras");
    std::fs::create_dir_all(loras.join("styles")).unwrap();
    let metadata = json!({"ss_network_dim": "4", "modelspec.title": "weft test"});
    std::fs::write(
        loras.join("styles/ink.safetensors"),
        safetensors_with(&metadata),
    )
    .unwrap();
    std::fs::write(loras.join("broken.safetensors"), b"not a header").unwrap();
    let models_dir = models.path().to_path_buf();
    let fx = Fixture::start(None, move |config| config.models_dir = models_dir);

    let (status, found) = fx
        .call(
            Method::GET,
            "/comfy/api/view_metadata/loras?filename=styles/ink.safetensors",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found, metadata);
    for refused in [
        "/comfy/api/view_metadata/loras?filename=broken.safetensors",
        "/comfy/api/view_metadata/loras?filename=missing.safetensors",
        "/comfy/api/view_metadata/checkpoints?filename=styles/ink.safetensors",
        "/comfy/api/view_metadata/loras?filename=../loras/styles/ink.safetensors",
        "/comfy/api/view_metadata/loras?filename=styles/ink.ckpt",
        "/comfy/api/view_metadata/loras",
    ] {
        let (status, _) = fx.call(Method::GET, refused, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");
    }
}

/// Runs weft's workflow `doc` up to node `target` through `/api/runs` and returns the
/// finished run, waiting at most a few minutes (CI's machine is slow and shared).
async fn run_to_end(fx: &Fixture, doc: &Value, target: &str) -> Value {
    let (status, queued) = fx
        .post("/api/runs", json!({"workflow": doc, "target": target}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let id = queued["id"].as_u64().expect("a run id");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let (_, run) = fx.call(Method::GET, &format!("/api/runs/{id}"), None).await;
        if !matches!(run["status"].as_str(), Some("queued" | "running")) {
            return run;
        }
        last = run;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {id} did not finish in 300 s; last seen: {last}");
}

#[tokio::test]
async fn free_unloads_the_models_and_the_next_run_loads_them_again() {
    let fx = fixture();
    let load =
        json!({"weft": 1, "nodes": {"model": {"type": "LoadCheckpoint", "name": "tiny-shapes"}}});
    let state = |run: &Value| run["nodes"]["model"]["state"].as_str().map(str::to_string);
    let first = run_to_end(&fx, &load, "model").await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(state(&first).as_deref(), Some("ran"), "{first}");
    let kept = run_to_end(&fx, &load, "model").await;
    assert_eq!(state(&kept).as_deref(), Some("cached"), "{kept}");

    // A body asking for neither leaves the model loaded, as in ComfyUI.
    let (status, _) = fx.post("/comfy/api/free", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let still = run_to_end(&fx, &load, "model").await;
    assert_eq!(state(&still).as_deref(), Some("cached"), "{still}");

    // What the frontend's "unload models" and "free memory" buttons post: each unloads.
    for body in [
        json!({"unload_models": true, "free_memory": true}),
        json!({"unload_models": true}),
        json!({"free_memory": true}),
    ] {
        let (status, _) = fx.post("/comfy/api/free", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let reloaded = run_to_end(&fx, &load, "model").await;
        assert_eq!(reloaded["status"], "succeeded", "{body}: {reloaded}");
        assert_eq!(
            state(&reloaded).as_deref(),
            Some("ran"),
            "{body}: {reloaded}"
        );
    }
    let (status, stats) = fx.call(Method::GET, "/comfy/api/system_stats", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(stats["devices"].is_array(), "{stats}");
}
