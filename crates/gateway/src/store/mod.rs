//! Persistence: one store API over SQLite (embedded default) and PostgreSQL.
//!
//! Both backends go through sqlx's `Any` driver with the same `$1`-style SQL; the few
//! statements that differ (how a write transaction starts, row locks) switch on [`Backend`].
//! Migrations live in `migrations/sqlite` and `migrations/postgres` and are compiled in.

mod app_rules;
mod approvals;
mod audit;
mod audit_sqlite;
mod checkpoints;
mod columns;
mod key_confirmations;
mod key_rotation;
mod logins;
mod mfa;
mod notifications;
mod outage;
mod pg_params;
mod roles;
mod security_keys;
mod sessions;
mod settings;
mod sign_in_places;
mod sqlite_reads;
mod tokens;
mod touches;
mod trusted_devices;
mod users;
mod written;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Executor};

use columns::Columns;
use gateway_core::config::SqliteSync;

pub use app_rules::AppRulesRow;
pub use approvals::{APPROVALS_LISTED, ApprovalRow, Decision as ApprovalDecision, NewApproval};
pub use audit::{Appended, AuditRow, ChainHead, ChainLink, LinkFn};
pub use key_confirmations::{
    KeyConfirmationRow, MAX_KEY_CONFIRMATIONS_PER_SESSION, NewKeyConfirmation,
};
pub use key_rotation::KeyRotation;
pub use logins::{LoginLimits, LoginRow, NewLogin};
pub use mfa::{ListedUser, TotpFailure, TotpRow};
pub use notifications::{NOTIFY_CURSOR_SETTING, NewNotification, NotificationRow};
pub use roles::{NewRole, RoleGrant, RoleRow};
pub use security_keys::{
    KeyNotAdded, MAX_CEREMONIES_PER_USER, MAX_SECURITY_KEYS, NewSecurityKey, SecurityKeyRow,
    YubikeyRow,
};
pub use sessions::{CreatedSession, NewSession, SessionRow};
pub use tokens::{NewToken, TokenRow};
pub use trusted_devices::{NewTrustedDevice, TrustedDeviceRow};
pub use users::{LastAdmin, UserRow};

/// Settings of every SQLite connection that writes (the pool's and the audit writer's).
fn sqlite_pragmas(sync: SqliteSync) -> &'static str {
    // Whole literals: sqlx wants a statement that outlives the connection's borrow.
    macro_rules! pragmas {
        ($sync:literal) => {
            concat!(
                // busy_timeout first: the statements after it wait out another writer's
                // lock instead of failing at once.
                "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = ",
                $sync,
                "; PRAGMA foreign_keys = ON; ",
                "PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;"
            )
        };
    }
    match sync {
        SqliteSync::Normal => pragmas!("NORMAL"),
        SqliteSync::Full => pragmas!("FULL"),
    }
}

/// Longest a request waits on the store for one step (authenticating it, recording its audit
/// event): a database that stops answering — a hung connection, a stopped server, a failover
/// that drops packets — gets the caller a 503 in seconds instead of holding every request
/// until TCP gives up.
pub const STORE_DEADLINE: Duration = Duration::from_secs(10);

