//! Sign-in flows: web (browser → provider → callback → cookie) and CLI (the CLI starts a login
//! bound to a PKCE-style verifier only it holds, the browser signs in, the CLI polls with the
//! verifier and receives the session).

use crate::secret_eq::secret_eq;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::app::{AppState, Peer};
use crate::audit::{ActorType, AuditEvent, Decision, EventKind, audited_user_agent};
use crate::error::ApiError;
use crate::identity::sessions::{end_evicted, issue_session};
use crate::identity::{AuthError, hash_token};
use crate::oidc::random_token;
use crate::store::{CreatedSession, LoginLimits, LoginRow, NewLogin, StoreError, UserRow, now_ms};
use crate::web::{self, cookies};

/// How long a login attempt may take.
const LOGIN_TTL_MS: i64 = 10 * 60 * 1000;
/// Longest `return_to` a web sign-in keeps (a path on this gateway, recorded like one).
const MAX_RETURN_TO: usize = crate::audit::MAX_AUDITED_PATH;

/// Names, in a sign-in's audit details, the sessions it ends to keep the user within
/// `MAX_SESSIONS_PER_USER`: `"evicted": [{"session_id": …}, …]` (a key naming sessions
/// itself would be redacted as a secret's name).
fn evicted_details(ids: &[i64]) -> serde_json::Value {
    json!(
        ids.iter()
            .map(|id| json!({ "session_id": id }))
            .collect::<Vec<_>>()
    )
}

/// Records a sign-in that created `created`'s session, then ends the sessions it named for
/// ending, in a task of its own (a caller that goes away cannot leave the event naming
/// sessions that were not ended). Unrecorded, the new session is withdrawn and nothing else
/// changes.
async fn record_signin_and_evict(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    user: &UserRow,
    created: &CreatedSession,
    mut details: serde_json::Value,
) -> Result<(), crate::audit::AuditError> {
    if let (false, Some(map)) = (created.to_end.is_empty(), details.as_object_mut()) {
        map.insert("evicted".into(), evicted_details(&created.to_end));
    }
    let (state, headers) = (state.clone(), headers.clone());
    let (user_id, email) = (user.id, user.email.clone());
    let (session_id, to_end) = (created.row.id, created.to_end.clone());
    let work = async move {
        if let Err(err) = record_signin(&state, &peer, &headers, &email, details).await {
            withdraw_session(&state, session_id, &err).await;
            return Err(err);
        }
        let limits = &state.config.sessions;
        match end_evicted(&state.store, limits, user_id, &to_end).await {
            // Sign-ins at the same moment each named the same sessions: the ones ended beyond
            // those are audited after, as revocations are.
            Ok(more) if !more.is_empty() => {
                let details =
                    json!({ "reason": "too_many_sessions", "evicted": evicted_details(&more) });
                let action = "gateway:auth:signout";
                audit_signin(&state, &peer, &headers, action, Some(&email), true, details).await;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(
                error = %e,
                user_id,
                "could not end sessions beyond MAX_SESSIONS_PER_USER (the next sign-in will)"
            ),
        }
        Ok(())
    };
    match crate::request_id::spawn(work).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, "recording a sign-in failed");
            Err(crate::audit::AuditError::Store(format!(
                "the sign-in task ended early: {e}"
            )))
        }
    }
}

/// Audits a sign-in event; a failure is logged (refusals and sign-outs go ahead without it).
async fn audit_signin(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    action: &str,
    email: Option<&str>,
    allowed: bool,
    details: serde_json::Value,
) {
    if email.is_none() && !allowed && !state.refusals.admit(peer.ip, std::time::Instant::now()) {
        // An anonymous refusal over this address's budget: counted into a summary event.
        return;
    }
    let e = signin_event(peer, headers, action, email, allowed, details);
    if let Err(err) = state.audit.record(e).await {
        tracing::error!(error = %err, "could not audit a sign-in event");
    }
}

/// Records a successful sign-in before its credential is handed out: like a proxied request,
/// a session is not given to anyone when the trail cannot say so (the caller ends it).
async fn record_signin(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    email: &str,
    details: serde_json::Value,
) -> Result<(), crate::audit::AuditError> {
    let e = signin_event(
        peer,
        headers,
        "gateway:auth:signin",
        Some(email),
        true,
        details,
    );
    state.audit.record(e).await.map(|_| ())
}

fn signin_event(
    peer: &Peer,
    headers: &HeaderMap,
    action: &str,
    email: Option<&str>,
    allowed: bool,
    details: serde_json::Value,
) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Gateway, crate::request_id::current(), action);
    e.actor_type = if email.is_some() {
        ActorType::User
    } else {
        ActorType::Anonymous
    };
    e.user_email = email.map(str::to_string);
    e.rbac_decision = if allowed {
        Decision::Allow
    } else {
        Decision::Deny
    };
    e.client_ip = Some(peer.ip.to_string());
    e.user_agent = audited_user_agent(headers);
    e.with_details(details)
}

