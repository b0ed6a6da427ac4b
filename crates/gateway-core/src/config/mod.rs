//! Configuration from environment variables, validated at start-up.
//!
//! Every variable is documented in `docs/configuration.md`. Errors name the variable and what
//! is expected, and never include a secret's value.

mod anchors;
mod names;
mod notify;
mod oidc;
mod rack;
mod secret;
mod store;
mod values;
mod yubico;

use std::net::SocketAddr;
use std::time::Duration;

pub use anchors::{
    AnchorConfig, AnchorCredentials, ContainerAuthorization, DEFAULT_ANCHOR_INTERVAL_SECS,
    DEFAULT_ANCHOR_PREFIX, DEFAULT_ANCHOR_REGION, DEFAULT_ANCHOR_RETENTION_DAYS, parse_anchors,
};
pub use names::{SETTINGS, misspelt_settings};
use notify::parse_notify;
pub use notify::{
    DEFAULT_SLACK_API_URL, EmailConfig, NOTIFY_TOPICS, NotifyConfig, SlackAppConfig, SlackConfig,
};
use oidc::parse_oidc;
pub use oidc::{OIDC_CALLBACK_PATH, OidcConfig, SessionConfig};
pub use rack::RackTls;
use rack::{parse_rack_host, rack_tls, rack_token};
pub use secret::Secret;
pub use store::{SqliteSync, StoreConfig, parse_sqlite_sync, shown, unverified_database};
use url::Url;
pub use values::MAX_SECONDS;
use values::{boolean, count, digits, seconds, whole_number};
pub use yubico::{DEFAULT_YUBICO_API_URL, YubicoConfig};

use crate::client_addr::{BadProxy, TrustedProxies};

/// Default `MFA_TRUSTED_DEVICE_DAYS`: a browser trusted at sign-in is asked for no code for
/// 30 days.
pub const DEFAULT_MFA_TRUSTED_DEVICE_DAYS: u64 = 30;

/// Default `MFA_STEP_UP_SECS`: a code from the last 10 minutes.
pub const DEFAULT_MFA_STEP_UP_SECS: u64 = 600;

/// Default `DEPLOY_APPROVAL_WINDOW_SECS`: an approved deploy may run for 30 minutes.
pub const DEFAULT_DEPLOY_APPROVAL_WINDOW_SECS: u64 = 1800;
/// Default `DEPLOY_APPROVAL_REQUEST_TTL_SECS`: a request waits a day for a decision.
pub const DEFAULT_DEPLOY_APPROVAL_REQUEST_TTL_SECS: u64 = 24 * 3600;

/// Default listen address.
pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:8447";
/// Default SQLite database used when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://rack-gateway.db";

/// A configuration problem: which variable, and what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set (or empty).
    #[error("{name} is required: {expected}")]
    Missing {
        /// The variable's name.
        name: &'static str,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// A variable is set but malformed.
    #[error("{name} is invalid: {expected}")]
    Invalid {
        /// The variable's name.
        name: &'static str,
        /// What a valid value looks like (never the value itself when it is a secret).
        expected: String,
    },
}

/// The gateway's configuration. `Debug` masks every secret, including a password inside
/// `DATABASE_URL`, `RACK_HOST` or `PUBLIC_URL`.
#[derive(Clone)]
pub struct Config {
    /// Base URL of the rack API, e.g. `https://rack.example.com:5443`.
    pub rack_host: Url,
    /// The rack's API token (the password of its Basic auth).
    pub rack_token: Secret,
    /// Address to listen on.
    pub listen_addr: SocketAddr,
    /// Where Prometheus metrics are served (`METRICS_LISTEN_ADDR`), if anywhere.
    pub metrics_listen_addr: Option<SocketAddr>,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// HMAC key for the audit hash chain; when absent a random key is generated once and kept
    /// in the database (with a warning at start-up).
    pub audit_hmac_key: Option<Secret>,
    /// `AUDIT_HMAC_KEY_NEXT`: the key the chain is about to be rotated to, if set.
    pub audit_hmac_key_next: Option<Secret>,
    /// `SQLITE_SYNCHRONOUS`: how a SQLite commit waits for the disk.
    pub sqlite_sync: SqliteSync,
    /// Where the audit chain's head is anchored (`AUDIT_ANCHOR_*`), if anywhere.
    pub audit_anchors: Option<AnchorConfig>,
    /// How to verify the rack's TLS certificate.
    pub rack_tls: RackTls,
    /// Public URL of the gateway (used for links and cookie security).
    pub public_url: Option<Url>,
    /// Connect timeout to the rack.
    pub rack_connect_timeout: Duration,
    /// Longest wait for the rack's response headers, and longest silence while reading a body.
    pub rack_read_timeout: Duration,
    /// How long in-flight requests may take to finish on SIGTERM.
    pub shutdown_timeout: Duration,
    /// Longest a client may take to send a request's headers, keep an idle connection open,
    /// or stay silent in the middle of a request body (`CLIENT_TIMEOUT_SECS`).
    pub client_timeout: Duration,
    /// Async worker threads (`WORKER_THREADS`); `None`: one per CPU.
    pub worker_threads: Option<usize>,
    /// Most client connections served at once (`MAX_CONNECTIONS`); more wait to be accepted.
    pub max_connections: usize,
    /// Most WebSocket sessions open at once (`MAX_WEBSOCKETS`), and per credential — one API
    /// token or one session (`MAX_WEBSOCKETS_PER_CREDENTIAL`).
    pub websockets: WebSocketLimits,
    /// Emit audit events as JSON lines on stdout.
    pub audit_stdout: bool,
    /// Proxies whose `X-Forwarded-For` names the client (`TRUSTED_PROXIES`; none by default).
    pub trusted_proxies: TrustedProxies,
    /// OpenID Connect sign-in; without it only API tokens work.
    pub oidc: Option<OidcConfig>,
    /// Session lifetimes.
    pub sessions: SessionConfig,
    /// `MFA_ENCRYPTION_KEY`: 32 bytes, as 64 hexadecimal characters, that seal TOTP secrets
    /// in the database. Without it nobody can set up TOTP, and those who have cannot sign in.
    pub mfa_encryption_key: Option<Secret>,
    /// `MFA_ENCRYPTION_KEY_RETIRED`: keys `MFA_ENCRYPTION_KEY` replaced, which still open the
    /// secrets they sealed and check their backup codes (see `mfa rotate-key`).
    pub mfa_encryption_key_retired: Vec<Secret>,
    /// `MFA_REQUIRED`: every person signing in must use an authenticator app, setting one up
    /// at sign-in when they have none (needs `MFA_ENCRYPTION_KEY`).
    pub mfa_required: bool,
    /// `MFA_STEP_UP_SECS`: how recent a session's code must be for a privileged change.
    pub mfa_step_up: Duration,
    /// `MFA_TRUSTED_DEVICE_DAYS`: how long a browser its person chose to trust at sign-in is
    /// asked for no code at sign-in; `None` (`0`) when nobody may trust a browser.
    pub mfa_trusted_device: Option<Duration>,
    /// `DEPLOY_APPROVAL_WINDOW_SECS`: how long an approved deploy may take to run.
    pub deploy_approval_window: Duration,
    /// `DEPLOY_APPROVAL_REQUEST_TTL_SECS`: how long a deploy request waits for a decision.
    pub deploy_approval_request_ttl: Duration,
    /// Where notifications go (`SLACK_WEBHOOK_URL`, `SMTP_URL`, `EMAIL_*`).
    pub notify: NotifyConfig,
    /// YubiKey one-time passwords (`YUBICO_*`), when configured.
    pub yubico: Option<YubicoConfig>,
}