/// How often SQLite's write-ahead log is checkpointed (see [`Store::spawn_checkpointer`]).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// The credential generation: a counter in the database that triggers move with every change
/// to a token, session or user that can alter an authentication's answer (migration
/// `0006_credential_generation.sql`). Credentials read at one generation are still what the
/// database says while the counter has not moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Generation(pub i64);

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file in WAL mode.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or refused a statement. sqlx's own words say which
    /// ("error communicating with database: …", "error returned from database: …").
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row the caller asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A unique value is taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// The row is still named by others (a custom role users hold); the message says by whom.
    #[error("{0}")]
    InUse(String),
    /// A name matches more than one row; the message says how to pick one.
    #[error("{0}")]
    Ambiguous(String),
    /// The audit writer's SQLite connection failed.
    #[error("database error: {0}")]
    Sqlite(String),
    /// The database did not answer in time (a hung connection, a stopped server).
    #[error("database did not answer within {0} s")]
    Timeout(u64),
    /// PostgreSQL could not be reached a moment ago and still cannot: refused at once, not
    /// after the pool's wait (see `outage`).
    #[error("the database cannot be reached: {0}")]
    Unreachable(String),
    /// The user is locked (a session cannot be created for them).
    #[error("the user is locked")]
    UserLocked,
    /// The change would leave no unlocked admin (the e-mail is the admin's).
    #[error("{0} is the only unlocked admin: make another user admin first")]
    LastAdmin(String),
    /// Stored data is not what this version expects.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database was migrated by a newer version of the gateway.
    #[error(
        "the database was migrated by a newer rack-gateway (it has migration {0}, which this \
         version does not know): run that version or a newer one, or restore a backup taken \
         before the upgrade"
    )]
    SchemaNewer(i64),
    /// A command that only reads was pointed at a SQLite file that does not exist: it creates
    /// none (a mistyped path must not look like an empty gateway).
    #[error(
        "there is no database file at {0}: this command only reads and creates none (check \
         DATABASE_URL; `rack-gateway-server migrate` sets up a new database)"
    )]
    NoDatabaseFile(String),
    /// The directory a new SQLite file was to be made in does not exist.
    #[error(
        "the directory {0} does not exist, so the database file cannot be made there (check \
         DATABASE_URL, or create the directory)"
    )]
    NoDatabaseDir(String),
    /// `DATABASE_URL` names a directory, not a SQLite file.
    #[error("{0} is a directory: DATABASE_URL names the database file (sqlite://DIR/gateway.db)")]
    DatabaseIsDir(String),
    /// SQLite was not allowed to create or open the file (or the files it keeps beside it).
    #[error(
        "cannot create or write the database file {0}: it, or its directory, is read-only for \
         this user (SQLite keeps two more files beside it)"
    )]
    DatabaseNotWritable(String),
    /// The database takes no writes (a PostgreSQL standby, or a server set read-only).
    #[error("the database takes no writes (a standby, or a server set read-only)")]
    ReadOnly,
    /// The audit chain's head is behind an event this process knew in the chain (one it
    /// appended or read as the head): the newest events were removed from the database.
    #[error(
        "the audit chain's head is at event {found}, behind event {written} that this gateway \
         saw in the chain: events were removed from the database; nothing is forwarded until \
         the gateway is restarted, and `audit verify` with anchors reports the removal"
    )]
    ChainMovedBack {
        /// The newest event this process knew.
        written: i64,
        /// Where the head stands now.
        found: i64,
    },
    /// An event this process knew in the chain is gone or holds another hash, though the head
    /// is at or past it: the newest events were removed or replaced in the database.
    #[error(
        "the audit chain no longer holds event {known} as this gateway saw it (the head is at \
         event {found}): events were removed or replaced in the database; nothing is \
         forwarded until the gateway is restarted, and `audit verify` with anchors reports it"
    )]
    ChainReplaced {
        /// The event this process knew.
        known: i64,
        /// Where the head stands now.
        found: i64,
    },
    /// The chain's key was rotated (`audit rotate-key`) after this process started: events it
    /// linked with its key would break the chain.
    #[error(
        "the audit chain's key was rotated (`rack-gateway-server audit rotate-key`) after this \
         gateway started: nothing is forwarded until it is restarted with the new \
         AUDIT_HMAC_KEY"
    )]
    KeyRotated,
    /// `audit rotate-key` found the chain not as it expected; the message says what.
    #[error("{0}")]
    Rotation(String),
}

impl StoreError {
    /// True when the store refuses this process's audit appends until it is restarted (the
    /// chain changed under it, or its key was rotated away): retrying cannot help.
    pub fn refuses_until_restart(&self) -> bool {
        matches!(
            self,
            StoreError::ChainMovedBack { .. }
                | StoreError::ChainReplaced { .. }
                | StoreError::KeyRotated
        )
    }

    /// True when the error means "a unique constraint was hit".
    fn is_unique_violation(err: &sqlx::Error) -> bool {
        match err {
            sqlx::Error::Database(db) => {
                db.is_unique_violation()
                    || db.message().contains("UNIQUE constraint failed")
                    || db.message().contains("duplicate key")
            }
            _ => false,
        }
    }
}

