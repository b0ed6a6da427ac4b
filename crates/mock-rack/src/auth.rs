//! HTTP Basic authentication against the rack token, the way the rack does it:
//! only the password is compared (any user name except `jwt`); a failure is a
//! 401 with `WWW-Authenticate: Basic realm="convox"` and body
//! `invalid authentication`. WebSocket routes are upgraded *before* the check
//! (as in the rack's `stdapi`), so there the failure arrives as a text message
//! `ERROR: invalid authentication\n`; the middleware records the outcome in an
//! [`AuthOutcome`] request extension for the socket handlers.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::error::ApiError;
use crate::state::Shared;

/// Result of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Credentials accepted.
    Allowed,
    /// Rejected, with the rack's message.
    Denied(String),
}

/// Checks the `Authorization` header against `token`.
pub fn check(headers: &axum::http::HeaderMap, token: &str) -> AuthOutcome {
    let creds = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        })
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    let (user, pass) = match creds.as_deref().and_then(|c| c.split_once(':')) {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => (String::new(), String::new()),
    };
    if user == "jwt" {
        return AuthOutcome::Denied("invalid authentication: token is malformed".into());
    }
    if !token.is_empty() && !constant_time_eq(token.as_bytes(), pass.as_bytes()) {
        return AuthOutcome::Denied("invalid authentication".into());
    }
    AuthOutcome::Allowed
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `req` is a WebSocket upgrade on one of the socket routes (logs,
/// exec). Only those defer the check; everything else is refused up front.
fn is_socket_upgrade(req: &Request) -> bool {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let socket_route = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| p.as_str().ends_with("/logs") || p.as_str().ends_with("/exec"));
    upgrade && socket_route
}

/// Middleware applied to every known route.
pub async fn require_token(
    State(shared): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let outcome = check(req.headers(), &shared.token);
    if is_socket_upgrade(&req) {
        req.extensions_mut().insert(outcome);
        return next.run(req).await;
    }
    match outcome {
        AuthOutcome::Allowed => next.run(req).await,
        AuthOutcome::Denied(msg) => ApiError::unauthorized(msg).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn basic(user: &str, pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        if let Ok(v) = HeaderValue::from_str(&format!("Basic {v}")) {
            h.insert(header::AUTHORIZATION, v);
        }
        h
    }

    #[test]
    fn checks_password_only() {
        assert_eq!(check(&basic("convox", "t0k"), "t0k"), AuthOutcome::Allowed);
        assert_eq!(check(&basic("anyone", "t0k"), "t0k"), AuthOutcome::Allowed);
        assert!(matches!(
            check(&basic("convox", "bad"), "t0k"),
            AuthOutcome::Denied(_)
        ));
        assert!(matches!(
            check(&HeaderMap::new(), "t0k"),
            AuthOutcome::Denied(_)
        ));
        assert!(matches!(
            check(&basic("jwt", "t0k"), "t0k"),
            AuthOutcome::Denied(_)
        ));
        assert_eq!(check(&HeaderMap::new(), ""), AuthOutcome::Allowed);
    }
}
