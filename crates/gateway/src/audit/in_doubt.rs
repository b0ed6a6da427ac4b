//! Events committed after their request was refused, and the outcomes they need.
//!
//! A request (or a change, or a sign-in) waits [`crate::store::STORE_DEADLINE`] for its event;
//! past it, it is refused (503, nothing forwarded or changed) and records no outcome. Two ways the event can still be committed:
//!
//! - The writer's batch was slower than the caller's wait but went through in the end (a
//!   lock on the chain head released, a stalled disk catching up). The writer then finds
//!   nobody to hand the sequence number to; the request said it gave up ([`Abandoned`]).
//!   Matched, the event gets the outcome the caller was given.
//! - The writer's own deadline cut the batch off, and PostgreSQL committed it anyway.
//!
//! Left there, either would show an allowed request without an outcome (what a crash
//! mid-forward leaves), and the second would be on no gateway's stdout.
//!
//! Cut off by the writer's deadline, a batch is in doubt: PostgreSQL runs a statement it has
//! already taken to its end even when its client has gone (one waiting behind a lock on the
//! chain head, or sent to a server that was stopped and then resumed). So such a batch is held
//! here ([`Doubts`]), and looked up after the writer's next successful append. By
//! then its fate is settled: the cut-off statement extends the chain only from the head it was
//! sent with, and that append either moved the head on from there (the cut-off statement then
//! finds it moved and inserts nothing) or came after it, behind the head row's lock. Events
//! found are printed, and each refused request gets the outcome it was answered with; events
//! not found that nobody waited for (outcomes) go back to be written again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::audit::{AuditEvent, EventKind};
use crate::store::{AuditRow, Store, StoreError};

/// Most events held; beyond it the oldest batches are given up (said in the log).
const MAX_HELD: usize = 10_000;

/// The error in the outcome of an event committed after its caller was refused.
pub const LATE_COMMIT_ERROR: &str = "the audit store did not confirm this event in time, so the \
     caller was refused (503) and nothing was forwarded or changed; the event was committed later";

/// How long a committed event nobody took, or a request that gave up, waits for its match.
const MATCH_WITHIN: Duration = Duration::from_secs(60);
/// Most of either kept for matching.
const MAX_UNMATCHED: usize = 1024;

/// Committed request events whose request had stopped waiting, and the requests that gave up,
/// matched by request id. A request that stops waiting because its client went away records
/// its own outcome and never says it gave up: its event simply ages out here.
#[derive(Default)]
pub(super) struct Abandoned {
    unanswered: VecDeque<(Instant, AuditEvent)>,
    gave_up: VecDeque<(Instant, String)>,
}

impl Abandoned {
    /// `event` was committed, but nobody was waiting for it any more.
    pub(super) fn unanswered(&mut self, event: AuditEvent) {
        self.unanswered.push_back((Instant::now(), event));
    }

    /// Takes the requests that gave up since the last call; returns an outcome for each one
    /// whose event was committed, now or before.
    pub(super) fn match_up(&mut self, gave_up: Vec<String>) -> Vec<AuditEvent> {
        let now = Instant::now();
        self.gave_up
            .extend(gave_up.into_iter().map(|request_id| (now, request_id)));
        let mut outcomes = Vec::new();
        self.gave_up.retain(|(_, request_id)| {
            let found = self
                .unanswered
                .iter()
                .position(|(_, event)| &event.request_id == request_id);
            match found.and_then(|i| self.unanswered.remove(i)) {
                Some((_, event)) => {
                    outcomes.push(refusal_outcome(&event));
                    false
                }
                None => true,
            }
        });
        expire(&mut self.unanswered, now);
        expire(&mut self.gave_up, now);
        outcomes
    }
}

/// Drops entries older than [`MATCH_WITHIN`], and the oldest beyond [`MAX_UNMATCHED`].
fn expire<T>(queue: &mut VecDeque<(Instant, T)>, now: Instant) {
    while queue.front().is_some_and(|(at, _)| {
        now.duration_since(*at) > MATCH_WITHIN || queue.len() > MAX_UNMATCHED
    }) {
        queue.pop_front();
    }
}

/// One cut-off batch: its events, and whether a request waited for each.
pub(super) struct InDoubt {
    events: Vec<AuditEvent>,
    waited: Vec<bool>,
}

impl InDoubt {
    /// A batch of `events` (`waited[i]`: a request waited for `events[i]`).
    pub(super) fn new(events: Vec<AuditEvent>, waited: Vec<bool>) -> InDoubt {
        InDoubt { events, waited }
    }
}

/// What the cut-off batches turned out to be.
#[derive(Default)]
pub(super) struct Settled {
    /// Their committed rows, for stdout.
    pub committed: Vec<AuditRow>,
    /// An outcome for each request that waited for a committed event and was refused.
    pub outcomes: Vec<AuditEvent>,
    /// Events nobody waited for that were not committed: to be written again.
    pub lost: Vec<AuditEvent>,
}

/// The cut-off batches not settled yet.
#[derive(Default)]
pub(super) struct Doubts {
    batches: Vec<InDoubt>,
    held: usize,
}

