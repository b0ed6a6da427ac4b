//! Sign-in through OpenID Connect: the provider, the client, who may sign in, and sessions.

use std::time::Duration;

use url::Url;

use super::values::required_secret;
use super::{ConfigError, Secret, anchors, plain_base_problem};

/// OpenID Connect settings.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: Url,
    /// The issuer exactly as configured: the provider's metadata must name it character for
    /// character (`https://tenant.auth0.com/` keeps its slash, Google's has none), which the
    /// parsed [`OidcConfig::issuer`] no longer shows for a URL with no path.
    pub issuer_id: String,
    /// Client id registered with the provider.
    pub client_id: String,
    /// Client secret.
    pub client_secret: Secret,
    /// E-mail domains (and Google `hd` values) allowed to sign in; empty allows any.
    pub allowed_domains: Vec<String>,
    /// E-mails that become admin on first sign-in.
    pub admin_users: Vec<String>,
    /// The callback URL registered with the provider.
    pub redirect_url: Url,
}

impl OidcConfig {
    /// True for Google, whose `hd` claim names the Workspace domain.
    pub fn is_google(&self) -> bool {
        self.issuer.host_str() == Some("accounts.google.com")
    }
}

/// How long sessions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, used or not.
    pub lifetime: Duration,
    /// Most sessions one user may have open at once; a sign-in past it ends the user's least
    /// recently used ones.
    pub max_per_user: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Duration::from_secs(8 * 3600),
            lifetime: Duration::from_secs(24 * 3600),
            max_per_user: 20,
        }
    }
}

/// The path of the sign-in callback, under the public URL.
pub const OIDC_CALLBACK_PATH: &str = "/api/v1/auth/callback";

pub(super) fn parse_oidc(
    get: &impl Fn(&str) -> Option<String>,
    public_url: Option<&Url>,
) -> Result<Option<OidcConfig>, ConfigError> {
    let Some(issuer_id) = get("OIDC_ISSUER") else {
        return Ok(None);
    };
    // Mistakes are named in this order: the issuer, the client, then who may sign in.
    let issuer_id = issuer_id.trim().to_string();
    let issuer = issuer_url(&issuer_id)?;
    let client_id = get("OIDC_CLIENT_ID").ok_or(ConfigError::Missing {
        name: "OIDC_CLIENT_ID",
        expected: "the client id registered with the identity provider (OIDC_ISSUER is set)",
    })?;
    let client_secret = client_secret(get)?;
    let allowed_domains = allowed_domains(list(get, "OIDC_ALLOWED_DOMAINS"))?;
    let admin_users = admin_users(list(get, "ADMIN_USERS"))?;
    let redirect_url = redirect_url(get, public_url)?;
    let config = OidcConfig {
        issuer,
        issuer_id,
        client_id,
        client_secret,
        allowed_domains,
        admin_users,
        redirect_url,
    };
    if config.is_google() && config.allowed_domains.is_empty() {
        return Err(ConfigError::Missing {
            name: "OIDC_ALLOWED_DOMAINS",
            expected: "your Google Workspace domain(s), e.g. example.com (anyone with a Google account could sign in otherwise)",
        });
    }
    Ok(Some(config))
}

/// `OIDC_ISSUER` as a URL. Plain http only to this host (a provider run beside the gateway, as
/// in `dev`): anyone on the path could otherwise replace the provider's keys and sign in as
/// anyone, and would read the client secret sent with every code exchange.
fn issuer_url(issuer_id: &str) -> Result<Url, ConfigError> {
    Url::parse(issuer_id)
        .ok()
        .filter(|u| u.scheme() == "https" || (u.scheme() == "http" && anchors::is_loopback(u)))
        .filter(|u| plain_base_problem(u).is_none())
        .ok_or(ConfigError::Invalid {
            name: "OIDC_ISSUER",
            expected: "the provider's issuer URL, e.g. https://accounts.google.com (https; \
                       http only to a loopback address; no credentials, query or fragment)"
                .into(),
        })
}

/// `OIDC_CLIENT_SECRET`, required with an issuer. Like RACK_TOKEN, it must be the bare secret:
/// a file's newline would make every sign-in fail at the token exchange, with the provider's
/// `invalid_client` as the only clue.
fn client_secret(get: &impl Fn(&str) -> Option<String>) -> Result<Secret, ConfigError> {
    required_secret(
        get,
        "OIDC_CLIENT_SECRET",
        "the client secret registered with the identity provider (OIDC_ISSUER is set)",
        "the client secret",
    )
}

/// The comma-separated entries of `name`, trimmed and lower-cased; none when it is unset.
fn list(get: &impl Fn(&str) -> Option<String>, name: &str) -> Vec<String> {
    get(name)
        .unwrap_or_default()
        .split(',')
        .map(|d| d.trim().to_ascii_lowercase())
        .filter(|d| !d.is_empty())
        .collect()
}

/// `OIDC_ALLOWED_DOMAINS`' entries, each a domain. An entry no address can end in
/// (`@example.com`, `https://example.com`) would leave its people unable to sign in, or — the
/// only entry — look like a restriction and be none.
fn allowed_domains(domains: Vec<String>) -> Result<Vec<String>, ConfigError> {
    // Entries are named by their place, not quoted: configuration errors never repeat values
    // (one could be a secret pasted into the wrong variable).
    if let Some((place, why)) = domains
        .iter()
        .enumerate()
        .find_map(|(i, d)| crate::text::domain_problem(d).map(|why| (i + 1, why)))
    {
        return Err(ConfigError::Invalid {
            name: "OIDC_ALLOWED_DOMAINS",
            expected: format!("comma-separated domains, e.g. example.com (entry {place} {why})"),
        });
    }
    Ok(domains)
}

/// `ADMIN_USERS`' entries, each an e-mail address: one no sign-in can match
/// (`admin@example.com.`) would fail silently.
fn admin_users(users: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if let Some((place, why)) = users
        .iter()
        .enumerate()
        .find_map(|(i, e)| crate::text::email_problem(e).map(|why| (i + 1, why)))
    {
        return Err(ConfigError::Invalid {
            name: "ADMIN_USERS",
            expected: format!("comma-separated e-mail addresses (entry {place} {why})"),
        });
    }
    Ok(users)
}

/// Where the provider sends the browser back: `OIDC_REDIRECT_URL`, or the callback path under
/// `PUBLIC_URL`.
fn redirect_url(
    get: &impl Fn(&str) -> Option<String>,
    public_url: Option<&Url>,
) -> Result<Url, ConfigError> {
    if let Some(raw) = get("OIDC_REDIRECT_URL") {
        return Url::parse(raw.trim())
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.path().ends_with(OIDC_CALLBACK_PATH)
                    && plain_base_problem(u).is_none()
            })
            .ok_or(ConfigError::Invalid {
                name: "OIDC_REDIRECT_URL",
                expected: format!(
                    "an absolute http(s) URL ending in {OIDC_CALLBACK_PATH}, without \
                     credentials, query or fragment"
                ),
            });
    }
    let public = public_url.ok_or(ConfigError::Missing {
        name: "PUBLIC_URL",
        expected: "the gateway's public URL, needed for the sign-in callback (OIDC_ISSUER is set)",
    })?;
    public
        .join(OIDC_CALLBACK_PATH)
        .map_err(|_| ConfigError::Invalid {
            name: "PUBLIC_URL",
            expected: "an absolute http(s) URL".into(),
        })
}
