//! The [`Principal`] behind a request, and authentication of a presented token.

use std::sync::Arc;

use crate::secret_eq::secret_eq;

use super::memory::{CredentialMemory, Remembered};
use super::tokens::hash_token;
use crate::rbac::{PermissionSet, RoleName};
use crate::store::{Generation, RoleGrant, Store, StoreError, TokenRow, UserRow, now_ms};

/// What kind of caller this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An API token.
    ApiToken {
        /// Token id.
        id: i64,
        /// Token name.
        name: String,
        /// The e-mail of the user the token acts for, if any.
        owner_email: Option<String>,
        /// When the token expires (unix ms), if it does.
        expires_at: Option<i64>,
    },
    /// A signed-in user's session.
    Session {
        /// User id.
        user_id: i64,
        /// User e-mail.
        email: String,
        /// Session id.
        session_id: i64,
        /// `web` or `cli`.
        channel: String,
        /// Absolute end of the session (unix ms).
        expires_at: i64,
    },
}

/// An authenticated caller with the permissions it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User or token.
    pub kind: PrincipalKind,
    /// The role, when permissions come from one.
    pub role: Option<RoleName>,
    /// What the caller may do. A token is limited by its own permissions, never its owner's.
    pub permissions: PermissionSet,
}

impl Principal {
    /// The e-mail to attribute the request to.
    pub fn email(&self) -> Option<&str> {
        match &self.kind {
            PrincipalKind::ApiToken { owner_email, .. } => owner_email.as_deref(),
            PrincipalKind::Session { email, .. } => Some(email),
        }
    }

    /// The audit actor type.
    pub fn actor_type(&self) -> crate::audit::ActorType {
        match &self.kind {
            PrincipalKind::ApiToken { .. } => crate::audit::ActorType::Token,
            PrincipalKind::Session { .. } => crate::audit::ActorType::User,
        }
    }

    /// The session id, for session principals.
    pub fn session_id(&self) -> Option<i64> {
        match &self.kind {
            PrincipalKind::Session { session_id, .. } => Some(*session_id),
            PrincipalKind::ApiToken { .. } => None,
        }
    }

    /// The user id behind the request (a session's user, or a token's owner if known).
    pub fn user_id(&self) -> Option<i64> {
        match &self.kind {
            PrincipalKind::Session { user_id, .. } => Some(*user_id),
            PrincipalKind::ApiToken { .. } => None,
        }
    }

    /// The token name, when a token was used.
    pub fn token_name(&self) -> Option<&str> {
        match &self.kind {
            PrincipalKind::ApiToken { name, .. } => Some(name),
            PrincipalKind::Session { .. } => None,
        }
    }

    /// The role's name, or `custom` for explicit permissions.
    pub fn role_name(&self) -> &str {
        self.role
            .as_ref()
            .map(RoleName::as_str)
            .unwrap_or(gateway_core::rbac::EXPLICIT_PERMISSIONS)
    }
}

/// Why a presented token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all.
    #[error("authentication required: send the token as the Basic-auth password or a Bearer token")]
    Missing,
    /// The Authorization header could not be read.
    #[error(transparent)]
    Malformed(#[from] super::CredentialError),
    /// No such token.
    #[error("unknown token")]
    Unknown,
    /// The token was revoked.
    #[error("token revoked")]
    Revoked,
    /// The token expired.
    #[error("token expired")]
    Expired,
    /// The session was revoked (signed out elsewhere, or by an admin).
    #[error("session revoked: sign in again")]
    SessionRevoked,
    /// The session ended (idle or absolute lifetime).
    #[error("session expired: sign in again")]
    SessionExpired,
    /// The user is locked.
    #[error("user is locked")]
    UserLocked,
    /// The user the token acts for is locked.
    #[error("token's user is locked")]
    OwnerLocked,
    /// The store could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where an authentication may take its answer from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Only from the database.
    Fresh,
    /// From credentials remembered from an earlier request when there are any (see
    /// [`CredentialMemory`]); the caller must then record the request with
    /// `AuditLog::record_checked` and [`Authenticated::read_at`].
    Remembered,
}

/// A successful authentication.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who is asking, and what they may do.
    pub principal: Principal,
    /// When the answer came from memory: the credential generation it was read at, which
    /// must still be current when the request is recorded. `None` for a fresh read.
    pub read_at: Option<Generation>,
}

/// Authenticates `token` against the store. Every lookup goes to the database, so a revoke,
/// lock or role change takes effect on the next request on every instance.
pub async fn authenticate(
    store: &Store,
    sessions: &crate::config::SessionConfig,
    token: &str,
) -> Result<Principal, AuthError> {
    let memory = CredentialMemory::new(false);
    authenticate_with(store, &memory, sessions, token, Reads::Fresh)
        .await
        .map(|a| a.principal)
}

/// [`authenticate`], answering from `memory` when `reads` allows and it has the credentials,
/// and remembering a fresh read's rows there. Only a yes ever comes from memory: remembered
/// credentials that would now be refused (expired, idle) are read again.
pub async fn authenticate_with(
    store: &Store,
    memory: &CredentialMemory,
    sessions: &crate::config::SessionConfig,
    token: &str,
    reads: Reads,
) -> Result<Authenticated, AuthError> {
    let deadline = crate::store::STORE_DEADLINE;
    match tokio::time::timeout(
        deadline,
        authenticate_now(store, memory, sessions, token, reads),
    )
    .await
    {
        Ok(answer) => answer,
        Err(_) => Err(AuthError::Store(StoreError::Timeout(deadline.as_secs()))),
    }
}

