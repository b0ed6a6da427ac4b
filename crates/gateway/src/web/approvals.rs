//! `GET /deploy-approvals`: deploy requests in the browser, for those who may list them
//! (`gateway:deploy-approvals:list`), pending ones first; people who may approve
//! (`gateway:deploy-approvals:approve`) approve or reject each with a note (`POST
//! /deploy-approvals/{id}/approve|reject`, CSRF-checked, with a recent code where they have an
//! authenticator app, audited as over the API).

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{
    PageForm, PagePath, StoreDown, checked_page, cookies, message, not_allowed, page_actor,
    page_refusal, render, signed_in_form, stale_form, time,
};
use crate::app::{AppState, Peer};
use crate::approvals::{self, ApprovalError, ApprovalView};
use crate::audit::Decision;
use crate::identity::Principal;

struct RequestView {
    id: i64,
    app: String,
    commit: String,
    short_commit: String,
    message: String,
    branch: String,
    ci_url: Option<String>,
    requested_by: String,
    asked: String,
    until: String,
    status: String,
    decided_by: String,
    note: String,
    release: String,
    /// The signed-in person asked for it (or a token of theirs did): they cannot decide it.
    yours: bool,
    /// The app's approved commands, which an approval also lets the credential run.
    commands: Vec<String>,
    /// `service=image` the promoted release must run (the app's image rules, with this
    /// request's commit in them).
    images: Vec<String>,
}

impl RequestView {
    fn of(v: ApprovalView, yours: bool) -> RequestView {
        RequestView {
            id: v.id,
            short_commit: v.git_commit.get(..10).unwrap_or(&v.git_commit).to_string(),
            commit: v.git_commit,
            app: v.app,
            message: v.message,
            branch: v.branch.unwrap_or_default(),
            ci_url: v.ci_url,
            requested_by: v.requested_by,
            asked: time(v.created_at),
            until: time(v.expires_at),
            status: v.status,
            decided_by: v.decided_by.unwrap_or_default(),
            note: v.note.unwrap_or_default(),
            release: v.release.unwrap_or_default(),
            yours,
            commands: Vec::new(),
            images: Vec::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "deploy_approvals.html")]
struct ApprovalsPage {
    csrf: String,
    can_decide: bool,
    /// The person has an authenticator app: approving asks for its code with the decision.
    needs_code: bool,
    /// A challenge for their security keys, which may stand in for the code.
    key: Option<crate::mfa::keys::Challenge>,
    pending: Vec<RequestView>,
    others: Vec<RequestView>,
}

/// Whether `principal` may see the deploy requests page (for links to it).
pub fn may_list(principal: &Principal) -> bool {
    principal.permissions.allows(approvals::LIST)
}

/// `GET /deploy-approvals`
pub async fn page(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    let (principal, token) =
        match checked_page(&state, peer, &headers, "/deploy-approvals", approvals::LIST).await {
            Ok(signed_in) => signed_in,
            Err(answer) => return answer,
        };
    let rows = match state.store.list_approvals(None).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "deploy request list failed");
            return StoreDown.into_response();
        }
    };
    let right_now = match super::mfa::right_now(&state, &principal).await {
        Ok(right_now) => right_now,
        Err(page) => return page,
    };
    let now = crate::store::now_ms();
    let me = principal.user_id();
    let (mut pending, mut others) = (Vec::new(), Vec::new());
    for row in rows {
        let yours = me.is_some() && row.requested_by_user_id == me;
        let view = RequestView::of(ApprovalView::of(row, now), yours);
        if view.status == "pending" {
            pending.push(view);
        } else {
            others.push(view);
        }
    }
    // What deciding means beyond the deploy itself: the app's commands and images.
    for view in &mut pending {
        match state.store.app_rules(&view.app).await {
            Ok(Some(row)) => {
                view.commands = row.rules.approved_commands;
                view.images = row
                    .rules
                    .service_images
                    .iter()
                    .map(|(service, pattern)| {
                        format!(
                            "{service}={}",
                            pattern.replace(crate::app_rules::COMMIT, &view.commit)
                        )
                    })
                    .collect();
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "app rules for the deploy requests page failed");
                return StoreDown.into_response();
            }
        }
    }
    render(
        StatusCode::OK,
        &ApprovalsPage {
            csrf: cookies::csrf_token(&token),
            can_decide: principal.permissions.allows(approvals::APPROVE),
            needs_code: right_now.needs_code,
            key: right_now.key,
            pending,
            others,
        },
    )
}