/// The gateway's store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite files only: the audit writer's own connection (see `audit_sqlite`).
    sqlite_audit: Option<std::sync::Arc<audit_sqlite::SqliteAudit>>,
    /// SQLite files only: authentication's point reads, inline (see `sqlite_reads`).
    sqlite_reads: Option<std::sync::Arc<sqlite_reads::SqliteReads>>,
    /// The newest link this process appended (see `written`).
    audit_written: std::sync::Arc<written::Written>,
    /// PostgreSQL: the chain head as this instance last wrote it (see `append_audit`).
    audit_head: std::sync::Arc<std::sync::Mutex<Option<ChainHead>>>,
    /// PostgreSQL: the connection the audit writer's one-statement appends keep using. sqlx
    /// pings a connection (a round trip) every time it goes back to the pool; kept out of the
    /// pool, a batch costs one round trip instead of two.
    audit_conn: std::sync::Arc<tokio::sync::Mutex<Option<PoolConnection<Any>>>>,
    /// Recent "last used" writes from this instance (see `touches`).
    touches: std::sync::Arc<touches::Touches>,
    /// Until when (unix ms) pooled connections are pinged before use (see
    /// [`Store::suspect_connections`]).
    suspect_until: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// PostgreSQL: refuses calls at once while the server cannot be reached (see `outage`).
    outage: Option<std::sync::Arc<outage::Outage>>,
}

/// The one parameter of a one-row lookup ([`Store::read_one`]).
#[derive(Debug, Clone, Copy)]
enum Key<'a> {
    Text(&'a str),
    Int(i64),
}

/// Current time in unix milliseconds.
pub fn now_ms() -> i64 {
    unix_ms(std::time::SystemTime::now())
}

/// `t` in milliseconds since the Unix epoch, as the store keeps times (0 before it).
pub fn unix_ms(t: std::time::SystemTime) -> i64 {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// What a command may do to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read and write; a SQLite file is created when missing.
    Create,
    /// Read only, from a database that exists.
    ReadOnly,
}

/// The statements every new connection runs.
fn connection_setup(backend: Backend, access: Access, sync: SqliteSync) -> &'static str {
    match (backend, access) {
        // WAL lets readers run beside the single writer; NORMAL sync in WAL mode survives a
        // process crash (power loss may drop the last commits), FULL a machine's crash too.
        // With NORMAL, checkpoints (the fsyncs) run in the background, not inside a commit
        // that a request is waiting on: see `spawn_checkpointer`. Whichever connection
        // restarts the log cuts it back to 64 MiB.
        (Backend::Sqlite, Access::Create) => sqlite_pragmas(sync),
        // Nothing that writes (the journal mode is the file's own already). The read shows
        // at once whether the log's index can be opened beside the file.
        (Backend::Sqlite, Access::ReadOnly) => {
            "PRAGMA query_only = ON; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
             SELECT count(*) FROM sqlite_master;"
        }
        // Never wait long behind another holder of a row lock (the audit chain head above
        // all): fail, and let the request be refused with 503.
        (Backend::Postgres, Access::Create) => "SET lock_timeout = '3s'",
        (Backend::Postgres, Access::ReadOnly) => {
            "SET lock_timeout = '3s'; SET default_transaction_read_only = on"
        }
    }
}

/// What the file system shows at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    File,
    Dir,
    Missing,
    /// It could not be looked at (no permission to search a directory on the way).
    Unknown,
}

fn found(path: &std::path::Path) -> Found {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Found::Dir,
        Ok(_) => Found::File,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Found::Missing,
        Err(_) => Found::Unknown,
    }
}

/// Why SQLite could not open the file a `sqlite://PATH` URL names ("unable to open database
/// file" is all it says), as far as the file system shows; `None` when it shows nothing wrong.
fn sqlite_open_problem(url: &str, access: Access) -> Option<StoreError> {
    let path = sqlite_file(url)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let shown = |p: &std::path::Path| p.display().to_string();
    match (access, found(path), found(dir)) {
        (_, Found::Dir, _) => Some(StoreError::DatabaseIsDir(shown(path))),
        (Access::ReadOnly, Found::Missing, _) => Some(StoreError::NoDatabaseFile(shown(path))),
        (Access::Create, Found::Missing, Found::Missing) => {
            Some(StoreError::NoDatabaseDir(shown(dir)))
        }
        // There, and not opened (or not there, in a directory that is): SQLite was not allowed.
        (Access::Create, Found::File | Found::Missing, Found::Dir) => {
            Some(StoreError::DatabaseNotWritable(shown(path)))
        }
        _ => None,
    }
}

/// The file a `sqlite://PATH` URL names.
fn sqlite_file(url: &str) -> Option<&std::path::Path> {
    Some(std::path::Path::new(
        url.strip_prefix("sqlite://")?.split('?').next()?,
    ))
}

