//! Time-based one-time passwords (RFC 6238) as every authenticator app makes them: SHA-1,
//! six digits, 30-second steps, a 160-bit secret. A code is accepted for the step before and
//! after the current one (clock drift), and only for a step newer than the last one accepted
//! (see `Store::accept_totp_step`): a code seen over someone's shoulder cannot be used again.

use qrcode::QrCode;
use qrcode::render::svg;
use rand::RngCore;
use totp_rs::{Algorithm, TOTP};

use super::MfaError;
use crate::secret_eq::secret_eq;

/// The second factor recorded when an authenticator app's code confirmed it.
pub const FACTOR: &str = "totp";

/// Digits in a code.
pub const DIGITS: usize = 6;
/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// Bytes of secret (RFC 4226 recommends 160 bits).
const SECRET_BYTES: usize = 20;
/// The name authenticator apps show above the account.
const ISSUER: &str = "rack-gateway";

/// A new random secret.
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    secret
}

fn totp(secret: &[u8], account: &str) -> Result<TOTP, MfaError> {
    // The otpauth URI's label is `issuer:account`: a colon in the account would split it.
    let account = account.replace(':', "_");
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECS,
        secret.to_vec(),
        Some(ISSUER.into()),
        account,
    )
    .map_err(|e| MfaError::Totp(e.to_string()))
}

/// What a person needs to add the secret to an authenticator app.
#[derive(Debug, Clone)]
pub struct Provisioning {
    /// The secret in base32, to type in.
    pub secret_base32: String,
    /// The `otpauth://totp/…` URI.
    pub uri: String,
    /// The URI as a QR code, an inline `<svg>` element.
    pub qr_svg: String,
}

/// The provisioning of `secret` for `account` (the user's e-mail).
pub fn provisioning(secret: &[u8], account: &str) -> Result<Provisioning, MfaError> {
    let totp = totp(secret, account)?;
    let uri = totp.get_url();
    let code = QrCode::new(uri.as_bytes()).map_err(|e| MfaError::Totp(e.to_string()))?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    // Inline in HTML: the XML declaration before the element is not wanted there.
    let qr_svg = image
        .find("<svg")
        .map(|at| image[at..].to_string())
        .unwrap_or(image);
    Ok(Provisioning {
        secret_base32: totp.get_secret_base32(),
        uri,
        qr_svg,
    })
}

/// `code` as typed, if it is one: six digits, spaces and dashes between them allowed.
pub fn normalise(code: &str) -> Option<String> {
    let digits: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    (digits.len() == DIGITS && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// The step (`unix seconds / 30`) `code` is right for, within one step of `now_secs`.
pub fn matching_step(secret: &[u8], code: &str, now_secs: u64) -> Option<u64> {
    let totp = totp(secret, "check").ok()?;
    let now_step = now_secs / STEP_SECS;
    // Every candidate is compared, in constant time, whichever matches.
    let mut found = None;
    for step in [now_step.saturating_sub(1), now_step, now_step + 1] {
        let expected = totp.generate(step * STEP_SECS);
        if secret_eq(expected.as_bytes(), code.as_bytes()) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// The secret an authenticator app reads from `base32` (as [`Provisioning::secret_base32`]
/// shows it), for tests that act as the app.
pub fn secret_from_base32(base32: &str) -> Option<Vec<u8>> {
    totp_rs::Secret::Encoded(base32.to_string()).to_bytes().ok()
}

/// The code for `secret` at `unix_secs`, as an authenticator app shows it.
pub fn code_at(secret: &[u8], unix_secs: u64) -> Result<String, MfaError> {
    Ok(totp(secret, "code")?.generate(unix_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238's SHA-1 test secret and vectors (the last six digits of its eight).
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn codes_match_rfc_6238() {
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code_at(RFC_SECRET, time).ok().as_deref(), Some(code));
        }
    }

    #[test]
    fn a_code_matches_its_step_and_one_either_side_only() {
        let secret = new_secret();
        let now = 1_800_000_015;
        let step = now / STEP_SECS;
        for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let at = (step as i64 + offset) as u64 * STEP_SECS;
            let code = code_at(&secret, at).unwrap_or_else(|e| panic!("{e}"));
            let found = matching_step(&secret, &code, now);
            if accepted {
                assert!(found.is_some(), "offset {offset}");
            } else if found.is_some() {
                // Another step's code may equal this one's by chance (1 in 10^6): not a miss.
                assert_ne!(found, Some((step as i64 + offset) as u64));
            }
        }
        assert_eq!(matching_step(&secret, "", now), None);
        assert_eq!(matching_step(&new_secret(), "12345", now), None);
    }

    #[test]
    fn typed_codes_are_normalised() {
        assert_eq!(normalise(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(normalise("123-456").as_deref(), Some("123456"));
        for bad in ["", "12345", "1234567", "12345a", "١٢٣٤٥٦", "123\u{0}456"] {
            assert_eq!(normalise(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn provisioning_gives_the_secret_a_uri_and_a_qr_code() {
        let secret = new_secret();
        let p = provisioning(&secret, "ada:x@example.com").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            p.uri
                .starts_with("otpauth://totp/rack-gateway:ada_x%40example.com?"),
            "{}",
            p.uri
        );
        assert!(p.uri.contains(&format!("secret={}", p.secret_base32)));
        assert_eq!(secret_from_base32(&p.secret_base32), Some(secret));
        assert!(p.qr_svg.starts_with("<svg"), "{}", &p.qr_svg[..40]);
        assert!(!p.qr_svg.contains("<script"));
    }
}
