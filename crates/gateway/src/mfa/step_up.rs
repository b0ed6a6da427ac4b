//! Step-up: a privileged change — people and roles, locks, API tokens, someone's
//! authenticator app — made with a session needs that session to have given a code from its
//! person's authenticator app recently (`MFA_STEP_UP_SECS`, 10 minutes by default). A stolen
//! session cookie or CLI session then cannot change who may do what without the phone.
//!
//! A session proves it at a sign-in that asked for a code, and again with
//! `POST /api/v1/auth/mfa/verify` (or the web page's form). API tokens are not asked: they are
//! robots' credentials with no second factor, scoped by their permissions. Nor are people
//! without an app, unless `MFA_REQUIRED` says everyone must have one (then, until they sign in
//! again and set one up, they cannot make such changes).
//!
//! The rack's own destructive routes ([`RACK_ACTIONS`]: deleting an app, a certificate or a
//! registry, terminating an instance, updating the rack) need the same through the proxy.
//!
//! Checked only on those changes, with one read of the session's `mfa_at`: other proxied
//! requests do not pay for it.

use super::MfaError;
use crate::app::AppState;
use crate::identity::Principal;
use crate::store::now_ms;

/// The rack routes' permissions that a session takes only with a recent code: they destroy
/// what cannot be brought back by a deploy, or change the whole rack.
pub const RACK_ACTIONS: [&str; 5] = [
    "convox:apps:delete",
    "convox:certificates:delete",
    "convox:registries:delete",
    "convox:instances:terminate",
    "convox:rack:update",
];

/// Whether a proxied request guarded by `permission` needs a recent code from a session.
pub fn guards_rack(permission: &str) -> bool {
    RACK_ACTIONS.contains(&permission)
}

/// A privileged change needs a fresh code first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needed {
    /// `MFA_STEP_UP_SECS`.
    pub window_secs: u64,
}

/// Whether `principal` may make a privileged change now: `Ok(Err(Needed))` when their session
/// must give a code first.
pub async fn check(
    state: &AppState,
    principal: &Principal,
) -> Result<Result<(), Needed>, MfaError> {
    let (Some(session_id), Some(user_id)) = (principal.session_id(), principal.user_id()) else {
        return Ok(Ok(()));
    };
    let has_app = super::required(&state.store, user_id).await?.is_some();
    if !has_app && !state.config.mfa_required {
        return Ok(Ok(()));
    }
    let window = state.config.mfa_step_up;
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let fresh = state
        .store
        .session_mfa_at(session_id)
        .await?
        .is_some_and(|at| now_ms().saturating_sub(at) <= window_ms);
    Ok(if fresh && has_app {
        Ok(())
    } else {
        Err(Needed {
            window_secs: window.as_secs(),
        })
    })
}