/// Ends a session whose sign-in could not be recorded (best effort: it was never handed out).
async fn withdraw_session(state: &AppState, session_id: i64, err: &crate::audit::AuditError) {
    tracing::error!(error = %err, "sign-in not recorded: the new session is withdrawn");
    if let Err(e) = state.store.revoke_session(session_id).await {
        tracing::error!(error = %e, session_id, "withdrawing an unrecorded session failed");
    }
}

fn refused(title: &str, text: &str) -> Response {
    web::message(StatusCode::FORBIDDEN, title, text)
}

/// Query of the web login entry point.
#[derive(Debug, Deserialize)]
pub struct WebLogin {
    return_to: Option<String>,
}

/// `GET /api/v1/auth/web/login?return_to=<path>`: starts a web sign-in.
pub async fn web_login(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    web::PageQuery(q): web::PageQuery<WebLogin>,
) -> Response {
    if state.oidc.is_none() {
        return web::message(
            StatusCode::NOT_FOUND,
            "Sign-in not configured",
            "This gateway has no identity provider (OIDC_ISSUER); use an API token.",
        );
    }
    let return_to = q.return_to.unwrap_or_else(|| "/account".into());
    if return_to.len() > MAX_RETURN_TO {
        return web::message(
            StatusCode::BAD_REQUEST,
            "Refused",
            "return_to is too long (at most 2 KiB).",
        );
    }
    if !cookies::safe_return_to(&return_to) {
        audit_signin(&state, &peer, &headers, "gateway:auth:signin", None, false, json!({ "reason": "open_redirect", "return_to": gateway_core::redact::clip(return_to.clone(), 200) })).await;
        return web::message(
            StatusCode::BAD_REQUEST,
            "Refused",
            "return_to must be a path on this gateway.",
        );
    }
    let id = random_token();
    // Counted by /64 for IPv6, as every per-address limit is.
    let client_ip = gateway_core::failure_budget::address_key(peer.ip).to_string();
    let login = NewLogin {
        id: &id,
        channel: "web",
        return_to: Some(&return_to),
        cli_challenge: None,
        cli_login_hash: None,
        expires_at: now_ms() + LOGIN_TTL_MS,
        client_ip: &client_ip,
    };
    match state.store.create_login(&login, LoginLimits::DEFAULT).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(%client_ip, "sign-in refused: too many sign-ins in progress");
            audit_signin(
                &state,
                &peer,
                &headers,
                "gateway:auth:signin",
                None,
                false,
                json!({ "channel": "web", "reason": "too_many_sign_ins" }),
            )
            .await;
            return web::message(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-ins",
                "Too many sign-ins are in progress. Finish one, or try again in a few minutes.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "could not store a login attempt");
            return web::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "Try again shortly.",
            );
        }
    }
    let response = redirect_to_provider(&state, &id).await;
    if response.status() == StatusCode::BAD_GATEWAY {
        provider_unavailable(&state, &peer, &headers, &id).await;
    }
    response
}

/// Starts the provider round trip for attempt `id`: fresh state, nonce and PKCE verifier, the
/// browser-binding cookie, and the redirect.
async fn redirect_to_provider(state: &AppState, id: &str) -> Response {
    let Some(oidc) = state.oidc.as_ref() else {
        return web::message(
            StatusCode::NOT_FOUND,
            "Sign-in not configured",
            "No identity provider.",
        );
    };
    let (oauth_state, nonce, verifier) = (random_token(), random_token(), random_token());
    match state
        .store
        .start_login_round_trip(id, &hash_token(&oauth_state), &nonce, &verifier)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return web::message(
                StatusCode::GONE,
                "Sign-in expired",
                "This sign-in link was already used. Start again.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "could not store a login round trip");
            return web::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "Try again shortly.",
            );
        }
    }
    match oidc.authorize_url(&oauth_state, &nonce, &verifier).await {
        Ok(url) => {
            let mut response = Redirect::to(&url).into_response();
            cookies::set_login(state, &mut response, id);
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "identity provider unavailable");
            web::message(
                StatusCode::BAD_GATEWAY,
                "Identity provider unavailable",
                "The identity provider could not be reached. Try again shortly.",
            )
        }
    }
}

/// A web attempt the provider could not be asked for: refused and recorded, so that it no
/// longer counts as a sign-in in progress (retries against a provider that is down would use
/// up the address's allowance). A CLI attempt stays pending: its browser link may be opened
/// again once the provider is back.
async fn provider_unavailable(state: &AppState, peer: &Peer, headers: &HeaderMap, id: &str) {
    end_attempt(
        state,
        id,
        "pending",
        "refused",
        None,
        Some("provider_unavailable"),
    )
    .await;
    audit_signin(
        state,
        peer,
        headers,
        "gateway:auth:signin",
        None,
        false,
        json!({ "channel": "web", "reason": "provider_unavailable" }),
    )
    .await;
}

