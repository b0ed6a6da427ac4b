//! Changing users and tokens. Used by the admin commands and by the JSON API, so both apply
//! the same rules, and each change is audited the way a proxied request is (see [`audited`]).

use std::future::Future;

use serde_json::{Value, json};

use super::tokens::{issue_token, parse_expiry};
use crate::audit::{ActorType, AuditError, AuditEvent, AuditLog, Decision, EventKind};
use crate::rbac::PermissionSet;
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
    /// What the actor may do, which bounds what they may give (over HTTP); `None` on the
    /// server's command line, which may give anything.
    pub holds: Option<PermissionSet>,
}

impl Actor {
    /// The server's command line, as the login running it.
    pub fn cli() -> Actor {
        let login = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        // The login name comes from the environment (anyone can set USER); the user id the
        // process runs as does not.
        #[cfg(unix)]
        let uid = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self").map(|m| m.uid()).ok()
        };
        #[cfg(not(unix))]
        let uid: Option<u32> = None;
        let login: String = login
            .chars()
            .map(gateway_core::text::shown)
            .take(64)
            .collect();
        Actor {
            actor_type: ActorType::Cli,
            email: None,
            token_name: None,
            label: match uid {
                Some(uid) => format!("cli:{login} (uid {uid})"),
                None => format!("cli:{login}"),
            },
            client_ip: None,
            user_agent: None,
            decision: Decision::None,
            holds: None,
        }
    }

    /// Refuses ([`ManageError::Escalation`], saying `what` and naming the permissions the
    /// actor lacks) a change that would give, or touch, more than the actor holds: nobody
    /// hands out a role, or changes someone, beyond their own permissions.
    pub(crate) fn within_reach(
        &self,
        wanted: &PermissionSet,
        what: &str,
    ) -> Result<(), ManageError> {
        let Some(held) = &self.holds else {
            return Ok(());
        };
        let beyond: Vec<&str> = wanted
            .patterns()
            .iter()
            .filter(|p| !held.allows(p))
            .map(String::as_str)
            .collect();
        if beyond.is_empty() {
            Ok(())
        } else {
            Err(ManageError::Escalation(format!(
                "{what}: you do not hold {}",
                beyond.join(", ")
            )))
        }
    }

    /// An event of `kind` by this actor, with `details` (redacted, and naming the operator on
    /// the command line).
    pub(crate) fn event(
        &self,
        kind: EventKind,
        request_id: &str,
        action: &str,
        details: Value,
    ) -> AuditEvent {
        let mut e = AuditEvent::new(kind, request_id, action);
        e.actor_type = self.actor_type;
        e.user_email = self.email.clone();
        e.token_name = self.token_name.clone();
        e.client_ip = self.client_ip.clone();
        e.user_agent = self.user_agent.clone();
        // As for a proxied call: the decision is the request's; an outcome has none.
        if kind != EventKind::Outcome {
            e.rbac_decision = self.decision;
        }
        let mut details = details;
        // On the server's command line nobody signed in: who ran the command is the host's
        // login, recorded with the change it asked for.
        if self.actor_type == ActorType::Cli
            && kind != EventKind::Outcome
            && let Some(map) = details.as_object_mut()
        {
            map.insert("operator".into(), Value::String(self.label.clone()));
        }
        e.with_details(details)
    }
}

/// Makes a change the way a proxied request is forwarded. Its event (`action`, with what was
/// `asked`) is committed first; when it cannot be, nothing is changed and the answer is
/// [`ManageError::Audit`]. What came of the change follows as an outcome event with the same
/// request id: `"result": "done"` with the fields `done` picks from the result, or
/// `"result": "refused"` with the reason (`"unknown"` when the store did not answer in time). So a change is never made without its event, and a
/// crash in the middle shows as an event without an outcome, as for a proxied request.
///
/// The event, the change and its outcome run as a task of their own: an HTTP client that goes
/// away meanwhile must not leave the change half-known — its event committed but the change
/// never made, or made with no outcome recorded.
pub(crate) async fn audited<T: Send + 'static>(
    audit: &AuditLog,
    actor: &Actor,
    action: &'static str,
    asked: Value,
    change: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    done: impl FnOnce(&T) -> Value + Send + 'static,
) -> Result<T, ManageError> {
    let request_id = crate::request_id::current();
    let (audit, actor) = (audit.clone(), actor.clone());
    crate::request_id::spawn(async move {
        audit
            .record(actor.event(EventKind::Gateway, &request_id, action, asked))
            .await?;
        let result = change.await;
        let details = match &result {
            Ok(value) => with_result(done(value), "done"),
            Err(e) => refusal(e),
        };
        audit.record_later(actor.event(EventKind::Outcome, &request_id, action, details));
        result.map_err(ManageError::Store)
    })
    .await
    .map_err(|e| ManageError::Interrupted(e.to_string()))?
}