/// How many WebSocket sessions may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketLimits {
    /// In all (`MAX_WEBSOCKETS`).
    pub total: usize,
    /// For one API token or one session (`MAX_WEBSOCKETS_PER_CREDENTIAL`).
    pub per_credential: usize,
}

impl Default for WebSocketLimits {
    fn default() -> Self {
        WebSocketLimits {
            total: 1024,
            per_credential: 16,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("rack_host", &shown(self.rack_host.as_str()))
            .field("rack_token", &self.rack_token)
            .field("listen_addr", &self.listen_addr)
            .field("metrics_listen_addr", &self.metrics_listen_addr)
            .field("database_url", &shown(&self.database_url))
            .field("audit_hmac_key", &self.audit_hmac_key)
            .field("audit_hmac_key_next", &self.audit_hmac_key_next)
            .field("sqlite_sync", &self.sqlite_sync)
            .field("audit_anchors", &self.audit_anchors)
            .field("rack_tls", &self.rack_tls)
            .field(
                "public_url",
                &self.public_url.as_ref().map(|u| shown(u.as_str())),
            )
            .field("rack_connect_timeout", &self.rack_connect_timeout)
            .field("rack_read_timeout", &self.rack_read_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("client_timeout", &self.client_timeout)
            .field("worker_threads", &self.worker_threads)
            .field("max_connections", &self.max_connections)
            .field("websockets", &self.websockets)
            .field("audit_stdout", &self.audit_stdout)
            .field("oidc", &self.oidc)
            .field("sessions", &self.sessions)
            .field("mfa_encryption_key", &self.mfa_encryption_key)
            .field(
                "mfa_encryption_key_retired",
                &self.mfa_encryption_key_retired,
            )
            .field("mfa_required", &self.mfa_required)
            .field("mfa_step_up", &self.mfa_step_up)
            .field("mfa_trusted_device", &self.mfa_trusted_device)
            .field("deploy_approval_window", &self.deploy_approval_window)
            .field(
                "deploy_approval_request_ttl",
                &self.deploy_approval_request_ttl,
            )
            .field("notify", &self.notify)
            .field("yubico", &self.yubico)
            .finish()
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        // In this order, so that of several mistakes the same one is named first every time.
        let rack_host = parse_rack_host(get("RACK_HOST"))?;
        let rack_token = rack_token(&get)?;
        let listen_addr = listen_addr(&get)?;
        let metrics_listen_addr = metrics_listen_addr(&get, listen_addr)?;
        let StoreConfig {
            database_url,
            audit_hmac_key,
            audit_hmac_key_next,
            // For `audit verify` and `audit rotate-key`; checked here all the same.
            audit_hmac_key_retired: _,
            sqlite_sync,
        } = StoreConfig::from_lookup(&lookup)?;
        let audit_anchors = parse_anchors(&get)?;
        let rack_tls = rack_tls(&get, &rack_host)?;
        let public_url = public_url(&get)?;
        let trusted_proxies = trusted_proxies(&get)?;
        let oidc = parse_oidc(&get, public_url.as_ref())?;
        let mfa_encryption_key = mfa_encryption_key(&get)?;
        let mfa_encryption_key_retired = mfa_encryption_key_retired(&get)?;
        let notify = parse_notify(&get)?;
        let yubico = yubico(&get)?;
        let mfa_required = mfa_required(&get)?;
        if mfa_required && mfa_encryption_key.is_none() {
            return Err(ConfigError::Missing {
                name: "MFA_ENCRYPTION_KEY",
                expected: "with MFA_REQUIRED=true: 64 hexadecimal characters (32 random bytes), \
                           e.g. from `openssl rand -hex 32`",
            });
        }
        Ok(Config {
            rack_host,
            rack_token,
            listen_addr,
            metrics_listen_addr,
            database_url,
            audit_hmac_key,
            audit_hmac_key_next,
            sqlite_sync,
            audit_anchors,
            rack_tls,
            public_url,
            rack_connect_timeout: seconds(&get, "RACK_CONNECT_TIMEOUT_SECS", 10)?,
            rack_read_timeout: seconds(&get, "RACK_READ_TIMEOUT_SECS", 300)?,
            shutdown_timeout: seconds(&get, "SHUTDOWN_TIMEOUT_SECS", 30)?,
            client_timeout: seconds(&get, "CLIENT_TIMEOUT_SECS", 75)?,
            worker_threads: worker_threads(&get)?,
            max_connections: count(&get, "MAX_CONNECTIONS", 4096)?,
            websockets: WebSocketLimits {
                total: count(&get, "MAX_WEBSOCKETS", WebSocketLimits::default().total)?,
                per_credential: count(
                    &get,
                    "MAX_WEBSOCKETS_PER_CREDENTIAL",
                    WebSocketLimits::default().per_credential,
                )?,
            },
            audit_stdout: boolean(&get, "AUDIT_STDOUT", true)?,
            trusted_proxies,
            oidc,
            sessions: SessionConfig {
                idle_timeout: seconds(&get, "SESSION_IDLE_TIMEOUT_SECS", 8 * 3600)?,
                lifetime: seconds(&get, "SESSION_LIFETIME_SECS", 24 * 3600)?,
                max_per_user: count(
                    &get,
                    "MAX_SESSIONS_PER_USER",
                    SessionConfig::default().max_per_user,
                )?,
            },
            mfa_encryption_key,
            mfa_encryption_key_retired,
            mfa_required,
            mfa_step_up: mfa_step_up(&get)?,
            mfa_trusted_device: mfa_trusted_device(&get)?,
            deploy_approval_window: seconds(
                &get,
                "DEPLOY_APPROVAL_WINDOW_SECS",
                DEFAULT_DEPLOY_APPROVAL_WINDOW_SECS,
            )?,
            deploy_approval_request_ttl: seconds(
                &get,
                "DEPLOY_APPROVAL_REQUEST_TTL_SECS",
                DEFAULT_DEPLOY_APPROVAL_REQUEST_TTL_SECS,
            )?,
            notify,
            yubico,
        })
    }
}

impl Config {
    /// Settings that are each valid but together do not do what someone meant: one of them
    /// never takes effect, or a public URL over plain HTTP sends sessions across the network
    /// readable. Said at start-up, not refused (the gateway works, just not as someone meant;
    /// plain HTTP may be a network the operator trusts).
    pub fn start_up_warnings(&self) -> Vec<String> {
        let mut found = Vec::new();
        if self.sessions.idle_timeout >= self.sessions.lifetime {
            found.push(format!(
                "SESSION_IDLE_TIMEOUT_SECS ({} s) is not shorter than SESSION_LIFETIME_SECS ({} s): \
                 sessions end at their lifetime and never idle out",
                self.sessions.idle_timeout.as_secs(),
                self.sessions.lifetime.as_secs()
            ));
        }
        // Browsers send the session cookie (`Secure` only on https) and the provider sends
        // sign-in codes to these URLs: in the clear over plain HTTP to another host.
        let plain = |url: &Url| url.scheme() == "http" && !anchors::is_loopback(url);
        if let Some(url) = self.public_url.as_ref().filter(|u| plain(u)) {
            found.push(format!(
                "PUBLIC_URL ({url}) is plain http to another host: session cookies go without \
                 Secure and sessions cross the network readable; use https:// (end TLS at your \
                 load balancer, docs/deployment.md)"
            ));
        }
        if let Some(oidc) = self.oidc.as_ref().filter(|o| plain(&o.redirect_url))
            && self.public_url.as_ref().is_none_or(|p| !plain(p))
        {
            found.push(format!(
                "OIDC_REDIRECT_URL ({}) is plain http to another host: sign-in codes cross the \
                 network readable; use https://",
                oidc.redirect_url
            ));
        }
        if self.websockets.per_credential > self.websockets.total {
            found.push(format!(
                "MAX_WEBSOCKETS_PER_CREDENTIAL ({}) is larger than MAX_WEBSOCKETS ({}): the total \
                 is reached first",
                self.websockets.per_credential, self.websockets.total
            ));
        }
        if self.mfa_required && self.oidc.is_none() {
            found.push(
                "MFA_REQUIRED has no effect without OIDC_ISSUER: nobody signs in (API tokens are \
                 not asked for codes)"
                    .into(),
            );
        }
        found
    }
}

/// What keeps `url` from being a plain base URL: credentials, a query or a fragment.
fn plain_base_problem(url: &Url) -> Option<&'static str> {
    if !url.username().is_empty() || url.password().is_some() {
        Some("credentials")
    } else if url.query().is_some() {
        Some("a query")
    } else if url.fragment().is_some() {
        Some("a fragment")
    } else {
        None
    }
}

/// Where the gateway listens: `LISTEN_ADDR`, or all addresses on `PORT` (a platform's), or
/// the default; both set must agree.
fn listen_addr(get: &impl Fn(&str) -> Option<String>) -> Result<SocketAddr, ConfigError> {
    let port = get("PORT")
        .map(|port| {
            digits(&port)
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or(ConfigError::Invalid {
                    name: "PORT",
                    expected: "a TCP port number, e.g. 8447".into(),
                })
        })
        .transpose()?;
    let listen_addr = match (get("LISTEN_ADDR"), port) {
        (Some(addr), port) => {
            let addr: SocketAddr = addr.trim().parse().map_err(|_| ConfigError::Invalid {
                name: "LISTEN_ADDR",
                expected: "an IP address and port, e.g. 0.0.0.0:8447".into(),
            })?;
            // A platform that sets PORT (Convox, Heroku) sends its traffic and health
            // checks there: listening elsewhere would look like a gateway that is down.
            if port.is_some_and(|port| port != addr.port()) {
                return Err(ConfigError::Invalid {
                    name: "LISTEN_ADDR",
                    expected: "the same port as PORT, which is also set (unset one of them)".into(),
                });
            }
            addr
        }
        (None, Some(port)) => SocketAddr::from(([0, 0, 0, 0], port)),
        (None, None) => DEFAULT_LISTEN_ADDR
            .parse()
            .map_err(|_| ConfigError::Invalid {
                name: "LISTEN_ADDR",
                expected: "an IP address and port".into(),
            })?,
    };
    Ok(listen_addr)
}

/// `METRICS_LISTEN_ADDR`: where Prometheus scrapes, when set. Never the gateway's own port:
/// metrics belong on an address the load balancer does not forward to.
fn metrics_listen_addr(
    get: &impl Fn(&str) -> Option<String>,
    listen_addr: SocketAddr,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(raw) = get("METRICS_LISTEN_ADDR") else {
        return Ok(None);
    };
    let addr: SocketAddr = raw.trim().parse().map_err(|_| ConfigError::Invalid {
        name: "METRICS_LISTEN_ADDR",
        expected: "an IP address and port, e.g. 127.0.0.1:9447".into(),
    })?;
    if addr.port() != 0 && addr.port() == listen_addr.port() {
        return Err(ConfigError::Invalid {
            name: "METRICS_LISTEN_ADDR",
            expected: "a port other than the gateway's (LISTEN_ADDR or PORT)".into(),
        });
    }
    Ok(Some(addr))
}

/// `MFA_TRUSTED_DEVICE_DAYS`: `0` turns trusted browsers off; otherwise 1 to 365 days.
pub fn mfa_trusted_device(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Duration>, ConfigError> {
    const NAME: &str = "MFA_TRUSTED_DEVICE_DAYS";
    if get(NAME).as_deref().and_then(digits) == Some("0") {
        return Ok(None);
    }
    let days = whole_number(get, NAME, DEFAULT_MFA_TRUSTED_DEVICE_DAYS, 365, || {
        "a whole number of days from 0 (no trusted browsers) to 365".to_string()
    })?;
    Ok(Some(Duration::from_secs(days * 24 * 3600)))
}

/// `MFA_STEP_UP_SECS`: how recent a session's code must be for a privileged change (default
/// [`DEFAULT_MFA_STEP_UP_SECS`]).
pub fn mfa_step_up(get: &impl Fn(&str) -> Option<String>) -> Result<Duration, ConfigError> {
    seconds(get, "MFA_STEP_UP_SECS", DEFAULT_MFA_STEP_UP_SECS)
}

/// `YUBICO_CLIENT_ID`, `YUBICO_SECRET_KEY`, `YUBICO_API_URL`: YubiKey one-time passwords
/// (`None`: off).
pub fn yubico(get: &impl Fn(&str) -> Option<String>) -> Result<Option<YubicoConfig>, ConfigError> {
    yubico::parse_yubico(get)
}

/// `MFA_REQUIRED` (default false).
pub fn mfa_required(get: &impl Fn(&str) -> Option<String>) -> Result<bool, ConfigError> {
    boolean(get, "MFA_REQUIRED", false)
}

/// `MFA_ENCRYPTION_KEY`, when set: exactly 64 hexadecimal characters (32 random bytes).
pub fn mfa_encryption_key(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    get("MFA_ENCRYPTION_KEY")
        .map(|raw| mfa_hex_key("MFA_ENCRYPTION_KEY", &raw))
        .transpose()
}

/// `MFA_ENCRYPTION_KEY_RETIRED`: keys `MFA_ENCRYPTION_KEY` replaced, separated by whitespace,
/// each like it; none when unset.
pub fn mfa_encryption_key_retired(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<Secret>, ConfigError> {
    get("MFA_ENCRYPTION_KEY_RETIRED")
        .map(|keys| {
            keys.split_whitespace()
                .map(|key| mfa_hex_key("MFA_ENCRYPTION_KEY_RETIRED", key))
                .collect()
        })
        .transpose()
        .map(Option::unwrap_or_default)
}

fn mfa_hex_key(name: &'static str, raw: &str) -> Result<Secret, ConfigError> {
    let key = raw.trim();
    if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ConfigError::Invalid {
            name,
            expected:
                "64 hexadecimal characters (32 random bytes), e.g. from `openssl rand -hex 32`"
                    .into(),
        });
    }
    Ok(Secret::new(key.to_ascii_lowercase()))
}

/// `PUBLIC_URL`: the gateway's base URL as browsers reach it, when set.
/// `PUBLIC_URL` alone, read through `lookup` (for commands that need no rack).
pub fn public_url_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Url>, ConfigError> {
    public_url(&|name: &str| lookup(name).filter(|v| !v.trim().is_empty()))
}

fn public_url(get: &impl Fn(&str) -> Option<String>) -> Result<Option<Url>, ConfigError> {
    Ok(match get("PUBLIC_URL") {
        None => None,
        Some(raw) => {
            let url = Url::parse(&raw).map_err(|_| ConfigError::Invalid {
                name: "PUBLIC_URL",
                expected: "an absolute http(s) URL, e.g. https://gateway.example.com".into(),
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid {
                    name: "PUBLIC_URL",
                    expected: "an http:// or https:// URL".into(),
                });
            }
            // It is handed to every visitor (in the sign-in redirect): a password in it
            // would be too.
            if plain_base_problem(&url).is_some() {
                return Err(ConfigError::Invalid {
                    name: "PUBLIC_URL",
                    expected: "the gateway's base URL without credentials, query or \
                               fragment, e.g. https://gateway.example.com"
                        .into(),
                });
            }
            Some(url)
        }
    })
}

/// `TRUSTED_PROXIES`: the load balancers whose `X-Forwarded-For` is believed.
fn trusted_proxies(get: &impl Fn(&str) -> Option<String>) -> Result<TrustedProxies, ConfigError> {
    Ok(match get("TRUSTED_PROXIES") {
        None => TrustedProxies::default(),
        Some(list) => list.parse().map_err(|e: BadProxy| ConfigError::Invalid {
            name: "TRUSTED_PROXIES",
            expected: format!(
                "comma-separated IP addresses or CIDR networks of your load balancers, \
                 e.g. 10.0.0.0/8 ({e})"
            ),
        })?,
    })
}

/// Most async worker threads `WORKER_THREADS` accepts.
const MAX_WORKER_THREADS: usize = 256;

/// `WORKER_THREADS`: how many async worker threads the server runs (`None` when unset: one per
/// CPU). Read before anything else, since the runtime must exist before the rest of the
/// configuration is loaded.
pub fn worker_threads(get: &impl Fn(&str) -> Option<String>) -> Result<Option<usize>, ConfigError> {
    // Empty counts as unset, as for every other setting.
    match get("WORKER_THREADS").filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => digits(&v)
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| (1..=MAX_WORKER_THREADS).contains(n))
            .map(Some)
            .ok_or(ConfigError::Invalid {
                name: "WORKER_THREADS",
                expected: format!("a whole number from 1 to {MAX_WORKER_THREADS}"),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn durations_are_bounded() {
        let get =
            |v: &'static str| move |k: &str| (k == "CLIENT_TIMEOUT_SECS").then(|| v.to_string());
        let ten_years = Duration::from_secs(MAX_SECONDS);
        assert_eq!(
            seconds(&get("315360000"), "CLIENT_TIMEOUT_SECS", 75),
            Ok(ten_years)
        );
        for bad in ["0", "315360001", "18446744073709551615", "-5", "1.5"] {
            let err = seconds(&get(bad), "CLIENT_TIMEOUT_SECS", 75)
                .err()
                .map(|e| e.to_string());
            assert_eq!(
                err.as_deref(),
                Some(
                    "CLIENT_TIMEOUT_SECS is invalid: a whole number of seconds from 1 to 315360000 (10 years)"
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn trusted_browsers_last_days_or_are_off() {
        let get = |v: &'static str| {
            move |k: &str| (k == "MFA_TRUSTED_DEVICE_DAYS").then(|| v.to_string())
        };
        let days = |n: u64| Some(Duration::from_secs(n * 24 * 3600));
        assert_eq!(mfa_trusted_device(&|_: &str| None), Ok(days(30)));
        assert_eq!(mfa_trusted_device(&get(" 7 ")), Ok(days(7)));
        assert_eq!(mfa_trusted_device(&get("365")), Ok(days(365)));
        assert_eq!(mfa_trusted_device(&get("0")), Ok(None));
        for bad in ["366", "-1", "30d", "1.5"] {
            let err = mfa_trusted_device(&get(bad)).err().map(|e| e.to_string());
            assert_eq!(
                err.as_deref(),
                Some(
                    "MFA_TRUSTED_DEVICE_DAYS is invalid: a whole number of days from 0 (no \
                     trusted browsers) to 365"
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn worker_threads_is_optional_and_bounded() {
        let get = |v: &'static str| move |k: &str| (k == "WORKER_THREADS").then(|| v.to_string());
        assert_eq!(worker_threads(&|_: &str| None), Ok(None));
        assert_eq!(worker_threads(&get(" 1 ")), Ok(Some(1)));
        assert_eq!(worker_threads(&get("256")), Ok(Some(256)));
        // Empty is unset, as for every other setting (`WORKER_THREADS=` in a unit file).
        assert_eq!(worker_threads(&get("")), Ok(None));
        assert_eq!(worker_threads(&get(" ")), Ok(None));
        for bad in ["0", "257", "-1", "two"] {
            let err = worker_threads(&get(bad)).err().map(|e| e.to_string());
            assert_eq!(
                err.as_deref(),
                Some("WORKER_THREADS is invalid: a whole number from 1 to 256"),
                "{bad:?}"
            );
        }
    }

    /// Found by review: the start-up line printed a password given as a query parameter.
    #[test]
    fn urls_are_shown_without_their_passwords() {
        for (url, want) in [
            (
                "postgres://gw:s3cret@db.internal/gw",
                "postgres://gw:[redacted]@db.internal/gw",
            ),
            (
                "postgres://gw@db.internal/gw?password=s3cret&sslmode=verify-full",
                "postgres://gw@db.internal/gw?password=[redacted]&sslmode=verify-full",
            ),
            (
                "postgres:///gw?user=gw&password=s3cret",
                "postgres:///gw?user=gw&password=[redacted]",
            ),
            ("sqlite://rack-gateway.db", "sqlite://rack-gateway.db"),
        ] {
            assert_eq!(shown(url), want);
        }
    }

    #[test]
    fn switches_take_any_letter_case_and_name_every_form() {
        let get = |v: &'static str| move |k: &str| (k == "AUDIT_STDOUT").then(|| v.to_string());
        for (value, want) in [
            ("TRUE", true),
            ("Off", false),
            (" yes ", true),
            ("0", false),
        ] {
            assert_eq!(
                boolean(&get(value), "AUDIT_STDOUT", !want),
                Ok(want),
                "{value}"
            );
        }
        let err = boolean(&get("maybe"), "AUDIT_STDOUT", true)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("AUDIT_STDOUT is invalid: true or false (also 1/0, yes/no, on/off)")
        );
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: [(&str, &str); 2] = [
        ("RACK_HOST", "https://rack.test:5443"),
        ("RACK_TOKEN", "s3cret"),
    ];

    #[test]
    fn defaults() {
        let c = load(&BASE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8447");
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.rack_tls, RackTls::WebPki);
        assert!(c.audit_hmac_key.is_none());
    }

    #[test]
    fn admin_users_must_be_usable_addresses() {
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("OIDC_ISSUER", "https://idp.example.com"),
            ("OIDC_CLIENT_ID", "gw"),
            ("OIDC_CLIENT_SECRET", "s3cret"),
            ("PUBLIC_URL", "https://gw.example.com"),
            ("ADMIN_USERS", "ann@example.com, Bob@Example.com"),
        ]);
        let c = load(&pairs).unwrap_or_else(|e| panic!("{e}"));
        let admins = c.oidc.map(|o| o.admin_users).unwrap_or_default();
        assert_eq!(admins, ["ann@example.com", "bob@example.com"]);
        for bad in ["ann@example.com.", "\u{212A}ate@example.com", "nobody"] {
            let mut pairs = pairs.clone();
            pairs.retain(|(k, _)| *k != "ADMIN_USERS");
            pairs.push(("ADMIN_USERS", bad));
            let e = load(&pairs)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with("ADMIN_USERS"), "{bad}: {e}");
            // Found by fuzzing: the entry is not repeated (it could hold a pasted secret).
            assert!(e.contains("entry 1") && !e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn misspelt_settings_are_named_with_what_they_likely_meant() {
        let warnings = misspelt_settings([
            "OIDC_ALLOWED_DOMAIN",
            "AUDIT_ANCHOR_BUKET",
            "RACK_TOKEN",
            "HOME",
            "RACK_SOMETHING_ELSE_ENTIRELY",
            // Found by a docs-against-behaviour pass: these passed without a word, and the
            // first left the gateway on a new SQLite file in its working directory.
            "DATABASE_URI",
            "DATABSE_URL",
            "LOG_LEVL",
            "LISTEN_ADDRESS",
            "WORKERS_THREADS",
            "MAX_SESSION_PER_USER",
            "PORTS",
            "PATH",
            "HOSTNAME",
            // Other software's (found by review): no warning.
            "LISTEN_FDS",
            "LISTEN_PID",
            "DATABASE_PORT_5432_TCP_ADDR",
            "DATABASE_HOST",
            "WORKER_SERVICE_HOST",
            "SLACK_TOKEN",
            "LOG_DIR",
            "TOKIO_WORKER_THREADS",
        ]);
        assert_eq!(warnings.len(), 9, "{warnings:?}");
        assert!(
            warnings[0].contains("did you mean OIDC_ALLOWED_DOMAINS?"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("did you mean AUDIT_ANCHOR_BUCKET?"),
            "{warnings:?}"
        );
        assert!(
            warnings[2].contains("is not a setting: it is ignored"),
            "{warnings:?}"
        );
        for (i, meant) in [
            (3, "DATABASE_URL"),
            (4, "DATABASE_URL"),
            (5, "LOG_LEVEL"),
            (6, "LISTEN_ADDR"),
            (7, "WORKER_THREADS"),
            (8, "MAX_SESSIONS_PER_USER"),
        ] {
            assert!(
                warnings[i].contains(&format!("did you mean {meant}?")),
                "{warnings:?}"
            );
        }
        // Every setting the parser reads is known.
        assert!(misspelt_settings(SETTINGS.iter().copied()).is_empty());
    }

    #[test]
    fn an_unverified_database_connection_is_warned_about() {
        for quiet in [
            "sqlite://gw.db",
            "postgres://gw:pw@127.0.0.1/gw",
            "postgres://gw:pw@localhost:5432/gw",
            "postgres:///gw?host=/run/postgresql",
            "postgres://gw@db.internal/gw?sslmode=verify-full&sslrootcert=/ca.pem",
            "postgresql://gw@db.internal/gw?sslmode=VERIFY-CA",
        ] {
            assert_eq!(unverified_database(quiet, |_| None), None, "{quiet}");
        }
        for (loud, says) in [
            (
                "postgres://gw:pw@db.internal/gw",
                "only if the server offers it",
            ),
            (
                "postgres://gw@db.internal/gw?sslmode=require",
                "not checked (sslmode=require)",
            ),
            ("postgres://gw@10.0.0.5/gw?sslmode=disable", "not encrypted"),
        ] {
            let warning = unverified_database(loud, |_| None).unwrap_or_default();
            assert!(warning.contains(says), "{loud}: {warning}");
            assert!(
                !warning.contains("pw"),
                "the password is in the warning: {warning}"
            );
        }
    }

    /// Found by a docs-against-behaviour pass: the driver also reads libpq's variables, and
    /// the warning read only the URL.
    #[test]
    fn the_drivers_environment_decides_the_warning_when_the_url_does_not_say() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let remote = "postgres://gw:pw@db.internal/gw";
        assert_eq!(
            unverified_database(remote, env(&[("PGSSLMODE", "verify-full")])),
            None
        );
        let warning = unverified_database(remote, env(&[("PGSSLMODE", "disable")]));
        assert!(warning.is_some_and(|w| w.contains("not encrypted")));
        // The URL's own mode wins over the variable, as in the driver.
        assert!(
            unverified_database(
                "postgres://gw@db.internal/gw?sslmode=require",
                env(&[("PGSSLMODE", "verify-full")])
            )
            .is_some_and(|w| w.contains("sslmode=require"))
        );
        // No host in the URL: PGHOST names it.
        let warning = unverified_database("postgres:///gw", env(&[("PGHOST", "db.internal")]));
        assert!(warning.is_some_and(|w| w.contains("db.internal")));
        assert_eq!(
            unverified_database("postgres:///gw", env(&[("PGHOST", "/run/postgresql")])),
            None
        );
        assert_eq!(
            unverified_database("postgres://127.0.0.1/gw", env(&[("PGHOST", "db.internal")])),
            None
        );
        // Found by review: `?host=` and `?hostaddr=` override the URL's host in the driver,
        // and a socket given so is no network at all.
        assert!(
            unverified_database("postgres://gw@localhost/gw?host=db.internal", env(&[])).is_some()
        );
        assert!(
            unverified_database("postgres://gw@localhost/gw?hostaddr=10.0.0.5", env(&[])).is_some()
        );
        assert_eq!(
            unverified_database(
                "postgres://gw@db.internal/gw?host=/run/postgresql",
                env(&[])
            ),
            None
        );
        assert_eq!(
            unverified_database("postgres://gw@db.internal/gw?host=127.0.0.1", env(&[])),
            None
        );
        // The driver does not trim PGSSLMODE: one it cannot parse leaves `prefer`.
        assert!(
            unverified_database(remote, env(&[("PGSSLMODE", " verify-full")]))
                .is_some_and(|w| w.contains("only if the server offers it"))
        );
        assert_eq!(
            unverified_database(remote, env(&[("PGSSLMODE", "VERIFY-FULL")])),
            None
        );
    }

    #[test]
    fn a_plain_http_issuer_must_be_on_this_host() {
        let with_issuer = |issuer: &'static str| {
            let mut pairs = BASE.to_vec();
            pairs.extend([
                ("OIDC_ISSUER", issuer),
                ("OIDC_CLIENT_ID", "gw"),
                ("OIDC_CLIENT_SECRET", "s3cret"),
                ("PUBLIC_URL", "https://gw.example.com"),
            ]);
            load(&pairs).map(|c| c.oidc.is_some())
        };
        for ok in [
            "https://idp.example.com",
            "http://127.0.0.1:5556",
            "http://localhost:5556/dex",
            "http://[::1]:5556",
        ] {
            assert!(matches!(with_issuer(ok), Ok(true)), "{ok}");
        }
        for bad in [
            "http://idp.example.com",
            "http://10.0.0.5",
            "ftp://idp.example.com",
        ] {
            let e = with_issuer(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.starts_with("OIDC_ISSUER") && e.contains("loopback"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn connection_and_websocket_limits() {
        let c = load(&BASE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.max_connections, 4096);
        assert_eq!(c.websockets, WebSocketLimits::default());
        let mut pairs = BASE.to_vec();
        pairs.push(("MAX_WEBSOCKETS_PER_CREDENTIAL", " 4 "));
        let c = load(&pairs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.websockets.per_credential, 4);
        assert_eq!(c.sessions.max_per_user, 20);
        pairs.push(("MAX_SESSIONS_PER_USER", "3"));
        let c = load(&pairs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sessions.max_per_user, 3);
        for (name, bad) in [
            ("MAX_CONNECTIONS", "0"),
            ("MAX_SESSIONS_PER_USER", "0"),
            ("MAX_CONNECTIONS", "-1"),
            ("MAX_WEBSOCKETS", "1000001"),
            ("MAX_WEBSOCKETS_PER_CREDENTIAL", "many"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs.push((name, bad));
            let e = load(&pairs)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.starts_with(name) && e.contains("1 to 1000000"),
                "{name}={bad}: {e}"
            );
        }
    }

    #[test]
    fn debug_masks_secrets_and_url_passwords() {
        let c = load(&[
            ("RACK_HOST", "https://rack.test:5443"),
            ("RACK_TOKEN", "s3cret-rack-token"),
            ("AUDIT_HMAC_KEY", "0123456789abcdef0123456789abcdef"),
            ("AUDIT_HMAC_KEY_NEXT", "the-next-key-0123456789abcdef0123"),
            (
                "DATABASE_URL",
                "postgres://gw:db-pa55word@db.internal:5432/gw",
            ),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{c:?}");
        for secret in [
            "s3cret-rack-token",
            "0123456789abcdef0123456789abcdef",
            "the-next-key-0123456789abcdef0123",
            "db-pa55word",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("postgres://gw:[redacted]@db.internal:5432/gw"),
            "{shown}"
        );
        let store = StoreConfig::from_lookup(|k| {
            (k == "DATABASE_URL").then(|| "postgres://gw:db-pa55word@db/gw".to_string())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{store:?}").contains("db-pa55word"));
    }

    #[test]
    fn sqlite_synchronous_is_normal_unless_full_is_asked_for() {
        let sync = |v: Option<&str>| {
            StoreConfig::from_lookup(|k| {
                (k == "SQLITE_SYNCHRONOUS")
                    .then(|| v.map(str::to_string))
                    .flatten()
            })
            .map(|c| c.sqlite_sync)
        };
        assert_eq!(sync(None), Ok(SqliteSync::Normal));
        assert_eq!(sync(Some("  ")), Ok(SqliteSync::Normal));
        assert_eq!(sync(Some("normal")), Ok(SqliteSync::Normal));
        assert_eq!(sync(Some("FULL")), Ok(SqliteSync::Full));
        assert_eq!(sync(Some(" full ")), Ok(SqliteSync::Full));
        for bad in ["off", "extra", "2", "fulll"] {
            let e = sync(Some(bad)).map_err(|e| e.to_string());
            assert!(
                e.as_ref()
                    .is_err_and(|e| e.contains("SQLITE_SYNCHRONOUS") && e.contains("`full`")),
                "{bad}: {e:?}"
            );
        }
        let c = load(&[
            ("RACK_HOST", "https://r"),
            ("RACK_TOKEN", "x"),
            ("SQLITE_SYNCHRONOUS", "full"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sqlite_sync, SqliteSync::Full);
    }

    #[test]
    fn a_rack_over_plain_http_must_be_on_this_host() {
        for refused in [
            "http://rack.internal:5443",
            "http://10.0.0.5:5443",
            "http://[fd00::5]:5443",
            "http://localhost.example.com",
        ] {
            let e = load(&[("RACK_HOST", refused), ("RACK_TOKEN", "x")])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.starts_with("RACK_HOST is invalid") && e.contains("loopback"),
                "{refused}: {e}"
            );
        }
        for allowed in [
            "http://127.0.0.1:5443",
            "http://localhost:5443",
            "http://[::1]:5443",
            "https://rack.internal:5443",
            "https://10.0.0.5",
        ] {
            let loaded = load(&[("RACK_HOST", allowed), ("RACK_TOKEN", "x")]);
            assert!(loaded.is_ok(), "{allowed}: {:?}", loaded.err());
        }
    }

    #[test]
    fn missing_required_names_the_variable() {
        let e = load(&[("RACK_TOKEN", "x")]).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().starts_with("RACK_HOST is required"));
        let e = load(&[("RACK_HOST", "https://r")])
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().starts_with("RACK_TOKEN is required"));
    }

    #[test]
    fn a_rack_token_with_whitespace_or_control_characters_is_refused() {
        for token in [
            "s3cret\n",
            " s3cret",
            "s3cret\r\n",
            "s3c\u{7}ret",
            "s3\tcret",
        ] {
            let e = load(&[("RACK_HOST", "https://r"), ("RACK_TOKEN", token)])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with("RACK_TOKEN"), "{token:?}: {e}");
            assert!(e.contains("trailing newline") && !e.contains("s3"), "{e}");
        }
    }

    #[test]
    fn trusted_proxies_are_validated() {
        let c = load(&BASE).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.trusted_proxies.is_empty(), "none by default");
        let mut pairs = BASE.to_vec();
        pairs.push(("TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7"));
        let c = load(&pairs).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.trusted_proxies.contains([10, 1, 2, 3].into()));
        let mut pairs = BASE.to_vec();
        pairs.push(("TRUSTED_PROXIES", "10.0.0.0/8, lb.internal"));
        let e = load(&pairs)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("TRUSTED_PROXIES") && e.contains("entry 2 is not"),
            "{e}"
        );
        // Found by the `config` fuzz target: the offending entry was quoted in the message, and
        // a URL pasted by mistake carried its password into it. Same message for any password.
        let with = |password: &str| {
            let value = format!("https://@XN--gkygk?:{password}@:65535");
            let mut pairs = BASE.to_vec();
            pairs.push(("TRUSTED_PROXIES", value.as_str()));
            load(&pairs).err().map(|e| e.to_string())
        };
        assert!(with("08").is_some());
        assert_eq!(with("08"), with("19"));
    }

    #[test]
    fn port_alone_works() {
        let mut pairs = BASE.to_vec();
        pairs.push(("PORT", "9000"));
        let c = load(&pairs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.listen_addr.port(), 9000);
    }

    /// The error `pairs` are refused with ("" when they are not).
    fn refused(pairs: &[(&str, &str)]) -> String {
        load(pairs).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn the_mfa_key_is_32_bytes_of_hex_and_never_printed() {
        assert!(
            load(&BASE)
                .ok()
                .is_some_and(|c| c.mfa_encryption_key.is_none())
        );
        let key = "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
        let mut pairs = BASE.to_vec();
        pairs.push(("MFA_ENCRYPTION_KEY", key));
        let c = load(&pairs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.mfa_encryption_key.as_ref().map(Secret::expose),
            Some(key.to_ascii_lowercase().as_str())
        );
        assert!(!format!("{c:?}").contains("0123456789"), "{c:?}");
        for bad in [
            &key[..62],
            "zz23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            let mut pairs = BASE.to_vec();
            pairs.push(("MFA_ENCRYPTION_KEY", bad));
            let error = refused(&pairs);
            assert!(
                error.starts_with("MFA_ENCRYPTION_KEY is invalid: 64 hex"),
                "{error}"
            );
            assert!(!error.contains(bad), "the value is not repeated");
        }
        // Retired keys: whitespace-separated, each checked alike, never printed.
        let old = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
        let both = format!("{old}\n {}", key.to_ascii_lowercase());
        let mut pairs = BASE.to_vec();
        pairs.push(("MFA_ENCRYPTION_KEY_RETIRED", &both));
        let c = load(&pairs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.mfa_encryption_key_retired.len(), 2);
        assert!(!format!("{c:?}").contains("fedcba98"), "{c:?}");
        let bad = format!("{old} {}", &key[..62]);
        let mut pairs = BASE.to_vec();
        pairs.push(("MFA_ENCRYPTION_KEY_RETIRED", &bad));
        let error = refused(&pairs);
        assert!(
            error.starts_with("MFA_ENCRYPTION_KEY_RETIRED is invalid: 64 hex")
                && !error.contains(old),
            "{error}"
        );
        // Requiring it needs the key.
        let mut pairs = BASE.to_vec();
        pairs.push(("MFA_REQUIRED", "true"));
        assert!(refused(&pairs).starts_with("MFA_ENCRYPTION_KEY is required: with MFA_REQUIRED"));
        pairs.push(("MFA_ENCRYPTION_KEY", key));
        let c = load(&pairs).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.mfa_required);
        let warnings = c.start_up_warnings();
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("MFA_REQUIRED has no effect without OIDC")),
            "{warnings:?}"
        );
    }

    #[test]
    fn metrics_get_a_port_of_their_own() {
        assert_eq!(
            load(&BASE).map(|c| c.metrics_listen_addr).ok(),
            Some(None),
            "off unless set"
        );
        let mut pairs = BASE.to_vec();
        pairs.push(("METRICS_LISTEN_ADDR", " 0.0.0.0:9447 "));
        let c = load(&pairs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.metrics_listen_addr.map(|a| a.to_string()).as_deref(),
            Some("0.0.0.0:9447")
        );
        for (value, expected) in [
            ("9447", "an IP address and port"),
            ("localhost:9447", "an IP address and port"),
            ("127.0.0.1:8447", "a port other than the gateway's"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs.push(("METRICS_LISTEN_ADDR", value));
            let e = refused(&pairs);
            assert!(
                e.starts_with("METRICS_LISTEN_ADDR") && e.contains(expected),
                "{value}: {e}"
            );
        }
        // Both on port 0: each gets a free port of its own.
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("METRICS_LISTEN_ADDR", "127.0.0.1:0"),
        ]);
        assert!(load(&pairs).is_ok());
    }

    #[test]
    fn listen_addr_and_port_must_agree() {
        let mut pairs = BASE.to_vec();
        pairs.extend([("PORT", "9000"), ("LISTEN_ADDR", "127.0.0.1:9000")]);
        let c = load(&pairs).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:9000");
        pairs.push(("LISTEN_ADDR", "127.0.0.1:8447"));
        let e = load(&pairs)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("LISTEN_ADDR") && e.contains("PORT"), "{e}");
    }

    #[test]
    fn numbers_are_plain_digits() {
        for (name, value) in [
            ("PORT", "+9000"),
            ("MAX_CONNECTIONS", "+10"),
            ("SESSION_LIFETIME_SECS", "+3600"),
            ("MAX_WEBSOCKETS", "1_000"),
            ("CLIENT_TIMEOUT_SECS", "0x10"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs.push((name, value));
            let e = refused(&pairs);
            assert!(e.starts_with(name), "{name}={value}: {e}");
        }
        let get = |_: &str| Some("+4".to_string());
        assert!(worker_threads(&get).is_err());
        let mut pairs = BASE.to_vec();
        pairs.push(("MAX_CONNECTIONS", " 10 "));
        assert!(matches!(load(&pairs), Ok(c) if c.max_connections == 10));
    }

    #[test]
    fn contradicting_settings_are_named() {
        assert!(
            load(&BASE)
                .map(|c| c.start_up_warnings())
                .unwrap_or_default()
                .is_empty()
        );
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("SESSION_IDLE_TIMEOUT_SECS", "7200"),
            ("SESSION_LIFETIME_SECS", "3600"),
            ("MAX_WEBSOCKETS", "4"),
            ("MAX_WEBSOCKETS_PER_CREDENTIAL", "8"),
        ]);
        let found = load(&pairs)
            .map(|c| c.start_up_warnings())
            .unwrap_or_default();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("SESSION_IDLE_TIMEOUT_SECS (7200 s)"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("MAX_WEBSOCKETS_PER_CREDENTIAL (8)"),
            "{found:?}"
        );
    }

    #[test]
    fn public_urls_over_plain_http_to_another_host_are_named() {
        let warnings = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = BASE.to_vec();
            pairs.extend([
                ("OIDC_ISSUER", "https://idp.example.com"),
                ("OIDC_CLIENT_ID", "gw"),
                ("OIDC_CLIENT_SECRET", "s3c"),
            ]);
            pairs.extend_from_slice(extra);
            load(&pairs)
                .map(|c| c.start_up_warnings())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let found = warnings(&[("PUBLIC_URL", "http://gateway.example.com")]);
        assert_eq!(found.len(), 1, "one line, not one per URL: {found:?}");
        assert!(found[0].starts_with("PUBLIC_URL (http://gateway.example.com/)"));
        let found = warnings(&[
            ("PUBLIC_URL", "https://gateway.example.com"),
            (
                "OIDC_REDIRECT_URL",
                "http://gateway.internal/api/v1/auth/callback",
            ),
        ]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("OIDC_REDIRECT_URL"), "{found:?}");
        for quiet in ["https://gateway.example.com", "http://127.0.0.1:8447"] {
            let found = warnings(&[("PUBLIC_URL", quiet)]);
            assert!(found.is_empty(), "{quiet}: {found:?}");
        }
    }

    #[test]
    fn sign_in_settings_that_could_never_work_are_refused() {
        let with = |name: &'static str, value: &'static str| {
            let mut pairs = BASE.to_vec();
            pairs.extend([
                ("OIDC_ISSUER", "https://idp.example.com"),
                ("OIDC_CLIENT_ID", "gw"),
                ("OIDC_CLIENT_SECRET", "s3cret"),
                ("PUBLIC_URL", "https://gw.example.com"),
            ]);
            pairs.retain(|(k, _)| *k != name);
            pairs.push((name, value));
            pairs
        };
        let domains = load(&with(
            "OIDC_ALLOWED_DOMAINS",
            " Example.com, corp.example.org ",
        ))
        .map(|c| c.oidc.map(|o| o.allowed_domains).unwrap_or_default());
        assert_eq!(
            domains.ok(),
            Some(vec![
                "example.com".to_string(),
                "corp.example.org".to_string()
            ])
        );
        for bad in [
            "@example.com",
            "example.com,https://corp.example.org",
            "example.com.",
            "localhost",
            "example.com:443",
            "exa mple.com",
            "-x.example.com",
        ] {
            let e = refused(&with("OIDC_ALLOWED_DOMAINS", bad));
            assert!(
                e.starts_with("OIDC_ALLOWED_DOMAINS") && e.contains("entry"),
                "{bad}: {e}"
            );
        }
        for bad in ["s3cret\n", " s3cret", "s3c\tret"] {
            let e = refused(&with("OIDC_CLIENT_SECRET", bad));
            assert!(
                e.starts_with("OIDC_CLIENT_SECRET") && !e.contains("s3c"),
                "{e}"
            );
        }
    }

    #[test]
    fn malformed_values_are_rejected_without_echoing_secrets() {
        for (name, value) in [
            ("RACK_HOST", "ftp://x"),
            ("RACK_HOST", "https://convox:tok@rack"),
            ("LISTEN_ADDR", "nope"),
            ("DATABASE_URL", "mysql://x"),
            ("DATABASE_URL", "sqlite://"),
            ("DATABASE_URL", "sqlite:gateway.db"),
            ("DATABASE_URL", "sqlite://x.db?mode=memory"),
            ("DATABASE_URL", "sqlite://:memory:"),
            ("AUDIT_HMAC_KEY", "0123456789abcdef0123456789abcdef\n"),
            ("AUDIT_HMAC_KEY", "ééééééééééééééééé"),
            ("DATABASE_URL", "sqlite://?mode=rwc"),
            ("AUDIT_HMAC_KEY", "short-secret-value"),
            ("AUDIT_HMAC_KEY_RETIRED", "short-secret-value"),
            ("AUDIT_HMAC_KEY_NEXT", "short-secret-value"),
            (
                "AUDIT_HMAC_KEY_RETIRED",
                "0123456789abcdef0123456789abcdef short-secret-value",
            ),
            ("RACK_TLS_PIN_SHA256", "abcd"),
            ("RACK_READ_TIMEOUT_SECS", "-1"),
            ("AUDIT_STDOUT", "maybe"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs.retain(|(k, _)| *k != name);
            pairs.push((name, value));
            let err = load(&pairs)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.starts_with(name), "{name}: {err}");
            assert!(
                !err.contains("short-secret-value") && !err.contains("tok@"),
                "{err}"
            );
        }
    }
}
