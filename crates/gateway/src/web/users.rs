//! `GET /users`: people and their roles in the browser, for admins (`gateway:users:list`):
//! change a role, lock or unlock, reset an authenticator app, add someone — each a CSRF-checked form that makes the change
//! `POST /api/v1/users…` makes, with the same rules (not on yourself; the last admin who can
//! manage users stays one) and the same audit events.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{
    PageForm, StoreDown, checked_form, checked_page, cookies, message, page_actor, page_refusal,
    render, time,
};
use crate::app::{AppState, Peer};
use crate::audit::Decision;
use crate::identity::Principal;
use crate::identity::manage::{self, ManageError};
use crate::store::{LastAdmin, ListedUser, StoreError};

const LIST: &str = "gateway:users:list";

struct UserView {
    /// Keys beside the app ("2 security keys, 1 YubiKey"), or empty.
    factors: String,
    id: i64,
    email: String,
    name: String,
    role: String,
    locked: bool,
    last_seen: String,
    you: bool,
    /// An authenticator app guards their sign-ins.
    mfa: bool,
    /// Browsers trusted at a sign-in, still in force.
    trusted_browsers: i64,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    csrf: String,
    roles: Vec<String>,
    /// Whether to link to the roles page.
    roles_link: bool,
    users: Vec<UserView>,
}

/// Whether `principal` may see the users page (for links to it).
pub fn may_list(principal: &Principal) -> bool {
    principal.permissions.allows(LIST)
}

/// `GET /users`
pub async fn page(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    let (principal, token) = match checked_page(&state, peer, &headers, "/users", LIST).await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    let listed = async {
        let users = state.store.list_users_with_mfa().await?;
        let roles = crate::identity::roles::role_names(&state.store).await?;
        Ok::<_, StoreError>((users, roles))
    };
    let (users, roles) = match listed.await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::error!(error = %e, "user list failed");
            return StoreDown.into_response();
        }
    };
    let you = principal.user_id();
    render(
        StatusCode::OK,
        &UsersPage {
            csrf: cookies::csrf_token(&token),
            roles,
            roles_link: super::roles::may_list(&principal),
            users: users.iter().map(|u| view(u, you)).collect(),
        },
    )
}

fn view(listed: &ListedUser, you: Option<i64>) -> UserView {
    let u = &listed.user;
    let mut factors = Vec::new();
    match listed.security_keys {
        0 => {}
        1 => factors.push("1 security key".to_string()),
        n => factors.push(format!("{n} security keys")),
    }
    match listed.yubikeys {
        0 => {}
        1 => factors.push("1 YubiKey".to_string()),
        n => factors.push(format!("{n} YubiKeys")),
    }
    match listed.trusted_browsers {
        0 => {}
        1 => factors.push("1 trusted browser".to_string()),
        n => factors.push(format!("{n} trusted browsers")),
    }
    UserView {
        mfa: listed.mfa,
        trusted_browsers: listed.trusted_browsers,
        factors: factors.join(", "),
        id: u.id,
        email: u.email.clone(),
        name: u.name.clone(),
        role: u.role.clone(),
        locked: u.locked,
        last_seen: u.last_seen_at.map(time).unwrap_or_else(|| "-".into()),
        you: Some(u.id) == you,
    }
}

/// The users page's forms: the CSRF token, whose account, and what to make it.
#[derive(Debug, Deserialize)]
pub struct UserForm {
    /// The token from the page.
    csrf: Option<String>,
    /// The user's e-mail.
    email: String,
    /// The role (role change, new user).
    #[serde(default)]
    role: String,
    /// The name (new user).
    #[serde(default)]
    name: String,
    /// A code from the person's authenticator app given with it (right now), or a security
    /// key's answer.
    #[serde(flatten)]
    proof: super::mfa::ProofFields,
}

/// A change from the users page.
#[derive(Debug, Clone, Copy)]
enum Change {
    Role,
    Lock,
    Unlock,
    Add,
    ResetMfa,
}

impl Change {
    /// What it is, for the confirmation page.
    fn what(self) -> &'static str {
        match self {
            Change::Role => "Changing someone's role",
            Change::Lock => "Locking someone out",
            Change::Unlock => "Unlocking someone",
            Change::Add => "Adding someone",
            Change::ResetMfa => "Resetting someone's authenticator app",
        }
    }

    /// Where its form posts.
    fn form_action(self) -> &'static str {
        match self {
            Change::Role => "/users/role",
            Change::Lock => "/users/lock",
            Change::Unlock => "/users/unlock",
            Change::Add => "/users/add",
            Change::ResetMfa => "/users/reset-mfa",
        }
    }

    fn permission(self) -> &'static str {
        match self {
            Change::Role => "gateway:users:update",
            Change::Lock => "gateway:users:lock",
            Change::Unlock => "gateway:users:unlock",
            Change::Add => "gateway:users:create",
            Change::ResetMfa => "gateway:mfa:reset",
        }
    }
}

/// `POST /users/role`
pub async fn set_role(
    state: State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    form: PageForm<UserForm>,
) -> Response {
    change(state, peer, headers, form, Change::Role).await
}

/// `POST /users/lock`
pub async fn lock(
    state: State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    form: PageForm<UserForm>,
) -> Response {
    change(state, peer, headers, form, Change::Lock).await
}

