//! `GET /metrics` on the metrics listener (`METRICS_LISTEN_ADDR`): the scrape. A port of its
//! own, so that the load balancer in front of the gateway never exposes it; nothing else is
//! served there.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::ScrapedState;
use crate::app::AppState;

/// The parts readiness reports on, as `rack_gateway_dependency_up` names them.
const DEPENDENCIES: [&str; 3] = ["database", "audit", "rack"];

/// The metrics listener's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(not_here)
        .with_state(state)
}

/// Reads the gateway's state (readiness, reused for 2 s as the health endpoint reuses it;
/// open sessions) into the gauges, then renders every metric. OpenMetrics when the scraper
/// asks for it, Prometheus' text format otherwise.
async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (ready, body) = state.readiness.current(&state).await;
    state.metrics.set_state(&ScrapedState {
        websocket_sessions: state.sessions.open(),
        ready,
        dependencies: DEPENDENCIES
            .iter()
            .map(|&name| (name, body[name]["ok"] == true))
            .collect(),
    });
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        state.metrics.render(openmetrics),
    )
        .into_response()
}

async fn not_here() -> Response {
    (StatusCode::NOT_FOUND, "only /metrics is served here\n").into_response()
}
