//! API tokens over JSON, for admins: list them (`gateway:tokens:list`) and revoke one
//! (`gateway:tokens:revoke`) — a leaked CI token ended from a laptop, without a shell where
//! the gateway runs; a revocation with a session needs a recent authenticator code
//! (`mfa::step_up`). Creating one stays with `rack-gateway-server tokens create`: over HTTP it
//! would need a check that nobody mints more than they hold, and the product asks for a code
//! given right then (not within a window) before a credential is minted.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::{ApiPath, Caller};
use crate::app::{AppState, Peer};
use crate::error::ApiError;
use crate::identity::manage;

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
