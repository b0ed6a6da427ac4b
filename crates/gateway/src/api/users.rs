//! Users over JSON (admins: gateway:users:*). Changes are audited and apply on the user's
//! next request.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiPath, Caller};
use crate::app::{AppState, Peer};
use crate::audit::Decision;
use crate::error::ApiError;
use crate::identity::manage::{self, Actor, ManageError};
use crate::store::{LastAdmin, StoreError};

fn actor(caller: &Caller, peer: Peer) -> Actor {
    let principal = &caller.principal;
    Actor {
        actor_type: principal.actor_type(),
        email: principal.email().map(str::to_string),
        token_name: principal.token_name().map(str::to_string),
        label: principal
            .email()
            .map(str::to_string)
            .or_else(|| principal.token_name().map(|t| format!("token:{t}")))
            .unwrap_or_else(|| "unknown".into()),
        client_ip: Some(peer.ip.to_string()),
        user_agent: caller.user_agent().map(str::to_string),
        // Every change here is made after `Caller::require` allowed it.
        decision: Decision::Allow,
    }
}

fn manage_error(e: ManageError) -> ApiError {
    match e {
        ManageError::Invalid(m) => ApiError::BadRequest(m),
        ManageError::Store(StoreError::NotFound(_)) => ApiError::NotFound,
        ManageError::Store(StoreError::Conflict(m)) => {
            ApiError::Conflict(format!("{m} already exists"))
        }
        ManageError::Store(StoreError::Ambiguous(m)) => ApiError::BadRequest(m),
        ManageError::Store(e @ StoreError::LastAdmin(_)) => ApiError::Conflict(e.to_string()),
        ManageError::Store(e) => ApiError::store(e),
        ManageError::Audit(_) => ApiError::AuditUnavailable,
        ManageError::Interrupted(e) => {
            tracing::error!(error = %e, "a user change did not finish");
            ApiError::Internal
        }
    }
}

/// `GET /api/v1/users`
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&state, "gateway:users:list").await?;
    let users = state.store.list_users().await.map_err(ApiError::store)?;
    Ok(Json(users).into_response())
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize)]
pub struct NewUser {
    email: String,
    role: String,
    #[serde(default)]
    name: String,
}

/// `POST /api/v1/users`
pub async fn add(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    super::ApiJson(body): super::ApiJson<NewUser>,
) -> Result<Response, ApiError> {
    caller.require(&state, "gateway:users:create").await?;
    let user = manage::add_user(
        &state.store,
        &state.audit,
        &actor(&caller, peer),
        &body.email,
        &body.name,
        &body.role,
    )
    .await
    .map_err(manage_error)?;
    Ok((http::StatusCode::CREATED, Json(user)).into_response())
}

/// Body of `PUT /api/v1/users/{email}/role`.
#[derive(Debug, Deserialize)]
pub struct RoleBody {
    role: String,
}

/// `PUT /api/v1/users/{email}/role`
pub async fn set_role(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    ApiPath(email): ApiPath<String>,
    super::ApiJson(body): super::ApiJson<RoleBody>,
) -> Result<Response, ApiError> {
    caller.require(&state, "gateway:users:update").await?;
    // With their session or a token acting for them: an admin demoting themselves may leave
    // nobody able to manage users over HTTP.
    if caller.principal.email() == Some(gateway_core::text::email_key(&email).as_str()) {
        return Err(ApiError::BadRequest(
            "you cannot change your own role; ask another admin".into(),
        ));
    }
    let user = manage::set_user_role(
        &state.store,
        &state.audit,
        &actor(&caller, peer),
        &email,
        &body.role,
        LastAdmin::Keep,
    )
    .await
    .map_err(manage_error)?;
    Ok(Json(user).into_response())
}

/// `POST /api/v1/users/{email}/lock`
pub async fn lock(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    ApiPath(email): ApiPath<String>,
) -> Result<Response, ApiError> {
    set_locked(state, peer, caller, email, true).await
}

/// `POST /api/v1/users/{email}/unlock`
pub async fn unlock(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    ApiPath(email): ApiPath<String>,
) -> Result<Response, ApiError> {
    set_locked(state, peer, caller, email, false).await
}

async fn set_locked(
    state: AppState,
    peer: Peer,
    caller: Caller,
    email: String,
    locked: bool,
) -> Result<Response, ApiError> {
    let permission = if locked {
        "gateway:users:lock"
    } else {
        "gateway:users:unlock"
    };
    caller.require(&state, permission).await?;
    if locked && caller.principal.email() == Some(gateway_core::text::email_key(&email).as_str()) {
        return Err(ApiError::BadRequest("you cannot lock yourself out".into()));
    }
    let user = manage::set_user_locked(
        &state.store,
        &state.audit,
        &actor(&caller, peer),
        &email,
        locked,
        LastAdmin::Keep,
    )
    .await
    .map_err(manage_error)?;
    Ok(Json(user).into_response())
}
