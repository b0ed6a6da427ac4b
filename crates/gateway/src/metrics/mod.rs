//! Prometheus metrics: what operators graph and alert on — traffic and its answers, refusals
//! by permission, the audit trail's commits and failures, anchors, open connections and
//! WebSocket sessions, readiness.
//!
//! Counters are bumped where things happen (an HTTP layer around every route, the audit log
//! as it takes each event, its writer after each commit, the anchoring task); values that
//! are a state (open connections, readiness) are read when Prometheus scrapes. Nothing here
//! ever names a person, a token, an address or a path: labels are the gateway's own words
//! (areas, permissions, actions, status codes), so the endpoint reveals traffic's shape, never
//! who or what. Served on a listener of its own ([`endpoint`], `METRICS_LISTEN_ADDR`), never
//! on the gateway's port.

pub mod endpoint;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::audit::{AuditEvent, Decision, EventKind};

/// Most series of audit events; events that would start another are counted under
/// [`OTHER_ACTION`]. The gateway's actions and the catalogue's permissions are a few hundred,
/// each with a handful of decisions and status classes; the cap keeps a flood of made-up
/// methods (each an unknown route's action) from growing the scrape without bound.
const MAX_EVENT_SERIES: usize = 2048;

/// The action label of events past [`MAX_EVENT_SERIES`].
pub const OTHER_ACTION: &str = "other";

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
struct HttpLabels {
    area: Area,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AreaLabels {
    area: Area,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    kind: &'static str,
    action: String,
    decision: &'static str,
    /// The status class (`2xx` …) of outcomes and refusals; `none` for the rest.
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DependencyLabels {
    dependency: &'static str,
}

/// Buckets for request durations, in seconds: 0.5 ms to a minute.
fn request_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0,
    ])
}

/// Buckets for audit commits, in seconds: 0.1 ms to 5 s (`STORE_DEADLINE` is 10 s).
fn commit_buckets() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0,
    ])
}

/// The gateway's metrics. One per process, shared (`Arc`) by the router, the audit log and
/// the listener; cheap to bump from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<AreaLabels, Histogram, fn() -> Histogram>,
    events: Family<EventLabels, Counter>,
    event_series: AtomicUsize,
    audit_written: Counter,
    audit_commit_seconds: Histogram,
    audit_commit_failures: Counter,
    anchor_rounds: Family<ResultLabels, Counter>,
    anchor_last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
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
        let metrics = Metrics {
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(request_buckets),
            events: Family::default(),
            event_series: AtomicUsize::new(0),
            audit_written: Counter::default(),
            audit_commit_seconds: commit_buckets(),
            audit_commit_failures: Counter::default(),
            anchor_rounds: Family::default(),
            anchor_last_success: Gauge::default(),
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
        registry.register(
            "rack_gateway_http_requests",
            "Requests answered on the gateway's port, by area and HTTP status (a WebSocket \
             session counts once, as its 101)",
            metrics.http_requests.clone(),
        );
        registry.register(
            "rack_gateway_http_request_duration_seconds",
            "Time from a request's arrival to its response's head (a streamed body goes on \
             after), by area",
            metrics.http_seconds.clone(),
        );
        registry.register(
            "rack_gateway_audit_events",
            "Audit events produced (each proxied request's, its outcome's, every gateway \
             action's), by kind, action (permission), RBAC decision and status class",
            metrics.events.clone(),
        );
        registry.register(
            "rack_gateway_audit_events_written",
            "Audit events committed to the database",
            metrics.audit_written.clone(),
        );
        registry.register(
            "rack_gateway_audit_commit_duration_seconds",
            "Time each audit commit took (every request in a batch waits for it)",
            metrics.audit_commit_seconds.clone(),
        );
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
        self.http_requests
            .get_or_create(&HttpLabels {
                area,
                code: status.as_u16(),
            })
            .inc();
        self.http_seconds
            .get_or_create(&AreaLabels { area })
            .observe(took.as_secs_f64());
    }

    /// Counts an audit event as it is handed to the audit log.
    pub fn observe_event(&self, event: &AuditEvent) {
        let status = match event.status {
            None => "none",
            Some(100..=199) => "1xx",
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(_) => "5xx",
        };
        let mut labels = EventLabels {
            kind: kind_label(event.kind),
            action: event.action.clone(),
            decision: decision_label(event.rbac_decision),
            status,
        };
        if let Some(counter) = self.events.get(&labels) {
            counter.inc();
            return;
        }
        // A new series; past the cap, counted with the others.
        if self.event_series.fetch_add(1, Ordering::Relaxed) >= MAX_EVENT_SERIES {
            labels.action = OTHER_ACTION.to_string();
        }
        self.events.get_or_create(&labels).inc();
    }

    /// Notes an audit commit of `count` events that took `took`: `written` of them committed,
    /// or the commit failed.
    pub fn observe_commit(&self, written: Option<usize>, count: usize, took: Duration) {
        if count == 0 {
            return;
        }
        self.audit_commit_seconds.observe(took.as_secs_f64());
        match written {
            Some(n) => {
                self.audit_written.inc_by(n as u64);
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

/// Middleware: counts every request on the gateway's port by area and status, and times it
/// to its response's head.
pub async fn measure(
    axum::extract::State(metrics): axum::extract::State<std::sync::Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let area = Area::of(request.uri().path());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    metrics.observe_http(area, response.status(), started.elapsed());
    response
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

fn kind_label(kind: EventKind) -> &'static str {
    kind.as_str()
}

fn decision_label(decision: Decision) -> &'static str {
    decision.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for i in 0..MAX_EVENT_SERIES + 50 {
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
        assert_eq!(series, MAX_EVENT_SERIES + 1);
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
