//! Sessions over JSON: list and revoke your own; admins (gateway:sessions:manage) anyone's.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiPath, ApiQuery, Caller};
use crate::app::{AppState, Peer};
use crate::error::ApiError;

/// Optional `?email=` for admins.
#[derive(Debug, Deserialize)]
pub struct ForUser {
    email: Option<String>,
}

async fn target_user(
    state: &AppState,
    caller: &Caller,
    email: Option<&str>,
) -> Result<i64, ApiError> {
    let principal = &caller.principal;
    match email {
        Some(email)
            if !principal
                .email()
                .is_some_and(|own| own.eq_ignore_ascii_case(email)) =>
        {
            caller.require(state, "gateway:sessions:manage").await?;
            let user = state
                .store
                .find_user(email)
                .await
                .map_err(ApiError::store)?;
            // An admin (required above) may know who is a user.
            Ok(user
                .ok_or_else(|| ApiError::no_such(&format!("user {email}")))?
                .id)
        }
        _ => principal.user_id().ok_or_else(|| {
            ApiError::BadRequest("API tokens have no sessions; pass ?email= as an admin".into())
        }),
    }
}

/// `GET /api/v1/sessions[?email=]`
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ForUser>,
) -> Result<Response, ApiError> {
    let user_id = target_user(&state, &caller, q.email.as_deref()).await?;
    let principal = &caller.principal;
    let sessions = state
        .store
        .user_sessions(
            user_id,
            crate::identity::sessions::idle_since(&state.config.sessions, crate::store::now_ms()),
        )
        .await
        .map_err(ApiError::store)?;
    let current = principal.session_id();
    let list: Vec<_> = sessions
        .into_iter()
        .map(|s| json!({
            "id": s.id, "channel": s.channel, "user_agent": s.user_agent, "ip": s.ip,
            "created_at": s.created_at, "last_seen_at": s.last_seen_at, "expires_at": s.expires_at,
            "current": Some(s.id) == current,
        }))
        .collect();
    Ok(Json(list).into_response())
}

/// `DELETE /api/v1/sessions/{id}`
pub async fn revoke(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    let principal = &caller.principal;
    let session = state
        .store
        .session_by_id(id)
        .await
        .map_err(ApiError::store)?;
    let own = session
        .as_ref()
        .is_some_and(|s| Some(s.user_id) == principal.user_id());
    // Without the permission, someone else's session and no session look the same (404), so
    // ids cannot be probed; the attempt is audited all the same, with the answer given and
    // what was asked, as the account page's form records it.
    let reason = match &session {
        _ if own => None,
        Some(_) if caller.holds("gateway:sessions:manage") => None,
        Some(_) => Some("not_your_session"),
        None => Some("not_found"),
    };
    let (Some(session), None) = (session, reason) else {
        let details = json!({ "session_id": id, "reason": reason.unwrap_or("not_found") });
        let action = "gateway:sessions:revoke";
        let answer = ApiError::no_such(&format!("session {id}"));
        return Err(caller.refuse(&state, action, answer, details).await);
    };
    let revoked = state
        .store
        .revoke_session(id)
        .await
        .map_err(ApiError::store)?;
    crate::web::audit_session_revoke(
        &state,
        principal,
        peer,
        json!({ "session_id": id, "user_id": session.user_id }),
    )
    .await;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

/// `POST /api/v1/sessions/revoke-all[?email=]`
pub async fn revoke_all(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    ApiQuery(q): ApiQuery<ForUser>,
) -> Result<Response, ApiError> {
    let user_id = target_user(&state, &caller, q.email.as_deref()).await?;
    let principal = &caller.principal;
    let n = state
        .store
        .revoke_user_sessions(user_id)
        .await
        .map_err(ApiError::store)?;
    crate::web::audit_session_revoke(
        &state,
        principal,
        peer,
        json!({ "all": true, "user_id": user_id, "count": n }),
    )
    .await;
    Ok(Json(json!({ "revoked": n })).into_response())
}