/// Moves sign-in attempt `id` from `from` to `to` (with the user or the reason); a failure is
/// logged: the attempt then stays as it was until it expires, and a CLI polling it waits.
async fn end_attempt(
    state: &AppState,
    id: &str,
    from: &str,
    to: &str,
    user_id: Option<i64>,
    error: Option<&str>,
) {
    if let Err(e) = state.store.finish_login(id, from, to, user_id, error).await {
        tracing::warn!(error = %e, to, "could not record how a sign-in attempt ended");
    }
}

/// Query of the callback.
#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /api/v1/auth/callback`: the provider sends the browser back here.
///
/// Handled in a task of its own, to its end even when the browser goes away: once the attempt
/// is consumed, a callback dropped during the provider's code exchange would leave a CLI
/// sign-in the user confirmed pending until it expires, and a sign-in half recorded.
pub async fn callback(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    web::PageQuery(q): web::PageQuery<Callback>,
) -> Response {
    match crate::request_id::spawn(finish_callback(state, peer, headers, q)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "a sign-in callback failed");
            web::unavailable("You are not signed in.")
        }
    }
}

async fn finish_callback(state: AppState, peer: Peer, headers: HeaderMap, q: Callback) -> Response {
    let deny = |reason: &'static str, email: Option<String>, message: String| {
        let state = state.clone();
        let headers = headers.clone();
        async move {
            audit_signin(
                &state,
                &peer,
                &headers,
                "gateway:auth:signin",
                email.as_deref(),
                false,
                json!({ "reason": reason, "message": message }),
            )
            .await;
            // The login cookie stays: a forged callback must not cancel a real sign-in in
            // progress (it expires with the attempt anyway).
            refused("Sign-in refused", &message)
        }
    };
    let Some(oidc) = state.oidc.clone() else {
        return web::message(
            StatusCode::NOT_FOUND,
            "Sign-in not configured",
            "No identity provider.",
        );
    };
    let Some(raw_state) = q.state.as_deref() else {
        return deny(
            "missing_state",
            None,
            "The sign-in response carried no state.".into(),
        )
        .await;
    };
    let attempt = match state.store.login_by_state(&hash_token(raw_state)).await {
        Ok(Some(a)) => a,
        Ok(None) => return deny(
            "unknown_state",
            None,
            "This sign-in response does not match any sign-in started here (tampered or replayed)."
                .into(),
        )
        .await,
        Err(e) => {
            tracing::error!(error = %e, "login lookup failed");
            return web::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "Try again shortly.",
            );
        }
    };
    // The attempt must belong to this browser.
    let cookie = cookies::login(&state, &headers).unwrap_or_default();
    if !secret_eq(cookie.as_bytes(), attempt.id.as_bytes()) {
        return deny(
            "browser_mismatch",
            None,
            // One browser holds one sign-in at a time: a second tab's sign-in, or this one
            // finished already, replaced this browser's claim to it.
            "This sign-in is not this browser's current one: it was started in another browser, \
             or replaced by a newer sign-in here (another tab), or already finished. If you are \
             not signed in, start again."
                .into(),
        )
        .await;
    }
    if attempt.status != "pending" || attempt.pkce_verifier.is_none() {
        return deny(
            "replayed",
            None,
            "This sign-in response was already used.".into(),
        )
        .await;
    }
    if attempt.expires_at <= now_ms() {
        end_attempt(
            &state,
            &attempt.id,
            "pending",
            "refused",
            None,
            Some("expired"),
        )
        .await;
        return deny(
            "expired",
            None,
            "The sign-in took too long. Start again.".into(),
        )
        .await;
    }
    if let Some(error) = q.error {
        end_attempt(
            &state,
            &attempt.id,
            "pending",
            "refused",
            None,
            Some("provider_error"),
        )
        .await;
        return deny(
            "provider_error",
            None,
            format!(
                "The identity provider refused: {}",
                error.chars().take(100).collect::<String>()
            ),
        )
        .await;
    }
    let (Some(code), Some(verifier), Some(nonce)) = (
        q.code.as_deref(),
        attempt.pkce_verifier.as_deref(),
        attempt.nonce.as_deref(),
    ) else {
        return deny(
            "missing_code",
            None,
            "The sign-in response carried no code.".into(),
        )
        .await;
    };
    // Consume the attempt before the exchange so a replay cannot race it.
    let consumed = match state
        .store
        .finish_login(&attempt.id, "pending", "exchanging", None, None)
        .await
    {
        Ok(consumed) => consumed,
        Err(e) => {
            tracing::error!(error = %e, "sign-in attempt could not be consumed");
            return web::unavailable("You are not signed in.");
        }
    };
    if !consumed {
        return deny(
            "replayed",
            None,
            "This sign-in response was already used.".into(),
        )
        .await;
    }
    // Every refusal from here on ends the attempt the exchange took.
    let refuse_attempt = |reason: &str| {
        let (state, id, reason) = (&state, attempt.id.clone(), reason.to_string());
        async move { end_attempt(state, &id, "exchanging", "refused", None, Some(&reason)).await }
    };
    let identity = match oidc.exchange(code, verifier, nonce).await {
        Ok(i) => i,
        Err(e) => {
            // The reason the CLI shows: what went wrong, not one code for every failure.
            let reason = e.to_string();
            refuse_attempt(&reason).await;
            return deny("oidc_error", None, reason).await;
        }
    };
    if let Err(reason) = oidc.check_domain(&identity) {
        refuse_attempt(&reason).await;
        // An address the provider has not verified is nobody's yet: the refusal is not
        // recorded as that user's, only with the address claimed.
        if !identity.email_verified {
            let reason = format!("{reason} (claimed: {})", identity.email);
            return deny("not_allowed", None, reason).await;
        }
        return deny("not_allowed", Some(identity.email.clone()), reason).await;
    }
    let user = match admit(&state, peer, &identity.email, &identity.name).await {
        Ok(u) => u,
        Err(NotAdmitted::Refused(reason)) => {
            refuse_attempt(&reason).await;
            return deny("not_admitted", Some(identity.email.clone()), reason).await;
        }
        Err(NotAdmitted::Unavailable) => {
            refuse_attempt("store_unavailable").await;
            let details = json!({ "reason": "store_unavailable" });
            let email = Some(identity.email.as_str());
            let action = "gateway:auth:signin";
            audit_signin(&state, &peer, &headers, action, email, false, details).await;
            return web::unavailable("You are not signed in.");
        }
    };
    // The provider's name for this person, when it says something new (an admin added them
    // by e-mail alone, or the name changed there): recorded with the sign-in, then stored.
    let new_name = Some(
        identity
            .name
            .chars()
            .take(MAX_NAME_CHARS)
            .collect::<String>(),
    )
    .filter(|name| !name.trim().is_empty() && *name != user.name);
    if attempt.channel == "cli" {
        // The CLI collects its session from this state: without it the page would say
        // "signed in" while the CLI waits until the attempt expires.
        let completed = state
            .store
            .finish_login(&attempt.id, "exchanging", "complete", Some(user.id), None)
            .await;
        if !matches!(completed, Ok(true)) {
            if let Err(e) = completed {
                tracing::error!(error = %e, "CLI sign-in could not be completed");
            }
            return web::unavailable("The CLI was not signed in; run login again.");
        }
        audit_signin(
            &state,
            &peer,
            &headers,
            "gateway:auth:signin",
            Some(&user.email),
            true,
            json!({ "channel": "cli", "stage": "browser", "name": new_name }),
        )
        .await;
        store_name(&state, &user, new_name).await;
        let mut response = web::message(
            StatusCode::OK,
            "Signed in",
            "You are signed in to the rack-gateway CLI. You can close this window.",
        );
        cookies::clear_login(&state, &mut response);
        return response;
    }
    end_attempt(
        &state,
        &attempt.id,
        "exchanging",
        "consumed",
        Some(user.id),
        None,
    )
    .await;
    let ua = audited_user_agent(&headers);
    let ip = peer.ip.to_string();
    let (created, token) = match issue_session(
        &state.store,
        &state.config.sessions,
        &user,
        "web",
        ua.as_deref(),
        Some(&ip),
    )
    .await
    {
        Ok(s) => s,
        // Locked while signing in.
        Err(StoreError::UserLocked) => {
            let reason = format!("{} is locked; ask an administrator", user.email);
            return deny("not_admitted", Some(user.email.clone()), reason).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "could not create a session");
            return web::unavailable("You are not signed in.");
        }
    };
    let details = json!({ "channel": "web", "session_id": created.row.id, "name": new_name });
    if record_signin_and_evict(&state, peer, &headers, &user, &created, details)
        .await
        .is_err()
    {
        return web::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The gateway cannot record sign-ins right now, so you are not signed in. Try again \
             shortly.",
        );
    }
    store_name(&state, &user, new_name).await;
    end_replaced_session(&state, &peer, &headers, created.row.id).await;
    let target = attempt
        .return_to
        .filter(|r| cookies::safe_return_to(r))
        .unwrap_or_else(|| "/account".into());
    let mut response = Redirect::to(&target).into_response();
    // A new session id at every sign-in: no fixation.
    cookies::set_session(
        &state,
        &mut response,
        &token,
        state.config.sessions.lifetime.as_secs(),
    );
    cookies::clear_login(&state, &mut response);
    response
}

