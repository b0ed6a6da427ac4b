//! The HMAC hash chain: `hash_n = HMAC-SHA256(key, hash_{n-1} ‖ seq_n ‖ canonical_event_n)`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::AuditEvent;
use crate::config::Secret;
use crate::store::{Store, StoreError};

type HmacSha256 = Hmac<Sha256>;

pub(super) const GENERATED_KEY_SETTING: &str = "audit_hmac_key_generated";
pub(super) const FINGERPRINT_SETTING: &str = "audit_hmac_key_fingerprint";
/// A generated key the chain was rotated away from (`audit rotate-key`), kept so that
/// `audit verify` can check the events it linked; no longer used to link any.
pub(super) const RETIRED_GENERATED_KEY_SETTING: &str = "audit_hmac_key_generated_retired";

/// The chain's HMAC key.
#[derive(Clone)]
pub struct ChainKey {
    /// HMAC keyed once: starting from a copy skips hashing the key's pads for every event.
    keyed: HmacSha256,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey([redacted])")
    }
}

/// Where the key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `AUDIT_HMAC_KEY`.
    Configured,
    /// Generated on first start and kept in the database (weaker: a database writer could
    /// rebuild the chain).
    Generated,
}

impl ChainKey {
    /// A key from configuration.
    pub fn new(secret: Secret) -> ChainKey {
        // HMAC accepts keys of any length, so this error cannot happen.
        let keyed = HmacSha256::new_from_slice(secret.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        ChainKey { keyed }
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// The hash linking `event` (at `seq`) to `prev_hash`, hex-encoded.
    pub fn link(&self, prev_hash: &str, seq: i64, event: &AuditEvent) -> String {
        self.link_with(prev_hash, seq, event, &event.details.to_string())
    }

    /// [`ChainKey::link`] with the event's details already written as JSON text.
    pub fn link_with(
        &self,
        prev_hash: &str,
        seq: i64,
        event: &AuditEvent,
        details: &str,
    ) -> String {
        let mut mac = self.mac();
        // prev_hash is hex we wrote ourselves; hash its bytes as stored.
        mac.update(&(prev_hash.len() as u64).to_be_bytes());
        mac.update(prev_hash.as_bytes());
        mac.update(&seq.to_be_bytes());
        mac.update(&event.canonical_bytes_with(details));
        to_hex(&mac.finalize().into_bytes())
    }

    /// A fingerprint that identifies the key without revealing it.
    pub fn fingerprint(&self) -> String {
        let mut mac = self.mac();
        mac.update(b"rack-gateway audit key fingerprint");
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The keys a process links audit events with: its chain key, and the key the chain may be
/// rotated to while it runs (`AUDIT_HMAC_KEY_NEXT`). The store moves it to the next key when
/// it finds the chain's head under that key, inside the appending transaction and before any
/// event of it is linked (see `store::written`).
#[derive(Debug, Clone)]
pub struct LinkingKeys {
    current: ChainKey,
    next: Option<ChainKey>,
    /// Set by the store once the chain was found rotated to `next`.
    next_in_use: Arc<AtomicBool>,
}

impl LinkingKeys {
    /// The key in use: the next one once the chain was rotated to it.
    fn in_use(&self) -> &ChainKey {
        match &self.next {
            Some(next) if self.next_in_use.load(Ordering::Acquire) => next,
            _ => &self.current,
        }
    }

    /// [`ChainKey::link_with`] with the key in use.
    pub fn link_with(
        &self,
        prev_hash: &str,
        seq: i64,
        event: &AuditEvent,
        details: &str,
    ) -> String {
        self.in_use().link_with(prev_hash, seq, event, details)
    }
}

impl From<ChainKey> for LinkingKeys {
    /// One key, never another (tests, and a chain read without a next key).
    fn from(current: ChainKey) -> LinkingKeys {
        LinkingKeys {
            current,
            next: None,
            next_in_use: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Lower-case hex of a 32-byte hash, filled through a fixed buffer (`hex::encode` builds its
/// string a character at a time; this runs for every audit event).
fn to_hex(hash: &[u8]) -> String {
    let mut buf = [0u8; 64];
    match hex::encode_to_slice(hash, &mut buf) {
        Ok(()) => std::str::from_utf8(&buf).map_or_else(|_| hex::encode(hash), str::to_string),
        // Not 32 bytes: never for SHA-256, but the general encoder is always right.
        Err(_) => hex::encode(hash),
    }
}

/// Picks the chain key: `AUDIT_HMAC_KEY` when configured, else a random key generated once and
/// kept in the database. Refuses a key different from the one the chain was started with.
///
/// With `next` (`AUDIT_HMAC_KEY_NEXT`), a chain already rotated to it is written with it from
/// the start; otherwise the store is told to move to it when the chain is rotated while this
/// process runs.
pub async fn resolve_key(
    configured: Option<&Secret>,
    next: Option<&Secret>,
    store: &Store,
) -> Result<(LinkingKeys, KeySource), ResolveKeyError> {
    if let (Some(key), Some(next)) = (configured, next)
        && crate::secret_eq::secret_eq(key.expose().as_bytes(), next.expose().as_bytes())
    {
        return Err(ResolveKeyError::NextIsCurrent);
    }
    let next = next.map(|k| ChainKey::new(k.clone()));
    // Rotated before this start: the next key is the chain's key now.
    if let Some(next) = &next
        && store.setting(FINGERPRINT_SETTING).await?.as_deref() == Some(&next.fingerprint())
    {
        store.expect_chain_key(&next.fingerprint(), None, Arc::default());
        return Ok((LinkingKeys::from(next.clone()), KeySource::Configured));
    }
    let (key, source) = match configured {
        Some(secret) => (ChainKey::new(secret.clone()), KeySource::Configured),
        None => {
            // A chain written with AUDIT_HMAC_KEY: a key generated now would never match, and
            // stored, would leave a key in the database that was never the chain's.
            if store.setting(GENERATED_KEY_SETTING).await?.is_none()
                && store.setting(FINGERPRINT_SETTING).await?.is_some()
            {
                return Err(ResolveKeyError::NoKey);
            }
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let stored = store
                .setting_or_insert(GENERATED_KEY_SETTING, &hex::encode(bytes))
                .await?;
            (ChainKey::new(Secret::new(stored)), KeySource::Generated)
        }
    };
    let fingerprint = key.fingerprint();
    let stored = store
        .setting_or_insert(FINGERPRINT_SETTING, &fingerprint)
        .await?;
    if stored != fingerprint {
        return Err(ResolveKeyError::KeyChanged);
    }
    // Every append from now on checks that the chain was not rotated away from this key (or
    // only to the next one, which it then links with).
    let keys = LinkingKeys {
        current: key,
        next,
        next_in_use: Arc::default(),
    };
    store.expect_chain_key(
        &fingerprint,
        keys.next.as_ref().map(ChainKey::fingerprint),
        keys.next_in_use.clone(),
    );
    Ok((keys, source))
}

/// The chain key for reading the chain, changing nothing: `AUDIT_HMAC_KEY` when configured
/// (refused if the database names another), else the generated key kept in the database.
/// Unlike [`resolve_key`], it never generates or stores a key.
pub async fn existing_key(
    configured: Option<&Secret>,
    store: &Store,
) -> Result<(ChainKey, KeySource), ResolveKeyError> {
    let (key, source) = match configured {
        Some(secret) => (ChainKey::new(secret.clone()), KeySource::Configured),
        None => match store.setting(GENERATED_KEY_SETTING).await? {
            Some(stored) => (ChainKey::new(Secret::new(stored)), KeySource::Generated),
            None => return Err(ResolveKeyError::NoKey),
        },
    };
    match store.setting(FINGERPRINT_SETTING).await? {
        Some(stored) if stored != key.fingerprint() => Err(ResolveKeyError::KeyChanged),
        _ => Ok((key, source)),
    }
}

/// Why the chain key could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ResolveKeyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key differs from the one the chain was written with.
    #[error(
        "AUDIT_HMAC_KEY does not match the key this database's audit chain is written with \
         (set that key; if the chain was started without AUDIT_HMAC_KEY, unset it; to move the \
         chain to this key, run `rack-gateway-server audit rotate-key`)"
    )]
    KeyChanged,
    /// `AUDIT_HMAC_KEY_NEXT` is `AUDIT_HMAC_KEY`.
    #[error(
        "AUDIT_HMAC_KEY_NEXT is the same key as AUDIT_HMAC_KEY: give it the key the chain is to \
         be rotated to (`audit rotate-key`), or unset it"
    )]
    NextIsCurrent,
    /// No key is configured and the database keeps no generated one.
    #[error(
        "AUDIT_HMAC_KEY is not set and this database keeps no generated key: set the key the \
         gateway runs with"
    )]
    NoKey,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{ActorType, Decision, EventKind};

    /// Known answers, computed independently (Python's `hmac` over the documented canonical
    /// bytes): existing chains must keep verifying, so the link may not change by accident.
    #[test]
    fn hex_is_the_usual_lower_case_hex() {
        let hash: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37)).collect();
        assert_eq!(to_hex(&hash), hex::encode(&hash));
        assert_eq!(to_hex(b"short"), hex::encode(b"short"));
    }

    #[test]
    fn links_match_known_answers() {
        let key = ChainKey::new(Secret::new("golden-chain-key-0123456789abcdef"));
        let mut request = AuditEvent::new(
            EventKind::Request,
            "01a2349f-9cac-75f6-bc8b-9b420de275c5",
            "convox:apps:list",
        );
        request.ts = 1_796_179_205_292;
        request.actor_type = ActorType::Token;
        request.token_name = Some("ci".into());
        request.method = Some("GET".into());
        request.path = Some("/apps".into());
        request.rbac_decision = Decision::Allow;
        request.client_ip = Some("127.0.0.1".into());
        request.user_agent = Some("convox/3.19".into());
        request.details =
            serde_json::json!({ "websocket": false, "route": "/apps", "role": "deployer" });
        let mut outcome = request.clone();
        outcome.kind = EventKind::Outcome;
        outcome.rbac_decision = Decision::None;
        outcome.status = Some(200);
        outcome.latency_ms = Some(3);
        outcome.user_email = Some("ann@example.com".into());
        outcome.details = serde_json::json!({ "completed": true, "bytes_out": 765 });

        let first = key.link(&"0".repeat(64), 1, &request);
        assert_eq!(
            first,
            "a9610297c99c07b459b8dc2940401e2617bd77952ff6aba191dab1810a23da23"
        );
        assert_eq!(
            key.link(&first, 2, &outcome),
            "1113cd930a63bac3bd0e3ccad6cc7c4a818c7224f1e9efc334c92e47ad1c696b"
        );
    }
}
