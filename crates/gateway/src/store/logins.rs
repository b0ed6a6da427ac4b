//! Login attempts: one per sign-in round trip through the identity provider.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, Table, bounded, now_ms};

/// A login attempt as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRow {
    /// Random id; also the value of the browser-binding cookie.
    pub id: String,
    /// `web` or `cli`.
    pub channel: String,
    /// Hash of the `state` sent to the provider.
    pub state_hash: Option<String>,
    /// The `nonce` the ID token must carry.
    pub nonce: Option<String>,
    /// The gateway's PKCE verifier for the provider exchange (lives minutes, used once).
    pub pkce_verifier: Option<String>,
    /// Where a web sign-in returns.
    pub return_to: Option<String>,
    /// The CLI's S256 challenge.
    pub cli_challenge: Option<String>,
    /// `pending`, `exchanging`, `mfa` (signed in at the provider, waiting for the second
    /// factor), `complete`, `refused` or `consumed`.
    pub status: String,
    /// The user, once signed in.
    pub user_id: Option<i64>,
    /// Why it was refused.
    pub error: Option<String>,
    /// Expiry (unix ms).
    pub expires_at: i64,
    /// The provider's new name for the user, kept while the attempt waits for the second
    /// factor (stored once the sign-in is recorded).
    pub provider_name: Option<String>,
    /// When the second factor was given (unix ms), for the session the CLI collects.
    pub mfa_at: Option<i64>,
    /// SHA-256 of the secret in the login cookie of the browser on the provider round trip.
    pub browser_hash: Option<String>,
    /// When it started (unix ms).
    pub created_at: i64,
    /// Where it was started from (the address as sign-in limits count it: an IPv6 host by
    /// its /64).
    pub client_ip: Option<String>,
}

/// A sign-in about to start.
#[derive(Debug, Clone, Copy)]
pub struct NewLogin<'a> {
    /// Random id; also the value of the browser-binding cookie.
    pub id: &'a str,
    /// `web` or `cli`.
    pub channel: &'a str,
    /// Where a web sign-in returns.
    pub return_to: Option<&'a str>,
    /// The CLI's S256 challenge.
    pub cli_challenge: Option<&'a str>,
    /// Hash of the id the CLI polls with.
    pub cli_login_hash: Option<&'a str>,
    /// Expiry (unix ms).
    pub expires_at: i64,
    /// The address it counts against ([`gateway_core::failure_budget::address_key`]: IPv6 by
    /// its /64).
    pub client_ip: &'a str,
}

/// Caps on sign-ins in progress (not yet expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// From one client address.
    pub per_address: i64,
    /// From everyone.
    pub total: i64,
}

impl LoginLimits {
    /// Generous for people (an office behind one address signing in together), small
    /// against a flood: at most ~10 000 rows, each well under 1 KiB.
    pub const DEFAULT: LoginLimits = LoginLimits {
        per_address: 50,
        total: 10_000,
    };
}

macro_rules! columns {
    () => {
        "id, channel, state_hash, nonce, pkce_verifier, return_to, cli_challenge, status, user_id, \
         error, expires_at, provider_name, mfa_at, browser_hash, created_at, client_ip"
    };
}

fn from_row(row: &AnyRow) -> Result<LoginRow, StoreError> {
    Ok(LoginRow {
        id: row.try_get("id")?,
        channel: row.try_get("channel")?,
        state_hash: row.try_get("state_hash")?,
        nonce: row.try_get("nonce")?,
        pkce_verifier: row.try_get("pkce_verifier")?,
        return_to: row.try_get("return_to")?,
        cli_challenge: row.try_get("cli_challenge")?,
        status: row.try_get("status")?,
        user_id: row.try_get("user_id")?,
        error: row.try_get("error")?,
        expires_at: row.try_get("expires_at")?,
        provider_name: row.try_get("provider_name")?,
        mfa_at: row.try_get("mfa_at")?,
        browser_hash: row.try_get("browser_hash")?,
        created_at: row.try_get("created_at")?,
        client_ip: row.try_get("client_ip")?,
    })
}

