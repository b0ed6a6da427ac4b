//! Slack's request signatures: each request Slack sends carries `X-Slack-Request-Timestamp`
//! (unix seconds) and `X-Slack-Signature`, `v0=` and the hex HMAC-SHA256, under the app's
//! signing secret, of `v0:{timestamp}:{body}`. A request more than five minutes off the
//! gateway's clock is refused, so a captured one cannot be sent again later.

use ring::hmac;

/// How far a request's timestamp may be from now (Slack's own advice).
pub const MAX_SKEW_SECS: i64 = 5 * 60;

/// Why a request is not taken as Slack's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Slack-Request-Timestamp`, or not a number.
    #[error("no X-Slack-Request-Timestamp (unix seconds)")]
    NoTimestamp,
    /// Too far from now.
    #[error("X-Slack-Request-Timestamp is more than five minutes from now")]
    Stale,
    /// No `X-Slack-Signature`, or not `v0=` and 64 hex digits.
    #[error("no X-Slack-Signature (v0=…)")]
    NoSignature,
    /// Not made with this app's signing secret over this body.
    #[error("X-Slack-Signature does not match the request")]
    Mismatch,
}

impl SignatureError {
    /// The audited reason.
    pub fn reason(self) -> &'static str {
        match self {
            SignatureError::NoTimestamp => "no_timestamp",
            SignatureError::Stale => "stale_timestamp",
            SignatureError::NoSignature => "no_signature",
            SignatureError::Mismatch => "bad_signature",
        }
    }
}

/// Checks that `body`, sent with `timestamp` and `signature` (the headers' values), was signed
/// with `secret` at most [`MAX_SKEW_SECS`] from `now_secs`. The comparison takes the same time
/// however much of the signature matches.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
    let ts: i64 = timestamp.parse().map_err(|_| SignatureError::NoTimestamp)?;
    if now_secs.abs_diff(ts) > MAX_SKEW_SECS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let digest = signature
        .and_then(|s| s.strip_prefix("v0="))
        .filter(|hex| hex.len() == 64)
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or(SignatureError::NoSignature)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, &signed(timestamp, body), &digest).map_err(|_| SignatureError::Mismatch)
}

/// What is signed: `v0:{timestamp}:{body}`.
fn signed(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut base = Vec::with_capacity(body.len() + timestamp.len() + 4);
    base.extend_from_slice(b"v0:");
    base.extend_from_slice(timestamp.as_bytes());
    base.push(b':');
    base.extend_from_slice(body);
    base
}

/// The `X-Slack-Signature` for `body` sent at `timestamp` (for tests that stand in for Slack).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &signed(timestamp, body));
    format!("v0={}", hex::encode(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const BODY: &[u8] = b"payload=%7B%22type%22%3A%22block_actions%22%7D";
    /// Made apart from this code, with Python's `hmac`:
    /// `hmac.new(SECRET, b"v0:1531420618:" + BODY, hashlib.sha256).hexdigest()`.
    const KNOWN: &str = "v0=9dffc25b49a4a7fc2e15c9c9450bf8af09eb501fcef9039eaea3deb58af0c82c";

    #[test]
    fn a_signature_made_elsewhere_checks_out() {
        assert_eq!(sign(SECRET, "1531420618", BODY), KNOWN);
        assert_eq!(
            verify(
                SECRET,
                Some("1531420618"),
                Some(KNOWN),
                BODY,
                1_531_420_618 + 60
            ),
            Ok(())
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let now = 1_531_420_618;
        let ok = |ts: Option<&str>, sig: Option<&str>, body: &[u8], now: i64| {
            verify(SECRET, ts, sig, body, now)
        };
        assert_eq!(
            ok(None, Some(KNOWN), BODY, now),
            Err(SignatureError::NoTimestamp)
        );
        assert_eq!(
            ok(Some("soon"), Some(KNOWN), BODY, now),
            Err(SignatureError::NoTimestamp)
        );
        assert_eq!(
            ok(Some("1531420618"), Some(KNOWN), BODY, now + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            ok(Some("1531420618"), Some(KNOWN), BODY, now - 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            ok(Some("1531420618"), None, BODY, now),
            Err(SignatureError::NoSignature)
        );
        let v1 = KNOWN.replace("v0=", "v1=");
        assert_eq!(
            ok(Some("1531420618"), Some(&v1), BODY, now),
            Err(SignatureError::NoSignature)
        );
        let short = &KNOWN[..KNOWN.len() - 2];
        assert_eq!(
            ok(Some("1531420618"), Some(short), BODY, now),
            Err(SignatureError::NoSignature)
        );
        // Another body, another second, another secret: each its own signature.
        assert_eq!(
            ok(Some("1531420618"), Some(KNOWN), b"payload=%7B%7D", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            ok(Some("1531420619"), Some(KNOWN), BODY, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                b"another secret",
                Some("1531420618"),
                Some(KNOWN),
                BODY,
                now
            ),
            Err(SignatureError::Mismatch)
        );
        let upper = KNOWN.to_ascii_uppercase().replace("V0=", "v0=");
        assert_eq!(
            ok(Some("1531420618"), Some(&upper), BODY, now),
            Ok(()),
            "hex in either case"
        );
    }
}
