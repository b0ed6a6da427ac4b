//! Anchors: the chain's head (event number and hash) written now and then to an S3 bucket
//! under Object Lock in COMPLIANCE mode, where nobody — not the gateway, not an AWS
//! administrator — can change or delete it until its retention ends.
//!
//! The chain alone shows edits by someone who lacks the HMAC key. Anchors make the rest
//! provable: a chain rebuilt with the key, or cut short, no longer matches the hashes its
//! anchors recorded, and `audit verify` says so.
//!
//! An anchor's key names what it anchors, `<prefix><seq, 20 digits>-<hash>.json`, so a
//! listing alone gives every anchored event and hash; the object holds the same with the
//! chain's id, the time, and the key and SHA-256 of the anchor before it.

mod bucket;
mod credentials;
mod job;

pub use bucket::{AnchorBucket, FirstVersion, ObjectLock, VersionedKeys};
pub use job::{Anchoring, spawn_anchoring};

use std::time::SystemTime;

use crate::store::StoreError;

/// The setting the chain's id is kept in (generated with the first anchor).
pub const CHAIN_ID_SETTING: &str = "audit_chain_id";

/// The `format` of every anchor object.
pub const ANCHOR_FORMAT: &str = "rack-gateway-audit-anchor/1";

/// Why anchors could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// The bucket client could not be set up.
    #[error("S3 anchors: {0}")]
    Setup(String),
    /// No credentials for the bucket (the container endpoint failed).
    #[error("S3 credentials: {0}")]
    Credentials(String),
    /// S3 could not be reached.
    #[error("S3 could not be reached: {0}")]
    Unreachable(String),
    /// S3 answered with an error.
    #[error("S3 refused to {what} {key}: {status} {code} {message}")]
    Refused {
        /// The operation (put, list, get, head).
        what: &'static str,
        /// The object key or prefix.
        key: String,
        /// The HTTP status.
        status: u16,
        /// S3's error code (`AccessDenied`, `NoSuchBucket`, …).
        code: String,
        /// S3's message.
        message: String,
    },
    /// S3 sent something that is not what was asked for.
    #[error("S3 sent {0}")]
    Malformed(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An anchor object's content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    /// [`ANCHOR_FORMAT`].
    pub format: String,
    /// The chain's id, generated with the chain and kept in the database.
    pub chain_id: String,
    /// The anchored event's number.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// The anchor written before this one, if any.
    pub previous: Option<PreviousAnchor>,
    /// When the anchor was written (RFC 3339).
    pub written_at: String,
    /// The writer's `AUDIT_ANCHOR_INTERVAL_SECS`: the next anchor was due this long after.
    #[serde(default)]
    pub interval_secs: Option<u64>,
}

/// A link to the previous anchor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreviousAnchor {
    /// Its key.
    pub key: String,
    /// SHA-256 of its exact bytes, hex.
    pub sha256: String,
}

/// What an anchor's key says: the event it anchors and that event's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorRef {
    /// The object key.
    pub key: String,
    /// The anchored event's number.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
}

/// The key of the anchor for event `seq` with `hash`.
pub fn anchor_key(prefix: &str, seq: i64, hash: &str) -> String {
    format!("{prefix}{seq:020}-{hash}.json")
}

/// Reads an anchor key written by [`anchor_key`]; `None` for anything else under the prefix.
pub fn parse_anchor_key(prefix: &str, key: &str) -> Option<AnchorRef> {
    let name = key.strip_prefix(prefix)?.strip_suffix(".json")?;
    let (seq, hash) = name.split_once('-')?;
    let valid_seq = seq.len() == 20 && seq.bytes().all(|b| b.is_ascii_digit());
    let valid_hash = hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let seq: i64 = seq.parse().ok().filter(|s| *s > 0 && valid_seq)?;
    valid_hash.then(|| AnchorRef {
        key: key.to_string(),
        seq,
        hash: hash.to_string(),
    })
}

