//! TOTP authenticators (`mfa_totp`): one per user, its secret sealed (see `mfa::seal`).
//! Every change is a single compare-and-set statement, so two gateways, or two tabs, cannot
//! both accept one code or both confirm different secrets.

use super::columns::Columns;
use super::{Store, StoreError, bounded, now_ms};

/// A user's TOTP authenticator as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpRow {
    /// The user.
    pub user_id: i64,
    /// The secret, sealed with `MFA_ENCRYPTION_KEY`.
    pub secret_sealed: String,
    /// When set up (unix ms).
    pub created_at: i64,
    /// When its first code was given (unix ms); until then it protects nothing.
    pub confirmed_at: Option<i64>,
    /// The newest step a code was accepted for.
    pub last_step: i64,
    /// Wrong codes since the last right one.
    pub failures: i64,
    /// Codes are refused until then (unix ms; 0: not locked).
    pub locked_until: i64,
    /// Who is setting it up, until it is confirmed (`mfa::SetupBy::tag`).
    pub setup_by: Option<String>,
}

/// A user as listed for admins: their row and whether an authenticator app guards their
/// sign-ins (`"mfa": true` in JSON, beside the row's fields).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListedUser {
    /// The user.
    #[serde(flatten)]
    pub user: super::UserRow,
    /// A confirmed authenticator app.
    pub mfa: bool,
    /// Security keys and passkeys beside it.
    pub security_keys: i64,
    /// YubiKeys beside it.
    pub yubikeys: i64,
    /// Browsers trusted at a sign-in (skipping the code), still in force.
    pub trusted_browsers: i64,
}

/// What a wrong code did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpFailure {
    /// Wrong codes in a row now (0 once a lockout started).
    pub failures: i64,
    /// Codes are refused until then (unix ms; 0: not locked).
    pub locked_until: i64,
}

macro_rules! columns {
    () => {
        "user_id, secret_sealed, created_at, confirmed_at, last_step, failures, locked_until, \
         setup_by"
    };
}

fn from_row(row: &(impl Columns + ?Sized)) -> Result<TotpRow, StoreError> {
    Ok(TotpRow {
        user_id: row.int("user_id")?,
        secret_sealed: row.text("secret_sealed")?,
        created_at: row.int("created_at")?,
        confirmed_at: row.opt_int("confirmed_at")?,
        last_step: row.int("last_step")?,
        failures: row.int("failures")?,
        locked_until: row.int("locked_until")?,
        setup_by: row.opt_text("setup_by")?,
    })
}

