//! API tokens table. Only the SHA-256 of a token is stored.

use super::columns::{Columns, Prefixed};
use super::users::{UserRow, from_row as user_from_row};

use super::roles::RoleGrant;
use super::touches::Touched;
use super::{Generation, Key, Store, StoreError, Table, bounded, now_ms};

/// An API token as stored (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenRow {
    /// Row id, the handle for listing and revoking.
    pub id: i64,
    /// Human name, e.g. `circleci-deploy`.
    pub name: String,
    /// Hex SHA-256 of the secret.
    #[serde(skip)]
    pub token_hash: String,
    /// Role name, when the token carries a role.
    pub role: Option<String>,
    /// Explicit permissions, when the token carries those instead of a role.
    pub permissions: Option<Vec<String>>,
    /// The user this token acts for, if any (locking them stops the token).
    pub owner_user_id: Option<i64>,
    /// Who created it (an e-mail, or `cli:<login>` for the admin command).
    pub created_by: String,
    /// Creation time (unix ms).
    pub created_at: i64,
    /// Expiry (unix ms).
    pub expires_at: Option<i64>,
    /// Last successful use (unix ms).
    pub last_used_at: Option<i64>,
    /// Revocation time (unix ms).
    pub revoked_at: Option<i64>,
}

/// What is needed to store a new token.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    /// Human name.
    pub name: &'a str,
    /// Hex SHA-256 of the secret.
    pub token_hash: &'a str,
    /// Role name (or `None` with `permissions`).
    pub role: Option<&'a str>,
    /// Explicit permissions (or `None` with `role`).
    pub permissions: Option<&'a [String]>,
    /// Acting user.
    pub owner_user_id: Option<i64>,
    /// Creator.
    pub created_by: &'a str,
    /// Expiry (unix ms).
    pub expires_at: Option<i64>,
}

macro_rules! columns {
    () => {
        "id, name, token_hash, role, permissions, owner_user_id, created_by, \
                       created_at, expires_at, last_used_at, revoked_at"
    };
}

pub(super) fn from_row(row: &(impl Columns + ?Sized)) -> Result<TokenRow, StoreError> {
    let permissions = row
        .opt_text("permissions")?
        .map(|p| serde_json::from_str::<Vec<String>>(&p))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("api_tokens.permissions: {e}")))?;
    Ok(TokenRow {
        id: row.int("id")?,
        name: row.text("name")?,
        token_hash: row.text("token_hash")?,
        role: row.opt_text("role")?,
        permissions,
        owner_user_id: row.opt_int("owner_user_id")?,
        created_by: row.text("created_by")?,
        created_at: row.int("created_at")?,
        expires_at: row.opt_int("expires_at")?,
        last_used_at: row.opt_int("last_used_at")?,
        revoked_at: row.opt_int("revoked_at")?,
    })
}