impl Store {
    /// Stores a new attempt unless the caller's address already has `limits.per_address`
    /// attempts in progress (pending, exchanging the code, or finished and waiting for the
    /// CLI to collect its session: not those consumed or refused), or everyone together has
    /// `limits.total`; `false` then. Attempts
    /// expired for an hour are swept at the same time.
    pub async fn create_login(
        &self,
        login: &NewLogin<'_>,
        limits: LoginLimits,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            // One at a time: the counts, the room made and the insert must agree, or a place
            // freed for a newcomer goes to whoever inserts first (a flood's next attempt).
            let mut tx = self.begin_exclusive_write(Table::LoginAttempts).await?;
            // Read once the lock is held: a time from before a wait for it would still count
            // attempts ended meanwhile (at the ender's "now") as in progress.
            let now = now_ms();
            let result = async {
                let conn = &mut **tx.conn()?;
                sqlx::query("DELETE FROM login_attempts WHERE expires_at < $1")
                    .bind(now - 3_600_000)
                    .execute(&mut *conn)
                    .await?;
                if insert_login(conn, login, limits, now).await? {
                    return Ok(true);
                }
                // Full in total: unauthenticated floods from a few hundred addresses would
                // keep everyone else from signing in. Room is made at the expense of the
                // address that holds the most attempts, when it holds at least two more than
                // this one: a flooder's oldest pending attempt ends, a person's never does
                // while floods last.
                if make_room_for(conn, login.client_ip, limits, now).await? {
                    return insert_login(conn, login, limits, now).await;
                }
                Ok(false)
            }
            .await;
            tx.finish(result).await
        })
        .await
    }

    /// Attaches the provider round trip's secrets to a pending attempt.
    pub async fn start_login_round_trip(
        &self,
        id: &str,
        state_hash: &str,
        nonce: &str,
        pkce_verifier: &str,
        browser_hash: &str,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE login_attempts SET state_hash = $1, nonce = $2, pkce_verifier = $3, \
                 browser_hash = $4 WHERE id = $5 AND status = 'pending'",
            )
            .bind(state_hash)
            .bind(nonce)
            .bind(pkce_verifier)
            .bind(browser_hash)
            .bind(id)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Finds an attempt by id.
    pub async fn login_by_id(&self, id: &str) -> Result<Option<LoginRow>, StoreError> {
        bounded(self, async {
            let sql = concat!("SELECT ", columns!(), " FROM login_attempts WHERE id = $1");
            let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    /// Finds an attempt by the hash of its `state`.
    pub async fn login_by_state(&self, state_hash: &str) -> Result<Option<LoginRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM login_attempts WHERE state_hash = $1"
            );
            let row = sqlx::query(sql)
                .bind(state_hash)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    /// Finds a CLI attempt by the hash of its login id.
    pub async fn login_by_cli_hash(&self, hash: &str) -> Result<Option<LoginRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM login_attempts WHERE cli_login_hash = $1"
            );
            let row = sqlx::query(sql)
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(from_row).transpose()
        })
        .await
    }

    /// Moves an attempt whose code was exchanged to `mfa`: `user_id` signed in at the provider
    /// and must now give their second factor (with `provider_name`, the provider's new name
    /// for them, kept until then). Returns whether it moved.
    pub async fn await_second_factor(
        &self,
        id: &str,
        user_id: i64,
        provider_name: Option<&str>,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE login_attempts SET status = 'mfa', user_id = $1, provider_name = $2, \
                 pkce_verifier = NULL WHERE id = $3 AND status = 'exchanging'",
            )
            .bind(user_id)
            .bind(provider_name)
            .bind(id)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Moves an attempt waiting for its second factor on (`mfa` → `exchanging`), noting that
    /// the factor was given at `now`; whether it moved.
    pub async fn second_factor_given(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE login_attempts SET status = 'exchanging', mfa_at = $1 \
                 WHERE id = $2 AND status = 'mfa'",
            )
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Moves an attempt from `from` to `to` status (compare-and-set, so each step happens
    /// once); returns whether it moved.
    pub async fn finish_login(
        &self,
        id: &str,
        from: &str,
        to: &str,
        user_id: Option<i64>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query(
                "UPDATE login_attempts SET status = $1, user_id = COALESCE($2, user_id), \
             error = COALESCE($3, error), pkce_verifier = NULL WHERE id = $4 AND status = $5",
            )
            .bind(to)
            .bind(user_id)
            .bind(error)
            .bind(id)
            .bind(from)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }
}

