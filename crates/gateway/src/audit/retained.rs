//! Events nobody waits for, kept after a failed batch and written again later.
//!
//! Outcomes and refusal summaries are queued without a caller waiting on them
//! ([`super::AuditLog::record_later`]). When the batch that carries them fails — the database
//! restarting, a failover, a full disk — their requests were already forwarded, so dropping them
//! would leave requests without an outcome although the store is back a moment later. They are
//! kept here (bounded) and written again in a transaction of their own, after a growing pause,
//! so that a retry never fails the batches that requests are waiting on.
//!
//! An event that the store refuses for what it contains, not for being unavailable, would be
//! refused for ever and hold every other kept event back with it. So when retries keep failing
//! while other batches commit, the writer tries the kept events one by one and gives up on
//! those that still fail ([`Retained::take_due`] says which way).

use std::time::{Duration, Instant};

use super::AuditEvent;

/// Most events kept; beyond it the newest are dropped (reported). Only events whose requests
/// ran before the failure get here, so even a long outage keeps few.
const MAX_KEPT: usize = 10_000;
/// Pause before the first retry; doubled after each failure, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// Failed retries while other batches commit before the kept events are tried one by one.
const FAILURES_BEFORE_SPLIT: u32 = 3;

/// How the writer should try the kept events it was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    /// All of them in one transaction.
    Together,
    /// Each in its own transaction, dropping those that fail: one of them is likely refused
    /// for what it contains.
    OneByOne,
}

/// The kept events and when to try them next.
#[derive(Debug)]
pub(super) struct Retained {
    events: Vec<AuditEvent>,
    pause: Duration,
    next_try: Option<Instant>,
    /// Retries that failed although a batch committed since the previous failed retry.
    failures_while_healthy: u32,
    /// A batch committed since the last retry failed.
    healthy_since_failure: bool,
    limit: usize,
}

impl Default for Retained {
    fn default() -> Self {
        Retained::with_limit(MAX_KEPT)
    }
}

impl Retained {
    fn with_limit(limit: usize) -> Retained {
        Retained {
            events: Vec::new(),
            pause: FIRST_PAUSE,
            next_try: None,
            failures_while_healthy: 0,
            healthy_since_failure: false,
            limit,
        }
    }

    /// Whether nothing is kept.
    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Keeps `events` from a batch that failed (each its own error log already).
    pub(super) fn keep(&mut self, events: Vec<AuditEvent>, now: Instant) {
        if events.is_empty() {
            return;
        }
        let room = self.limit.saturating_sub(self.events.len());
        let dropped = events.len().saturating_sub(room);
        self.events.extend(events.into_iter().take(room));
        if dropped > 0 {
            tracing::error!(
                dropped,
                kept = self.events.len(),
                "audit events nobody waits for could not be written and there is no room to \
                 keep them: their requests will show no outcome"
            );
        }
        self.next_try.get_or_insert(now + self.pause);
    }

    /// Notes that a batch committed: the store is answering.
    pub(super) fn store_answered(&mut self) {
        self.healthy_since_failure = true;
    }

    /// The kept events, when their next try is due (always when `force`: the writer is
    /// shutting down), and how to try them.
    pub(super) fn take_due(
        &mut self,
        now: Instant,
        force: bool,
    ) -> Option<(Vec<AuditEvent>, Attempt)> {
        let due = self.next_try.is_some_and(|at| force || now >= at);
        if !due || self.events.is_empty() {
            return None;
        }
        let attempt = if self.failures_while_healthy >= FAILURES_BEFORE_SPLIT {
            Attempt::OneByOne
        } else {
            Attempt::Together
        };
        Some((std::mem::take(&mut self.events), attempt))
    }

    /// The events taken by [`Retained::take_due`] were written (or, one by one, given up).
    pub(super) fn written(&mut self) {
        if self.events.is_empty() {
            self.next_try = None;
        }
        self.pause = FIRST_PAUSE;
        self.failures_while_healthy = 0;
        self.healthy_since_failure = false;
    }

    /// The events taken by [`Retained::take_due`] failed again: kept, and tried after a longer
    /// pause.
    pub(super) fn failed(&mut self, mut events: Vec<AuditEvent>, now: Instant) {
        if self.healthy_since_failure {
            self.failures_while_healthy += 1;
        }
        self.healthy_since_failure = false;
        // Older first, as they came; any kept meanwhile follow.
        events.append(&mut self.events);
        let dropped = events.len().saturating_sub(self.limit);
        events.truncate(self.limit);
        self.events = events;
        if dropped > 0 {
            tracing::error!(
                dropped,
                "audit events nobody waits for could not be written and there is no room to \
                 keep them: their requests will show no outcome"
            );
        }
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        self.next_try = Some(now + self.pause);
        tracing::warn!(
            kept = self.events.len(),
            retry_in_ms = u64::try_from(self.pause.as_millis()).unwrap_or(u64::MAX),
            "audit events kept from a failed batch could not be written yet"
        );
    }

