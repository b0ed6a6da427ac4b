//! Per-app rules over JSON ([`crate::app_rules`]): read by anyone holding
//! `gateway:app-rules:read` (the rules name variables and commands, never values), set and
//! cleared by holders of `gateway:app-rules:write` after a recent code, audited first.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::users::refused;
use super::{ApiJson, ApiPath, Caller};
use crate::app::{AppState, Peer};
use crate::app_rules::{self, AppRules};
use crate::error::ApiError;
use crate::store::AppRulesRow;

/// One app's rules as the API shows them.
#[derive(Debug, Serialize)]
pub struct ShownRules {
    /// The app.
    pub app: String,
    /// Its rules (all lists empty when it has none).
    pub rules: AppRules,
    /// When they were set (unix ms), if ever.
    pub updated_at: Option<i64>,
    /// Who set them, if anyone.
    pub updated_by: Option<String>,
}

impl From<AppRulesRow> for ShownRules {
    fn from(row: AppRulesRow) -> ShownRules {
        ShownRules {
            app: row.app,
            rules: row.rules,
            updated_at: Some(row.updated_at),
            updated_by: Some(row.updated_by),
        }
    }
}

impl ShownRules {
    fn none(app: &str) -> ShownRules {
        ShownRules {
            app: app.to_string(),
            rules: AppRules::default(),
            updated_at: None,
            updated_by: None,
        }
    }
}

/// `GET /api/v1/app-rules`: every app that has rules, by name.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&state, app_rules::READ).await?;
    let rows = state
        .store
        .list_app_rules()
        .await
        .map_err(ApiError::store)?;
    let shown: Vec<ShownRules> = rows.into_iter().map(ShownRules::from).collect();
    Ok(Json(shown).into_response())
}

/// `GET /api/v1/app-rules/{app}`: one app's rules (empty when it has none).
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    app: Result<ApiPath<String>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(&state, app_rules::READ).await?;
    let ApiPath(app) = app?;
    let row = state.store.app_rules(&app).await.map_err(ApiError::store)?;
    let shown = row.map_or_else(|| ShownRules::none(&app), ShownRules::from);
    Ok(Json(shown).into_response())
}

/// `PUT /api/v1/app-rules/{app}`: sets all of an app's rules (a list left out is emptied;
/// no rules at all clears them); answers with what they are now.
pub async fn set(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    app: Result<ApiPath<String>, ApiError>,
    rules: Result<ApiJson<AppRules>, ApiError>,
) -> Result<Response, ApiError> {
    let action = "gateway:app-rules:update";
    caller.require_privileged(&state, app_rules::WRITE).await?;
    let ApiPath(app) = app?;
    let ApiJson(rules) = rules?;
    let asked = json!({ "app": app, "rules": rules });
    match app_rules::set_rules(&state.store, &state.audit, &caller.actor(peer), &app, rules).await {
        Ok(Some(row)) => Ok(Json(ShownRules::from(row)).into_response()),
        Ok(None) => Ok(Json(ShownRules::none(&app)).into_response()),
        Err(e) => Err(refused(&state, &caller, action, e, asked).await),
    }
}

/// `DELETE /api/v1/app-rules/{app}`: clears an app's rules; answers with what they were
/// (`404` when it had none).
pub async fn clear(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    app: Result<ApiPath<String>, ApiError>,
) -> Result<Response, ApiError> {
    let action = "gateway:app-rules:delete";
    caller.require_privileged(&state, app_rules::WRITE).await?;
    let ApiPath(app) = app?;
    match app_rules::clear_rules(&state.store, &state.audit, &caller.actor(peer), &app).await {
        Ok(row) => Ok(Json(ShownRules::from(row)).into_response()),
        Err(e) => Err(refused(&state, &caller, action, e, json!({ "app": app })).await),
    }
}
