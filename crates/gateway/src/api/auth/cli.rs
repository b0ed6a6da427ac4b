//! The CLI sign-in: the CLI starts a login bound to a PKCE-style verifier only it holds, the
//! person confirms the code in a browser and signs in, the CLI polls with the verifier and
//! receives the session (once); and the session sign-out the CLI uses.

use crate::secret_eq::secret_eq;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::browser::redirect_to_provider;
use super::record::{NotIssued, audit_signin, issue_recorded_session};
use super::{LOGIN_TTL_MS, NotStarted, attempt_address, attempt_expiry, start_attempt};
use crate::app::{AppState, Peer};
use crate::error::ApiError;
use crate::identity::{AuthError, hash_token};
use crate::oidc::random_token;
use crate::store::{LoginRow, NewLogin, now_ms};
use crate::web::{self, cookies};

/// `POST /api/v1/auth/logout` (Bearer session token): ends a CLI (or any) session.
pub async fn logout(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    caller: crate::api::Caller,
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
    crate::api::ApiJson(body): crate::api::ApiJson<CliStart>,
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
    let client_ip = attempt_address(&peer);
    let login = NewLogin {
        id: &id,
        channel: "cli",
        return_to: None,
        cli_challenge: Some(&body.code_challenge),
        cli_login_hash: Some(&login_hash),
        expires_at: attempt_expiry(),
        client_ip: &client_ip,
    };
    match start_attempt(&state, &peer, &headers, login).await {
        Ok(()) => {}
        Err(NotStarted::TooMany) => return Err(ApiError::TooManySignIns),
        Err(NotStarted::Store(e)) => return Err(ApiError::store(e)),
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
    crate::identity::short_code("rack-gateway cli code", login_id)
}

/// The confirmation page of a CLI sign-in.
#[derive(askama::Template)]
#[template(path = "cli_confirm.html")]
struct CliConfirmPage<'a> {
    code: &'a str,
    login_id: &'a str,
    confirm: &'a str,
    /// Where the CLI asked from, and when (UTC).
    asked_from: &'a str,
    asked_at: String,
    /// Whether that is where this browser comes from too (the same host, or /64).
    same_address: bool,
    /// Where this browser comes from, counted the same way.
    browser_from: String,
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
    peer: Peer,
    web::PageQuery(q): web::PageQuery<CliBrowser>,
) -> Response {
    let attempt = match pending_cli_login(&state, &q.login_id).await {
        Ok(attempt) => attempt,
        Err(page) => return page,
    };
    let confirm = random_token();
    let code = cli_code(&q.login_id);
    // The code is no proof on its own: whoever started the sign-in knows it, and can quote it
    // in the message that sends the link. Where and when it was asked for are harder to fake.
    let asked_from = attempt.client_ip.as_deref().unwrap_or("an unknown address");
    let browser_from = super::attempt_address(&peer);
    let mut response = web::render(
        StatusCode::OK,
        &CliConfirmPage {
            code: &code,
            login_id: &q.login_id,
            confirm: &confirm,
            asked_from,
            asked_at: web::time(attempt.created_at),
            same_address: attempt.client_ip.as_deref() == Some(&browser_from),
            browser_from: browser_from.clone(),
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
    crate::api::ApiJson(body): crate::api::ApiJson<CliPoll>,
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
        let error = "the sign-in expired; run login again";
        return Ok(poll_answer(StatusCode::GONE, "expired", Some(error)));
    }
    match attempt.status.as_str() {
        // `mfa`: the browser is asking for the person's authenticator code.
        "pending" | "exchanging" | "mfa" => Ok(poll_answer(StatusCode::ACCEPTED, "pending", None)),
        "refused" => {
            let error = attempt.error.as_deref().unwrap_or("sign-in refused");
            Ok(poll_answer(StatusCode::FORBIDDEN, "refused", Some(error)))
        }
        // Handed out exactly once: whoever moves it on to `consumed` collects it.
        "complete"
            if state
                .store
                .finish_login(&attempt.id, "complete", "consumed", None, None)
                .await
                .map_err(ApiError::store)? =>
        {
            collect_session(&state, peer, &headers, &attempt).await
        }
        _ => {
            refused("already_collected", None).await;
            let error = "this sign-in was already collected";
            Ok(poll_answer(StatusCode::GONE, "expired", Some(error)))
        }
    }
}

/// A poll's answer while there is no session to hand out.
fn poll_answer(status: StatusCode, state: &str, error: Option<&str>) -> Response {
    let body = match error {
        Some(error) => json!({ "status": state, "error": error }),
        None => json!({ "status": state }),
    };
    (status, Json(body)).into_response()
}

/// The session of a completed CLI sign-in the poll just took: issued, recorded, handed out.
async fn collect_session(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    attempt: &LoginRow,
) -> Result<Response, ApiError> {
    let user_id = attempt.user_id.ok_or(ApiError::Internal)?;
    let user = state
        .store
        .user_by_id(user_id)
        .await
        .map_err(ApiError::store)?
        .ok_or(ApiError::Internal)?;
    if user.locked {
        let details = json!({ "channel": "cli", "reason": "user_locked" });
        let (email, action) = (Some(user.email.as_str()), "gateway:auth:signin");
        audit_signin(state, &peer, headers, action, email, false, details).await;
        return Err(ApiError::Unauthenticated(AuthError::UserLocked));
    }
    let details = |id| json!({ "channel": "cli", "session_id": id });
    let issued = issue_recorded_session(state, peer, headers, &user, "cli", details).await;
    let (created, token) = issued.map_err(|e| match e {
        NotIssued::Locked => ApiError::Unauthenticated(AuthError::UserLocked),
        NotIssued::Store(e) => ApiError::store(e),
        NotIssued::Unrecorded => ApiError::AuditUnavailable,
    })?;
    // The code given in the browser counts for the CLI's session, from when it was given.
    if let Some(at) = attempt.mfa_at {
        crate::mfa::note_proof(&state.store, created.row.id, at).await;
    }
    Ok(Json(json!({
        "status": "complete",
        "session_token": token,
        "email": user.email,
        "role": user.role,
        "expires_at": created.row.expires_at,
    }))
    .into_response())
}
