//! The counts bumped on every request: answers by area and status, their durations, and
//! audit events by kind, action, decision and status class. Each is one or two relaxed atomic
//! additions, with no lock and no allocation once an action has been seen (a `Family` of
//! `prometheus-client` hashes its label set with SipHash and takes a lock on every bump; on
//! the request path that cost ~2 % of the gateway's instructions per request). They are turned
//! into samples only when scraped ([`Collector`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::Area;
use crate::audit::{Decision, EventKind};

/// Most actions given series of their own; events of later ones are counted under
/// [`OTHER_ACTION`]. The gateway's actions and the catalogue's permissions are a few hundred;
/// the cap keeps a flood of made-up methods (each an unknown route's action) from growing the
/// scrape without bound.
pub const MAX_ACTIONS: usize = 1024;

/// The action label of events past [`MAX_ACTIONS`].
pub const OTHER_ACTION: &str = "other";

/// Status codes counted one by one: hyper's whole range, 100–999.
const CODES: usize = 900;

const AREAS: [Area; 5] = [Area::proxy, Area::auth, Area::health, Area::api, Area::web];
const KINDS: [EventKind; 3] = [EventKind::Request, EventKind::Outcome, EventKind::Gateway];
const DECISIONS: [Decision; 3] = [Decision::Allow, Decision::Deny, Decision::None];
const STATUSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];
const EVENT_SLOTS: usize = KINDS.len() * DECISIONS.len() * STATUSES.len();

/// Upper bounds of the request-duration buckets, in seconds: 0.5 ms to a minute.
pub const REQUEST_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Upper bounds of the audit-commit buckets, in seconds: 0.1 ms to 5 s.
pub const COMMIT_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A histogram of atomics: an observation is three additions.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// One per bound, and the last for everything above them (`+Inf`).
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// Empty, with buckets up to each of `bounds` (ascending) and one above them.
    pub fn new(bounds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation of `took`.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        // The first bucket whose bound is at least `secs` (`le` is inclusive).
        let bucket = self.bounds.partition_point(|bound| *bound < secs);
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Sum, count and per-bucket counts, as the encoders take them. Read without a lock, so a
    /// scrape racing an observation may see its count before its bucket; both only grow.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter())
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        let sum = Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        (sum, self.count.load(Ordering::Relaxed), buckets)
    }

    /// Writes this histogram as metric `name`.
    pub fn encode(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
    ) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder
            .encode_descriptor(name, help, None, MetricType::Histogram)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// Counts of one action's events, one per (kind, decision, status class).
type EventCounts = [AtomicU64; EVENT_SLOTS];

/// The per-request counts.
#[derive(Debug)]
pub struct Traffic {
    /// Per area, per status code (index `code - 100`).
    answers: Box<[AtomicU64]>,
    durations: [AtomicHistogram; AREAS.len()],
    events: RwLock<HashMap<Box<str>, Arc<EventCounts>, foldhash::fast::RandomState>>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            answers: (0..AREAS.len() * CODES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            durations: AREAS.map(|_| AtomicHistogram::new(REQUEST_BOUNDS)),
            events: RwLock::default(),
        }
    }
}

fn area_index(area: Area) -> usize {
    AREAS.iter().position(|a| *a == area).unwrap_or(0)
}

fn event_slot(kind: EventKind, decision: Decision, status: Option<i64>) -> usize {
    let kind = KINDS.iter().position(|k| *k == kind).unwrap_or(0);
    let decision = DECISIONS.iter().position(|d| *d == decision).unwrap_or(0);
    let status = match status {
        None => 0,
        Some(100..=199) => 1,
        Some(200..=299) => 2,
        Some(300..=399) => 3,
        Some(400..=499) => 4,
        Some(_) => 5,
    };
    (kind * DECISIONS.len() + decision) * STATUSES.len() + status
}

impl Traffic {
    /// Counts an answer of `code` in `area` after `took`.
    pub fn answered(&self, area: Area, code: u16, took: Duration) {
        let area = area_index(area);
        let code = usize::from(code).saturating_sub(100).min(CODES - 1);
        if let Some(n) = self.answers.get(area * CODES + code) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(h) = self.durations.get(area) {
            h.observe(took);
        }
    }