/// Ends the session this browser presented before signing in again (a second sign-in, as
/// someone else or not): its cookie is about to be replaced, and a session no browser holds
/// any more should not live on until it idles out. Best effort: the new session is already
/// recorded, so a failure here is logged and audited, not shown.
async fn end_replaced_session(state: &AppState, peer: &Peer, headers: &HeaderMap, new_id: i64) {
    let Ok(Some((previous, _))) = web::cookie_principal(state, headers).await else {
        return;
    };
    let Some(id) = previous.session_id().filter(|id| *id != new_id) else {
        return;
    };
    let (allowed, details) = match state.store.revoke_session(id).await {
        Ok(_) => (
            true,
            json!({ "channel": "web", "reason": "replaced", "session_id": id }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "ending a session replaced by a new sign-in failed");
            let details =
                json!({ "channel": "web", "reason": "store_unavailable", "session_id": id });
            (false, details)
        }
    };
    let (email, action) = (previous.email(), "gateway:auth:signout");
    audit_signin(state, peer, headers, action, email, allowed, details).await;
}

/// Longest display name kept (as the users API allows).
const MAX_NAME_CHARS: usize = 200;

/// Stores the provider's `name` for `user` once the sign-in that carried it is recorded. Best
/// effort: a name is for show, so a failure is logged and the sign-in goes on.
async fn store_name(state: &AppState, user: &UserRow, name: Option<String>) {
    if let Some(name) = name
        && let Err(e) = state.store.set_user_name(user.id, &name).await
    {
        tracing::warn!(error = %e, "could not store the provider's name for a user");
    }
}

