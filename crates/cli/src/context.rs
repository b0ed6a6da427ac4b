//! What a command runs against: the selected rack's gateway (or, for troubleshooting and
//! benchmarks, a rack API directly), the HTTP client, and the output mode.

use std::cell::OnceCell;

use convox_api::client::Client;

use crate::config::{self, Config, RackEntry, Selected, TokenType};
use crate::error::{CliError, CliResult};

/// Environment variable pointing the CLI at a Convox rack API directly, bypassing any
/// gateway (`http://convox:<rack token>@127.0.0.1:5443`). For troubleshooting and benchmarks.
pub const DIRECT_ENV: &str = "RACK_GATEWAY_DIRECT_RACK_URL";

/// The path of the rack proxy on a gateway.
pub const PROXY_PATH: &str = "/api/v1/rack-proxy";

/// Where requests go.
#[derive(Debug, Clone)]
pub enum Target {
    /// A configured rack behind its gateway.
    Gateway(Selected),
    /// A rack API without a gateway.
    Direct {
        /// Base URL without credentials.
        url: String,
        /// The rack token.
        token: String,
    },
}

impl Target {
    /// The rack's name (`direct` for a direct URL).
    pub fn name(&self) -> &str {
        match self {
            Target::Gateway(s) => &s.name,
            Target::Direct { .. } => "direct",
        }
    }

    /// The gateway's (or the direct rack's) base URL.
    pub fn base_url(&self) -> &str {
        match self {
            Target::Gateway(s) => &s.entry.gateway_url,
            Target::Direct { url, .. } => url,
        }
    }

    /// The rack entry, when behind a gateway.
    pub fn entry(&self) -> Option<&RackEntry> {
        match self {
            Target::Gateway(s) => Some(&s.entry),
            Target::Direct { .. } => None,
        }
    }

    /// The rack API's base URL.
    pub fn api_url(&self) -> String {
        match self {
            Target::Gateway(s) => format!("{}{PROXY_PATH}", s.entry.gateway_url),
            Target::Direct { url, .. } => url.clone(),
        }
    }

    /// The credential.
    pub fn token(&self) -> &str {
        match self {
            Target::Gateway(s) => &s.entry.token,
            Target::Direct { token, .. } => token,
        }
    }

    /// `RACK_URL` for the stock `convox` CLI: the API URL with `convox:<token>` in it.
    pub fn rack_url(&self) -> CliResult<String> {
        let mut url = url::Url::parse(&self.api_url())
            .map_err(|e| CliError::Config(format!("bad URL {}: {e}", self.api_url())))?;
        url.set_username(convox_api::client::BASIC_USER)
            .and_then(|()| url.set_password(Some(self.token())))
            .map_err(|()| CliError::Config(format!("cannot put credentials in {url}")))?;
        Ok(url.to_string())
    }

    /// The `login` command that renews this rack's credential.
    pub fn login_hint(&self) -> String {
        match self {
            Target::Gateway(s) => {
                // Without the flag it was signed in with, the hint would be refused.
                let insecure = url::Url::parse(&s.entry.gateway_url)
                    .is_ok_and(|u| crate::commands::auth::needs_insecure_http(&u));
                format!(
                    "rack-gateway login {} {}{}",
                    s.name,
                    s.entry.gateway_url,
                    if insecure { " --insecure-http" } else { "" }
                )
            }
            Target::Direct { .. } => format!("set {DIRECT_ENV} to a working rack URL"),
        }
    }
}

