//! Deploy approvals over JSON (see `approvals`): CI asks (`gateway:deploy-approvals:request`)
//! and polls its request; people list them (`…:list`) and decide (`…:approve`): a person with
//! an authenticator app approves with a code given with the decision, and rejects with a
//! recent one.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::app::{AppState, Peer};
use crate::approvals::{self, ApprovalError, ApprovalView, Asked, Requester};
use crate::error::ApiError;
use crate::store::now_ms;

/// Body of `POST /api/v1/deploy-approvals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    app: String,
    git_commit: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    ci_url: Option<String>,
    #[serde(default)]
    branch: Option<String>,
}

/// Body of `POST /api/v1/deploy-approvals/{id}/approve` and `…/reject`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    #[serde(default)]
    note: Option<String>,
    /// A code from the approver's authenticator app (approving needs one given with it).
    #[serde(default)]
    code: Option<String>,
}

/// Query of `GET /api/v1/deploy-approvals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    status: Option<String>,
}

const STATES: &[&str] = &["pending", "approved", "rejected", "deployed", "expired"];

/// The API error for an approval refused or failed.
fn approval_error(e: ApprovalError) -> ApiError {
    match e {
        ApprovalError::Invalid(m) => ApiError::BadRequest(m),
        ApprovalError::NotFound(id) => ApiError::no_such(&format!("deploy request {id}")),
        e @ (ApprovalError::NotAPerson | ApprovalError::OwnRequest) => {
            ApiError::NotYours(e.to_string())
        }
        e @ ApprovalError::NotPending { .. } => ApiError::Conflict(e.to_string()),
        ApprovalError::Store(e) => ApiError::store(e),
        ApprovalError::Audit => ApiError::AuditUnavailable,
    }
}

/// `POST /api/v1/deploy-approvals`: a new pending request (201), or the live one this
/// credential already has for the app and commit (200).
pub async fn request(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    body: Result<ApiJson<NewRequest>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(&state, approvals::REQUEST).await?;
    let ApiJson(body) = body?;
    let asked = match Asked::check(
        &body.app,
        &body.git_commit,
        body.message.as_deref(),
        body.ci_url.as_deref(),
        body.branch.as_deref(),
    ) {
        Ok(asked) => asked,
        Err(m) => {
            let details = json!({ "reason": "invalid_request" });
            return Err(caller
                .refuse(&state, approvals::REQUEST, ApiError::BadRequest(m), details)
                .await);
        }
    };
    let actor = caller.actor(peer);
    let (row, created) = approvals::request(&state, &actor, &caller.principal, &asked)
        .await
        .map_err(approval_error)?;
    let status = if created {
        http::StatusCode::CREATED
    } else {
        http::StatusCode::OK
    };
    Ok((status, Json(ApprovalView::of(row, now_ms()))).into_response())
}

/// `GET /api/v1/deploy-approvals[?status=pending]`: the newest 200, newest first — everyone's
/// for holders of `gateway:deploy-approvals:list`, else the caller's own.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<ApiQuery<ListQuery>, ApiError>,
) -> Result<Response, ApiError> {
    let everyone = caller.holds(approvals::LIST);
    if !everyone {
        // Refused (and audited) as a listing unless the caller may at least ask.
        if !caller.holds(approvals::REQUEST) {
            caller.require(&state, approvals::LIST).await?;
        }
    }
    // Read once the caller may: a malformed query from someone who may not is their 403.
    let ApiQuery(query) = query?;
    if let Some(status) = &query.status
        && !STATES.contains(&status.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "status: one of {}",
            STATES.join(", ")
        )));
    }
    let mine = if everyone {
        None
    } else {
        let requester = Requester::of(&state, &caller.principal)
            .await
            .map_err(ApiError::store)?;
        Some(requester.filter())
    };
    let rows = state
        .store
        .list_approvals(mine)
        .await
        .map_err(ApiError::store)?;
    let now = now_ms();
    let views: Vec<ApprovalView> = rows
        .into_iter()
        .map(|row| ApprovalView::of(row, now))
        .filter(|v| query.status.as_deref().is_none_or(|s| v.status == s))
        .collect();
    Ok(Json(views).into_response())
}

