//! `GET /roles`: every role and what it grants, for admins (`gateway:roles:list`), with forms
//! to define a custom role (`POST /roles/create`), change its permissions
//! (`POST /roles/update`) and delete it (`POST /roles/delete`) — CSRF-checked, behind the
//! step-up (a change of permissions behind "Confirm it's you", right then, as over the API),
//! with the rules and audit events of `POST /api/v1/roles…`.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{
    PageForm, StoreDown, checked_form, checked_page, cookies, page_actor, page_refusal, render,
};
use crate::api::roles::{ListedRole, all_roles};
use crate::app::{AppState, Peer};
use crate::audit::Decision;
use crate::identity::Principal;
use crate::identity::manage::ManageError;
use crate::identity::roles;
use crate::store::StoreError;

const LIST: &str = "gateway:roles:list";
const CREATE: &str = "gateway:roles:create";
const UPDATE: &str = "gateway:roles:update";
const DELETE: &str = "gateway:roles:delete";

#[derive(Template)]
#[template(path = "roles.html")]
struct RolesPage {
    csrf: String,
    can_create: bool,
    can_update: bool,
    can_delete: bool,
    error: Option<String>,
    roles: Vec<ListedRole>,
}

/// Whether `principal` may see the roles page (for links to it).
pub fn may_list(principal: &Principal) -> bool {
    principal.permissions.allows(LIST)
}

/// `GET /roles`
pub async fn page(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    let (principal, token) = match checked_page(&state, peer, &headers, "/roles", LIST).await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    list_page(&state, &principal, &token, StatusCode::OK, None).await
}

/// The roles page, with `error` said above the table.
async fn list_page(
    state: &AppState,
    principal: &Principal,
    token: &str,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let roles = match all_roles(state).await {
        Ok(roles) => roles,
        Err(e) => {
            tracing::error!(error = %e, "role list failed");
            return StoreDown.into_response();
        }
    };
    let may = |p: &str| principal.permissions.allows(p);
    render(
        status,
        &RolesPage {
            csrf: cookies::csrf_token(token),
            can_create: may(CREATE),
            can_update: may(UPDATE),
            can_delete: may(DELETE),
            error,
            roles,
        },
    )
}

/// The roles page's forms.
#[derive(Debug, Deserialize)]
pub struct RoleForm {
    csrf: Option<String>,
    name: String,
    /// One pattern per line (commas and spaces separate them too).
    #[serde(default)]
    permissions: String,
    #[serde(default)]
    description: String,
    /// A code (or a security key's answer) given with a change of permissions.
    #[serde(flatten)]
    proof: super::mfa::ProofFields,
}

impl RoleForm {
    fn patterns(&self) -> Vec<String> {
        self.permissions
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// A change from the roles page.
#[derive(Debug, Clone, Copy)]
enum Change {
    Create,
    Update,
    Delete,
}

impl Change {
    fn permission(self) -> &'static str {
        match self {
            Change::Create => CREATE,
            Change::Update => UPDATE,
            Change::Delete => DELETE,
        }
    }
}

/// `POST /roles/create`
pub async fn create(
    state: State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    form: PageForm<RoleForm>,
) -> Response {
    change(state, peer, headers, form, Change::Create).await
}

/// `POST /roles/update`
pub async fn update(
    state: State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    form: PageForm<RoleForm>,
) -> Response {
    change(state, peer, headers, form, Change::Update).await
}

/// `POST /roles/delete`
pub async fn delete(
    state: State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    form: PageForm<RoleForm>,
) -> Response {
    change(state, peer, headers, form, Change::Delete).await
}

/// Checks the form and the permission, makes `what`, and goes back to the list (or shows it
/// with what was refused).
async fn change(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<RoleForm>,
    what: Change,
) -> Response {
    let permission = what.permission();
    let patterns = form.patterns();
    let asked = json!({ "role": form.name, "permissions": patterns });
    let checked = checked_form(
        &state,
        peer,
        &headers,
        form.csrf.as_deref(),
        permission,
        &asked,
    );
    let (principal, token) = match checked.await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    let refusal = |reason: &str| {
        let details = json!({ "role": form.name, "permissions": patterns, "reason": reason });
        page_refusal(&state, &principal, peer, &headers, permission, details)
    };
    let confirmed = match what {
        // What everyone holding the role may do changes: a code with it, as for a role change.
        Change::Update => {
            let fields = [
                ("name", form.name.as_str()),
                ("permissions", form.permissions.as_str()),
                ("description", form.description.as_str()),
            ];
            let now = super::mfa::NowAsked {
                what: "Changing a role's permissions",
                action: permission,
                form_action: "/roles/update",
                fields: &fields,
                back: "/roles",
            };
            let proof = form.proof.given();
            super::mfa::confirm_now(&state, &principal, peer, &headers, &token, &now, proof).await
        }
        Change::Create | Change::Delete => {
            super::mfa::step_up_page(
                &state, &principal, peer, &headers, &token, permission, "/roles",
            )
            .await
        }
    };
    if let Some(page) = confirmed {
        return page;
    }
    let actor = page_actor(&principal, peer, &headers, Decision::Allow);
    let (store, audit) = (&state.store, &state.audit);
    let done = match what {
        Change::Create => {
            roles::create_role(
                store,
                audit,
                &actor,
                &form.name,
                &form.description,
                &patterns,
            )
            .await
        }
        Change::Update => {
            let description = Some(form.description.as_str());
            roles::update_role(store, audit, &actor, &form.name, description, &patterns).await
        }
        Change::Delete => roles::delete_role(store, audit, &actor, &form.name).await,
    };
    let (status, error) = match done {
        Ok(_) => return Redirect::to("/roles").into_response(),
        Err(ManageError::Invalid(m)) => {
            refusal("invalid").await;
            (StatusCode::BAD_REQUEST, m)
        }
        Err(ManageError::Escalation(m)) => {
            refusal("more_than_you_hold").await;
            (StatusCode::FORBIDDEN, m)
        }
        Err(ManageError::Store(e @ (StoreError::Conflict(_) | StoreError::InUse(_)))) => {
            (StatusCode::CONFLICT, e.to_string())
        }
        Err(ManageError::Store(e @ StoreError::NotFound(_))) => {
            (StatusCode::NOT_FOUND, e.to_string())
        }
        Err(ManageError::Audit(_)) => return super::unavailable("Nothing was changed."),
        Err(e) => {
            tracing::error!(error = %e, "a role change from the roles page failed");
            return super::unavailable("Nothing was changed.");
        }
    };
    list_page(&state, &principal, &token, status, Some(error)).await
}
