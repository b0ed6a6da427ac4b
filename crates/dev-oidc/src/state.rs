//! In-memory grants and access tokens.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::CoreRsaPrivateSigningKey;
use rand::RngCore;

use crate::{DevOidcConfig, DevUser};

/// An issued authorization code's facts.
#[derive(Debug, Clone)]
pub struct Grant {
    pub email: String,
    pub redirect_uri: String,
    pub nonce: Option<String>,
    pub code_challenge: String,
}

pub struct Shared {
    pub config: DevOidcConfig,
    pub key: CoreRsaPrivateSigningKey,
    /// The key rotated to (see `Quirks::rotates_key`).
    pub next_key: CoreRsaPrivateSigningKey,
    /// Whether the key set has been served (rotation happens after that).
    served: AtomicBool,
    codes: Mutex<HashMap<String, (Grant, Instant)>>,
    access: Mutex<HashMap<String, String>>,
}

fn random() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Codes live one minute and work once.
const CODE_TTL: Duration = Duration::from_secs(60);

impl Shared {
    pub fn new(
        config: DevOidcConfig,
        key: CoreRsaPrivateSigningKey,
        next_key: CoreRsaPrivateSigningKey,
    ) -> Shared {
        Shared {
            config,
            key,
            next_key,
            served: AtomicBool::new(false),
            codes: Mutex::new(HashMap::new()),
            access: Mutex::new(HashMap::new()),
        }
    }

    /// Notes that the key set is being served; whether it had been before.
    pub fn key_set_served(&self) -> bool {
        self.served.swap(true, Ordering::SeqCst)
    }

    /// Whether the key set has been served.
    pub fn key_set_was_served(&self) -> bool {
        self.served.load(Ordering::SeqCst)
    }

    pub fn user(&self, email: &str) -> Option<DevUser> {
        self.config
            .users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
            .cloned()
    }

    pub fn grant(&self, grant: Grant) -> String {
        let code = random();
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, (_, at)| at.elapsed() < CODE_TTL);
        codes.insert(code.clone(), (grant, Instant::now()));
        code
    }

    pub fn redeem(&self, code: &str) -> Option<Grant> {
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        let (grant, at) = codes.remove(code)?;
        (at.elapsed() < CODE_TTL).then_some(grant)
    }

    pub fn access_token(&self, email: &str) -> String {
        let token = random();
        self.access
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), email.to_string());
        token
    }

    pub fn user_for_access(&self, token: &str) -> Option<DevUser> {
        let email = self
            .access
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()?;
        self.user(&email)
    }
}
