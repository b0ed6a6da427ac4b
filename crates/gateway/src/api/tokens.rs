//! API tokens over JSON, for admins: list them (`gateway:tokens:list`), create one
//! (`gateway:tokens:create`) and revoke one (`gateway:tokens:revoke`) — a leaked CI token
//! ended, or a new one made, from a laptop, without a shell where the gateway runs.
//!
//! Minting is guarded more than any other change: nobody mints a token holding more than
//! they hold (permissions, life, owner), and a person with an authenticator app gives a code
//! with the request itself, right then — a recent step-up is not enough (a stolen session, or
//! a minute at someone's unlocked laptop, must not leave with a credential that outlives it).
//! A revocation with a session needs a recent code (`mfa::step_up`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gateway_core::rbac::{PermissionSet, Role};
use serde::Deserialize;
use serde_json::json;

use super::{ApiJson, ApiPath, Caller};
use crate::app::{AppState, Peer};
use crate::error::ApiError;
use crate::identity::PrincipalKind;
use crate::identity::manage::{self, TokenRequest};
use crate::store::now_ms;

/// The permission to mint tokens.
pub const CREATE: &str = "gateway:tokens:create";

/// `GET /api/v1/tokens`: every token, newest first, never a secret or its hash.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&state, "gateway:tokens:list").await?;
    let tokens = state.store.list_tokens().await.map_err(ApiError::store)?;
    Ok(Json(tokens).into_response())
}