/// Why [`admit`] let nobody in.
enum NotAdmitted {
    /// This person may not sign in (the reason is shown and audited).
    Refused(String),
    /// The store could not say or could not record it (logged): try again later.
    Unavailable,
}

/// A store failure while admitting someone (logged): they are asked to try again later.
fn unavailable(e: crate::store::StoreError) -> NotAdmitted {
    tracing::error!(error = %e, "user lookup failed");
    NotAdmitted::Unavailable
}

/// Finds (or, for the first admin, creates) the user.
async fn admit(
    state: &AppState,
    peer: Peer,
    email: &str,
    name: &str,
) -> Result<UserRow, NotAdmitted> {
    let existing = |user: UserRow| {
        if user.locked {
            Err(NotAdmitted::Refused(format!(
                "{email} is locked; ask an administrator"
            )))
        } else {
            Ok(user)
        }
    };
    if let Some(user) = state.store.find_user(email).await.map_err(unavailable)? {
        return existing(user);
    }
    // Creating an admin and recording it run to their end in a task of their own: a browser
    // that goes away between the two must not leave an account the trail does not show.
    let created = crate::request_id::spawn({
        let (state, email, name) = (state.clone(), email.to_string(), name.to_string());
        async move { create_admin(&state, peer, &email, &name).await }
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "creating an admin did not finish");
        NotAdmitted::Unavailable
    })??;
    if let Some(user) = created {
        return Ok(user);
    }
    match state.store.find_user(email).await.map_err(unavailable)? {
        Some(user) => existing(user),
        None => Err(NotAdmitted::Refused(format!(
            "{email} has not been added to this gateway; ask an administrator to add you"
        ))),
    }
}

/// Creates `email` as an admin when the rules say signing in makes them one (listed in
/// `ADMIN_USERS`, or the first user of a new gateway) and records it; `None` when it creates
/// nobody. An account whose creation cannot be recorded is removed again.
async fn create_admin(
    state: &AppState,
    peer: Peer,
    email: &str,
    name: &str,
) -> Result<Option<UserRow>, NotAdmitted> {
    let admin_users = state
        .oidc
        .as_ref()
        .map_or(&[][..], |o| o.config().admin_users.as_slice());
    let listed = admin_users.iter().any(|a| a == email);
    // The first admin is a bootstrap: only on a gateway with no users at all, and only without
    // `ADMIN_USERS` (then only the people it names become admins by signing in). Otherwise
    // whoever from an allowed domain got there first would take the seat, before the listed
    // admins, or after every admin had been demoted. Creating the user is one atomic step
    // either way; when it creates nothing, someone got there meanwhile (another sign-in of
    // this person, or another first user): read again.
    let created = if listed {
        match state.store.create_user(email, name, "admin").await {
            Ok(user) => Some(user),
            Err(crate::store::StoreError::Conflict(_)) => None,
            Err(e) => return Err(unavailable(e)),
        }
    } else if admin_users.is_empty() && !state.store.users_exist().await.map_err(unavailable)? {
        // Only a new gateway gets here: the locked write is not taken for every stranger.
        state
            .store
            .create_first_user(email, name, "admin")
            .await
            .map_err(unavailable)?
    } else {
        None
    };
    if let Some(user) = created {
        let mut e = AuditEvent::new(
            EventKind::Gateway,
            crate::request_id::current(),
            "gateway:users:create",
        );
        e.actor_type = ActorType::User;
        e.user_email = Some(email.to_string());
        e.client_ip = Some(peer.ip.to_string());
        let e = e.with_details(json!({ "email": email, "role": "admin", "reason": if listed { "ADMIN_USERS" } else { "first admin" } }));
        // An account whose creation the trail does not show must not stay: it is removed
        // again, and the next sign-in creates and audits it.
        if let Err(err) = state.audit.record(e).await {
            tracing::error!(error = %err, %email, "a new admin's creation could not be audited");
            match state.store.withdraw_new_user(user.id).await {
                Ok(true) => {}
                Ok(false) => tracing::error!(
                    %email,
                    "the new admin whose creation was not audited is already in use: kept"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    %email,
                    "the new admin whose creation was not audited could not be removed: kept, \
                     without a creation event"
                ),
            }
            return Err(NotAdmitted::Unavailable);
        }
        return Ok(Some(user));
    }
    Ok(None)
}

