//! The server's side of issue 18: workflows are parsed and validated off the async threads,
//! under a deadline, and the workflow list remembers each file's validity by content hash
//! (a file of 15k dangling links once made every `GET /api/workflows` take minutes).
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

// Not every helper of the shared fixture is used here.
#[allow(dead_code)]
mod common;
use common::{Fixture, HOST};

/// A workflow document of `n` AddInt nodes whose inputs all link `$nope.sum` (no such node).
fn dangling_doc(n: usize) -> Value {
    let nodes: serde_json::Map<String, Value> = (0..n)
        .map(|i| {
            let node = json!({"type": "AddInt", "a": "$nope.sum", "b": "$nope.sum"});
            (format!("n{i}"), node)
        })
        .collect();
    json!({"weft": 1, "nodes": nodes})
}

/// The same as a file.
fn dangling_yaml(n: usize) -> String {
    let mut text = String::from("weft: 1\nnodes:\n");
    for i in 0..n {
        text.push_str(&format!(
            "  n{i}:\n    type: AddInt\n    a: $nope.sum\n    b: $nope.sum\n"
        ));
    }
    text
}

/// A subgraph adding 10 to its input, and a workflow using it from the library.
const ADD_TEN: &str = "weft: 1
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
const USES_ADD_TEN: &str = "weft: 1
nodes:
  a:
    type: Int
    value: 5
  ten:
    type: AddTen
    x: $a.value
  show:
    type: ShowInt
    value: $ten.sum
";

fn fixture(adjust: impl FnOnce(&mut weft::server::Config)) -> Fixture {
    Fixture::start(Some("application/json"), |config| {
        config.body_limit = 16 << 20;
        adjust(config);
    })
}

fn in_dir(f: &Fixture, relative: &str) -> std::path::PathBuf {
    f.dir.path().join(relative)
}

