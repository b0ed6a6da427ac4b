//! Sign-in flows: web (browser → provider → callback → cookie) and CLI (the CLI starts a login
//! bound to a PKCE-style verifier only it holds, the browser signs in, the CLI polls with the
//! verifier and receives the session).
//!
//! [`browser`] starts a web sign-in and signs out; [`cli`] starts, confirms and collects a CLI
//! one; both end at the provider's [`callback`](callback::callback), which lets in whom
//! [`admit`] allows. What each step records goes through [`record`].

mod admit;
mod browser;
mod callback;
mod cli;
mod record;

pub use browser::{WebLogin, web_login, web_logout};
pub use callback::{Callback, callback};
pub use cli::{
    CliBrowser, CliConfirm, CliPoll, CliStart, cli_browser, cli_browser_confirm, cli_code,
    cli_poll, cli_start, logout,
};

use crate::app::AppState;

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
