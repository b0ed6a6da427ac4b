//! One batch of events written to the store, with one quick retry: the rows it produced, or
//! what a failure leaves behind (events to keep, events whose fate is in doubt).

use std::sync::Arc;
use std::time::Duration;

use super::in_doubt::InDoubt;
use super::{AuditError, AuditEvent, LinkingKeys};
use crate::store::{AuditRow, ChainLink, Generation, Store, StoreError};

/// Retried batches, likewise: during an outage every batch is retried.
static RETRIED_BATCHES: crate::log_throttle::Throttle = crate::log_throttle::Throttle::new(1000);

/// What a batch's write produced: a row for each event (`None`: left out, see
/// [`AuditLog::record_checked`](super::AuditLog::record_checked), or set aside), and the events nobody waits for that were set
/// aside after a failed attempt, to be kept (see [`Retained`](super::retained::Retained)).
pub(super) struct Written {
    pub(super) rows: Vec<Option<AuditRow>>,
    pub(super) kept: Vec<AuditEvent>,
}

impl Written {
    /// An empty batch's.
    fn nothing() -> Written {
        Written {
            rows: Vec::new(),
            kept: Vec::new(),
        }
    }
}

/// A batch that could not be written, and its events nobody waits for (to be kept).
pub(super) struct Failed {
    pub(super) error: AuditError,
    pub(super) kept: Vec<AuditEvent>,
    /// Cut off at the deadline after it was sent: it may still be committed (see `in_doubt`).
    pub(super) in_doubt: Option<InDoubt>,
}

impl Failed {
    fn new(error: &StoreError, kept: Vec<AuditEvent>) -> Failed {
        Failed {
            error: AuditError::Store(error.to_string()),
            kept,
            in_doubt: None,
        }
    }

    /// A batch cut off at the deadline: `events` are held until their fate is known, not kept.
    fn cut_off(error: &StoreError, events: Vec<AuditEvent>, waited: Vec<bool>) -> Failed {
        Failed {
            in_doubt: Some(InDoubt::new(events, waited)),
            ..Failed::new(error, Vec::new())
        }
    }
}

/// The second attempt after a batch failed. Events nobody waits for are set aside rather than
/// tried again with the rest: if one of them is what the store refuses, the requests waiting
/// in the same batch still go through. A batch of such events only (kept ones being retried)
/// is not tried again here; [`Retained`](super::retained::Retained) paces those.
struct Retry {
    events: Vec<AuditEvent>,
    read_at: Vec<Option<Generation>>,
    /// Where each of `events` was in the batch.
    positions: Vec<usize>,
    set_aside: Vec<AuditEvent>,
    len: usize,
}

impl Retry {
    fn plan(
        events: Vec<AuditEvent>,
        read_at: &[Option<Generation>],
        waited: &[bool],
        error: &StoreError,
    ) -> Result<Retry, Failed> {
        let len = events.len();
        let mut retry = Retry {
            events: Vec::with_capacity(len),
            read_at: Vec::with_capacity(len),
            positions: Vec::with_capacity(len),
            set_aside: Vec::new(),
            len,
        };
        for (i, event) in events.into_iter().enumerate() {
            if waited.get(i).copied().unwrap_or(false) {
                retry.events.push(event);
                retry.read_at.push(read_at.get(i).copied().flatten());
                retry.positions.push(i);
            } else {
                retry.set_aside.push(event);
            }
        }
        if retry.events.is_empty() {
            return Err(Failed::new(error, retry.set_aside));
        }
        if let Some(held_back) = RETRIED_BATCHES.admit() {
            tracing::warn!(
                error = %error,
                retried_since_last = held_back,
                "audit write failed, retrying once (at most one such line a second)"
            );
        }
        Ok(retry)
    }

    /// The rows of the retried events, placed where their events were in the batch.
    fn written(self, links: Vec<Option<ChainLink>>) -> Written {
        let mut placed: Vec<Option<AuditRow>> = (0..self.len).map(|_| None).collect();
        for (pos, row) in self.positions.into_iter().zip(rows(links, self.events)) {
            if let Some(slot) = placed.get_mut(pos) {
                *slot = row;
            }
        }
        Written {
            rows: placed,
            kept: self.set_aside,
        }
    }

    fn failed(self, error: &StoreError) -> Failed {
        Failed::new(error, self.set_aside)
    }
}

/// The events of a batch that nobody waits for.
fn not_waited(events: &[AuditEvent], waited: &[bool]) -> Vec<AuditEvent> {
    events
        .iter()
        .enumerate()
        .filter(|&(i, _)| !waited.get(i).copied().unwrap_or(false))
        .map(|(_, e)| e.clone())
        .collect()
}

