//! Per-app rules ([`crate::app_rules::AppRules`]), one row per app that has any, kept as JSON.

use super::columns::Columns;
use super::{Store, StoreError, bounded};
use crate::app_rules::AppRules;

/// An app's rules as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRulesRow {
    /// The app.
    pub app: String,
    /// Its rules.
    pub rules: AppRules,
    /// When they were last set (unix ms).
    pub updated_at: i64,
    /// Who set them (an e-mail, a token's name, or the admin command).
    pub updated_by: String,
}

fn from_row(row: &(impl Columns + ?Sized)) -> Result<AppRulesRow, StoreError> {
    let app = row.text("app")?;
    let rules = serde_json::from_str(&row.text("rules")?)
        .map_err(|e| StoreError::Corrupt(format!("app_rules.rules of {app}: {e}")))?;
    Ok(AppRulesRow {
        app,
        rules,
        updated_at: row.int("updated_at")?,
        updated_by: row.text("updated_by")?,
    })
}

impl Store {
    /// App `app`'s rules, if it has any.
    pub async fn app_rules(&self, app: &str) -> Result<Option<AppRulesRow>, StoreError> {
        bounded(self, async {
            let row = sqlx::query(
                "SELECT app, rules, updated_at, updated_by FROM app_rules WHERE app = $1",
            )
            .bind(app)
            .fetch_optional(&self.pool)
            .await?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    /// Every app's rules, by app name.
    pub async fn list_app_rules(&self) -> Result<Vec<AppRulesRow>, StoreError> {
        bounded(self, async {
            let rows = sqlx::query(
                "SELECT app, rules, updated_at, updated_by FROM app_rules ORDER BY app",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    /// Sets app `app`'s rules, replacing any; returns them and the rules they replaced.
    pub async fn put_app_rules(
        &self,
        app: &str,
        rules: &AppRules,
        by: &str,
        now: i64,
    ) -> Result<(AppRulesRow, Option<AppRules>), StoreError> {
        let json = serde_json::to_string(rules)
            .map_err(|e| StoreError::Corrupt(format!("app rules of {app}: {e}")))?;
        bounded(self, async {
            let mut tx = self.pool.begin().await?;
            // A write first, so that it holds SQLite's write lock while the old rules are read.
            sqlx::query("UPDATE app_rules SET updated_by = updated_by WHERE app = $1")
                .bind(app)
                .execute(&mut *tx)
                .await?;
            let previous: Option<String> =
                sqlx::query_scalar("SELECT rules FROM app_rules WHERE app = $1")
                    .bind(app)
                    .fetch_optional(&mut *tx)
                    .await?;
            let previous = previous
                .map(|json| serde_json::from_str::<AppRules>(&json))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("app_rules.rules of {app}: {e}")))?;
            sqlx::query(
                "INSERT INTO app_rules (app, rules, updated_at, updated_by) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (app) DO UPDATE SET rules = excluded.rules, \
                 updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            )
            .bind(app)
            .bind(&json)
            .bind(now)
            .bind(by)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            let row = AppRulesRow {
                app: app.to_string(),
                rules: rules.clone(),
                updated_at: now,
                updated_by: by.to_string(),
            };
            Ok((row, previous))
        })
        .await
    }

    /// Removes app `app`'s rules; returns what they were (`NotFound` when it had none).
    pub async fn delete_app_rules(&self, app: &str) -> Result<AppRulesRow, StoreError> {
        bounded(self, async {
            let row = sqlx::query(
                "DELETE FROM app_rules WHERE app = $1 \
                 RETURNING app, rules, updated_at, updated_by",
            )
            .bind(app)
            .fetch_optional(&self.pool)
            .await?;
            match row {
                Some(row) => from_row(&row),
                None => Err(StoreError::NotFound(format!("rules for app {app}"))),
            }
        })
        .await
    }
}
