//! Changing users and tokens, with an audit event for each change. Used by the admin
//! commands and by the JSON API, so both apply the same rules.

use serde_json::json;

use super::tokens::{issue_token, parse_expiry};
use crate::audit::{ActorType, AuditError, AuditEvent, AuditLog, Decision, EventKind};
use crate::rbac::{PermissionSet, Role};
use crate::store::{LastAdmin, NewToken, Store, StoreError, TokenRow, UserRow, now_ms};

/// Who is making a change.
#[derive(Debug, Clone)]
pub struct Actor {
    /// User, token, or the server's command line.
    pub actor_type: ActorType,
    /// Acting user's e-mail.
    pub email: Option<String>,
    /// Acting token's name.
    pub token_name: Option<String>,
    /// Stored as a token's creator, e.g. `alice@example.com` or `cli:root`.
    pub label: String,
    /// Where the change came from (`None` on the server's command line).
    pub client_ip: Option<String>,
    /// The caller's user agent (over HTTP).
    pub user_agent: Option<String>,
    /// The RBAC decision that let the change through: `Allow` over HTTP (the caller held the
    /// permission), `None` on the server's command line (no RBAC there).
    pub decision: Decision,
}

impl Actor {
    /// The server's command line, as the login running it.
    pub fn cli() -> Actor {
        let login = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        Actor {
            actor_type: ActorType::Cli,
            email: None,
            token_name: None,
            label: format!("cli:{login}"),
            client_ip: None,
            user_agent: None,
            decision: Decision::None,
        }
    }

    fn event(&self, action: &str, details: serde_json::Value) -> AuditEvent {
        let mut e = AuditEvent::new(EventKind::Gateway, crate::request_id::current(), action);
        e.actor_type = self.actor_type;
        e.user_email = self.email.clone();
        e.token_name = self.token_name.clone();
        e.client_ip = self.client_ip.clone();
        e.user_agent = self.user_agent.clone();
        e.rbac_decision = self.decision;
        e.with_details(details)
    }
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change was made but could not be audited.
    #[error("change made but not audited: {0}")]
    Audit(#[from] AuditError),
}

/// What a new token should be.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// Name.
    pub name: String,
    /// Role name.
    pub role: Option<String>,
    /// Comma-separated permissions instead of a role.
    pub permissions: Option<String>,
    /// Duration until expiry, e.g. `30d`.
    pub expires_in: Option<String>,
    /// E-mail of the user it acts for.
    pub owner: Option<String>,
}

fn parse_role(role: &str) -> Result<Role, ManageError> {
    role.parse()
        .map_err(|e: crate::rbac::UnknownRole| ManageError::Invalid(e.to_string()))
}

/// Creates a token; returns the stored row and the secret (to show once).
pub async fn create_token(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    request: &TokenRequest,
) -> Result<(TokenRow, String), ManageError> {
    let name = request.name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(gateway_core::text::is_hidden) {
        return Err(ManageError::Invalid(
            "token name must be 1–100 printable characters".into(),
        ));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        // `tokens revoke 4` takes an id or a name: a numeric name would read as another's id.
        return Err(ManageError::Invalid(
            "token name must not be a number (it would read as a token id)".into(),
        ));
    }
    let role = request.role.as_deref().map(parse_role).transpose()?;
    let permissions = match &request.permissions {
        Some(p) => {
            let set: PermissionSet = p
                .parse()
                .map_err(|e: crate::rbac::InvalidPermission| ManageError::Invalid(e.to_string()))?;
            if set.patterns().is_empty() {
                return Err(ManageError::Invalid(
                    "--permissions lists no permission".into(),
                ));
            }
            Some(set.patterns().to_vec())
        }
        None => None,
    };
    if role.is_none() && permissions.is_none() {
        return Err(ManageError::Invalid(
            "a token needs a role or permissions".into(),
        ));
    }
    let expires_at = request
        .expires_in
        .as_deref()
        .map(parse_expiry)
        .transpose()
        .map_err(|e| ManageError::Invalid(e.to_string()))?
        .map(|ms| now_ms() + ms);
    let owner = match &request.owner {
        Some(email) => Some(
            store
                .find_user(email)
                .await?
                .ok_or_else(|| ManageError::Invalid(format!("no user {email}")))?,
        ),
        None => None,
    };
    let issued = issue_token();
    let row = store
        .create_token(&NewToken {
            name,
            token_hash: &issued.hash,
            role: role.map(Role::as_str),
            permissions: permissions.as_deref(),
            owner_user_id: owner.as_ref().map(|u| u.id),
            created_by: &actor.label,
            expires_at,
        })
        .await
        .map_err(|e| match e {
            // The audit trail names tokens by name: two usable tokens of one name could not
            // be told apart there (or revoked by name).
            StoreError::Conflict(_) => ManageError::Invalid(format!(
                "a token named {name} is already in use: revoke it first, or choose another name"
            )),
            e => e.into(),
        })?;
    audit
        .record(actor.event(
            "gateway:tokens:create",
            json!({
                "token_id": row.id, "name": row.name, "role": row.role,
                "permissions": row.permissions, "expires_at": row.expires_at,
                "owner": owner.map(|u| u.email),
            }),
        ))
        .await?;
    Ok((row, issued.secret))
}

