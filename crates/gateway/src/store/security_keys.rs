//! Security keys and passkeys (WebAuthn credentials) beside a person's authenticator app, and
//! the ceremonies under way that add or use them. A credential holds a public key only; a
//! ceremony holds the challenge a page handed out, taken once by its answer.

use super::columns::Columns;
use super::{Store, StoreError, bounded};

/// Most security keys one person may have: enough for a key on the keyring, one in the drawer
/// and every laptop's built-in one, few enough that the list stays readable.
pub const MAX_SECURITY_KEYS: i64 = 10;

/// Most challenges one person may have outstanding (pages open in several tabs, say): the
/// oldest go first.
pub const MAX_CEREMONIES_PER_USER: i64 = 20;

/// A security key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityKeyRow {
    /// Row id, the handle for removing it.
    pub id: i64,
    /// Whose key it is.
    pub user_id: i64,
    /// The name its person gave it.
    pub name: String,
    /// The credential's id (base64url), as authenticators name it.
    pub credential_id: String,
    /// The credential as the WebAuthn library keeps it (JSON: public key, counter).
    pub passkey: String,
    /// When it was added (unix ms).
    pub created_at: i64,
    /// When it last confirmed its person (unix ms).
    pub last_used_at: Option<i64>,
}

/// What is needed to add a security key.
#[derive(Debug, Clone)]
pub struct NewSecurityKey<'a> {
    /// Whose.
    pub user_id: i64,
    /// Its name.
    pub name: &'a str,
    /// Its credential id (base64url).
    pub credential_id: &'a str,
    /// The credential (JSON).
    pub passkey: &'a str,
    /// Now (unix ms).
    pub now: i64,
}

/// Why a key was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyNotAdded {
    /// The person has no confirmed authenticator app (removed meanwhile): keys go beside one.
    NoApp,
    /// This credential is registered already (to anyone).
    Registered,
    /// They have [`MAX_SECURITY_KEYS`] already.
    TooMany,
}

macro_rules! columns {
    () => {
        "id, user_id, name, credential_id, passkey, created_at, last_used_at"
    };
}

fn from_row(row: &(impl Columns + ?Sized)) -> Result<SecurityKeyRow, StoreError> {
    Ok(SecurityKeyRow {
        id: row.int("id")?,
        user_id: row.int("user_id")?,
        name: row.text("name")?,
        credential_id: row.text("credential_id")?,
        passkey: row.text("passkey")?,
        created_at: row.int("created_at")?,
        last_used_at: row.opt_int("last_used_at")?,
    })
}