/// The attempt, if the caps leave room for it.
async fn insert_login(
    conn: &mut sqlx::AnyConnection,
    login: &NewLogin<'_>,
    limits: LoginLimits,
    now: i64,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
            "INSERT INTO login_attempts (id, channel, return_to, cli_challenge, cli_login_hash, \
             status, created_at, expires_at, client_ip) \
             SELECT $1, $2, $3, $4, $5, 'pending', $6, $7, $8 \
             WHERE (SELECT COUNT(*) FROM login_attempts \
                    WHERE client_ip = $8 AND expires_at > $6 AND status IN ('pending', 'exchanging', 'mfa', 'complete')) < $9 \
               AND (SELECT COUNT(*) FROM login_attempts \
                    WHERE expires_at > $6 AND status IN ('pending', 'exchanging', 'mfa', 'complete')) < $10",
        )
        .bind(login.id)
        .bind(login.channel)
        .bind(login.return_to)
        .bind(login.cli_challenge)
        .bind(login.cli_login_hash)
        .bind(now)
        .bind(login.expires_at)
        .bind(login.client_ip)
        .bind(limits.per_address)
        .bind(limits.total)
        .execute(&mut *conn)
        .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Ends the oldest pending attempt of the address holding the most attempts in progress,
/// when it holds at least two more than `client_ip` and `client_ip` is under its own cap;
/// whether one was ended.
async fn make_room_for(
    conn: &mut sqlx::AnyConnection,
    client_ip: &str,
    limits: LoginLimits,
    now: i64,
) -> Result<bool, StoreError> {
    // In progress: as the caps count them.
    macro_rules! live {
        () => {
            "expires_at > $1 AND status IN ('pending', 'exchanging', 'mfa', 'complete')"
        };
    }
    let mine: i64 = sqlx::query_scalar(concat!(
        "SELECT COUNT(*) FROM login_attempts WHERE client_ip = $2 AND ",
        live!()
    ))
    .bind(now)
    .bind(client_ip)
    .fetch_one(&mut *conn)
    .await?;
    if mine >= limits.per_address {
        return Ok(false);
    }
    let busiest: Option<(String, i64)> = sqlx::query_as(concat!(
        "SELECT client_ip, COUNT(*) AS n FROM login_attempts WHERE ",
        live!(),
        " GROUP BY client_ip ORDER BY n DESC LIMIT 1"
    ))
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((busiest, held)) = busiest.filter(|(_, held)| *held >= mine + 2) else {
        return Ok(false);
    };
    let ended = sqlx::query(
        "UPDATE login_attempts SET expires_at = $1 WHERE id = (SELECT id FROM login_attempts \
             WHERE client_ip = $2 AND status = 'pending' AND expires_at > $3 \
             ORDER BY created_at LIMIT 1)",
    )
    .bind(now - 1)
    .bind(&busiest)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if ended.rows_affected() > 0 {
        tracing::debug!(
            held,
            "sign-ins in progress at the cap: ended the oldest of the busiest address"
        );
    }
    Ok(ended.rows_affected() > 0)
}
