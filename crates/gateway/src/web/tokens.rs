//! `GET /tokens`: the gateway's API tokens in the browser, for admins
//! (`gateway:tokens:list`), each with a button to revoke it (`gateway:tokens:revoke`,
//! `POST /tokens/{id}/revoke`, CSRF-checked and audited as over the API).

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use super::{
    CsrfForm, PageForm, PagePath, StoreDown, cookies, message, not_allowed, page_actor,
    page_refusal, render, signed_in_form, signed_in_page, stale_form, time,
};
use crate::app::{AppState, Peer};
use crate::audit::Decision;
use crate::identity::Principal;
use crate::identity::manage::{self, ManageError};
use crate::store::{StoreError, TokenRow};

const LIST: &str = "gateway:tokens:list";
const REVOKE: &str = "gateway:tokens:revoke";

struct TokenView {
    id: i64,
    name: String,
    scope: String,
    created_by: String,
    created: String,
    expires: String,
    last_used: String,
    status: &'static str,
}

impl TokenView {
    fn of(t: &TokenRow, now: i64) -> TokenView {
        let when = |ms: Option<i64>| ms.map(time).unwrap_or_else(|| "-".into());
        TokenView {
            id: t.id,
            name: t.name.clone(),
            scope: match (&t.role, &t.permissions) {
                (Some(role), _) => format!("role {role}"),
                (None, Some(p)) => p.join(", "),
                (None, None) => String::new(),
            },
            created_by: t.created_by.clone(),
            created: time(t.created_at),
            expires: when(t.expires_at),
            last_used: when(t.last_used_at),
            status: if t.revoked_at.is_some() {
                "revoked"
            } else if t.expires_at.is_some_and(|at| at <= now) {
                "expired"
            } else {
                "active"
            },
        }
    }
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    csrf: String,
    can_revoke: bool,
    tokens: Vec<TokenView>,
}

/// Whether `principal` may see the tokens page (for links to it).
pub fn may_list(principal: &Principal) -> bool {
    principal.permissions.allows(LIST)
}

/// `GET /tokens`
pub async fn page(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    let (principal, token) = match signed_in_page(&state, &headers, "/tokens").await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    if !may_list(&principal) {
        let details = json!({ "reason": "forbidden", "role": principal.role_name() });
        page_refusal(&state, &principal, peer, &headers, LIST, details).await;
        return not_allowed(LIST, &principal);
    }
    let tokens = match state.store.list_tokens().await {
        Ok(tokens) => tokens,
        Err(e) => {
            tracing::error!(error = %e, "token list failed");
            return StoreDown.into_response();
        }
    };
    let now = crate::store::now_ms();
    render(
        StatusCode::OK,
        &TokensPage {
            csrf: cookies::csrf_token(&token),
            can_revoke: principal.permissions.allows(REVOKE),
            tokens: tokens.iter().map(|t| TokenView::of(t, now)).collect(),
        },
    )
}

/// `POST /tokens/{id}/revoke`
pub async fn revoke(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PagePath(id): PagePath<i64>,
    PageForm(form): PageForm<CsrfForm>,
) -> Response {
    let (principal, token) = match signed_in_form(&state, &headers).await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    if !cookies::csrf_ok(&token, form.csrf.as_deref()) {
        let details = json!({ "token": id.to_string(), "reason": "csrf_rejected" });
        page_refusal(&state, &principal, peer, &headers, REVOKE, details).await;
        return stale_form();
    }
    if !principal.permissions.allows(REVOKE) {
        let details = json!({ "token": id.to_string(), "reason": "forbidden" });
        page_refusal(&state, &principal, peer, &headers, REVOKE, details).await;
        return not_allowed(REVOKE, &principal);
    }
    let step_up = super::mfa::step_up_page(
        &state, &principal, peer, &headers, &token, REVOKE, "/tokens",
    );
    if let Some(page) = step_up.await {
        return page;
    }
    let actor = page_actor(&principal, peer, &headers, Decision::Allow);
    match manage::revoke_token(&state.store, &state.audit, &actor, &id.to_string()).await {
        Ok(_) => Redirect::to("/tokens").into_response(),
        Err(ManageError::Store(StoreError::NotFound(_))) => message(
            StatusCode::NOT_FOUND,
            "No such token",
            "That token does not exist or is already revoked.",
        ),
        Err(ManageError::Audit(_)) => super::unavailable("The token was not revoked."),
        Err(e) => {
            tracing::error!(error = %e, "token revoke failed");
            super::unavailable("The token was not revoked.")
        }
    }
}