async fn authenticate_now(
    store: &Store,
    memory: &CredentialMemory,
    sessions: &crate::config::SessionConfig,
    token: &str,
    reads: Reads,
) -> Result<Authenticated, AuthError> {
    let hash = hash_token(token);
    if reads == Reads::Remembered
        && let Some((rows, generation)) = memory.recall(&hash)
    {
        match admit(store, sessions, &rows, &hash, Use::Record).await {
            Ok(principal) => {
                return Ok(Authenticated {
                    principal,
                    read_at: Some(generation),
                });
            }
            Err(_) => memory.forget(&hash),
        }
    }
    match read_fresh(store, sessions, token, &hash, Use::Record).await {
        Ok((principal, rows, generation)) => {
            memory.remember(hash, rows, generation);
            Ok(Authenticated {
                principal,
                read_at: None,
            })
        }
        Err(err) => {
            // Whatever was remembered is no longer a yes.
            memory.forget(&hash);
            Err(err)
        }
    }
}

/// Whether a check of credentials counts as their use ("last used", and a session's idle
/// clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    /// A request: it is use.
    Record,
    /// A re-check while a WebSocket session stays open: not use, so an open stream alone
    /// does not keep a session from idling out.
    Skip,
}

/// Checks `token` again from a fresh read, without counting it as use: for a WebSocket
/// session that stays open (a revoke, lock, role change, expiry or idle timeout ends it).
pub async fn recheck(
    store: &Store,
    sessions: &crate::config::SessionConfig,
    token: &str,
) -> Result<Principal, AuthError> {
    let hash = hash_token(token);
    // A store that hangs counts as one that fails: the session's re-checks then end it, as
    // when the database is down, rather than leaving it open unchecked.
    let deadline = crate::store::STORE_DEADLINE;
    match tokio::time::timeout(
        deadline,
        read_fresh(store, sessions, token, &hash, Use::Skip),
    )
    .await
    {
        Ok(read) => read.map(|(principal, _, _)| principal),
        Err(_) => Err(AuthError::Store(StoreError::Timeout(deadline.as_secs()))),
    }
}

/// Reads the credentials for `hash` from the database and checks them.
async fn read_fresh(
    store: &Store,
    sessions: &crate::config::SessionConfig,
    token: &str,
    hash: &str,
    use_: Use,
) -> Result<(Principal, Remembered, Generation), AuthError> {
    let (rows, generation) = if token.starts_with(super::sessions::SESSION_PREFIX) {
        let (session, user, grant, generation) = store
            .session_with_user(hash)
            .await?
            .ok_or(AuthError::Unknown)?;
        (
            Remembered::Session(Arc::new((session, user, grant))),
            generation,
        )
    } else {
        let (row, owner, grant, generation) = store
            .token_with_owner(hash)
            .await?
            .ok_or(AuthError::Unknown)?;
        (Remembered::Token(Arc::new((row, owner, grant))), generation)
    };
    let principal = admit(store, sessions, &rows, hash, use_).await?;
    Ok((principal, rows, generation))
}

/// Failed records of a credential's use, logged at most once a second: while the database
/// takes no writes, every request would otherwise add a line.
pub(super) static UNRECORDED_USES: crate::log_throttle::Throttle =
    crate::log_throttle::Throttle::new(1000);

/// Checks credentials read for `hash` and records their use.
async fn admit(
    store: &Store,
    sessions: &crate::config::SessionConfig,
    rows: &Remembered,
    hash: &str,
    use_: Use,
) -> Result<Principal, AuthError> {
    match rows {
        Remembered::Token(rows) => {
            let (row, owner, grant) = &**rows;
            let principal = token_principal(row, owner.as_ref(), grant, hash)?;
            if use_ == Use::Record
                && let Err(err) = store.touch_token(row.id, row.last_used_at).await
                && let Some(held_back) = UNRECORDED_USES.admit()
            {
                tracing::warn!(
                    error = %err,
                    token_id = row.id,
                    failed_since_last = held_back,
                    "could not record token use (at most one such line a second)"
                );
            }
            Ok(principal)
        }
        Remembered::Session(rows) => {
            let (session, user, grant) = &**rows;
            super::sessions::admit_session(store, sessions, session, user, grant, hash, use_).await
        }
    }
}

/// The principal an API token row (and its owner's) stands for, or why it is refused.
fn token_principal(
    row: &TokenRow,
    owner: Option<&UserRow>,
    grant: &RoleGrant,
    hash: &str,
) -> Result<Principal, AuthError> {
    // The row was found by hash; compare again in constant time so equality never depends
    // on a database index's comparison (or on a memory's map).
    if !secret_eq(row.token_hash.as_bytes(), hash.as_bytes()) {
        return Err(AuthError::Unknown);
    }
    if row.revoked_at.is_some() {
        return Err(AuthError::Revoked);
    }
    if row.expires_at.is_some_and(|t| t <= now_ms()) {
        return Err(AuthError::Expired);
    }
    let owner_email = match row.owner_user_id {
        Some(_) => {
            let owner = owner.ok_or(AuthError::OwnerLocked)?;
            if owner.locked {
                return Err(AuthError::OwnerLocked);
            }
            Some(owner.email.clone())
        }
        None => None,
    };
    let (role, permissions) = match (&row.role, &row.permissions) {
        (Some(role), _) => {
            let (role, permissions) = super::roles::granted(role, grant)?;
            (Some(role), permissions)
        }
        (None, Some(perms)) => (
            None,
            PermissionSet::new(perms.clone()).map_err(|e| {
                StoreError::Corrupt(format!("api_tokens.permissions of token {}: {e}", row.id))
            })?,
        ),
        (None, None) => (None, PermissionSet::default()),
    };
    Ok(Principal {
        kind: PrincipalKind::ApiToken {
            id: row.id,
            name: row.name.clone(),
            owner_email,
            expires_at: row.expires_at,
        },
        role,
        permissions,
    })
}
