//! The checks every request passes before a handler sees it: the Host header (DNS rebinding),
//! the Origin header (a page on another site), and the access token when one is configured.
use axum::extract::{Request, State};
use axum::http::header::{HeaderName, AUTHORIZATION, HOST, ORIGIN};
use axum::http::HeaderMap;
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
    // Exactly one Host: without it (HTTP/1.0, or a hand-made 1.1 request) there is nothing to
    // check against DNS rebinding, and with two a proxy and this server may each read a
    // different one. A browser tricked by rebinding sends the attacker's name, not in the list.
    let host = match one(headers, HOST)? {
        Some(host) => host,
        None => {
            return Err(ApiError::BadRequest(
                "a Host header is required (send HTTP/1.1 with 'Host: 127.0.0.1:PORT')".into(),
            ))
        }
    };
    if !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
        return Err(ApiError::Forbidden(format!(
            "Host '{host}' is not this server's address; use http://127.0.0.1 or start with --allow-host"
        )));
    }
    if let Some(origin) = one(headers, ORIGIN)? {
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
        let bearer = one(headers, AUTHORIZATION)?.and_then(bearer_token);
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

/// The value of a header that may appear at most once; a repeated one is refused (the first
/// and the last would mean different things to different readers), so is one not in ASCII.
fn one(headers: &HeaderMap, name: HeaderName) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(&name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(format!(
            "the {name} header is given more than once; send it once"
        )));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| ApiError::BadRequest(format!("the {name} header is not plain ASCII text")))
}

/// The token of `Authorization: Bearer <token>`; the scheme's name is case-insensitive
/// (RFC 9110, 11.1), so `bearer` and `BEARER` are the same scheme.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without stopping at the first differing byte (no timing hint about the token).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for header in ["Bearer abc", "bearer abc", "BEARER  abc ", " bEaReR abc"] {
            assert_eq!(bearer_token(header), Some("abc"), "{header:?}");
        }
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