impl Store {
    /// User `user_id`'s authenticator, confirmed or not.
    pub async fn totp(&self, user_id: i64) -> Result<Option<TotpRow>, StoreError> {
        bounded(self, async {
            let sql = concat!("SELECT ", columns!(), " FROM mfa_totp WHERE user_id = $1");
            let row = sqlx::query(sql)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    /// Every user's authenticator row (set up or being set up), by user.
    pub async fn all_totp(&self) -> Result<Vec<TotpRow>, StoreError> {
        bounded(self, async {
            let sql = concat!("SELECT ", columns!(), " FROM mfa_totp ORDER BY user_id");
            let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    /// `mfa rotate-key`'s one transaction: each `(user, old, new)` secret replaced where it is
    /// still `old`, and with `drop_backup_codes` every backup code deleted; how many secrets
    /// were replaced and unused codes deleted. A secret changed meanwhile (an app removed or set up)
    /// undoes it all: [`StoreError::Conflict`].
    pub async fn reseal_totp(
        &self,
        changes: &[(i64, String, String)],
        drop_backup_codes: bool,
    ) -> Result<(usize, u64), StoreError> {
        bounded(self, async {
            let mut tx = self.pool.begin().await?;
            for (user_id, old, new) in changes {
                let done = sqlx::query(
                    "UPDATE mfa_totp SET secret_sealed = $1 \
                     WHERE user_id = $2 AND secret_sealed = $3",
                )
                .bind(new)
                .bind(user_id)
                .bind(old)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(StoreError::Conflict(format!(
                        "the authenticator of user {user_id} changed meanwhile: nothing was \
                         changed, run it again"
                    )));
                }
            }
            let dropped = if drop_backup_codes {
                let unused: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM mfa_backup_codes WHERE used_at IS NULL",
                )
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM mfa_backup_codes")
                    .execute(&mut *tx)
                    .await?;
                u64::try_from(unused).unwrap_or_default()
            } else {
                0
            };
            tx.commit().await?;
            Ok((changes.len(), dropped))
        })
        .await
    }

    /// Starts setting up an authenticator with `secret_sealed`, by `setup_by`, replacing one
    /// not yet confirmed; `false` when a confirmed one exists (it must be removed first).
    pub async fn start_totp(
        &self,
        user_id: i64,
        secret_sealed: &str,
        setup_by: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "INSERT INTO mfa_totp (user_id, secret_sealed, created_at, setup_by) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id) DO UPDATE SET secret_sealed = excluded.secret_sealed, \
                 created_at = excluded.created_at, setup_by = excluded.setup_by, \
                 last_step = 0, failures = 0, locked_until = 0 \
                 WHERE mfa_totp.confirmed_at IS NULL",
            )
            .bind(user_id)
            .bind(secret_sealed)
            .bind(now)
            .bind(setup_by)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Confirms the authenticator being set up, if it still holds `secret_sealed` (the one the
    /// code was checked against), with `step` as the first used; whether it was confirmed.
    pub async fn confirm_totp(
        &self,
        user_id: i64,
        secret_sealed: &str,
        step: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE mfa_totp SET confirmed_at = $1, last_step = $2, failures = 0, setup_by = NULL \
                 WHERE user_id = $3 AND secret_sealed = $4 AND confirmed_at IS NULL",
            )
            .bind(now)
            .bind(step)
            .bind(user_id)
            .bind(secret_sealed)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Accepts a right code for `step`: only a confirmed authenticator, not locked at `now`,
    /// and only for a step newer than any accepted before (else the code is a replay).
    /// Clears the failures; whether it was accepted.
    pub async fn accept_totp_step(
        &self,
        user_id: i64,
        step: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE mfa_totp SET last_step = $1, failures = 0, locked_until = 0 \
                 WHERE user_id = $2 AND confirmed_at IS NOT NULL AND last_step < $1 \
                 AND locked_until <= $3",
            )
            .bind(step)
            .bind(user_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Counts a wrong code; the `max_failures`-th in a row locks codes out until
    /// `now + lockout_ms` (and starts the count again). `None` when the user has no
    /// authenticator.
    pub async fn record_totp_failure(
        &self,
        user_id: i64,
        now: i64,
        max_failures: i64,
        lockout_ms: i64,
    ) -> Result<Option<TotpFailure>, StoreError> {
        bounded(self, async {
            // Each SET reads the row as it was before the statement, on both backends.
            let row = sqlx::query(
                "UPDATE mfa_totp SET \
                 failures = CASE WHEN failures + 1 >= $1 THEN 0 ELSE failures + 1 END, \
                 locked_until = CASE WHEN failures + 1 >= $1 THEN $2 ELSE locked_until END \
                 WHERE user_id = $3 RETURNING failures, locked_until",
            )
            .bind(max_failures)
            .bind(now + lockout_ms)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
            row.map(|row| {
                Ok(TotpFailure {
                    failures: row.int("failures")?,
                    locked_until: row.int("locked_until")?,
                })
            })
            .transpose()
        })
        .await
    }

    /// Removes user `user_id`'s authenticator; whether there was one.
    pub async fn remove_totp(&self, user_id: i64) -> Result<bool, StoreError> {
        bounded(self, async {
            // The browsers trusted to skip its code go with it, in the same transaction: a
            // new app set up later must be asked for everywhere.
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "UPDATE trusted_devices SET revoked_at = $1 WHERE user_id = $2                  AND revoked_at IS NULL",
            )
            .bind(now_ms())
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
            // Its security keys and YubiKeys too: they stand beside the app, never alone.
            for sql in [
                "DELETE FROM security_keys WHERE user_id = $1",
                "DELETE FROM yubikeys WHERE user_id = $1",
            ] {
                sqlx::query(sql)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
            let done = sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }
}

impl Store {
    /// Replaces user `user_id`'s backup codes with `code_hashes` (all unused), in one
    /// transaction; `false` (nothing changed) when they have no confirmed authenticator.
    pub async fn replace_backup_codes(
        &self,
        user_id: i64,
        code_hashes: &[String],
        now: i64,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            // Written first: a SQLite transaction that reads before it writes can fail to
            // become the writer when another one got there meanwhile.
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM mfa_backup_codes WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            for hash in code_hashes {
                let inserted = sqlx::query(
                    "INSERT INTO mfa_backup_codes (user_id, code_hash, created_at) \
                     SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM mfa_totp \
                     WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
                )
                .bind(user_id)
                .bind(hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    // No confirmed authenticator: dropping `tx` rolls the delete back.
                    return Ok(false);
                }
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// Uses user `user_id`'s backup code with `code_hash` at `now`, if it is theirs, unused,
    /// and codes are not locked out; then clears the failures. Whether it was used.
    pub async fn use_backup_code(
        &self,
        user_id: i64,
        code_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let used = sqlx::query(
                "UPDATE mfa_backup_codes SET used_at = $1 \
                 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL \
                 AND EXISTS (SELECT 1 FROM mfa_totp WHERE mfa_totp.user_id = $2 \
                             AND confirmed_at IS NOT NULL AND locked_until <= $1)",
            )
            .bind(now)
            .bind(user_id)
            .bind(code_hash)
            .execute(&self.pool)
            .await?;
            if used.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query("UPDATE mfa_totp SET failures = 0 WHERE user_id = $1")
                .bind(user_id)
                .execute(&self.pool)
                .await?;
            Ok(true)
        })
        .await
    }

    /// The users with a confirmed authenticator app (for listings that say who has one).
    pub async fn users_with_mfa(&self) -> Result<std::collections::HashSet<i64>, StoreError> {
        bounded(self, async {
            let ids: Vec<i64> =
                sqlx::query_scalar("SELECT user_id FROM mfa_totp WHERE confirmed_at IS NOT NULL")
                    .fetch_all(&self.pool)
                    .await?;
            Ok(ids.into_iter().collect())
        })
        .await
    }

    /// Every user, with whether they have a confirmed authenticator app and how many keys
    /// beside it.
    pub async fn list_users_with_mfa(&self) -> Result<Vec<ListedUser>, StoreError> {
        let users = self.list_users().await?;
        let with_mfa = self.users_with_mfa().await?;
        let security_keys = self
            .count_by_user("SELECT user_id, COUNT(*) AS n FROM security_keys GROUP BY user_id")
            .await?;
        let yubikeys = self
            .count_by_user("SELECT user_id, COUNT(*) AS n FROM yubikeys GROUP BY user_id")
            .await?;
        let trusted = self.trusted_devices_by_user(super::now_ms()).await?;
        Ok(users
            .into_iter()
            .map(|user| ListedUser {
                mfa: with_mfa.contains(&user.id),
                security_keys: security_keys.get(&user.id).copied().unwrap_or(0),
                yubikeys: yubikeys.get(&user.id).copied().unwrap_or(0),
                trusted_browsers: trusted.get(&user.id).copied().unwrap_or(0),
                user,
            })
            .collect())
    }

    /// How many trusted browsers in force at `now` each user has.
    async fn trusted_devices_by_user(
        &self,
        now: i64,
    ) -> Result<std::collections::HashMap<i64, i64>, StoreError> {
        bounded(self, async {
            let rows = sqlx::query(
                "SELECT user_id, COUNT(*) AS n FROM trusted_devices \
                 WHERE revoked_at IS NULL AND expires_at > $1 GROUP BY user_id",
            )
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| Ok((row.int("user_id")?, row.int("n")?)))
                .collect()
        })
        .await
    }

    /// `sql`'s rows (`user_id`, `n`) as a map.
    async fn count_by_user(
        &self,
        sql: &'static str,
    ) -> Result<std::collections::HashMap<i64, i64>, StoreError> {
        bounded(self, async {
            let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
            rows.iter()
                .map(|row| Ok((row.int("user_id")?, row.int("n")?)))
                .collect()
        })
        .await
    }

    /// How many unused backup codes user `user_id` has.
    pub async fn backup_codes_left(&self, user_id: i64) -> Result<i64, StoreError> {
        bounded(self, async {
            Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM mfa_backup_codes WHERE user_id = $1 AND used_at IS NULL",
            )
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?)
        })
        .await
    }
}

impl Store {
    /// When session `session_id` was signed in (unix ms), if it exists.
    pub async fn session_created_at(&self, session_id: i64) -> Result<Option<i64>, StoreError> {
        bounded(self, async {
            Ok(
                sqlx::query_scalar("SELECT created_at FROM sessions WHERE id = $1")
                    .bind(session_id)
                    .fetch_optional(&self.pool)
                    .await?,
            )
        })
        .await
    }

    /// When session `session_id` last proved its second factor (unix ms), if ever.
    pub async fn session_mfa_at(&self, session_id: i64) -> Result<Option<i64>, StoreError> {
        bounded(self, async {
            let at: Option<Option<i64>> =
                sqlx::query_scalar("SELECT mfa_at FROM sessions WHERE id = $1")
                    .bind(session_id)
                    .fetch_optional(&self.pool)
                    .await?;
            Ok(at.flatten())
        })
        .await
    }

    /// Notes that session `session_id` proved its second factor at `at` (never moving it back);
    /// whether the session exists.
    pub async fn set_session_mfa(&self, session_id: i64, at: i64) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE sessions SET mfa_at = $1 WHERE id = $2 \
                 AND (mfa_at IS NULL OR mfa_at < $1)",
            )
            .bind(at)
            .bind(session_id)
            .execute(&self.pool)
            .await?;
            if done.rows_affected() > 0 {
                return Ok(true);
            }
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM sessions WHERE id = $1")
                .bind(session_id)
                .fetch_optional(&self.pool)
                .await?;
            Ok(exists.is_some())
        })
        .await
    }
}
