//! Users over JSON (admins: gateway:users:*). Changes are audited and apply on the user's
//! next request.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

use super::{ApiPath, Caller};
use crate::app::{AppState, Peer};
use crate::error::ApiError;
use crate::identity::manage::{self, ManageError};
use crate::store::{LastAdmin, StoreError};

/// The API error for a change `manage` refused.
pub(super) fn manage_error(e: ManageError) -> ApiError {
    match e {
        ManageError::Invalid(m) => ApiError::BadRequest(m),
        ManageError::Escalation(m) => ApiError::Escalation(m),
        ManageError::Store(StoreError::NotFound(what)) => ApiError::no_such(&what),
        ManageError::Store(e @ StoreError::InUse(_)) => ApiError::Conflict(e.to_string()),
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

/// [`manage_error`], with refused input audited as the refusal of `action` (what was
/// `asked` included): the change itself audits what it refuses later (an unknown user, the
/// last admin), but input it turns away never reached it.
pub(super) async fn refused(
    state: &AppState,
    caller: &Caller,
    action: &str,
    e: ManageError,
    asked: serde_json::Value,
) -> ApiError {
    match e {
        ManageError::Invalid(m) => {
            caller
                .refuse(state, action, ApiError::BadRequest(m), asked)
                .await
        }
        ManageError::Escalation(m) => {
            let mut asked = asked;
            if let Some(map) = asked.as_object_mut() {
                map.insert("reason".into(), "more_than_you_hold".into());
            }
            caller
                .refuse(state, action, ApiError::Escalation(m), asked)
                .await
        }
        other => manage_error(other),
    }
}

/// A change the caller may not make to their own account, audited.
async fn not_on_yourself(
    state: &AppState,
    caller: &Caller,
    action: &str,
    message: &str,
    asked: serde_json::Value,
) -> ApiError {
    let mut asked = asked;
    if let Some(map) = asked.as_object_mut() {
        map.insert("reason".into(), "own_account".into());
    }
    caller
        .refuse(state, action, ApiError::BadRequest(message.into()), asked)
        .await
}

/// Whether `email` names the caller (by session, or a token acting for them).
fn is_caller(caller: &Caller, email: &str) -> bool {
    caller.principal.email() == Some(gateway_core::text::email_key(email).as_str())
}

/// `GET /api/v1/users`
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&state, "gateway:users:list").await?;
    let users = state
        .store
        .list_users_with_mfa()
        .await
        .map_err(ApiError::store)?;
    Ok(Json(users).into_response())
}

/// Body of `POST /api/v1/users`. A field it does not know is refused, not ignored: a
/// `"locked": true` or a misspelt `"rol"` must not pass for a request that was carried out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    email: String,
    role: String,
    #[serde(default)]
    name: String,
    /// A code from the caller's authenticator app, given with the change (right now).
    #[serde(default)]
    code: Option<String>,
}

/// `POST /api/v1/users`
pub async fn add(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    caller: Caller,
    body: Result<super::ApiJson<NewUser>, ApiError>,
) -> Result<Response, ApiError> {
    let action = "gateway:users:create";
    caller.require(&state, action).await?;
    let super::ApiJson(body) = body?;
    let code = super::code_header(&headers, body.code.as_deref());
    let given = json!({ "email": body.email, "role": body.role });
    caller
        .require_now(&state, action, code, "adding someone", &given)
        .await?;
    let added = manage::add_user(
        &state.store,
        &state.audit,
        &caller.actor(peer),
        &body.email,
        &body.name,
        &body.role,
    )
    .await;
    match added {
        Ok(user) => Ok((http::StatusCode::CREATED, Json(user)).into_response()),
        Err(e) => {
            let asked = json!({ "email": body.email, "role": body.role });
            Err(refused(&state, &caller, action, e, asked).await)
        }
    }
}

/// Body of `PUT /api/v1/users/{email}/role`; other fields are refused, as for [`NewUser`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    role: String,
    /// A code from the caller's authenticator app, given with the change (right now).
    #[serde(default)]
    code: Option<String>,
}

/// `PUT /api/v1/users/{email}/role`
pub async fn set_role(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    caller: Caller,
    email: Result<ApiPath<String>, ApiError>,
    body: Result<super::ApiJson<RoleBody>, ApiError>,
) -> Result<Response, ApiError> {
    let action = "gateway:users:update";
    caller.require(&state, action).await?;
    let ApiPath(email) = email?;
    let super::ApiJson(body) = body?;
    let asked = json!({ "email": email, "role": body.role });
    // With their session or a token acting for them: an admin demoting themselves may leave
    // nobody able to manage users over HTTP.
    if is_caller(&caller, &email) {
        let message = "you cannot change your own role; ask another admin";
        return Err(not_on_yourself(&state, &caller, action, message, asked).await);
    }
    let code = super::code_header(&headers, body.code.as_deref());
    caller
        .require_now(&state, action, code, "changing someone's role", &asked)
        .await?;
    let changed = manage::set_user_role(
        &state.store,
        &state.audit,
        &caller.actor(peer),
        &email,
        &body.role,
        LastAdmin::Keep,
    )
    .await;
    match changed {
        Ok(user) => Ok(Json(user).into_response()),
        Err(e) => Err(refused(&state, &caller, action, e, asked).await),
    }
}

