//! Where each person has signed in from (`sign_in_places`), for telling them of a sign-in from
//! somewhere new. A place is a network (see `notify::rules`), first seen in one audit event:
//! noting the same event again (the notifier read it again after a restart, or a second
//! gateway read it too) gives the same answer.

use super::{Store, StoreError, bounded};

impl Store {
    /// Notes that `email` signed in from `place` in audit event `seq` at `at` (unix ms), and
    /// forgets places not seen for `kept_ms`. Whether the place is new to them: first seen in
    /// this very event, after sign-ins from other places (so a person's first sign-in ever is
    /// not news).
    pub async fn note_sign_in_place(
        &self,
        email: &str,
        place: &str,
        seq: i64,
        at: i64,
        kept_ms: i64,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM sign_in_places WHERE last_at < $1")
                .bind(at.saturating_sub(kept_ms))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO sign_in_places (user_email, place, first_seq, last_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (user_email, place) DO UPDATE \
                 SET last_at = CASE WHEN excluded.last_at > sign_in_places.last_at \
                 THEN excluded.last_at ELSE sign_in_places.last_at END",
            )
            .bind(email)
            .bind(place)
            .bind(seq)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            let first: i64 = sqlx::query_scalar(
                "SELECT first_seq FROM sign_in_places WHERE user_email = $1 AND place = $2",
            )
            .bind(email)
            .bind(place)
            .fetch_one(&mut *tx)
            .await?;
            let earlier: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sign_in_places WHERE user_email = $1 AND first_seq < $2",
            )
            .bind(email)
            .bind(seq)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(first == seq && earlier > 0)
        })
        .await
    }
}
