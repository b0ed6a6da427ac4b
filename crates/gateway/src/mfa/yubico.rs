//! YubiKey one-time passwords (Yubico OTP): a touch on the key types 44 characters — the
//! key's public id (12) and an encrypted counter (32), in "modhex" — wherever a code is asked:
//! the sign-in's code page, the step-up form, the "right now" fields, and the CLI's prompts.
//!
//! A person adds a YubiKey beside their authenticator app (its public id is stored); an OTP
//! counts for them only when its public id is one of theirs and Yubico's validation service
//! (protocol 2.0) says `OK`. Requests carry a fresh nonce and are signed with the API key;
//! the answer must be signed with the same key and echo the OTP and the nonce, or it counts
//! for nothing. Yubico refuses an OTP seen before (`REPLAYED_OTP`), which is what makes each
//! one good once.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

use gateway_core::config::YubicoConfig;

/// The second factor recorded when a YubiKey OTP confirmed it.
pub const FACTOR: &str = "yubikey";

/// The modhex alphabet YubiKeys type in (keyboard-layout safe).
const MODHEX: &[u8] = b"cbdefghijklnrtuv";

/// Length of an OTP's encrypted part; the public id is what comes before it.
const OTP_TAIL: usize = 32;

/// How long the validation service may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read from the validation service.
const MAX_ANSWER_BYTES: usize = 4096;

/// `code` as a YubiKey OTP: its public id, when it has the form (2 to 16 modhex characters of
/// public id, then 32 of encrypted part; case and surrounding space ignored).
pub fn public_id(code: &str) -> Option<String> {
    let otp = code.trim().to_ascii_lowercase();
    let ok = (OTP_TAIL + 2..=OTP_TAIL + 16).contains(&otp.len())
        && otp.bytes().all(|b| MODHEX.contains(&b));
    ok.then(|| otp[..otp.len() - OTP_TAIL].to_string())
}

/// Why the validation service could not say.
#[derive(Debug, thiserror::Error)]
pub enum YubicoError {
    /// Unreachable, slow, or not HTTP 200.
    #[error("the YubiKey validation service could not be reached: {0}")]
    Unreachable(String),
    /// An answer not signed with our key, or not about our OTP and nonce.
    #[error("the YubiKey validation service's answer does not check out ({0})")]
    Forged(&'static str),
    /// A status that says the request (not the OTP) was wrong: our client id, key or clock.
    #[error("the YubiKey validation service refused the request: {0}")]
    Refused(String),
}

/// What the validation service said of an OTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `OK`: a good OTP, now used.
    Valid,
    /// `BAD_OTP` or `REPLAYED_OTP`: not good (forged, or seen before).
    Rejected(String),
}

/// A client of the validation service.
pub struct Yubico {
    http: reqwest::Client,
    client_id: String,
    key: hmac::Key,
    url: url::Url,
}

impl std::fmt::Debug for Yubico {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Yubico")
            .field("client_id", &self.client_id)
            .field("url", &self.url.as_str())
            .finish()
    }
}

