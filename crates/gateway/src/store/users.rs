//! Users table.

use super::columns::Columns;
use sqlx::any::AnyRow;

use sqlx::Row;

use super::{Key, Store, StoreError, Table, WriteTx, bounded, now_ms};

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserRow {
    /// Row id.
    pub id: i64,
    /// E-mail address (lower-cased), the user's identity.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role name.
    pub role: String,
    /// A locked user can do nothing.
    pub locked: bool,
    /// Creation time (unix ms).
    pub created_at: i64,
    /// Last request (unix ms).
    pub last_seen_at: Option<i64>,
}

macro_rules! columns {
    () => {
        "id, email, name, role, locked, created_at, last_seen_at"
    };
}

pub(super) fn from_row(row: &(impl Columns + ?Sized)) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        id: row.int("id")?,
        email: row.text("email")?,
        name: row.text("name")?,
        role: row.text("role")?,
        locked: row.int("locked")? != 0,
        created_at: row.int("created_at")?,
        last_seen_at: row.opt_int("last_seen_at")?,
    })
}

impl Store {
    /// Adds a user; the e-mail must be new.
    pub async fn create_user(
        &self,
        email: &str,
        name: &str,
        role: &str,
    ) -> Result<UserRow, StoreError> {
        bounded(self, async {
            let now = now_ms();
            // A custom role's existence is checked under the users table's lock, which
            // `delete_role` waits for (see there).
            let mut tx = if is_custom(role) {
                self.begin_exclusive_write(Table::Users).await?
            } else {
                self.begin_write().await?
            };
            let result = async {
                if is_custom(role) {
                    super::roles::custom_role_exists(&mut tx, role).await?;
                }
                let sql = concat!(
                    "INSERT INTO users (email, name, role, locked, created_at, updated_at) \
                     VALUES ($1, $2, $3, 0, $4, $4) RETURNING ",
                    columns!(),
                    ""
                );
                let row = sqlx::query(sql)
                    .bind(gateway_core::text::email_key(email))
                    .bind(name)
                    .bind(role)
                    .bind(now)
                    .fetch_one(&mut **tx.conn()?)
                    .await
                    .map_err(|e| {
                        if StoreError::is_unique_violation(&e) {
                            StoreError::Conflict(format!("user {email}"))
                        } else {
                            e.into()
                        }
                    })?;
                from_row(&row)
            }
            .await;
            tx.finish(result).await
        })
        .await
    }

