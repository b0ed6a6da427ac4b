//! The browser sign-in: a login attempt bound to this browser by a cookie, then the round
//! trip to the identity provider; and the browser sign-out.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::record::{audit_signin, signout_audit};
use super::{NotStarted, attempt_address, attempt_expiry, end_attempt, start_attempt};
use crate::app::{AppState, Peer};
use crate::identity::hash_token;
use crate::oidc::random_token;
use crate::store::NewLogin;
use crate::web::{self, cookies};

/// Longest `return_to` a web sign-in keeps (a path on this gateway, recorded like one).
const MAX_RETURN_TO: usize = crate::audit::MAX_AUDITED_PATH;

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
        let shown = gateway_core::redact::clip(return_to.clone(), 200);
        let details = json!({ "reason": "open_redirect", "return_to": shown });
        let action = "gateway:auth:signin";
        audit_signin(&state, &peer, &headers, action, None, false, details).await;
        return web::message(
            StatusCode::BAD_REQUEST,
            "Refused",
            "return_to must be a path on this gateway.",
        );
    }
    let id = random_token();
    let client_ip = attempt_address(&peer);
    let login = NewLogin {
        id: &id,
        channel: "web",
        return_to: Some(&return_to),
        cli_challenge: None,
        cli_login_hash: None,
        expires_at: attempt_expiry(),
        client_ip: &client_ip,
    };
    match start_attempt(&state, &peer, &headers, login).await {
        Ok(()) => {}
        Err(NotStarted::TooMany) => {
            return web::message(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-ins",
                "Too many sign-ins are in progress. Finish one, or try again in a few minutes.",
            );
        }
        Err(NotStarted::Store(e)) => {
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
pub(super) async fn redirect_to_provider(state: &AppState, id: &str) -> Response {
    let Some(oidc) = state.oidc.as_ref() else {
        return web::message(
            StatusCode::NOT_FOUND,
            "Sign-in not configured",
            "No identity provider.",
        );
    };
    let (oauth_state, nonce, verifier) = (random_token(), random_token(), random_token());
    // This browser's own secret for this round trip: a CLI sign-in's link may be opened in
    // more than one browser, and only the last to go to the provider may come back and take
    // the second step (the attempt's id, in every such browser's cookie, is not enough).
    let browser = random_token();
    let hashes = (hash_token(&oauth_state), hash_token(&browser));
    match state
        .store
        .start_login_round_trip(id, &hashes.0, &nonce, &verifier, &hashes.1)
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
            cookies::set_login(state, &mut response, &cookies::login_value(id, &browser));
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
