//! The identity provider's answer: the attempt it belongs to is checked and consumed, the
//! code exchanged, the person admitted, then a web session started or a CLI sign-in completed.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::admit::{NotAdmitted, admit};
use super::end_attempt;
use super::record::{NotIssued, audit_signin, issue_recorded_session};
use crate::app::{AppState, Peer};
use crate::identity::hash_token;
use crate::oidc::Oidc;
use crate::store::{LoginRow, UserRow, now_ms};
use crate::web::{self, cookies};

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

/// Why a callback signs nobody in.
pub(super) enum NotSignedIn {
    /// Refused: audited as a refused sign-in (the reason, the person when known) and shown.
    Refused {
        reason: &'static str,
        email: Option<String>,
        message: String,
    },
    /// A page shown as it is: what went wrong was logged, or audited, where it happened.
    Page(Response),
}

impl NotSignedIn {
    /// A refusal that names nobody: the callback has not learned who is signing in.
    fn refused(reason: &'static str, message: impl Into<String>) -> NotSignedIn {
        NotSignedIn::Refused {
            reason,
            email: None,
            message: message.into(),
        }
    }

    /// The store cannot be used (logged where it happened).
    pub(super) fn unavailable(text: &str) -> NotSignedIn {
        NotSignedIn::Page(web::unavailable(text))
    }
}

async fn finish_callback(state: AppState, peer: Peer, headers: HeaderMap, q: Callback) -> Response {
    let result = sign_in(&state, peer, &headers, q).await;
    answer(&state, peer, &headers, result).await
}

/// What the browser is shown when a sign-in ends: its page, or its refusal (audited).
pub(super) async fn answer(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    result: Result<Response, NotSignedIn>,
) -> Response {
    match result {
        Ok(response) | Err(NotSignedIn::Page(response)) => response,
        Err(NotSignedIn::Refused {
            reason,
            email,
            message,
        }) => {
            let details = json!({ "reason": reason, "message": message });
            let (email, action) = (email.as_deref(), "gateway:auth:signin");
            audit_signin(state, &peer, headers, action, email, false, details).await;
            // The login cookie stays: a forged callback must not cancel a real sign-in in
            // progress (it expires with the attempt anyway).
            web::message(StatusCode::FORBIDDEN, "Sign-in refused", &message)
        }
    }
}

/// The callback's steps: the attempt it answers, who signed in, then their session (or their
/// CLI's).
async fn sign_in(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    q: Callback,
) -> Result<Response, NotSignedIn> {
    let Some(oidc) = state.oidc.clone() else {
        return Err(NotSignedIn::Page(web::message(
            StatusCode::NOT_FOUND,
            "Sign-in not configured",
            "No identity provider.",
        )));
    };
    let taken = take_attempt(state, headers, q).await?;
    let mut admitted = identify(state, peer, headers, &oidc, &taken).await?;
    let asked = super::mfa::ask_if_required(state, headers, &taken.attempt, &mut admitted);
    if let Some(ask) = asked.await? {
        return Ok(ask);
    }
    complete(state, peer, headers, taken.attempt, admitted).await
}

/// Completes the sign-in of `admitted` for `attempt` (status `exchanging`): their CLI's
/// sign-in, for the CLI to collect, or their browser's session.
pub(super) async fn complete(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    attempt: LoginRow,
    admitted: Admitted,
) -> Result<Response, NotSignedIn> {
    if attempt.channel == "cli" {
        return complete_cli(state, peer, headers, &attempt, admitted).await;
    }
    start_web_session(state, peer, headers, attempt, admitted).await
}

/// A sign-in attempt taken for the code exchange (now `exchanging`: a replay finds it used).
struct Taken {
    attempt: LoginRow,
    code: String,
    verifier: String,
    nonce: String,
}

