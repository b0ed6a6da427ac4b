//! `GET /tokens`: the gateway's API tokens in the browser, for admins
//! (`gateway:tokens:list`), each with a button to revoke it (`gateway:tokens:revoke`,
//! `POST /tokens/{id}/revoke`, CSRF-checked and audited as over the API), and a form to mint
//! one (`gateway:tokens:create`, `POST /tokens/create`): never more than the minter holds, a
//! code from their authenticator app given with it, the secret shown once.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use super::{
    CsrfForm, PageForm, PagePath, StoreDown, checked_form, checked_page, cookies, message,
    page_actor, page_refusal, render, time,
};
use crate::app::{AppState, Peer};
use crate::audit::Decision;
use crate::identity::Principal;
use crate::identity::manage::{self, ManageError};
use crate::identity::minting::{self, MintAsk, MintRefused};
use crate::store::{StoreError, TokenRow};

const LIST: &str = "gateway:tokens:list";
const REVOKE: &str = "gateway:tokens:revoke";
const CREATE: &str = "gateway:tokens:create";

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
    can_create: bool,
    needs_code: bool,
    /// A challenge for the person's security keys, which may stand in for the code.
    key: Option<crate::mfa::keys::Challenge>,
    roles: Vec<String>,
    error: Option<String>,
    tokens: Vec<TokenView>,
    /// Revoked or expired more than [`ENDED_SHOWN_MS`] ago, not listed.
    not_listed: usize,
}

/// How long a revoked or expired token stays on the page.
const ENDED_SHOWN_MS: i64 = 30 * 24 * 3600 * 1000;

#[derive(Template)]
#[template(path = "token_created.html")]
struct CreatedPage {
    csrf: String,
    name: String,
    scope: String,
    expires: String,
    secret: String,
}

/// The form of `POST /tokens/create`.
#[derive(Debug, serde::Deserialize)]
pub struct CreateForm {
    csrf: Option<String>,
    name: String,
    role: String,
    #[serde(default)]
    expires_in: Option<String>,
    /// A code from the person's authenticator app given with it (right now), or a security
    /// key's answer.
    #[serde(flatten)]
    proof: super::mfa::ProofFields,
}

/// Whether `principal` may see the tokens page (for links to it).
pub fn may_list(principal: &Principal) -> bool {
    principal.permissions.allows(LIST)
}

/// `GET /tokens`
pub async fn page(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    let (principal, token) = match checked_page(&state, peer, &headers, "/tokens", LIST).await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    list_page(&state, &principal, &token, StatusCode::OK, None).await
}

/// The tokens page, with `error` said above the form.
async fn list_page(
    state: &AppState,
    principal: &Principal,
    token: &str,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let listed = async {
        let tokens = state.store.list_tokens().await?;
        let roles = crate::identity::roles::role_names(&state.store).await?;
        Ok::<_, StoreError>((tokens, roles))
    };
    let (tokens, roles) = match listed.await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::error!(error = %e, "token list failed");
            return StoreDown.into_response();
        }
    };
    let can_create = principal.permissions.allows(CREATE);
    let right_now = match super::mfa::right_now(state, principal).await {
        Ok(right_now) => right_now,
        Err(page) => return page,
    };
    let now = crate::store::now_ms();
    // Revoked and expired tokens only while they are news: the list would otherwise grow with
    // every CI run that mints one.
    let ended = |t: &crate::store::TokenRow| {
        t.revoked_at
            .or(t.expires_at.filter(|at| *at <= now))
            .is_some_and(|at| now.saturating_sub(at) > ENDED_SHOWN_MS)
    };
    let (old, tokens): (Vec<_>, Vec<_>) = tokens.iter().partition(|t| ended(t));
    render(
        status,
        &TokensPage {
            csrf: cookies::csrf_token(token),
            can_revoke: principal.permissions.allows(REVOKE),
            can_create,
            needs_code: right_now.needs_code,
            key: right_now.key,
            roles,
            error,
            tokens: tokens.iter().map(|t| TokenView::of(t, now)).collect(),
            not_listed: old.len(),
        },
    )
}

