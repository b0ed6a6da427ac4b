//! A local stand-in for Yubico's OTP validation service (protocol 2.0): `GET
//! /wsapi/2.0/verify?id&otp&nonce&h`, the request's signature checked with the client's key,
//! each OTP accepted once (`OK`, then `REPLAYED_OTP`), answers signed with the same key. Two
//! markers in an OTP's encrypted part make trouble on purpose: `vvvv…` is a forged OTP
//! (`BAD_OTP`); `tttt…` gets an answer signed with another key (a forged answer).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// The client id the fake knows.
pub const CLIENT_ID: &str = "4711";
/// Its key (20 bytes, base64).
pub const SECRET_KEY: &str = "mG5be6ZJU1qBGz24yPh/ESM3UdU=";

const MODHEX: &[u8] = b"cbdefghijklnrtuv";

#[derive(Clone, Default)]
struct Shared {
    seen: Arc<Mutex<HashSet<String>>>,
    asked: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

/// The fake service on a free port.
pub struct FakeYubico {
    pub url: String,
    shared: Shared,
    _server: tokio::task::JoinHandle<()>,
}

/// A new OTP from the YubiKey whose public id is `public_id`.
pub fn otp(public_id: &str) -> String {
    otp_starting(public_id, "")
}

/// An OTP from `public_id` whose encrypted part starts with `marker`.
pub fn otp_starting(public_id: &str, marker: &str) -> String {
    let tail: String = (0..32 - marker.len())
        .map(|_| char::from(MODHEX[usize::from(rand_byte()) % MODHEX.len()]))
        .collect();
    format!("{public_id}{marker}{tail}")
}

fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .unwrap_or_else(|e| panic!("{e}"));
    b[0]
}

fn sign(key: &[u8], fields: &[(String, String)]) -> String {
    let mut sorted = fields.to_vec();
    sorted.sort();
    let text = sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    STANDARD.encode(hmac::sign(&key, text.as_bytes()).as_ref())
}

fn answer(key: &[u8], fields: Vec<(String, String)>) -> String {
    let h = sign(key, &fields);
    let mut body = format!("h={h}\r\n");
    for (k, v) in fields {
        body.push_str(&format!("{k}={v}\r\n"));
    }
    body.push_str("\r\n");
    body
}

async fn verify(
    State(shared): State<Shared>,
    Query(params): Query<Vec<(String, String)>>,
) -> (http::StatusCode, String) {
    shared.asked.fetch_add(1, Ordering::SeqCst);
    if shared.down.load(Ordering::SeqCst) {
        return (http::StatusCode::INTERNAL_SERVER_ERROR, "down".into());
    }
    let key = STANDARD.decode(SECRET_KEY).unwrap_or_default();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (otp, nonce) = (get("otp"), get("nonce"));
    let unsigned: Vec<(String, String)> =
        params.iter().filter(|(k, _)| k != "h").cloned().collect();
    let status = if get("id") != CLIENT_ID {
        "NO_SUCH_CLIENT"
    } else if sign(&key, &unsigned) != get("h") {
        "BAD_SIGNATURE"
    } else if otp.len() < 34 || otp[otp.len() - 32..].starts_with("vvvv") {
        "BAD_OTP"
    } else if !shared
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(otp.clone())
    {
        "REPLAYED_OTP"
    } else {
        "OK"
    };
    let fields = vec![
        ("t".to_string(), "2026-12-05T11:00:00Z0123".to_string()),
        ("otp".to_string(), otp.clone()),
        ("nonce".to_string(), nonce),
        ("sl".to_string(), "100".to_string()),
        ("status".to_string(), status.to_string()),
    ];
    let forged = otp.len() >= 32 && otp[otp.len() - 32..].starts_with("tttt");
    let signing_key = if forged {
        b"another key entirely".to_vec()
    } else {
        key
    };
    (http::StatusCode::OK, answer(&signing_key, fields))
}

impl FakeYubico {
    pub async fn start() -> FakeYubico {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let shared = Shared::default();
        let app = axum::Router::new()
            .route("/wsapi/2.0/verify", axum::routing::get(verify))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeYubico {
            url: format!("http://{addr}/wsapi/2.0/verify"),
            shared,
            _server: server,
        }
    }

    /// The gateway's settings for this service.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("YUBICO_CLIENT_ID", CLIENT_ID.to_string()),
            ("YUBICO_SECRET_KEY", SECRET_KEY.to_string()),
            ("YUBICO_API_URL", self.url.clone()),
        ]
    }

    /// How many verify requests arrived.
    pub fn asked(&self) -> usize {
        self.shared.asked.load(Ordering::SeqCst)
    }

    /// Makes it answer `500` (or stop doing so).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }
}