/// What stops a SQLite store from opening, seen before SQLite tries: a directory where the
/// file should be (SQLite says "disk I/O error" or "unable to open database file"), or, for
/// a store that writes, a file there (the database, or the log files beside it) that this
/// user may not write. SQLite opens such a file read-only without a word and fails only at
/// the first write, in its own words ("attempt to write a readonly database").
fn sqlite_refused_before_open(url: &str, access: Access) -> Option<StoreError> {
    if let Some(problem @ StoreError::DatabaseIsDir(_)) = sqlite_open_problem(url, access) {
        return Some(problem);
    }
    if access == Access::ReadOnly {
        return None;
    }
    let path = sqlite_file(url)?;
    ["", "-wal", "-shm"]
        .into_iter()
        .map(|suffix| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            std::path::PathBuf::from(name)
        })
        // Only regular files: opening a FIFO for writing would wait for a reader. Opening
        // for writing changes nothing (no truncation).
        .find(|file| {
            std::fs::metadata(file).is_ok_and(|m| m.is_file())
                && std::fs::OpenOptions::new().write(true).open(file).is_err()
        })
        .map(|file| StoreError::DatabaseNotWritable(file.display().to_string()))
}

/// Creates a new SQLite database file readable and writable by its owner only (SQLite would
/// make it with the umask's mode, often readable by everyone): it holds the audit trail, token
/// hashes and, without `AUDIT_HMAC_KEY`, the audit chain's key. SQLite gives the `-wal` and
/// `-shm` files beside it the same mode. Anything in the way (no directory, no right to write
/// there) is left for SQLite to fail on, with the message it gets.
fn create_owner_only(url: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(path) = url.strip_prefix("sqlite:") else {
        return;
    };
    if url.contains(":memory:") || url.contains("mode=memory") {
        return;
    }
    let Ok(options) = sqlx::sqlite::SqliteConnectOptions::from_str(url) else {
        return;
    };
    let file = options.get_filename();
    if path.is_empty() || file.as_os_str().is_empty() || file.exists() {
        return;
    }
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file);
}

/// Whether SQLite could not open a file: not there or not allowed (`SQLITE_CANTOPEN`), or,
/// opening it read-only, unable to make the log's files beside it
/// (`SQLITE_READONLY_DIRECTORY`, `SQLITE_READONLY_CANTINIT`).
fn sqlite_cannot_open(e: &dyn sqlx::error::DatabaseError) -> bool {
    matches!(e.code().as_deref(), Some("14" | "1288" | "1544"))
}

/// Sets up one connection of our own, as the pool's would be, and closes it. The pool retries
/// a connection that fails until its acquire timeout and then says only that it timed out;
/// this names at once what is wrong (a file that is not a database, a server refusing
/// connections, a wrong password).
async fn first_connection(
    options: &AnyConnectOptions,
    setup: &'static str,
) -> Result<(), StoreError> {
    use sqlx::{ConnectOptions, Connection};
    let attempt = async {
        let mut conn = options.connect().await?;
        conn.execute(setup).await?;
        conn.close().await
    };
    match tokio::time::timeout(FIRST_CONNECTION_TIMEOUT, attempt).await {
        Ok(done) => done.map_err(StoreError::from),
        Err(_) => Err(StoreError::Timeout(FIRST_CONNECTION_TIMEOUT.as_secs())),
    }
}

