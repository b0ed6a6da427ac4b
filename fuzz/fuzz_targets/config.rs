//! The configuration parser on hostile environments.
//!
//! Input: a list of variables (the gateway's own names, or any name) with raw values, URLs
//! built from parts (user, password, host, port, path), numbers, or a known-good value.
//! Checks:
//! - `Config::from_lookup` and `StoreConfig::from_lookup` return `Ok` or `Err`, never panic;
//! - an error's message never depends on a secret: the same environment with every secret
//!   replaced by another of the same length and shape gives the same result and the identical
//!   message. Secrets are `RACK_TOKEN`, `AUDIT_HMAC_KEY`, `OIDC_CLIENT_SECRET` and the password
//!   of any URL-valued variable (`RACK_HOST`, `DATABASE_URL`, `PUBLIC_URL`, …);
//! - `Debug` of a loaded configuration never depends on `RACK_TOKEN`, `AUDIT_HMAC_KEY` or
//!   `OIDC_CLIENT_SECRET`;
//! - `StoreConfig` agrees with `Config` on the database URL, the audit key and SQLite's sync.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use gateway_core::config::{Config, StoreConfig};
use libfuzzer_sys::fuzz_target;

mod common;
use common::rotate;

const VARS: &[&str] = &[
    "RACK_HOST",
    "RACK_TOKEN",
    "RACK_CA_FILE",
    "RACK_TLS_PIN_SHA256",
    "RACK_CONNECT_TIMEOUT_SECS",
    "RACK_READ_TIMEOUT_SECS",
    "LISTEN_ADDR",
    "PORT",
    "PUBLIC_URL",
    "SHUTDOWN_TIMEOUT_SECS",
    "WORKER_THREADS",
    "MAX_CONNECTIONS",
    "MAX_WEBSOCKETS",
    "MAX_WEBSOCKETS_PER_CREDENTIAL",
    "TRUSTED_PROXIES",
    "OIDC_ISSUER",
    "OIDC_CLIENT_ID",
    "OIDC_CLIENT_SECRET",
    "OIDC_ALLOWED_DOMAINS",
    "ADMIN_USERS",
    "OIDC_REDIRECT_URL",
    "SESSION_IDLE_TIMEOUT_SECS",
    "SESSION_LIFETIME_SECS",
    "DATABASE_URL",
    "AUDIT_HMAC_KEY",
    "AUDIT_STDOUT",
    "SQLITE_SYNCHRONOUS",
];

/// Variables whose whole value is a secret.
const SECRET_VARS: &[&str] = &["RACK_TOKEN", "AUDIT_HMAC_KEY", "OIDC_CLIENT_SECRET"];

/// A valid value for each of `VARS`, so that runs get past the early checks.
fn good(var: &str) -> &'static str {
    match var {
        "RACK_HOST" => "https://rack.test:5443",
        "RACK_TOKEN" => "rack-token-value-1234",
        "RACK_CA_FILE" => "/etc/hostname",
        "RACK_TLS_PIN_SHA256" => "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "LISTEN_ADDR" => "127.0.0.1:8447",
        "PORT" => "9000",
        "PUBLIC_URL" => "https://gateway.test",
        "OIDC_ISSUER" => "https://accounts.google.com",
        "OIDC_CLIENT_ID" => "client-id",
        "OIDC_CLIENT_SECRET" => "oidc-client-secret-value",
        "OIDC_ALLOWED_DOMAINS" => "example.com, test.org",
        "ADMIN_USERS" => "a@example.com",
        "OIDC_REDIRECT_URL" => "https://gateway.test/api/v1/auth/callback",
        "DATABASE_URL" => "postgres://app:db-password-value@db:5432/app",
        "AUDIT_HMAC_KEY" => "0123456789abcdef0123456789abcdef0123456789abcdef",
        "AUDIT_STDOUT" => "false",
        "SQLITE_SYNCHRONOUS" => "full",
        _ => "30",
    }
}

