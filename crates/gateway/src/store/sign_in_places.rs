//! Where each person has signed in from (`sign_in_places`), for telling them of a sign-in from
//! somewhere new. A place is a network (see `notify::rules`), first seen in one audit event:
//! noting the same event again (the notifier read it again after a restart, or a second
//! gateway read it too) gives the same answer. The place `''` is the person's first noted
//! sign-in, never forgotten: that someone signed in before does not depend on their places
//! being recent.

use super::{Store, StoreError, bounded};

impl Store {
    /// Notes that `email` signed in from `place` in audit event `seq` at `at` (unix ms), and
    /// forgets places not seen for `kept_ms`. Whether the place is new to them: first seen in
    /// this very event, by someone noted signing in before it (so a person's first sign-in
    /// ever is not news; one after a long absence, when all their places are forgotten, is).
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
            sqlx::query("DELETE FROM sign_in_places WHERE last_at < $1 AND place <> ''")
                .bind(at.saturating_sub(kept_ms))
                .execute(&mut *tx)
                .await?;
            // The first noted sign-in: the earliest event wins, whatever order they come in.
            sqlx::query(
                "INSERT INTO sign_in_places (user_email, place, first_seq, last_at) \
                 VALUES ($1, '', $2, $3) ON CONFLICT (user_email, place) DO UPDATE \
                 SET first_seq = CASE WHEN excluded.first_seq < sign_in_places.first_seq \
                 THEN excluded.first_seq ELSE sign_in_places.first_seq END",
            )
            .bind(email)
            .bind(seq)
            .bind(at)
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
            // When this place was first seen, and when the person first signed in at all.
            let (first, first_sign_in): (i64, i64) = sqlx::query_as(
                "SELECT p.first_seq, m.first_seq FROM sign_in_places p, sign_in_places m \
                 WHERE p.user_email = $1 AND p.place = $2 AND m.user_email = $1 AND m.place = ''",
            )
            .bind(email)
            .bind(place)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(first == seq && first_sign_in < seq)
        })
        .await
    }
}
