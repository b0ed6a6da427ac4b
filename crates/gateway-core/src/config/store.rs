//! The database and the audit key: what every command needs, and how a database URL is
//! checked and shown.

use url::Url;

use super::{ConfigError, DEFAULT_DATABASE_URL, Secret};

/// The part of the configuration the admin commands need: the database and the audit key.
#[derive(Clone)]
pub struct StoreConfig {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// `AUDIT_HMAC_KEY`, if set.
    pub audit_hmac_key: Option<Secret>,
    /// `AUDIT_HMAC_KEY_NEXT`: the key the chain is about to be rotated to, if set. A gateway
    /// given it goes on serving across the rotation, linking with it from then on.
    pub audit_hmac_key_next: Option<Secret>,
    /// `AUDIT_HMAC_KEY_RETIRED`: the chain's earlier keys, for `audit verify` and
    /// `audit rotate-key` (empty when unset).
    pub audit_hmac_key_retired: Vec<Secret>,
    /// `SQLITE_SYNCHRONOUS`: how a SQLite commit waits for the disk.
    pub sqlite_sync: SqliteSync,
}

/// How a commit to a SQLite file waits for the disk (`SQLITE_SYNCHRONOUS`; PostgreSQL's own
/// settings decide there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SqliteSync {
    /// `normal`: a commit survives the gateway's crash (`kill -9`, a panic, an OOM kill), not
    /// the machine's (power loss, a kernel panic), which may drop the commits since the last
    /// checkpoint (at most ~50 ms of them).
    #[default]
    Normal,
    /// `full`: every commit waits for the write-ahead log's fsync, so it survives the machine's
    /// crash too; every request waits for that fsync.
    Full,
}

impl SqliteSync {
    /// The value of SQLite's `synchronous` pragma.
    pub fn pragma(self) -> &'static str {
        match self {
            SqliteSync::Normal => "NORMAL",
            SqliteSync::Full => "FULL",
        }
    }
}

/// Reads `SQLITE_SYNCHRONOUS` (`normal`, the default, or `full`).
pub fn parse_sqlite_sync(get: &impl Fn(&str) -> Option<String>) -> Result<SqliteSync, ConfigError> {
    match get("SQLITE_SYNCHRONOUS") {
        None => Ok(SqliteSync::default()),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "normal" => Ok(SqliteSync::Normal),
            "full" => Ok(SqliteSync::Full),
            _ => Err(ConfigError::Invalid {
                name: "SQLITE_SYNCHRONOUS",
                expected: "`normal` (survives the gateway's crash) or `full` (survives the \
                           machine's too: every commit waits for an fsync)"
                    .into(),
            }),
        },
    }
}

/// A URL as `Debug` shows it: with any password masked.
/// `url` as logs and `Debug` show it: a password in its user part or in its query
/// (`?password=…`, which PostgreSQL's drivers take too) masked.
pub fn shown(url: &str) -> String {
    let masked = crate::redact::redact_value(url);
    match masked.split_once('?') {
        Some((base, query)) => format!("{base}?{}", crate::redact::redact_query(query)),
        None => masked,
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("database_url", &shown(&self.database_url))
            .field("audit_hmac_key", &self.audit_hmac_key)
            .field("audit_hmac_key_next", &self.audit_hmac_key_next)
            .field("audit_hmac_key_retired", &self.audit_hmac_key_retired)
            .field("sqlite_sync", &self.sqlite_sync)
            .finish()
    }
}

