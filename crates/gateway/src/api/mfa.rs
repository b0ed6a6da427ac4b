//! `POST /api/v1/auth/mfa/verify`: a signed-in session gives a code from its person's
//! authenticator app (or a backup code), so that privileged changes are let through for the
//! next `MFA_STEP_UP_SECS` (see `mfa::step_up`). For the CLI and scripts; the web pages have a
//! form of their own (`/account/mfa/verify`).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiJson, Caller};
use crate::app::{AppState, Peer};
use crate::audit::EventKind;
use crate::error::ApiError;
use crate::mfa::{self, CodeCheck, MfaError};
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
    ApiJson(body): ApiJson<Verify>,
) -> Result<Response, ApiError> {
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
    let checked = async {
        let Some(user_id) = caller.principal.user_id() else {
            return Ok(None);
        };
        mfa::check_users_code(state, user_id, code).await
    };
    let (err, details) = match checked.await {
        Ok(None) => return Ok(None),
        Ok(Some(CodeCheck::Accepted(factor))) => return Ok(Some(factor)),
        Ok(Some(CodeCheck::Malformed)) => {
            return Err(ApiError::BadRequest(
                "code: the six digits your authenticator app shows, or a backup code".into(),
            ));
        }
        Ok(Some(CodeCheck::Wrong {
            failures,
            locked_until: None,
        })) => (
            ApiError::MfaCodeRefused {
                locked: false,
                message: "that code is not right (or was used already)".into(),
            },
            json!({ "stage": stage, "reason": "wrong_code", "failures": failures }),
        ),
        Ok(Some(
            check @ (CodeCheck::Wrong {
                locked_until: Some(until),
                ..
            }
            | CodeCheck::Locked { until }),
        )) => (
            ApiError::MfaCodeRefused {
                locked: true,
                message: format!(
                    "too many wrong codes: codes are refused until {} UTC",
                    web::time(until)
                ),
            },
            json!({
                "stage": stage, "reason": "locked_out", "until": web::time(until),
                "lockout_started": check.started_lockout(),
            }),
        ),
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
    Err(caller.refuse(state, action, err, details).await)
}
