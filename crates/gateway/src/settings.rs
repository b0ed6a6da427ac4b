//! The gateway's effective settings, for admins and auditors (`gateway:settings:read`): what
//! `/settings` and `GET /api/v1/settings` show — each setting by its environment variable,
//! with the value this gateway runs with (defaults included). A secret is never shown: only
//! whether it is set. Addresses lose any user and password they carry.

use std::time::Duration;

use serde::Serialize;
use url::Url;

use crate::app::AppState;
use gateway_core::config::{Config, RackTls};

/// Permission to read the settings.
pub const READ: &str = "gateway:settings:read";

/// A group of settings.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Section {
    /// Its heading.
    pub title: &'static str,
    /// Its settings, in the order docs/configuration.md gives them.
    pub settings: Vec<Setting>,
}

/// One setting.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Setting {
    /// The environment variable (or, for what several decide, a short name).
    pub name: &'static str,
    /// Its effective value, as text.
    pub value: String,
}

fn setting(name: &'static str, value: impl Into<String>) -> Setting {
    Setting {
        name,
        value: value.into(),
    }
}

/// A secret: whether it is set, never what it is.
fn secret(set: bool) -> String {
    if set { "set (not shown)" } else { "not set" }.into()
}

fn on(yes: bool) -> String {
    if yes { "on" } else { "off" }.into()
}

fn secs(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0 s".into(),
        86_400 => "86400 s (1 day)".into(),
        s if s % 86_400 == 0 => format!("{s} s ({} days)", s / 86_400),
        s if s % 3_600 == 0 => format!("{s} s ({} h)", s / 3_600),
        s if s % 60 == 0 => format!("{s} s ({} min)", s / 60),
        s => format!("{s} s"),
    }
}

/// `url` without its user, password, query and fragment (a key pasted into one stays hidden).
fn shown_url(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// `DATABASE_URL` as the backend and where it is, without a password or parameters.
fn database(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(url) if url.scheme() == "sqlite" => {
            let path = raw
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap_or_default();
            format!("SQLite, {path}")
        }
        Ok(url) => {
            let host = url.host_str().unwrap_or_default();
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("PostgreSQL, {host}{port}{}", url.path())
        }
        Err(_) => "unreadable".into(),
    }
}

fn list(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_string()
    } else {
        items.join(", ")
    }
}

/// The settings of the gateway behind `state`.
pub fn effective(state: &AppState) -> Vec<Section> {
    let mut sections = of_config(&state.config);
    // What the running gateway made of them.
    if let Some(mfa) = sections.iter_mut().find(|s| s.title == "Two-step sign-in") {
        mfa.settings.push(setting(
            "Security keys (WebAuthn)",
            match state.keys.as_deref() {
                Some(keys) => format!("on, bound to {}", keys.rp_id()),
                None => {
                    "off: browsers reach the gateway by an address, not a name (PUBLIC_URL)".into()
                }
            },
        ));
    }
    sections
}

