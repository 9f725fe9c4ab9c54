//! The in-process server the route tests share (`mod common;`): `weft serve`'s router over a
//! temporary directory, driven with tower's `oneshot` (no socket).
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;
use weft::server::{app, AppState, Config, Server};

/// The Host header every request carries (one the guard accepts).
pub const HOST: &str = "127.0.0.1:8188";

/// The repository root (models, fixtures).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// An 8x8 red PNG.
pub fn small_png() -> Vec<u8> {
    let mut out = Vec::new();
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]))
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub state: AppState,
    /// The Content-Type `call` gives a JSON body, if any.
    content_type: Option<&'static str>,
}

impl Fixture {
    /// A server on CPU over a fresh directory (workflows/, data/, the repository's models),
    /// uploads limited to 1 MiB; `adjust` changes the rest of the configuration.
    pub fn start(content_type: Option<&'static str>, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let workflows = dir.path().join("workflows");
        std::fs::create_dir_all(&workflows).unwrap();
        let mut config = Config::new(workflows, dir.path().join("data"), repo().join("models"));
        config.upload_limit = 1 << 20;
        adjust(&mut config);
        let executor = weft_engine::ExecutorConfig {
            device: tch::Device::Cpu,
            ..Default::default()
        };
        let state = Server::start(config, executor).unwrap();
        Self {
            dir,
            state,
            content_type,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Vec<u8>, HeaderMap) {
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        (status, body, headers)
    }

    /// A request with an optional JSON body; the reply's JSON (null when it is not JSON).
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, HOST);
        let body = match body {
            Some(v) => {
                if let Some(content_type) = self.content_type {
                    request = request.header(header::CONTENT_TYPE, content_type);
                }
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let (status, bytes, _) = self.send(request.body(body).unwrap()).await;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, uri, Some(body)).await
    }

    #[allow(dead_code)] // only some of the test files put
    pub async fn put(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, uri, Some(body)).await
    }
}
