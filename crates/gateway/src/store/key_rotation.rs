//! `audit rotate-key`'s one transaction: the rotation's event appended, linked with the new
//! key, and the chain's head and stored key fingerprint moved to that key, all or nothing.

use super::audit::{ChainLink, LinkFn, LockedHead, chain_rows};
use super::{Store, StoreError, bounded};
use crate::audit::AuditEvent;

/// What a key rotation changes.
#[derive(Debug, Clone, Copy)]
pub struct KeyRotation<'a> {
    /// The event recording the rotation: the first linked with the new key.
    pub event: &'a AuditEvent,
    /// The fingerprint of the key the chain is written with now.
    pub from: &'a str,
    /// The new key's fingerprint.
    pub to: &'a str,
    /// The setting holding the chain key's fingerprint (`from`, moved to `to`).
    pub fingerprint_setting: &'a str,
    /// A setting to rename, `(from, to)`: a generated key kept in the database, kept on
    /// under another name so that `audit verify` can still check the events it linked.
    pub rename_setting: Option<(&'a str, &'a str)>,
}

impl Store {
    /// Appends `rotation.event` (hashed by `link`, which must use the new key) and moves the
    /// chain to the new key in one transaction. Fails with [`StoreError::Rotation`], changing
    /// nothing, when the chain is not written with `rotation.from`.
    pub async fn rotate_audit_key(
        &self,
        rotation: KeyRotation<'_>,
        link: impl LinkFn,
    ) -> Result<ChainLink, StoreError> {
        let mut tx = self.begin_write().await?;
        let LockedHead {
            seq,
            hash,
            key_fingerprint: head_key,
        } = self.lock_chain_head(&mut tx).await?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(rotation.fingerprint_setting)
                .fetch_optional(&mut **tx.conn()?)
                .await?;
        // Both read inside the transaction: another rotation that committed first is seen.
        if stored.as_deref() != Some(rotation.from)
            || !(head_key.is_empty() || head_key == rotation.from)
        {
            return Err(StoreError::Rotation(
                "the chain is no longer written with the key being retired (another rotation \
                 got there first?)"
                    .into(),
            ));
        }
        let rows = chain_rows(seq, &hash, std::iter::once(rotation.event), link)?;
        let Some(last) = rows.last().map(|row| row.link.clone()) else {
            return Err(StoreError::Corrupt("a rotation without its event".into()));
        };
        self.insert_linked(&mut tx, &rows).await?;
        sqlx::query(
            "UPDATE audit_chain_head SET seq = $1, hash = $2, key_fingerprint = $3 WHERE id = 1",
        )
        .bind(last.seq)
        .bind(&last.hash)
        .bind(rotation.to)
        .execute(&mut **tx.conn()?)
        .await?;
        sqlx::query("UPDATE settings SET value = $1 WHERE key = $2")
            .bind(rotation.to)
            .bind(rotation.fingerprint_setting)
            .execute(&mut **tx.conn()?)
            .await?;
        if let Some((from, to)) = rotation.rename_setting {
            sqlx::query(
                "INSERT INTO settings (key, value) SELECT $1, value FROM settings WHERE key = $2",
            )
            .bind(to)
            .bind(from)
            .execute(&mut **tx.conn()?)
            .await?;
            sqlx::query("DELETE FROM settings WHERE key = $1")
                .bind(from)
                .execute(&mut **tx.conn()?)
                .await?;
        }
        tx.commit().await?;
        self.audit_written.note(last.seq, &last.hash);
        Ok(last)
    }

    /// True when the chain was rotated to another key than the one noted by
    /// [`Store::expect_chain_key`]: this process's appends are refused from now on.
    pub async fn chain_key_retired(&self) -> Result<bool, StoreError> {
        bounded(self, async {
            let head_key: String =
                sqlx::query_scalar("SELECT key_fingerprint FROM audit_chain_head WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?;
            Ok(self.audit_written.check_key(&head_key).is_err())
        })
        .await
    }

    /// Notes the fingerprints of the keys this process links audit events with: from then on
    /// every append checks, in its own transaction or statement, that the chain has not been
    /// rotated to another key, and moves to `next` when it was rotated to that one, setting
    /// `next_in_use` (see `written`).
    pub fn expect_chain_key(
        &self,
        current: &str,
        next: Option<String>,
        next_in_use: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        self.audit_written.expect_key(current, next, next_in_use);
    }
}