/// The settings `config` gives.
pub fn of_config(c: &Config) -> Vec<Section> {
    let rack_tls = match &c.rack_tls {
        RackTls::WebPki => "the system's certificate authorities".to_string(),
        RackTls::CaFile(path) => format!("RACK_CA_FILE {}", path.display()),
        RackTls::Pinned(_) => "pinned certificate (RACK_TLS_PIN_SHA256)".to_string(),
    };
    let oidc = c.oidc.as_ref();
    let anchors = c.audit_anchors.as_ref();
    let slack = c.notify.slack.as_ref();
    let email = c.notify.email.as_ref();
    vec![
        Section {
            title: "Rack",
            settings: vec![
                setting("RACK_HOST", shown_url(&c.rack_host)),
                setting("RACK_TOKEN", secret(true)),
                setting("Rack certificate check", rack_tls),
                setting("RACK_CONNECT_TIMEOUT_SECS", secs(c.rack_connect_timeout)),
                setting("RACK_READ_TIMEOUT_SECS", secs(c.rack_read_timeout)),
            ],
        },
        Section {
            title: "Gateway",
            settings: vec![
                setting("Version", env!("CARGO_PKG_VERSION")),
                setting(
                    "PUBLIC_URL",
                    c.public_url.as_ref().map_or("not set".into(), shown_url),
                ),
                setting("LISTEN_ADDR", c.listen_addr.to_string()),
                setting(
                    "METRICS_LISTEN_ADDR",
                    c.metrics_listen_addr
                        .map_or("off".into(), |a| a.to_string()),
                ),
                setting("DATABASE_URL", database(&c.database_url)),
                setting(
                    "TRUSTED_PROXIES",
                    list(&c.trusted_proxies.networks(), "none"),
                ),
                setting("MAX_CONNECTIONS", c.max_connections.to_string()),
                setting("MAX_WEBSOCKETS", c.websockets.total.to_string()),
                setting(
                    "MAX_WEBSOCKETS_PER_CREDENTIAL",
                    c.websockets.per_credential.to_string(),
                ),
                setting("CLIENT_TIMEOUT_SECS", secs(c.client_timeout)),
                setting("SHUTDOWN_TIMEOUT_SECS", secs(c.shutdown_timeout)),
                setting(
                    "WORKER_THREADS",
                    c.worker_threads
                        .map_or("one per core".into(), |n| n.to_string()),
                ),
            ],
        },
        Section {
            title: "Sign-in",
            settings: vec![
                setting(
                    "OIDC_ISSUER",
                    oidc.map_or("not set: API tokens only".into(), |o| shown_url(&o.issuer)),
                ),
                setting(
                    "OIDC_CLIENT_ID",
                    oidc.map_or(String::new(), |o| o.client_id.clone()),
                ),
                setting("OIDC_CLIENT_SECRET", secret(oidc.is_some())),
                setting(
                    "OIDC_ALLOWED_DOMAINS",
                    oidc.map_or(String::new(), |o| list(&o.allowed_domains, "any")),
                ),
                setting(
                    "ADMIN_USERS",
                    oidc.map_or(String::new(), |o| list(&o.admin_users, "nobody")),
                ),
                setting(
                    "OIDC_REDIRECT_URL",
                    oidc.map_or(String::new(), |o| shown_url(&o.redirect_url)),
                ),
                setting("SESSION_LIFETIME_SECS", secs(c.sessions.lifetime)),
                setting("SESSION_IDLE_TIMEOUT_SECS", secs(c.sessions.idle_timeout)),
                setting("MAX_SESSIONS_PER_USER", c.sessions.max_per_user.to_string()),
            ],
        },
        Section {
            title: "Two-step sign-in",
            settings: vec![
                setting("MFA_REQUIRED", on(c.mfa_required)),
                setting("MFA_ENCRYPTION_KEY", secret(c.mfa_encryption_key.is_some())),
                setting(
                    "MFA_ENCRYPTION_KEY_RETIRED",
                    format!("{} key(s)", c.mfa_encryption_key_retired.len()),
                ),
                setting("MFA_STEP_UP_SECS", secs(c.mfa_step_up)),
                setting(
                    "MFA_TRUSTED_DEVICE_DAYS",
                    c.mfa_trusted_device
                        .map_or("0: no browser is trusted".into(), secs),
                ),
                setting(
                    "YUBICO_CLIENT_ID",
                    c.yubico
                        .as_ref()
                        .map_or("not set: YubiKey OTPs off".into(), |y| {
                            format!("{} ({})", y.client_id, shown_url(&y.api_url))
                        }),
                ),
                setting("YUBICO_SECRET_KEY", secret(c.yubico.is_some())),
            ],
        },
        Section {
            title: "Deploy approvals",
            settings: vec![
                setting(
                    "DEPLOY_APPROVAL_WINDOW_SECS",
                    secs(c.deploy_approval_window),
                ),
                setting(
                    "DEPLOY_APPROVAL_REQUEST_TTL_SECS",
                    secs(c.deploy_approval_request_ttl),
                ),
                setting(
                    "Approving from Slack",
                    on(slack.is_some_and(|s| s.app.is_some())),
                ),
            ],
        },
        Section {
            title: "Audit trail",
            settings: vec![
                setting(
                    "AUDIT_HMAC_KEY",
                    if c.audit_hmac_key.is_some() {
                        secret(true)
                    } else {
                        "not set: a key generated once and kept in the database".into()
                    },
                ),
                setting(
                    "AUDIT_HMAC_KEY_NEXT",
                    secret(c.audit_hmac_key_next.is_some()),
                ),
                setting("AUDIT_STDOUT", on(c.audit_stdout)),
                setting("SQLITE_SYNCHRONOUS", c.sqlite_sync.pragma().to_lowercase()),
                setting(
                    "AUDIT_ANCHOR_BUCKET",
                    anchors.map_or("not set: no anchors".into(), |a| {
                        format!("{}, prefix {:?}, region {}", a.bucket, a.prefix, a.region)
                    }),
                ),
                setting(
                    "AUDIT_ANCHOR_ENDPOINT",
                    anchors
                        .and_then(|a| a.endpoint.as_ref())
                        .map_or("AWS S3".into(), shown_url),
                ),
                setting(
                    "AUDIT_ANCHOR_INTERVAL_SECS",
                    anchors.map_or(String::new(), |a| secs(a.interval)),
                ),
                setting(
                    "AUDIT_ANCHOR_RETENTION_DAYS",
                    anchors.map_or(String::new(), |a| secs(a.retention)),
                ),
            ],
        },
        Section {
            title: "Notifications",
            settings: vec![
                setting("SLACK_WEBHOOK_URL", secret(slack.is_some())),
                setting(
                    "SLACK_SIGNING_SECRET",
                    secret(slack.is_some_and(|s| s.app.is_some())),
                ),
                setting(
                    "SLACK_BOT_TOKEN",
                    secret(slack.is_some_and(|s| s.app.is_some())),
                ),
                setting(
                    "SLACK_API_URL",
                    slack
                        .and_then(|s| s.app.as_ref())
                        .map_or(String::new(), |a| shown_url(&a.api_url)),
                ),
                setting(
                    "SMTP_URL",
                    email.map_or("not set: no e-mail".into(), |e| {
                        Url::parse(e.smtp_url.expose())
                            .map(|u| shown_url(&u))
                            .unwrap_or_else(|_| "set".into())
                    }),
                ),
                setting(
                    "EMAIL_FROM",
                    email.map_or(String::new(), |e| e.from.clone()),
                ),
                setting(
                    "EMAIL_ALERTS_TO",
                    email.map_or(String::new(), |e| list(&e.alerts_to, "nobody")),
                ),
                setting(
                    "NOTIFY_OFF",
                    list(&c.notify.off, "none: every topic is sent"),
                ),
                setting(
                    "NOTIFY_REFUSAL_BURST",
                    match c.notify.refusal_burst {
                        0 => "0: refusals are not announced".into(),
                        n => format!("{n} refusals of one credential in 5 minutes"),
                    },
                ),
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_shown_or_folded_into_one_that_is() {
        let config = Config::from_lookup(|name| match name {
            "RACK_HOST" => Some("https://rack.example.com".into()),
            "RACK_TOKEN" => Some("rack-token-of-some-length".into()),
            _ => None,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let shown: Vec<&str> = of_config(&config)
            .iter()
            .flat_map(|s| s.settings.iter().map(|s| s.name))
            .collect();
        // Shown within another row, or not the gateway's to show.
        let folded = [
            "PORT",                   // LISTEN_ADDR
            "RACK_CA_FILE",           // the rack certificate check
            "RACK_TLS_PIN_SHA256",    // the rack certificate check
            "AUDIT_ANCHOR_PREFIX",    // AUDIT_ANCHOR_BUCKET
            "AUDIT_ANCHOR_REGION",    // AUDIT_ANCHOR_BUCKET
            "YUBICO_API_URL",         // YUBICO_CLIENT_ID
            "AUDIT_HMAC_KEY_RETIRED", // read by `audit verify` only
            "LOG_LEVEL",              // read by the binary before the configuration
            "LOG_FORMAT",             // read by the binary before the configuration
        ];
        let missing: Vec<&str> = gateway_core::config::SETTINGS
            .iter()
            .copied()
            .filter(|name| !shown.contains(name) && !folded.contains(name))
            .collect();
        assert!(missing.is_empty(), "not on /settings: {missing:?}");
    }

    #[test]
    fn addresses_lose_their_credentials() {
        let url = |s: &str| Url::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            shown_url(&url("https://u:hunter2@rack.example.com:5443/?key=abc#x")),
            "https://rack.example.com:5443/"
        );
        assert_eq!(
            database("postgres://gw:hunter2@db.internal:5432/gateway?sslmode=verify-full"),
            "PostgreSQL, db.internal:5432/gateway"
        );
        assert_eq!(
            database("sqlite://.rack-gateway/gateway.db?mode=rwc"),
            "SQLite, .rack-gateway/gateway.db"
        );
        assert_eq!(secs(Duration::from_secs(900)), "900 s (15 min)");
        assert_eq!(
            secs(Duration::from_secs(30 * 86_400)),
            "2592000 s (30 days)"
        );
    }
}
