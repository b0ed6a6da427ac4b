//! `POST /api/v1/auth/mfa/verify`: a signed-in session gives a code from its person's
//! authenticator app (or a backup code), so that privileged changes are let through for the
//! next `MFA_STEP_UP_SECS` (see `mfa::step_up`). For the CLI and scripts; the web pages have a
//! form of their own (`/account/mfa/verify`).
//!
//! Also `POST /api/v1/auth/mfa/key/start` and `…/key/poll`: a CLI session asks its person to
//! confirm with a security key in their browser, and collects the proof that then stands in
//! for a code (see [`crate::mfa::cli_key`]).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use super::{ApiJson, Caller};
use crate::app::{AppState, Peer};
use crate::audit::EventKind;
use crate::error::ApiError;
use crate::mfa::cli_key::{self, Collected};
use crate::mfa::{self, CodeCheck, MfaError, keys};
use crate::store::now_ms;
use crate::web;

/// The audit action of a code given at sign-in or to step up.
pub const ACTION: &str = "gateway:auth:mfa";

/// Body of `POST /api/v1/auth/mfa/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    code: String,
}

/// `POST /api/v1/auth/mfa/verify` with `{"code": "123456"}`.
pub async fn verify(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    body: Result<ApiJson<Verify>, ApiError>,
) -> Result<Response, ApiError> {
    // A token is refused (and audited) whatever its body, as a permission is.
    let Some(session_id) = caller.principal.session_id() else {
        let err = ApiError::BadRequest(
            "only a signed-in session gives authenticator codes (an API token is not asked for \
             one)"
                .into(),
        );
        return Err(caller
            .refuse(&state, ACTION, err, json!({ "reason": "not_a_session" }))
            .await);
    };
    let ApiJson(body) = body?;
    let factor = match code_given(&state, &caller, &body.code, ACTION, "step_up").await? {
        Some(factor) => factor,
        None => {
            let err = ApiError::BadRequest(
                "you have no authenticator app: set one up on /account/mfa".into(),
            );
            let details = json!({ "stage": "step_up", "reason": "no_authenticator" });
            return Err(caller.refuse(&state, ACTION, err, details).await);
        }
    };
    let now = now_ms();
    // Recorded before the session is let through: a step-up the trail cannot show is none.
    let event = caller.actor(peer).event(
        EventKind::Gateway,
        &crate::request_id::current(),
        ACTION,
        json!({ "stage": "step_up", "factor": factor, "session_id": session_id }),
    );
    if state.audit.record(event).await.is_err() {
        return Err(ApiError::AuditUnavailable);
    }
    mfa::note_proof(&state.store, session_id, now).await;
    let window = state.config.mfa_step_up.as_secs();
    Ok(
        Json(json!({ "status": "verified", "factor": factor, "valid_for_secs": window }))
            .into_response(),
    )
}

/// Checks `code` against the caller's authenticator app (or backup codes), counted towards the
/// lockout as at sign-in: the factor when right, `None` when the caller has no app (or is not
/// a person). A wrong code, or one given while codes are locked out, is refused and audited as
/// a refusal of `action` with `stage` and the reason (`wrong_code`, `locked_out`).
pub(crate) async fn code_given(
    state: &AppState,
    caller: &Caller,
    code: &str,
    action: &str,
    stage: &str,
) -> Result<Option<&'static str>, ApiError> {
    if cli_key::is_proof(code) {
        return key_proof_given(state, caller, code, action, stage).await;
    }
    let checked = async {
        let Some(user_id) = caller.principal.user_id() else {
            return Ok(None);
        };
        mfa::check_users_code(state, user_id, code).await
    };
    let refusal = match checked.await {
        Ok(None) => return Ok(None),
        Ok(Some(CodeCheck::Accepted(factor))) => return Ok(Some(factor)),
        Ok(Some(check)) => match check.refusal() {
            Some(refusal) => refusal,
            None => {
                return Err(ApiError::BadRequest(
                    "code: the six digits your authenticator app shows, or a backup code".into(),
                ));
            }
        },
        Err(MfaError::Store(e)) => return Err(ApiError::store(e)),
        Err(MfaError::Yubico(e)) => {
            tracing::error!(error = %e, "a YubiKey OTP could not be checked");
            return Err(ApiError::YubicoUnavailable);
        }
        Err(e) => {
            tracing::error!(error = %e, "an authenticator code could not be checked");
            return Err(ApiError::StoreUnavailable);
        }
    };
    let err = ApiError::MfaCodeRefused {
        locked: refusal.locked_until.is_some(),
        message: match refusal.locked_until {
            Some(until) => format!(
                "too many wrong codes: codes are refused until {} UTC",
                web::time(until)
            ),
            None => "that code is not right (or was used already)".into(),
        },
    };
    let mut details = json!({ "stage": stage, "reason": refusal.reason });
    if let (Some(map), serde_json::Value::Object(more)) = (details.as_object_mut(), refusal.details)
    {
        map.extend(more);
    }
    Err(caller.refuse(state, action, err, details).await)
}