/// Checks that the provider's answer belongs to a sign-in this browser started, still
/// pending and in time, and takes that sign-in for the code exchange.
async fn take_attempt(
    state: &AppState,
    headers: &HeaderMap,
    q: Callback,
) -> Result<Taken, NotSignedIn> {
    let Some(raw_state) = q.state else {
        return Err(NotSignedIn::refused(
            "missing_state",
            "The sign-in response carried no state.",
        ));
    };
    let attempt = match state.store.login_by_state(&hash_token(&raw_state)).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Err(NotSignedIn::refused(
                "unknown_state",
                "This sign-in response does not match any sign-in started here (tampered or \
                 replayed).",
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "login lookup failed");
            return Err(NotSignedIn::Page(web::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "Try again shortly.",
            )));
        }
    };
    // The attempt must belong to this browser: the one that went to the provider last.
    if !super::browser_holds(state, headers, &attempt) {
        return Err(NotSignedIn::refused(
            "browser_mismatch",
            // One browser holds one sign-in at a time: a second tab's sign-in, or this one
            // finished already, replaced this browser's claim to it.
            "This sign-in is not this browser's current one: it was started in another browser, \
             or replaced by a newer sign-in here (another tab), or already finished. If you are \
             not signed in, start again.",
        ));
    }
    if attempt.status != "pending" || attempt.pkce_verifier.is_none() {
        return Err(NotSignedIn::refused(
            "replayed",
            "This sign-in response was already used.",
        ));
    }
    let id = attempt.id.as_str();
    if attempt.expires_at <= now_ms() {
        end_attempt(state, id, "pending", "refused", None, Some("expired")).await;
        return Err(NotSignedIn::refused(
            "expired",
            "The sign-in took too long. Start again.",
        ));
    }
    if let Some(error) = q.error {
        end_attempt(
            state,
            id,
            "pending",
            "refused",
            None,
            Some("provider_error"),
        )
        .await;
        let error: String = error.chars().take(100).collect();
        return Err(NotSignedIn::refused(
            "provider_error",
            format!("The identity provider refused: {error}"),
        ));
    }
    let (Some(code), Some(verifier), Some(nonce)) =
        (q.code, attempt.pkce_verifier.clone(), attempt.nonce.clone())
    else {
        return Err(NotSignedIn::refused(
            "missing_code",
            "The sign-in response carried no code.",
        ));
    };
    // Consume the attempt before the exchange so a replay cannot race it.
    match state
        .store
        .finish_login(id, "pending", "exchanging", None, None)
        .await
    {
        Ok(true) => Ok(Taken {
            attempt,
            code,
            verifier,
            nonce,
        }),
        Ok(false) => Err(NotSignedIn::refused(
            "replayed",
            "This sign-in response was already used.",
        )),
        Err(e) => {
            tracing::error!(error = %e, "sign-in attempt could not be consumed");
            Err(NotSignedIn::unavailable("You are not signed in."))
        }
    }
}

/// Who signed in, and the provider's name for them when it says something new (an admin
/// added them by e-mail alone, or the name changed there): recorded with the sign-in, then
/// stored.
pub(super) struct Admitted {
    /// Who.
    pub(super) user: UserRow,
    /// The provider's name for them, when new.
    pub(super) new_name: Option<String>,
    /// The second factor they gave, if any (`"totp"`), for the sign-in's audit event.
    pub(super) second_factor: Option<&'static str>,
}

/// Exchanges the code for the person's identity and admits them; every refusal ends the
/// attempt the exchange took.
async fn identify(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    oidc: &Oidc,
    taken: &Taken,
) -> Result<Admitted, NotSignedIn> {
    let id = taken.attempt.id.as_str();
    let refuse = |reason| end_attempt(state, id, "exchanging", "refused", None, Some(reason));
    let identity = match oidc
        .exchange(&taken.code, &taken.verifier, &taken.nonce)
        .await
    {
        Ok(i) => i,
        Err(e) => {
            // The reason the CLI shows: what went wrong, not one code for every failure.
            let reason = e.to_string();
            refuse(&reason).await;
            return Err(NotSignedIn::refused("oidc_error", reason));
        }
    };
    if let Err(reason) = oidc.check_domain(&identity) {
        refuse(&reason).await;
        // An address the provider has not verified is nobody's yet: the refusal is not
        // recorded as that user's, only with the address claimed.
        if !identity.email_verified {
            let reason = format!("{reason} (claimed: {})", identity.email);
            return Err(NotSignedIn::refused("not_allowed", reason));
        }
        return Err(NotSignedIn::Refused {
            reason: "not_allowed",
            email: Some(identity.email),
            message: reason,
        });
    }
    let user = match admit(state, peer, &identity.email, &identity.name).await {
        Ok(u) => u,
        Err(NotAdmitted::Refused(reason)) => {
            refuse(&reason).await;
            return Err(NotSignedIn::Refused {
                reason: "not_admitted",
                email: Some(identity.email),
                message: reason,
            });
        }
        Err(NotAdmitted::Unavailable) => {
            refuse("store_unavailable").await;
            let details = json!({ "reason": "store_unavailable" });
            let email = Some(identity.email.as_str());
            let action = "gateway:auth:signin";
            audit_signin(state, &peer, headers, action, email, false, details).await;
            return Err(NotSignedIn::unavailable("You are not signed in."));
        }
    };
    let name: String = identity.name.chars().take(MAX_NAME_CHARS).collect();
    let new_name = Some(name).filter(|name| !name.trim().is_empty() && *name != user.name);
    Ok(Admitted {
        user,
        new_name,
        second_factor: None,
    })
}

