//! Sessions table. Only the SHA-256 of a session token is stored.

use super::columns::{Columns, Prefixed};
use super::users::{UserRow, from_row as user_from_row};

use super::roles::RoleGrant;
use super::touches::Touched;
use super::{Generation, Key, Store, StoreError, bounded, now_ms};
use sqlx::Row;

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionRow {
    /// Row id, the handle for listing and revoking.
    pub id: i64,
    /// Hex SHA-256 of the token.
    #[serde(skip)]
    pub token_hash: String,
    /// The user.
    pub user_id: i64,
    /// `web` or `cli`.
    pub channel: String,
    /// The client's User-Agent at sign-in.
    pub user_agent: Option<String>,
    /// The client's address at sign-in.
    pub ip: Option<String>,
    /// Sign-in time (unix ms).
    pub created_at: i64,
    /// Last request (unix ms).
    pub last_seen_at: i64,
    /// Absolute end of the session (unix ms).
    pub expires_at: i64,
    /// Revocation time (unix ms).
    pub revoked_at: Option<i64>,
}

/// A new session's facts.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// Hex SHA-256 of the token.
    pub token_hash: &'a str,
    /// The user.
    pub user_id: i64,
    /// `web` or `cli`.
    pub channel: &'a str,
    /// User-Agent.
    pub user_agent: Option<&'a str>,
    /// Client address.
    pub ip: Option<&'a str>,
    /// Absolute expiry (unix ms).
    pub expires_at: i64,
    /// Sessions of the user last used before this (unix ms) have idled out.
    pub idle_since: i64,
    /// Most sessions the user may have open, this one included: past it, the least recently
    /// used are to be ended ([`CreatedSession::to_end`]).
    pub keep: usize,
}

/// A session just stored, and the user's sessions to end to stay within [`NewSession::keep`].
#[derive(Debug, Clone)]
pub struct CreatedSession {
    /// The new session.
    pub row: SessionRow,
    /// Ids of the sessions beyond the cap, least recently used first: not ended yet, so that
    /// a sign-in the trail cannot record ends nothing ([`Store::end_sessions`]).
    pub to_end: Vec<i64>,
}

macro_rules! columns {
    () => {
        "id, token_hash, user_id, channel, user_agent, ip, created_at, last_seen_at, expires_at, \
         revoked_at"
    };
}

pub(super) fn from_row(row: &(impl Columns + ?Sized)) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        id: row.int("id")?,
        token_hash: row.text("token_hash")?,
        user_id: row.int("user_id")?,
        channel: row.text("channel")?,
        user_agent: row.opt_text("user_agent")?,
        ip: row.opt_text("ip")?,
        created_at: row.int("created_at")?,
        last_seen_at: row.int("last_seen_at")?,
        expires_at: row.int("expires_at")?,
        revoked_at: row.opt_int("revoked_at")?,
    })
}

impl Store {
    /// Stores a new session for a user who is not locked ([`StoreError::UserLocked`]
    /// otherwise): checked in the same transaction, after any lock being written has
    /// committed, so a sign-in finishing while an admin locks the user cannot leave a session
    /// that an unlock would bring back. The user's open sessions beyond `new.keep` (the least
    /// recently used) are named for ending once the sign-in is recorded: signing in again and
    /// again, by hand or by a script, cannot pile up live credentials.
    pub async fn create_session(&self, new: &NewSession<'_>) -> Result<CreatedSession, StoreError> {
        bounded(self, async {
            let now = now_ms();
            let sql = concat!(
                "INSERT INTO sessions (token_hash, user_id, channel, user_agent, ip, created_at, \
             last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $6, $7) RETURNING ",
                columns!()
            );
            let mut tx = self.begin_write().await?;
            let result = async {
                // The user first, then the session: every transaction that writes both takes
                // them in this order (PostgreSQL would otherwise find deadlocks between them).
                // A sign-in is the user being seen: without it a user who signs in daily but
                // makes few requests would show as never seen until the throttled touch caught up.
                let seen =
                    sqlx::query("UPDATE users SET last_seen_at = $1 WHERE id = $2 AND locked = 0")
                        .bind(now)
                        .bind(new.user_id)
                        .execute(&mut **tx.conn()?)
                        .await?;
                if seen.rows_affected() == 0 {
                    return Err(StoreError::UserLocked);
                }
                let row = sqlx::query(sql)
                    .bind(new.token_hash)
                    .bind(new.user_id)
                    .bind(new.channel)
                    .bind(new.user_agent)
                    .bind(new.ip)
                    .bind(now)
                    .bind(new.expires_at)
                    .fetch_one(&mut **tx.conn()?)
                    .await?;
                let row = from_row(&row)?;
                let beyond = Beyond {
                    user_id: new.user_id,
                    keep: new.keep,
                    idle_since: new.idle_since,
                    now,
                };
                let to_end = sessions_beyond(&mut tx, &beyond, false).await?;
                Ok(CreatedSession { row, to_end })
            }
            .await;
            tx.finish(result).await
        })
        .await
    }

