//! The checks every request passes before a handler sees it: the Host header (DNS rebinding),
//! the Origin header (a page on another site), and the access token when one is configured.
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;

pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match check(&state, &request) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

fn check(state: &AppState, request: &Request) -> Result<(), ApiError> {
    let allowed = &state.config.allowed_hosts;
    let headers = request.headers();
    // HTTP/1.1 clients always send Host; a browser tricked by DNS rebinding sends the
    // attacker's name, which is not in the list.
    if let Some(host) = headers.get(HOST) {
        let host = host.to_str().unwrap_or("");
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
            return Err(ApiError::Forbidden(format!(
                "Host '{host}' is not this server's address; use http://127.0.0.1 or start with --allow-host"
            )));
        }
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .is_some_and(|rest| allowed.iter().any(|a| a.eq_ignore_ascii_case(rest)));
        if !same {
            return Err(ApiError::Forbidden(
                "cross-origin requests are refused (the Origin is not this server)".into(),
            ));
        }
    }
    if let Some(token) = &state.config.token {
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let query = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")));
        let given = bearer.or(query).unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(())
}

/// Compares without stopping at the first differing byte (no timing hint about the token).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
