//! Re-computes the hash chain from the database.

use super::ChainKey;
use super::anchor::AnchorRef;
use super::rotation::{KEY_ROTATED_ACTION, KeyRing, rotation_of, shown_id};
use crate::store::{Store, StoreError};

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Events checked.
    pub events: i64,
    /// The last hash.
    pub head_hash: String,
    /// Anchors the chain was checked against.
    pub anchors_checked: usize,
    /// The newest anchored event, if any.
    pub last_anchored: Option<i64>,
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Events could not be read back (a value of the wrong type, say: a row altered by hand).
    #[error("audit event {seq} could not be read ({source}): a row altered by hand?")]
    Unreadable {
        /// The event (the first of its batch when it could not be told apart).
        seq: i64,
        /// Why.
        source: StoreError,
    },
    /// An anchor names a hash the chain does not have at its event, or an event past the
    /// chain's end: the chain was rebuilt, cut short or replaced — or the anchor is not one
    /// the gateway wrote (see the caller's check of its lock).
    #[error("audit chain broken at event {seq}: {reason}")]
    AnchorMismatch {
        /// The event the anchor names.
        seq: i64,
        /// The anchor's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Events are linked with a key this check was not given (a retired one).
    #[error("{0}")]
    MissingKey(String),
    /// An event does not hash to what is stored.
    #[error("audit chain broken at event {seq}: {reason}")]
    Broken {
        /// The first bad event.
        seq: i64,
        /// What is wrong.
        reason: String,
    },
}

/// Walks the chain up to its head, checking sequence continuity, each link and the head row.
/// The head is read first: the gateway may append while this runs, and the events it adds
/// after that read are left to the next check (walking them too, against a busy gateway,
/// could go on for ever).
pub async fn verify_chain(store: &Store, key: &ChainKey) -> Result<VerifyReport, VerifyError> {
    verify_chain_against(store, &KeyRing::new(key.clone()), &[]).await
}

/// [`verify_chain`], also checking that every event named by an anchor has the anchored hash
/// and that no anchor names an event past the chain's end. `anchors` must be in chain order
/// and listed before this is called: an anchor written since names an event past the head
/// this reads.
///
/// Each event is checked with the key it was linked with: at a key rotation's event the walk
/// moves to the key it names (the rotation's own event is the first linked with it), taken
/// from `keys`; the chain must end under `keys`' current one.
pub async fn verify_chain_against(
    store: &Store,
    keys: &KeyRing,
    anchors: &[AnchorRef],
) -> Result<VerifyReport, VerifyError> {
    let head = store.chain_head().await?;
    let (mut key_id, mut key) = first_key(store, keys).await?;
    let mut pending_anchors = anchors.iter().peekable();
    let mut prev = "0".repeat(64);
    let mut expected_seq = 1;
    let mut head_matched = head.seq == 0 && head.hash == prev;
    while expected_seq <= head.seq {
        let batch = (head.seq - expected_seq + 1).min(1000);
        let rows = match store.audit_rows_as_stored(expected_seq - 1, batch).await {
            Ok(rows) => rows,
            Err(e) if unreadable(&e) => {
                return Err(first_unreadable(store, expected_seq, batch, e).await);
            }
            // A database that stopped answering is not a broken chain.
            Err(e) => return Err(VerifyError::Store(e)),
        };
        if rows.is_empty() {
            break;
        }
        for (row, details) in rows {
            let broken = |reason: String| VerifyError::Broken {
                seq: row.seq,
                reason,
            };
            if row.seq != expected_seq {
                return Err(broken(format!("expected event {expected_seq} (gap)")));
            }
            if row.prev_hash != prev {
                return Err(broken("prev_hash does not match the previous event".into()));
            }
            if let Some((retired, new)) = rotation_of(&row.event) {
                (key_id, key) = rotated_key(keys, row.seq, &key_id, retired, new)?;
            }
            // The details as stored, not as parsed and written again: the chain covers the
            // exact text.
            let hash = key.link_with(&prev, row.seq, &row.event, &details);
            if hash != row.hash {
                return Err(broken("content does not match its hash".into()));
            }
            while let Some(anchor) = pending_anchors.next_if(|a| a.seq == row.seq) {
                if anchor.hash != hash {
                    return Err(VerifyError::AnchorMismatch {
                        seq: row.seq,
                        key: anchor.key.clone(),
                        reason: format!(
                            "its hash differs from the one anchored in S3 ({}): the chain was \
                             rebuilt or replaced after the anchor was written",
                            anchor.key
                        ),
                    });
                }
            }
            if row.seq == head.seq {
                if hash != head.hash {
                    return Err(broken(
                        "the chain head names another hash for this event".into(),
                    ));
                }
                head_matched = true;
            }
            prev = hash;
            expected_seq += 1;
        }
    }
    if head_matched && key_id != keys.current().0 {
        // The stored fingerprint moved to the current key without a rotation in the chain.
        return Err(VerifyError::Broken {
            seq: head.seq,
            reason: format!(
                "the chain's newest events are linked with the key {}, not with \
                 AUDIT_HMAC_KEY's ({}): no key rotation in the chain moved it there",
                shown_id(&key_id),
                shown_id(keys.current().0)
            ),
        });
    }
    if !head_matched {
        // Fewer events than the head says: the end of the chain was removed.
        return Err(VerifyError::Broken {
            seq: head.seq,
            reason: format!(
                "the chain head names event {} but the chain ends at event {}",
                head.seq,
                expected_seq - 1
            ),
        });
    }
    if let Some(anchor) = pending_anchors.next() {
        // Anchors are listed before the head is read, so each names an event the chain had.
        return Err(VerifyError::AnchorMismatch {
            seq: anchor.seq,
            key: anchor.key.clone(),
            reason: format!(
                "an anchor in S3 ({}) names event {}, but the chain ends at event {}: events \
                 were removed or the database was replaced",
                anchor.key,
                anchor.seq,
                expected_seq - 1
            ),
        });
    }
    // Rows the walk above cannot reach (numbered 0 or below, or past the head: inserted by
    // hand) would show in searches by request id without ever being checked.
    let stray = store.audit_rows_outside_chain().await?;
    if stray > 0 {
        return Err(VerifyError::Broken {
            seq: head.seq,
            reason: format!(
                "{stray} event(s) outside the chain (numbered 0 or below, or past its head)"
            ),
        });
    }
    Ok(VerifyReport {
        events: expected_seq - 1,
        head_hash: prev,
        anchors_checked: anchors.len(),
        last_anchored: anchors.last().map(|a| a.seq),
    })
}

