//! Minting an API token for a caller: what it may hold is bounded by what the caller holds.
//! Shared by `POST /api/v1/tokens` and the `/tokens` page; the token itself is made (and
//! audited) by [`super::manage::create_token`].

use gateway_core::rbac::PermissionSet;

use super::manage::{ManageError, TokenRequest};
use super::{Principal, PrincipalKind};
use crate::store::{Store, StoreError};

/// What a session must hold to name someone else as a new token's owner: the token then acts
/// in that person's name (their e-mail on its calls, their lock stopping it, its deploy
/// requests theirs, which they may not approve but the minter could), so it is for those who
/// manage people.
pub const NAME_ANOTHER_OWNER: &str = "gateway:users:update";

/// What a caller asks a new token to be.
#[derive(Debug, Clone, Default)]
pub struct MintAsk {
    /// Name.
    pub name: String,
    /// A role (built-in or custom)…
    pub role: Option<String>,
    /// …or explicit permissions.
    pub permissions: Option<Vec<String>>,
    /// Life, e.g. `90d`.
    pub expires_in: Option<String>,
    /// The user it acts for.
    pub owner: Option<String>,
}

/// Why a token was not minted.
#[derive(Debug, thiserror::Error)]
pub enum MintRefused {
    /// The ask is malformed.
    #[error("{0}")]
    Invalid(String),
    /// It would hold more than its creator (the message says what).
    #[error("{0}")]
    MoreThanYouHold(String),
    /// The store could not say what the asked-for role grants.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The token `body` asks `principal` for (at `now`), refused when it would hold more than the caller: permissions the
/// caller lacks, an owner other than the caller's (a token's), or a life past the calling
/// token's own expiry (a token that has one passes it on when none is asked for).
pub async fn bounded_by_creator(
    store: &Store,
    principal: &Principal,
    body: &MintAsk,
    now: i64,
) -> Result<TokenRequest, MintRefused> {
    let wanted = match (&body.role, &body.permissions) {
        (Some(_), Some(_)) => {
            return Err(MintRefused::Invalid(
                "give a role or permissions, not both".into(),
            ));
        }
        (Some(role), None) => super::roles::known_role(store, role)
            .await
            .map_err(|e| match e {
                ManageError::Store(e) => MintRefused::Store(e),
                other => MintRefused::Invalid(other.to_string()),
            })?,
        (None, Some(list)) => {
            PermissionSet::new(list.clone()).map_err(|e| MintRefused::Invalid(e.to_string()))?
        }
        (None, None) => {
            return Err(MintRefused::Invalid(
                "a token needs a role or permissions".into(),
            ));
        }
    };
    let beyond: Vec<&str> = wanted
        .patterns()
        .iter()
        .filter(|p| !principal.permissions.allows(p))
        .map(String::as_str)
        .collect();
    if !beyond.is_empty() {
        return Err(MintRefused::MoreThanYouHold(format!(
            "a token cannot hold more than its creator: you do not hold {}",
            beyond.join(", ")
        )));
    }
    let mut request = TokenRequest {
        name: body.name.clone(),
        role: body.role.clone(),
        permissions: body.permissions.as_ref().map(|p| p.join(",")),
        expires_in: body.expires_in.clone(),
        owner: body.owner.clone(),
    };
    match &principal.kind {
        PrincipalKind::Session { email, .. } => {
            let someone_else = request.owner.as_deref().is_some_and(|asked| {
                gateway_core::text::email_key(asked) != gateway_core::text::email_key(email)
            });
            if someone_else && !principal.permissions.allows(NAME_ANOTHER_OWNER) {
                return Err(MintRefused::MoreThanYouHold(format!(
                    "a token you mint is yours: naming another person as its owner needs \
                     {NAME_ANOTHER_OWNER} (it would act, and ask for deploys, in their name); \
                     leave out owner"
                )));
            }
            // Locking its creator stops it, unless someone who manages people names another
            // owner.
            request.owner = request.owner.or_else(|| Some(email.clone()));
        }
        PrincipalKind::ApiToken {
            owner_email,
            expires_at,
            ..
        } => {
            let same_owner = match (&request.owner, owner_email) {
                (None, _) => true,
                (Some(asked), Some(own)) => {
                    gateway_core::text::email_key(asked) == gateway_core::text::email_key(own)
                }
                (Some(_), None) => false,
            };
            if !same_owner {
                return Err(MintRefused::MoreThanYouHold(
                    "a token mints tokens only for its own owner".into(),
                ));
            }
            request.owner = owner_email.clone();
            if let Some(until) = expires_at {
                let left_ms = until - now;
                let asked_ms = match &request.expires_in {
                    Some(life) => Some(
                        super::parse_expiry(life)
                            .map_err(|e| MintRefused::Invalid(e.to_string()))?,
                    ),
                    None => None,
                };
                match asked_ms {
                    Some(ms) if ms > left_ms => {
                        return Err(MintRefused::MoreThanYouHold(
                            "a token cannot mint one that outlives it: ask for a shorter \
                             expires_in"
                                .into(),
                        ));
                    }
                    Some(_) => {}
                    None if left_ms < 60_000 => {
                        return Err(MintRefused::MoreThanYouHold(
                            "this token expires within a minute: it cannot mint another".into(),
                        ));
                    }
                    None => request.expires_in = Some(format!("{}m", left_ms / 60_000)),
                }
            }
        }
    }
    Ok(request)
}
