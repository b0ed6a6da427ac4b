//! `GET /app-rules`: every app's rules ([`crate::app_rules`]) for anyone holding
//! `gateway:app-rules:read`, with forms to set an app's rules (`POST /app-rules/set`) and
//! clear them (`POST /app-rules/clear`) for holders of `gateway:app-rules:write` — CSRF-checked,
//! behind the step-up, with the rules and audit events of `PUT /api/v1/app-rules/{app}`.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{
    PageForm, StoreDown, checked_form, checked_page, cookies, page_actor, page_refusal, render,
};
use crate::app::{AppState, Peer};
use crate::app_rules::{self, AppRules};
use crate::audit::Decision;
use crate::identity::Principal;
use crate::identity::manage::ManageError;
use crate::store::{AppRulesRow, StoreError};

#[derive(Template)]
#[template(path = "app_rules.html")]
struct RulesPage {
    csrf: String,
    can_write: bool,
    error: Option<String>,
    apps: Vec<AppRulesRow>,
}

/// Whether `principal` may see the app rules page (for links to it).
pub fn may_list(principal: &Principal) -> bool {
    principal.permissions.allows(app_rules::READ)
}

/// `GET /app-rules`
pub async fn page(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    let checked = checked_page(&state, peer, &headers, "/app-rules", app_rules::READ);
    let (principal, token) = match checked.await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    list_page(&state, &principal, &token, StatusCode::OK, None).await
}

/// The page, with `error` said above the table.
async fn list_page(
    state: &AppState,
    principal: &Principal,
    token: &str,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let apps = match state.store.list_app_rules().await {
        Ok(apps) => apps,
        Err(e) => {
            tracing::error!(error = %e, "app rules list failed");
            return StoreDown.into_response();
        }
    };
    render(
        status,
        &RulesPage {
            csrf: cookies::csrf_token(token),
            can_write: principal.permissions.allows(app_rules::WRITE),
            error,
            apps,
        },
    )
}

/// The page's forms: lists as text, a name (or a command, or `service=pattern`) per line.
#[derive(Debug, Deserialize)]
pub struct RulesForm {
    csrf: Option<String>,
    app: String,
    #[serde(default)]
    secret_env: String,
    #[serde(default)]
    protected_env: String,
    #[serde(default)]
    approved_commands: String,
    #[serde(default)]
    service_images: String,
}

impl RulesForm {
    /// The rules the form gives; `service=pattern` lines without `=` are refused.
    fn rules(&self) -> Result<AppRules, String> {
        let names = |text: &str| -> Vec<String> {
            text.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect()
        };
        let mut service_images = BTreeMap::new();
        for line in self.service_images.lines().filter(|l| !l.trim().is_empty()) {
            let Some((service, pattern)) = line.split_once('=') else {
                return Err(format!(
                    "service images: {:?} is not service=pattern",
                    line.chars().take(80).collect::<String>()
                ));
            };
            service_images.insert(service.trim().to_string(), pattern.trim().to_string());
        }
        Ok(AppRules {
            secret_env: names(&self.secret_env),
            protected_env: names(&self.protected_env),
            approved_commands: self.approved_commands.lines().map(str::to_string).collect(),
            service_images,
        })
    }
}

/// `POST /app-rules/set`
pub async fn set(
    state: State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    form: PageForm<RulesForm>,
) -> Response {
    change(state, peer, headers, form, false).await
}

/// `POST /app-rules/clear`
pub async fn clear(
    state: State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    form: PageForm<RulesForm>,
) -> Response {
    change(state, peer, headers, form, true).await
}

/// Checks the form and the permission, sets (or clears) the app's rules, and goes back to
/// the list (or shows it with what was refused).
async fn change(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<RulesForm>,
    clearing: bool,
) -> Response {
    let action = if clearing {
        "gateway:app-rules:delete"
    } else {
        "gateway:app-rules:update"
    };
    let asked = json!({ "app": form.app });
    let checked = checked_form(
        &state,
        peer,
        &headers,
        form.csrf.as_deref(),
        app_rules::WRITE,
        &asked,
    );
    let (principal, token) = match checked.await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    let refusal = |reason: &str| {
        let details = json!({ "app": form.app, "reason": reason });
        page_refusal(&state, &principal, peer, &headers, action, details)
    };
    let step_up = super::mfa::step_up_page(
        &state,
        &principal,
        peer,
        &headers,
        &token,
        app_rules::WRITE,
        "/app-rules",
    );
    if let Some(page) = step_up.await {
        return page;
    }
    let actor = page_actor(&principal, peer, &headers, Decision::Allow);
    let (store, audit) = (&state.store, &state.audit);
    let app = form.app.trim();
    let done = if clearing {
        app_rules::clear_rules(store, audit, &actor, app)
            .await
            .map(|_| ())
    } else {
        match form.rules() {
            Ok(rules) => app_rules::set_rules(store, audit, &actor, app, rules)
                .await
                .map(|_| ()),
            Err(m) => Err(ManageError::Invalid(m)),
        }
    };
    let (status, error) = match done {
        Ok(()) => return Redirect::to("/app-rules").into_response(),
        Err(ManageError::Invalid(m)) => {
            refusal("invalid").await;
            (StatusCode::BAD_REQUEST, m)
        }
        Err(ManageError::Escalation(m)) => {
            refusal("more_than_you_hold").await;
            (StatusCode::FORBIDDEN, m)
        }
        Err(ManageError::Store(e @ StoreError::NotFound(_))) => {
            (StatusCode::NOT_FOUND, e.to_string())
        }
        Err(ManageError::Audit(_)) => return super::unavailable("Nothing was changed."),
        Err(e) => {
            tracing::error!(error = %e, "an app rules change from the page failed");
            return super::unavailable("Nothing was changed.");
        }
    };
    list_page(&state, &principal, &token, status, Some(error)).await
}
