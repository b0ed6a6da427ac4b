//! Roles over JSON: every role with what it grants (`gateway:roles:list`), and custom roles
//! defined, changed and deleted by admins (`gateway:roles:create|update|delete`). Defining or
//! deleting one needs a recent code from a person with an authenticator app (`mfa::step_up`):
//! a role nobody holds grants nothing. Changing one's permissions changes what everyone
//! holding it may do, as changing their role would, so it takes a code given with it, right
//! then (`"code"`, or `X-MFA-Code`). Every change is audited before it is made, applies on the
//! next request of everyone holding the role, and never grants more than its maker holds.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::users::refused;
use super::{ApiJson, ApiPath, Caller};
use crate::app::{AppState, Peer};
use crate::error::ApiError;
use crate::identity::roles;
use crate::rbac::Role;
use crate::store::RoleRow;

/// A role as `GET /api/v1/roles` lists it.
#[derive(Debug, Serialize)]
pub struct ListedRole {
    /// Its name.
    pub name: String,
    /// Built into the gateway (cannot be changed or deleted).
    pub built_in: bool,
    /// What it is for.
    pub description: String,
    /// The permission patterns it grants.
    pub permissions: Vec<String>,
    /// Users who hold it (custom roles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<i64>,
    /// Tokens not revoked that carry it (custom roles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<i64>,
    /// Who defined it (custom roles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Last change, unix ms (custom roles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

impl ListedRole {
    fn built_in(role: Role) -> ListedRole {
        ListedRole {
            name: role.as_str().to_string(),
            built_in: true,
            description: role.description().to_string(),
            permissions: role.permissions().patterns().to_vec(),
            users: None,
            tokens: None,
            created_by: None,
            updated_at: None,
        }
    }

    fn custom(row: RoleRow) -> ListedRole {
        ListedRole {
            name: row.name,
            built_in: false,
            description: row.description,
            permissions: row.permissions,
            users: Some(row.users),
            tokens: Some(row.tokens),
            created_by: Some(row.created_by),
            updated_at: Some(row.updated_at),
        }
    }
}

/// Every role: the built-in ones, then the `custom` ones (as the store lists them, by name).
/// Also what `rack-gateway-server roles list` prints.
pub fn listed_roles(custom: Vec<RoleRow>) -> Vec<ListedRole> {
    Role::ALL
        .iter()
        .map(|r| ListedRole::built_in(*r))
        .chain(custom.into_iter().map(ListedRole::custom))
        .collect()
}

/// Every role, from the store: see [`listed_roles`].
pub async fn all_roles(state: &AppState) -> Result<Vec<ListedRole>, ApiError> {
    let custom = state.store.list_roles().await.map_err(ApiError::store)?;
    Ok(listed_roles(custom))
}

/// `GET /api/v1/roles`
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&state, "gateway:roles:list").await?;
    Ok(Json(all_roles(&state).await?).into_response())
}

/// Body of `POST /api/v1/roles`; unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRoleBody {
    name: String,
    permissions: Vec<String>,
    #[serde(default)]
    description: String,
}

/// `POST /api/v1/roles`: defines a custom role; `201` with it.
pub async fn create(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    body: Result<ApiJson<NewRoleBody>, ApiError>,
) -> Result<Response, ApiError> {
    let action = "gateway:roles:create";
    caller.require_privileged(&state, action).await?;
    let ApiJson(body) = body?;
    let made = roles::create_role(
        &state.store,
        &state.audit,
        &caller.actor(peer),
        &body.name,
        &body.description,
        &body.permissions,
    )
    .await;
    match made {
        Ok(row) => Ok((StatusCode::CREATED, Json(row)).into_response()),
        Err(e) => {
            let asked = json!({ "role": body.name, "permissions": body.permissions });
            Err(refused(&state, &caller, action, e, asked).await)
        }
    }
}

/// Body of `PUT /api/v1/roles/{name}`: the whole new list of permissions, and a new
/// description when one is given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleChangeBody {
    permissions: Vec<String>,
    #[serde(default)]
    description: Option<String>,
    /// A code from the caller's authenticator app, given with the change (right now).
    #[serde(default)]
    code: Option<String>,
}

/// `PUT /api/v1/roles/{name}`: replaces a custom role's permissions.
pub async fn update(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    caller: Caller,
    name: Result<ApiPath<String>, ApiError>,
    body: Result<ApiJson<RoleChangeBody>, ApiError>,
) -> Result<Response, ApiError> {
    let action = "gateway:roles:update";
    caller.require(&state, action).await?;
    let ApiPath(name) = name?;
    let ApiJson(body) = body?;
    let code = super::code_header(&headers, body.code.as_deref());
    let asked = json!({ "role": name, "permissions": body.permissions });
    let what = "changing a role's permissions";
    caller
        .require_now(&state, action, code, what, &asked)
        .await?;
    let changed = roles::update_role(
        &state.store,
        &state.audit,
        &caller.actor(peer),
        &name,
        body.description.as_deref(),
        &body.permissions,
    )
    .await;
    match changed {
        Ok(row) => Ok(Json(row).into_response()),
        Err(e) => Err(refused(&state, &caller, action, e, asked).await),
    }
}

/// `DELETE /api/v1/roles/{name}`: deletes a custom role nobody holds (`409` while someone
/// does); answers with the deleted role.
pub async fn delete(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    name: Result<ApiPath<String>, ApiError>,
) -> Result<Response, ApiError> {
    let action = "gateway:roles:delete";
    caller.require_privileged(&state, action).await?;
    let ApiPath(name) = name?;
    match roles::delete_role(&state.store, &state.audit, &caller.actor(peer), &name).await {
        Ok(row) => Ok(Json(row).into_response()),
        Err(e) => Err(refused(&state, &caller, action, e, json!({ "role": name })).await),
    }
}
