//! Sign-in flows: web (browser → provider → callback → cookie) and CLI (the CLI starts a login
//! bound to a PKCE-style verifier only it holds, the browser signs in, the CLI polls with the
//! verifier and receives the session).
//!
//! [`browser`] starts a web sign-in and signs out; [`cli`] starts, confirms and collects a CLI
//! one; both end at the provider's [`callback`](callback::callback), which lets in whom
//! [`admit`] allows; for those with an authenticator app, [`mfa`] then asks for a code before
//! any session exists. What each step records goes through [`record`].

mod admit;
mod browser;
mod callback;
mod cli;
mod mfa;
mod record;

pub use browser::{WebLogin, web_login, web_logout};
pub use callback::{Callback, callback};
pub use cli::{
    CliBrowser, CliConfirm, CliPoll, CliStart, cli_browser, cli_browser_confirm, cli_code,
    cli_poll, cli_start, logout,
};
pub use mfa::{CodeForm, MFA_PATH, page as mfa_page, submit as mfa_submit};

use http::HeaderMap;
use serde_json::json;

use crate::app::{AppState, Peer};
use crate::store::{LoginLimits, NewLogin, StoreError, now_ms};

/// How long a login attempt may take.
const LOGIN_TTL_MS: i64 = 10 * 60 * 1000;

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

/// Why a sign-in attempt was not stored.
enum NotStarted {
    /// The address has too many sign-ins in progress (logged and audited).
    TooMany,
    /// The store failed.
    Store(StoreError),
}

/// Stores a new sign-in attempt `login` (its channel, where it leads, its CLI's challenge) for
/// `peer`, within the limits on sign-ins in progress; a refusal is logged and audited.
async fn start_attempt(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    login: NewLogin<'_>,
) -> Result<(), NotStarted> {
    match state.store.create_login(&login, LoginLimits::DEFAULT).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            let (client_ip, channel) = (login.client_ip, login.channel);
            tracing::warn!(%client_ip, channel, "sign-in refused: too many sign-ins in progress");
            let details = json!({ "channel": channel, "reason": "too_many_sign_ins" });
            let action = "gateway:auth:signin";
            record::audit_signin(state, peer, headers, action, None, false, details).await;
            Err(NotStarted::TooMany)
        }
        Err(e) => Err(NotStarted::Store(e)),
    }
}

/// The address a sign-in attempt is counted under: by /64 for IPv6, as every per-address limit
/// is.
/// Whether this browser's login cookie claims `attempt`: its id, and the secret whose hash
/// the attempt's provider round trip stored (compared in constant time).
fn browser_holds(state: &AppState, headers: &HeaderMap, attempt: &crate::store::LoginRow) -> bool {
    use crate::secret_eq::secret_eq;
    let (Some((id, secret)), Some(hash)) = (
        crate::web::cookies::login(state, headers),
        attempt.browser_hash.as_deref(),
    ) else {
        return false;
    };
    let secret_hash = crate::identity::hash_token(&secret);
    secret_eq(id.as_bytes(), attempt.id.as_bytes())
        & secret_eq(secret_hash.as_bytes(), hash.as_bytes())
}

/// What a sign-in's second-step form and its authenticator set-up are bound to: the browser on
/// its round trip (see [`browser_holds`], checked before either is shown or taken).
fn browser_binding(attempt: &crate::store::LoginRow) -> &str {
    attempt.browser_hash.as_deref().unwrap_or(&attempt.id)
}

fn attempt_address(peer: &Peer) -> String {
    gateway_core::failure_budget::address_key(peer.ip).to_string()
}

/// When an attempt started now expires.
fn attempt_expiry() -> i64 {
    now_ms() + LOGIN_TTL_MS
}
