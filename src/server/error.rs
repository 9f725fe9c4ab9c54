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
            | ApiError::DeadlineExceeded(d) => d,
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
