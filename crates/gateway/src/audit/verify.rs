//! Re-computes the hash chain from the database.

use super::ChainKey;
use crate::store::{Store, StoreError};

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Events checked.
    pub events: i64,
    /// The last hash.
    pub head_hash: String,
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event does not hash to what is stored.
    #[error("audit chain broken at event {seq}: {reason}")]
    Broken {
        /// The first bad event.
        seq: i64,
        /// What is wrong.
        reason: String,
    },
}

/// Walks the whole chain, checking sequence continuity, each link and the head row.
pub async fn verify_chain(store: &Store, key: &ChainKey) -> Result<VerifyReport, VerifyError> {
    let mut prev = "0".repeat(64);
    let mut expected_seq = 1;
    loop {
        let rows = store.audit_rows_as_stored(expected_seq - 1, 1000).await?;
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
            // The details as stored, not as parsed and written again: the chain covers the
            // exact text.
            let hash = key.link_with(&prev, row.seq, &row.event, &details);
            if hash != row.hash {
                return Err(broken("content does not match its hash".into()));
            }
            prev = hash;
            expected_seq += 1;
        }
    }
    let head = store.chain_head().await?;
    if head.seq != expected_seq - 1 || head.hash != prev {
        return Err(VerifyError::Broken {
            seq: head.seq,
            reason: "chain head does not match the last event".into(),
        });
    }
    Ok(VerifyReport {
        events: expected_seq - 1,
        head_hash: prev,
    })
}