impl Doubts {
    /// Holds `batch` until it can be settled.
    pub(super) fn add(&mut self, batch: InDoubt) {
        self.held += batch.events.len();
        self.batches.push(batch);
        while self.held > MAX_HELD && self.batches.len() > 1 {
            let oldest = self.batches.remove(0);
            self.held -= oldest.events.len();
            tracing::error!(
                events = oldest.events.len(),
                "audit events cut off at the store's deadline could not be looked up in time: \
                 if the database committed them, their requests show no outcome"
            );
        }
    }

    /// Says, at shutdown, that batches were never settled (no append went through after them).
    pub(super) fn report_unsettled(&self) {
        if self.held > 0 {
            tracing::warn!(
                events = self.held,
                "audit events cut off at the store's deadline were never looked up: if the \
                 database committed them, their requests show no outcome"
            );
        }
    }

    /// Whether any batch waits to be settled.
    pub(super) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Looks every held batch up; call after an append succeeded (see the module's note). On
    /// an error nothing is settled: the batches stay for the next time.
    pub(super) async fn settle(&mut self, store: &Store) -> Result<Settled, StoreError> {
        let mut found = Vec::new();
        for batch in &self.batches {
            for event in &batch.events {
                found.push(committed_row(store, event).await?);
            }
        }
        let mut settled = Settled::default();
        let mut found = found.into_iter();
        for batch in self.batches.drain(..) {
            for (event, waited) in batch.events.into_iter().zip(batch.waited) {
                match found.next().flatten() {
                    Some(row) => {
                        if waited && row.event.kind != EventKind::Outcome {
                            settled.outcomes.push(refusal_outcome(&row.event));
                        }
                        settled.committed.push(row);
                    }
                    None if !waited => settled.lost.push(event),
                    // Refused, and not in the trail: nothing to add.
                    None => {}
                }
            }
        }
        self.held = 0;
        settled.committed.sort_by_key(|row| row.seq);
        if !settled.committed.is_empty() {
            tracing::warn!(
                events = settled.committed.len(),
                refused = settled.outcomes.len(),
                "audit events cut off at the store's deadline were committed after all: they \
                 are printed now, each with an outcome for the request that was refused"
            );
        }
        Ok(settled)
    }
}

/// The committed row of `event`, if there is one.
async fn committed_row(store: &Store, event: &AuditEvent) -> Result<Option<AuditRow>, StoreError> {
    let rows = store.audit_by_request(&event.request_id).await?;
    Ok(rows.into_iter().find(|row| {
        row.event.kind == event.kind && row.event.action == event.action && row.event.ts == event.ts
    }))
}

/// The outcome of an event whose caller was refused because it was not confirmed in time: a
/// proxied request (not forwarded), a change (not made), a sign-in (withdrawn).
fn refusal_outcome(request: &AuditEvent) -> AuditEvent {
    let mut outcome = request.clone();
    outcome.kind = EventKind::Outcome;
    outcome.ts = crate::store::now_ms();
    outcome.status = Some(503);
    outcome.latency_ms = None;
    // Both shapes: a proxied request's outcome (`completed`, `error`) and a change's
    // (`result`, `reason`).
    outcome.details = serde_json::json!({
        "completed": false,
        "error": LATE_COMMIT_ERROR,
        "result": "refused",
        "reason": "audit_unavailable",
    });
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str) -> AuditEvent {
        AuditEvent::new(EventKind::Request, id, "convox:apps:restart")
    }

    #[test]
    fn a_request_that_gave_up_is_matched_with_its_event_either_way_round() {
        let mut abandoned = Abandoned::default();
        // The event first, then the request says it gave up.
        abandoned.unanswered(request("a"));
        let outcomes = abandoned.match_up(vec!["a".into()]);
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].request_id, "a");
        assert_eq!(outcomes[0].kind, EventKind::Outcome);
        assert_eq!(outcomes[0].status, Some(503));
        assert_eq!(outcomes[0].details["error"], LATE_COMMIT_ERROR);
        // The other way round: it gave up while its batch was still being written.
        assert!(abandoned.match_up(vec!["b".into()]).is_empty());
        abandoned.unanswered(request("b"));
        let outcomes = abandoned.match_up(Vec::new());
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].request_id, "b");
        // Each once.
        assert!(abandoned.match_up(Vec::new()).is_empty());
    }

    #[test]
    fn an_event_whose_client_went_away_gets_no_refusal() {
        // Its caller did not give up (it went away: the proxy records that outcome itself).
        let mut abandoned = Abandoned::default();
        abandoned.unanswered(request("c"));
        assert!(abandoned.match_up(vec!["d".into()]).is_empty());
        assert!(abandoned.match_up(Vec::new()).is_empty());
    }

    #[test]
    fn unmatched_entries_are_bounded() {
        let mut abandoned = Abandoned::default();
        for n in 0..(MAX_UNMATCHED + 100) {
            abandoned.unanswered(request(&format!("u{n}")));
        }
        let gave_up = (0..(MAX_UNMATCHED + 100))
            .map(|n| format!("g{n}"))
            .collect();
        assert!(abandoned.match_up(gave_up).is_empty());
        assert_eq!(abandoned.unanswered.len(), MAX_UNMATCHED);
        assert_eq!(abandoned.gave_up.len(), MAX_UNMATCHED);
    }
}
