//! Server-rendered pages: sign-in, messages (signed in, refused), and the account page with
//! the user's sessions. Strict CSP, no script, CSRF tokens on every form.

pub mod app_rules;
pub mod approvals;
pub mod audit;
pub mod cookies;
pub mod key_confirm;
pub mod keys;
pub mod mfa;
pub mod rack;
pub mod roles;
pub mod settings;
pub mod tokens;
pub mod users;

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use crate::app::{AppState, Peer};
use crate::audit::{AuditEvent, Decision, EventKind};
use crate::identity::{Principal, authenticate};

/// The stylesheet, compiled in.
const STYLESHEET: &str = include_str!("../../static/app.css");

/// The security-key script, compiled in.
const KEYS_SCRIPT: &str = include_str!("../../static/keys.js");

/// Content-Security-Policy for every page: nothing but our own stylesheet and our one script
/// (security keys: `/static/keys.js`); no inline script, no connections.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage<'a> {
    enabled: bool,
    provider: &'a str,
    return_to: &'a str,
}

/// A page with a title and a message.
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    /// Heading.
    pub title: &'a str,
    /// Body text.
    pub message: &'a str,
    /// Optional link.
    pub link: Option<&'a str>,
    /// Its text.
    pub link_text: &'a str,
}

struct SessionView {
    id: i64,
    channel: String,
    user_agent: String,
    ip: String,
    created: String,
    last_seen: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    nav: Nav,
    /// Whether an authenticator app is on.
    mfa: bool,
    email: String,
    name: String,
    role: String,
    csrf: String,
    sessions: Vec<SessionView>,
}

/// The links of the hub pages (the rack, the account): to each page the person may use.
pub(crate) struct Nav {
    /// Whether to link to the audit trail.
    pub audit: bool,
    /// Whether to link to the API tokens.
    pub tokens: bool,
    /// Whether to link to the users.
    pub users: bool,
    /// Whether to link to the roles.
    pub roles: bool,
    /// Whether to link to the app rules.
    pub app_rules: bool,
    /// Whether to link to the deploy approvals.
    pub deploys: bool,
    /// Whether to link to the settings.
    pub settings: bool,
}

impl Nav {
    /// The links `principal` gets.
    pub(crate) fn of(principal: &Principal) -> Nav {
        Nav {
            audit: audit::may_read(principal),
            tokens: tokens::may_list(principal),
            users: users::may_list(principal),
            roles: roles::may_list(principal),
            app_rules: app_rules::may_list(principal),
            deploys: approvals::may_list(principal),
            settings: principal.permissions.allows(crate::settings::READ),
        }
    }
}

/// Renders a template with the security headers.
pub fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => with_security_headers((status, Html(html)).into_response()),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            with_security_headers(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "page could not be rendered",
                )
                    .into_response(),
            )
        }
    }
}

/// The answer to a page request whose query, form or path cannot be read.
fn bad_page() -> Response {
    message(
        StatusCode::BAD_REQUEST,
        "Bad request",
        "This link or form is not valid. Go back and try again.",
    )
}

/// A page's query parameters; malformed ones get a 400 page (axum's own answer is plain text
/// quoting the input back, control characters included).
pub struct PageQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S>
    for PageQuery<T>
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| PageQuery(q))
            .map_err(|_| bad_page())
    }
}

/// A page's path parameters, refused like [`PageQuery`].
pub struct PagePath<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S>
    for PagePath<T>
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| PagePath(p))
            .map_err(|_| bad_page())
    }
}

/// A page's submitted form, refused like [`PageQuery`]; like [`crate::api::ApiJson`], it must
/// arrive within `CLIENT_TIMEOUT_SECS` (else a 408 page).
pub struct PageForm<T>(pub T);

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<AppState> for PageForm<T> {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, Response> {
        if crate::api::declares_too_much(&request) {
            return Err(message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "This form is larger than the gateway accepts. Go back and try again.",
            ));
        }
        let within = state.config.client_timeout;
        match tokio::time::timeout(within, Form::<T>::from_request(request, state)).await {
            Err(_) => Err(message(
                StatusCode::REQUEST_TIMEOUT,
                "Request timed out",
                "The form did not arrive in time. Go back and try again.",
            )),
            Ok(Ok(Form(form))) => Ok(PageForm(form)),
            Ok(Err(_)) => Err(bad_page()),
        }
    }
}

/// A message page.
pub fn message(status: StatusCode, title: &str, message: &str) -> Response {
    render(
        status,
        &MessagePage {
            title,
            message,
            link: None,
            link_text: "",
        },
    )
}