/// `POST /api/v1/users/{email}/lock` (a code in `X-MFA-Code`, right now)
pub async fn lock(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    caller: Caller,
    email: Result<ApiPath<String>, ApiError>,
) -> Result<Response, ApiError> {
    set_locked(state, peer, &headers, caller, email, true).await
}

/// `POST /api/v1/users/{email}/unlock` (a code in `X-MFA-Code`, right now)
pub async fn unlock(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    caller: Caller,
    email: Result<ApiPath<String>, ApiError>,
) -> Result<Response, ApiError> {
    set_locked(state, peer, &headers, caller, email, false).await
}

async fn set_locked(
    state: AppState,
    peer: Peer,
    headers: &HeaderMap,
    caller: Caller,
    email: Result<ApiPath<String>, ApiError>,
    locked: bool,
) -> Result<Response, ApiError> {
    let (permission, what) = if locked {
        ("gateway:users:lock", "locking someone out")
    } else {
        ("gateway:users:unlock", "unlocking someone")
    };
    caller.require(&state, permission).await?;
    let ApiPath(email) = email?;
    let asked = json!({ "email": email });
    // Locking yourself out leaves you no way back; unlocking yourself could never be needed
    // (a locked user cannot call this), so neither is made on the caller's own account.
    if is_caller(&caller, &email) {
        let message = if locked {
            "you cannot lock yourself out"
        } else {
            "you cannot unlock yourself"
        };
        return Err(not_on_yourself(&state, &caller, permission, message, asked).await);
    }
    let code = super::code_header(headers, None);
    caller
        .require_now(&state, permission, code, what, &asked)
        .await?;
    let changed = manage::set_user_locked(
        &state.store,
        &state.audit,
        &caller.actor(peer),
        &email,
        locked,
        LastAdmin::Keep,
    )
    .await;
    match changed {
        Ok(user) => Ok(Json(user).into_response()),
        Err(e) => Err(refused(&state, &caller, permission, e, asked).await),
    }
}

/// `DELETE /api/v1/users/{email}/mfa` (`gateway:mfa:reset`): removes someone's authenticator
/// app and backup codes (a lost phone), as `rack-gateway-server users reset-mfa` does. Not on
/// your own: removing yours needs a current code (`/account/mfa`).
pub async fn reset_mfa(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    caller: Caller,
    email: Result<ApiPath<String>, ApiError>,
) -> Result<Response, ApiError> {
    let permission = "gateway:mfa:reset";
    caller.require(&state, permission).await?;
    let ApiPath(email) = email?;
    let asked = json!({ "email": email, "factor": "totp" });
    if is_caller(&caller, &email) {
        let message = "you cannot reset your own authenticator app: remove it on /account/mfa \
                       with a current code";
        return Err(not_on_yourself(&state, &caller, permission, message, asked).await);
    }
    let what = "resetting someone's authenticator app";
    let code = super::code_header(&headers, None);
    caller
        .require_now(&state, permission, code, what, &asked)
        .await?;
    match manage::reset_mfa(&state.store, &state.audit, &caller.actor(peer), &email).await {
        Ok(user) => Ok(Json(user).into_response()),
        Err(e) => Err(refused(&state, &caller, permission, e, asked).await),
    }
}

/// `DELETE /api/v1/users/{email}/trusted-browsers`: forgets every browser someone trusted at a
/// sign-in (a lost laptop), so their next sign-in asks for their code again
/// (`gateway:sessions:manage`, as for ending their sessions: it only takes access away).
/// Audited before it is made; the user and how many were forgotten.
pub async fn forget_browsers(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    email: Result<ApiPath<String>, ApiError>,
) -> Result<Response, ApiError> {
    let permission = "gateway:sessions:manage";
    caller.require(&state, permission).await?;
    let ApiPath(email) = email?;
    let forgotten =
        manage::forget_browsers(&state.store, &state.audit, &caller.actor(peer), &email).await;
    match forgotten {
        Ok((user, n)) => Ok(Json(json!({ "user": user, "forgotten": n })).into_response()),
        Err(e) => {
            let asked = json!({ "email": email, "all": true });
            Err(refused(&state, &caller, permission, e, asked).await)
        }
    }
}
