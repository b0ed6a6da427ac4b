//! Trusted browsers: a person's browser that skips the authenticator code at sign-in for a
//! while. Only the SHA-256 of the browser's cookie is stored.

use super::columns::Columns;
use super::{Key, Store, StoreError, bounded, now_ms};

/// A trusted browser as stored (never its cookie).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrustedDeviceRow {
    /// Row id, the handle for forgetting it.
    pub id: i64,
    /// Whose browser it is.
    pub user_id: i64,
    /// Hex SHA-256 of the cookie.
    #[serde(skip)]
    pub token_hash: String,
    /// The browser's user agent when it was trusted.
    pub user_agent: Option<String>,
    /// The address it was trusted from.
    pub ip: Option<String>,
    /// When it was trusted (unix ms).
    pub created_at: i64,
    /// When the trust ends (unix ms).
    pub expires_at: i64,
    /// Its last sign-in without a code (unix ms).
    pub last_used_at: Option<i64>,
    /// When it was forgotten (unix ms).
    pub revoked_at: Option<i64>,
}

/// What is needed to trust a browser.
#[derive(Debug, Clone)]
pub struct NewTrustedDevice<'a> {
    /// Whose.
    pub user_id: i64,
    /// Hex SHA-256 of its cookie.
    pub token_hash: &'a str,
    /// Its user agent.
    pub user_agent: Option<&'a str>,
    /// Where from.
    pub ip: Option<&'a str>,
    /// When the trust ends (unix ms).
    pub expires_at: i64,
}

macro_rules! columns {
    () => {
        "id, user_id, token_hash, user_agent, ip, created_at, expires_at, last_used_at, revoked_at"
    };
}

fn from_row(row: &(impl Columns + ?Sized)) -> Result<TrustedDeviceRow, StoreError> {
    Ok(TrustedDeviceRow {
        id: row.int("id")?,
        user_id: row.int("user_id")?,
        token_hash: row.text("token_hash")?,
        user_agent: row.opt_text("user_agent")?,
        ip: row.opt_text("ip")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        last_used_at: row.opt_int("last_used_at")?,
        revoked_at: row.opt_int("revoked_at")?,
    })
}

impl Store {
    /// Trusts a browser.
    pub async fn trust_device(
        &self,
        new: &NewTrustedDevice<'_>,
    ) -> Result<TrustedDeviceRow, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "INSERT INTO trusted_devices (user_id, token_hash, user_agent, ip, created_at, \
                 expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
                columns!()
            );
            let row = sqlx::query(sql)
                .bind(new.user_id)
                .bind(new.token_hash)
                .bind(new.user_agent)
                .bind(new.ip)
                .bind(now_ms())
                .bind(new.expires_at)
                .fetch_one(&self.pool)
                .await?;
            from_row(&row)
        })
        .await
    }

    /// The trusted browser whose cookie hashes to `token_hash`, whatever its state.
    pub async fn trusted_device(
        &self,
        token_hash: &str,
    ) -> Result<Option<TrustedDeviceRow>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM trusted_devices WHERE token_hash = $1"
        );
        self.read_one(SQL, Key::Text(token_hash), |row| from_row(row))
            .await
    }

    /// Records a sign-in that the browser `id` let skip the code.
    pub async fn trusted_device_used(&self, id: i64) -> Result<(), StoreError> {
        bounded(self, async {
            sqlx::query("UPDATE trusted_devices SET last_used_at = $1 WHERE id = $2")
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// User `user_id`'s trusted browsers still in force, newest first.
    pub async fn trusted_devices_of(
        &self,
        user_id: i64,
    ) -> Result<Vec<TrustedDeviceRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM trusted_devices WHERE user_id = $1 AND revoked_at IS NULL \
                 AND expires_at > $2 ORDER BY id DESC"
            );
            let rows = sqlx::query(sql)
                .bind(user_id)
                .bind(now_ms())
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    /// Forgets user `user_id`'s trusted browser `id`, or all of them (`None`); how many
    /// were forgotten.
    pub async fn forget_trusted_devices(
        &self,
        user_id: i64,
        id: Option<i64>,
    ) -> Result<u64, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE trusted_devices SET revoked_at = $1 WHERE user_id = $2 \
                 AND revoked_at IS NULL AND ($3 = 0 OR id = $4)",
            )
            .bind(now_ms())
            .bind(user_id)
            .bind(i64::from(id.is_some()))
            .bind(id.unwrap_or(0))
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        })
        .await
    }
}