/// Audits a web sign-out: refused, with `refusal` details, or done.
async fn signout_audit(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    principal: &crate::identity::Principal,
    refusal: Option<serde_json::Value>,
) {
    let allowed = refusal.is_none();
    let details = refusal.unwrap_or_else(|| json!({ "channel": "web" }));
    let (email, action) = (principal.email(), "gateway:auth:signout");
    audit_signin(state, peer, headers, action, email, allowed, details).await;
}

/// What a sign-out that could not end the session tells the user.
const NOT_ENDED: &str = "This browser is signed out, but the session could not be ended: a \
                         copy of its cookie would still work until it expires. Sign in and out \
                         again once the gateway answers, or ask an admin to end it.";

/// `POST /api/v1/auth/web/logout` (form with `csrf`): ends the browser session.
pub async fn web_logout(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    web::PageForm(form): web::PageForm<web::CsrfForm>,
) -> Response {
    let mut response = Redirect::to("/").into_response();
    let signed_in = match web::cookie_principal(&state, &headers).await {
        Ok(signed_in) => signed_in,
        Err(_) => {
            // This browser is signed out either way; the session itself could not be ended.
            let mut page = web::unavailable(NOT_ENDED);
            cookies::clear_session(&state, &mut page);
            return page;
        }
    };
    if let Some((principal, token)) = signed_in {
        if !cookies::csrf_ok(&token, form.csrf.as_deref()) {
            let details = json!({ "channel": "web", "reason": "csrf_rejected" });
            signout_audit(&state, &peer, &headers, &principal, Some(details)).await;
            return web::stale_form();
        }
        if let Some(id) = principal.session_id()
            && let Err(e) = state.store.revoke_session(id).await
        {
            tracing::error!(error = %e, "ending a session at sign-out failed");
            let details = json!({ "channel": "web", "reason": "store_unavailable" });
            signout_audit(&state, &peer, &headers, &principal, Some(details)).await;
            let mut page = web::unavailable(NOT_ENDED);
            cookies::clear_session(&state, &mut page);
            return page;
        }
        signout_audit(&state, &peer, &headers, &principal, None).await;
    }
    cookies::clear_session(&state, &mut response);
    response
}

/// `POST /api/v1/auth/logout` (Bearer session token): ends a CLI (or any) session.
pub async fn logout(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    caller: super::Caller,
) -> Result<Response, ApiError> {
    let principal = caller.principal;
    let Some(id) = principal.session_id() else {
        return Err(ApiError::BadRequest(
            "only sessions sign out; revoke API tokens instead".into(),
        ));
    };
    state
        .store
        .revoke_session(id)
        .await
        .map_err(ApiError::store)?;
    audit_signin(
        &state,
        &peer,
        &headers,
        "gateway:auth:signout",
        principal.email(),
        true,
        json!({ "session_id": id }),
    )
    .await;
    Ok(Json(json!({ "status": "signed_out" })).into_response())
}

/// Body of `POST /api/v1/auth/cli/start`.
#[derive(Debug, Deserialize)]
pub struct CliStart {
    code_challenge: String,
    code_challenge_method: Option<String>,
}