/// The `k=v&k=v` text of `params` sorted by key, as both sides sign it.
fn signed_text(params: &mut [(String, String)]) -> String {
    params.sort();
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

impl Yubico {
    /// A client as `config` says.
    pub fn new(config: &YubicoConfig) -> Result<Yubico, YubicoError> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| YubicoError::Unreachable(e.to_string()))?;
        Ok(Yubico {
            http,
            client_id: config.client_id.clone(),
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &config.key_bytes()),
            url: config.api_url.clone(),
        })
    }

    fn sign(&self, text: &str) -> String {
        STANDARD.encode(hmac::sign(&self.key, text.as_bytes()).as_ref())
    }

    /// Asks the validation service about `otp` (lower-case modhex).
    pub async fn verify(&self, otp: &str) -> Result<Verdict, YubicoError> {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let mut params = vec![
            ("id".to_string(), self.client_id.clone()),
            ("nonce".to_string(), nonce.clone()),
            ("otp".to_string(), otp.to_string()),
        ];
        let h = self.sign(&signed_text(&mut params));
        params.push(("h".to_string(), h));
        let mut url = self.url.clone();
        url.query_pairs_mut().extend_pairs(&params);
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| YubicoError::Unreachable(e.without_url().to_string()))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(YubicoError::Unreachable(format!(
                "HTTP {}",
                response.status()
            )));
        }
        let body = read_capped(response).await?;
        self.judge(&body, otp, &nonce)
    }

    /// The verdict in the service's `body`, once it checks out as the answer to our request
    /// about `otp` with `nonce`.
    fn judge(&self, body: &str, otp: &str, nonce: &str) -> Result<Verdict, YubicoError> {
        let mut fields: Vec<(String, String)> = body
            .lines()
            .filter_map(|line| line.trim().split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let Some(at) = fields.iter().position(|(k, _)| k == "h") else {
            return Err(YubicoError::Forged("unsigned"));
        };
        let (_, h) = fields.remove(at);
        let signature = STANDARD
            .decode(&h)
            .map_err(|_| YubicoError::Forged("signature not base64"))?;
        let text = signed_text(&mut fields);
        hmac::verify(&self.key, text.as_bytes(), &signature)
            .map_err(|_| YubicoError::Forged("wrong signature"))?;
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let status = field("status").unwrap_or_default();
        match status {
            "OK" | "BAD_OTP" | "REPLAYED_OTP" => {}
            other => return Err(YubicoError::Refused(other.chars().take(40).collect())),
        }
        // A signed answer about another request (a replayed answer) says nothing of ours.
        if field("nonce") != Some(nonce) {
            return Err(YubicoError::Forged("another request's nonce"));
        }
        if field("otp") != Some(otp) {
            return Err(YubicoError::Forged("another OTP"));
        }
        Ok(if status == "OK" {
            Verdict::Valid
        } else {
            Verdict::Rejected(status.to_string())
        })
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<String, YubicoError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| YubicoError::Unreachable(e.without_url().to_string()))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER_BYTES {
            return Err(YubicoError::Forged("answer too long"));
        }
    }
    String::from_utf8(body).map_err(|_| YubicoError::Forged("answer not text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Yubico {
        // As the binary does at start.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = YubicoConfig {
            client_id: "1".into(),
            secret_key: gateway_core::config::Secret::new("mG5be6ZJU1qBGz24yPh/ESM3UdU="),
            api_url: url::Url::parse("http://127.0.0.1:9/verify").unwrap_or_else(|e| panic!("{e}")),
        };
        Yubico::new(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    const OTP: &str = "cccccbcdefghijklnrtuvcbdefghijklnrtuvcbdefgh";

    fn answer(y: &Yubico, fields: &[(&str, &str)]) -> String {
        let mut params: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let h = y.sign(&signed_text(&mut params));
        let mut body = format!("h={h}\r\n");
        for (k, v) in fields {
            body.push_str(&format!("{k}={v}\r\n"));
        }
        body
    }

    #[test]
    fn otps_are_told_by_their_form() {
        assert_eq!(public_id(OTP).as_deref(), Some("cccccbcdefgh"));
        assert_eq!(
            public_id(&format!(" {} ", OTP.to_uppercase())).as_deref(),
            Some("cccccbcdefgh")
        );
        assert_eq!(public_id("123456"), None);
        assert_eq!(public_id("abcde-23456"), None);
        assert_eq!(public_id(&OTP[..33]), None, "too short for a public id");
        assert_eq!(public_id(&OTP.replace('c', "a")), None, "not modhex");
    }

    #[test]
    fn only_a_signed_answer_about_our_otp_and_nonce_counts() {
        let y = client();
        let t = "2026-12-05T11:00:00Z0123";
        let ok = answer(
            &y,
            &[("t", t), ("otp", OTP), ("nonce", "n1"), ("status", "OK")],
        );
        assert_eq!(y.judge(&ok, OTP, "n1").ok(), Some(Verdict::Valid));
        let replayed = answer(
            &y,
            &[
                ("t", t),
                ("otp", OTP),
                ("nonce", "n1"),
                ("status", "REPLAYED_OTP"),
            ],
        );
        assert_eq!(
            y.judge(&replayed, OTP, "n1").ok(),
            Some(Verdict::Rejected("REPLAYED_OTP".into()))
        );
        // Another request's answer, a tampered one, an unsigned one.
        assert!(matches!(
            y.judge(&ok, OTP, "n2"),
            Err(YubicoError::Forged(_))
        ));
        let tampered = replayed.replace("status=REPLAYED_OTP", "status=OK");
        assert!(matches!(
            y.judge(&tampered, OTP, "n1"),
            Err(YubicoError::Forged(_))
        ));
        let unsigned = ok.lines().skip(1).collect::<Vec<_>>().join("\r\n");
        assert!(matches!(
            y.judge(&unsigned, OTP, "n1"),
            Err(YubicoError::Forged(_))
        ));
        let other = answer(
            &y,
            &[("otp", "cccccbcdefgh"), ("nonce", "n1"), ("status", "OK")],
        );
        assert!(matches!(
            y.judge(&other, OTP, "n1"),
            Err(YubicoError::Forged(_))
        ));
        let refused = answer(&y, &[("nonce", "n1"), ("status", "BAD_SIGNATURE")]);
        assert!(matches!(
            y.judge(&refused, OTP, "n1"),
            Err(YubicoError::Refused(_))
        ));
    }
}