impl Store {
    /// User `user_id`'s security keys, oldest first.
    pub async fn security_keys_of(&self, user_id: i64) -> Result<Vec<SecurityKeyRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM security_keys WHERE user_id = $1 ORDER BY id"
            );
            let rows = sqlx::query(sql).bind(user_id).fetch_all(&self.pool).await?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    /// Adds a security key beside its person's confirmed authenticator app, in one statement
    /// (so an app removed meanwhile takes no key with it that was added after).
    pub async fn add_security_key(
        &self,
        new: &NewSecurityKey<'_>,
    ) -> Result<Result<SecurityKeyRow, KeyNotAdded>, StoreError> {
        let sql = concat!(
            "INSERT INTO security_keys (user_id, name, credential_id, passkey, created_at) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM mfa_totp \
             WHERE user_id = $1 AND confirmed_at IS NOT NULL) \
             ON CONFLICT (credential_id) DO NOTHING RETURNING ",
            columns!()
        );
        let insert = sqlx::query(sql)
            .bind(new.user_id)
            .bind(new.name)
            .bind(new.credential_id)
            .bind(new.passkey)
            .bind(new.now);
        let registered = "SELECT id FROM security_keys WHERE credential_id = $1";
        let count = "SELECT COUNT(*) FROM security_keys WHERE user_id = $1";
        self.add_beside_app(
            insert,
            (registered, new.credential_id),
            (count, new.user_id),
            from_row,
        )
        .await
    }

    /// Runs `insert` (of a key beside its person's confirmed app: it inserts nothing when the
    /// app is not there, or the key is registered already), then tells why nothing was added
    /// (`registered`: the query finding the key by its identity, and that identity), or takes
    /// it back when the person now has more than [`MAX_SECURITY_KEYS`] (`count`: the query
    /// counting theirs, and the person) — all in one transaction, the insert first so that it
    /// holds SQLite's write lock.
    async fn add_beside_app<T>(
        &self,
        insert: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
        registered: (&'static str, &str),
        count: (&'static str, i64),
        from_row: impl Fn(&sqlx::any::AnyRow) -> Result<T, StoreError>,
    ) -> Result<Result<T, KeyNotAdded>, StoreError> {
        bounded(self, async {
            let mut tx = self.pool.begin().await?;
            let Some(row) = insert.fetch_optional(&mut *tx).await? else {
                let found: Option<i64> = sqlx::query_scalar(registered.0)
                    .bind(registered.1)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.rollback().await?;
                return Ok(Err(match found {
                    Some(_) => KeyNotAdded::Registered,
                    None => KeyNotAdded::NoApp,
                }));
            };
            let held: i64 = sqlx::query_scalar(count.0)
                .bind(count.1)
                .fetch_one(&mut *tx)
                .await?;
            if held > MAX_SECURITY_KEYS {
                tx.rollback().await?;
                return Ok(Err(KeyNotAdded::TooMany));
            }
            let added = from_row(&row)?;
            tx.commit().await?;
            Ok(Ok(added))
        })
        .await
    }

    /// Removes user `user_id`'s security key `id`; whether it was theirs and there.
    pub async fn remove_security_key(&self, user_id: i64, id: i64) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query("DELETE FROM security_keys WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Records that key `id` confirmed its person at `at`, with its credential as it now
    /// stands (`passkey`: the authenticator's counter moved on).
    pub async fn security_key_used(
        &self,
        id: i64,
        passkey: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        bounded(self, async {
            sqlx::query("UPDATE security_keys SET passkey = $1, last_used_at = $2 WHERE id = $3")
                .bind(passkey)
                .bind(at)
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// Keeps a ceremony's `state` under `id_hash` (the SHA-256 of the id handed to the
    /// browser) for user `user_id` and `purpose` until `expires_at`, sweeping stale ones.
    pub async fn begin_ceremony(
        &self,
        id_hash: &str,
        user_id: i64,
        purpose: &str,
        state: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        bounded(self, async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("DELETE FROM webauthn_ceremonies WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO webauthn_ceremonies (id_hash, user_id, purpose, state, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id_hash)
            .bind(user_id)
            .bind(purpose)
            .bind(state)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            // A page reloaded over and over keeps only its person's latest challenges: the
            // table cannot be grown without bound by one signed-in browser.
            sqlx::query(
                "DELETE FROM webauthn_ceremonies WHERE user_id = $1 AND id_hash NOT IN \
                 (SELECT id_hash FROM webauthn_ceremonies WHERE user_id = $1 \
                 ORDER BY expires_at DESC, id_hash LIMIT $2)",
            )
            .bind(user_id)
            .bind(MAX_CEREMONIES_PER_USER)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Takes (deletes) the ceremony `id_hash` of user `user_id` for `purpose`: its state, when
    /// it is there and not stale. A ceremony is answered once, right or wrong.
    pub async fn take_ceremony(
        &self,
        id_hash: &str,
        user_id: i64,
        purpose: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        bounded(self, async {
            let row = sqlx::query(
                "DELETE FROM webauthn_ceremonies WHERE id_hash = $1 AND user_id = $2 \
                 AND purpose = $3 RETURNING state, expires_at",
            )
            .bind(id_hash)
            .bind(user_id)
            .bind(purpose)
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let expires_at = row.int("expires_at")?;
            (expires_at > now).then(|| row.text("state")).transpose()
        })
        .await
    }
}

/// A YubiKey (Yubico OTP) as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YubikeyRow {
    /// Row id, the handle for removing it.
    pub id: i64,
    /// Whose key it is.
    pub user_id: i64,
    /// The name its person gave it.
    pub name: String,
    /// The key's public id: the modhex characters before each OTP's last 32.
    pub public_id: String,
    /// When it was added (unix ms).
    pub created_at: i64,
    /// When it last confirmed its person (unix ms).
    pub last_used_at: Option<i64>,
}

macro_rules! yubikey_columns {
    () => {
        "id, user_id, name, public_id, created_at, last_used_at"
    };
}

fn yubikey_from_row(row: &(impl Columns + ?Sized)) -> Result<YubikeyRow, StoreError> {
    Ok(YubikeyRow {
        id: row.int("id")?,
        user_id: row.int("user_id")?,
        name: row.text("name")?,
        public_id: row.text("public_id")?,
        created_at: row.int("created_at")?,
        last_used_at: row.opt_int("last_used_at")?,
    })
}

impl Store {
    /// User `user_id`'s YubiKeys, oldest first.
    pub async fn yubikeys_of(&self, user_id: i64) -> Result<Vec<YubikeyRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                yubikey_columns!(),
                " FROM yubikeys WHERE user_id = $1 ORDER BY id"
            );
            let rows = sqlx::query(sql).bind(user_id).fetch_all(&self.pool).await?;
            rows.iter().map(yubikey_from_row).collect()
        })
        .await
    }

    /// Adds the YubiKey with `public_id` as `name` beside user `user_id`'s confirmed
    /// authenticator app, as [`Store::add_security_key`] adds a security key.
    pub async fn add_yubikey(
        &self,
        user_id: i64,
        name: &str,
        public_id: &str,
        now: i64,
    ) -> Result<Result<YubikeyRow, KeyNotAdded>, StoreError> {
        let sql = concat!(
            "INSERT INTO yubikeys (user_id, name, public_id, created_at) \
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM mfa_totp \
             WHERE user_id = $1 AND confirmed_at IS NOT NULL) \
             ON CONFLICT (public_id) DO NOTHING RETURNING ",
            yubikey_columns!()
        );
        let insert = sqlx::query(sql)
            .bind(user_id)
            .bind(name)
            .bind(public_id)
            .bind(now);
        let registered = "SELECT id FROM yubikeys WHERE public_id = $1";
        let count = "SELECT COUNT(*) FROM yubikeys WHERE user_id = $1";
        self.add_beside_app(insert, (registered, public_id), (count, user_id), |row| {
            yubikey_from_row(row)
        })
        .await
    }

    /// Removes user `user_id`'s YubiKey `id`; whether it was theirs and there.
    pub async fn remove_yubikey(&self, user_id: i64, id: i64) -> Result<bool, StoreError> {
        bounded(self, async {
            let done = sqlx::query("DELETE FROM yubikeys WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user_id)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    /// Records that YubiKey `id` confirmed its person at `at`.
    pub async fn yubikey_used(&self, id: i64, at: i64) -> Result<(), StoreError> {
        bounded(self, async {
            sqlx::query("UPDATE yubikeys SET last_used_at = $1 WHERE id = $2")
                .bind(at)
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }
}
