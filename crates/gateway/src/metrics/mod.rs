//! Prometheus metrics: what operators graph and alert on — traffic and its answers, refusals
//! by permission, the audit trail's commits and failures, anchors, open connections and
//! WebSocket sessions, readiness.
//!
//! Counters are bumped where things happen (a layer around every route, [`MeasureLayer`]; the
//! audit log as it takes each event; its writer after each commit; the anchoring task), the
//! per-request ones without a lock ([`traffic`]); values that are a state (open sessions,
//! readiness) are read when Prometheus scrapes. Nothing here ever names a person, a token, an
//! address or a path: labels are the gateway's own words (areas, permissions, actions, status
//! codes), so the endpoint reveals traffic's shape, never who or what. Served on a listener of
//! its own ([`endpoint`], `METRICS_LISTEN_ADDR`), never on the gateway's port.

pub mod endpoint;
mod measure;
mod traffic;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::audit::AuditEvent;
pub use measure::MeasureLayer;
use traffic::{AtomicHistogram, COMMIT_BOUNDS, Traffic};
pub use traffic::{MAX_ACTIONS, OTHER_ACTION};

/// The part of the gateway a request was for, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)] // The label values, as Prometheus shows them.
pub enum Area {
    /// The rack API behind `/api/v1/rack-proxy`.
    proxy,
    /// Sign-in, sign-out and the CLI's login (`/api/v1/auth/…`).
    auth,
    /// Health and readiness (`/api/v1/health…`).
    health,
    /// The rest of the gateway's JSON API (`/api/v1/…`).
    api,
    /// Pages, the stylesheet, and paths the gateway does not serve.
    web,
}