    /// When the next retry is due, if anything is kept.
    #[cfg(test)]
    fn next_try(&self) -> Option<Instant> {
        self.next_try
    }

    /// At the writer's end: what could not be written is lost (the trail shows those requests
    /// without an outcome); says so.
    pub(super) fn report_lost(&self) {
        if !self.events.is_empty() {
            tracing::error!(
                lost = self.events.len(),
                "the audit writer stopped with events it could not write"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::EventKind;

    fn events(names: &[&str]) -> Vec<AuditEvent> {
        names
            .iter()
            .map(|n| AuditEvent::new(EventKind::Outcome, *n, "convox:apps:list"))
            .collect()
    }

    fn ids(events: &[AuditEvent]) -> Vec<String> {
        events.iter().map(|e| e.request_id.clone()).collect()
    }

    #[test]
    fn kept_events_wait_a_growing_pause() {
        let mut kept = Retained::default();
        let t0 = Instant::now();
        assert!(kept.take_due(t0, false).is_none(), "nothing kept");
        kept.keep(events(&["a", "b"]), t0);
        assert!(kept.take_due(t0, false).is_none(), "not due yet");
        let (taken, how) = kept
            .take_due(t0 + FIRST_PAUSE, false)
            .unwrap_or_else(|| panic!("due after the first pause"));
        assert_eq!(how, Attempt::Together);
        assert_eq!(ids(&taken), ["a", "b"]);

        let t1 = t0 + FIRST_PAUSE;
        kept.keep(events(&["c"]), t1);
        kept.failed(taken, t1);
        // Order kept: the retried ones first.
        assert!(
            kept.take_due(t1 + FIRST_PAUSE, false).is_none(),
            "pause doubled"
        );
        let (taken, _) = kept
            .take_due(t1 + FIRST_PAUSE * 2, false)
            .unwrap_or_else(|| panic!("due after the doubled pause"));
        assert_eq!(ids(&taken), ["a", "b", "c"]);
        for _ in 0..20 {
            kept.failed(Vec::new(), t1);
        }
        assert_eq!(kept.pause, MAX_PAUSE);
        kept.written();
        assert_eq!(kept.pause, FIRST_PAUSE);
        assert!(kept.next_try().is_none());
    }

    #[test]
    fn shutting_down_takes_them_at_once() {
        let mut kept = Retained::default();
        let t0 = Instant::now();
        kept.keep(events(&["a"]), t0);
        assert!(kept.take_due(t0, true).is_some());
    }

    #[test]
    fn retries_failing_while_the_store_answers_go_one_by_one() {
        let mut kept = Retained::default();
        let mut now = Instant::now();
        kept.keep(events(&["poison", "fine"]), now);
        // Failures while nothing else commits (the store is down) never split.
        for _ in 0..5 {
            now += MAX_PAUSE;
            let (taken, how) = kept.take_due(now, false).unwrap_or_else(|| panic!("due"));
            assert_eq!(how, Attempt::Together);
            kept.failed(taken, now);
        }
        for round in 0..FAILURES_BEFORE_SPLIT {
            kept.store_answered();
            now += MAX_PAUSE;
            let (taken, how) = kept.take_due(now, false).unwrap_or_else(|| panic!("due"));
            assert_eq!(how, Attempt::Together, "round {round}");
            kept.failed(taken, now);
        }
        now += MAX_PAUSE;
        let (_, how) = kept.take_due(now, false).unwrap_or_else(|| panic!("due"));
        assert_eq!(how, Attempt::OneByOne);
        kept.written();
        assert!(kept.is_empty());
        assert_eq!(kept.failures_while_healthy, 0);
    }

    #[test]
    fn at_most_the_limit_is_kept() {
        let mut kept = Retained::with_limit(3);
        let t0 = Instant::now();
        kept.keep(events(&["a", "b"]), t0);
        kept.keep(events(&["c", "d"]), t0);
        let (taken, _) = kept
            .take_due(t0 + FIRST_PAUSE, false)
            .unwrap_or_else(|| panic!("due"));
        assert_eq!(ids(&taken), ["a", "b", "c"]);
        kept.keep(events(&["e", "f"]), t0);
        kept.failed(taken, t0);
        assert_eq!(kept.events.len(), 3, "the oldest stay");
    }
}