/// Parses a direct rack URL (`http://convox:<token>@host:port`).
fn direct(raw: &str) -> CliResult<Target> {
    let mut url = url::Url::parse(raw)
        .map_err(|e| CliError::Usage(format!("{DIRECT_ENV} is not a URL: {e}")))?;
    let token = url
        .password()
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok(Target::Direct {
        url: url.as_str().trim_end_matches('/').to_string(),
        token,
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Shared state of one invocation.
#[derive(Debug)]
pub struct Ctx {
    /// `--json`.
    pub json: bool,
    rack_flag: Option<String>,
    target: OnceCell<Target>,
}

impl Ctx {
    /// A context for the global flags.
    pub fn new(json: bool, rack_flag: Option<String>) -> Self {
        Self {
            json,
            rack_flag,
            target: OnceCell::new(),
        }
    }

    /// `--rack`.
    pub fn rack_flag(&self) -> Option<&str> {
        self.rack_flag.as_deref()
    }

    /// The target once resolved (for error messages).
    pub fn resolved(&self) -> Option<&Target> {
        self.target.get()
    }

    /// The selected rack's gateway and a client for the gateway's own API, for a command that
    /// only a gateway answers (`subject` says what it is about, e.g. "users are a
    /// rack-gateway's"): refused as a usage error on a rack reached without one.
    pub fn gateway(&self, subject: &str) -> CliResult<(&Selected, crate::gateway_api::GatewayApi)> {
        let Target::Gateway(selected) = self.target()? else {
            return Err(CliError::Usage(format!(
                "{subject}: this rack has no gateway (RACK_URL points at the rack itself)"
            )));
        };
        let api = crate::gateway_api::GatewayApi::new(http_client()?, &selected.entry.gateway_url);
        Ok((selected, api))
    }

    /// Resolves the target (once): the direct URL if set, else the selected rack. Warns on
    /// stderr when a session expires within two hours.
    pub fn target(&self) -> CliResult<&Target> {
        if let Some(t) = self.target.get() {
            return Ok(t);
        }
        let target = match std::env::var(DIRECT_ENV).ok().filter(|v| !v.is_empty()) {
            Some(raw) => {
                if let Some(rack) = self.rack_flag() {
                    // Said, not silently overridden: the command bypasses the gateway and its
                    // audit trail, whatever rack was asked for.
                    eprintln!(
                        "warning: {DIRECT_ENV} is set: --rack {} is ignored, and this command \
                         goes straight to the rack, not through a gateway",
                        crate::output::printable(rack)
                    );
                }
                direct(&raw)?
            }
            None => {
                let config = Config::load(&config::path()?)?;
                Target::Gateway(config.select(self.rack_flag())?)
            }
        };
        warn_if_expiring(&target);
        Ok(self.target.get_or_init(|| target))
    }

    /// A rack API client for the target.
    pub fn client(&self) -> CliResult<Client> {
        let target = self.target()?;
        Ok(Client::with_http(
            http_client()?,
            &target.api_url(),
            target.token(),
        )?)
    }
}

/// The HTTP client every call uses.
pub fn http_client() -> CliResult<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("rack-gateway-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(10))
        // A redirect is an error, never followed: it could take a form (an env value, a
        // sign-in's verifier) to another host. (reqwest drops `Authorization` then, not bodies.)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| CliError::Config(format!("cannot set up HTTP: {e}")))
}

/// How close to its end a session must be for the reminder: sessions last a day by default,
/// so a day's notice warned on every command right after signing in.
const WARN_BEFORE_MS: i64 = 2 * 3600 * 1000;

/// The session-expiry reminder.
fn warn_if_expiring(target: &Target) {
    let Some(entry) = target.entry() else { return };
    let Some(expires_at) = entry.expires_at else {
        return;
    };
    let (what, renew) = match entry.token_type {
        TokenType::Session => ("session", format!("run `{}`", target.login_hint())),
        // A token is renewed by whoever creates tokens: a new one, then a login with it.
        TokenType::ApiToken => (
            "API token",
            format!(
                "ask an admin for a new one, then `{} --token <new token>`",
                target.login_hint()
            ),
        ),
    };
    let left = expires_at.saturating_sub(now_ms());
    if left <= 0 {
        eprintln!(
            "warning: your {what} for rack {} has expired: {renew}",
            target.name()
        );
    } else if left < WARN_BEFORE_MS {
        eprintln!(
            "warning: your {what} for rack {} expires in {}: {renew}",
            target.name(),
            crate::output::span_ms(left)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_urls_lose_their_credentials() {
        match direct("http://convox:s%40cret@127.0.0.1:5443/") {
            Ok(Target::Direct { url, token }) => {
                assert_eq!(url, "http://127.0.0.1:5443");
                assert_eq!(token, "s@cret");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn login_hints_repeat_insecure_http_when_it_was_needed() {
        let hint = |url: &str| {
            Target::Gateway(Selected {
                name: "dev".into(),
                entry: RackEntry {
                    gateway_url: url.into(),
                    token: "rgw_abc".into(),
                    token_type: TokenType::Session,
                    email: None,
                    role: None,
                    expires_at: None,
                    token_name: None,
                },
            })
            .login_hint()
        };
        assert_eq!(
            hint("http://10.0.0.5:8447"),
            "rack-gateway login dev http://10.0.0.5:8447 --insecure-http"
        );
        assert_eq!(
            hint("https://gw.example.com"),
            "rack-gateway login dev https://gw.example.com"
        );
        assert_eq!(
            hint("http://127.0.0.1:8447"),
            "rack-gateway login dev http://127.0.0.1:8447"
        );
    }

    #[test]
    fn rack_url_carries_the_token() {
        let target = Target::Gateway(Selected {
            name: "dev".into(),
            entry: RackEntry {
                gateway_url: "https://gw.example.com".into(),
                token: "rgw_abc".into(),
                token_type: TokenType::ApiToken,
                email: None,
                role: None,
                expires_at: None,
                token_name: None,
            },
        });
        assert_eq!(
            target.rack_url().ok().as_deref(),
            Some("https://convox:rgw_abc@gw.example.com/api/v1/rack-proxy")
        );
    }
}
