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
use serde::Deserialize;
use serde_json::json;

use super::{ApiJson, ApiPath, Caller};
use crate::app::{AppState, Peer};
use crate::error::ApiError;
use crate::identity::manage;
use crate::identity::minting::{self, MintAsk, MintRefused};
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
    token: Result<ApiPath<String>, ApiError>,
) -> Result<Response, ApiError> {
    caller
        .require_privileged(&state, "gateway:tokens:revoke")
        .await?;
    let ApiPath(token) = token?;
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
    /// A role (built-in or custom)…
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
    body: Result<ApiJson<Create>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(&state, CREATE).await?;
    let ApiJson(body) = body?;
    let asked = json!({
        "name": body.name,
        "role": body.role,
        "permissions": body.permissions,
        "owner": body.owner,
        "expires_in": body.expires_in,
    });
    let refuse = |err: ApiError, reason: &str| {
        let mut details = asked.clone();
        details["reason"] = reason.into();
        caller.refuse(&state, CREATE, err, details)
    };
    // Right now, not within the step-up window.
    let code = body.code.as_deref();
    caller
        .require_code_now(&state, CREATE, code, "minting an API token", &asked)
        .await?;
    let ask = MintAsk {
        name: body.name.clone(),
        role: body.role.clone(),
        permissions: body.permissions.clone(),
        expires_in: body.expires_in.clone(),
        owner: body.owner.clone(),
    };
    let bounded = minting::bounded_by_creator(&state.store, &caller.principal, &ask, now_ms());
    let request = match bounded.await {
        Ok(request) => request,
        Err(MintRefused::Store(e)) => return Err(ApiError::store(e)),
        Err(MintRefused::Invalid(m)) => {
            return Err(refuse(ApiError::BadRequest(m), "invalid").await);
        }
        Err(MintRefused::MoreThanYouHold(m)) => {
            return Err(refuse(ApiError::Escalation(m), "more_than_you_hold").await);
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