/// Marks a CLI sign-in complete for its CLI to collect (see `cli_poll`).
async fn complete_cli(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    attempt: &LoginRow,
    Admitted {
        user,
        new_name,
        second_factor,
    }: Admitted,
) -> Result<Response, NotSignedIn> {
    // The CLI collects its session from this state: without it the page would say "signed
    // in" while the CLI waits until the attempt expires.
    let completed = state
        .store
        .finish_login(&attempt.id, "exchanging", "complete", Some(user.id), None)
        .await;
    if !matches!(completed, Ok(true)) {
        if let Err(e) = completed {
            tracing::error!(error = %e, "CLI sign-in could not be completed");
        }
        return Err(NotSignedIn::unavailable(
            "The CLI was not signed in; run login again.",
        ));
    }
    let details = json!({ "channel": "cli", "stage": "browser", "name": new_name });
    let details = with_second_factor(details, second_factor);
    let (email, action) = (Some(user.email.as_str()), "gateway:auth:signin");
    audit_signin(state, &peer, headers, action, email, true, details).await;
    store_name(state, &user, new_name).await;
    let mut response = web::message(
        StatusCode::OK,
        "Signed in",
        "You are signed in to the rack-gateway CLI. You can close this window.",
    );
    cookies::clear_login(state, &mut response);
    Ok(response)
}

/// Starts the browser's session, recorded before its cookie is set, and sends the browser
/// where the sign-in began.
async fn start_web_session(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    attempt: LoginRow,
    Admitted {
        user,
        new_name,
        second_factor,
    }: Admitted,
) -> Result<Response, NotSignedIn> {
    end_attempt(
        state,
        &attempt.id,
        "exchanging",
        "consumed",
        Some(user.id),
        None,
    )
    .await;
    let details = |id| {
        let details = json!({ "channel": "web", "session_id": id, "name": new_name });
        with_second_factor(details, second_factor)
    };
    let issued = issue_recorded_session(state, peer, headers, &user, "web", details).await;
    let (created, token) = match issued {
        Ok(issued) => issued,
        Err(NotIssued::Locked) => {
            return Err(NotSignedIn::Refused {
                reason: "not_admitted",
                message: format!("{} is locked; ask an administrator", user.email),
                email: Some(user.email),
            });
        }
        Err(NotIssued::Store(e)) => {
            tracing::error!(error = %e, "could not create a session");
            return Err(NotSignedIn::unavailable("You are not signed in."));
        }
        Err(NotIssued::Unrecorded) => {
            return Err(NotSignedIn::Page(web::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "The gateway cannot record sign-ins right now, so you are not signed in. Try \
                 again shortly.",
            )));
        }
    };
    // A code given at this sign-in counts as a recent one; a trusted browser is no code.
    if second_factor.is_some_and(|f| f != crate::mfa::trusted::FACTOR) {
        crate::mfa::note_proof(&state.store, created.row.id, now_ms()).await;
    }
    store_name(state, &user, new_name).await;
    end_replaced_session(state, &peer, headers, created.row.id).await;
    let target = attempt
        .return_to
        .filter(|r| cookies::safe_return_to(r))
        .unwrap_or_else(|| "/account".into());
    let mut response = Redirect::to(&target).into_response();
    // A new session id at every sign-in: no fixation.
    let lifetime = state.config.sessions.lifetime.as_secs();
    cookies::set_session(state, &mut response, &token, lifetime);
    cookies::clear_login(state, &mut response);
    Ok(response)
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

/// A sign-in's audit `details` with `"mfa": "totp"` when a second factor was given.
fn with_second_factor(
    mut details: serde_json::Value,
    second_factor: Option<&'static str>,
) -> serde_json::Value {
    if let (Some(factor), Some(map)) = (second_factor, details.as_object_mut()) {
        map.insert("mfa".into(), factor.into());
    }
    details
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