/// [`code_given`] for a security key's proof (`rgk_…`, collected by this session after its
/// person confirmed with a key): the factor when it counts, used up. A proof cannot be
/// guessed, so one that does not count is refused without counting towards the lockout.
async fn key_proof_given(
    state: &AppState,
    caller: &Caller,
    proof: &str,
    action: &str,
    stage: &str,
) -> Result<Option<&'static str>, ApiError> {
    let (Some(user_id), Some(session_id)) =
        (caller.principal.user_id(), caller.principal.session_id())
    else {
        return Ok(None);
    };
    // Keys go beside the app: with the app gone (and its keys with it), no proof counts.
    if !super::has_app(state, user_id).await? {
        return Ok(None);
    }
    let taken = cli_key::take_proof(&state.store, proof, session_id, now_ms())
        .await
        .map_err(ApiError::store)?;
    if taken {
        return Ok(Some(keys::FACTOR));
    }
    let err = ApiError::MfaCodeRefused {
        locked: false,
        message: "that security key confirmation does not count: it was used already, it \
                  expired, or it is another session's; confirm again"
            .into(),
    };
    let details = json!({ "stage": stage, "reason": "key_proof_refused" });
    Err(caller.refuse(state, action, err, details).await)
}

/// Body of `POST /api/v1/auth/mfa/key/poll`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPoll {
    id: String,
}

/// `POST /api/v1/auth/mfa/key/start`: a session asks its person to confirm with a security
/// key in their browser: the confirmation's id (to poll with), the link to open and the code
/// both show.
pub async fn key_start(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
) -> Result<Response, ApiError> {
    let (Some(user_id), Some(session_id)) =
        (caller.principal.user_id(), caller.principal.session_id())
    else {
        let err = ApiError::BadRequest(
            "only a signed-in session confirms with a security key (an API token is not asked \
             for codes)"
                .into(),
        );
        let details = json!({ "stage": "cli_key", "reason": "not_a_session" });
        return Err(caller.refuse(&state, ACTION, err, details).await);
    };
    let Some(base) = state
        .keys
        .as_ref()
        .and(state.browser_url())
        .map(|u| u.origin().ascii_serialization())
    else {
        return Err(ApiError::Conflict(
            "security keys are off on this gateway (browsers reach it by an IP address): give \
             a code from your authenticator app"
                .into(),
        ));
    };
    let has_keys = !state
        .store
        .security_keys_of(user_id)
        .await
        .map_err(ApiError::store)?
        .is_empty();
    if !has_keys {
        return Err(ApiError::Conflict(
            "you have no security keys: add one on /account/mfa, or give a code from your \
             authenticator app"
                .into(),
        ));
    }
    let started = cli_key::start(&state.store, user_id, session_id, now_ms())
        .await
        .map_err(ApiError::store)?;
    // On the trail before the link is handed out: who asked for a key's confirmation, and
    // when, whether or not anyone gives it (a confirmation asked for by a stolen session and
    // sent to its person shows here). Not the id: it is the link's secret.
    let event = caller.actor(peer).event(
        EventKind::Gateway,
        &crate::request_id::current(),
        ACTION,
        json!({ "stage": "cli_key_start", "session_id": session_id, "code": started.code }),
    );
    if state.audit.record(event).await.is_err() {
        return Err(ApiError::AuditUnavailable);
    }
    let body = json!({
        "id": started.id,
        "code": started.code,
        "browser_url": format!("{base}/account/mfa/key?id={}", started.id),
        "poll_interval_secs": 1,
        "expires_in_secs": cli_key::REQUEST_MS / 1000,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `POST /api/v1/auth/mfa/key/poll` with `{"id": …}`: `pending` (202) until the person
/// confirmed; then `confirmed` with the proof, once; then `expired` (410). Only the session
/// that asked may poll: for anyone else the id does not exist (404).
pub async fn key_poll(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<KeyPoll>,
) -> Result<Response, ApiError> {
    let Some(session_id) = caller.principal.session_id() else {
        return Err(ApiError::NoSuch("key confirmation".into()));
    };
    let collected = cli_key::collect(&state.store, &body.id, session_id, now_ms())
        .await
        .map_err(ApiError::store)?;
    let answer = match collected {
        Err(_) => return Err(ApiError::NoSuch("key confirmation".into())),
        Ok(Collected::Pending) => (StatusCode::ACCEPTED, json!({ "status": "pending" })),
        Ok(Collected::Proof(proof)) => (
            StatusCode::OK,
            json!({
                "status": "confirmed", "proof": proof,
                "valid_for_secs": cli_key::PROOF_MS / 1000,
            }),
        ),
        Ok(Collected::Over) => (
            StatusCode::GONE,
            json!({
                "status": "expired",
                "error": "this confirmation expired or was collected already: ask again",
            }),
        ),
    };
    let mut response = (answer.0, Json(answer.1)).into_response();
    // A proof is a credential for a moment: no cache may keep it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