/// How long the first connection may take (a server that accepts and never answers).
const FIRST_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`). A SQLite file is created when
    /// missing; PostgreSQL's database must exist.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_synced(url, SqliteSync::default()).await
    }

    /// [`Store::connect`], with SQLite commits waiting for the disk as `sync` says
    /// (`SQLITE_SYNCHRONOUS`).
    pub async fn connect_synced(url: &str, sync: SqliteSync) -> Result<Store, StoreError> {
        create_owner_only(url);
        match Store::connect_with(url, Access::Create, sync).await {
            // SQLite says only "unable to open database file", whatever stood in the way. A
            // missing directory is not made (a mistyped path would then hold a new, empty
            // gateway).
            Err(StoreError::Database(sqlx::Error::Database(e)))
                if url.starts_with("sqlite:") && sqlite_cannot_open(&*e) =>
            {
                Err(sqlite_open_problem(url, Access::Create)
                    .unwrap_or(StoreError::Database(sqlx::Error::Database(e))))
            }
            other => other,
        }
    }

    /// Opens a database that must exist already, for commands that only read (`audit
    /// verify`, `users list`, `tokens list`): a SQLite file is not created (a mistyped path
    /// must not turn into an empty database that "verifies"), and nothing is written, so
    /// they work on an auditor's read-only copy or with a PostgreSQL role that may only read.
    /// SQLite opens the file read-only; a copy in a directory nobody may write to (where
    /// SQLite cannot make the log's index beside it) is opened as immutable — nothing can be
    /// writing to it there. PostgreSQL sessions are read-only.
    pub async fn open_read_only(url: &str) -> Result<Store, StoreError> {
        let sync = SqliteSync::default();
        match Store::connect_with(url, Access::ReadOnly, sync).await {
            Err(StoreError::Database(sqlx::Error::Database(e)))
                if url.starts_with("sqlite:") && sqlite_cannot_open(&*e) =>
            {
                // SQLite says only "unable to open database file" for a path that is not there.
                if let Some(problem @ StoreError::NoDatabaseFile(_)) =
                    sqlite_open_problem(url, Access::ReadOnly)
                {
                    return Err(problem);
                }
                if url.contains('?') {
                    return Err(StoreError::Database(sqlx::Error::Database(e)));
                }
                Store::connect_with(&format!("{url}?immutable=1"), Access::ReadOnly, sync).await
            }
            other => other,
        }
    }

    async fn connect_with(
        url: &str,
        access: Access,
        sync: SqliteSync,
    ) -> Result<Store, StoreError> {
        if let Some(problem) = sqlite_refused_before_open(url, access) {
            return Err(problem);
        }
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                let mode = match access {
                    Access::Create => "rwc",
                    Access::ReadOnly => "ro",
                };
                format!("{url}{sep}mode={mode}")
            }
            Backend::Sqlite => url.to_string(),
            Backend::Postgres => {
                let (url, unknown) = pg_params::without_unknown(url);
                if !unknown.is_empty() {
                    tracing::warn!(
                        parameters = %unknown.join(", "),
                        "DATABASE_URL: connection parameters the PostgreSQL driver does not know \
                         are ignored"
                    );
                }
                url
            }
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool_options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(3))
            // A ping before every checkout is a full round trip to the database (for SQLite, a
            // hop to its worker thread and back) on every query. A broken connection shows
            // up as the query's own error instead, which callers already handle.
            .test_before_acquire(false)
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            });
        let setup = connection_setup(backend, access, sync);
        let suspect_until = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let suspect = suspect_until.clone();
        let pool_options = pool_options.after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute(setup).await?;
                Ok(())
            })
        });
        // Pinging every connection before use is a round trip per query; only while
        // connections are suspect (the server restarted under them) is each pinged, and a
        // dead one dropped for a fresh one, rather than failing the query it was for. (A
        // SQLite file does not close its connections.)
        let pool_options = match backend {
            Backend::Postgres => pool_options.before_acquire(move |conn, _meta| {
                let suspect = suspect.load(std::sync::atomic::Ordering::Relaxed) > now_ms();
                Box::pin(async move {
                    if suspect {
                        use sqlx::Connection;
                        return Ok(conn.ping().await.is_ok());
                    }
                    Ok(true)
                })
            }),
            Backend::Sqlite => pool_options,
        };
        first_connection(&options, setup).await?;
        let pool = match pool_options.connect_with(options.clone()).await {
            Ok(pool) => pool,
            // The first connection worked a moment ago: say why this one did not, if it can.
            Err(sqlx::Error::PoolTimedOut) => {
                first_connection(&options, setup).await?;
                return Err(sqlx::Error::PoolTimedOut.into());
            }
            Err(e) => return Err(e.into()),
        };
        // A file-backed SQLite store also gets connections of its own, outside sqlx, for the
        // two hot paths: appending audit events and authentication's reads.
        let audit_written = std::sync::Arc::new(written::Written::default());
        let sqlite_file = match backend {
            Backend::Sqlite if !url.contains(":memory:") && !url.contains("mode=memory") => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)?;
                Some(options.get_filename().to_path_buf())
            }
            _ => None,
        };
        Ok(Store {
            pool,
            backend,
            sqlite_audit: sqlite_file
                .as_deref()
                .map(|path| audit_sqlite::SqliteAudit::new(path, sync, audit_written.clone())),
            sqlite_reads: sqlite_file.as_deref().map(sqlite_reads::SqliteReads::new),
            audit_written,
            audit_head: Default::default(),
            audit_conn: Default::default(),
            touches: Default::default(),
            suspect_until,
            outage: (backend == Backend::Postgres)
                .then(|| std::sync::Arc::new(outage::Outage::new(options))),
        })
    }

    /// How far this machine's clock is from the PostgreSQL server's, in milliseconds (positive:
    /// ahead); `None` on SQLite, where there is no other clock. Several instances judge
    /// expiries and idle time by their own clocks against times stored by each other.
    pub async fn clock_offset_ms(&self) -> Result<Option<i64>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        bounded(self, async {
            let before = now_ms();
            let server: i64 =
                sqlx::query_scalar("SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint")
                    .fetch_one(&self.pool)
                    .await?;
            let after = now_ms();
            // The server read its clock somewhere within the round trip: its middle.
            Ok(Some(before + (after - before) / 2 - server))
        })
        .await
    }

    /// Marks the pooled connections suspect for the next 10 s, after a query failed in a way
    /// that may mean they all died (a database restart or failover closes every one of them,
    /// each failing its next query): meanwhile each is pinged before use, and a dead one is
    /// replaced instead of failing the query it was for.
    pub fn suspect_connections(&self) {
        self.suspect_until.store(
            now_ms().saturating_add(10_000),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Applies pending migrations for this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut pending = usize::MAX;
        loop {
            let failed = match self.migrate_once().await {
                Ok(()) => return Ok(()),
                Err(e @ StoreError::SchemaNewer(_)) => return Err(e),
                Err(e) if self.backend == Backend::Sqlite => e,
                Err(e) => return Err(e),
            };
            // SQLite's migrations take no lock of their own: two processes migrating one new
            // file at once (admin commands beside each other or beside `serve`) fail on the
            // tables each other made. The other's work counts: try again while it advances.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.migrations_pending().await.unwrap_or(usize::MAX);
            if now == 0 {
                return Ok(());
            }
            if now >= pending {
                return Err(failed);
            }
            pending = now;
        }
    }

    async fn migrate_once(&self) -> Result<(), StoreError> {
        let ran = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.pool).await,
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await
            }
        };
        match ran {
            Ok(()) => Ok(()),
            // Not run on a schema it does not know: its writes could break a newer one.
            Err(sqlx::migrate::MigrateError::VersionMissing(version)) => {
                Err(StoreError::SchemaNewer(version))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// How many of this version's migrations the database has not applied (without applying
    /// them); all of them when it holds no gateway schema at all.
    pub async fn migrations_pending(&self) -> Result<usize, StoreError> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        let table_sql = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
            }
        };
        let tables: i64 = sqlx::query_scalar(table_sql).fetch_one(&self.pool).await?;
        let applied: Vec<i64> = if tables == 0 {
            Vec::new()
        } else {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_all(&self.pool)
                .await?
        };
        Ok(migrator
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count())
    }

    /// Whether the people and tokens in a migrated database are all `dev`'s own (its test
    /// users and tokens named `dev-…`), or there are none: one `dev` set up before it marked
    /// its databases, or set up and stopped before anything was added. For `dev`, which must
    /// not run on a real gateway's database.
    pub async fn holds_only_dev_people(&self) -> Result<bool, StoreError> {
        bounded(self, async {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM users WHERE email NOT IN ('admin@example.com', \
                 'deployer@example.com', 'ops@example.com', 'viewer@example.com')) AS people, \
                 (SELECT COUNT(*) FROM api_tokens WHERE name NOT LIKE 'dev-%') AS tokens",
            )
            .fetch_one(&self.pool)
            .await?;
            let count = |name: &str| columns::Columns::int(&row, name);
            Ok(count("people")? == 0 && count("tokens")? == 0)
        })
        .await
    }

    /// Whether the database holds no gateway schema at all (nothing migrated yet): a new
    /// database, or one that `DATABASE_URL` names by mistake.
    pub async fn holds_no_gateway_data(&self) -> Result<bool, StoreError> {
        let all = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").iter().count(),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").iter().count(),
        };
        Ok(self.migrations_pending().await? == all)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// One row by `key`: inline on SQLite when it can (see `sqlite_reads`), otherwise through
    /// the pool. `map` reads the columns the same way from either kind of row.
    async fn read_one<T>(
        &self,
        sql: &'static str,
        key: Key<'_>,
        map: impl Fn(&dyn Columns) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let inline = match key {
            Key::Text(v) => self.read_inline(sql, [v], |row| map(row)),
            Key::Int(v) => self.read_inline(sql, [v], |row| map(row)),
        };
        if let Some(found) = inline {
            return found;
        }
        self.reachable().await?;
        let query = sqlx::query(sql);
        let query = match key {
            Key::Text(v) => query.bind(v),
            Key::Int(v) => query.bind(v),
        };
        let row = query
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.noted(e.into()))?;
        row.as_ref().map(|row| map(row)).transpose()
    }

    /// A one-row read run inline on SQLite (see `sqlite_reads`); `None` means "use the pool".
    fn read_inline<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnOnce(&dyn Columns) -> Result<T, StoreError>,
    ) -> Option<Result<Option<T>, StoreError>> {
        match self.sqlite_reads.as_ref()?.one(sql, params, map) {
            sqlite_reads::Inline::Done(found) => Some(found),
            sqlite_reads::Inline::Fallback => None,
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        bounded(self, async {
            match self.backend {
                // A standby (a failover that left this gateway on the old primary), or a
                // server set read-only, answers reads and refuses every audit write: not ready.
                Backend::Postgres => {
                    let read_only: String =
                        sqlx::query_scalar("SELECT current_setting('transaction_read_only')")
                            .fetch_one(&self.pool)
                            .await?;
                    if read_only == "on" {
                        return Err(StoreError::ReadOnly);
                    }
                }
                Backend::Sqlite => {
                    sqlx::query("SELECT 1").execute(&self.pool).await?;
                }
            }
            Ok(())
        })
        .await
    }

    /// SQLite only: checkpoints the write-ahead log every 50 ms off the request path (PASSIVE:
    /// never blocks writers), then lets the audit writer finish the job between two batches so
    /// that the log restarts instead of growing. `None` on PostgreSQL.
    ///
    /// Often, because each checkpoint's fsync holds up the writer's log writes for a moment,
    /// longer the more was written since the last one: at 16 clients, every 2 s gave a p99 of
    /// 35–41 ms, every 0.5 s 4.2–4.9 ms, every 50 ms 2.9–3.1 ms (three 8-s runs each). A
    /// checkpoint with nothing to copy costs a few microseconds.
    pub fn spawn_checkpointer(&self) -> Option<tokio::task::JoinHandle<()>> {
        if self.backend != Backend::Sqlite {
            return None;
        }
        let pool = self.pool.clone();
        let audit = self.sqlite_audit.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut watch = checkpoints::CheckpointWatch::default();
            loop {
                tick.tick().await;
                if pool.is_closed() {
                    return;
                }
                let result = pool.execute("PRAGMA wal_checkpoint(PASSIVE)").await;
                match watch.observe(result.is_ok(), now_ms()) {
                    checkpoints::Say::Nothing => {}
                    checkpoints::Say::Failed { held_back } => {
                        let error = result.err().map(|e| e.to_string()).unwrap_or_default();
                        tracing::warn!(
                            %error,
                            failed_since_last = held_back,
                            "WAL checkpoint failed (at most one such line a minute)"
                        );
                    }
                    checkpoints::Say::Recovered { failures } => {
                        tracing::info!(failures, "WAL checkpoints work again");
                    }
                }
                if let Some(audit) = &audit {
                    audit.request_checkpoint();
                }
            }
        }))
    }

    /// Closes the pool, waiting for connections to be returned (the audit writer's kept one
    /// first, or the wait would never end).
    pub async fn close(&self) {
        drop(self.audit_conn.lock().await.take());
        self.pool.close().await;
    }

    /// Starts a write transaction on a dedicated connection: `BEGIN IMMEDIATE` on SQLite (take
    /// the write lock up front, so read-then-write cannot fail on a stale snapshot), `BEGIN`
    /// on PostgreSQL (callers lock rows explicitly).
    async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        // The transaction owns the connection before `BEGIN` is sent: cut off while it is on
        // its way (a deadline, a caller that went away), the connection is closed, not handed
        // back to the pool inside a transaction that later statements would join and never
        // commit (`faults::a_hung_postgres_cuts_off_every_store_call_in_seconds`).
        let mut tx = WriteTx {
            conn: Some(self.pool.acquire().await?),
        };
        tx.conn()?.execute(begin).await?;
        Ok(tx)
    }

    /// [`Store::begin_write`] that also keeps every other writer of `table` out until it ends,
    /// for a check-then-insert that must not interleave with another (two first sign-ins, two
    /// tokens of one name). SQLite's `BEGIN IMMEDIATE` already holds the database's single
    /// write lock; PostgreSQL takes a table lock that conflicts with itself and with every
    /// insert, update and delete on the table, while readers go on.
    async fn begin_exclusive_write(&self, table: Table) -> Result<WriteTx, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            let lock = match table {
                Table::Users => "LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE",
                Table::ApiTokens => "LOCK TABLE api_tokens IN SHARE ROW EXCLUSIVE MODE",
                Table::LoginAttempts => "LOCK TABLE login_attempts IN SHARE ROW EXCLUSIVE MODE",
            };
            tx.conn()?.execute(lock).await?;
        }
        Ok(tx)
    }
}

