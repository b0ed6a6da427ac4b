//! Security-key confirmations for CLI sessions: made by the CLI, confirmed by a key's answer in
//! its person's browser, handed back to that session once as a short-lived proof, and taken
//! by the first change that gives it. Every step is a single compare-and-set, so two gateway
//! instances cannot both confirm, hand out or take one.

use super::columns::Columns;
use super::{Store, StoreError, bounded};

/// Most confirmations one session may have outstanding: older ones go first.
pub const MAX_KEY_CONFIRMATIONS_PER_SESSION: i64 = 5;

/// A confirmation as stored (hashes only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfirmationRow {
    /// Hex SHA-256 of the id its link carries.
    pub id_hash: String,
    /// The person who must confirm.
    pub user_id: i64,
    /// The CLI session it is for.
    pub session_id: i64,
    /// When the CLI asked (unix ms).
    pub created_at: i64,
    /// Until when it may be confirmed and collected (unix ms).
    pub expires_at: i64,
    /// When a key confirmed it (unix ms).
    pub confirmed_at: Option<i64>,
    /// The security key that did.
    pub key_id: Option<i64>,
    /// When its proof stops counting (unix ms), once handed out.
    pub proof_expires_at: Option<i64>,
    /// When its proof was taken (unix ms).
    pub used_at: Option<i64>,
}

/// What is needed to ask for a confirmation.
#[derive(Debug, Clone)]
pub struct NewKeyConfirmation<'a> {
    /// Hex SHA-256 of the id handed to the CLI.
    pub id_hash: &'a str,
    /// Whose key must answer.
    pub user_id: i64,
    /// The CLI session asking.
    pub session_id: i64,
    /// Now (unix ms).
    pub now: i64,
    /// Until when it may be confirmed and collected (unix ms).
    pub expires_at: i64,
}

macro_rules! columns {
    () => {
        "id_hash, user_id, session_id, created_at, expires_at, confirmed_at, key_id, \
         proof_expires_at, used_at"
    };
}

fn from_row(row: &(impl Columns + ?Sized)) -> Result<KeyConfirmationRow, StoreError> {
    Ok(KeyConfirmationRow {
        id_hash: row.text("id_hash")?,
        user_id: row.int("user_id")?,
        session_id: row.int("session_id")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        confirmed_at: row.opt_int("confirmed_at")?,
        key_id: row.opt_int("key_id")?,
        proof_expires_at: row.opt_int("proof_expires_at")?,
        used_at: row.opt_int("used_at")?,
    })
}

impl Store {
    /// Stores a new confirmation, sweeping those no longer of any use and keeping only the
    /// session's latest [`MAX_KEY_CONFIRMATIONS_PER_SESSION`].
    pub async fn start_key_confirmation(
        &self,
        new: &NewKeyConfirmation<'_>,
    ) -> Result<(), StoreError> {
        bounded(self, async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "DELETE FROM key_confirmations \
                 WHERE expires_at <= $1 AND (proof_expires_at IS NULL OR proof_expires_at <= $1)",
            )
            .bind(new.now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO key_confirmations (id_hash, user_id, session_id, created_at, \
                 expires_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(new.id_hash)
            .bind(new.user_id)
            .bind(new.session_id)
            .bind(new.now)
            .bind(new.expires_at)
            .execute(&mut *tx)
            .await?;
            // A script asking over and over cannot grow the table without bound.
            sqlx::query(
                "DELETE FROM key_confirmations WHERE session_id = $1 AND id_hash NOT IN \
                 (SELECT id_hash FROM key_confirmations WHERE session_id = $1 \
                 ORDER BY created_at DESC, id_hash LIMIT $2)",
            )
            .bind(new.session_id)
            .bind(MAX_KEY_CONFIRMATIONS_PER_SESSION)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// The confirmation whose id hashes to `id_hash`, whatever its state.
    pub async fn key_confirmation(
        &self,
        id_hash: &str,
    ) -> Result<Option<KeyConfirmationRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM key_confirmations WHERE id_hash = $1"
            );
            let row = sqlx::query(sql)
                .bind(id_hash)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    /// Marks `id_hash` confirmed by user `user_id`'s key `key_id` at `now`: whether it was
    /// theirs, waiting and not expired (only the first confirmation counts).
    pub async fn confirm_key_confirmation(
        &self,
        id_hash: &str,
        user_id: i64,
        key_id: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE key_confirmations SET confirmed_at = $1, key_id = $2 \
                 WHERE id_hash = $3 AND user_id = $4 AND confirmed_at IS NULL AND expires_at > $1",
            )
            .bind(now)
            .bind(key_id)
            .bind(id_hash)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Hands out the proof of confirmed `id_hash` to session `session_id`: stores its hash
    /// (`proof_hash`, counting until `proof_expires_at`); whether this call did (once only,
    /// and only before the confirmation expires).
    pub async fn hand_out_key_proof(
        &self,
        id_hash: &str,
        session_id: i64,
        proof_hash: &str,
        now: i64,
        proof_expires_at: i64,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE key_confirmations SET proof_hash = $1, proof_expires_at = $2 \
                 WHERE id_hash = $3 AND session_id = $4 AND confirmed_at IS NOT NULL \
                 AND proof_hash IS NULL AND expires_at > $5",
            )
            .bind(proof_hash)
            .bind(proof_expires_at)
            .bind(id_hash)
            .bind(session_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Takes the proof hashing to `proof_hash` for session `session_id` at `now`: whether it
    /// was that session's, unused and still counting (a proof counts once).
    pub async fn take_key_proof(
        &self,
        proof_hash: &str,
        session_id: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE key_confirmations SET used_at = $1 WHERE proof_hash = $2 \
                 AND session_id = $3 AND used_at IS NULL AND proof_expires_at > $1",
            )
            .bind(now)
            .bind(proof_hash)
            .bind(session_id)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }
}