/// `DELETE /api/v1/tokens/{id_or_name}`: revokes the token with this id, or the one usable
/// token of this name; answers with the revoked token. Audited before it is made.
pub async fn revoke(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    ApiPath(token): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller
        .require_privileged(&state, "gateway:tokens:revoke")
        .await?;
    let revoked =
        manage::revoke_token(&state.store, &state.audit, &caller.actor(peer), &token).await;
    match revoked {
        Ok(row) => Ok(Json(row).into_response()),
        Err(e) => Err(super::users::manage_error(e)),
    }
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Create {
    /// A name to recognise it by.
    name: String,
    /// A built-in role…
    #[serde(default)]
    role: Option<String>,
    /// …or explicit permissions.
    #[serde(default)]
    permissions: Option<Vec<String>>,
    /// Life, e.g. `90d` (`m`, `h`, `d`, `w`).
    #[serde(default)]
    expires_in: Option<String>,
    /// The user it acts for (default: the person creating it).
    #[serde(default)]
    owner: Option<String>,
    /// A code from the creator's authenticator app, when they have one.
    #[serde(default)]
    code: Option<String>,
}

/// `POST /api/v1/tokens`: mints a token; answers `201` with it and its secret, shown this once.
pub async fn create(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    ApiJson(body): ApiJson<Create>,
) -> Result<Response, ApiError> {
    caller.require(&state, CREATE).await?;
    let asked = json!({ "name": body.name, "role": body.role, "permissions": body.permissions, "owner": body.owner, "expires_in": body.expires_in });
    let refuse = |err: ApiError, reason: &str| {
        let mut details = asked.clone();
        details["reason"] = reason.into();
        caller.refuse(&state, CREATE, err, details)
    };
    // Right now, not within the step-up window.
    if caller.principal.session_id().is_some() {
        let code = body.code.as_deref().unwrap_or("");
        let has_app = crate::mfa::required(&state.store, caller.principal.user_id().unwrap_or(0))
            .await
            .map_err(|e| match e {
                crate::mfa::MfaError::Store(e) => ApiError::store(e),
                _ => ApiError::StoreUnavailable,
            })?
            .is_some();
        if has_app {
            if code.trim().is_empty() {
                return Err(refuse(
                    ApiError::MfaCodeNeeded("minting an API token"),
                    "mfa_code_required",
                )
                .await);
            }
            super::mfa::code_given(&state, &caller, code, CREATE, "right_now").await?;
        }
    } else if body.code.is_some() {
        return Err(refuse(
            ApiError::BadRequest(
                "an API token gives no authenticator code: leave out \"code\"".into(),
            ),
            "code_from_a_token",
        )
        .await);
    }
    let request = match bounded_by_creator(&caller, &body) {
        Ok(request) => request,
        Err(err) => {
            let reason = match err {
                ApiError::Escalation(_) => "more_than_you_hold",
                _ => "invalid",
            };
            return Err(refuse(err, reason).await);
        }
    };
    let created =
        manage::create_token(&state.store, &state.audit, &caller.actor(peer), &request).await;
    let (row, secret) = match created {
        Ok(made) => made,
        Err(e) => return Err(super::users::refused(&state, &caller, CREATE, e, asked).await),
    };
    let mut response = (
        StatusCode::CREATED,
        Json(json!({ "token": row, "secret": secret })),
    )
        .into_response();
    // The one time the secret is shown: no cache keeps it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The token `body` asks for, refused when it would hold more than the caller: permissions the
/// caller lacks, an owner other than the caller's (a token's), or a life past the calling
/// token's own expiry (a token that has one passes it on when none is asked for).
fn bounded_by_creator(caller: &Caller, body: &Create) -> Result<TokenRequest, ApiError> {
    let principal = &caller.principal;
    let wanted = match (&body.role, &body.permissions) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give a role or permissions, not both".into(),
            ));
        }
        (Some(role), None) => role
            .parse::<Role>()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?
            .permissions(),
        (None, Some(list)) => {
            PermissionSet::new(list.clone()).map_err(|e| ApiError::BadRequest(e.to_string()))?
        }
        (None, None) => {
            return Err(ApiError::BadRequest(
                "a token needs a role or permissions".into(),
            ));
        }
    };
    let beyond: Vec<&str> = wanted
        .patterns()
        .iter()
        .filter(|p| !principal.permissions.allows(p))
        .map(String::as_str)
        .collect();
    if !beyond.is_empty() {
        return Err(ApiError::Escalation(format!(
            "a token cannot hold more than its creator: you do not hold {}",
            beyond.join(", ")
        )));
    }
    let mut request = TokenRequest {
        name: body.name.clone(),
        role: body.role.clone(),
        permissions: body.permissions.as_ref().map(|p| p.join(",")),
        expires_in: body.expires_in.clone(),
        owner: body.owner.clone(),
    };
    match &principal.kind {
        PrincipalKind::Session { email, .. } => {
            // Locking its creator stops it, unless an admin names another owner.
            request.owner = request.owner.or_else(|| Some(email.clone()));
        }
        PrincipalKind::ApiToken {
            owner_email,
            expires_at,
            ..
        } => {
            let same_owner = match (&request.owner, owner_email) {
                (None, _) => true,
                (Some(asked), Some(own)) => {
                    gateway_core::text::email_key(asked) == gateway_core::text::email_key(own)
                }
                (Some(_), None) => false,
            };
            if !same_owner {
                return Err(ApiError::Escalation(
                    "a token mints tokens only for its own owner".into(),
                ));
            }
            request.owner = owner_email.clone();
            if let Some(until) = expires_at {
                let left_ms = until - now_ms();
                let asked_ms = match &request.expires_in {
                    Some(life) => Some(
                        crate::identity::parse_expiry(life)
                            .map_err(|e| ApiError::BadRequest(e.to_string()))?,
                    ),
                    None => None,
                };
                match asked_ms {
                    Some(ms) if ms > left_ms => {
                        return Err(ApiError::Escalation(
                            "a token cannot mint one that outlives it: ask for a shorter \
                             expires_in"
                                .into(),
                        ));
                    }
                    Some(_) => {}
                    None if left_ms < 60_000 => {
                        return Err(ApiError::Escalation(
                            "this token expires within a minute: it cannot mint another".into(),
                        ));
                    }
                    None => request.expires_in = Some(format!("{}m", left_ms / 60_000)),
                }
            }
        }
    }
    Ok(request)
}