/// Revokes a token by id or name.
pub async fn revoke_token(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    id_or_name: &str,
) -> Result<TokenRow, ManageError> {
    let row = store.revoke_token(id_or_name).await?;
    audit
        .record(actor.event(
            "gateway:tokens:revoke",
            json!({ "token_id": row.id, "name": row.name }),
        ))
        .await?;
    Ok(row)
}

fn valid_email(email: &str) -> Result<(), ManageError> {
    match gateway_core::text::email_problem(email) {
        None => Ok(()),
        Some(problem) => {
            // Quoted back cut short (and escaped): the input may be anything, of any size.
            let shown: String = email.chars().take(100).collect();
            let more = if email.chars().count() > 100 {
                "…"
            } else {
                ""
            };
            Err(ManageError::Invalid(format!(
                "{shown:?}{more} is not an e-mail address this gateway accepts: it {problem}"
            )))
        }
    }
}

/// Adds a user.
pub async fn add_user(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    email: &str,
    name: &str,
    role: &str,
) -> Result<UserRow, ManageError> {
    valid_email(email)?;
    let name = name.trim();
    // Control characters have no place in a display name, and PostgreSQL cannot store NUL.
    if name.chars().count() > 200 || name.chars().any(gateway_core::text::is_hidden) {
        return Err(ManageError::Invalid(
            "name must be at most 200 printable characters".into(),
        ));
    }
    let role = parse_role(role)?;
    let user = store.create_user(email, name, role.as_str()).await?;
    audit
        .record(actor.event(
            "gateway:users:create",
            json!({ "email": user.email, "role": user.role }),
        ))
        .await?;
    Ok(user)
}

/// Changes a user's role.
pub async fn set_user_role(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    email: &str,
    role: &str,
    last_admin: LastAdmin,
) -> Result<UserRow, ManageError> {
    let role = parse_role(role)?;
    let (user, previous_role) = store
        .set_user_role(email, role.as_str(), last_admin)
        .await?;
    audit
        .record(actor.event(
            "gateway:users:update",
            json!({ "email": user.email, "role": user.role, "previous_role": previous_role }),
        ))
        .await?;
    Ok(user)
}

/// Locks or unlocks a user.
pub async fn set_user_locked(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    email: &str,
    locked: bool,
    last_admin: LastAdmin,
) -> Result<UserRow, ManageError> {
    if !locked {
        let user = store.unlock_user(email).await?;
        audit
            .record(actor.event("gateway:users:unlock", json!({ "email": user.email })))
            .await?;
        return Ok(user);
    }
    let (user, sessions_revoked) = store.lock_user(email, last_admin).await?;
    audit
        .record(actor.event(
            "gateway:users:lock",
            json!({ "email": user.email, "sessions_revoked": sessions_revoked }),
        ))
        .await?;
    Ok(user)
}