/// The key a rotation event (`seq`) moves the chain to, once it is shown to retire the key the
/// walk holds (`held`).
fn rotated_key<'k>(
    keys: &'k KeyRing,
    seq: i64,
    held: &str,
    retired: &str,
    new: &str,
) -> Result<(String, &'k ChainKey), VerifyError> {
    if retired != held {
        return Err(VerifyError::Broken {
            seq,
            reason: format!(
                "this key rotation retires the key {}, but the events before it are linked \
                 with the key {}",
                shown_id(retired),
                shown_id(held)
            ),
        });
    }
    let missing = || {
        VerifyError::MissingKey(format!(
            "audit event {seq} moves the chain to the key {}, which was not given: set \
             AUDIT_HMAC_KEY to the chain's current key and AUDIT_HMAC_KEY_RETIRED to its \
             earlier ones",
            shown_id(new)
        ))
    };
    let (id, key) = keys.get(new).ok_or_else(missing)?;
    Ok((id.to_string(), key))
}

/// The key the chain's first events are linked with: the one its first key rotation retires,
/// or, never rotated, the current one.
async fn first_key<'k>(
    store: &Store,
    keys: &'k KeyRing,
) -> Result<(String, &'k ChainKey), VerifyError> {
    let current = || (keys.current().0.to_string(), keys.current().1);
    let Some((seq, details)) = store.first_gateway_event(KEY_ROTATED_ACTION).await? else {
        return Ok(current());
    };
    // An unreadable rotation is left to the walk, which finds its link broken.
    let retired = serde_json::from_str::<serde_json::Value>(&details)
        .ok()
        .and_then(|d| d.get("retired_key_id")?.as_str().map(str::to_string));
    let Some(retired) = retired else {
        return Ok(current());
    };
    if seq == 1 {
        // Rotated before any event: no event is linked with the retired key.
        return Ok((retired, keys.current().1));
    }
    let missing = || {
        VerifyError::MissingKey(format!(
            "audit events 1–{} are linked with the key {}, retired at event {seq}, which was \
             not given: set AUDIT_HMAC_KEY_RETIRED to the chain's earlier keys",
            seq - 1,
            shown_id(&retired)
        ))
    };
    let (id, key) = keys.get(&retired).ok_or_else(missing)?;
    Ok((id.to_string(), key))
}

/// Whether `e` says a stored value is not what it should be (rather than that the database
/// could not be asked).
fn unreadable(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Database(sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_))
            | StoreError::Corrupt(_)
    )
}

/// The first event of the `count` from `from` that cannot be read, one at a time (an error
/// path: the operator needs the row, not the batch).
async fn first_unreadable(
    store: &Store,
    from: i64,
    count: i64,
    batch_error: StoreError,
) -> VerifyError {
    for seq in from..from + count {
        match store.audit_rows_as_stored(seq - 1, 1).await {
            Ok(_) => {}
            Err(source) if unreadable(&source) => return VerifyError::Unreadable { seq, source },
            Err(other) => return VerifyError::Store(other),
        }
    }
    VerifyError::Unreadable {
        seq: from,
        source: batch_error,
    }
}