/// `fields` (an object) with `"result": result` added.
fn with_result(fields: Value, result: &str) -> Value {
    let mut fields = match fields {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    fields.insert("result".into(), result.into());
    Value::Object(fields)
}

/// The outcome of a change the store refused: a stable reason, and the message when it is
/// about the caller's input (a database's own error text stays in the logs).
fn refusal(e: &StoreError) -> Value {
    let (reason, message) = match e {
        StoreError::NotFound(_) => ("not_found", Some(e.to_string())),
        StoreError::Conflict(_) => ("conflict", Some(e.to_string())),
        StoreError::InUse(_) => ("in_use", Some(e.to_string())),
        StoreError::Ambiguous(_) => ("ambiguous", Some(e.to_string())),
        StoreError::LastAdmin(_) => ("last_admin", Some(e.to_string())),
        StoreError::UserLocked => ("user_locked", Some(e.to_string())),
        StoreError::Timeout(_) => ("store_timeout", None),
        StoreError::Unreachable(_) => ("store_unreachable", None),
        StoreError::ChainMovedBack { .. } | StoreError::ChainReplaced { .. } => {
            ("audit_chain_moved_back", None)
        }
        StoreError::KeyRotated => ("audit_key_rotated", None),
        StoreError::ReadOnly => ("store_read_only", None),
        StoreError::SchemaNewer(_)
        | StoreError::NoDatabaseFile(_)
        | StoreError::NoDatabaseDir(_)
        | StoreError::DatabaseIsDir(_)
        | StoreError::DatabaseNotWritable(_) => ("store_error", None),
        StoreError::Database(_)
        | StoreError::Migrate(_)
        | StoreError::Sqlite(_)
        | StoreError::Rotation(_)
        | StoreError::Corrupt(_) => ("store_error", None),
    };
    let mut fields = json!({ "reason": reason });
    if let Some(message) = message {
        fields["error"] = message.into();
    }
    // Cut off at the store's deadline, the change may still have been applied (a statement or
    // its commit already on its way): the trail must not claim it was not.
    let result = if matches!(e, StoreError::Timeout(_)) {
        "unknown"
    } else {
        "refused"
    };
    with_result(fields, result)
}

/// A user-given name as an event records it: names and e-mail addresses are far shorter, and
/// what is asked is recorded before the store has looked at it.
fn asked_name(name: &str) -> String {
    gateway_core::redact::clip(name.to_string(), 320)
}

/// An e-mail address naming an existing user, as an event records it (the stored key).
fn asked_email(email: &str) -> String {
    asked_name(&gateway_core::text::email_key(email))
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The change would give, or touch, more than the actor holds (the message says what).
    #[error("{0}")]
    Escalation(String),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change could not be audited, so it was not made.
    #[error("nothing changed: the audit trail cannot record the change: {0}")]
    Audit(#[from] AuditError),
    /// The change's task ended before it could answer (a bug: it panicked).
    #[error("the change did not finish: {0}")]
    Interrupted(String),
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

/// Refuses a change to the user `email` when they hold more than the actor: locking an
/// admin, or taking their role, is for whoever holds as much. A user that does not exist is
/// left for the change itself to refuse.
async fn target_within_reach(store: &Store, actor: &Actor, email: &str) -> Result<(), ManageError> {
    if actor.holds.is_none() {
        return Ok(());
    }
    let Some(user) = store.find_user(email).await? else {
        return Ok(());
    };
    let held = super::roles::permissions_of(store, &user.role)
        .await?
        .unwrap_or_default();
    actor.within_reach(&held, "you cannot change a user who holds more than you")
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
    let role = match request.role.as_deref() {
        Some(role) => {
            let granted = super::roles::known_role(store, role).await?;
            actor.within_reach(&granted, "a token cannot hold more than its creator")?;
            Some(role.to_string())
        }
        None => None,
    };
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
            actor.within_reach(&set, "a token cannot hold more than its creator")?;
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
    let asked = json!({
        "name": name, "role": role, "permissions": permissions,
        "expires_at": expires_at, "owner": owner.as_ref().map(|u| u.email.clone()),
    });
    let issued = issue_token();
    let (store, name, hash, created_by) = (
        store.clone(),
        name.to_string(),
        issued.hash,
        actor.label.clone(),
    );
    let create = async move {
        store
            .create_token(&NewToken {
                name: &name,
                token_hash: &hash,
                role: role.as_deref(),
                permissions: permissions.as_deref(),
                owner_user_id: owner.map(|u| u.id),
                created_by: &created_by,
                expires_at,
            })
            .await
    };
    let row = audited(
        audit,
        actor,
        "gateway:tokens:create",
        asked,
        create,
        |row: &TokenRow| json!({ "token_id": row.id }),
    )
    .await
    .map_err(|e| match e {
        // The audit trail names tokens by name: two usable tokens of one name could not be
        // told apart there (or revoked by name).
        ManageError::Store(StoreError::Conflict(_)) => ManageError::Invalid(format!(
            "a token named {} is already in use: revoke it first, or choose another name",
            request.name.trim()
        )),
        e => e,
    })?;
    Ok((row, issued.secret))
}

/// Revokes a token by id or name.
pub async fn revoke_token(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    id_or_name: &str,
) -> Result<TokenRow, ManageError> {
    let store = store.clone();
    let token = id_or_name.to_string();
    audited(
        audit,
        actor,
        "gateway:tokens:revoke",
        json!({ "token": asked_name(id_or_name) }),
        async move { store.revoke_token(&token).await },
        |row: &TokenRow| json!({ "token_id": row.id, "name": row.name }),
    )
    .await
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
    let granted = super::roles::known_role(store, role).await?;
    actor.within_reach(
        &granted,
        "you cannot give a role that grants more than you hold",
    )?;
    let (store, email, name, role) = (
        store.clone(),
        email.to_string(),
        name.to_string(),
        role.to_string(),
    );
    let asked = json!({ "email": gateway_core::text::email_key(&email), "role": role });
    audited(
        audit,
        actor,
        "gateway:users:create",
        asked,
        async move { store.create_user(&email, &name, &role).await },
        |user: &UserRow| json!({ "user_id": user.id }),
    )
    .await
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
    let granted = super::roles::known_role(store, role).await?;
    actor.within_reach(
        &granted,
        "you cannot give a role that grants more than you hold",
    )?;
    target_within_reach(store, actor, email).await?;
    let asked = json!({ "email": asked_email(email), "role": role });
    let (store, email, role) = (store.clone(), email.to_string(), role.to_string());
    let (user, _) = audited(
        audit,
        actor,
        "gateway:users:update",
        asked,
        async move { store.set_user_role(&email, &role, last_admin).await },
        |(_, previous_role): &(UserRow, String)| json!({ "previous_role": previous_role }),
    )
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
    target_within_reach(store, actor, email).await?;
    let asked = json!({ "email": asked_email(email) });
    let (store, email) = (store.clone(), email.to_string());
    if !locked {
        return audited(
            audit,
            actor,
            "gateway:users:unlock",
            asked,
            async move { store.unlock_user(&email).await },
            |_| json!({}),
        )
        .await;
    }
    let (user, _) = audited(
        audit,
        actor,
        "gateway:users:lock",
        asked,
        async move { store.lock_user(&email, last_admin).await },
        |(_, sessions_revoked): &(UserRow, u64)| json!({ "sessions_revoked_count": sessions_revoked }),
    )
    .await?;
    Ok(user)
}

/// Removes a user's authenticator app (they lost their phone): their next sign-in needs only
/// the identity provider, and they can set up a new one. Refused as not found when the user
/// does not exist or has none.
pub async fn reset_mfa(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    email: &str,
) -> Result<UserRow, ManageError> {
    target_within_reach(store, actor, email).await?;
    let asked = json!({ "email": asked_email(email), "factor": "totp" });
    let (store, email) = (store.clone(), email.to_string());
    audited(
        audit,
        actor,
        "gateway:mfa:reset",
        asked,
        async move {
            let user = store
                .find_user(&email)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("user {email}")))?;
            if !store.remove_totp(user.id).await? {
                return Err(StoreError::NotFound(format!(
                    "an authenticator app for {}",
                    user.email
                )));
            }
            Ok(user)
        },
        |_| json!({}),
    )
    .await
}

/// The audit action of forgetting trusted browsers (the person's own, or someone's).
pub const FORGET_BROWSERS: &str = "gateway:mfa:forget_device";

/// Forgets every browser a user trusted at a sign-in (a lost laptop, someone leaving): their
/// next sign-in in any browser asks for their code again. Their sessions stay (ending them is
/// `sessions revoke-all`). The user and how many browsers were forgotten; not found when the
/// user does not exist.
pub async fn forget_browsers(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    email: &str,
) -> Result<(UserRow, u64), ManageError> {
    target_within_reach(store, actor, email).await?;
    let asked = json!({ "email": asked_email(email), "all": true });
    let (store, email) = (store.clone(), email.to_string());
    audited(
        audit,
        actor,
        FORGET_BROWSERS,
        asked,
        async move {
            let user = store
                .find_user(&email)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("user {email}")))?;
            let forgotten = store.forget_trusted_devices(user.id, None).await?;
            Ok((user, forgotten))
        },
        |(_, forgotten)| json!({ "forgotten": forgotten }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_cut_off_at_the_store_deadline_is_not_called_refused() {
        let cut_off = refusal(&StoreError::Timeout(10));
        assert_eq!(cut_off["result"], "unknown");
        assert_eq!(cut_off["reason"], "store_timeout");
        let refused = refusal(&StoreError::NotFound("user a@example.com".into()));
        assert_eq!(refused["result"], "refused");
        assert_eq!(refused["reason"], "not_found");
        assert_eq!(refused["error"], "user a@example.com not found");
        // A database's own words stay in the logs.
        let failed = refusal(&StoreError::Sqlite("disk I/O error at /var/lib/x".into()));
        assert_eq!(failed["result"], "refused");
        assert!(failed.get("error").is_none(), "{failed}");
    }
}