/// `GET /api/v1/deploy-approvals/{id}`: one request, for holders of `…:list` or whoever asked
/// for it (else 404, as if there were none: CI polls its own and learns nothing of others).
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<ApiPath<i64>, ApiError>,
) -> Result<Response, ApiError> {
    let everyone = caller.holds(approvals::LIST);
    if !everyone && !caller.holds(approvals::REQUEST) {
        caller.require(&state, approvals::LIST).await?;
    }
    let ApiPath(id) = id?;
    let row = state.store.approval(id).await.map_err(ApiError::store)?;
    let visible = match row {
        Some(row) if everyone => Some(row),
        Some(row) => {
            let requester = Requester::of(&state, &caller.principal)
                .await
                .map_err(ApiError::store)?;
            requester.asked(&row).then_some(row)
        }
        None => None,
    };
    match visible {
        Some(row) => Ok(Json(ApprovalView::of(row, now_ms())).into_response()),
        None => Err(ApiError::no_such(&format!("deploy request {id}"))),
    }
}

/// `POST /api/v1/deploy-approvals/{id}/approve`
pub async fn approve(
    state: State<AppState>,
    peer: Peer,
    caller: Caller,
    id: Result<ApiPath<i64>, ApiError>,
    body: Result<ApiJson<DecisionBody>, ApiError>,
) -> Result<Response, ApiError> {
    decide(state, peer, caller, id, body, true).await
}

/// `POST /api/v1/deploy-approvals/{id}/reject`
pub async fn reject(
    state: State<AppState>,
    peer: Peer,
    caller: Caller,
    id: Result<ApiPath<i64>, ApiError>,
    body: Result<ApiJson<DecisionBody>, ApiError>,
) -> Result<Response, ApiError> {
    decide(state, peer, caller, id, body, false).await
}

async fn decide(
    State(state): State<AppState>,
    peer: Peer,
    caller: Caller,
    id: Result<ApiPath<i64>, ApiError>,
    body: Result<ApiJson<DecisionBody>, ApiError>,
    approve: bool,
) -> Result<Response, ApiError> {
    let action = if approve {
        approvals::APPROVE
    } else {
        approvals::REJECT
    };
    // Who may decide at all first; that the caller is a person, and not the asker,
    // `approvals::decide` checks, and is audited below.
    caller.require(&state, approvals::APPROVE).await?;
    let ApiPath(id) = id?;
    let ApiJson(body) = body?;
    let asked = |reason: &str| json!({ "approval_id": id, "reason": reason });
    let note = match approvals::check_note(body.note.as_deref()) {
        Ok(note) => note,
        Err(m) => {
            let err = ApiError::BadRequest(m);
            return Err(caller
                .refuse(&state, action, err, asked("invalid_note"))
                .await);
        }
    };
    // An approval lets a deploy through: a person with an authenticator app gives a code with
    // it. A rejection takes one given with it too, or a recent one (`mfa verify`).
    let code = body.code.as_deref().filter(|c| !c.trim().is_empty());
    if approve || code.is_some() {
        let given = json!({ "approval_id": id });
        caller
            .require_code_now(&state, action, code, "approving a deploy", &given)
            .await?;
    } else {
        caller.stepped_up(&state, action).await?;
    }
    let actor = caller.actor(peer);
    let decided = approvals::decide(
        &state,
        &actor,
        &caller.principal,
        id,
        approve,
        note.as_deref(),
    )
    .await;
    match decided {
        Ok(row) => Ok(Json(ApprovalView::of(row, now_ms())).into_response()),
        Err(e) => match e.refusal_reason() {
            Some(reason) => {
                let err = approval_error(e);
                Err(caller.refuse(&state, action, err, asked(reason)).await)
            }
            None => Err(approval_error(e)),
        },
    }
}
