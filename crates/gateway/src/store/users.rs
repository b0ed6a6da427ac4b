//! Users table.

use super::columns::Columns;
use sqlx::any::AnyRow;

use super::{Key, Store, StoreError, Table, now_ms};

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
        let now = now_ms();
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
            .fetch_one(&self.pool)
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

    /// Adds the gateway's first user, or nothing (`None`) when any user exists already. The
    /// check and the insert are one step: two people signing in to a new gateway at the same
    /// moment cannot both become its first user.
    pub async fn create_first_user(
        &self,
        email: &str,
        name: &str,
        role: &str,
    ) -> Result<Option<UserRow>, StoreError> {
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
    }

    /// Finds a user by e-mail (case-insensitive).
    pub async fn find_user(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        if !storable(email) {
            return Ok(None);
        }
        let sql = concat!("SELECT ", columns!(), " FROM users WHERE email = $1");
        let row = sqlx::query(sql)
            .bind(gateway_core::text::email_key(email))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Finds a user by id.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRow>, StoreError> {
        let sql = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
        self.read_one(sql, Key::Int(id), |row| from_row(row)).await
    }

    /// All users, by e-mail.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        let sql = concat!("SELECT ", columns!(), " FROM users ORDER BY email");
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// Changes a user's role.
    pub async fn set_user_role(&self, email: &str, role: &str) -> Result<UserRow, StoreError> {
        if !storable(email) {
            return found(None, email);
        }
        let sql = concat!(
            "UPDATE users SET role = $1, updated_at = $2 WHERE email = $3 RETURNING ",
            columns!()
        );
        let row = sqlx::query(sql)
            .bind(role)
            .bind(now_ms())
            .bind(gateway_core::text::email_key(email))
            .fetch_optional(&self.pool)
            .await?;
        found(row, email)
    }

    /// Locks or unlocks a user.
    pub async fn set_user_locked(&self, email: &str, locked: bool) -> Result<UserRow, StoreError> {
        if !storable(email) {
            return found(None, email);
        }
        let sql = concat!(
            "UPDATE users SET locked = $1, updated_at = $2 WHERE email = $3 RETURNING ",
            columns!()
        );
        let row = sqlx::query(sql)
            .bind(i64::from(locked))
            .bind(now_ms())
            .bind(gateway_core::text::email_key(email))
            .fetch_optional(&self.pool)
            .await?;
        found(row, email)
    }
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