    /// The session with this token hash and its user, with the credential generation they were
    /// read at, in one statement (one round trip, one consistent snapshot). `None` when either
    /// is missing.
    pub async fn session_with_user(
        &self,
        token_hash: &str,
    ) -> Result<Option<(SessionRow, UserRow, RoleGrant, Generation)>, StoreError> {
        const SQL: &str = "SELECT s.id AS id, s.token_hash AS token_hash, s.user_id AS user_id, \
             s.channel AS channel, s.user_agent AS user_agent, s.ip AS ip, \
             s.created_at AS created_at, s.last_seen_at AS last_seen_at, \
             s.expires_at AS expires_at, s.revoked_at AS revoked_at, \
             u.id AS u_id, u.email AS u_email, u.name AS u_name, u.role AS u_role, \
             u.locked AS u_locked, u.created_at AS u_created_at, u.last_seen_at AS u_last_seen_at, \
             (SELECT r.permissions FROM roles r WHERE r.name = u.role) AS role_permissions, \
             (SELECT n FROM credential_generation WHERE id = 1) AS generation \
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1";
        self.read_one(SQL, Key::Text(token_hash), |row| {
            let user = user_from_row(&Prefixed(row, "u_"))?;
            let grant = RoleGrant::read(row, &user.role)?;
            Ok((
                from_row(row)?,
                user,
                grant,
                Generation(row.int("generation")?),
            ))
        })
        .await
    }

    /// Finds a session by id.
    pub async fn session_by_id(&self, id: i64) -> Result<Option<SessionRow>, StoreError> {
        bounded(self, async {
            let sql = concat!("SELECT ", columns!(), " FROM sessions WHERE id = $1");
            let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    /// A user's open sessions: neither revoked, past their absolute expiry, nor last used
    /// before `idle_since` (idled out); newest first.
    pub async fn user_sessions(
        &self,
        user_id: i64,
        idle_since: i64,
    ) -> Result<Vec<SessionRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
             AND last_seen_at >= $3 ORDER BY id DESC"
            );
            let rows = sqlx::query(sql)
                .bind(user_id)
                .bind(now_ms())
                .bind(idle_since)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    /// Records activity, coarsely (at most every `min_interval_ms`, one writer per instance)
    /// to keep writes off the hot path. The session and its user are updated in one
    /// transaction.
    pub async fn touch_session(
        &self,
        session: &SessionRow,
        min_interval_ms: i64,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let key = Touched::Session(session.id);
        if now - session.last_seen_at < min_interval_ms
            || !self.touches.claim(key, now, min_interval_ms)
        {
            return Ok(());
        }
        let written = self.write_touch(session, now).await;
        if written.is_err() {
            self.touches.release(key);
        }
        written
    }

    async fn write_touch(&self, session: &SessionRow, now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        // The user, then the session (see [`Store::create_session`]).
        sqlx::query("UPDATE users SET last_seen_at = $1 WHERE id = $2")
            .bind(now)
            .bind(session.user_id)
            .execute(&mut **tx.conn()?)
            .await?;
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
            .bind(now)
            .bind(session.id)
            .execute(&mut **tx.conn()?)
            .await?;
        tx.commit().await
    }

    /// Ends the sessions a recorded sign-in named ([`CreatedSession::to_end`]) and, in the
    /// same transaction, any others of the user's still beyond `keep` (sign-ins at the same
    /// moment each named the same ones); returns those others, for an event of their own.
    pub async fn end_sessions(
        &self,
        user_id: i64,
        named: &[i64],
        keep: usize,
        idle_since: i64,
    ) -> Result<Vec<i64>, StoreError> {
        bounded(self, async {
            let mut tx = self.begin_write().await?;
            let result = async {
                lock_user(&mut tx, user_id).await?;
                let now = now_ms();
                for id in named {
                    sqlx::query(
                        "UPDATE sessions SET revoked_at = $1 \
                         WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
                    )
                    .bind(now)
                    .bind(id)
                    .bind(user_id)
                    .execute(&mut **tx.conn()?)
                    .await?;
                }
                let beyond = Beyond {
                    user_id,
                    keep,
                    idle_since,
                    now,
                };
                sessions_beyond(&mut tx, &beyond, true).await
            }
            .await;
            tx.finish(result).await
        })
        .await
    }

    /// Revokes one session; returns whether it was active.
    pub async fn revoke_session(&self, id: i64) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Revokes every session of a user, and the CLI sign-ins of theirs that are finished but
    /// not yet collected (each would become a session the moment its CLI polls); returns how
    /// many sessions.
    pub async fn revoke_user_sessions(&self, user_id: i64) -> Result<u64, StoreError> {
        bounded(self, async {
            let mut tx = self.begin_write().await?;
            let result = async {
                lock_user(&mut tx, user_id).await?;
                let now = now_ms();
                let done = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(user_id)
                .execute(&mut **tx.conn()?)
                .await?;
                refuse_uncollected_sign_ins(&mut tx, user_id).await?;
                Ok(done.rows_affected())
            }
            .await;
            tx.finish(result).await
        })
        .await
    }

    /// True when the gateway has any user at all (locked ones included): a cheap read before
    /// [`Store::create_first_user`]'s locked write, which only a new gateway needs.
    pub async fn users_exist(&self) -> Result<bool, StoreError> {
        bounded(self, async {
            let row =
                sqlx::query("SELECT COUNT(*) AS n FROM (SELECT 1 FROM users LIMIT 1) AS any_user")
                    .fetch_one(&self.pool)
                    .await?;
            Ok(row.try_get::<i64, _>("n")? > 0)
        })
        .await
    }

    /// Removes a user created a moment ago whose creation could not be audited, so that the
    /// next sign-in creates (and audits) it again; true when removed. A user that anything
    /// refers to already (a session, a token, a sign-in) is kept.
    pub async fn withdraw_new_user(&self, user_id: i64) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "DELETE FROM users WHERE id = $1 \
             AND NOT EXISTS (SELECT 1 FROM sessions WHERE user_id = $1) \
             AND NOT EXISTS (SELECT 1 FROM api_tokens WHERE owner_user_id = $1) \
             AND NOT EXISTS (SELECT 1 FROM login_attempts WHERE user_id = $1)",
            )
            .bind(user_id)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }
}

