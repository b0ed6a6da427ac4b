//! Moving the audit chain to a new key (`rack-gateway-server audit rotate-key`), and the keys
//! `audit verify` walks a rotated chain with.
//!
//! A rotation appends one event, [`KEY_ROTATED_ACTION`], naming the retired key and the new
//! one by their fingerprints, and links that event with the new key: from then on, whoever
//! holds only the retired key (a leaked one, say) cannot rewrite any event before the rotation
//! without breaking the link that follows it. In the same transaction the chain's head and the
//! stored fingerprint move to the new key, so a gateway still running with the retired key
//! finds the head under another key at its next append and refuses it (nothing is forwarded)
//! instead of extending the chain with a key that no longer fits.

use serde_json::json;

use super::chain::{
    FINGERPRINT_SETTING, GENERATED_KEY_SETTING, RETIRED_GENERATED_KEY_SETTING, existing_key,
};
use super::{AuditEvent, ChainKey, EventKind, KeySource, ResolveKeyError, new_request_id};
use crate::config::Secret;
use crate::identity::manage::Actor;
use crate::store::{KeyRotation, Store, StoreError};

/// The action of the event that moves the chain to a new key.
pub const KEY_ROTATED_ACTION: &str = "gateway:audit:key_rotated";

/// How many hex digits of a fingerprint name a key to people: enough to tell keys apart.
const SHOWN_ID: usize = 16;

/// A key's id as messages show it: the start of its fingerprint.
pub fn shown_id(fingerprint: &str) -> &str {
    fingerprint.get(..SHOWN_ID).unwrap_or(fingerprint)
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The rotation's event: the first linked with the new key.
    pub seq: i64,
    /// The retired key's fingerprint.
    pub retired_key_id: String,
    /// The new key's fingerprint.
    pub new_key_id: String,
    /// Where the retired key came from.
    pub retired_source: KeySource,
}

/// Why a rotation was refused (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum RotateKeyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain has no key yet.
    #[error(
        "this database's audit chain has no key yet, so there is none to retire: start the \
         gateway with AUDIT_HMAC_KEY set and the chain uses it from its first event"
    )]
    NoChainKey,
    /// The new key is the chain's key already.
    #[error(
        "the new key (AUDIT_HMAC_KEY_NEXT, else AUDIT_HMAC_KEY) is already the key this \
         database's audit chain is written with: nothing to rotate"
    )]
    AlreadyCurrent,
    /// The key to retire was not given.
    #[error(
        "the key this database's audit chain is written with (id {0}) is not among \
         AUDIT_HMAC_KEY_RETIRED: give it there, so that only someone who holds it can retire it"
    )]
    RetiredKeyMissing(String),
}

/// Moves the chain to the key `new`, retiring the one it is written with: the key generated
/// and kept in the database, or one of `retired` (`AUDIT_HMAC_KEY_RETIRED`), which must then
/// hold it. `actor` is recorded as who rotated it.
pub async fn rotate_key(
    store: &Store,
    new: &Secret,
    retired: &[Secret],
    actor: &Actor,
) -> Result<Rotated, RotateKeyError> {
    let Some(current) = store.setting(FINGERPRINT_SETTING).await? else {
        return Err(RotateKeyError::NoChainKey);
    };
    let new_key = ChainKey::new(new.clone());
    let new_id = new_key.fingerprint();
    if new_id == current {
        return Err(RotateKeyError::AlreadyCurrent);
    }
    let generated = store
        .setting(GENERATED_KEY_SETTING)
        .await?
        .map(|k| ChainKey::new(Secret::new(k)))
        .filter(|k| k.fingerprint() == current);
    let source = if generated.is_some() {
        KeySource::Generated
    } else if retired
        .iter()
        .any(|k| ChainKey::new(k.clone()).fingerprint() == current)
    {
        KeySource::Configured
    } else {
        return Err(RotateKeyError::RetiredKeyMissing(
            shown_id(&current).to_string(),
        ));
    };
    let event = actor.event(
        EventKind::Gateway,
        &new_request_id(),
        KEY_ROTATED_ACTION,
        json!({
            "retired_key_id": current,
            "new_key_id": new_id,
            "retired_key_type": match source {
                KeySource::Generated => "generated",
                KeySource::Configured => "configured",
            },
        }),
    );
    let link = store
        .rotate_audit_key(
            KeyRotation {
                event: &event,
                from: &current,
                to: &new_id,
                fingerprint_setting: FINGERPRINT_SETTING,
                rename_setting: (source == KeySource::Generated)
                    .then_some((GENERATED_KEY_SETTING, RETIRED_GENERATED_KEY_SETTING)),
            },
            |prev: &str, seq: i64, e: &AuditEvent, details: &str| {
                new_key.link_with(prev, seq, e, details)
            },
        )
        .await?;
    Ok(Rotated {
        seq: link.seq,
        retired_key_id: current,
        new_key_id: new_id,
        retired_source: source,
    })
}

