//! A typed client for the Convox rack API, over HTTP (reqwest) and WebSocket
//! (tokio-tungstenite).
//!
//! The client speaks to whatever serves the rack API at its base URL: a rack itself
//! (`https://rack.example.com:5443`) or the rack-gateway's proxy
//! (`https://gateway.example.com/api/v1/rack-proxy`). It authenticates the way the stock
//! `convox` CLI does, with HTTP Basic `convox:<token>`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), convox_api::client::ClientError> {
//! use convox_api::client::Client;
//! let client = Client::new("http://127.0.0.1:8447/api/v1/rack-proxy", "rgw_…")?;
//! for app in client.apps().await? {
//!     println!("{} {}", app.name, app.status);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Errors are [`ClientError`]s; an error answer keeps its status, the machine-readable `code`
//! when the body is the gateway's JSON (`{"error", "code"}`), and the message either way.

mod apps;
mod builds;
mod duration;
mod error;
mod exec;
mod http;
mod logs;
mod model;
mod objects;
mod options;
mod processes;
mod releases;
mod services;
mod socket;
mod system;

pub use duration::go_duration;
pub use error::{ClientError, error_from_body, error_from_response};
pub use exec::{EXIT_MARKER, ExecOptions};
pub use http::{ANSWER_LIMIT, ANSWER_TIMEOUT, ANSWER_VALUES, read_limited, redirected};
pub use logs::{LogStream, LogTarget, LogsOptions};
pub use model::{
    App, Build, Extra, Instance, Object, Process, Release, Service, ServicePort, System,
    go_zero_time, is_zero_time,
};
pub use options::{
    BuildCreateOptions, ProcessListOptions, ProcessRunOptions, ReleaseCreateOptions,
    ServiceUpdateOptions,
};

/// The user name the rack expects in HTTP Basic auth.
pub const BASIC_USER: &str = "convox";

/// A client for one rack API base URL and token. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Client {
    /// A client with a default HTTP client (no overall timeout: uploads and logs can be long).
    /// Installs the ring TLS provider as the process default when none is installed yet.
    pub fn new(base_url: &str, token: &str) -> Result<Self, ClientError> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("convox-api/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Self::with_http(http, base_url, token)
    }

    /// A client on a caller-built reqwest client (user agent, proxies, TLS roots…).
    pub fn with_http(
        http: reqwest::Client,
        base_url: &str,
        token: &str,
    ) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Url(format!(
                "{}: the rack URL must start with http:// or https://",
                without_credentials(base_url)
            )));
        }
        Ok(Self {
            http,
            base,
            token: token.to_string(),
        })
    }

    /// The base URL (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }
}

/// `url` as it may be shown: a `user:password@` before the host (with or without a scheme)
/// becomes `…@`.
fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("…@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    if scheme.is_empty() && !url.contains("://") {
        format!("{authority}{path}")
    } else {
        format!("{scheme}://{authority}{path}")
    }
}

/// Makes ring the process-wide rustls provider unless one is installed (reqwest and
/// tokio-tungstenite are built without a provider of their own).
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Percent-encodes one path segment (an app name, a process id, an object key part).
pub(crate) fn seg(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'/')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'\\');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_bad_rack_url_is_shown_without_its_password() {
        for url in [
            "convox:SUPERSECRET@127.0.0.1",
            "ftp://convox:SUPERSECRET@rack.example.com/x",
            "convox:SUPER@SECRET@rack:5443?x=1",
        ] {
            let e = Client::new(url, "t")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("must start with http") && !e.contains("SECRET"),
                "{e}"
            );
        }
        assert_eq!(
            without_credentials("convox:pw@rack.example.com:5443/x"),
            "…@rack.example.com:5443/x"
        );
    }

    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("web"), "web");
        assert_eq!(seg("a/b"), "a%2Fb");
        assert_eq!(seg("a b?"), "a%20b%3F");
    }

    #[test]
    fn base_url_must_be_http() {
        assert!(Client::new("ftp://x", "t").is_err());
        let c = Client::new("http://gw/api/v1/rack-proxy/", "t");
        assert_eq!(
            c.ok().map(|c| c.base_url().to_string()).as_deref(),
            Some("http://gw/api/v1/rack-proxy")
        );
    }
}
