//! The notification outbox (`notifications`) and the notifier's cursor over the audit trail.
//!
//! Notifications are made from audit events. The cursor (the setting
//! [`NOTIFY_CURSOR_SETTING`]) is the last event already turned into notifications; moving it
//! and inserting those notifications is one transaction, with the cursor compared and set, so
//! two gateways sharing a database never both queue an event's notifications. Sending is
//! claimed row by row with a lease ([`Store::claim_notifications`]): a crashed instance's
//! claims run out and another sends them.

use sqlx::Executor;

use super::columns::Columns;
use super::{Store, StoreError, bounded};

/// The setting holding the notifier's cursor: the `seq` of the last audit event already
/// turned into notifications.
pub const NOTIFY_CURSOR_SETTING: &str = "notify.cursor";

/// The setting holding the notifier's counts of refusals per credential (see
/// `notify::refusals`), moved with the cursor.
pub const NOTIFY_REFUSALS_SETTING: &str = "notify.refusals";

/// A notification to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// `slack` or `email`.
    pub channel: &'static str,
    /// The e-mail address; empty for Slack.
    pub recipient: String,
    /// What it is about.
    pub topic: &'static str,
    /// The rendered message (JSON).
    pub message: String,
    /// The audit event it comes from.
    pub audit_seq: i64,
}

/// A queued notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    /// Row id.
    pub id: i64,
    /// `slack` or `email`.
    pub channel: String,
    /// The e-mail address; empty for Slack.
    pub recipient: String,
    /// What it is about.
    pub topic: String,
    /// The rendered message (JSON).
    pub message: String,
    /// The audit event it comes from.
    pub audit_seq: i64,
    /// When queued (unix ms).
    pub created_at: i64,
    /// Attempts so far (counting the one a claim starts).
    pub attempts: i64,
    /// When sent (unix ms).
    pub sent_at: Option<i64>,
    /// When given up on (unix ms).
    pub failed_at: Option<i64>,
    /// Why the last attempt failed (never holds a secret: see `notify`).
    pub last_error: Option<String>,
    /// Until when an instance holds it to send (unix ms): also what names that instance's
    /// claim, for [`Store::renew_notification_claim`] and the updates after the send.
    pub claimed_until: Option<i64>,
}

macro_rules! columns {
    () => {
        "id, channel, recipient, topic, message, audit_seq, created_at, attempts, sent_at, \
         failed_at, last_error, claimed_until"
    };
}

fn from_row(row: &(impl Columns + ?Sized)) -> Result<NotificationRow, StoreError> {
    Ok(NotificationRow {
        id: row.int("id")?,
        channel: row.text("channel")?,
        recipient: row.text("recipient")?,
        topic: row.text("topic")?,
        message: row.text("message")?,
        audit_seq: row.int("audit_seq")?,
        created_at: row.int("created_at")?,
        attempts: row.int("attempts")?,
        sent_at: row.opt_int("sent_at")?,
        failed_at: row.opt_int("failed_at")?,
        last_error: row.opt_text("last_error")?,
        claimed_until: row.opt_int("claimed_until")?,
    })
}

