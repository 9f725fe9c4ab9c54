//! Error shapes and request hygiene of `weft serve` through `app(...)` (no socket): every
//! refusal is JSON in the API's shape, diagnostics name the real node and input, documents
//! that could not be read back or would write outside the outputs are refused up front, and
//! the guard wants exactly one Host and Origin and takes the Bearer scheme in any case.
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use weft::server::Config;

#[allow(dead_code)] // each test file uses part of it
mod common;
use common::{Fixture, HOST};

/// workflows/chain.yaml (a -> b -> show) and a 64 KiB JSON body limit.
fn fixture(adjust: impl FnOnce(&mut Config)) -> Fixture {
    Fixture::start(Some("application/json"), |config| {
        std::fs::write(
            config.workflows_dir.join("chain.yaml"),
            weft_test_support::add_int_chain(&[10]),
        )
        .unwrap();
        config.body_limit = 64 << 10;
        adjust(config);
    })
}

fn assert_json_error(status: StatusCode, bytes: &[u8], want: StatusCode, code: &str) -> Value {
    let body: Value = serde_json::from_slice(bytes).unwrap_or_else(|_| {
        panic!(
            "a {status} answer is not JSON: {:?}",
            String::from_utf8_lossy(bytes)
        )
    });
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}

async fn runs_count(f: &Fixture) -> usize {
    let (_, runs) = f.call(Method::GET, "/api/runs", None).await;
    runs["runs"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_set_value_diagnostic_names_the_real_node_and_input() {
    let f = fixture(|_| {});
    let (status, body) = f
        .post(
            "/api/runs",
            json!({"workflow": "chain", "set": {"b.b": null}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let d = &body["diagnostics"][0];
    assert_eq!(d["node"], "b", "{body}");
    assert_eq!(d["input"], "b", "{body}");
    assert!(d["message"].as_str().unwrap().starts_with("set 'b.b'"));
}

#[tokio::test]
async fn malformed_run_list_queries_are_json_bad_requests() {
    let f = fixture(|_| {});
    for uri in [
        "/api/runs?limit=abc",
        "/api/runs?before=-5",
        "/api/runs?limit=-1",
    ] {
        let request = Request::get(uri)
            .header(header::HOST, HOST)
            .body(Body::empty())
            .unwrap();
        let (status, body, _) = f.send(request).await;
        let body = assert_json_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("limit") || detail.contains("before"),
            "{uri}: the detail names the parameter: {detail}"
        );
    }
}

#[tokio::test]
async fn limit_zero_lists_no_runs() {
    let f = fixture(|_| {});
    let (status, _) = f.post("/api/runs", json!({"workflow": "chain"})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, zero) = f.call(Method::GET, "/api/runs?limit=0", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(zero["runs"], json!([]), "{zero}");
    let (_, one) = f.call(Method::GET, "/api/runs?limit=1", None).await;
    assert_eq!(one["runs"].as_array().unwrap().len(), 1, "{one}");
}

#[tokio::test]
async fn axums_own_refusals_come_back_as_json() {
    let f = fixture(|_| {});
    // Over the body limit, on weft's own routes.
    let big = json!({"workflow": "chain", "pad": "x".repeat(100 << 10)});
    let request = Request::post("/api/runs")
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big.to_string()))
        .unwrap();
    let (status, body, _) = f.send(request).await;
    assert_json_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    // A method the route lacks keeps its Allow header.
    let request = Request::delete("/api/nodes")
        .header(header::HOST, HOST)
        .body(Body::empty())
        .unwrap();
    let (status, body, headers) = f.send(request).await;
    assert_json_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert!(headers.contains_key(header::ALLOW));
    // /ws without the upgrade headers.
    let request = Request::get("/ws")
        .header(header::HOST, HOST)
        .body(Body::empty())
        .unwrap();
    let (status, body, _) = f.send(request).await;
    assert!(status.is_client_error(), "{status}");
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn an_oversized_comfyui_prompt_is_a_json_413() {
    let f = fixture(|_| {});
    let big =
        json!({"prompt": {"1": {"class_type": "x", "inputs": {"pad": "x".repeat(100 << 10)}}}});
    for uri in ["/prompt", "/api/prompt"] {
        let request = Request::post(uri)
            .header(header::HOST, HOST)
            .body(Body::from(big.to_string()))
            .unwrap();
        let (status, body, _) = f.send(request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}");
        let body: Value = serde_json::from_slice(&body).expect("ComfyUI's JSON error");
        assert_eq!(body["error"]["type"], "prompt_too_large", "{body}");
        assert!(body["error"]["details"]
            .as_str()
            .unwrap()
            .contains("65536 bytes"));
        assert_eq!(body["node_errors"], json!({}));
    }
}

#[tokio::test]
async fn a_node_id_too_long_to_read_back_is_refused_before_it_is_written() {
    let f = fixture(|c| c.body_limit = 1 << 20);
    let id = "n".repeat(100_000);
    let doc = json!({"weft": 1, "nodes": {id.as_str(): {"type": "Int", "value": 1}}});
    let (status, body) = f
        .post(
            "/api/workflows",
            json!({"name": "long-id", "workflow": doc}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_workflow");
    let message = body["diagnostics"][0]["message"].as_str().unwrap();
    assert!(message.contains("100000 characters"), "{message}");
    assert!(
        body.to_string().len() < 4096,
        "the refusal does not echo the id"
    );
    assert!(!f.dir.path().join("workflows/long-id.yaml").exists());
}

#[tokio::test]
async fn a_save_prefix_outside_the_run_folder_is_refused_before_queueing() {
    let f = fixture(|_| {});
    for prefix in ["", "../../etc/x", "/tmp/abs"] {
        let doc = json!({"weft": 1, "nodes": {
            "img": {"type": "LoadImage", "path": "x.png"},
            "save": {"type": "SaveImage", "image": "$img.image", "prefix": prefix},
        }});
        let (status, body) = f.post("/api/runs", json!({"workflow": doc})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{prefix:?}: {body}");
        let d = &body["diagnostics"][0];
        assert_eq!(d["node"], "save", "{body}");
        assert_eq!(d["input"], "prefix", "{body}");
        assert!(d["hint"].as_str().unwrap().contains("relative name"));
        let (_, checked) = f.post("/api/validate", json!({"workflow": doc})).await;
        assert_eq!(checked["valid"], false, "{prefix:?}: {checked}");
    }
    assert_eq!(runs_count(&f).await, 0, "nothing was queued");
}

fn post_run(hosts: &[&str], origins: &[&str]) -> Request<Body> {
    let mut request = Request::post("/api/runs").header(header::CONTENT_TYPE, "application/json");
    for host in hosts {
        request = request.header(header::HOST, *host);
    }
    for origin in origins {
        request = request.header(header::ORIGIN, *origin);
    }
    request
        .body(Body::from(json!({"workflow": "chain"}).to_string()))
        .unwrap()
}

#[tokio::test]
async fn requests_without_exactly_one_host_or_with_two_origins_are_refused() {
    let f = fixture(|_| {});
    let own = "http://127.0.0.1:8188";
    for (hosts, origins) in [
        (&[][..], &[][..]),
        (&[HOST, "evil.example:8188"][..], &[][..]),
        (&["evil.example:8188", HOST][..], &[][..]),
        (&[HOST][..], &[own, "http://evil.example"][..]),
    ] {
        let (status, body, _) = f.send(post_run(hosts, origins)).await;
        assert_json_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    }
    assert_eq!(runs_count(&f).await, 0, "nothing was queued");
    let (status, _, _) = f.send(post_run(&[HOST], &[own])).await;
    assert_eq!(status, StatusCode::ACCEPTED, "one of each is served");
}

#[tokio::test]
async fn the_bearer_scheme_is_taken_in_any_case() {
    let token = "0123456789abcdef0123";
    let f = fixture(|c| c.token = Some(token.into()));
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let request = Request::get("/api/runs")
            .header(header::HOST, HOST)
            .header(header::AUTHORIZATION, format!("{scheme} {token}"))
            .body(Body::empty())
            .unwrap();
        let (status, body, _) = f.send(request).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{scheme}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let request = Request::get("/api/runs")
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, format!("Basic {token}"))
        .body(Body::empty())
        .unwrap();
    let (status, body, _) = f.send(request).await;
    assert_json_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}
