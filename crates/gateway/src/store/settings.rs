//! Key/value settings the gateway keeps for itself (e.g. a generated audit key).

use sqlx::Row;

use super::{Store, StoreError, bounded};

impl Store {
    /// Reads a setting.
    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        bounded(self, async {
            let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(|r| r.try_get("value")).transpose()?)
        })
        .await
    }

    /// Stores `value` under `key` unless the key is already set; returns the stored value
    /// (so concurrent instances agree on the first one written).
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        bounded(self, async {
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
            self.setting(key)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("setting {key}")))
        })
        .await
    }

    /// Stores `value` under `key`, replacing what was there.
    pub async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        bounded(self, async {
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// Removes the setting `key` and returns what it held: one reader gets it, however many
    /// ask at once.
    pub async fn take_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        bounded(self, async {
            let row = sqlx::query("DELETE FROM settings WHERE key = $1 RETURNING value")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(|r| r.try_get("value")).transpose()?)
        })
        .await
    }
}