#[derive(Debug, Arbitrary)]
enum Name {
    Known(u8),
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Scheme {
    Http,
    Https,
    Postgres,
    Sqlite,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Val {
    Raw(String),
    Good,
    Num(i64),
    Url {
        scheme: Scheme,
        user: String,
        password: Option<String>,
        host: String,
        port: Option<u16>,
        path: String,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    vars: Vec<(Name, Val)>,
}

/// Letters and digits only, so that rotating it cannot change how the URL parses.
fn alnum(s: &str) -> String {
    s.chars().filter(char::is_ascii_alphanumeric).collect()
}

/// The environment, with secrets rotated when `rotate_secrets`; URL passwords only when
/// `rotate_urls`.
fn env(input: &Input, rotate_secrets: bool, rotate_urls: bool) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (name, val) in &input.vars {
        let name = match name {
            Name::Known(i) => VARS[usize::from(*i) % VARS.len()].to_string(),
            Name::Other(s) => s.clone(),
        };
        let value = match val {
            Val::Raw(s) => s.clone(),
            Val::Good => good(&name).to_string(),
            Val::Num(n) => n.to_string(),
            Val::Url {
                scheme,
                user,
                password,
                host,
                port,
                path,
            } => {
                let scheme = match scheme {
                    Scheme::Http => "http".to_string(),
                    Scheme::Https => "https".to_string(),
                    Scheme::Postgres => "postgres".to_string(),
                    Scheme::Sqlite => "sqlite".to_string(),
                    Scheme::Other(s) => s.clone(),
                };
                let userinfo = match password {
                    // RACK_CA_FILE is a path, shown in its error on purpose.
                    Some(p) => {
                        let p = alnum(p);
                        let p = if rotate_urls && name != "RACK_CA_FILE" {
                            rotate(&p)
                        } else {
                            p
                        };
                        format!("{user}:{p}@")
                    }
                    None if user.is_empty() => String::new(),
                    None => format!("{user}@"),
                };
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("{scheme}://{userinfo}{host}{port}{path}")
            }
        };
        let value = if rotate_secrets && SECRET_VARS.contains(&name.as_str()) {
            rotate(&value)
        } else {
            value
        };
        map.insert(name, value);
    }
    map
}

fn load(map: &HashMap<String, String>) -> (Result<Config, String>, Result<StoreConfig, String>) {
    (
        Config::from_lookup(|k| map.get(k).cloned()).map_err(|e| e.to_string()),
        StoreConfig::from_lookup(|k| map.get(k).cloned()).map_err(|e| e.to_string()),
    )
}

fuzz_target!(|input: Input| {
    let plain = env(&input, false, false);
    let (config, store) = load(&plain);

    // Every secret swapped: same outcome, same messages.
    let (config2, store2) = load(&env(&input, true, true));
    assert_eq!(config.as_ref().err(), config2.as_ref().err(), "{plain:?}");
    assert_eq!(store.as_ref().err(), store2.as_ref().err(), "{plain:?}");
    assert_eq!(config.is_ok(), config2.is_ok(), "{plain:?}");

    // Whole-value secrets swapped: same Debug of what was loaded.
    let (config3, store3) = load(&env(&input, true, false));
    if let (Ok(a), Ok(b)) = (&config, &config3) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{plain:?}");
    }
    if let (Ok(a), Ok(b)) = (&store, &store3) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{plain:?}");
    }

    // Config reads its store settings exactly as StoreConfig does.
    match (&config, &store) {
        (Ok(c), Ok(s)) => {
            assert_eq!(c.database_url, s.database_url);
            assert_eq!(
                c.audit_hmac_key.as_ref().map(|k| k.expose()),
                s.audit_hmac_key.as_ref().map(|k| k.expose())
            );
            assert_eq!(c.sqlite_sync, s.sqlite_sync);
        }
        (Ok(_), Err(e)) => panic!("{plain:?}: Config loaded, StoreConfig refused: {e}"),
        _ => {}
    }
});