/// Adds CSP and friends to a page response.
pub fn with_security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /static/app.css`
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// `GET /static/keys.js`
pub async fn keys_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        KEYS_SCRIPT,
    )
        .into_response()
}

/// The signed-in browser user, from the session cookie.
pub async fn cookie_principal(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Principal, String)>, StoreDown> {
    let Some(token) = cookies::session(state, headers) else {
        return Ok(None);
    };
    match authenticate(&state.store, &state.config.sessions, &token).await {
        Ok(principal) if principal.session_id().is_some() => Ok(Some((principal, token))),
        Ok(_) => Ok(None),
        // Not "signed out": the page must not say so (nor offer a sign-in that will fail).
        Err(crate::identity::AuthError::Store(e)) => {
            tracing::error!(error = %e, "session lookup failed");
            Err(StoreDown)
        }
        Err(_) => Ok(None),
    }
}

/// The signed-in browser user for a page: the sign-in page (returning to `return_to`) when
/// nobody is signed in, the 503 page when the store cannot say.
pub(crate) async fn signed_in_page(
    state: &AppState,
    headers: &HeaderMap,
    return_to: &str,
) -> Result<(Principal, String), Response> {
    match cookie_principal(state, headers).await {
        Ok(Some(signed_in)) => Ok(signed_in),
        Ok(None) => Err(signin_page(state, return_to)),
        Err(down) => Err(down.into_response()),
    }
}

/// The signed-in browser user for a posted form: back to `/` when nobody is signed in, the
/// 503 page when the store cannot say.
pub(crate) async fn signed_in_form(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Principal, String), Response> {
    match cookie_principal(state, headers).await {
        Ok(Some(signed_in)) => Ok(signed_in),
        Ok(None) => Err(Redirect::to("/").into_response()),
        Err(down) => Err(down.into_response()),
    }
}

/// The store could not say who the browser is, or could not make a change.
#[derive(Debug, Clone, Copy)]
pub struct StoreDown;

impl IntoResponse for StoreDown {
    fn into_response(self) -> Response {
        unavailable("Nothing was changed.")
    }
}

/// The 503 page: the gateway's store is not answering; `outcome` says what that left.
pub fn unavailable(outcome: &str) -> Response {
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        &format!("The gateway's store is not answering. {outcome} Try again shortly."),
    )
}

/// `GET /`: the rack's page (the dashboard) when signed in, the sign-in page otherwise.
pub async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match cookie_principal(&state, &headers).await {
        Ok(Some(_)) => Redirect::to("/rack").into_response(),
        Ok(None) => signin_page(&state, "/rack"),
        Err(down) => down.into_response(),
    }
}

pub(crate) fn signin_page(state: &AppState, return_to: &str) -> Response {
    let provider = state
        .oidc
        .as_ref()
        .map(|o| {
            o.config()
                .issuer
                .host_str()
                .unwrap_or("your identity provider")
                .to_string()
        })
        .unwrap_or_default();
    render(
        StatusCode::OK,
        &SigninPage {
            enabled: state.oidc.is_some(),
            provider: &provider,
            return_to,
        },
    )
}

pub(crate) fn time(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    crate::audit::format_time(t)
        .chars()
        .take(19)
        .collect::<String>()
        .replace('T', " ")
}

/// `GET /account`
pub async fn account(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (principal, token) = match signed_in_page(&state, &headers, "/account").await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    let Some(user_id) = principal.user_id() else {
        return signin_page(&state, "/account");
    };
    let user = match state.store.user_by_id(user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return signin_page(&state, "/account"),
        Err(e) => {
            tracing::error!(error = %e, "user lookup failed");
            return StoreDown.into_response();
        }
    };
    // An empty list would tell the user that no other session of theirs is open.
    let idle_since =
        crate::identity::sessions::idle_since(&state.config.sessions, crate::store::now_ms());
    let sessions = match state.store.user_sessions(user_id, idle_since).await {
        Ok(sessions) => sessions,
        Err(e) => {
            tracing::error!(error = %e, "session list failed");
            return StoreDown.into_response();
        }
    };
    let mfa = match crate::mfa::required(&state.store, user_id).await {
        Ok(row) => row.is_some(),
        Err(e) => {
            tracing::error!(error = %e, "authenticator lookup failed");
            return StoreDown.into_response();
        }
    };
    let current = principal.session_id();
    let page = AccountPage {
        mfa,
        nav: Nav::of(&principal),
        email: user.email,
        name: user.name,
        role: user.role,
        csrf: cookies::csrf_token(&token),
        sessions: sessions
            .into_iter()
            .map(|s| SessionView {
                id: s.id,
                current: Some(s.id) == current,
                channel: s.channel,
                user_agent: s.user_agent.unwrap_or_default(),
                ip: s.ip.unwrap_or_default(),
                created: time(s.created_at),
                last_seen: time(s.last_seen_at),
            })
            .collect(),
    };
    render(StatusCode::OK, &page)
}

/// A form carrying only the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// The token from the page.
    pub csrf: Option<String>,
}

/// `POST /account/sessions/{id}/revoke`
pub async fn revoke_session(
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
        let details = json!({ "session_id": id, "reason": "csrf_rejected" });
        audit_session_refusal(&state, &principal, peer, details).await;
        return stale_form();
    }
    let owned = match state.store.session_by_id(id).await {
        Ok(session) => session.is_some_and(|s| Some(s.user_id) == principal.user_id()),
        Err(e) => {
            // Not a refusal: nothing is known about the session.
            tracing::error!(error = %e, "session lookup failed");
            return StoreDown.into_response();
        }
    };
    if !owned {
        // Someone else's session (or none): refused, and the trail shows who tried.
        let details = json!({ "session_id": id, "reason": "not_your_session" });
        audit_session_refusal(&state, &principal, peer, details).await;
        return message(
            StatusCode::NOT_FOUND,
            "No such session",
            "That is not one of your sessions, or it has ended.",
        );
    }
    match state.store.revoke_session(id).await {
        Ok(true) => {
            audit_session_revoke(&state, &principal, peer, json!({ "session_id": id })).await;
        }
        // Ended meanwhile.
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "session revoke failed");
            return unavailable("The session was not ended.");
        }
    }
    if principal.session_id() == Some(id) {
        // This browser's own session: signed out, as with sign-out, not left holding a
        // cookie that no longer works.
        let mut response = Redirect::to("/").into_response();
        cookies::clear_session(&state, &mut response);
        return response;
    }
    Redirect::to("/account").into_response()
}

/// The answer to a form whose CSRF token is missing or wrong.
pub fn stale_form() -> Response {
    message(
        StatusCode::FORBIDDEN,
        "Refused",
        "The form expired or did not come from this site. Reload the page and try again.",
    )
}

/// `POST /account/sessions/revoke-all`
pub async fn revoke_all(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<CsrfForm>,
) -> Response {
    let (principal, token) = match signed_in_form(&state, &headers).await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    if !cookies::csrf_ok(&token, form.csrf.as_deref()) {
        let details = json!({ "all": true, "reason": "csrf_rejected" });
        audit_session_refusal(&state, &principal, peer, details).await;
        return stale_form();
    }
    if let Some(user_id) = principal.user_id() {
        // Reporting success here would leave a stolen session running while its owner
        // believes every one was ended; the cookie stays so that they can try again.
        let n = match state.store.revoke_user_sessions(user_id).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "revoking all sessions failed");
                return unavailable("Your sessions were not ended.");
            }
        };
        audit_session_revoke(&state, &principal, peer, json!({ "all": true, "count": n })).await;
    }
    let mut response = Redirect::to("/").into_response();
    cookies::clear_session(&state, &mut response);
    response
}

/// Audits a session revocation by `principal`.
pub async fn audit_session_revoke(
    state: &AppState,
    principal: &Principal,
    peer: Peer,
    details: serde_json::Value,
) {
    record_session_change(state, principal, peer, Decision::Allow, details).await;
}

/// Audits a refused session revocation by `principal` (`details.reason` says why).
async fn audit_session_refusal(
    state: &AppState,
    principal: &Principal,
    peer: Peer,
    details: serde_json::Value,
) {
    record_session_change(state, principal, peer, Decision::Deny, details).await;
}

async fn record_session_change(
    state: &AppState,
    principal: &Principal,
    peer: Peer,
    decision: Decision,
    details: serde_json::Value,
) {
    let mut e = AuditEvent::new(
        EventKind::Gateway,
        crate::request_id::current(),
        "gateway:sessions:revoke",
    );
    e.rbac_decision = decision;
    e.actor_type = principal.actor_type();
    e.user_email = principal.email().map(str::to_string);
    e.token_name = principal.token_name().map(str::to_string);
    e.client_ip = Some(peer.ip.to_string());
    let e = e.with_details(details);
    if let Err(err) = state.audit.record(e).await {
        tracing::error!(error = %err, "could not audit a session revocation");
    }
}

/// The signed-in `principal` as the author of a change made from a page, from `peer` with
/// `headers`' user agent.
pub(crate) fn page_actor(
    principal: &Principal,
    peer: Peer,
    headers: &HeaderMap,
    decision: Decision,
) -> crate::identity::manage::Actor {
    crate::identity::manage::Actor {
        actor_type: principal.actor_type(),
        email: principal.email().map(str::to_string),
        token_name: principal.token_name().map(str::to_string),
        label: principal.email().unwrap_or("unknown").to_string(),
        client_ip: Some(peer.ip.to_string()),
        user_agent: crate::audit::audited_user_agent(headers),
        decision,
        holds: Some(principal.permissions.clone()),
    }
}

/// An event of `action` by the signed-in `principal` on a page, from `peer` with `headers`'
/// user agent, for the handler to complete and record.
pub(crate) fn page_event(
    principal: &Principal,
    peer: Peer,
    headers: &HeaderMap,
    action: &str,
    decision: Decision,
) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Gateway, crate::request_id::current(), action);
    e.rbac_decision = decision;
    e.actor_type = principal.actor_type();
    e.user_email = principal.email().map(str::to_string);
    e.token_name = principal.token_name().map(str::to_string);
    e.client_ip = Some(peer.ip.to_string());
    e.user_agent = crate::audit::audited_user_agent(headers);
    e
}

/// Audits `principal`'s refused `action` on a page (`details` says what and why) as a 403.
pub(crate) async fn page_refusal(
    state: &AppState,
    principal: &Principal,
    peer: Peer,
    headers: &HeaderMap,
    action: &str,
    details: serde_json::Value,
) {
    let mut e = page_event(principal, peer, headers, action, Decision::Deny);
    e.status = Some(403);
    if let Err(err) = state.audit.record(e.with_details(details)).await {
        tracing::error!(error = %err, "could not audit a refusal on a page");
    }
}

/// The signed-in person opening the page at `path` (for the sign-in to come back to), with
/// their session secret, when they hold `permission`; otherwise the page to answer with — the
/// sign-in, or the refusal, audited as one of `permission` with the caller's role.
pub(crate) async fn checked_page(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    path: &str,
    permission: &str,
) -> Result<(Principal, String), Response> {
    let (principal, token) = signed_in_page(state, headers, path).await?;
    if !principal.permissions.allows(permission) {
        let details = serde_json::json!({ "reason": "forbidden", "role": principal.role_name() });
        page_refusal(state, &principal, peer, headers, permission, details).await;
        return Err(not_allowed(permission, &principal));
    }
    Ok((principal, token))
}

/// The signed-in person posting a change form, with their session secret, once the form's
/// CSRF token is theirs and they hold `permission`; otherwise the page to answer with, the
/// refusal audited as one of `permission` with `asked` and its `reason` (`csrf_rejected`,
/// `forbidden`). A privileged change then asks for the step-up itself (`mfa::step_up_page`),
/// after any checks of its own that need no code.
pub(crate) async fn checked_form(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    csrf: Option<&str>,
    permission: &str,
    asked: &serde_json::Value,
) -> Result<(Principal, String), Response> {
    let (principal, token) = signed_in_form(state, headers).await?;
    let refused = |reason: &str| {
        let mut details = asked.clone();
        if let Some(map) = details.as_object_mut() {
            map.insert("reason".into(), reason.into());
        }
        page_refusal(state, &principal, peer, headers, permission, details)
    };
    if !cookies::csrf_ok(&token, csrf) {
        refused("csrf_rejected").await;
        return Err(stale_form());
    }
    if !principal.permissions.allows(permission) {
        refused("forbidden").await;
        return Err(not_allowed(permission, &principal));
    }
    Ok((principal, token))
}

/// The 403 page for a missing `permission`.
pub(crate) fn not_allowed(permission: &str, principal: &Principal) -> Response {
    message(
        StatusCode::FORBIDDEN,
        "Not allowed",
        &format!(
            "This needs the permission {permission} (your role: {}).",
            principal.role_name()
        ),
    )
}

/// Query with an optional return path.
#[derive(Debug, Deserialize)]
pub struct ReturnTo {
    /// Where to go after sign-in.
    pub return_to: Option<String>,
}

/// `GET /login` (a friendly alias): the sign-in page.
pub async fn login_page(
    State(state): State<AppState>,
    PageQuery(q): PageQuery<ReturnTo>,
) -> Response {
    let target = q
        .return_to
        .filter(|r| cookies::safe_return_to(r))
        .unwrap_or_else(|| "/account".into());
    signin_page(&state, &target)
}