impl Area {
    /// The area `path` belongs to.
    pub fn of(path: &str) -> Area {
        let Some(rest) = path.strip_prefix("/api/v1/") else {
            return if path == "/api/v1" {
                Area::api
            } else {
                Area::web
            };
        };
        let first = rest.split('/').next().unwrap_or_default();
        match first {
            "rack-proxy" => Area::proxy,
            "auth" => Area::auth,
            "health" => Area::health,
            _ => Area::api,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NotificationLabels {
    channel: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DependencyLabels {
    dependency: &'static str,
}

/// The audit commits' durations, as a collector of their own.
#[derive(Debug)]
struct CommitTimes(AtomicHistogram);

impl Collector for CommitTimes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(
            &mut encoder,
            "rack_gateway_audit_commit_duration_seconds",
            "Time each audit commit took (every request in a batch waits for it).",
        )
    }
}

/// The gateway's metrics. One per process, shared (`Arc`) by the router, the audit log and
/// the listener; cheap to bump from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    traffic: Arc<Traffic>,
    commit_times: Arc<CommitTimes>,
    audit_written: Counter,
    audit_commit_failures: Counter,
    anchor_rounds: Family<ResultLabels, Counter>,
    anchor_last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    notifications: Family<NotificationLabels, Counter>,
    /// Open client connections on the gateway's port (kept by `http_server::serve`).
    pub connections_open: Gauge,
    websocket_sessions_open: Gauge,
    ready: Gauge,
    dependency_up: Family<DependencyLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered and at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let traffic = Arc::new(Traffic::default());
        let commit_times = Arc::new(CommitTimes(AtomicHistogram::new(COMMIT_BOUNDS)));
        let metrics = Metrics {
            traffic: traffic.clone(),
            commit_times: commit_times.clone(),
            audit_written: Counter::default(),
            audit_commit_failures: Counter::default(),
            anchor_rounds: Family::default(),
            anchor_last_success: Gauge::default(),
            notifications: Family::default(),
            connections_open: Gauge::default(),
            websocket_sessions_open: Gauge::default(),
            ready: Gauge::default(),
            dependency_up: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "rack_gateway_build",
            "The gateway's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(traffic));
        registry.register(
            "rack_gateway_audit_events_written",
            "Audit events committed to the database",
            metrics.audit_written.clone(),
        );
        registry.register_collector(Box::new(commit_times));
        registry.register(
            "rack_gateway_audit_commit_failures",
            "Audit commits that failed (the requests waiting on them were refused with 503)",
            metrics.audit_commit_failures.clone(),
        );
        registry.register(
            "rack_gateway_audit_anchor_rounds",
            "Rounds of the audit anchoring task, by result (ok: anchored or nothing new; \
             failed)",
            metrics.anchor_rounds.clone(),
        );
        registry.register(
            "rack_gateway_audit_anchor_last_success_timestamp_seconds",
            "Unix time of the anchoring task's last successful round (0: none yet)",
            metrics.anchor_last_success.clone(),
        );
        registry.register(
            "rack_gateway_notifications",
            "Attempts to send a notification, by channel (slack, email) and result (sent; \
             retry: failed for now, tried again later; failed: given up on, see \
             `rack-gateway-server notify list --failed`)",
            metrics.notifications.clone(),
        );
        registry.register(
            "rack_gateway_connections_open",
            "Client connections open on the gateway's port (MAX_CONNECTIONS caps them)",
            metrics.connections_open.clone(),
        );
        registry.register(
            "rack_gateway_websocket_sessions_open",
            "WebSocket sessions open (MAX_WEBSOCKETS caps them)",
            metrics.websocket_sessions_open.clone(),
        );
        registry.register(
            "rack_gateway_ready",
            "1 when the readiness check passes (database, audit trail and rack), else 0",
            metrics.ready.clone(),
        );
        registry.register(
            "rack_gateway_dependency_up",
            "Each part the readiness check looks at: 1 when it answers as it should",
            metrics.dependency_up.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Counts a request answered with `status` after `took`.
    pub fn observe_http(&self, area: Area, status: http::StatusCode, took: Duration) {
        self.traffic.answered(area, status.as_u16(), took);
    }

    /// Counts an audit event as it is handed to the audit log.
    pub fn observe_event(&self, event: &AuditEvent) {
        self.traffic
            .event(event.kind, &event.action, event.rbac_decision, event.status);
    }

    /// Notes an audit commit of `count` events that took `took`: `written` of them committed,
    /// or the commit failed.
    pub fn observe_commit(&self, written: Option<usize>, count: usize, took: Duration) {
        if count == 0 {
            return;
        }
        self.commit_times.0.observe(took);
        match written {
            Some(n) => {
                self.audit_written
                    .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
            }
            None => {
                self.audit_commit_failures.inc();
            }
        }
    }

    /// Notes a round of the anchoring task; a successful one at `now`.
    pub fn observe_anchor_round(&self, ok: bool, now: std::time::SystemTime) {
        let result = if ok { "ok" } else { "failed" };
        self.anchor_rounds
            .get_or_create(&ResultLabels { result })
            .inc();
        if ok {
            let secs = now
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.anchor_last_success.set(secs);
        }
    }

    /// Counts an attempt to send a notification on `channel` (`slack`, `email`): `result` is
    /// `sent`, `retry` or `failed`.
    pub fn observe_notification(&self, channel: &str, result: &'static str) {
        let channel = match channel {
            "slack" => "slack",
            "email" => "email",
            _ => "other",
        };
        self.notifications
            .get_or_create(&NotificationLabels { channel, result })
            .inc();
    }

    /// Sets the values read at scrape time.
    pub fn set_state(&self, state: &ScrapedState) {
        self.websocket_sessions_open
            .set(i64::try_from(state.websocket_sessions).unwrap_or(i64::MAX));
        self.ready.set(i64::from(state.ready));
        for (dependency, up) in &state.dependencies {
            self.dependency_up
                .get_or_create(&DependencyLabels { dependency })
                .set(i64::from(*up));
        }
    }

    /// Every metric in Prometheus' text format (0.0.4), or OpenMetrics' when `openmetrics`.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; the encoders only pass on the writer's errors.
        let _ = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        out
    }
}

/// What the metrics endpoint reads from the running gateway when scraped.
#[derive(Debug, Clone, Default)]
pub struct ScrapedState {
    /// WebSocket sessions open.
    pub websocket_sessions: usize,
    /// Whether the readiness check passes.
    pub ready: bool,
    /// Each dependency readiness looks at, and whether it is up.
    pub dependencies: Vec<(&'static str, bool)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Decision, EventKind};

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn areas_follow_the_path() {
        assert_eq!(Area::of("/api/v1/rack-proxy/apps"), Area::proxy);
        assert_eq!(Area::of("/api/v1/rack-proxy"), Area::proxy);
        assert_eq!(Area::of("/api/v1/auth/cli/start"), Area::auth);
        assert_eq!(Area::of("/api/v1/health/ready"), Area::health);
        assert_eq!(Area::of("/api/v1/users"), Area::api);
        assert_eq!(Area::of("/api/v1"), Area::api);
        assert_eq!(Area::of("/api/v1rack-proxy"), Area::web);
        assert_eq!(Area::of("/account"), Area::web);
        assert_eq!(Area::of("/metrics"), Area::web);
    }

    #[test]
    fn requests_and_events_are_counted_under_their_labels() {
        let m = Metrics::new();
        m.observe_http(
            Area::proxy,
            http::StatusCode::FORBIDDEN,
            Duration::from_millis(3),
        );
        m.observe_http(Area::proxy, http::StatusCode::OK, Duration::from_millis(1));
        m.observe_http(Area::proxy, http::StatusCode::OK, Duration::from_millis(1));
        let mut denied = AuditEvent::new(EventKind::Request, "r", "convox:apps:delete");
        denied.rbac_decision = Decision::Deny;
        denied.status = Some(403);
        m.observe_event(&denied);
        let text = m.render(false);
        assert_eq!(
            line(
                &text,
                "rack_gateway_http_requests_total{area=\"proxy\",code=\"200\"}"
            ),
            Some("rack_gateway_http_requests_total{area=\"proxy\",code=\"200\"} 2")
        );
        assert!(text.contains(
            "rack_gateway_audit_events_total{kind=\"request\",action=\"convox:apps:delete\",\
             decision=\"deny\",status=\"4xx\"} 1"
        ));
        assert!(text.contains(
            "rack_gateway_http_request_duration_seconds_bucket{area=\"proxy\",le=\"0.0025\"} 2"
        ));
        assert!(text.contains("rack_gateway_build_info{version="));
        let open = m.render(true);
        assert!(open.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    }

    #[test]
    fn made_up_actions_beyond_the_cap_share_one_series() {
        let m = Metrics::new();
        for i in 0..MAX_ACTIONS + 50 {
            let e = AuditEvent::new(EventKind::Request, "r", format!("convox:unknown:m{i}"));
            m.observe_event(&e);
        }
        // Seen again: counted in its own series, not as a new one.
        m.observe_event(&AuditEvent::new(
            EventKind::Request,
            "r",
            "convox:unknown:m0",
        ));
        let text = m.render(false);
        let series = text
            .lines()
            .filter(|l| l.starts_with("rack_gateway_audit_events_total{"))
            .count();
        assert_eq!(series, MAX_ACTIONS + 1);
        assert!(text.contains("action=\"other\",decision=\"none\",status=\"none\"} 50"));
        assert!(text.contains("action=\"convox:unknown:m0\",decision=\"none\",status=\"none\"} 2"));
    }

    #[test]
    fn commits_and_anchor_rounds_are_noted() {
        let m = Metrics::new();
        m.observe_commit(Some(3), 3, Duration::from_micros(700));
        m.observe_commit(None, 2, Duration::from_secs(1));
        m.observe_commit(None, 0, Duration::from_secs(1));
        m.observe_anchor_round(false, std::time::SystemTime::now());
        m.observe_anchor_round(
            true,
            std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        );
        let text = m.render(false);
        assert!(text.contains("rack_gateway_audit_events_written_total 3\n"));
        assert!(text.contains("rack_gateway_audit_commit_failures_total 1\n"));
        assert!(text.contains("rack_gateway_audit_commit_duration_seconds_count 2\n"));
        assert!(text.contains("rack_gateway_audit_anchor_rounds_total{result=\"failed\"} 1\n"));
        assert!(
            text.contains("rack_gateway_audit_anchor_last_success_timestamp_seconds 1800000000")
        );
    }
}
