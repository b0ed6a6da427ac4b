//! API token secrets: generation, hashing, expiry parsing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Every API token starts with this, so leaked tokens are easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "rgw_";

/// A freshly issued token: the secret (shown once) and what is stored.
#[derive(Debug)]
pub struct IssuedToken {
    /// The secret, `rgw_` + 43 characters (256 random bits).
    pub secret: String,
    /// Hex SHA-256 of the secret, the only thing stored.
    pub hash: String,
}

/// Generates a token with 256 bits from the operating system's CSPRNG.
pub fn issue_token() -> IssuedToken {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_token(&secret);
    IssuedToken { secret, hash }
}

/// Hex SHA-256 of a token.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A code a terminal and a browser page both show for the request `id` (`purpose` tells
/// kinds of request apart), so the person confirming in the browser can tell it is their own
/// command's: eight characters that are hard to misread, derived from the id.
pub fn short_code(purpose: &str, id: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let digest = Sha256::digest(format!("{purpose}\0{id}").as_bytes());
    let mut code = String::with_capacity(9);
    for (i, byte) in digest.iter().take(8).enumerate() {
        if i == 4 {
            code.push('-');
        }
        code.push(char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]));
    }
    code
}

/// A bad expiry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a duration like `30d`, `12h`, `90m`.
    #[error(
        "invalid expiry {0:?}: use a whole number of minutes, hours, days or weeks, from 1m up \
         to 3650d (10 years), such as 90m, 12h, 30d or 52w"
    )]
    BadExpiry(String),
}

/// Parses `90m`, `12h`, `30d`, `52w` into milliseconds.
pub fn parse_expiry(s: &str) -> Result<i64, TokenError> {
    let bad = || TokenError::BadExpiry(s.to_string());
    let s = s.trim();
    // The unit is the last character, whatever its width (`30é` is an error, not a panic).
    let split = s.char_indices().last().map(|(i, _)| i).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    // Digits only: `+5d` and ` 5d` are not what anyone types on purpose.
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = num.parse().map_err(|_| bad())?;
    let unit_ms: i64 = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    if n <= 0 || n > 3650 * 86_400_000 / unit_ms {
        return Err(bad());
    }
    Ok(n * unit_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_prefixed_and_hashed() {
        let a = issue_token();
        let b = issue_token();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(TOKEN_PREFIX));
        assert_eq!(a.secret.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(a.hash, hash_token(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.secret[4..]));
    }

    #[test]
    fn expiry() {
        assert_eq!(parse_expiry("90m"), Ok(90 * 60_000));
        assert_eq!(parse_expiry("30d"), Ok(30 * 86_400_000));
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "10y",
            "abc",
            "99999999w",
            "30é",
            "é",
            "3日",
            "+5d",
            "3651d",
            "522w",
            "87601h",
        ] {
            assert!(parse_expiry(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_expiry("3650d"), Ok(3650 * 86_400_000));
        assert_eq!(parse_expiry("521w"), Ok(521 * 7 * 86_400_000));
        let told = parse_expiry("3651d").map_err(|e| e.to_string());
        assert!(told.is_err_and(|e| e.contains("up to 3650d")));
    }
}
