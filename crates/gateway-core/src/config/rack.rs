//! Where the rack is and how it is reached: its URL, its token, and how its certificate is
//! checked.

use std::path::PathBuf;

use url::Url;

use super::values::required_secret;
use super::{ConfigError, Secret, anchors};

/// How the gateway verifies the rack's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RackTls {
    /// Public web PKI roots (Mozilla's list, built in).
    WebPki,
    /// Trust only the CA certificates in this PEM file.
    CaFile(PathBuf),
    /// Accept exactly the certificate whose DER SHA-256 is this (hostname not checked).
    Pinned([u8; 32]),
}

/// `RACK_HOST`: the rack API's base URL, https (or http to this host only).
pub(super) fn parse_rack_host(raw: Option<String>) -> Result<Url, ConfigError> {
    let raw = raw.ok_or(ConfigError::Missing {
        name: "RACK_HOST",
        expected: "the rack API's base URL, e.g. https://rack.example.com:5443",
    })?;
    let invalid = |why: &str| ConfigError::Invalid {
        name: "RACK_HOST",
        expected: format!("an http(s) base URL such as https://rack.example.com:5443 ({why})"),
    };
    let url = Url::parse(&raw).map_err(|_| invalid("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("scheme must be http or https"));
    }
    if url.host_str().is_none() {
        return Err(invalid("no host"));
    }
    // Credentials in the URL would be a second copy of the rack token, outside RACK_TOKEN.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("put the token in RACK_TOKEN, not in the URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("no query or fragment"));
    }
    // Every request carries the rack token, which can do anything on the rack: over plain
    // HTTP anyone on the way would read it. A rack's API serves TLS; plain HTTP is for a rack
    // (or a TLS-ending proxy) on this host.
    if url.scheme() == "http" && !anchors::is_loopback(&url) {
        return Err(invalid(
            "https, or http only to a loopback address: over plain http the rack token would \
             cross the network readable to anyone on the way",
        ));
    }
    Ok(url)
}

/// `RACK_TOKEN`: required, and refused with the reason (never the value) when it carries
/// whitespace or control characters.
pub(super) fn rack_token(get: &impl Fn(&str) -> Option<String>) -> Result<Secret, ConfigError> {
    required_secret(
        get,
        "RACK_TOKEN",
        "the rack's API token (the password convox uses for the rack)",
        "the rack's API token",
    )
}

/// How the rack's certificate is checked: `RACK_CA_FILE`, `RACK_TLS_PIN_SHA256` (at most one,
/// and only for an https `RACK_HOST`), or the public roots.
pub(super) fn rack_tls(
    get: &impl Fn(&str) -> Option<String>,
    rack_host: &Url,
) -> Result<RackTls, ConfigError> {
    let rack_tls = match (get("RACK_CA_FILE"), get("RACK_TLS_PIN_SHA256")) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid {
                name: "RACK_TLS_PIN_SHA256",
                expected: "set either RACK_CA_FILE or RACK_TLS_PIN_SHA256, not both".into(),
            });
        }
        (Some(path), None) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(ConfigError::Invalid {
                    name: "RACK_CA_FILE",
                    expected: format!("a readable PEM file; {} does not exist", path.display()),
                });
            }
            RackTls::CaFile(path)
        }
        (None, Some(pin)) => RackTls::Pinned(parse_pin(&pin)?),
        (None, None) => RackTls::WebPki,
    };
    // A pin or CA says the rack is reached over TLS; with an http:// RACK_HOST it would
    // do nothing, and the rack token would cross the network in the clear.
    if rack_tls != RackTls::WebPki && rack_host.scheme() != "https" {
        return Err(ConfigError::Invalid {
            name: if matches!(rack_tls, RackTls::CaFile(_)) {
                "RACK_CA_FILE"
            } else {
                "RACK_TLS_PIN_SHA256"
            },
            expected: "a setting for an https:// RACK_HOST (this one is http://)".into(),
        });
    }
    Ok(rack_tls)
}

fn parse_pin(raw: &str) -> Result<[u8; 32], ConfigError> {
    let cleaned: String = raw.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(cleaned.trim()).ok();
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or(ConfigError::Invalid {
            name: "RACK_TLS_PIN_SHA256",
            expected:
                "the SHA-256 of the rack certificate's DER bytes, 64 hex digits (colons allowed)"
                    .into(),
        })
}