impl Store {
    /// The notifier's cursor, set to `start` (the chain's head, say) when there is none yet:
    /// a gateway that starts notifying does not announce its whole history.
    pub async fn notify_cursor(&self, start: i64) -> Result<i64, StoreError> {
        // Read first: asked every second, it should not take SQLite's write lock each time.
        let value = match self.setting(NOTIFY_CURSOR_SETTING).await? {
            Some(value) => value,
            None => {
                self.setting_or_insert(NOTIFY_CURSOR_SETTING, &start.to_string())
                    .await?
            }
        };
        value
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("setting {NOTIFY_CURSOR_SETTING}: {value:?}")))
    }

    /// Moves the cursor to `seq` unless it is already there or past it: the events up to it
    /// are never announced.
    pub async fn skip_notifications_through(&self, seq: i64) -> Result<(), StoreError> {
        let current = self.setting(NOTIFY_CURSOR_SETTING).await?;
        let behind = current
            .as_deref()
            .is_none_or(|c| c.parse::<i64>().is_ok_and(|c| c < seq));
        if behind {
            self.put_setting(NOTIFY_CURSOR_SETTING, &seq.to_string())
                .await?;
        }
        Ok(())
    }

    /// The notifier's counts of refusals, as it last stored them with its cursor.
    pub async fn refusal_counts(&self) -> Result<Option<String>, StoreError> {
        self.setting(NOTIFY_REFUSALS_SETTING).await
    }

    /// Queues `queued` and moves the cursor from `from` to `to` in one transaction, storing
    /// `refusals` (the counts as of `to`) with it when given. `false` (and nothing queued or
    /// stored) when the cursor is no longer at `from`: another instance took these events.
    pub async fn queue_notifications(
        &self,
        from: i64,
        to: i64,
        queued: &[NewNotification],
        refusals: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let mut tx = self.begin_write().await?;
            let result = async {
                let moved = sqlx::query("UPDATE settings SET value = $1 WHERE key = $2 AND value = $3")
                    .bind(to.to_string())
                    .bind(NOTIFY_CURSOR_SETTING)
                    .bind(from.to_string())
                    .execute(&mut **tx.conn()?)
                    .await?;
                if moved.rows_affected() != 1 {
                    return Ok(false);
                }
                if let Some(refusals) = refusals {
                    sqlx::query(
                        "INSERT INTO settings (key, value) VALUES ($1, $2) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(NOTIFY_REFUSALS_SETTING)
                    .bind(refusals)
                    .execute(&mut **tx.conn()?)
                    .await?;
                }
                for n in queued {
                    sqlx::query(
                        "INSERT INTO notifications (channel, recipient, topic, message, \
                         audit_seq, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    )
                    .bind(n.channel)
                    .bind(&n.recipient)
                    .bind(n.topic)
                    .bind(&n.message)
                    .bind(n.audit_seq)
                    .bind(now)
                    .execute(&mut **tx.conn()?)
                    .await?;
                }
                Ok(true)
            }
            .await;
            match result {
                Ok(true) => tx.finish(Ok(true)).await,
                // Nothing written: let the cursor's new owner go on.
                Ok(false) => {
                    tx.rollback().await?;
                    Ok(false)
                }
                Err(e) => tx.finish(Err(e)).await,
            }
        })
        .await
    }

    /// Claims up to `limit` notifications due at `now` for `lease_ms`, counting an attempt on
    /// each. A row another instance claimed meanwhile is not claimed again (the claim's
    /// condition is checked on the row itself as it is updated).
    pub async fn claim_notifications(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        bounded(self, async {
            // Read first: asked every second, it should not take SQLite's write lock (or
            // write at all) when nothing is due.
            let due = sqlx::query(
                "SELECT id FROM notifications WHERE sent_at IS NULL AND failed_at IS NULL \
                 AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1) \
                 LIMIT 1",
            )
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            if due.is_none() {
                return Ok(Vec::new());
            }
            let sql = concat!(
                "UPDATE notifications SET claimed_until = $1, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM notifications WHERE sent_at IS NULL \
                 AND failed_at IS NULL AND next_attempt_at <= $2 \
                 AND (claimed_until IS NULL OR claimed_until <= $2) ORDER BY id LIMIT $3) \
                 AND sent_at IS NULL AND failed_at IS NULL \
                 AND (claimed_until IS NULL OR claimed_until <= $2) RETURNING ",
                columns!()
            );
            let rows = sqlx::query(sql)
                .bind(now.saturating_add(lease_ms))
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            let mut claimed = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
            claimed.sort_by_key(|n| n.id);
            Ok(claimed)
        })
        .await
    }

    /// Notes that notification `id` was sent at `now`.
    ///
    /// Only while `claim` (its `claimed_until` when this instance claimed or renewed it) still
    /// holds it: whether it did. Otherwise another instance took it when the claim ran out,
    /// and its own update is the one that counts.
    pub async fn notification_sent(
        &self,
        id: i64,
        claim: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE notifications SET sent_at = $1, claimed_until = NULL, last_error = NULL \
                 WHERE id = $2 AND claimed_until = $3",
            )
            .bind(now)
            .bind(id)
            .bind(claim)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Holds notification `id`, claimed until `claim`, until `until` instead: right before it
    /// is sent, so a claim taken with a batch does not run out while the ones before it are
    /// sent. `false` when `claim` no longer holds it (another instance took it).
    pub async fn renew_notification_claim(
        &self,
        id: i64,
        claim: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE notifications SET claimed_until = $1 WHERE id = $2 \
                 AND claimed_until = $3 AND sent_at IS NULL AND failed_at IS NULL",
            )
            .bind(until)
            .bind(id)
            .bind(claim)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Notes that sending notification `id` failed with `error`: tried again at `retry_at`, or
    /// given up on (at `now`) when `retry_at` is `None`.
    ///
    /// Only while `claim` still holds it, as for [`Store::notification_sent`].
    pub async fn notification_failed(
        &self,
        id: i64,
        claim: i64,
        error: &str,
        now: i64,
        retry_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let query = match retry_at {
                Some(at) => sqlx::query(
                    "UPDATE notifications SET last_error = $1, next_attempt_at = $2, \
                     claimed_until = NULL WHERE id = $3 AND claimed_until = $4",
                )
                .bind(error)
                .bind(at)
                .bind(id)
                .bind(claim),
                None => sqlx::query(
                    "UPDATE notifications SET last_error = $1, failed_at = $2, \
                     claimed_until = NULL WHERE id = $3 AND claimed_until = $4",
                )
                .bind(error)
                .bind(now)
                .bind(id)
                .bind(claim),
            };
            let done = self.pool.execute(query).await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// The newest `limit` notifications, newest first (all of them, or only those given up
    /// on).
    pub async fn list_notifications(
        &self,
        failed_only: bool,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        bounded(self, async {
            let sql = if failed_only {
                concat!(
                    "SELECT ",
                    columns!(),
                    " FROM notifications WHERE failed_at IS NOT NULL ORDER BY id DESC LIMIT $1"
                )
            } else {
                concat!(
                    "SELECT ",
                    columns!(),
                    " FROM notifications ORDER BY id DESC LIMIT $1"
                )
            };
            let rows = sqlx::query(sql).bind(limit).fetch_all(&self.pool).await?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    /// Removes notifications sent or given up on before `before` (unix ms); how many.
    pub async fn prune_notifications(&self, before: i64) -> Result<u64, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "DELETE FROM notifications WHERE created_at < $1 \
                 AND (sent_at IS NOT NULL OR failed_at IS NOT NULL)",
            )
            .bind(before)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        })
        .await
    }
}