/// Refuses, inside `tx`, the CLI sign-ins of user `user_id` that the browser finished and the
/// CLI has not collected yet: ending a user's sessions must end those too.
pub(super) async fn refuse_uncollected_sign_ins(
    tx: &mut super::WriteTx,
    user_id: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE login_attempts SET status = 'refused', \
         error = 'your sessions were ended before this sign-in was collected' \
         WHERE user_id = $1 AND status IN ('mfa', 'complete')",
    )
    .bind(user_id)
    .execute(&mut **tx.conn()?)
    .await?;
    Ok(())
}

/// Takes the user's row lock, first, as every transaction writing a user's sessions does (see
/// `create_session`): sign-ins of one user at the same moment then end sessions one after the
/// other, where locking session rows in whatever order they came deadlocked on PostgreSQL.
/// ("Last seen" moves no credential generation.)
async fn lock_user(tx: &mut super::WriteTx, user_id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET last_seen_at = last_seen_at WHERE id = $1")
        .bind(user_id)
        .execute(&mut **tx.conn()?)
        .await?;
    Ok(())
}

/// A user's open sessions beyond the `keep` most recently used.
struct Beyond {
    user_id: i64,
    keep: usize,
    /// Sessions last used before this (unix ms) have idled out: they take no place.
    idle_since: i64,
    now: i64,
}

/// The ids of `beyond`'s sessions, least recently used first; revoked too when `revoke`.
async fn sessions_beyond(
    tx: &mut super::WriteTx,
    beyond: &Beyond,
    revoke: bool,
) -> Result<Vec<i64>, StoreError> {
    // Open = what `admit_session` would accept: idled-out sessions are already dead and take
    // no place. Ties on the last use go by id, so the newest session is always kept.
    macro_rules! beyond {
        ($verb:literal, $returning:literal) => {
            concat!(
                $verb,
                " WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1 \
                 AND last_seen_at >= $3 AND id NOT IN (SELECT id FROM sessions \
                 WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1 \
                 AND last_seen_at >= $3 ORDER BY last_seen_at DESC, id DESC LIMIT $4)",
                $returning
            )
        };
    }
    let sql = if revoke {
        beyond!(
            "UPDATE sessions SET revoked_at = $1",
            " RETURNING id, last_seen_at"
        )
    } else {
        beyond!("SELECT id, last_seen_at FROM sessions", "")
    };
    let keep = i64::try_from(beyond.keep.max(1)).unwrap_or(i64::MAX);
    let rows = sqlx::query(sql)
        .bind(beyond.now)
        .bind(beyond.user_id)
        .bind(beyond.idle_since)
        .bind(keep)
        .fetch_all(&mut **tx.conn()?)
        .await?;
    let mut found = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<i64, _>("last_seen_at")?,
                r.try_get::<i64, _>("id")?,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    found.sort_unstable();
    Ok(found.into_iter().map(|(_, id)| id).collect())
}