impl StoreConfig {
    /// Reads `DATABASE_URL`, `AUDIT_HMAC_KEY` and `AUDIT_HMAC_KEY_RETIRED` from the process environment.
    pub fn from_env() -> Result<StoreConfig, ConfigError> {
        StoreConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads `DATABASE_URL`, `AUDIT_HMAC_KEY` and `AUDIT_HMAC_KEY_RETIRED` through `lookup`.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<StoreConfig, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let database_url = get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        validate_database_url(&database_url)?;
        let audit_hmac_key = get("AUDIT_HMAC_KEY")
            .map(|key| chain_key("AUDIT_HMAC_KEY", key))
            .transpose()?;
        let audit_hmac_key_next = get("AUDIT_HMAC_KEY_NEXT")
            .map(|key| chain_key("AUDIT_HMAC_KEY_NEXT", key))
            .transpose()?;
        // Separated by whitespace (a file of keys, one per line, will do): a key holds none.
        let audit_hmac_key_retired = get("AUDIT_HMAC_KEY_RETIRED")
            .map(|keys| {
                keys.split_whitespace()
                    .map(|key| chain_key("AUDIT_HMAC_KEY_RETIRED", key.to_string()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        Ok(StoreConfig {
            database_url,
            audit_hmac_key,
            audit_hmac_key_next,
            audit_hmac_key_retired,
            sqlite_sync: parse_sqlite_sync(&get)?,
        })
    }
}

/// Checks a key of the audit chain read from `name`.
fn chain_key(name: &'static str, key: String) -> Result<Secret, ConfigError> {
    if key.trim().chars().count() < 32 {
        return Err(ConfigError::Invalid {
            name,
            expected: "at least 32 characters of random data (e.g. `openssl rand -hex 32`)".into(),
        });
    }
    // A key read from a file often keeps its newline: the chain would be keyed with it, and
    // the same key without it would later fail every check.
    if key.trim() != key || key.chars().any(char::is_control) {
        return Err(ConfigError::Invalid {
            name,
            expected: "the key without surrounding whitespace or control characters (a \
                       trailing newline from a file?)"
                .into(),
        });
    }
    Ok(Secret::new(key))
}

pub(super) fn validate_database_url(url: &str) -> Result<(), ConfigError> {
    // A SQLite URL names a file: `sqlite://` alone (an unset variable in `sqlite://$DB`) or
    // `sqlite:x` would otherwise open a private in-memory database, and `migrate` would
    // "succeed" on it.
    // `?mode=memory` (or `:memory:`) is the same throwaway database by another name.
    let sqlite_file = url
        .strip_prefix("sqlite://")
        .map(|rest| rest.split('?').next().unwrap_or_default())
        .is_some_and(|path| !path.trim().is_empty() && !path.contains(":memory:"))
        && !url.contains("mode=memory");
    if sqlite_file || url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            name: "DATABASE_URL",
            expected: "sqlite://PATH (a file) or postgres://USER@HOST/DB".into(),
        })
    }
}

/// The `sslmode` values PostgreSQL's drivers know.
const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// A warning when `database_url` names a PostgreSQL server on another host without asking
/// for its certificate to be checked (`sslmode=verify-full` or `verify-ca`): whoever sits
/// between the gateway and the database could then answer for it — credentials included.
/// `env` reads the libpq variables the driver falls back on (`PGHOST`, `PGHOSTADDR`,
/// `PGSSLMODE`), which decide the connection when the URL does not say.
pub fn unverified_database(
    database_url: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let url = Url::parse(database_url).ok()?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return None;
    }
    // Where the driver connects, worked out as it does (sqlx's `PgConnectOptions`): PGHOSTADDR,
    // else PGHOST, else this host; then the URL's host; then `?host=` and `?hostaddr=` in the
    // order given, the last one winning. A host starting with `/` is a socket directory.
    let mut host = env("PGHOSTADDR")
        .or_else(|| env("PGHOST"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let mut socket = false;
    // `postgres:` is not a scheme the URL parser knows, so addresses come as plain names.
    if let Some(url_host) = url.host_str().filter(|h| !h.is_empty()) {
        if url_host.starts_with('/') || url_host.starts_with("%2F") || url_host.starts_with("%2f") {
            socket = true;
        } else {
            host = url_host.to_string();
        }
    }
    // The mode: PGSSLMODE when it parses (as the driver reads it: any case, nothing
    // around it), then the URL's.
    let mut mode = env("PGSSLMODE")
        .map(|v| v.to_ascii_lowercase())
        .filter(|v| SSL_MODES.contains(&v.as_str()));
    for (key, value) in url.query_pairs() {
        match &*key {
            "host" if value.starts_with('/') => socket = true,
            "host" | "hostaddr" => host = value.into_owned(),
            "sslmode" | "ssl-mode" => mode = Some(value.to_ascii_lowercase()),
            _ => {}
        }
    }
    // A socket, or this host: nothing in between.
    let local = socket
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if local {
        return None;
    }
    match mode.as_deref() {
        Some("verify-full" | "verify-ca") => None,
        other => Some(format!(
            "DATABASE_URL: the connection to PostgreSQL at {} is {} — anyone between the \
             gateway and the database could answer for it, credentials included; add \
             sslmode=verify-full (and sslrootcert=/path/to/ca.pem unless the server's \
             certificate is signed by a public CA) (docs/deployment.md)",
            host,
            match other {
                Some("disable") => "not encrypted (sslmode=disable)",
                Some("require") =>
                    "encrypted, but its certificate is not checked (sslmode=require)",
                _ => "encrypted only if the server offers it, and its certificate is not checked",
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retired(value: &str) -> Result<Vec<String>, String> {
        StoreConfig::from_lookup(|name| (name == "AUDIT_HMAC_KEY_RETIRED").then(|| value.into()))
            .map(|c| {
                c.audit_hmac_key_retired
                    .iter()
                    .map(|k| k.expose().to_string())
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn retired_keys_are_separated_by_whitespace_and_each_checked() {
        let a = "a".repeat(32);
        let b = "b".repeat(40);
        assert_eq!(
            retired(&format!("{a}\n{b}\n")),
            Ok(vec![a.clone(), b.clone()])
        );
        assert_eq!(retired(&format!("  {a}  {b}")), Ok(vec![a.clone(), b]));
        assert_eq!(retired(""), Ok(vec![]), "unset");
        let err = retired(&format!("{a} too-short-key"))
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("AUDIT_HMAC_KEY_RETIRED"), "{err}");
        assert!(!err.contains("too-short-key") && !err.contains(&a), "{err}");
    }

    #[test]
    fn the_next_key_is_checked_as_the_key_is() {
        let next = "n".repeat(32);
        let config = |value: &str| {
            StoreConfig::from_lookup(|name| (name == "AUDIT_HMAC_KEY_NEXT").then(|| value.into()))
        };
        let c = config(&next).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.audit_hmac_key_next.as_ref().map(Secret::expose),
            Some(next.as_str())
        );
        let err = config(&format!("{next}\n"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("AUDIT_HMAC_KEY_NEXT"), "{err}");
        assert!(!err.contains(&next), "{err}");
    }
}
