//! Every route of `weft serve` through `app(...)` with tower's `oneshot` (no socket), good and
//! bad cases: traversal in every file-naming parameter, oversize bodies, non-images and
//! decompression bombs, malformed JSON, located diagnostics, stale writes, tokens, origins.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use weft::server::{AppState, Config};

/// workflows/chain.yaml: a -> b (adds 10) -> show, with a layout.
fn chain() -> String {
    weft_test_support::add_int_chain(&[10])
        + "layout:
  a: [0, 0]
  b: [200, 0]
"
}

mod common;
use common::{small_png, Fixture, HOST};

impl Fixture {
    fn new() -> Self {
        Self::with(|_| {})
    }

    /// With workflows/chain.yaml and a 256 KiB body limit; JSON bodies typed as JSON.
    fn with(adjust: impl FnOnce(&mut Config)) -> Self {
        Fixture::start(Some("application/json"), |config| {
            std::fs::write(config.workflows_dir.join("chain.yaml"), chain()).unwrap();
            config.body_limit = 256 << 10;
            adjust(config);
        })
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    async fn wait_run(&self, id: u64) -> Value {
        for _ in 0..400 {
            let (_, run) = self
                .call(Method::GET, &format!("/api/runs/{id}"), None)
                .await;
            if !matches!(run["status"].as_str(), Some("queued" | "running")) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("run {id} did not finish");
    }
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "body: {body}");
    assert_eq!(body["error"], code, "body: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
}

/// `assert_error` on a reply's bytes, which must be JSON.
fn assert_error_json(status: StatusCode, bytes: &[u8], want: StatusCode, code: &str) {
    let body: Value = serde_json::from_slice(bytes).unwrap();
    assert_error(status, &body, want, code);
}

/// A PNG header declaring `w` x `h` pixels with a tiny (bogus) image data chunk.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[tokio::test]
async fn node_catalogue_has_declarations_model_choices_and_an_etag() {
    let f = Fixture::new();
    let request = || Request::get("/api/nodes").header(header::HOST, HOST);
    let (status, body, headers) = f.send(request().body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_slice(&body).unwrap();
    let nodes = body["nodes"].as_array().unwrap();
    let find = |t: &str| nodes.iter().find(|n| n["type"] == t).unwrap().clone();
    let sampler = find("Sampler");
    assert_eq!(sampler["category"], "sampling");
    let input = |name: &str| {
        sampler["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()
            .clone()
    };
    let steps = input("steps");
    assert_eq!(steps["type"], "int");
    assert!(
        steps["min"].is_number() && steps["default"].is_number(),
        "{steps}"
    );
    let model = input("model");
    assert_eq!(model["link_only"], true);
    let checkpoint = find("LoadCheckpoint");
    let name = &checkpoint["inputs"][0];
    assert!(
        name["choices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "tiny-shapes"),
        "{name}"
    );
    assert_eq!(find("SaveImage")["output_node"], true);

    let etag = headers
        .get(header::ETAG)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let (status, _, _) = f
        .send(
            request()
                .header(header::IF_NONE_MATCH, &etag)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn workflows_list_get_put_create_rename_delete() {
    let f = Fixture::new();
    let (status, list) = f.call(Method::GET, "/api/workflows", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["workflows"][0]["name"], "chain");
    assert_eq!(list["workflows"][0]["valid"], true);

    let (status, got) = f.call(Method::GET, "/api/workflows/chain", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["workflow"]["nodes"]["b"]["a"], "$a.value");
    assert_eq!(got["text"], chain());
    let revision = got["revision"].as_str().unwrap().to_string();
    assert_eq!(
        revision,
        blake3::hash(chain().as_bytes()).to_hex().to_string()
    );

    let mut doc = got["workflow"].clone();
    doc["nodes"]["b"]["b"] = json!(20);
    doc["layout"]["show"] = json!([400, 0]);
    let (status, put) = f
        .put(
            "/api/workflows/chain",
            json!({"workflow": doc, "revision": revision}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    let written = std::fs::read_to_string(f.path("workflows/chain.yaml")).unwrap();
    assert!(written.contains("    b: 20\n"), "{written}");
    assert!(
        written.contains("layout:\n  a: [0, 0]\n  b: [200, 0]\n  show: [400, 0]\n"),
        "{written}"
    );
    assert_eq!(
        put["revision"],
        blake3::hash(written.as_bytes()).to_hex().to_string()
    );

    // The same edit from the old revision conflicts and names the current one.
    let (status, stale) = f
        .put(
            "/api/workflows/chain",
            json!({"workflow": doc, "revision": revision}),
        )
        .await;
    assert_error(status, &stale, StatusCode::CONFLICT, "conflict");
    assert_eq!(stale["revision"], put["revision"]);

    // An invalid but parseable workflow is saved, with its diagnostics.
    let mut broken = doc.clone();
    broken["nodes"]["b"]["type"] = json!("AddIntt");
    let (status, saved) = f
        .put(
            "/api/workflows/chain",
            json!({"workflow": broken, "revision": put["revision"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(saved["diagnostics"][0]["node"], "b");

    let (status, created) = f
        .post("/api/workflows", json!({"name": "copy", "workflow": doc}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, again) = f
        .post("/api/workflows", json!({"name": "copy", "workflow": doc}))
        .await;
    assert_error(status, &again, StatusCode::CONFLICT, "conflict");

    let (status, renamed) = f
        .post("/api/workflows/copy/rename", json!({"to": "renamed"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    let (status, _) = f.call(Method::GET, "/api/workflows/copy", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, clash) = f
        .post("/api/workflows/renamed/rename", json!({"to": "chain"}))
        .await;
    assert_error(status, &clash, StatusCode::CONFLICT, "conflict");
    let (status, _) = f.call(Method::DELETE, "/api/workflows/renamed", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!f.path("workflows/renamed.yaml").exists());
    let (status, gone) = f.call(Method::DELETE, "/api/workflows/renamed", None).await;
    assert_error(status, &gone, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_save_from_the_editor_keeps_the_files_comments() {
    let f = Fixture::new();
    let commented = "# Adds ten, then shows it. Owner: the poster team.
weft: 1
nodes:
  a:
    type: Int
    value: 1   # the start value the reviewers asked for

  # b: keep under 100, the poster counter has two digits
  b:
    type: AddInt
    a: $a.value
    b: 10
  show:
    type: ShowInt
    value: $b.sum
";
    std::fs::write(f.path("workflows/chain.yaml"), commented).unwrap();
    let (_, got) = f.call(Method::GET, "/api/workflows/chain", None).await;
    let mut doc = got["workflow"].clone();
    doc["nodes"]["b"]["b"] = json!(20);
    doc["nodes"]["show"]["type"] = json!("ShowIntt");
    let (status, put) = f
        .put(
            "/api/workflows/chain",
            json!({"workflow": doc, "revision": got["revision"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    let written = std::fs::read_to_string(f.path("workflows/chain.yaml")).unwrap();
    assert!(
        written.contains("# Adds ten, then shows it. Owner: the poster team.\nweft: 1\n"),
        "{written}"
    );
    assert!(
        written.contains("    value: 1  # the start value the reviewers asked for\n"),
        "{written}"
    );
    assert!(
        written.contains(
            "\n\n  # b: keep under 100, the poster counter has two digits\n  b:\n    type: AddInt\n"
        ),
        "{written}"
    );
    assert!(written.contains("    b: 20\n"), "{written}");
    assert_eq!(
        put["revision"],
        blake3::hash(written.as_bytes()).to_hex().to_string()
    );
    // Diagnostics point at the written file's lines, comments included.
    let type_line = written
        .lines()
        .position(|l| l.contains("ShowIntt"))
        .unwrap()
        + 1;
    assert_eq!(put["diagnostics"][0]["node"], "show", "{put}");
    assert_eq!(put["diagnostics"][0]["pos"]["line"], type_line, "{put}");
}

#[tokio::test]
async fn unknown_node_type_comes_back_located_from_validate_and_runs() {
    let f = Fixture::new();
    let doc = json!({"weft": 1, "nodes": {"a": {"type": "Intt", "value": 1}, "show": {"type": "ShowInt", "value": "$a.value"}}});
    let (status, v) = f.post("/api/validate", json!({"workflow": doc})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["valid"], false);
    let d = &v["diagnostics"][0];
    assert_eq!(d["node"], "a");
    assert!(
        d["pos"]["line"].as_u64().unwrap() > 1 && d["pos"]["col"].as_u64().unwrap() > 0,
        "{d}"
    );
    assert!(d["hint"].as_str().unwrap_or("").contains("Int"), "{d}");

    let (status, run) = f.post("/api/runs", json!({"workflow": doc})).await;
    assert_error(status, &run, StatusCode::BAD_REQUEST, "invalid_workflow");
    assert_eq!(run["diagnostics"][0]["node"], "a");
    let (_, runs) = f.call(Method::GET, "/api/runs", None).await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        0,
        "nothing was queued"
    );
}

#[tokio::test]
async fn malformed_json_and_wrong_shapes_are_bad_requests() {
    let f = Fixture::new();
    for uri in ["/api/runs", "/api/validate", "/api/workflows"] {
        let request = Request::post(uri)
            .header(header::HOST, HOST)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{\"workflow\": "))
            .unwrap();
        let (status, body, _) = f.send(request).await;
        assert_error_json(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    }
    let (status, body) = f.post("/api/validate", json!({"workflow": 3})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["valid"], false);
    let (status, body) = f.call(Method::GET, "/api/runs/abc", None).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = f.call(Method::GET, "/api/nope", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn oversize_bodies_are_refused() {
    let f = Fixture::new();
    let big = json!({"workflow": {"weft": 1, "nodes": {}}, "pad": "x".repeat(300 << 10)});
    let (status, body) = f.post("/api/validate", big).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let request = Request::post("/api/uploads")
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "image/png")
        .body(Body::from(vec![0u8; 2 << 20]))
        .unwrap();
    let (status, body, _) = f.send(request).await;
    assert_error_json(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
}

#[tokio::test]
async fn runs_queue_execute_list_and_refuse_deleting_finished_ones() {
    let f = Fixture::new();
    let (status, queued) = f
        .post(
            "/api/runs",
            json!({"workflow": "chain", "set": {"a.value": 5}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let id = queued["id"].as_u64().unwrap();
    let run = f.wait_run(id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["workflow_name"], "chain");
    assert_eq!(run["nodes"]["b"]["state"], "ran");
    assert!(run["nodes"]["b"]["micros"].is_number());
    assert!(run["queued_at"].as_i64().unwrap() <= run["finished_at"].as_i64().unwrap());
    // The detail carries the document as it ran (the override applied, the layout kept), for
    // the editor to open a past run; a listing does not.
    assert_eq!(run["workflow"]["nodes"]["a"]["value"], 5, "{run}");
    assert_eq!(run["workflow"]["layout"]["b"], json!([200.0, 0.0]), "{run}");

    // The same again is all cached on the shared worker.
    let (_, again) = f
        .post(
            "/api/runs",
            json!({"workflow": "chain", "set": {"a.value": 5}}),
        )
        .await;
    let run2 = f.wait_run(again["id"].as_u64().unwrap()).await;
    assert_eq!(run2["nodes"]["show"]["state"], "cached", "{run2}");

    let (_, list) = f.call(Method::GET, "/api/runs?limit=1", None).await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 1);
    assert_eq!(list["runs"][0]["id"], run2["id"]);
    assert!(list["runs"][0].get("workflow").is_none(), "{list}");
    let (_, page) = f
        .call(
            Method::GET,
            &format!("/api/runs?before={}", run2["id"]),
            None,
        )
        .await;
    assert_eq!(page["runs"][0]["id"], id);

    let (status, body) = f
        .call(Method::DELETE, &format!("/api/runs/{id}"), None)
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, body) = f
        .call(Method::POST, &format!("/api/runs/{id}/cancel"), None)
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, body) = f.call(Method::GET, "/api/runs/999", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = f
        .post(
            "/api/runs",
            json!({"workflow": "chain", "set": {"zz.value": 1}}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_workflow");
}

/// Starts a long run on the committed tiny model, which keeps the scheduler busy while runs
/// queued behind it wait; returns its id once it runs.
async fn start_long_run(f: &Fixture) -> u64 {
    std::fs::copy(
        weft_test_support::repo_root().join("workflows/txt2img.yaml"),
        f.path("workflows/txt2img.yaml"),
    )
    .unwrap();
    let (status, long) = f
        .post(
            "/api/runs",
            json!({"workflow": "txt2img", "set": {"sample.steps": 5000}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{long}");
    let long = long["id"].as_u64().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (_, run) = f
            .call(Method::GET, &format!("/api/runs/{long}"), None)
            .await;
        if run["status"] == "running" {
            return long;
        }
        assert!(
            run["status"] == "queued" && std::time::Instant::now() < deadline,
            "the long run did not start: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_sweep_queued_at_the_front_goes_ahead_of_the_waiting_runs_in_cell_order() {
    let f = Fixture::new();
    let long = start_long_run(&f).await;
    let mut waiting = Vec::new();
    for value in [1, 2, 3] {
        let (status, queued) = f
            .post(
                "/api/runs",
                json!({"workflow": "chain", "set": {"a.value": value}}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
        waiting.push(queued["id"].as_u64().unwrap());
    }
    let sweep = |values: Vec<i64>, front: bool| {
        let server = &f;
        async move {
            let (status, queued) = server
                .post(
                    "/api/runs",
                    json!({"workflow": "chain", "sweep": {"axes": {"a.value": values}}, "front": front}),
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
            serde_json::from_value::<Vec<u64>>(queued["runs"].clone()).unwrap()
        }
    };
    // More cells than runs waiting (the waiting runs move), then fewer (the cells move).
    let first = sweep(vec![10, 20, 30, 40], true).await;
    let queue = |f: &Fixture| f.state.store.queued(100).unwrap().0;
    assert_eq!(queue(&f), [&first[..], &waiting[..]].concat());
    let second = sweep(vec![50, 60], true).await;
    assert_eq!(queue(&f), [&second[..], &first[..], &waiting[..]].concat());
    // Without `front` a sweep goes to the back, as before.
    let last = sweep(vec![70], false).await;
    assert_eq!(
        queue(&f),
        [&second[..], &first[..], &waiting[..], &last[..]].concat()
    );
    for id in queue(&f).into_iter().chain([long]) {
        let (status, cancelled) = f
            .call(Method::POST, &format!("/api/runs/{id}/cancel"), None)
            .await;
        assert!(status.is_success(), "{status}: {cancelled}");
    }
}

#[tokio::test]
async fn a_queued_run_moves_in_the_queue_and_a_front_run_is_taken_first() {
    let f = Fixture::new();
    let long = start_long_run(&f).await;
    let mut waiting = Vec::new();
    for value in [1, 2, 3] {
        let (status, queued) = f
            .post(
                "/api/runs",
                json!({"workflow": "chain", "set": {"a.value": value}}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
        waiting.push(queued["id"].as_u64().unwrap());
    }
    let [a, b, c] = waiting[..] else {
        unreachable!()
    };
    let server = &f;
    let move_to = move |id: u64, body: Value| async move {
        server.post(&format!("/api/runs/{id}/move"), body).await
    };
    let (status, moved) = move_to(c, json!({"to": "front"})).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["queued"], json!([c, a, b]));
    let (status, moved) = move_to(c, json!({"after": b})).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["queued"], json!([a, b, c]));
    let (_, moved) = move_to(a, json!({"before": c})).await;
    assert_eq!(moved["queued"], json!([b, a, c]));
    let (_, moved) = move_to(b, json!({"to": "back"})).await;
    assert_eq!(moved["queued"], json!([a, c, b]));

    // Refusals say what is wrong and move nothing.
    for (body, why) in [
        (json!({"to": "top"}), "is not a place"),
        (json!({"before": a, "to": "front"}), "one place at a time"),
        (json!({}), "one place at a time"),
        (json!({"before": c}), "next to itself"),
    ] {
        let (status, error) = move_to(c, body.clone()).await;
        assert_error(status, &error, StatusCode::BAD_REQUEST, "bad_request");
        assert!(
            error["detail"].as_str().unwrap().contains(why),
            "{body}: {error}"
        );
    }
    let (status, error) = move_to(999, json!({"to": "front"})).await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "not_found");
    let (status, error) = move_to(a, json!({"before": 999})).await;
    assert_error(status, &error, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(f.state.store.queued(10).unwrap().0, vec![a, c, b]);

    // A run queued to the front is taken before those waiting, once the long run is cancelled.
    let (status, queued) = f
        .post("/api/runs", json!({"workflow": "chain", "front": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let front = queued["id"].as_u64().unwrap();
    assert_eq!(f.state.store.queued(10).unwrap().0, vec![front, a, c, b]);
    let (status, cancelled) = f
        .call(Method::POST, &format!("/api/runs/{long}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{cancelled}");
    let first = f.wait_run(front).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let mut started = Vec::new();
    for id in [a, c, b] {
        let run = f.wait_run(id).await;
        started.push(run["started_at"].as_i64().unwrap());
        assert!(
            run["started_at"].as_i64() >= first["finished_at"].as_i64(),
            "run {id} started before the front run finished: {run} / {first}"
        );
    }
    assert!(started.is_sorted(), "taken in the moved order: {started:?}");
    // A finished run has no place in the queue.
    let (status, error) = move_to(a, json!({"to": "back"})).await;
    assert_error(status, &error, StatusCode::CONFLICT, "conflict");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("only queued runs"),
        "{error}"
    );
}

#[tokio::test]
async fn a_run_may_not_read_files_outside_the_servers_folders() {
    let f = Fixture::new();
    let outside = f.path("outside.png");
    std::fs::write(&outside, small_png()).unwrap();
    std::os::unix::fs::symlink(&outside, f.path("workflows/inputs/link.png")).unwrap();
    let inputs = f.state.inputs_ref.clone();
    for path in [
        outside.to_string_lossy().into_owned(),
        "/etc/passwd".to_string(),
        inputs
            .join("../../outside.png")
            .to_string_lossy()
            .into_owned(),
        inputs.join("link.png").to_string_lossy().into_owned(),
    ] {
        let doc = json!({"weft": 1, "nodes": {
            "load": {"type": "LoadImage", "path": path},
            "save": {"type": "SaveImage", "image": "$load.image"}}});
        let (status, body) = f.post("/api/runs", json!({"workflow": doc})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_workflow");
        assert_eq!(body["diagnostics"][0]["node"], "load", "{path}: {body}");
    }
    let doc = json!({"weft": 1, "nodes": {
        "model": {"type": "LoadCheckpoint", "name": "../../../etc"},
        "latent": {"type": "EmptyLatent", "width": 64, "height": 64},
        "decode": {"type": "VaeDecode", "vae": "$model.vae", "latent": "$latent.latent"},
        "save": {"type": "SaveImage", "image": "$decode.image"}}});
    let (status, body) = f.post("/api/runs", json!({"workflow": doc})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_workflow");
}

#[tokio::test]
async fn traversal_in_every_file_naming_parameter_is_refused() {
    let f = Fixture::new();
    // Targets that exist outside the folders, so a bug would show as a 200.
    std::fs::write(f.path("secret.yaml"), chain()).unwrap();
    std::fs::write(f.path("secret.png"), small_png()).unwrap();
    std::fs::create_dir_all(f.path("data/outputs/7")).unwrap();
    std::os::unix::fs::symlink(f.path("secret.yaml"), f.path("workflows/evil.yaml")).unwrap();
    std::os::unix::fs::symlink(f.path("secret.png"), f.path("workflows/inputs/evil.png")).unwrap();
    std::os::unix::fs::symlink(f.path("secret.png"), f.path("data/outputs/7/evil.png")).unwrap();
    std::os::unix::fs::symlink(f.path("."), f.path("data/outputs/8")).unwrap();
    let secret = f.path("secret.png").to_string_lossy().replace('/', "%2F");
    let cases: Vec<(Method, String)> = vec![
        (Method::GET, "/api/workflows/..%2Fsecret".into()),
        (Method::GET, "/api/workflows/%2e%2e%2fsecret".into()),
        (
            Method::GET,
            format!(
                "/api/workflows/{}",
                f.path("secret").to_string_lossy().replace('/', "%2F")
            ),
        ),
        (Method::GET, "/api/workflows/evil".into()),
        (Method::DELETE, "/api/workflows/..%2Fsecret".into()),
        (Method::GET, "/api/uploads/..%2F..%2Fsecret.png".into()),
        (Method::GET, format!("/api/uploads/{secret}")),
        (Method::GET, "/api/uploads/evil.png".into()),
        (
            Method::GET,
            "/api/outputs/7/..%2F..%2F..%2Fsecret.png".into(),
        ),
        (Method::GET, "/api/outputs/..%2F..%2F/secret.png".into()),
        (Method::GET, format!("/api/outputs/7/{secret}")),
        (Method::GET, "/api/outputs/7/evil.png".into()),
        (Method::GET, "/api/outputs/8/secret.png".into()),
        (Method::GET, "/api/workflows/../../secret".into()),
        (Method::GET, "/api/workflows/lib%2F..%2Fsecret".into()),
        (Method::GET, "/api/workflows/lib%2F..%2F..%2Fsecret".into()),
        (Method::GET, "/api/workflows/lib%2Flib%2F..%2Fchain".into()),
    ];
    for (method, uri) in cases {
        let (status, body) = f.call(method.clone(), &uri, None).await;
        assert!(
            matches!(
                status,
                StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
            ),
            "{method} {uri}: {status} {body}"
        );
        assert!(body["error"].is_string(), "{method} {uri}: {body}");
    }
    for (uri, body) in [
        (
            "/api/workflows",
            json!({"name": "../escape", "workflow": {"weft": 1, "nodes": {}}}),
        ),
        ("/api/workflows/chain/rename", json!({"to": "../../escape"})),
        ("/api/workflows/chain/rename", json!({"to": "/tmp/escape"})),
        ("/api/workflows/chain/rename", json!({"to": "lib/escape"})),
        (
            "/api/workflows",
            json!({"name": "lib/../escape", "workflow": {"weft": 1, "nodes": {}}}),
        ),
        (
            "/api/workflows",
            json!({"name": "lib/a/b", "workflow": {"weft": 1, "nodes": {}}}),
        ),
    ] {
        let (status, reply) = f.post(uri, body).await;
        assert_error(status, &reply, StatusCode::BAD_REQUEST, "bad_request");
    }
    assert!(!f.path("escape.yaml").exists());
    assert!(f.path("secret.yaml").exists() && f.path("workflows/chain.yaml").exists());
}

/// The editor's "convert to subgraph" writes `lib/NAME`: a library subgraph, then a node type
/// a workflow can use; the file reads back by that name.
#[tokio::test]
async fn a_library_subgraph_is_created_as_lib_name_and_becomes_a_node_type() {
    let f = Fixture::new();
    let subgraph = json!({
        "weft": 1,
        "inputs": {"x": {"type": "int", "doc": "the number"}},
        "outputs": {"sum": {"from": "$add.sum", "doc": "x + 10"}},
        "nodes": {"add": {"type": "AddInt", "a": "$inputs.x", "b": 10}},
    });
    let (status, created) = f
        .post(
            "/api/workflows",
            json!({"name": "lib/AddTen", "workflow": subgraph}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "lib/AddTen");
    let text = std::fs::read_to_string(f.path("workflows/lib/AddTen.yaml")).unwrap();
    assert!(
        text.contains("inputs:") && text.contains("from: $add.sum"),
        "{text}"
    );
    let (status, read) = f
        .call(Method::GET, "/api/workflows/lib%2FAddTen", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["workflow"]["nodes"]["add"]["b"], 10, "{read}");
    let (_, nodes) = f.call(Method::GET, "/api/nodes", None).await;
    assert!(
        nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "AddTen"),
        "AddTen is not in the catalogue"
    );
    let (status, queued) = f
        .post(
            "/api/runs",
            json!({"workflow": {"weft": 1, "nodes": {
                "n": {"type": "Int", "value": 5},
                "ten": {"type": "AddTen", "x": "$n.value"},
                "show": {"type": "ShowInt", "value": "$ten.sum"},
            }}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let run = f.wait_run(queued["id"].as_u64().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    // Not twice: a library subgraph is never replaced by a create.
    let (status, _) = f
        .post(
            "/api/workflows",
            json!({"name": "lib/AddTen", "workflow": {"weft": 1, "nodes": {}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_library_file_is_checked_as_a_subgraph_and_not_queued_on_its_own() {
    let f = Fixture::new();
    let subgraph = json!({
        "weft": 1,
        "inputs": {"x": {"type": "int", "doc": "the number"}},
        "outputs": {"sum": {"from": "$add.sum"}},
        "nodes": {"add": {"type": "AddInt", "a": "$inputs.x", "b": 10}},
    });
    let (status, created) = f
        .post(
            "/api/workflows",
            json!({"name": "lib/AddTen", "workflow": subgraph}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    // Checked against its own interface: `$inputs.x` is declared and there is no output node
    // to want, so a sound library file has no diagnostics.
    let (status, read) = f
        .call(Method::GET, "/api/workflows/lib%2FAddTen", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["diagnostics"], json!([]), "{read}");
    // Listed apart from the workflows, by the name that opens it, valid.
    let (_, list) = f.call(Method::GET, "/api/workflows", None).await;
    assert_eq!(list["library"][0]["name"], "lib/AddTen", "{list}");
    assert_eq!(list["library"][0]["valid"], true, "{list}");
    assert_eq!(list["library"][0]["revision"], read["revision"], "{list}");
    assert!(
        !list["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"].as_str().unwrap().contains("AddTen")),
        "{list}"
    );

    // What is wrong in one is still said: an undeclared `$inputs`, a declared input of the
    // wrong type, and an output from an inner output that does not exist.
    let broken = json!({
        "weft": 1,
        "inputs": {"x": {"type": "int"}, "label": {"type": "string"}},
        "outputs": {"sum": {"from": "$add.total"}, "gone": {"from": "$nowhere.sum"}},
        "nodes": {
            "add": {"type": "AddInt", "a": "$inputs.label", "b": "$inputs.y"},
        },
    });
    let (status, put) = f
        .call(
            Method::PUT,
            "/api/workflows/lib%2FAddTen",
            Some(json!({"workflow": broken, "revision": read["revision"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    let messages: Vec<&str> = put["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["message"].as_str().unwrap())
        .collect();
    for want in [
        "type mismatch: expected int, found string (from $inputs.label)",
        "$inputs.y is not an input this subgraph declares",
        "output 'sum': node 'add' (AddInt) has no output 'total'",
        "output 'gone' comes from unknown node 'nowhere'",
    ] {
        assert!(messages.contains(&want), "{want:?} not in {messages:?}");
    }
    assert!(
        !messages
            .iter()
            .any(|m| m.contains("unknown node 'inputs'") || m.contains("no output node")),
        "{messages:?}"
    );
    let (_, list) = f.call(Method::GET, "/api/workflows", None).await;
    assert_eq!(list["library"][0]["valid"], false, "{list}");

    // Queued by name or as a document, it is refused with the reason and what to do.
    for workflow in [json!("lib/AddTen"), subgraph] {
        let (status, refused) = f.post("/api/runs", json!({"workflow": workflow})).await;
        assert_error(
            status,
            &refused,
            StatusCode::BAD_REQUEST,
            "invalid_workflow",
        );
        let d = &refused["diagnostics"][0];
        assert!(
            d["message"].as_str().unwrap().contains("it is a subgraph"),
            "{refused}"
        );
        assert!(d["hint"].as_str().unwrap().contains("type: "), "{refused}");
    }
    let (_, runs) = f.call(Method::GET, "/api/runs", None).await;
    assert_eq!(runs["runs"], json!([]), "nothing was queued: {runs}");
}

/// A library file's `./x.yaml` types are files next to it in `lib/`, whether the file is
/// checked alone (read, listed, validated, saved) or used as a node; and the catalogue names
/// library files as the user does, `lib/NAME.yaml`, never by the server's path.
#[tokio::test]
async fn a_library_file_finds_its_path_types_in_lib_and_no_server_path_is_sent() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("workflows/lib")).unwrap();
    let add_ten = "weft: 1
inputs:
  x:
    type: int
outputs:
  sum:
    from: $add.sum
nodes:
  add:
    type: AddInt
    a: $inputs.x
    b: 10
";
    let add_twenty = "weft: 1
inputs:
  x:
    type: int
outputs:
  sum:
    from: $second.sum
nodes:
  first:
    type: ./AddTen.yaml
    x: $inputs.x
  second:
    type: ./AddTen.yaml
    x: $first.sum
";
    std::fs::write(f.path("workflows/lib/AddTen.yaml"), add_ten).unwrap();
    std::fs::write(f.path("workflows/lib/AddTwenty.yaml"), add_twenty).unwrap();

    let (status, read) = f
        .call(Method::GET, "/api/workflows/lib%2FAddTwenty", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["diagnostics"], json!([]), "{read}");
    let (_, list) = f.call(Method::GET, "/api/workflows", None).await;
    let listed = list["library"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "lib/AddTwenty")
        .cloned();
    assert_eq!(
        listed.map(|w| w["valid"].clone()),
        Some(json!(true)),
        "{list}"
    );
    let (status, validated) = f
        .post(
            "/api/validate",
            json!({"workflow": read["workflow"], "name": "lib/AddTwenty"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{validated}");
    assert_eq!(validated["diagnostics"], json!([]), "{validated}");
    let (status, saved) = f
        .put(
            "/api/workflows/lib%2FAddTwenty",
            json!({"workflow": read["workflow"], "revision": read["revision"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["diagnostics"], json!([]), "{saved}");
    // A canvas with no file is in the workflows folder, where there is no AddTen.yaml.
    let (_, unnamed) = f
        .post("/api/validate", json!({"workflow": read["workflow"]}))
        .await;
    assert_ne!(unnamed["diagnostics"], json!([]), "{unnamed}");

    // Used as a node, it runs: 5 + 10 + 10.
    let (status, queued) = f
        .post(
            "/api/runs",
            json!({"workflow": {"weft": 1, "nodes": {
                "n": {"type": "Int", "value": 5},
                "twenty": {"type": "AddTwenty", "x": "$n.value"},
                "show": {"type": "ShowInt", "value": "$twenty.sum"},
            }}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let run = f.wait_run(queued["id"].as_u64().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    let (_, nodes) = f.call(Method::GET, "/api/nodes", None).await;
    let entry = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "AddTwenty")
        .cloned()
        .expect("AddTwenty in the catalogue");
    assert_eq!(entry["subgraph"], "lib/AddTwenty.yaml", "{entry}");
    assert_eq!(entry["doc"], "subgraph lib/AddTwenty.yaml", "{entry}");
    let server_folder = f.path("workflows").display().to_string();
    assert!(
        !nodes.to_string().contains(&server_folder),
        "the catalogue names {server_folder}"
    );
}

/// An exposed enum input declared without `choices` offers the choices of the inner input it
/// feeds, so the node shows the same dropdown as inside; its own `choices` win. An exposed
/// input's widget is the inner input's (a prompt's text box).
#[tokio::test]
async fn a_subgraph_enum_input_offers_the_choices_of_what_it_feeds() {
    let f = Fixture::new();
    let subgraph = json!({
        "weft": 1,
        "inputs": {
            "op": {"type": "enum", "default": "add"},
            "narrowed": {"type": "enum", "default": "min", "choices": ["min", "max"]},
            "a": {"type": "float", "default": 1.0},
            "words": {"type": "string", "default": ""},
        },
        "outputs": {"result": {"from": "$second.result"}},
        "nodes": {
            "first": {"type": "MathFloat", "a": "$inputs.a", "b": 2.0, "op": "$inputs.op"},
            "second": {"type": "MathFloat", "a": "$first.result", "b": 3.0, "op": "$inputs.narrowed"},
            "show": {"type": "ShowText", "text": "$inputs.words"},
        },
    });
    let (status, created) = f
        .post(
            "/api/workflows",
            json!({"name": "lib/Arith", "workflow": subgraph}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (_, nodes) = f.call(Method::GET, "/api/nodes", None).await;
    let arith = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "Arith")
        .unwrap_or_else(|| panic!("Arith is not in the catalogue: {nodes}"));
    let input = |name: &str| {
        arith["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no input {name}: {arith}"))
            .clone()
    };
    assert_eq!(
        input("op")["choices"],
        json!(["add", "subtract", "multiply", "divide", "min", "max"]),
        "{arith}"
    );
    assert_eq!(
        input("narrowed")["choices"],
        json!(["min", "max"]),
        "{arith}"
    );
    assert!(input("a").get("choices").is_none(), "{arith}");
    // The widgets too: a list for the enums, the inner text box for the text, a number box.
    assert_eq!(input("op")["widget"], "choice", "{arith}");
    assert_eq!(input("words")["widget"], "multiline", "{arith}");
    assert_eq!(input("a")["widget"], "number", "{arith}");
}

#[tokio::test]
async fn uploads_sniff_the_format_and_refuse_bombs() {
    let f = Fixture::new();
    let raw = |bytes: Vec<u8>, ty: &str| {
        Request::post("/api/uploads")
            .header(header::HOST, HOST)
            .header(header::CONTENT_TYPE, ty)
            .body(Body::from(bytes))
            .unwrap()
    };
    let (status, body, _) = f
        .send(raw(b"<svg>not an image</svg>".to_vec(), "image/png"))
        .await;
    assert_error_json(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    let bomb = png_declaring(100_000, 100_000);
    assert!(bomb.len() < 100);
    let (status, body, _) = f.send(raw(bomb, "image/png")).await;
    assert_error_json(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    let (status, body, _) = f.send(raw(png_declaring(16, 16), "image/png")).await;
    assert_error_json(status, &body, StatusCode::BAD_REQUEST, "bad_request");

    let png = small_png();
    let (status, body, _) = f.send(raw(png.clone(), "application/octet-stream")).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let file = body["file"].as_str().unwrap().to_string();
    let name = body["name"].as_str().unwrap();
    assert!(name.ends_with(&file) && file.ends_with(".png"));

    // The multipart form gives the same stored file.
    let boundary = "weftboundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"../../x.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    form.extend(&png);
    form.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (status, body, _) = f
        .send(raw(
            form,
            &format!("multipart/form-data; boundary={boundary}"),
        ))
        .await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["file"], file.as_str());

    let request = Request::get(format!("/api/uploads/{file}"))
        .header(header::HOST, HOST)
        .body(Body::empty())
        .unwrap();
    let (status, bytes, headers) = f.send(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "image/png");
    assert_eq!(bytes, png);

    // The uploaded name is what LoadImage reads: a run using it is accepted.
    let doc = json!({"weft": 1, "nodes": {
        "load": {"type": "LoadImage", "path": name},
        "save": {"type": "SaveImage", "image": "$load.image", "prefix": "sub/up"}}});
    let (status, queued) = f.post("/api/runs", json!({"workflow": doc})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let run = f.wait_run(queued["id"].as_u64().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let url = run["outputs"][0]["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("/api/outputs/{}/sub/up_", run["id"])),
        "{url}"
    );
    let request = Request::get(&url)
        .header(header::HOST, HOST)
        .body(Body::empty())
        .unwrap();
    let (status, bytes, _) = f.send(request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(bytes.starts_with(b"\x89PNG"));
}

#[tokio::test]
async fn cross_origin_and_rebound_hosts_are_refused() {
    let f = Fixture::new();
    let post = |origin: Option<&str>, host: &str| {
        let mut r = Request::post("/api/runs")
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "text/plain");
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        r.body(Body::from(json!({"workflow": "chain"}).to_string()))
            .unwrap()
    };
    for (origin, host) in [
        (Some("http://evil.example"), HOST),
        (Some("null"), HOST),
        (Some("http://127.0.0.1:9999"), HOST),
        (Some("https://127.0.0.1:8188"), HOST),
        (None, "evil.example:8188"),
        (Some("http://evil.example:8188"), "evil.example:8188"),
    ] {
        let (status, body, _) = f.send(post(origin, host)).await;
        assert_error_json(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    let (_, runs) = f.call(Method::GET, "/api/runs", None).await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        0,
        "nothing was queued"
    );
    let (status, _, _) = f
        .send(post(Some("http://localhost:8188"), "localhost:8188"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // The WebSocket upgrade is refused from another origin before any upgrade happens.
    let upgrade = Request::get("/ws")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "http://evil.example")
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Body::empty())
        .unwrap();
    let (status, body, _) = f.send(upgrade).await;
    assert_error_json(status, &body, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn with_a_token_every_route_and_the_websocket_need_it() {
    let token = "0123456789abcdef0123";
    let f = Fixture::with(|c| c.token = Some(token.to_string()));
    let get = |uri: &str, auth: Option<&str>| {
        let mut r = Request::get(uri).header(header::HOST, HOST);
        if let Some(a) = auth {
            r = r.header(header::AUTHORIZATION, a);
        }
        r.body(Body::empty()).unwrap()
    };
    for uri in [
        "/api/nodes",
        "/api/workflows",
        "/api/runs",
        "/ws",
        "/",
        "/api/outputs/1/a.png",
    ] {
        for auth in [None, Some("Bearer wrong-token-wrong-token"), Some(token)] {
            let (status, body, _) = f.send(get(uri, auth)).await;
            assert_error_json(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    let (status, _, _) = f
        .send(get("/api/nodes", Some(&format!("Bearer {token}"))))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = f
        .send(get(&format!("/api/workflows?token={token}"), None))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_root_serves_a_page() {
    let f = Fixture::new();
    let (status, body, headers) = f
        .send(
            Request::get("/")
                .header(header::HOST, HOST)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(String::from_utf8_lossy(&body).contains("<html"));
}

#[allow(dead_code)]
fn _state_is_shared(state: &AppState) -> Arc<weft::server::Server> {
    state.clone()
}

const ADD_TEN: &str = "weft: 1
inputs:
  x:
    type: int
    doc: the number
outputs:
  sum:
    from: $add.sum
    doc: x + 10
nodes:
  add:
    type: AddInt
    a: $inputs.x
    b: 10
";

#[tokio::test]
async fn subgraphs_expand_like_the_cli_and_may_not_include_files_outside_the_folder() {
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("workflows/lib")).unwrap();
    std::fs::write(f.path("workflows/lib/AddTen.yaml"), ADD_TEN).unwrap();
    let doc = json!({"weft": 1, "nodes": {
        "a": {"type": "Int", "value": 5},
        "ten": {"type": "AddTen", "x": "$a.value"},
        "show": {"type": "ShowInt", "value": "$ten.sum"}}});
    let (_, v) = f.post("/api/validate", json!({"workflow": doc})).await;
    assert_eq!(v["valid"], true, "{v}");
    let (status, queued) = f.post("/api/runs", json!({"workflow": doc})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let run = f.wait_run(queued["id"].as_u64().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["nodes"]["ten__add"]["state"], "ran", "{run}");

    // A file the client could write, including one from outside the folder.
    std::fs::write(f.path("outside.yaml"), ADD_TEN).unwrap();
    std::fs::write(
        f.path("workflows/lib/Sneaky.yaml"),
        ADD_TEN.replace("type: AddInt", "type: ../../outside.yaml"),
    )
    .unwrap();
    for ty in [
        "../outside.yaml",
        "/etc/hosts.yaml",
        "Sneaky",
        "./missing.yaml",
    ] {
        let doc = json!({"weft": 1, "nodes": {
            "a": {"type": "Int", "value": 5},
            "s": {"type": ty, "x": "$a.value"},
            "show": {"type": "ShowInt", "value": "$s.sum"}}});
        let (status, body) = f.post("/api/runs", json!({"workflow": doc})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_workflow");
        let text = body.to_string();
        assert!(
            !text.contains(f.dir.path().to_str().unwrap()),
            "a server path leaked: {text}"
        );
    }
}

/// A PNG as ComfyUI saves it, with these tEXt chunks.
fn png_with_text(chunks: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, 1, 1);
    encoder.set_color(png::ColorType::Rgb);
    for (keyword, text) in chunks {
        encoder
            .add_text_chunk(keyword.to_string(), text.to_string())
            .unwrap();
    }
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&[0, 0, 0]).unwrap();
    writer.finish().unwrap();
    out
}

async fn post_import(f: &Fixture, bytes: Vec<u8>, content_type: &str) -> (StatusCode, Value) {
    let request = Request::post("/api/import")
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(bytes))
        .unwrap();
    let (status, body, _) = f.send(request).await;
    (status, serde_json::from_slice(&body).unwrap())
}

fn comfy_fixture(name: &str) -> String {
    std::fs::read_to_string(common::repo().join("tests/comfy").join(name)).unwrap()
}

#[tokio::test]
async fn import_maps_missing_checkpoints_by_the_comfy_model_star_rule() {
    // `--comfy-model '*=tiny-shapes'`: a checkpoint the models folder does not have becomes
    // tiny-shapes in the editor's import as in the ComfyUI API; one it has keeps its name.
    let f = Fixture::with(|config| {
        config.comfy_models = vec![("*".into(), "tiny-shapes".into())];
        config.models_dir = config.workflows_dir.with_file_name("models");
    });
    let api = comfy_fixture("01_txt2img_default.json");
    let (status, body) = post_import(&f, api.clone().into_bytes(), "application/json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["workflow"]["nodes"]["checkpoint_4"]["name"], "tiny-shapes",
        "{body}"
    );
    let present = f.path("models/checkpoints/v1-5-pruned-emaonly.safetensors");
    std::fs::create_dir_all(present.parent().unwrap()).unwrap();
    std::fs::write(&present, b"").unwrap();
    let (_, body) = post_import(&f, api.into_bytes(), "application/json").await;
    assert_eq!(
        body["workflow"]["nodes"]["checkpoint_4"]["name"],
        "checkpoints/v1-5-pruned-emaonly.safetensors",
        "{body}"
    );
}

#[tokio::test]
async fn import_converts_comfyui_api_and_ui_json_and_pngs() {
    let f = Fixture::new();
    // API format: no positions in the file, so a layout by link depth (loader left of the
    // sampler, the sampler left of the save node); nothing is written to the folder.
    let api = comfy_fixture("01_txt2img_default.json");
    let (status, body) = post_import(&f, api.clone().into_bytes(), "application/json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["format"], "API format");
    let nodes = &body["workflow"]["nodes"];
    assert_eq!(nodes.as_object().unwrap().len(), 7, "{body}");
    assert_eq!(nodes["ksampler_3"]["type"], "Sampler");
    assert_eq!(nodes["ksampler_3"]["latent"], "$latent_5.latent");
    assert_eq!(
        nodes["positive_6"]["text"],
        "a red circle on a blue background"
    );
    assert_eq!(body["ids"]["3"], "ksampler_3");
    let x = |id: &str| body["workflow"]["layout"][id][0].as_f64().unwrap();
    assert!(x("checkpoint_4") < x("positive_6") && x("positive_6") < x("ksampler_3"));
    assert!(x("ksampler_3") < x("decode_8") && x("decode_8") < x("save_9"));
    let at = |id: &str| body["workflow"]["layout"][id].clone();
    assert_ne!(at("positive_6"), at("negative_7"), "stacked nodes");
    assert!(body["text"].as_str().unwrap().contains("type: Sampler"));
    // Validated as GET validates a file (a model that is missing is a run's error, not this).
    assert_eq!(body["diagnostics"], json!([]), "{body}");
    let (_, list) = f.call(Method::GET, "/api/workflows", None).await;
    assert_eq!(list["workflows"].as_array().unwrap().len(), 1, "{list}");

    // UI format, sent with no content type: sniffed, positions kept.
    let ui = comfy_fixture("12_ui_txt2img.json");
    let (status, body) = post_import(&f, ui.clone().into_bytes(), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["format"], "UI format");
    // ComfyUI's picture, spread sideways where the editor's wider nodes would overlap (its
    // VAEDecode and SaveImage are 242 apart): y as ComfyUI has it, one x scale for all.
    let at = |id: &str| body["workflow"]["layout"][id].clone();
    assert_eq!(at("ksampler_3")[1], 186.0);
    let x = |id: &str| at(id)[0].as_f64().unwrap();
    assert!(
        x("save_9") - x("decode_8") >= 300.0,
        "{}",
        body["workflow"]["layout"]
    );
    let scale = x("ksampler_3") / 863.0;
    assert!(
        (scale - x("decode_8") / 1209.0).abs() < 0.01 && scale < 2.5,
        "{scale}"
    );
    // The Reroute is a reroute point, spread with the nodes.
    let point = &body["workflow"]["reroutes"]["reroute_11"];
    assert_eq!(point["from"], "checkpoint_4.vae", "{body}");
    assert_eq!(point["to"], json!(["decode_8.vae"]));
    assert_eq!(point["at"][1], 480.0);
    let point_x = point["at"][0].as_f64().unwrap();
    assert!((point_x - 1000.0 * scale).abs() <= 2.0, "{point_x} {scale}");

    // A ComfyUI PNG: the UI workflow when it has one, else the API prompt.
    let both = png_with_text(&[("prompt", &api), ("workflow", &ui)]);
    let (status, body) = post_import(&f, both, "image/png").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["format"], "UI format");
    let prompt_only = png_with_text(&[("parameters", "x"), ("prompt", &api)]);
    let (status, body) = post_import(&f, prompt_only, "image/png").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["format"], "API format");
    assert_eq!(body["workflow"]["nodes"]["save_9"]["type"], "SaveImage");
}

#[tokio::test]
async fn import_refuses_garbage_plain_pngs_and_unknown_types_with_the_importers_text() {
    let f = Fixture::new();
    let (status, body) = post_import(&f, b"<html>nope</html>".to_vec(), "text/html").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not a ComfyUI workflow"),
        "{body}"
    );
    let (status, body) = post_import(&f, Vec::new(), "application/json").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    // JSON, but not ComfyUI's.
    let (status, body) = post_import(&f, b"[1, 2]".to_vec(), "application/json").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("expected a JSON object"),
        "{body}"
    );

    // A plain image says so.
    let (status, body) = post_import(&f, small_png(), "image/png").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("no ComfyUI workflow in this PNG") && detail.contains("plain image"),
        "{detail}"
    );
    // A truncated PNG is not a crash either.
    let (status, body) = post_import(&f, small_png()[..24].to_vec(), "image/png").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");

    // Every unknown class type in the importer's one error, its text kept.
    let unknown = comfy_fixture("errors/unknown_types.json");
    let (status, body) = post_import(&f, unknown.into_bytes(), "application/json").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(
            "2 ComfyUI node types that weft does not import: HypernetworkLoader (nodes 10, 12), \
             CLIPSetLastLayer (node 11)"
        ),
        "{detail}"
    );
    assert!(
        detail.contains("hint: weft imports CheckpointLoaderSimple"),
        "{detail}"
    );

    // Over the upload limit (1 MiB here): our error shape.
    let (status, body) = post_import(&f, vec![b' '; 2 << 20], "application/json").await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    // Another site's page may not use the importer either.
    let request = Request::post("/api/import")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::from(comfy_fixture("01_txt2img_default.json")))
        .unwrap();
    let (status, body, _) = f.send(request).await;
    assert_error_json(status, &body, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test]
async fn a_run_served_from_the_cache_still_lists_the_images_its_output_node_saved() {
    let f = Fixture::new();
    std::fs::write(f.path("workflows/inputs/red.png"), small_png()).unwrap();
    let red = f.state.inputs_ref.join("red.png");
    let doc = json!({"weft": 1, "nodes": {
        "load": {"type": "LoadImage", "path": red},
        "save": {"type": "SaveImage", "image": "$load.image", "prefix": "kept"}}});
    let (status, first) = f.post("/api/runs", json!({"workflow": doc})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let first = f.wait_run(first["id"].as_u64().unwrap()).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let url = first["outputs"][0]["url"].as_str().unwrap().to_string();
    // The same workflow again: every node is a cache hit, nothing is written ...
    let (_, second) = f.post("/api/runs", json!({"workflow": doc})).await;
    let second = f.wait_run(second["id"].as_u64().unwrap()).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(second["nodes"]["save"]["state"], "cached", "{second}");
    // ... and the run still names the image its cached SaveImage saved, which is served.
    assert_eq!(
        second["outputs"],
        json!([{"node": "save", "url": url}]),
        "{second}"
    );
    let (status, png, _) = f
        .send(
            Request::get(url.as_str())
                .header(header::HOST, HOST)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{url}");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
}
