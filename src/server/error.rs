//! The one error type at the HTTP edge. Every non-2xx answer is
//! `{"error": code, "detail": sentence, "diagnostics"?: [...]}`; internal failures are logged
//! on the server and answered with a generic sentence, never with their text.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use weft_engine::Diagnostic;

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    InvalidWorkflow(String, Vec<Diagnostic>),
    NotFound(String),
    /// A stale write or a clash; `revision` is the current one when a workflow changed.
    Conflict(String, Option<String>),
    Forbidden(String),
    Unauthorized,
    PayloadTooLarge(String),
    UnsupportedMediaType(String),
    /// Parsing or validating the request's workflow did not finish within the server's
    /// deadline.
    DeadlineExceeded(String),
    /// Logged with its cause; the client sees only that something failed inside.
    Internal(String),
    /// Any other refusal axum makes before a handler runs (405, 422, a WebSocket upgrade
    /// without its headers), with the code its status is named by.
    Other(StatusCode, String),
}

impl ApiError {
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(format!("{context}: {cause}"))
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::InvalidWorkflow(..) => (StatusCode::BAD_REQUEST, "invalid_workflow"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(..) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::DeadlineExceeded(_) => (StatusCode::SERVICE_UNAVAILABLE, "deadline_exceeded"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Other(status, _) => (*status, other_code(*status)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut body = serde_json::Map::new();
        body.insert("error".into(), code.into());
        let detail = match self {
            ApiError::BadRequest(d)
            | ApiError::NotFound(d)
            | ApiError::Forbidden(d)
            | ApiError::PayloadTooLarge(d)
            | ApiError::UnsupportedMediaType(d)
            | ApiError::DeadlineExceeded(d)
            | ApiError::Other(_, d) => d,
            ApiError::InvalidWorkflow(d, diagnostics) => {
                body.insert(
                    "diagnostics".into(),
                    serde_json::to_value(diagnostics).unwrap_or_default(),
                );
                d
            }
            ApiError::Conflict(d, revision) => {
                if let Some(r) = revision {
                    body.insert("revision".into(), r.into());
                }
                d
            }
            ApiError::Unauthorized => {
                "a token is required: Authorization: Bearer <token> (or ?token=)".into()
            }
            ApiError::Internal(cause) => {
                eprintln!("weft serve: internal error: {cause}");
                "the server failed to handle this request; see its log".into()
            }
        };
        body.insert("detail".into(), detail.into());
        let mut response = (status, Json(serde_json::Value::Object(body))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The code of a status without its own variant.
fn other_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

impl ApiError {
    /// The error for a refusal axum answered itself (`status` and its plain-text `text`).
    pub fn from_rejection(status: StatusCode, text: &str) -> Self {
        let text = text.trim().to_string();
        match status {
            StatusCode::BAD_REQUEST => ApiError::BadRequest(text),
            StatusCode::NOT_FOUND => ApiError::NotFound(text),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(format!(
                "{text}; the body is over this server's limit (see docs/api.md, Limits)"
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized,
            StatusCode::FORBIDDEN => ApiError::Forbidden(text),
            // A server-side failure's text may say too much: log it, answer the generic one.
            s if s.is_server_error() => ApiError::Internal(text),
            other => ApiError::Other(other, text),
        }
    }
}

/// axum answers its own refusals (a query that does not parse, a body over the limit, a
/// method a route lacks, a WebSocket upgrade without its headers) in plain text, some with an
/// empty body; clients of the API read one JSON shape, so those are rewritten into it here.
pub async fn json_refusals(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let mut text = String::from_utf8_lossy(&text).into_owned();
    if text.trim().is_empty() {
        text = status.canonical_reason().unwrap_or("refused").to_string();
    }
    let mut rewritten = ApiError::from_rejection(status, &text).into_response();
    // Keep what the refusal said beside its body (Allow on a 405, WWW-Authenticate).
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}
