//! Reading the caller's token from `Authorization` (Basic password or Bearer).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::AUTHORIZATION;

/// A malformed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not `Basic …` or `Bearer …`, or not decodable.
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
}

/// Longest token we will look at; anything longer is not ours.
const MAX_TOKEN_LEN: usize = 512;

/// The token the caller presents: the Basic-auth password (the user name is ignored; the
/// `convox` CLI sends `convox`) or the Bearer token. `Ok(None)` when there is no header.
pub fn extract_token(headers: &HeaderMap) -> Result<Option<String>, CredentialError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CredentialError::Malformed(
            "more than one Authorization header",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| CredentialError::Malformed("not ASCII"))?;
    let (scheme, rest) = value.split_once(' ').ok_or(CredentialError::Malformed(
        "expected `Basic <credentials>` or `Bearer <token>`",
    ))?;
    let rest = rest.trim();
    let token = if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(rest)
            .map_err(|_| CredentialError::Malformed("Basic credentials are not base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| CredentialError::Malformed("Basic credentials are not UTF-8"))?;
        let (_user, password) = decoded.split_once(':').ok_or(CredentialError::Malformed(
            "Basic credentials lack `user:password`",
        ))?;
        password.to_string()
    } else if scheme.eq_ignore_ascii_case("bearer") {
        rest.to_string()
    } else {
        return Err(CredentialError::Malformed(
            "expected `Basic <credentials>` or `Bearer <token>`",
        ));
    };
    if token.is_empty() {
        return Ok(None);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(CredentialError::Malformed("token too long"));
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(value) {
            h.insert(AUTHORIZATION, v);
        }
        h
    }

    #[test]
    fn basic_and_bearer() {
        let basic = format!("Basic {}", STANDARD.encode("convox:rgw_abc"));
        assert_eq!(
            extract_token(&with(basic.as_bytes())),
            Ok(Some("rgw_abc".into()))
        );
        assert_eq!(
            extract_token(&with(b"Bearer rgw_xyz")),
            Ok(Some("rgw_xyz".into()))
        );
        assert_eq!(
            extract_token(&with(b"bearer  rgw_xyz ")),
            Ok(Some("rgw_xyz".into()))
        );
        assert_eq!(extract_token(&HeaderMap::new()), Ok(None));
        let empty = format!("Basic {}", STANDARD.encode("convox:"));
        assert_eq!(extract_token(&with(empty.as_bytes())), Ok(None));
    }

    #[test]
    fn malformed() {
        for bad in [
            &b"Basic"[..],
            b"Basic !!!",
            b"Digest abc",
            b"Basic bm9jb2xvbg==", // "nocolon"
            b"Basic \xff\xfe",
        ] {
            assert!(extract_token(&with(bad)).is_err(), "{bad:?}");
        }
        let long = format!("Bearer {}", "a".repeat(600));
        assert!(extract_token(&with(long.as_bytes())).is_err());
    }
}
