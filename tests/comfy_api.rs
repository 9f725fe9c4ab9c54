//! ComfyUI's API on `weft serve` through `app(...)` with tower's `oneshot`: each route in
//! ComfyUI's shapes, good and bad cases (unknown class types and weft's diagnostics as
//! `node_errors` keyed by ComfyUI node id, traversal in /view, the guard on these routes).
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use weft::server::Config;

mod common;
use common::{repo, small_png, Fixture, HOST};

/// ComfyUI's default txt2img at 64x64, 4 steps, on tiny-shapes through `--comfy-model`.
fn txt2img() -> Value {
    let mut p: Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/comfy/01_txt2img_default.json")).unwrap(),
    )
    .unwrap();
    p["3"]["inputs"]["steps"] = json!(4);
    p
}

impl Fixture {
    fn new() -> Self {
        Self::with(|_| {})
    }

    /// With tiny-shapes as ComfyUI's default checkpoint. JSON bodies go untyped, like
    /// ComfyUI's example scripts (urllib).
    fn with(adjust: impl FnOnce(&mut Config)) -> Self {
        Fixture::start(None, |config| {
            config.comfy_models = vec![(
                "v1-5-pruned-emaonly.safetensors".into(),
                "tiny-shapes".into(),
            )];
            adjust(config);
        })
    }