    /// Adds the gateway's first user, or nothing (`None`) when any user exists already. The
    /// check and the insert are one step: two people signing in to a new gateway at the same
    /// moment cannot both become its first user.
    pub async fn create_first_user(
        &self,
        email: &str,
        name: &str,
        role: &str,
    ) -> Result<Option<UserRow>, StoreError> {
        bounded(self, async {
            let mut tx = self.begin_exclusive_write(Table::Users).await?;
            let sql = concat!(
                "INSERT INTO users (email, name, role, locked, created_at, updated_at) \
             SELECT $1, $2, $3, 0, $4, $4 WHERE NOT EXISTS (SELECT 1 FROM users) RETURNING ",
                columns!(),
                ""
            );
            let row = sqlx::query(sql)
                .bind(gateway_core::text::email_key(email))
                .bind(name)
                .bind(role)
                .bind(now_ms())
                .fetch_optional(&mut **tx.conn()?)
                .await?;
            tx.commit().await?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    /// Finds a user by e-mail (case-insensitive).
    pub async fn find_user(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        bounded(self, async {
            if !storable(email) {
                return Ok(None);
            }
            let sql = concat!("SELECT ", columns!(), " FROM users WHERE email = $1");
            let row = sqlx::query(sql)
                .bind(gateway_core::text::email_key(email))
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    /// Finds a user by id.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRow>, StoreError> {
        bounded(self, async {
            let sql = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
            self.read_one(sql, Key::Int(id), |row| from_row(row)).await
        })
        .await
    }

    /// Sets a user's display name (the identity provider's, at sign-in).
    pub async fn set_user_name(&self, id: i64, name: &str) -> Result<(), StoreError> {
        bounded(self, async {
            sqlx::query("UPDATE users SET name = $1 WHERE id = $2")
                .bind(name)
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// All users, by e-mail.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        bounded(self, async {
            let sql = concat!("SELECT ", columns!(), " FROM users ORDER BY email");
            let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    /// Changes a user's role. With [`LastAdmin::Keep`], refuses ([`StoreError::LastAdmin`])
    /// to take the role from the only unlocked admin: checked and changed under the users
    /// table's write lock, so two admins demoting each other at the same moment cannot leave
    /// the gateway without one. Returns the user and the role they had before.
    pub async fn set_user_role(
        &self,
        email: &str,
        role: &str,
        last_admin: LastAdmin,
    ) -> Result<(UserRow, String), StoreError> {
        bounded(self, async {
            if !storable(email) {
                return found(None, email).map(|user| (user, String::new()));
            }
            let key = gateway_core::text::email_key(email);
            let mut tx = self.begin_exclusive_write(Table::Users).await?;
            let result = async {
                let before = sqlx::query("SELECT role FROM users WHERE email = $1")
                    .bind(&key)
                    .fetch_optional(&mut **tx.conn()?)
                    .await?;
                let Some(before) = before else {
                    return found(None, email).map(|user| (user, String::new()));
                };
                let previous_role: String = before.try_get("role")?;
                if is_custom(role) {
                    super::roles::custom_role_exists(&mut tx, role).await?;
                }
                if role != ADMIN_ROLE && last_admin == LastAdmin::Keep {
                    keeps_an_admin(&mut tx, &key).await?;
                }
                let sql = concat!(
                    "UPDATE users SET role = $1, updated_at = $2 WHERE email = $3 RETURNING ",
                    columns!()
                );
                let row = sqlx::query(sql)
                    .bind(role)
                    .bind(now_ms())
                    .bind(&key)
                    .fetch_optional(&mut **tx.conn()?)
                    .await?;
                Ok((found(row, email)?, previous_role))
            }
            .await;
            tx.finish(result).await
        })
        .await
    }

    /// Locks a user and ends their sessions, in one transaction: unlocking later does not
    /// bring back a session (or a stolen cookie) from before the lock, and a failure leaves
    /// neither half done. With [`LastAdmin::Keep`], refuses ([`StoreError::LastAdmin`]) to lock
    /// the only unlocked admin. Returns the user and how many sessions were ended.
    pub async fn lock_user(
        &self,
        email: &str,
        last_admin: LastAdmin,
    ) -> Result<(UserRow, u64), StoreError> {
        bounded(self, async {
            if !storable(email) {
                return found(None, email).map(|user| (user, 0));
            }
            let key = gateway_core::text::email_key(email);
            let mut tx = self.begin_exclusive_write(Table::Users).await?;
            let result = async {
                if last_admin == LastAdmin::Keep {
                    keeps_an_admin(&mut tx, &key).await?;
                }
                let now = now_ms();
                // Sessions before the user row: a one-statement revoke locks a session and then
                // the credential generation (its trigger), which the user's update takes too, so
                // the other order could deadlock with it on PostgreSQL. (Sign-ins and touches
                // write the user first, but they wait for this transaction's table lock before
                // taking any session.)
                let ended = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1 WHERE revoked_at IS NULL \
                 AND user_id = (SELECT id FROM users WHERE email = $2)",
                )
                .bind(now)
                .bind(&key)
                .execute(&mut **tx.conn()?)
                .await?
                .rows_affected();
                // Trust in their browsers ends too: unlocked later, they give a code again.
                sqlx::query(
                    "UPDATE trusted_devices SET revoked_at = $1 WHERE revoked_at IS NULL \
                     AND user_id = (SELECT id FROM users WHERE email = $2)",
                )
                .bind(now)
                .bind(&key)
                .execute(&mut **tx.conn()?)
                .await?;
                let sql = concat!(
                    "UPDATE users SET locked = 1, updated_at = $1 WHERE email = $2 RETURNING ",
                    columns!()
                );
                let row = sqlx::query(sql)
                    .bind(now)
                    .bind(&key)
                    .fetch_optional(&mut **tx.conn()?)
                    .await?;
                let user = found(row, email)?;
                super::sessions::refuse_uncollected_sign_ins(&mut tx, user.id).await?;
                Ok((user, ended))
            }
            .await;
            tx.finish(result).await
        })
        .await
    }

    /// Whether any user is an unlocked admin.
    pub async fn has_unlocked_admin(&self) -> Result<bool, StoreError> {
        bounded(self, async {
            let row = sqlx::query(
                "SELECT COUNT(*) AS n FROM (SELECT 1 FROM users WHERE role = $1 AND locked = 0 \
             LIMIT 1) AS admins",
            )
            .bind(ADMIN_ROLE)
            .fetch_one(&self.pool)
            .await?;
            Ok(row.try_get::<i64, _>("n")? > 0)
        })
        .await
    }

    /// Unlocks a user (their sessions from before the lock stay ended).
    pub async fn unlock_user(&self, email: &str) -> Result<UserRow, StoreError> {
        bounded(self, async {
            if !storable(email) {
                return found(None, email);
            }
            let sql = concat!(
                "UPDATE users SET locked = 0, updated_at = $1 WHERE email = $2 RETURNING ",
                columns!()
            );
            let row = sqlx::query(sql)
                .bind(now_ms())
                .bind(gateway_core::text::email_key(email))
                .fetch_optional(&self.pool)
                .await?;
            found(row, email)
        })
        .await
    }
}

/// Whether `role` names a custom role (one the `roles` table must hold) rather than a built-in.
pub(super) fn is_custom(role: &str) -> bool {
    role.parse::<gateway_core::rbac::Role>().is_err()
}

/// Whether a change may take away the only unlocked admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastAdmin {
    /// No: the gateway keeps someone who can manage users (every change over HTTP).
    Keep,
    /// Yes: the host's admin commands are the way back in, and must be able to lock or demote
    /// a compromised sole admin (whose session could otherwise undo each new admin).
    MayGo,
}

/// The role that manages users; [`Store::set_user_role`] and [`Store::lock_user`] keep one
/// unlocked user in it.
const ADMIN_ROLE: &str = "admin";

/// Refuses, inside `tx` (which holds the users table), a change that would take away the
/// last unlocked admin: the user `key` is one and no other is.
async fn keeps_an_admin(tx: &mut WriteTx, key: &str) -> Result<(), StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM users WHERE role = $1 AND locked = 0 AND email = $2) \
         AS target, \
         (SELECT COUNT(*) FROM users WHERE role = $1 AND locked = 0 AND email <> $2) AS others",
    )
    .bind(ADMIN_ROLE)
    .bind(key)
    .fetch_one(&mut **tx.conn()?)
    .await?;
    let target: i64 = row.try_get("target")?;
    let others: i64 = row.try_get("others")?;
    if target > 0 && others == 0 {
        return Err(StoreError::LastAdmin(key.to_string()));
    }
    Ok(())
}

/// Whether `email` can be a stored key. PostgreSQL refuses NUL in text (an error, which would
/// be a 500), and no user with one is ever stored on either backend, so such a key is simply
/// not found.
fn storable(email: &str) -> bool {
    !email.contains('\0')
}

fn found(row: Option<AnyRow>, email: &str) -> Result<UserRow, StoreError> {
    match row {
        Some(row) => from_row(&row),
        None => Err(StoreError::NotFound(format!("user {email}"))),
    }
}