/// What `audit verify` finds under the prefix.
#[derive(Debug, Clone, Default)]
pub struct AnchorListing {
    /// Every anchor, in chain order, including those a delete marker hides.
    pub anchors: Vec<AnchorRef>,
    /// Each anchor's first stored version (by key): what was written first, and when S3
    /// stored it — the latest the anchor can have been written, whatever a later version says.
    pub first_versions: std::collections::BTreeMap<String, FirstVersion>,
    /// Anchors whose latest version is a delete marker: someone tried to delete them.
    pub hidden: Vec<String>,
    /// Stored versions of objects under the prefix that are not anchors.
    pub others: usize,
}

/// Every anchor under the bucket's prefix, from the version listing (a delete marker does not
/// hide an anchor from it).
pub async fn list_anchors(bucket: &AnchorBucket) -> Result<AnchorListing, AnchorError> {
    let listed = bucket.list_versions().await?;
    let mut anchors: Vec<AnchorRef> = listed
        .anchors
        .keys()
        .filter_map(|k| parse_anchor_key(bucket.prefix(), k))
        .collect();
    anchors.sort_by(|a, b| a.seq.cmp(&b.seq).then_with(|| a.key.cmp(&b.key)));
    Ok(AnchorListing {
        anchors,
        first_versions: listed.anchors,
        hidden: listed.hidden.into_iter().collect(),
        others: listed.others,
    })
}

/// An RFC 3339 time as S3 and the anchors write it (`2026-12-03T01:02:03.000Z`).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// Reads the anchor object behind `anchor` (its latest version, or the one named) and checks
/// it says what its key says.
pub async fn read_anchor(
    bucket: &AnchorBucket,
    anchor: &AnchorRef,
    version: Option<&str>,
) -> Result<Anchor, AnchorError> {
    let body = bucket.get(&anchor.key, version).await?;
    let parsed: Anchor = serde_json::from_slice(&body).map_err(|e| {
        AnchorError::Malformed(format!("an anchor {} that is not one: {e}", anchor.key))
    })?;
    if parsed.format != ANCHOR_FORMAT || parsed.seq != anchor.seq || parsed.hash != anchor.hash {
        return Err(AnchorError::Malformed(format!(
            "an anchor {} whose content names event {} with hash {} ({})",
            anchor.key, parsed.seq, parsed.hash, parsed.format
        )));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff";

    #[test]
    fn keys_sort_in_chain_order_and_read_back() {
        let a = anchor_key("p/", 9, HASH);
        let b = anchor_key("p/", 10, HASH);
        assert!(a < b, "{a} {b}");
        assert_eq!(
            parse_anchor_key("p/", &b),
            Some(AnchorRef {
                key: b.clone(),
                seq: 10,
                hash: HASH.into()
            })
        );
    }

    #[test]
    fn times_as_s3_and_anchors_write_them_are_read() {
        let t = parse_time("2026-12-03T01:02:03.456Z").unwrap_or_else(|| panic!("not read"));
        assert_eq!(crate::audit::format_time(t), "2026-12-03T01:02:03.456Z");
        assert!(parse_time("2026-12-03T01:02:03Z").is_some());
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn other_objects_are_not_anchors() {
        let long = anchor_key("p/", i64::MAX, HASH);
        assert!(parse_anchor_key("p/", &long).is_some());
        for key in [
            "p/readme.txt".to_string(),
            anchor_key("q/", 1, HASH),
            anchor_key("p/", 0, HASH),
            anchor_key("p/", 1, &HASH.to_uppercase()),
            anchor_key("p/", 1, &HASH[1..]),
            format!("p/{:019}-{HASH}.json", 1),
            format!("p/-0000000000000000001-{HASH}.json"),
            format!("p/99999999999999999999-{HASH}.json"),
            format!("p/{:020}-{HASH}.json.bak", 1),
        ] {
            assert_eq!(parse_anchor_key("p/", &key), None, "{key}");
        }
    }
}
