//! The background task that anchors the chain's head: at start, every interval, and once more
//! at shutdown. It is off the request path: S3 being slow or down delays anchors (and says so
//! in the log), never a request.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    ANCHOR_FORMAT, Anchor, AnchorBucket, AnchorError, AnchorRef, CHAIN_ID_SETTING, PreviousAnchor,
    anchor_key, parse_anchor_key,
};
use crate::metrics::Metrics;
use crate::store::Store;

/// The newest anchor this database knows of (`{"key":…,"sha256":…}`), so that a restart
/// does not list every anchor ever written to find it.
const LAST_ANCHOR_SETTING: &str = "audit_anchor_last";
/// Most listing pages one round reads looking for newer anchors (100 000 keys).
const CATCH_UP_PAGES: usize = 100;
/// How long the last anchor at shutdown may take.
const FINAL_ANCHOR_TIMEOUT: Duration = Duration::from_secs(15);

/// The running anchor task.
#[derive(Debug)]
pub struct Anchoring {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Anchoring {
    /// Anchors the head one last time (bounded in time) and ends the task.
    pub async fn finish(mut self) {
        self.stop.cancel();
        if tokio::time::timeout(FINAL_ANCHOR_TIMEOUT, &mut self.task)
            .await
            .is_err()
        {
            // Not left running past "stopped".
            self.task.abort();
            tracing::warn!("the last audit anchor was not written in time");
        }
    }
}

/// Starts anchoring the chain of `store` into `bucket` every `interval`.
/// Each round is counted in `metrics`.
pub fn spawn_anchoring(
    store: Store,
    bucket: AnchorBucket,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> Anchoring {
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(store, bucket, interval, stop.clone(), metrics));
    Anchoring { stop, task }
}

async fn run(
    store: Store,
    bucket: AnchorBucket,
    interval: Duration,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let mut anchorer = Anchorer {
        store,
        bucket,
        interval,
        chain_id: None,
        newest: None,
        known: false,
        anchored: None,
        compared: None,
    };
    loop {
        // Noted before the round: a stop that arrives during it gets a round of its own,
        // which sees the last events.
        let last_round = stop.is_cancelled();
        let round = anchorer.anchor_head().await;
        metrics.observe_anchor_round(round.is_ok(), std::time::SystemTime::now());
        match round {
            Ok(Some(anchor)) => tracing::info!(
                seq = anchor.seq,
                key = %anchor.key,
                "audit chain head anchored in S3"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                error = %e,
                retry_in_secs = interval.as_secs(),
                "audit anchor not written"
            ),
        }
        if last_round {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            // One more round on the way out: the events of the last minutes get their anchor.
            _ = stop.cancelled() => {}
        }
    }
}

/// A known anchor and the SHA-256 of its bytes (the next anchor's `previous`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Known {
    key: String,
    sha256: String,
}

struct Anchorer {
    store: Store,
    bucket: AnchorBucket,
    interval: Duration,
    chain_id: Option<String>,
    /// The newest anchor seen, with what its key says: the next anchor's `previous`. Only a
    /// hint: it may come from the database or from anyone who can write to the bucket, so it
    /// never stops an anchor from being written.
    newest: Option<(AnchorRef, Known)>,
    /// Whether `newest` has been looked up (in the database, then the bucket).
    known: bool,
    /// The head last anchored (by this task or found anchored): nothing to do while it stays.
    anchored: Option<(i64, String)>,
    /// The anchor last compared with the chain, so that a mismatch is reported once.
    compared: Option<String>,
}

