//! Custom roles table: roles an admin defines, by name, with the permission patterns they
//! grant. Built-in roles are not stored (their permissions are in the code); a user's or a
//! token's `role` names either kind. Every change moves the credential generation (the
//! migration's triggers), so it applies on the next request of everyone holding the role.

use sqlx::Row;

use gateway_core::rbac::PermissionSet;

use super::columns::Columns;
use super::{Key, Store, StoreError, WriteTx, bounded, now_ms};

/// A custom role as stored, with how many hold it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoleRow {
    /// Its name (never a built-in one's).
    pub name: String,
    /// What it is for, in the admin's words.
    pub description: String,
    /// The permission patterns it grants.
    pub permissions: Vec<String>,
    /// Who made it (an e-mail, a token, or `cli:<login>`).
    pub created_by: String,
    /// Creation time (unix ms).
    pub created_at: i64,
    /// Last change (unix ms).
    pub updated_at: i64,
    /// Users who hold it.
    pub users: i64,
    /// Tokens not revoked that carry it.
    pub tokens: i64,
}

/// What is needed to store a new custom role.
#[derive(Debug, Clone)]
pub struct NewRole<'a> {
    /// Name, already checked (`rbac::validate_role_name`).
    pub name: &'a str,
    /// Description.
    pub description: &'a str,
    /// Permission patterns, already checked.
    pub permissions: &'a [String],
    /// Its maker.
    pub created_by: &'a str,
}

macro_rules! columns {
    () => {
        "name, description, permissions, created_by, created_at, updated_at, \
         (SELECT COUNT(*) FROM users u WHERE u.role = roles.name) AS users, \
         (SELECT COUNT(*) FROM api_tokens t WHERE t.role = roles.name AND t.revoked_at IS NULL) \
         AS tokens"
    };
}

/// A role's stored permissions (a JSON array of patterns).
pub(super) fn permissions_from_json(json: &str, name: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str::<Vec<String>>(json)
        .map_err(|e| StoreError::Corrupt(format!("roles.permissions of {name}: {e}")))
}

/// The permissions of the custom role a credential names, read with the credential (its
/// `role_permissions` column) and checked once there, so that answering from remembered
/// credentials parses nothing: `None` when the role is built-in, or names no stored role (which
/// then grants nothing).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleGrant(pub Option<PermissionSet>);

impl RoleGrant {
    pub(super) fn read(row: &(impl Columns + ?Sized), role: &str) -> Result<RoleGrant, StoreError> {
        RoleGrant::parse(row.opt_text("role_permissions")?.as_deref(), role)
    }

    /// The grant of role `role` stored as `json` (a JSON array of patterns); a list that is not
    /// one, or holds a pattern that is not one, is corruption, never a grant.
    pub fn parse(json: Option<&str>, role: &str) -> Result<RoleGrant, StoreError> {
        let Some(json) = json else {
            return Ok(RoleGrant(None));
        };
        let patterns = permissions_from_json(json, role)?;
        PermissionSet::new(patterns)
            .map(|set| RoleGrant(Some(set)))
            .map_err(|e| StoreError::Corrupt(format!("roles.permissions of {role}: {e}")))
    }
}

fn from_row(row: &(impl Columns + ?Sized)) -> Result<RoleRow, StoreError> {
    let name = row.text("name")?;
    Ok(RoleRow {
        permissions: permissions_from_json(&row.text("permissions")?, &name)?,
        description: row.text("description")?,
        created_by: row.text("created_by")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        users: row.int("users")?,
        tokens: row.int("tokens")?,
        name,
    })
}

fn to_json(permissions: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(permissions).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Inside a write transaction: refuses a custom role `name` that does not exist, as
/// [`StoreError::NotFound`]. Callers giving someone a role run it in the transaction that does,
/// which [`Store::delete_role`]'s locks serialise with, so a role is never deleted from under
/// a user or token that was just given it.
pub(super) async fn custom_role_exists(tx: &mut WriteTx, name: &str) -> Result<(), StoreError> {
    let found = sqlx::query("SELECT 1 AS found FROM roles WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **tx.conn()?)
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(format!("role {name}"))),
    }
}

