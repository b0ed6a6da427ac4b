//! The gateway's own JSON endpoints: health, readiness, and who the caller is.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::app::AppState;
use crate::error::ApiError;
use crate::identity::{AuthError, authenticate, extract_token};

/// `GET /api/v1/health`: liveness. 200 whenever the process can serve.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// `GET /api/v1/health/ready`: readiness. 200 when the database and the rack both answer,
/// 503 otherwise, with each component's state.
pub async fn ready(State(state): State<AppState>) -> Response {
    let timeout = std::time::Duration::from_secs(3);
    let db = match tokio::time::timeout(timeout, state.store.ping()).await {
        Ok(Ok(())) => json!({ "ok": true }),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database check failed");
            json!({ "ok": false, "error": "database unavailable" })
        }
        Err(_) => json!({ "ok": false, "error": "database timed out" }),
    };
    let rack = rack_check(&state, timeout).await;
    let ok = db["ok"] == true && rack["ok"] == true;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body =
        json!({ "status": if ok { "ready" } else { "not_ready" }, "database": db, "rack": rack });
    (status, Json(body)).into_response()
}

async fn rack_check(state: &AppState, timeout: std::time::Duration) -> serde_json::Value {
    let url = state.upstream.url("/system", None);
    let request = state
        .upstream
        .http
        .get(url)
        .header(http::header::AUTHORIZATION, state.upstream.authorization())
        .timeout(timeout)
        .send();
    match request.await {
        Ok(resp) if resp.status().is_success() => json!({ "ok": true }),
        Ok(resp) => {
            json!({ "ok": false, "error": format!("rack answered {}", resp.status().as_u16()) })
        }
        Err(e) if e.is_timeout() => json!({ "ok": false, "error": "rack timed out" }),
        Err(_) => json!({ "ok": false, "error": "rack unreachable" }),
    }
}

/// `GET /api/v1/info`: the caller, its role and permissions.
pub async fn info(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = extract_token(&headers)
        .map_err(|e| ApiError::Unauthenticated(AuthError::Malformed(e)))?
        .ok_or(ApiError::Unauthenticated(AuthError::Missing))?;
    let principal = authenticate(&state.store, &token)
        .await
        .map_err(ApiError::Unauthenticated)?;
    Ok(Json(json!({
        "type": "api_token",
        "token_name": principal.token_name(),
        "email": principal.email(),
        "role": principal.role_name(),
        "permissions": principal.permissions.patterns(),
    }))
    .into_response())
}

/// Anything else: 404 JSON.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