/// A table [`Store::begin_exclusive_write`] can hold.
#[derive(Debug, Clone, Copy)]
enum Table {
    Users,
    ApiTokens,
    LoginAttempts,
}

/// A write transaction; rolled back unless [`WriteTx::commit`] is called.
struct WriteTx {
    conn: Option<PoolConnection<Any>>,
}

impl WriteTx {
    fn conn(&mut self) -> Result<&mut PoolConnection<Any>, StoreError> {
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Corrupt("transaction already finished".into()))
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        if let Err(err) = conn.execute("COMMIT").await {
            // The connection's state is unknown; do not return it to the pool.
            let _ = conn.execute("ROLLBACK").await;
            conn.close_on_drop();
            return Err(err.into());
        }
        Ok(())
    }
}

impl WriteTx {
    /// Commits when `result` is a success, else rolls back; returns `result` (or the commit's
    /// error).
    async fn finish<T>(self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                self.commit().await?;
                Ok(value)
            }
            Err(err) => {
                if let Err(e) = self.rollback().await {
                    tracing::warn!(error = %e, "rollback failed");
                }
                Err(err)
            }
        }
    }

    /// Ends the transaction without writing and gives the connection back to the pool (a
    /// dropped transaction closes its connection instead, since its state is unknown then).
    async fn rollback(mut self) -> Result<(), StoreError> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        if let Err(err) = conn.execute("ROLLBACK").await {
            conn.close_on_drop();
            return Err(err.into());
        }
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            // Roll back off the async path: closing the connection discards the transaction.
            conn.close_on_drop();
        }
    }
}