/// `GET /api/workflows`: name -> valid, and how long it took.
async fn list(f: &Fixture) -> (Value, Duration) {
    let started = Instant::now();
    let (status, body) = f.call(Method::GET, "/api/workflows", None).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    let valid: serde_json::Map<String, Value> = body["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap().to_string(), w["valid"].clone()))
        .collect();
    (Value::Object(valid), took)
}

#[tokio::test]
async fn the_workflow_list_validates_a_big_dangling_file_once_per_content() {
    let f = fixture(|_| {});
    // Saved as the issue did: 15k nodes through POST /api/workflows.
    let started = Instant::now();
    let (status, created) = f
        .post(
            "/api/workflows",
            json!({"name": "big", "workflow": dangling_doc(15_000)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["diagnostics"].as_array().unwrap().len(), 30_001);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // A file of 100k such nodes written beside it: seconds to read and validate at first.
    std::fs::write(in_dir(&f, "workflows/huge.yaml"), dangling_yaml(100_000)).unwrap();
    std::fs::write(
        in_dir(&f, "workflows/small.yaml"),
        weft_test_support::add_int_chain(&[1]),
    )
    .unwrap();

    let (valid, first) = list(&f).await;
    assert_eq!(valid, json!({"big": false, "huge": false, "small": true}));
    assert!(
        first < Duration::from_secs(30),
        "the first listing took {first:?}"
    );
    // Unchanged files are not validated again: reading and hashing them is all that is left.
    let (again, second) = list(&f).await;
    eprintln!("listing 15k + 100k dangling links: first {first:?}, again {second:?}");
    assert_eq!(again, valid);
    assert!(
        second * 4 < first,
        "the second listing took {second:?}, the first {first:?}"
    );

    // A changed file is validated again: fixed, and broken.
    std::fs::write(
        in_dir(&f, "workflows/huge.yaml"),
        weft_test_support::add_int_chain(&[2]),
    )
    .unwrap();
    std::fs::write(in_dir(&f, "workflows/small.yaml"), dangling_yaml(3)).unwrap();
    let (valid, _) = list(&f).await;
    assert_eq!(valid, json!({"big": false, "huge": true, "small": false}));
    // A deleted one is gone from the list.
    std::fs::remove_file(in_dir(&f, "workflows/big.yaml")).unwrap();
    let (valid, _) = list(&f).await;
    assert_eq!(valid, json!({"huge": true, "small": false}));
}

#[tokio::test]
async fn the_workflow_list_sees_a_changed_subgraph_although_the_file_is_unchanged() {
    let f = fixture(|_| {});
    std::fs::create_dir_all(in_dir(&f, "workflows/lib")).unwrap();
    std::fs::write(in_dir(&f, "workflows/lib/AddTen.yaml"), ADD_TEN).unwrap();
    std::fs::write(in_dir(&f, "workflows/uses.yaml"), USES_ADD_TEN).unwrap();
    let (valid, _) = list(&f).await;
    assert_eq!(valid, json!({"uses": true}));
    std::fs::write(
        in_dir(&f, "workflows/lib/AddTen.yaml"),
        ADD_TEN.replace("$inputs.x", "$nope.sum"),
    )
    .unwrap();
    let (valid, _) = list(&f).await;
    assert_eq!(valid, json!({"uses": false}));
    std::fs::remove_file(in_dir(&f, "workflows/lib/AddTen.yaml")).unwrap();
    let (valid, _) = list(&f).await;
    assert_eq!(valid, json!({"uses": false}));
    std::fs::write(in_dir(&f, "workflows/lib/AddTen.yaml"), ADD_TEN).unwrap();
    let (valid, _) = list(&f).await;
    assert_eq!(valid, json!({"uses": true}));
}

#[tokio::test]
async fn validation_past_the_deadline_is_answered_503_and_the_server_keeps_serving() {
    let f = fixture(|config| config.check_deadline = Duration::from_millis(1));
    let doc = dangling_doc(30_000);
    for (uri, body) in [
        ("/api/validate", json!({"workflow": doc})),
        ("/api/runs", json!({"workflow": doc})),
        ("/api/workflows", json!({"name": "late", "workflow": doc})),
    ] {
        let (status, body) = f.post(uri, body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {body}");
        assert_eq!(body["error"], "deadline_exceeded", "{uri}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("did not finish within 0.001 s"), "{detail}");
    }
    // Nothing was written for the create that ran out of time.
    assert!(!in_dir(&f, "workflows/late.yaml").exists());
    let (status, _) = f.call(Method::GET, "/api/nodes", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn other_requests_are_answered_while_a_big_workflow_is_validated() {
    // The test's runtime has one thread: were validation on it, nothing else could answer
    // until it ended.
    let f = fixture(|_| {});
    let body = json!({"workflow": dangling_doc(100_000)}).to_string();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/validate")
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let validating = tokio::spawn(weft::server::app(f.state.clone()).oneshot(request));
    // Let it start (its body is read and parsed on this thread, then handed off).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, _) = f.call(Method::GET, "/api/nodes", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !validating.is_finished(),
        "the validation ended before the catalogue was answered: too small to show anything"
    );
    let response = validating.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// ComfyUI's default txt2img on tiny-shapes, with `extra` unused empty latents beside it.
fn big_comfy_prompt(extra: usize) -> Value {
    let text = std::fs::read(common::repo().join("tests/comfy/01_txt2img_default.json")).unwrap();
    let mut prompt: Value = serde_json::from_slice(&text).unwrap();
    prompt["3"]["inputs"]["steps"] = json!(1);
    for i in 0..extra {
        prompt[format!("x{i}")] = json!({"class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1}});
    }
    json!({"prompt": prompt})
}

fn comfy_fixture(deadline: Duration) -> Fixture {
    fixture(|config| {
        config.check_deadline = deadline;
        config.comfy_models = vec![(
            "v1-5-pruned-emaonly.safetensors".into(),
            "tiny-shapes".into(),
        )];
    })
}

#[tokio::test]
async fn a_prompt_whose_check_ran_out_of_time_is_never_queued() {
    let body = big_comfy_prompt(30_000);
    // In time, the prompt is queued: it is a good one.
    let f = comfy_fixture(Duration::from_secs(60));
    let (status, queued) = f.post("/prompt", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{queued}");
    assert!(queued["prompt_id"].is_string(), "{queued}");

    let f = comfy_fixture(Duration::from_millis(20));
    let (status, refused) = f.post("/prompt", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"]["type"], "deadline_exceeded", "{refused}");
    // The check goes on after the answer; what it reaches must not be queued.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, runs) = f.call(Method::GET, "/api/runs", None).await;
        assert_eq!(runs["runs"], json!([]), "queued after all: {runs}");
    }
}