/// Writes a batch; `waited[i]` says whether a request waits for `events[i]`. One quick retry
/// (see [`Retry`]) covers a transient lock or connection hiccup; after that the waiting
/// requests get the error (and a 503).
pub(super) async fn write_with_retry(
    store: &Store,
    key: &LinkingKeys,
    events: Vec<AuditEvent>,
    read_at: &[Option<Generation>],
    waited: &[bool],
) -> Result<Written, Failed> {
    if events.is_empty() {
        return Ok(Written::nothing());
    }
    let link = |key: LinkingKeys| {
        move |prev: &str, seq: i64, e: &AuditEvent, details: &str| {
            key.link_with(prev, seq, e, details)
        }
    };
    // Bounded, so that a hung connection does not stop the writer for good: the batch fails
    // (its requests were refused at their own deadline), and the next batch takes a fresh
    // connection.
    let deadline = crate::store::STORE_DEADLINE;
    let append = |events: Arc<[AuditEvent]>, read_at: Arc<[Option<Generation>]>| async {
        tokio::time::timeout(
            deadline,
            store.append_audit_checked(events, read_at, link(key.clone())),
        )
        .await
        .unwrap_or(Err(crate::store::StoreError::Timeout(deadline.as_secs())))
    };
    let shared: Arc<[AuditEvent]> = events.into();
    let first = match append(shared.clone(), read_at.into()).await {
        // The events are shared with the store's call (which may retry): copied, not moved.
        Ok(appended) => {
            return Ok(Written {
                rows: rows(appended.links, shared.iter().cloned()),
                kept: Vec::new(),
            });
        }
        // Cut off at the deadline, or refused at once because the database cannot be
        // reached (see the store's `outage`): a retry would wait again, or fail again.
        Err(e @ crate::store::StoreError::Timeout(_)) => {
            let e = store.noted(e);
            return Err(Failed::cut_off(&e, shared.to_vec(), waited.to_vec()));
        }
        Err(e @ crate::store::StoreError::Unreachable(_)) => {
            let e = store.noted(e);
            return Err(Failed::new(&e, not_waited(&shared, waited)));
        }
        // Refused until a restart: a retry 50 ms later would only make the requests wait.
        Err(e) if e.refuses_until_restart() => {
            return Err(Failed::new(&e, not_waited(&shared, waited)));
        }
        Err(e) => e,
    };
    let retry = Retry::plan(shared.to_vec(), read_at, waited, &first)?;
    // A restarted database fails each pooled connection once: the retry must not take
    // another dead one.
    store.suspect_connections();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again: Arc<[AuditEvent]> = retry.events.clone().into();
    match append(again, retry.read_at.clone().into()).await {
        Ok(appended) => Ok(retry.written(appended.links)),
        Err(e @ crate::store::StoreError::Timeout(_)) => {
            let cut_off = InDoubt::new(retry.events.clone(), vec![true; retry.events.len()]);
            let mut failed = retry.failed(&e);
            failed.in_doubt = Some(cut_off);
            Err(failed)
        }
        Err(e) => Err(retry.failed(&e)),
    }
}

/// [`write_with_retry`] on the writer's own thread (SQLite).
pub(super) fn write_blocking_with_retry(
    store: &Store,
    key: &LinkingKeys,
    events: Vec<AuditEvent>,
    read_at: &[Option<Generation>],
    waited: &[bool],
) -> Result<Written, Failed> {
    if events.is_empty() {
        return Ok(Written::nothing());
    }
    let link =
        |prev: &str, seq: i64, e: &AuditEvent, details: &str| key.link_with(prev, seq, e, details);
    let attempt = |events: &[AuditEvent], read_at: &[Option<Generation>]| {
        store
            .append_audit_blocking(events, read_at, link)
            // Unreachable: `start` runs this thread only on SQLite; fail the batch, not panic.
            .unwrap_or_else(|| {
                Err(crate::store::StoreError::Sqlite(
                    "the audit writer's own thread needs a SQLite store".into(),
                ))
            })
    };
    let first = match attempt(&events, read_at) {
        Ok(appended) => {
            return Ok(Written {
                rows: rows(appended.links, events),
                kept: Vec::new(),
            });
        }
        // Refused until a restart: a retry 50 ms later would only make the requests wait.
        Err(e) if e.refuses_until_restart() => {
            return Err(Failed::new(&e, not_waited(&events, waited)));
        }
        Err(e) => e,
    };
    let retry = Retry::plan(events, read_at, waited, &first)?;
    std::thread::sleep(Duration::from_millis(50));
    match attempt(&retry.events, &retry.read_at) {
        Ok(appended) => Ok(retry.written(appended.links)),
        Err(e) => Err(retry.failed(&e)),
    }
}

/// The committed rows: each event at the place the store gave it (`None`: left out).
fn rows(
    links: Vec<Option<ChainLink>>,
    events: impl IntoIterator<Item = AuditEvent>,
) -> Vec<Option<AuditRow>> {
    links
        .into_iter()
        .zip(events)
        .map(|(link, event)| link.map(|link| AuditRow::new(link, event)))
        .collect()
}