/// `POST /api/v1/auth/cli/start`: the CLI registers the S256 challenge of a verifier only it
/// holds and gets a browser URL.
pub async fn cli_start(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    super::ApiJson(body): super::ApiJson<CliStart>,
) -> Result<Response, ApiError> {
    if state.oidc.is_none() {
        return Err(ApiError::BadRequest(
            "sign-in is not configured on this gateway; use `rack-gateway login --token`".into(),
        ));
    }
    if body.code_challenge_method.as_deref().unwrap_or("S256") != "S256"
        || body.code_challenge.len() != 43
        || URL_SAFE_NO_PAD.decode(&body.code_challenge).is_err()
    {
        return Err(ApiError::BadRequest(
            "code_challenge must be a base64url SHA-256 (S256)".into(),
        ));
    }
    let id = random_token();
    let login_id = random_token();
    let login_hash = hash_token(&login_id);
    // Counted by /64 for IPv6, as every per-address limit is.
    let client_ip = gateway_core::failure_budget::address_key(peer.ip).to_string();
    let login = NewLogin {
        id: &id,
        channel: "cli",
        return_to: None,
        cli_challenge: Some(&body.code_challenge),
        cli_login_hash: Some(&login_hash),
        expires_at: now_ms() + LOGIN_TTL_MS,
        client_ip: &client_ip,
    };
    match state.store.create_login(&login, LoginLimits::DEFAULT).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(%client_ip, "CLI sign-in refused: too many sign-ins in progress");
            audit_signin(
                &state,
                &peer,
                &headers,
                "gateway:auth:signin",
                None,
                false,
                json!({ "channel": "cli", "reason": "too_many_sign_ins" }),
            )
            .await;
            return Err(ApiError::TooManySignIns);
        }
        Err(e) => return Err(ApiError::store(e)),
    }
    let base = state
        .browser_url()
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    Ok(Json(json!({
        "login_id": login_id,
        "code": cli_code(&login_id),
        "browser_url": format!("{base}/api/v1/auth/cli/browser?login_id={login_id}"),
        "poll_interval_secs": 1,
        "expires_in_secs": LOGIN_TTL_MS / 1000,
    }))
    .into_response())
}

/// Query of the CLI browser entry.
#[derive(Debug, Deserialize)]
pub struct CliBrowser {
    login_id: String,
}

/// The code a CLI sign-in shows in the terminal and on the confirmation page, so the person
/// confirming can tell it is their own command's: eight characters that are hard to misread,
/// derived from the sign-in's id.
pub fn cli_code(login_id: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let digest = Sha256::digest(format!("rack-gateway cli code\0{login_id}").as_bytes());
    let mut code = String::with_capacity(9);
    for (i, byte) in digest.iter().take(8).enumerate() {
        if i == 4 {
            code.push('-');
        }
        code.push(char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]));
    }
    code
}

/// The confirmation page of a CLI sign-in.
#[derive(askama::Template)]
#[template(path = "cli_confirm.html")]
struct CliConfirmPage<'a> {
    code: &'a str,
    login_id: &'a str,
    confirm: &'a str,
}

/// The CLI sign-in `login_id` if it is still waiting for its browser; else the page to show.
async fn pending_cli_login(state: &AppState, login_id: &str) -> Result<LoginRow, Response> {
    match state.store.login_by_cli_hash(&hash_token(login_id)).await {
        Ok(Some(a)) if a.status == "pending" && a.expires_at > now_ms() => Ok(a),
        Ok(_) => Err(web::message(
            StatusCode::GONE,
            "Sign-in expired",
            "This sign-in link expired or was used. Run `rack-gateway login` again.",
        )),
        Err(_) => Err(web::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "Try again shortly.",
        )),
    }
}

/// `GET /api/v1/auth/cli/browser?login_id=…`: the browser half of a CLI sign-in. It asks the
/// person to confirm (with the code their terminal shows) before going to the identity
/// provider: anyone can start a CLI sign-in and send the link, and a browser already signed in
/// at the provider would otherwise hand the session to whoever holds that CLI's verifier with
/// a single click.
pub async fn cli_browser(
    State(state): State<AppState>,
    web::PageQuery(q): web::PageQuery<CliBrowser>,
) -> Response {
    if let Err(page) = pending_cli_login(&state, &q.login_id).await {
        return page;
    }
    let confirm = random_token();
    let code = cli_code(&q.login_id);
    let mut response = web::render(
        StatusCode::OK,
        &CliConfirmPage {
            code: &code,
            login_id: &q.login_id,
            confirm: &confirm,
        },
    );
    cookies::set_cli_confirm(&state, &mut response, &q.login_id, &confirm);
    response
}

/// Query of the CLI sign-in confirmation link.
#[derive(Debug, Deserialize)]
pub struct CliConfirm {
    login_id: String,
    confirm: String,
}