impl Store {
    /// Every custom role, by name.
    pub async fn list_roles(&self) -> Result<Vec<RoleRow>, StoreError> {
        bounded(self, async {
            let sql = concat!("SELECT ", columns!(), " FROM roles ORDER BY name");
            let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    /// The custom role of this name.
    pub async fn custom_role(&self, name: &str) -> Result<Option<RoleRow>, StoreError> {
        const SQL: &str = concat!("SELECT ", columns!(), " FROM roles WHERE name = $1");
        self.read_one(SQL, Key::Text(name), |row| from_row(row))
            .await
    }

    /// Stores a new custom role; [`StoreError::Conflict`] when the name is taken.
    pub async fn create_role(&self, new: &NewRole<'_>) -> Result<RoleRow, StoreError> {
        bounded(self, async {
            let now = now_ms();
            let sql = concat!(
                "INSERT INTO roles (name, description, permissions, created_by, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $5) RETURNING ",
                columns!()
            );
            let row = sqlx::query(sql)
                .bind(new.name)
                .bind(new.description)
                .bind(to_json(new.permissions)?)
                .bind(new.created_by)
                .bind(now)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| {
                    if StoreError::is_unique_violation(&e) {
                        StoreError::Conflict(format!("role {}", new.name))
                    } else {
                        e.into()
                    }
                })?;
            from_row(&row)
        })
        .await
    }

    /// Changes a custom role's permissions and, when given, its description. Returns the role
    /// as it is now and the permissions it had before.
    pub async fn update_role(
        &self,
        name: &str,
        permissions: &[String],
        description: Option<&str>,
    ) -> Result<(RoleRow, Vec<String>), StoreError> {
        bounded(self, async {
            let mut tx = self.begin_write().await?;
            let result = async {
                let before = sqlx::query("SELECT permissions FROM roles WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut **tx.conn()?)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("role {name}")))?;
                let previous =
                    permissions_from_json(&before.try_get::<String, _>("permissions")?, name)?;
                let sql = concat!(
                    "UPDATE roles SET permissions = $1, description = COALESCE($2, description), \
                     updated_at = $3 WHERE name = $4 RETURNING ",
                    columns!()
                );
                let row = sqlx::query(sql)
                    .bind(to_json(permissions)?)
                    .bind(description)
                    .bind(now_ms())
                    .bind(name)
                    .fetch_one(&mut **tx.conn()?)
                    .await?;
                Ok((from_row(&row)?, previous))
            }
            .await;
            tx.finish(result).await
        })
        .await
    }

    /// Deletes a custom role nobody holds: refused ([`StoreError::InUse`]) while a user or a
    /// token not revoked names it. On PostgreSQL the users and tokens tables are held (for
    /// writes) from the count to the delete, so a role cannot be given to someone in between.
    pub async fn delete_role(&self, name: &str) -> Result<RoleRow, StoreError> {
        bounded(self, async {
            let mut tx = self.begin_write().await?;
            let result = async {
                if self.backend == super::Backend::Postgres {
                    sqlx::query("LOCK TABLE users, api_tokens IN SHARE MODE")
                        .execute(&mut **tx.conn()?)
                        .await?;
                }
                let sql = concat!("SELECT ", columns!(), " FROM roles WHERE name = $1");
                let row = sqlx::query(sql)
                    .bind(name)
                    .fetch_optional(&mut **tx.conn()?)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("role {name}")))?;
                let role = from_row(&row)?;
                if role.users > 0 || role.tokens > 0 {
                    return Err(StoreError::InUse(format!(
                        "role {name} is held by {} and {}: give them another role (or revoke \
                         the tokens) first",
                        count(role.users, "user"),
                        count(role.tokens, "token")
                    )));
                }
                sqlx::query("DELETE FROM roles WHERE name = $1")
                    .bind(name)
                    .execute(&mut **tx.conn()?)
                    .await?;
                Ok(role)
            }
            .await;
            tx.finish(result).await
        })
        .await
    }
}

/// `1 user`, `2 tokens`.
fn count(n: i64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