/// `POST /users/unlock`
pub async fn unlock(
    state: State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    form: PageForm<UserForm>,
) -> Response {
    change(state, peer, headers, form, Change::Unlock).await
}

/// `POST /users/reset-mfa`: removes someone's authenticator app (a lost phone).
pub async fn reset_mfa(
    state: State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    form: PageForm<UserForm>,
) -> Response {
    change(state, peer, headers, form, Change::ResetMfa).await
}

/// `POST /users/add`
pub async fn add(
    state: State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    form: PageForm<UserForm>,
) -> Response {
    change(state, peer, headers, form, Change::Add).await
}

/// Checks the form, the permission and the target, makes `what`, and goes back to the list.
async fn change(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<UserForm>,
    what: Change,
) -> Response {
    let permission = what.permission();
    let asked = |reason: &str| json!({ "email": form.email, "role": form.role, "reason": reason });
    let given = json!({ "email": form.email, "role": form.role });
    let checked = checked_form(
        &state,
        peer,
        &headers,
        form.csrf.as_deref(),
        permission,
        &given,
    );
    let (principal, token) = match checked.await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    let yours = principal.email() == Some(gateway_core::text::email_key(&form.email).as_str());
    if yours && !matches!(what, Change::Add) {
        let details = asked("own_account");
        page_refusal(&state, &principal, peer, &headers, permission, details).await;
        return message(
            StatusCode::BAD_REQUEST,
            "Not on yourself",
            "You cannot change your own role, lock yourself or reset your own authenticator \
             app: ask another admin (or remove your app on your account page, with a code).",
        );
    }
    // Right now: a code with the change itself, not one given minutes ago.
    let fields = [
        ("email", form.email.as_str()),
        ("role", form.role.as_str()),
        ("name", form.name.as_str()),
    ];
    let now = super::mfa::NowAsked {
        what: what.what(),
        action: permission,
        form_action: what.form_action(),
        fields: &fields,
        back: "/users",
    };
    let proof = form.proof.given();
    let confirmed =
        super::mfa::confirm_now(&state, &principal, peer, &headers, &token, &now, proof);
    if let Some(page) = confirmed.await {
        return page;
    }
    let actor = page_actor(&principal, peer, &headers, Decision::Allow);
    let (store, audit) = (&state.store, &state.audit);
    let done = match what {
        Change::Role => {
            manage::set_user_role(
                store,
                audit,
                &actor,
                &form.email,
                &form.role,
                LastAdmin::Keep,
            )
            .await
        }
        Change::Lock | Change::Unlock => {
            let locked = matches!(what, Change::Lock);
            manage::set_user_locked(store, audit, &actor, &form.email, locked, LastAdmin::Keep)
                .await
        }
        Change::Add => {
            manage::add_user(store, audit, &actor, &form.email, &form.name, &form.role).await
        }
        Change::ResetMfa => manage::reset_mfa(store, audit, &actor, &form.email).await,
    };
    match done {
        Ok(_) => Redirect::to("/users").into_response(),
        Err(e) => {
            if matches!(e, ManageError::Escalation(_)) {
                let details = asked("more_than_you_hold");
                page_refusal(&state, &principal, peer, &headers, permission, details).await;
            }
            refused_change(e)
        }
    }
}

/// The page for a change `manage` refused (nothing was changed).
fn refused_change(e: ManageError) -> Response {
    let (status, title) = match &e {
        ManageError::Invalid(_) | ManageError::Store(StoreError::Ambiguous(_)) => {
            (StatusCode::BAD_REQUEST, "Not changed")
        }
        ManageError::Store(StoreError::NotFound(_)) => (StatusCode::NOT_FOUND, "No such user"),
        ManageError::Escalation(_) => (StatusCode::FORBIDDEN, "Not changed"),
        ManageError::Store(StoreError::Conflict(_) | StoreError::LastAdmin(_)) => {
            (StatusCode::CONFLICT, "Not changed")
        }
        ManageError::Audit(_) => return super::unavailable("Nothing was changed."),
        other => {
            tracing::error!(error = %other, "a user change from the users page failed");
            return super::unavailable("Nothing was changed.");
        }
    };
    let text = match &e {
        ManageError::Store(StoreError::Conflict(m)) => format!("{m} already exists."),
        other => other.to_string(),
    };
    message(status, title, &text)
}

/// The form forgetting someone's trusted browsers.
#[derive(Debug, Deserialize)]
pub struct ForgetBrowsersForm {
    csrf: Option<String>,
    email: String,
}

/// `POST /users/forget-browsers`: forgets every browser someone trusted at a sign-in, as
/// `DELETE /api/v1/users/{email}/trusted-browsers` does.
pub async fn forget_browsers(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<ForgetBrowsersForm>,
) -> Response {
    let permission = "gateway:sessions:manage";
    let asked = json!({ "email": form.email, "all": true });
    let checked = checked_form(
        &state,
        peer,
        &headers,
        form.csrf.as_deref(),
        permission,
        &asked,
    );
    let (principal, _) = match checked.await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    let actor = page_actor(&principal, peer, &headers, Decision::Allow);
    match manage::forget_browsers(&state.store, &state.audit, &actor, &form.email).await {
        Ok(_) => Redirect::to("/users").into_response(),
        Err(e) => refused_change(e),
    }
}
