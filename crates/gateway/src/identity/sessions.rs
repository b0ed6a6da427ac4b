//! Sessions: opaque random tokens (`rgs_…`) stored only as SHA-256, with an idle timeout and
//! an absolute lifetime. The user's role and lock come from the database on every request (or
//! from a remembered read that the audit commit confirms, see `identity::memory`).

use crate::secret_eq::secret_eq;

use super::tokens::hash_token;
use super::{AuthError, Principal, PrincipalKind};
use crate::config::SessionConfig;
use crate::store::{
    CreatedSession, NewSession, RoleGrant, SessionRow, Store, StoreError, UserRow, now_ms,
};

/// Every session token starts with this.
pub const SESSION_PREFIX: &str = "rgs_";

/// Starts a session for `user`; returns the new row with the user's least recently used
/// sessions beyond `limits.max_per_user` (to end with [`end_evicted`] once the sign-in is
/// recorded), and the secret token (shown once).
pub async fn issue_session(
    store: &Store,
    limits: &SessionConfig,
    user: &UserRow,
    channel: &str,
    user_agent: Option<&str>,
    ip: Option<&str>,
) -> Result<(CreatedSession, String), StoreError> {
    let secret = format!("{SESSION_PREFIX}{}", crate::oidc::random_token());
    let lifetime = i64::try_from(limits.lifetime.as_millis()).unwrap_or(i64::MAX);
    let now = now_ms();
    let created = store
        .create_session(&NewSession {
            token_hash: &hash_token(&secret),
            user_id: user.id,
            channel,
            // At most 256 characters, cut on a character boundary (never inside one).
            user_agent: user_agent.map(|u| u.char_indices().nth(256).map_or(u, |(i, _)| &u[..i])),
            ip,
            expires_at: now.saturating_add(lifetime),
            idle_since: idle_since(limits, now),
            keep: limits.max_per_user,
        })
        .await?;
    Ok((created, secret))
}

/// Ends the sessions a recorded sign-in named for ending, and any others of the user's still
/// beyond `limits.max_per_user`; returns those others (not named by the sign-in's event).
pub async fn end_evicted(
    store: &Store,
    limits: &SessionConfig,
    user_id: i64,
    named: &[i64],
) -> Result<Vec<i64>, StoreError> {
    let since = idle_since(limits, now_ms());
    store
        .end_sessions(user_id, named, limits.max_per_user, since)
        .await
}

/// Sessions last used before this time (unix ms) have idled out.
pub fn idle_since(limits: &SessionConfig, now: i64) -> i64 {
    let idle = i64::try_from(limits.idle_timeout.as_millis()).unwrap_or(i64::MAX);
    now.saturating_sub(idle)
}

/// Checks a session read for `hash` (known, not revoked, not idle too long, not past its
/// lifetime, user not locked) and records its use. The role comes from the user row, so role
/// changes apply at once.
pub(super) async fn admit_session(
    store: &Store,
    limits: &SessionConfig,
    session: &SessionRow,
    user: &UserRow,
    grant: &RoleGrant,
    hash: &str,
    use_: super::principal::Use,
) -> Result<Principal, AuthError> {
    if !secret_eq(session.token_hash.as_bytes(), hash.as_bytes()) {
        return Err(AuthError::Unknown);
    }
    if session.revoked_at.is_some() {
        return Err(AuthError::SessionRevoked);
    }
    let now = now_ms();
    let idle = i64::try_from(limits.idle_timeout.as_millis()).unwrap_or(i64::MAX);
    // Remembered rows carry the `last_seen_at` of their read, never newer than the database's:
    // the idle check can only be stricter for them, and a refusal is read again.
    if session.expires_at <= now || now.saturating_sub(session.last_seen_at) > idle {
        return Err(AuthError::SessionExpired);
    }
    if user.locked {
        return Err(AuthError::UserLocked);
    }
    let (role, permissions) = super::roles::granted(&user.role, grant)?;
    // Record use often enough that the idle timeout measures real idleness: every 30 s, or a
    // quarter of the idle timeout when that is shorter.
    let interval = (idle / 4).clamp(0, 30_000);
    if use_ == super::principal::Use::Record
        && let Err(err) = store.touch_session(session, interval).await
        && let Some(held_back) = super::principal::UNRECORDED_USES.admit()
    {
        tracing::warn!(
            error = %err,
            session_id = session.id,
            failed_since_last = held_back,
            "could not record session use (at most one such line a second)"
        );
    }
    Ok(Principal {
        kind: PrincipalKind::Session {
            user_id: user.id,
            email: user.email.clone(),
            session_id: session.id,
            channel: session.channel.clone(),
            expires_at: session.expires_at,
        },
        role: Some(role),
        permissions,
    })
}