/// `GET /api/v1/auth/cli/browser/confirm?login_id=…&confirm=…` (the confirmation page's
/// button): on to the identity provider. The link must carry the value of the page's own
/// `SameSite=Strict` cookie: another site can neither read it nor send the cookie with a
/// request it makes the browser send. (A link, not a form: a page's `form-action` policy
/// would also apply to the redirects to the provider and beyond.)
pub async fn cli_browser_confirm(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    web::PageQuery(form): web::PageQuery<CliConfirm>,
) -> Response {
    let cookie = cookies::get(
        &headers,
        &cookies::cli_confirm_cookie(&state, &form.login_id),
    );
    let confirmed = cookie
        .as_deref()
        .is_some_and(|c| !c.is_empty() && secret_eq(c.as_bytes(), form.confirm.as_bytes()));
    if !confirmed {
        audit_signin(
            &state,
            &peer,
            &headers,
            "gateway:auth:signin",
            None,
            false,
            json!({ "channel": "cli", "reason": "cli_confirmation_missing" }),
        )
        .await;
        return web::message(
            StatusCode::FORBIDDEN,
            "Not confirmed",
            "Open the sign-in link from your terminal again and confirm on that page.",
        );
    }
    let attempt = match pending_cli_login(&state, &form.login_id).await {
        Ok(attempt) => attempt,
        Err(page) => return page,
    };
    let mut response = redirect_to_provider(&state, &attempt.id).await;
    cookies::clear_cli_confirm(&state, &mut response, &form.login_id);
    response
}

/// Body of `POST /api/v1/auth/cli/poll`.
#[derive(Debug, Deserialize)]
pub struct CliPoll {
    login_id: String,
    code_verifier: String,
}

/// `POST /api/v1/auth/cli/poll`: the CLI proves it holds the verifier and, once the browser
/// finished, receives a new session (once).
pub async fn cli_poll(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    super::ApiJson(body): super::ApiJson<CliPoll>,
) -> Result<Response, ApiError> {
    let attempt: LoginRow = state
        .store
        .login_by_cli_hash(&hash_token(&body.login_id))
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::BadRequest("unknown login_id".into()))?;
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(body.code_verifier.as_bytes()));
    let expected = attempt.cli_challenge.clone().unwrap_or_default();
    // Refusals of a collection are recorded: the login id travels through a browser, and a
    // poll with it but without the CLI's verifier is someone else's try at the session.
    let refused = |reason: &'static str, email: Option<String>| {
        let (state, headers) = (&state, &headers);
        async move {
            let details = json!({ "channel": "cli", "reason": reason });
            let action = "gateway:auth:signin";
            audit_signin(
                state,
                &peer,
                headers,
                action,
                email.as_deref(),
                false,
                details,
            )
            .await;
        }
    };
    if !secret_eq(challenge.as_bytes(), expected.as_bytes()) {
        refused("wrong_verifier", None).await;
        return Err(ApiError::BadRequest(
            "code_verifier does not match this login".into(),
        ));
    }
    // A finished sign-in too: the CLI collects it within a second or two of the browser, and
    // one left lying around must not be collectable days later.
    if attempt.expires_at <= now_ms() {
        return Ok((
            StatusCode::GONE,
            Json(json!({ "status": "expired", "error": "the sign-in expired; run login again" })),
        )
            .into_response());
    }
    match attempt.status.as_str() {
        "pending" | "exchanging" => Ok((StatusCode::ACCEPTED, Json(json!({ "status": "pending" }))).into_response()),
        "refused" => Ok((StatusCode::FORBIDDEN, Json(json!({ "status": "refused", "error": attempt.error.unwrap_or_else(|| "sign-in refused".into()) }))).into_response()),
        "complete" => {
            // Hand the session out exactly once.
            if !state.store.finish_login(&attempt.id, "complete", "consumed", None, None).await.map_err(ApiError::store)? {
                refused("already_collected", None).await;
                return Ok((StatusCode::GONE, Json(json!({ "status": "expired", "error": "this sign-in was already collected" }))).into_response());
            }
            let user_id = attempt.user_id.ok_or(ApiError::Internal)?;
            let user = state.store.user_by_id(user_id).await.map_err(ApiError::store)?.ok_or(ApiError::Internal)?;
            if user.locked {
                refused("user_locked", Some(user.email.clone())).await;
                return Err(ApiError::Unauthenticated(AuthError::UserLocked));
            }
            let ua = audited_user_agent(&headers);
            let ip = peer.ip.to_string();
            let (created, token) = issue_session(&state.store, &state.config.sessions, &user, "cli", ua.as_deref(), Some(&ip))
                .await
                .map_err(|e| match e {
                    StoreError::UserLocked => ApiError::Unauthenticated(AuthError::UserLocked),
                    e => ApiError::store(e),
                })?;
            let details = json!({ "channel": "cli", "session_id": created.row.id });
            if record_signin_and_evict(&state, peer, &headers, &user, &created, details).await.is_err() {
                return Err(ApiError::AuditUnavailable);
            }
            let session = created.row;
            Ok(Json(json!({
                "status": "complete",
                "session_token": token,
                "email": user.email,
                "role": user.role,
                "expires_at": session.expires_at,
            }))
            .into_response())
        }
        _ => {
            refused("already_collected", None).await;
            Ok((StatusCode::GONE, Json(json!({ "status": "expired", "error": "this sign-in was already collected" }))).into_response())
        }
    }
}