    /// Counts an audit event.
    pub fn event(&self, kind: EventKind, action: &str, decision: Decision, status: Option<i64>) {
        let slot = event_slot(kind, decision, status);
        let known = self
            .events
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(action)
            .cloned();
        let counts = match known {
            Some(counts) => counts,
            None => self.add_action(action),
        };
        if let Some(n) = counts.get(slot) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts for an action seen for the first time (or [`OTHER_ACTION`]'s, past the cap).
    fn add_action(&self, action: &str) -> Arc<EventCounts> {
        let mut events = self.events.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(counts) = events.get(action) {
            return counts.clone();
        }
        let action = if events.len() < MAX_ACTIONS {
            action
        } else {
            OTHER_ACTION
        };
        events
            .entry(action.into())
            .or_insert_with(|| Arc::new(std::array::from_fn(|_| AtomicU64::new(0))))
            .clone()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    area: Area,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AreaLabels {
    area: Area,
}

impl Collector for Traffic {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "rack_gateway_http_requests",
            "Requests answered on the gateway's port, by area and HTTP status (a WebSocket \
             session counts once, as its 101).",
            None,
            MetricType::Counter,
        )?;
        for (a, area) in AREAS.iter().enumerate() {
            for c in 0..CODES {
                let n = self
                    .answers
                    .get(a * CODES + c)
                    .map_or(0, |n| n.load(Ordering::Relaxed));
                if n == 0 {
                    continue;
                }
                let labels = HttpLabels {
                    area: *area,
                    code: u16::try_from(c + 100).unwrap_or(u16::MAX),
                };
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "rack_gateway_http_request_duration_seconds",
            "Time from a request's arrival to its response's head (a streamed body goes on \
             after), by area.",
            None,
            MetricType::Histogram,
        )?;
        for (area, histogram) in AREAS.iter().zip(&self.durations) {
            let (sum, count, buckets) = histogram.snapshot();
            if count == 0 {
                continue;
            }
            family
                .encode_family(&AreaLabels { area: *area })?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        let mut family = encoder.encode_descriptor(
            "rack_gateway_audit_events",
            "Audit events produced (each proxied request's, its outcome's, every gateway \
             action's), by kind, action (permission), RBAC decision and status class.",
            None,
            MetricType::Counter,
        )?;
        let events = self.events.read().unwrap_or_else(PoisonError::into_inner);
        let mut actions: Vec<_> = events.iter().collect();
        actions.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (action, counts) in actions {
            let action: &str = action;
            for kind in KINDS {
                for decision in DECISIONS {
                    for (s, status) in STATUSES.iter().enumerate() {
                        let slot = event_slot(kind, decision, None) + s;
                        let n = counts.get(slot).map_or(0, |n| n.load(Ordering::Relaxed));
                        if n == 0 {
                            continue;
                        }
                        let labels = [
                            ("kind", kind.as_str()),
                            ("action", action),
                            ("decision", decision.as_str()),
                            ("status", status),
                        ];
                        family
                            .encode_family(&labels)?
                            .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_and_the_last_takes_the_rest() {
        let h = AtomicHistogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(1000));
        h.observe(Duration::from_micros(1001));
        h.observe(Duration::from_secs(5));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert_eq!(buckets, vec![(0.001, 1), (0.01, 1), (f64::INFINITY, 1)]);
        assert!((sum - 5.002001).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn every_event_slot_is_its_own() {
        let mut seen = std::collections::HashSet::new();
        for kind in KINDS {
            for decision in DECISIONS {
                for status in [None, Some(101), Some(200), Some(302), Some(404), Some(503)] {
                    let slot = event_slot(kind, decision, status);
                    assert!(slot < EVENT_SLOTS);
                    assert!(seen.insert(slot), "{kind:?} {decision:?} {status:?}");
                }
            }
        }
        assert_eq!(seen.len(), EVENT_SLOTS);
    }

    #[test]
    fn codes_outside_the_range_are_not_lost() {
        let t = Traffic::default();
        t.answered(Area::proxy, 99, Duration::ZERO);
        t.answered(Area::proxy, 1000, Duration::ZERO);
        let total: u64 = t.answers.iter().map(|n| n.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 2);
    }
}