/// The decision form: its CSRF token, an optional note, and a code from the person's
/// authenticator app when they have one.
#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    csrf: Option<String>,
    #[serde(default)]
    note: Option<String>,
    /// A code from the person's authenticator app given with it (right now), or a security
    /// key's answer.
    #[serde(flatten)]
    proof: super::mfa::ProofFields,
}

/// `POST /deploy-approvals/{id}/approve`
pub async fn approve(
    state: State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    id: PagePath<i64>,
    form: PageForm<DecisionForm>,
) -> Response {
    decide(state, peer, headers, id, form, true).await
}

/// `POST /deploy-approvals/{id}/reject`
pub async fn reject(
    state: State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    id: PagePath<i64>,
    form: PageForm<DecisionForm>,
) -> Response {
    decide(state, peer, headers, id, form, false).await
}

async fn decide(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PagePath(id): PagePath<i64>,
    PageForm(form): PageForm<DecisionForm>,
    approve: bool,
) -> Response {
    let action = if approve {
        approvals::APPROVE
    } else {
        approvals::REJECT
    };
    let (principal, token) = match signed_in_form(&state, &headers).await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    let asked = |reason: &str| json!({ "approval_id": id, "reason": reason });
    if !cookies::csrf_ok(&token, form.csrf.as_deref()) {
        page_refusal(
            &state,
            &principal,
            peer,
            &headers,
            action,
            asked("csrf_rejected"),
        )
        .await;
        return stale_form();
    }
    if !principal.permissions.allows(approvals::APPROVE) {
        page_refusal(
            &state,
            &principal,
            peer,
            &headers,
            action,
            asked("forbidden"),
        )
        .await;
        return not_allowed(approvals::APPROVE, &principal);
    }
    let note = match approvals::check_note(form.note.as_deref()) {
        Ok(note) => note,
        Err(m) => return message(StatusCode::BAD_REQUEST, "Note not taken", &m),
    };
    // An approval lets a deploy through: a person with an authenticator app gives its code
    // with the decision. A rejection takes one given with it, or a recent one.
    let user = match super::mfa::has_app(&state, &principal).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let proof = form.proof.given();
    match (&user, proof) {
        (Some(user), Some(proof)) => {
            let checked = super::mfa::check_right_now(
                &state, &principal, peer, &headers, action, user, proof,
            );
            match checked.await {
                Ok(_) => {}
                Err(super::mfa::Refused::Show(said)) => {
                    return message(StatusCode::FORBIDDEN, "Code not taken", &said);
                }
                Err(super::mfa::Refused::Page(page)) => return page,
            }
        }
        (Some(_), None) if approve => {
            let details = asked("mfa_code_required");
            page_refusal(&state, &principal, peer, &headers, action, details).await;
            return message(
                StatusCode::FORBIDDEN,
                "Code needed",
                "Approving a deploy needs a code from your authenticator app, given with the \
                 decision: go back, enter it beside Approve, and approve again.",
            );
        }
        // A rejection with a recent code; and, for someone without an app, as for any
        // privileged change (`MFA_REQUIRED` still asks for one).
        (Some(_), None) | (None, _) => {
            let step_up = super::mfa::step_up_page(
                &state,
                &principal,
                peer,
                &headers,
                &token,
                action,
                "/deploy-approvals",
            );
            if let Some(page) = step_up.await {
                return page;
            }
        }
    }
    let actor = page_actor(&principal, peer, &headers, Decision::Allow);
    let decided = approvals::decide(&state, &actor, &principal, id, approve, note.as_deref()).await;
    let err = match decided {
        Ok(_) => return Redirect::to("/deploy-approvals").into_response(),
        Err(err) => err,
    };
    if let Some((status, title, reason)) = refusal(&err) {
        page_refusal(&state, &principal, peer, &headers, action, asked(reason)).await;
        return message(status, title, &err.to_string());
    }
    match err {
        ApprovalError::NotFound(_) => message(
            StatusCode::NOT_FOUND,
            "No such deploy request",
            "That deploy request does not exist.",
        ),
        ApprovalError::Audit => {
            super::unavailable("Nothing was decided: the audit trail could not record it.")
        }
        e => {
            tracing::error!(error = %e, "deploy decision failed");
            super::unavailable("Nothing was decided.")
        }
    }
}

/// The page's status and title for a decision refused (see
/// [`ApprovalError::refusal_reason`]).
fn refusal(err: &ApprovalError) -> Option<(StatusCode, &'static str, &'static str)> {
    let reason = err.refusal_reason()?;
    Some(match err {
        ApprovalError::NotPending { .. } => (StatusCode::CONFLICT, "Already decided", reason),
        _ => (StatusCode::FORBIDDEN, "Not yours to decide", reason),
    })
}