/// Runs one store operation under [`STORE_DEADLINE`]: a database that stops answering mid-way
/// (a stopped server, a partition that drops packets) gets the caller [`StoreError::Timeout`]
/// instead of a wait for as long as TCP takes to give up. Dropping the operation is safe: a
/// write transaction cut off is rolled back and its connection closed (see [`WriteTx`]), a
/// statement on its own is either applied whole or not at all, which the caller cannot tell
/// apart (see the audit outcome's `unknown` result in `identity::manage`).
///
/// The hot path's reads and writes are bounded by their callers instead, once for the whole
/// step (authentication, the audit writer's commit); `audit verify`'s two scans of the whole
/// audit table are not bounded (on a large chain and a slow disk they may take longer).
///
/// On PostgreSQL a server found unreachable refuses the operation at once (see `outage`).
async fn bounded<T>(
    store: &Store,
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    store.reachable().await?;
    match tokio::time::timeout(STORE_DEADLINE, work).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(store.noted(e)),
        Err(_) => Err(store.noted(StoreError::Timeout(STORE_DEADLINE.as_secs()))),
    }
}

impl Store {
    /// `Ok` unless PostgreSQL was found unreachable and still is (see `outage`).
    async fn reachable(&self) -> Result<(), StoreError> {
        match &self.outage {
            Some(outage) => outage.check().await,
            None => Ok(()),
        }
    }

    /// `error`, after taking note of it: one that says the server cannot be reached makes the
    /// next calls fail at once until it can (see `outage`).
    pub fn noted(&self, error: StoreError) -> StoreError {
        if let Some(outage) = &self.outage {
            outage.note(&error);
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_commits_wait_for_the_disk_as_configured() {
        // Both connections that write — the pool's and the audit writer's — take the setting.
        for (sync, expected) in [(SqliteSync::Normal, 1), (SqliteSync::Full, 2)] {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let url = format!("sqlite://{}", dir.path().join("gateway.db").display());
            let store = Store::connect_synced(&url, sync)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
            let pooled: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&store.pool)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(pooled, expected, "{sync:?}: the pool's connections");
            let audit = store
                .sqlite_audit
                .as_ref()
                .unwrap_or_else(|| panic!("a file-backed store has an audit connection"))
                .open()
                .unwrap_or_else(|e| panic!("{e}"));
            let writer: i64 = audit
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(writer, expected, "{sync:?}: the audit writer's connection");
            store.close().await;
        }
    }
}