/// `POST /tokens/create`: mints a token as `POST /api/v1/tokens` does and shows its secret,
/// this once.
pub async fn create(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<CreateForm>,
) -> Response {
    let asked = json!({ "name": form.name, "role": form.role, "expires_in": form.expires_in });
    let checked = checked_form(&state, peer, &headers, form.csrf.as_deref(), CREATE, &asked);
    let (principal, token) = match checked.await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    let refused = |reason: &str| {
        let mut details = asked.clone();
        details["reason"] = reason.into();
        page_refusal(&state, &principal, peer, &headers, CREATE, details)
    };
    // Right then: a code with the form, whatever was given minutes ago.
    let user = match super::mfa::has_app(&state, &principal).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    if let Some(user) = user {
        let proof = form.proof.given();
        let Some(proof) = proof else {
            refused("mfa_code_required").await;
            let error = "Give a code from your authenticator app (or use your security key): \
                         minting a token needs one, right then.";
            return list_page(
                &state,
                &principal,
                &token,
                StatusCode::BAD_REQUEST,
                Some(error.into()),
            )
            .await;
        };
        let checked =
            super::mfa::check_right_now(&state, &principal, peer, &headers, CREATE, &user, proof)
                .await;
        match checked {
            Ok(_) => {}
            Err(super::mfa::Refused::Show(error)) => {
                return list_page(
                    &state,
                    &principal,
                    &token,
                    StatusCode::BAD_REQUEST,
                    Some(error),
                )
                .await;
            }
            Err(super::mfa::Refused::Page(page)) => return page,
        }
    } else {
        // No app: as for any privileged change (`MFA_REQUIRED` still asks for one).
        let step_up = super::mfa::step_up_page(
            &state, &principal, peer, &headers, &token, CREATE, "/tokens",
        );
        if let Some(page) = step_up.await {
            return page;
        }
    }
    let ask = MintAsk {
        name: form.name.clone(),
        role: Some(form.role.clone()),
        permissions: None,
        expires_in: form.expires_in.clone().filter(|e| !e.trim().is_empty()),
        owner: None,
    };
    let bounded =
        minting::bounded_by_creator(&state.store, &principal, &ask, crate::store::now_ms());
    let request = match bounded.await {
        Ok(request) => request,
        Err(MintRefused::Store(e)) => {
            tracing::warn!(error = %e, "a token was not minted: the store did not answer");
            return super::unavailable("No token was made.");
        }
        Err(e) => {
            refused(match e {
                MintRefused::MoreThanYouHold(_) => "more_than_you_hold",
                _ => "invalid",
            })
            .await;
            return list_page(
                &state,
                &principal,
                &token,
                StatusCode::BAD_REQUEST,
                Some(e.to_string()),
            )
            .await;
        }
    };
    let actor = page_actor(&principal, peer, &headers, Decision::Allow);
    match manage::create_token(&state.store, &state.audit, &actor, &request).await {
        Ok((row, secret)) => {
            let view = TokenView::of(&row, crate::store::now_ms());
            render(
                StatusCode::CREATED,
                &CreatedPage {
                    csrf: cookies::csrf_token(&token),
                    name: view.name,
                    scope: view.scope,
                    expires: if row.expires_at.is_some() {
                        view.expires
                    } else {
                        "never".into()
                    },
                    secret,
                },
            )
        }
        Err(ManageError::Invalid(m)) => {
            refused("invalid").await;
            list_page(&state, &principal, &token, StatusCode::BAD_REQUEST, Some(m)).await
        }
        Err(ManageError::Escalation(m)) => {
            refused("more_than_you_hold").await;
            list_page(&state, &principal, &token, StatusCode::FORBIDDEN, Some(m)).await
        }
        Err(ManageError::Store(StoreError::Conflict(m))) => {
            list_page(&state, &principal, &token, StatusCode::CONFLICT, Some(m)).await
        }
        Err(e) => {
            tracing::error!(error = %e, "token create failed");
            super::unavailable("No token was made.")
        }
    }
}

/// `POST /tokens/{id}/revoke`
pub async fn revoke(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PagePath(id): PagePath<i64>,
    PageForm(form): PageForm<CsrfForm>,
) -> Response {
    let asked = json!({ "token": id.to_string() });
    let checked = checked_form(&state, peer, &headers, form.csrf.as_deref(), REVOKE, &asked);
    let (principal, token) = match checked.await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
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