impl Store {
    /// Stores a new token. [`StoreError::Conflict`] when a usable token (neither revoked nor
    /// expired) has the same name: the audit trail names tokens by name. The check and the
    /// insert are one step, so two creations of one name cannot both pass it.
    pub async fn create_token(&self, new: &NewToken<'_>) -> Result<TokenRow, StoreError> {
        bounded(self, async {
            let permissions = new
                .permissions
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let now = now_ms();
            let mut tx = self.begin_exclusive_write(Table::ApiTokens).await?;
            let taken = sqlx::query(
                "SELECT 1 AS taken FROM api_tokens WHERE name = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2) LIMIT 1",
            )
            .bind(new.name)
            .bind(now)
            .fetch_optional(&mut **tx.conn()?)
            .await?;
            if taken.is_some() {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "a usable token named {}",
                    new.name
                )));
            }
            if let Some(role) = new.role.filter(|r| super::users::is_custom(r))
                && let Err(e) = super::roles::custom_role_exists(&mut tx, role).await
            {
                tx.rollback().await?;
                return Err(e);
            }
            let sql = concat!(
                "INSERT INTO api_tokens (name, token_hash, role, permissions, owner_user_id, \
             created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             RETURNING ",
                columns!(),
                ""
            );
            let row = sqlx::query(sql)
                .bind(new.name)
                .bind(new.token_hash)
                .bind(new.role)
                .bind(permissions)
                .bind(new.owner_user_id)
                .bind(new.created_by)
                .bind(now)
                .bind(new.expires_at)
                .fetch_one(&mut **tx.conn()?)
                .await?;
            tx.commit().await?;
            from_row(&row)
        })
        .await
    }

    /// The token with this secret hash and, when it acts for a user, that user, with the
    /// credential generation they were read at: one statement (one round trip, one consistent
    /// snapshot). The owner is `None` for a token without one, and also when its owner row is
    /// gone (the caller refuses such a token).
    pub async fn token_with_owner(
        &self,
        token_hash: &str,
    ) -> Result<Option<(TokenRow, Option<UserRow>, RoleGrant, Generation)>, StoreError> {
        const SQL: &str = "SELECT t.id AS id, t.name AS name, t.token_hash AS token_hash, \
             t.role AS role, t.permissions AS permissions, t.owner_user_id AS owner_user_id, \
             t.created_by AS created_by, t.created_at AS created_at, t.expires_at AS expires_at, \
             t.last_used_at AS last_used_at, t.revoked_at AS revoked_at, \
             u.id AS u_id, u.email AS u_email, u.name AS u_name, u.role AS u_role, \
             u.locked AS u_locked, u.created_at AS u_created_at, u.last_seen_at AS u_last_seen_at, \
             (SELECT r.permissions FROM roles r WHERE r.name = t.role) AS role_permissions, \
             (SELECT n FROM credential_generation WHERE id = 1) AS generation \
             FROM api_tokens t LEFT JOIN users u ON u.id = t.owner_user_id \
             WHERE t.token_hash = $1";
        self.read_one(SQL, Key::Text(token_hash), |row| {
            let owner = match row.opt_int("u_id")? {
                Some(_) => Some(user_from_row(&Prefixed(row, "u_"))?),
                None => None,
            };
            let token = from_row(row)?;
            let grant = RoleGrant::read(row, token.role.as_deref().unwrap_or_default())?;
            Ok((token, owner, grant, Generation(row.int("generation")?)))
        })
        .await
    }

    /// All tokens, newest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        bounded(self, async {
            let sql = concat!("SELECT ", columns!(), " FROM api_tokens ORDER BY id DESC");
            let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    /// Revokes the token with this id, or the one not-yet-revoked token with this name.
    pub async fn revoke_token(&self, id_or_name: &str) -> Result<TokenRow, StoreError> {
        bounded(self, async {
            let candidates: Vec<TokenRow> = self
                .list_tokens()
                .await?
                .into_iter()
                .filter(|t| t.revoked_at.is_none())
                .filter(|t| t.id.to_string() == id_or_name || t.name == id_or_name)
                .collect();
            // A name shared with expired tokens (an old CI token and its replacement) names
            // the one that still works.
            let now = now_ms();
            let live: Vec<&TokenRow> = candidates
                .iter()
                .filter(|t| t.expires_at.is_none_or(|at| at > now))
                .collect();
            let token = match (candidates.as_slice(), live.as_slice()) {
                ([one], _) => one,
                (_, [one]) => *one,
                ([], _) => {
                    return Err(StoreError::NotFound(format!("active token {id_or_name}")));
                }
                _ => {
                    return Err(StoreError::Ambiguous(format!(
                        "more than one active token is named {id_or_name}: revoke one by its id \
                     (`tokens list` shows them)"
                    )));
                }
            };
            let sql = concat!(
                "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             RETURNING ",
                columns!(),
                ""
            );
            let row = sqlx::query(sql)
                .bind(now_ms())
                .bind(token.id)
                .fetch_optional(&self.pool)
                .await?;
            match row {
                Some(row) => from_row(&row),
                None => Err(StoreError::NotFound(format!("active token {id_or_name}"))),
            }
        })
        .await
    }

    /// Records a successful use. Coarse (once a minute per token, one writer per instance) to
    /// keep writes off the hot path.
    pub async fn touch_token(&self, id: i64, last_used_at: Option<i64>) -> Result<(), StoreError> {
        const INTERVAL_MS: i64 = 60_000;
        let now = now_ms();
        let key = Touched::Token(id);
        if last_used_at.is_some_and(|t| now - t < INTERVAL_MS)
            || !self.touches.claim(key, now, INTERVAL_MS)
        {
            return Ok(());
        }
        let written = sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await;
        if written.is_err() {
            self.touches.release(key);
        }
        written?;
        Ok(())
    }
}