impl Anchorer {
    /// Writes an anchor for the chain's head unless it is anchored already; returns it.
    async fn anchor_head(&mut self) -> Result<Option<AnchorRef>, AnchorError> {
        let chain_id = match &self.chain_id {
            Some(id) => id.clone(),
            None => {
                let fresh = uuid::Uuid::new_v4().to_string();
                let id = self
                    .store
                    .setting_or_insert(CHAIN_ID_SETTING, &fresh)
                    .await?;
                self.chain_id = Some(id.clone());
                id
            }
        };
        let head = self.store.chain_head().await?;
        // A head behind what this gateway wrote: its newest events were removed from the
        // database (the writer refuses to go on). What was written is anchored instead, so
        // that `audit verify` reports the removal.
        let changed = self.store.audit_refused_link();
        let found_changed = changed.is_some();
        let head = match changed.or_else(|| self.store.audit_written()) {
            Some(written)
                if found_changed
                    || written.seq > head.seq
                    || (written.seq == head.seq && written.hash != head.hash) =>
            {
                tracing::error!(
                    known = written.seq,
                    head = head.seq,
                    "the audit chain does not hold what this gateway saw in it: anchoring \
                     what it saw"
                );
                written
            }
            _ => head,
        };
        let current = (head.seq, head.hash.clone());
        if head.seq == 0 || self.anchored.as_ref() == Some(&current) {
            return Ok(None);
        }
        if let Err(e) = self.catch_up().await {
            // Costs the `previous` link at most; the head is anchored all the same.
            tracing::warn!(error = %e, "could not look for newer audit anchors");
        }
        if let Some((newest, _)) = self.newest.clone() {
            if (newest.seq, &newest.hash) == (head.seq, &head.hash) {
                // Another instance (or this one before a restart) anchored this head.
                self.anchored = Some(current);
                return Ok(None);
            }
            self.compare_with_chain(&newest, head.seq).await?;
        }
        let anchor = Anchor {
            format: ANCHOR_FORMAT.into(),
            chain_id,
            seq: head.seq,
            hash: head.hash.clone(),
            previous: self.newest.as_ref().map(|(_, known)| PreviousAnchor {
                key: known.key.clone(),
                sha256: known.sha256.clone(),
            }),
            written_at: crate::audit::format_time(std::time::SystemTime::now()),
            interval_secs: Some(self.interval.as_secs()),
        };
        let mut body = serde_json::to_vec_pretty(&anchor)
            .map_err(|e| AnchorError::Setup(format!("anchor not serialisable: {e}")))?;
        body.push(b'\n');
        let key = anchor_key(self.bucket.prefix(), head.seq, &head.hash);
        let known = Known {
            key: key.clone(),
            sha256: hex::encode(Sha256::digest(&body)),
        };
        self.bucket.put_locked(&key, body).await?;
        let anchored = AnchorRef {
            key,
            seq: head.seq,
            hash: head.hash,
        };
        self.remember(anchored.clone(), known).await;
        self.anchored = Some(current);
        Ok(Some(anchored))
    }

    /// Says so (once per anchor) when the chain does not hold what `newest` anchored. Anchors
    /// are never rewritten; the auditor has to see this, and `audit verify` reports it too.
    async fn compare_with_chain(
        &mut self,
        newest: &AnchorRef,
        head_seq: i64,
    ) -> Result<(), AnchorError> {
        if self.compared.as_deref() == Some(newest.key.as_str()) {
            return Ok(());
        }
        let differs = if newest.seq > head_seq {
            true
        } else {
            let rows = self.store.audit_rows_as_stored(newest.seq - 1, 1).await?;
            rows.first().map(|(row, _)| row.hash.as_str()) != Some(newest.hash.as_str())
        };
        if differs {
            tracing::error!(
                chain_seq = head_seq,
                anchor_seq = newest.seq,
                anchor = %newest.key,
                "the audit chain does not hold what its newest anchor says (the database was \
                 restored, rolled back or rewritten, or someone else wrote that anchor); \
                 anchoring goes on, and `audit verify` will report the mismatch"
            );
        }
        self.compared = Some(newest.key.clone());
        Ok(())
    }

    /// Finds the newest anchor: the one this database remembers, then any written after it
    /// (by another instance, or a run whose last write was not remembered).
    async fn catch_up(&mut self) -> Result<(), AnchorError> {
        if !self.known {
            let remembered = self.store.setting(LAST_ANCHOR_SETTING).await?;
            self.newest = remembered
                .and_then(|text| serde_json::from_str::<Known>(&text).ok())
                .and_then(|known| {
                    parse_anchor_key(self.bucket.prefix(), &known.key).map(|r| (r, known))
                });
            self.known = true;
        }
        let after = self.newest.as_ref().map(|(r, _)| r.key.clone());
        let prefix = self.bucket.prefix().to_string();
        // Only the newest of each page is kept: the prefix may hold any number of keys.
        let mut newer: Option<AnchorRef> = None;
        self.bucket
            .list_pages(after.as_deref(), CATCH_UP_PAGES, |page| {
                for key in page {
                    if let Some(found) = parse_anchor_key(&prefix, &key)
                        && newer.as_ref().is_none_or(|n| found.seq > n.seq)
                    {
                        newer = Some(found);
                    }
                }
            })
            .await?;
        if let Some(newer) = newer {
            let body = self.bucket.get(&newer.key, None).await?;
            let known = Known {
                key: newer.key.clone(),
                sha256: hex::encode(Sha256::digest(&body)),
            };
            self.remember(newer, known).await;
        }
        Ok(())
    }

    async fn remember(&mut self, anchor: AnchorRef, known: Known) {
        if let Ok(text) = serde_json::to_string(&known)
            && let Err(e) = self.store.put_setting(LAST_ANCHOR_SETTING, &text).await
        {
            // Only costs a longer listing at the next start.
            tracing::warn!(error = %e, "could not remember the newest audit anchor");
        }
        self.newest = Some((anchor, known));
    }
}