/// The retired and new key of a rotation event, by fingerprint; `None` for any other event.
pub(super) fn rotation_of(event: &AuditEvent) -> Option<(&str, &str)> {
    if event.kind != EventKind::Gateway || event.action != KEY_ROTATED_ACTION {
        return None;
    }
    let retired = event.details.get("retired_key_id")?.as_str()?;
    let new = event.details.get("new_key_id")?.as_str()?;
    Some((retired, new))
}

/// The keys a chain may be linked with, by fingerprint: the current one and retired ones.
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: (String, ChainKey),
    retired: Vec<(String, ChainKey)>,
}

impl KeyRing {
    /// Only `current`: a chain never rotated.
    pub fn new(current: ChainKey) -> KeyRing {
        KeyRing {
            current: (current.fingerprint(), current),
            retired: Vec::new(),
        }
    }

    /// Adds a retired key.
    pub fn with_retired(mut self, key: ChainKey) -> KeyRing {
        self.retired.push((key.fingerprint(), key));
        self
    }

    /// The current key and its fingerprint.
    pub fn current(&self) -> (&str, &ChainKey) {
        (&self.current.0, &self.current.1)
    }

    /// The key with `fingerprint`, if given, with its fingerprint.
    pub fn get(&self, fingerprint: &str) -> Option<(&str, &ChainKey)> {
        std::iter::once(&self.current)
            .chain(&self.retired)
            .find(|(id, _)| id == fingerprint)
            .map(|(id, key)| (id.as_str(), key))
    }
}

/// The keys for reading a chain, changing nothing: the current key as [`existing_key`] finds
/// it, every key in `retired` (`AUDIT_HMAC_KEY_RETIRED`), and a generated key the chain was
/// rotated away from, kept in the database. Once the chain was rotated to `next`
/// (`AUDIT_HMAC_KEY_NEXT`, where the gateways run), that is the current key and `configured`
/// a retired one.
pub async fn key_ring(
    configured: Option<&Secret>,
    next: Option<&Secret>,
    retired: &[Secret],
    store: &Store,
) -> Result<(KeyRing, KeySource), ResolveKeyError> {
    let stored = store.setting(FINGERPRINT_SETTING).await?;
    let rotated_to_next = next.filter(|next| {
        stored.as_deref() == Some(ChainKey::new((*next).clone()).fingerprint().as_str())
    });
    let (current, also_retired) = match rotated_to_next {
        Some(next) => (Some(next), configured),
        None => (configured, None),
    };
    let (key, source) = existing_key(current, store).await?;
    let mut ring = KeyRing::new(key);
    for key in retired.iter().chain(also_retired) {
        ring = ring.with_retired(ChainKey::new(key.clone()));
    }
    if let Some(generated) = store.setting(RETIRED_GENERATED_KEY_SETTING).await? {
        ring = ring.with_retired(ChainKey::new(Secret::new(generated)));
    }
    Ok((ring, source))
}
