//! `YUBICO_CLIENT_ID`, `YUBICO_SECRET_KEY`, `YUBICO_API_URL`: YubiKey one-time passwords,
//! checked with Yubico's validation service (protocol 2.0). Off unless the client id and its
//! secret key are both set (get them at <https://upgrade.yubico.com/getapikey/>).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use url::Url;

use super::values::{Pair, pair};
use super::{ConfigError, Secret, anchors::is_loopback};

/// Yubico's own validation service.
pub const DEFAULT_YUBICO_API_URL: &str = "https://api.yubico.com/wsapi/2.0/verify";

/// Where and as whom YubiKey one-time passwords are checked.
#[derive(Clone, Debug)]
pub struct YubicoConfig {
    /// `YUBICO_CLIENT_ID`: the API client's number.
    pub client_id: String,
    /// `YUBICO_SECRET_KEY`: its key (base64), which signs requests and answers.
    pub secret_key: Secret,
    /// `YUBICO_API_URL`: the validation service's verify address.
    pub api_url: Url,
}

impl YubicoConfig {
    /// The secret key's bytes (checked to be base64 when read).
    pub fn key_bytes(&self) -> Vec<u8> {
        STANDARD
            .decode(self.secret_key.expose())
            .unwrap_or_default()
    }
}

/// Reads the YubiKey settings.
pub(super) fn parse_yubico(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<YubicoConfig>, ConfigError> {
    let (id, key) = match pair(
        get,
        "YUBICO_CLIENT_ID",
        "YUBICO_SECRET_KEY",
        "YUBICO_API_URL",
    )? {
        Pair::Both(id, key) => (id, key),
        Pair::Neither => return Ok(None),
        Pair::Lacks(missing @ "YUBICO_SECRET_KEY") => {
            return Err(ConfigError::Invalid {
                name: missing,
                expected: "the secret key issued with YUBICO_CLIENT_ID (base64)".into(),
            });
        }
        Pair::Lacks(missing) => {
            return Err(ConfigError::Invalid {
                name: missing,
                expected: "the client id issued with YUBICO_SECRET_KEY (a number)".into(),
            });
        }
    };
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfigError::Invalid {
            name: "YUBICO_CLIENT_ID",
            expected: "the API client's number, e.g. 85975".into(),
        });
    }
    // The key is a credential: never quoted back.
    let decoded = STANDARD.decode(&key).unwrap_or_default();
    if !(16..=64).contains(&decoded.len()) {
        return Err(ConfigError::Invalid {
            name: "YUBICO_SECRET_KEY",
            expected: "the API key Yubico issued, base64 (e.g. 28 characters ending in =)".into(),
        });
    }
    let raw = get("YUBICO_API_URL").unwrap_or_else(|| DEFAULT_YUBICO_API_URL.to_string());
    let invalid = |expected: &str| ConfigError::Invalid {
        name: "YUBICO_API_URL",
        expected: expected.into(),
    };
    let api_url = Url::parse(raw.trim()).map_err(|_| {
        invalid("the validation service's address, e.g. https://api.yubico.com/wsapi/2.0/verify")
    })?;
    let plain_ok = api_url.scheme() == "http" && is_loopback(&api_url);
    if api_url.scheme() != "https" && !plain_ok {
        return Err(invalid(
            "an https:// address (answers decide sign-ins; plain http only to this machine)",
        ));
    }
    if api_url.host_str().is_none() || api_url.query().is_some() {
        return Err(invalid("an address with a host and no query"));
    }
    Ok(Some(YubicoConfig {
        client_id: id,
        secret_key: Secret::new(key),
        api_url,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Option<YubicoConfig>, ConfigError> {
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        parse_yubico(&get)
    }

    const KEY: &str = "mG5be6ZJU1qBGz24yPh/ESM3UdU=";

    #[test]
    fn off_unless_both_are_set() {
        assert!(matches!(parse(&[]), Ok(None)));
        assert!(parse(&[("YUBICO_CLIENT_ID", "1")]).is_err());
        assert!(parse(&[("YUBICO_SECRET_KEY", KEY)]).is_err());
        assert!(parse(&[("YUBICO_API_URL", "https://y.example.com/verify")]).is_err());
    }

    #[test]
    fn read_and_checked() {
        let c = parse(&[("YUBICO_CLIENT_ID", "85975"), ("YUBICO_SECRET_KEY", KEY)]);
        let c = c.ok().flatten().unwrap_or_else(|| panic!("not read"));
        assert_eq!(c.api_url.as_str(), DEFAULT_YUBICO_API_URL);
        assert_eq!(c.key_bytes().len(), 20);
        assert!(parse(&[("YUBICO_CLIENT_ID", "abc"), ("YUBICO_SECRET_KEY", KEY)]).is_err());
        let short = parse(&[("YUBICO_CLIENT_ID", "1"), ("YUBICO_SECRET_KEY", "c2hvcnQ=")]);
        let said = short.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!said.contains("c2hvcnQ="), "the key is not quoted: {said}");
        let plain = [
            ("YUBICO_CLIENT_ID", "1"),
            ("YUBICO_SECRET_KEY", KEY),
            ("YUBICO_API_URL", "http://y.example.com/verify"),
        ];
        assert!(parse(&plain).is_err());
        let local = [
            ("YUBICO_CLIENT_ID", "1"),
            ("YUBICO_SECRET_KEY", KEY),
            ("YUBICO_API_URL", "http://127.0.0.1:9/wsapi/2.0/verify"),
        ];
        assert!(matches!(parse(&local), Ok(Some(_))));
    }
}
