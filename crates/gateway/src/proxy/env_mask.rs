//! Environment values in the rack's release answers, masked for callers who may see releases
//! but not the environment. The rack returns every release with the app's environment,
//! values included (`convox releases`, `convox env`, and the answer to `convox env set`); a
//! caller holding a release permission without `convox:env:read` (a custom role, a token with
//! explicit permissions) gets the names with each value masked, and one without
//! `gateway:secrets:read` the names of the app's secret env vars ([`crate::app_rules`]) with
//! their values masked. (What comes back masked keeps its value: see `env_rules`.)
//!
//! Such an answer is read whole (up to [`LIMIT`]), masked and sent on: a release list is small,
//! and an answer that cannot be checked — too large, not JSON — is not relayed (fail closed).

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, header};

use crate::app_rules::{self, AppRules};
use crate::error::ApiError;
use crate::identity::Principal;

use super::body::{Counted, Overrule, read_whole};

/// The permission to read environment values.
pub const ENV_READ: &str = "convox:env:read";

/// The routes whose answers carry releases, by permission.
const RELEASE_PERMISSIONS: &[&str] = &[
    "convox:releases:list",
    "convox:releases:read",
    "convox:releases:create",
    "convox:rack:releases",
];

/// The most of a release answer read to mask it.
pub const LIMIT: usize = 16 * 1024 * 1024;

/// Whether requests needing `permission` carry the app's environment (in their answer, or
/// their body: a release creation).
pub fn carries_env(permission: &str) -> bool {
    RELEASE_PERMISSIONS.contains(&permission)
}

/// What to mask in an answer.
#[derive(Debug)]
pub enum Masking {
    /// Every value.
    All,
    /// The values of the app's secret env vars.
    Secrets(AppRules),
}

/// What the answer to a request needing `permission` must have masked for `principal`, if
/// anything, given the app's `rules` (read by the caller only when the secret rule could
/// bind this caller: see `env_rules::needs_rules`).
pub fn plan(permission: &str, principal: &Principal, rules: &AppRules) -> Option<Masking> {
    if !carries_env(permission) {
        return None;
    }
    if !principal.permissions.allows(ENV_READ) {
        return Some(Masking::All);
    }
    if principal.permissions.allows(app_rules::READ_SECRETS) || rules.secret_env.is_empty() {
        return None;
    }
    Some(Masking::Secrets(rules.clone()))
}

/// The app a path under `/apps/{app}/` names.
pub fn app_of(decoded_path: &str) -> Option<&str> {
    let mut segments = decoded_path.trim_start_matches('/').split('/');
    match (segments.next(), segments.next()) {
        (Some("apps"), Some(app)) if !app.is_empty() => Some(app),
        _ => None,
    }
}

/// `response` with the environment values `masking` names masked in the releases it carries.
/// Errors and empty answers pass as they are; an answer too large or not JSON is refused with
/// `502`, which `overrule` records as the request's outcome.
pub async fn masked(
    response: Response,
    masking: &Masking,
    counted: Counted,
    overrule: &Overrule,
) -> Result<Response, ApiError> {
    let (mut parts, body) = response.into_parts();
    if !parts.status.is_success() {
        return Ok(Response::from_parts(parts, body));
    }
    let read = read_whole(body, LIMIT, counted, overrule, || {
        ApiError::RackUnreachable(format!(
            "the rack's answer about releases could not be read whole to mask its environment \
             values (at most {} MiB; ask for fewer with ?limit=)",
            LIMIT >> 20
        ))
    })
    .await?;
    if read.bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Response::from_parts(parts, Body::from(read.bytes.clone())));
    }
    let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&read.bytes) else {
        let err = ApiError::RackUnreachable(
            "the rack's answer about releases is not JSON, so its environment values cannot be \
             masked: not relayed"
                .into(),
        );
        overrule.set(&err);
        return Err(err);
    };
    match masking {
        Masking::All => {
            gateway_core::redact::mask_release_env(&mut answer);
        }
        Masking::Secrets(rules) => {
            app_rules::env::mask_values(&mut answer, &|name| rules.is_secret(name));
        }
    }
    let body = serde_json::to_vec(&answer).map_err(|e| {
        let err = ApiError::RackUnreachable(format!("masking environment values: {e}"));
        overrule.set(&err);
        err
    })?;
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Ok(Response::from_parts(parts, Body::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn answer(status: StatusCode, body: impl Into<Body>) -> Response {
        let mut r = Response::new(body.into());
        *r.status_mut() = status;
        r
    }

    async fn masked_all(r: Response) -> Result<Response, ApiError> {
        masked(r, &Masking::All, Counted::Read, &Overrule::default()).await
    }

    async fn text(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn releases_lose_their_values_and_keep_a_true_length() {
        let rack = r#"[{"id":"R1","env":"DB=postgres://u:pw@h/db\nMODE=prod"}]"#;
        let r = masked_all(answer(StatusCode::OK, rack))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let length = r.headers().get(header::CONTENT_LENGTH).cloned();
        let body = text(r).await;
        assert!(
            !body.contains("pw@h") && body.contains("DB=[redacted]"),
            "{body}"
        );
        assert_eq!(length, Some(HeaderValue::from(body.len())));
    }

    #[tokio::test]
    async fn refusals_and_empty_answers_pass_as_they_are() {
        let refusal = r#"{"error":"no such app: nope"}"#;
        let r = masked_all(answer(StatusCode::NOT_FOUND, refusal))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(text(r).await, refusal);
        let r = masked_all(answer(StatusCode::OK, ""))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(text(r).await, "");
    }

    #[tokio::test]
    async fn an_answer_that_cannot_be_checked_is_not_relayed() {
        let not_json = masked_all(answer(StatusCode::OK, "DB=postgres://u:pw@h/db")).await;
        assert!(
            matches!(&not_json, Err(ApiError::RackUnreachable(m)) if m.contains("not JSON")),
            "{not_json:?}"
        );
        let huge = vec![b' '; LIMIT + 1];
        let too_large = masked_all(answer(StatusCode::OK, huge)).await;
        assert!(
            matches!(&too_large, Err(ApiError::RackUnreachable(m)) if m.contains("16 MiB")),
            "{too_large:?}"
        );
    }
}