    async fn history(&self, prompt_id: &str) -> Value {
        for _ in 0..2400 {
            let (status, h) = self
                .call(Method::GET, &format!("/history/{prompt_id}"), None)
                .await;
            assert_eq!(status, StatusCode::OK);
            if h.get(prompt_id).is_some() {
                return h[prompt_id].clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("prompt {prompt_id} did not finish");
    }

    /// The bytes `/view` serves for a `/history` image entry (asserting it is served).
    async fn view(&self, image: &Value) -> Vec<u8> {
        let uri = format!(
            "/view?filename={}&subfolder={}&type=output",
            image["filename"].as_str().unwrap(),
            image["subfolder"].as_str().unwrap()
        );
        let (status, png, _) = self
            .send(
                Request::get(uri.as_str())
                    .header(header::HOST, HOST)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        png
    }
}

fn multipart(fields: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "weftboundary42";
    let mut body = Vec::new();
    for (name, file, bytes) in fields {
        body.extend(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
            ),
            None => body.extend(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend(*bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn unknown_class_types_are_refused_with_node_errors_by_comfyui_id() {
    let f = Fixture::new();
    let mut p = txt2img();
    p["10"] = json!({"class_type": "HypernetworkLoader", "inputs": {}, "_meta": {"title": "Load Hypernetwork"}});
    let (status, body) = f
        .post("/prompt", json!({"prompt": p, "client_id": "c"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["type"], "missing_node_type", "{body}");
    assert_eq!(
        body["error"]["extra_info"]["class_type"],
        "HypernetworkLoader"
    );
    assert_eq!(
        body["node_errors"]["10"]["class_type"], "HypernetworkLoader",
        "{body}"
    );
    assert_eq!(
        body["node_errors"]["10"]["errors"][0]["type"],
        "missing_node_type"
    );
    // Nothing was queued.
    let (_, q) = f.call(Method::GET, "/queue", None).await;
    assert_eq!(q, json!({"queue_running": [], "queue_pending": []}));
}

#[tokio::test]
async fn weft_diagnostics_come_back_as_node_errors_on_the_comfyui_node_and_input() {
    let f = Fixture::new();
    // A sampler weft lacks (a custom node pack's; an import error) ...
    let mut p = txt2img();
    p["3"]["inputs"]["sampler_name"] = json!("euler_smea_dy");
    let (status, body) = f.post("/prompt", json!({"prompt": p})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["type"], "prompt_outputs_failed_validation");
    let e = &body["node_errors"]["3"];
    assert_eq!(e["class_type"], "KSampler", "{body}");
    assert_eq!(e["dependent_outputs"], json!(["9"]));
    assert_eq!(e["errors"][0]["type"], "value_not_in_list");
    assert_eq!(e["errors"][0]["extra_info"]["input_name"], "sampler_name");
    // ... a value out of weft's range (a validator diagnostic on the weft node ksampler_3) ...
    let mut p = txt2img();
    p["3"]["inputs"]["steps"] = json!(0);
    let (status, body) = f.post("/prompt", json!({"prompt": p})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let e = &body["node_errors"]["3"];
    assert_eq!(
        e["errors"][0]["extra_info"]["input_name"], "steps",
        "{body}"
    );
    // ... a width weft refuses, on the latent node 5 ...
    let mut p = txt2img();
    p["5"]["inputs"]["width"] = json!(65);
    let (_, body) = f.post("/prompt", json!({"prompt": p})).await;
    assert_eq!(
        body["node_errors"]["5"]["errors"][0]["extra_info"]["input_name"], "width",
        "{body}"
    );
    // ... a checkpoint the models folder lacks ...
    let mut p = txt2img();
    p["4"]["inputs"]["ckpt_name"] = json!("missing.safetensors");
    let (_, body) = f.post("/prompt", json!({"prompt": p})).await;
    let e = &body["node_errors"]["4"];
    assert_eq!(e["class_type"], "CheckpointLoaderSimple", "{body}");
    let errors = e["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|x| x["type"] == "value_not_in_list"
                && x["extra_info"]["input_name"] == "ckpt_name"),
        "{body}"
    );
    // ... a missing link input.
    let mut p = txt2img();
    p["8"]["inputs"].as_object_mut().unwrap().remove("vae");
    let (_, body) = f.post("/prompt", json!({"prompt": p})).await;
    assert_eq!(
        body["node_errors"]["8"]["errors"][0]["type"], "required_input_missing",
        "{body}"
    );
}

/// Each ComfyUI error type weft gives, from the code of the problem (never its words): one
/// prompt per type, the error on the ComfyUI node and input it is about.
#[tokio::test]
async fn comfyui_error_types_come_from_the_codes_of_weft_diagnostics() {
    let f = Fixture::new();
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, &str, &str, &str); 8] = [
        (
            "steps 0",
            |p| p["3"]["inputs"]["steps"] = json!(0),
            "3",
            "steps",
            "value_smaller_than_min",
        ),
        (
            "steps 20000",
            |p| p["3"]["inputs"]["steps"] = json!(20_000),
            "3",
            "steps",
            "value_bigger_than_max",
        ),
        (
            "cfg as text",
            |p| p["3"]["inputs"]["cfg"] = json!("high"),
            "3",
            "cfg",
            "invalid_input_type",
        ),
        (
            "a scheduler weft lacks",
            |p| p["3"]["inputs"]["scheduler"] = json!("no-such-schedule"),
            "3",
            "scheduler",
            "value_not_in_list",
        ),
        (
            "a checkpoint not there",
            |p| p["4"]["inputs"]["ckpt_name"] = json!("absent.safetensors"),
            "4",
            "ckpt_name",
            "value_not_in_list",
        ),
        (
            "a latent into positive",
            |p| p["3"]["inputs"]["positive"] = json!(["5", 0]),
            "3",
            "positive",
            "return_type_mismatch",
        ),
        (
            "no vae",
            |p| {
                p["8"]["inputs"].as_object_mut().unwrap().remove("vae");
            },
            "8",
            "vae",
            "required_input_missing",
        ),
        (
            "a width off the grid",
            |p| p["5"]["inputs"]["width"] = json!(65),
            "5",
            "width",
            "custom_validation_failed",
        ),
    ];
    for (what, edit, node, input, kind) in cases {
        let mut p = txt2img();
        edit(&mut p);
        let (status, body) = f.post("/prompt", json!({"prompt": p})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        let errors = body["node_errors"][node]["errors"].as_array();
        assert!(
            errors.is_some_and(|e| e
                .iter()
                .any(|x| x["type"] == kind && x["extra_info"]["input_name"] == input)),
            "{what}: expected {kind} on node {node}, input {input}: {body}"
        );
    }
}

#[tokio::test]
async fn malformed_bodies_no_prompt_and_no_outputs() {
    let f = Fixture::new();
    let request = Request::post("/prompt")
        .header(header::HOST, HOST)
        .body(Body::from("{not json"))
        .unwrap();
    let (status, body, _) = f.send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["type"], "invalid_prompt");
    let (status, body) = f.post("/prompt", json!({"client_id": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["type"], "no_prompt");
    let mut p = txt2img();
    p.as_object_mut().unwrap().remove("9");
    let (status, body) = f.post("/prompt", json!({"prompt": p})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["type"], "prompt_no_outputs");
}

#[tokio::test]
async fn object_info_prompt_queue_interrupt_and_system_stats() {
    let f = Fixture::new();
    let (status, info) = f.call(Method::GET, "/object_info", None).await;
    assert_eq!(status, StatusCode::OK);
    // ComfyUI's entry, tooltip included.
    assert_eq!(
        info["KSampler"]["input"]["required"]["model"],
        json!(["MODEL", {"tooltip": "The model used for denoising the input latent."}])
    );
    assert!(
        info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
            .as_array()
            .unwrap()
            .contains(&json!("v1-5-pruned-emaonly.safetensors"))
    );
    let (_, one) = f.call(Method::GET, "/object_info/SaveImage", None).await;
    assert_eq!(one.as_object().unwrap().len(), 1);
    assert_eq!(one["SaveImage"]["output_node"], true);
    let (_, none) = f
        .call(Method::GET, "/object_info/HypernetworkLoader", None)
        .await;
    assert_eq!(none, json!({}));
    let (_, same) = f
        .call(Method::GET, "/api/object_info/SaveImage", None)
        .await;
    assert_eq!(same, one, "every route is also under /api as in ComfyUI");

    let (_, p) = f.call(Method::GET, "/prompt", None).await;
    assert_eq!(p, json!({"exec_info": {"queue_remaining": 0}}));
    let (_, q) = f.call(Method::GET, "/queue", None).await;
    assert_eq!(q, json!({"queue_running": [], "queue_pending": []}));
    let (status, _) = f.call(Method::POST, "/interrupt", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = f.post("/queue", json!({"clear": true})).await;
    assert_eq!(status, StatusCode::OK);

    let (status, s) = f.call(Method::GET, "/system_stats", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(s["system"]["ram_total"].as_u64().unwrap() > 0, "{s}");
    assert!(s["system"]["comfyui_version"]
        .as_str()
        .unwrap()
        .starts_with("weft "));
    assert_eq!(s["devices"][0]["type"], "cpu");
    let (_, h) = f.call(Method::GET, "/history", None).await;
    assert_eq!(h, json!({}));
    let (_, h) = f.call(Method::GET, "/history/nope", None).await;
    assert_eq!(h, json!({}));
}

#[tokio::test]
async fn upload_image_keeps_the_name_and_view_serves_it_but_no_traversal() {
    let f = Fixture::new();
    let png = small_png();
    let (ty, body) = multipart(&[
        ("image", Some("cat.png"), &png),
        ("overwrite", None, b"false"),
    ]);
    let request = |ty: &str, body: Vec<u8>| {
        Request::post("/upload/image")
            .header(header::HOST, HOST)
            .header(header::CONTENT_TYPE, ty)
            .body(Body::from(body))
            .unwrap()
    };
    let (status, reply, _) = f.send(request(&ty, body.clone())).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(
        reply,
        json!({"name": "cat.png", "subfolder": "", "type": "input"})
    );
    // The same bytes again: the same file. Other bytes under the name: a new name.
    let (_, again, _) = f.send(request(&ty, body)).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&again).unwrap()["name"],
        "cat.png"
    );
    let mut other = Vec::new();
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
        .write_to(
            &mut std::io::Cursor::new(&mut other),
            image::ImageFormat::Png,
        )
        .unwrap();
    let (ty2, body2) = multipart(&[("image", Some("cat.png"), &other)]);
    let (_, renamed, _) = f.send(request(&ty2, body2)).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&renamed).unwrap()["name"],
        "cat_1.png"
    );
    // Not an image; a path as the file name.
    let (ty3, body3) = multipart(&[("image", Some("x.png"), b"hello")]);
    let (status, _, _) = f.send(request(&ty3, body3)).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (ty4, body4) = multipart(&[("image", Some("../x.png"), &png)]);
    let (status, _, _) = f.send(request(&ty4, body4)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let get = |uri: &str| {
        Request::get(uri)
            .header(header::HOST, HOST)
            .body(Body::empty())
            .unwrap()
    };
    let (status, bytes, _) = f
        .send(get("/view?filename=cat.png&subfolder=&type=input"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, png);
    let (status, bytes, _) = f.send(get("/view?filename=cat.png%20%5Binput%5D")).await;
    assert_eq!(
        (status, bytes.len()),
        (StatusCode::OK, png.len()),
        "annotated name"
    );
    std::fs::write(f.dir.path().join("secret.png"), &png).unwrap();
    for uri in [
        "/view?filename=..%2Fsecret.png&type=input",
        "/view?filename=secret.png&subfolder=..&type=input",
        "/view?filename=secret.png&subfolder=..%2F..&type=output",
        "/view?filename=%2Fetc%2Fpasswd&type=output",
        "/view?filename=passwd&subfolder=%2Fetc&type=output",
        "/view?filename=runs.sqlite&subfolder=..&type=output",
        "/view?filename=secret.png&type=models",
    ] {
        let (status, _, _) = f.send(get(uri)).await;
        assert!(
            matches!(
                status,
                StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
            ),
            "{uri}: {status}"
        );
        assert_ne!(status, StatusCode::OK, "{uri}");
    }
    // A link planted in the outputs pointing outside is not followed out.
    std::os::unix::fs::symlink(
        f.dir.path().join("secret.png"),
        f.state.roots.outputs.join("link.png"),
    )
    .unwrap();
    let (status, _, _) = f.send(get("/view?filename=link.png&type=output")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = f.send(get("/view?filename=nothing.png")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_servers_guard_applies_to_the_comfyui_routes() {
    let f = Fixture::with(|c| c.token = Some("0123456789abcdef0123".into()));
    let (status, _) = f.call(Method::GET, "/object_info", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = f.post("/prompt", json!({"prompt": txt2img()})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = f
        .call(Method::GET, "/object_info?token=0123456789abcdef0123", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let f = Fixture::new();
    let request = Request::post("/prompt")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::from(json!({"prompt": txt2img()}).to_string()))
        .unwrap();
    let (status, _, _) = f.send(request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let request = Request::get("/history")
        .header(header::HOST, "evil.example:8188")
        .body(Body::empty())
        .unwrap();
    let (status, _, _) = f.send(request).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
async fn a_prompt_runs_and_its_history_and_images_come_back_in_comfyuis_shape() {
    let f = Fixture::new();
    let (status, reply) = f
        .post(
            "/prompt",
            json!({"prompt": txt2img(), "client_id": "abc", "prompt_id": "my-prompt-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["prompt_id"], "my-prompt-1");
    assert!(reply["number"].is_number());
    assert_eq!(reply["node_errors"], json!({}));
    let h = f.history("my-prompt-1").await;
    assert_eq!(h["status"]["status_str"], "success", "{h}");
    assert_eq!(h["status"]["completed"], true);
    let messages: Vec<&str> = h["status"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        ["execution_start", "execution_cached", "execution_success"]
    );
    assert_eq!(h["prompt"][1], "my-prompt-1");
    assert_eq!(h["prompt"][3]["client_id"], "abc");
    assert_eq!(h["prompt"][4], json!(["9"]));
    let image = &h["outputs"]["9"]["images"][0];
    assert_eq!(image["type"], "output", "{h}");
    let png = f.view(image).await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    // The same prompt id again is refused; the full history lists it.
    let (status, _) = f
        .post(
            "/prompt",
            json!({"prompt": txt2img(), "prompt_id": "my-prompt-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, all) = f.call(Method::GET, "/history?max_items=5", None).await;
    assert!(all.get("my-prompt-1").is_some());
    // A rerun is served from weft's cache: every node but the output listed as cached.
    let (_, again) = f.post("/prompt", json!({"prompt": txt2img()})).await;
    let h2 = f.history(again["prompt_id"].as_str().unwrap()).await;
    let cached = &h2["status"]["messages"][1][1]["nodes"];
    for id in ["3", "4", "5", "6", "7", "8"] {
        assert!(
            cached.as_array().unwrap().contains(&json!(id)),
            "{id}: {h2}"
        );
    }
}

/// ComfyUI's seeds are u64: seeds at and above 2^63 run as themselves (none is clamped to
/// 2^63 - 1 and served from its cache) with ComfyUI's noise, and every run lists its images in
/// /history, a cached rerun too. torch's CPU generator (ComfyUI's noise) seeds its Mersenne
/// Twister from the seed's low 32 bits, so seeds equal there draw the same noise in both.
#[tokio::test]
async fn seeds_above_i64_run_as_themselves_with_comfyuis_noise_and_list_their_images() {
    let f = Fixture::new();
    let mut images = Vec::new();
    let seeds = [
        12345,
        (1u64 << 63) + 12345,
        i64::MAX as u64,
        u64::MAX,
        u64::MAX,
    ];
    for seed in seeds {
        let mut p = txt2img();
        p["3"]["inputs"]["seed"] = json!(seed);
        let (status, reply) = f.post("/prompt", json!({"prompt": p})).await;
        assert_eq!(status, StatusCode::OK, "seed {seed}: {reply}");
        let h = f.history(reply["prompt_id"].as_str().unwrap()).await;
        assert_eq!(h["status"]["status_str"], "success", "seed {seed}: {h}");
        let cached = h["status"]["messages"][1][1]["nodes"].clone();
        let sampler_cached = cached.as_array().unwrap().contains(&json!("3"));
        // Only the repeated last seed is a cache hit.
        assert_eq!(sampler_cached, images.len() == 4, "seed {seed}: {h}");
        let image = &h["outputs"]["9"]["images"][0];
        assert_eq!(image["type"], "output", "seed {seed}: outputs missing: {h}");
        let png = f.view(image).await;
        let pixels = image::load_from_memory(&png).unwrap().to_rgb8().into_raw();
        images.push(pixels);
    }
    // As torch.manual_seed(seed); torch.randn(...) draws for these seeds (ComfyUI's noise).
    assert!(
        images[0] == images[1],
        "2^63 + 12345 must draw 12345's noise"
    );
    assert!(
        images[2] == images[3],
        "2^64 - 1 must draw 2^63 - 1's noise"
    );
    assert!(
        images[0] != images[2],
        "12345 and 2^63 - 1 drew the same noise"
    );
    assert!(
        images[3] == images[4],
        "the cached rerun names another image"
    );
}
