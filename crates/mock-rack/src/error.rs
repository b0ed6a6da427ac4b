//! Errors and response rendering the way the rack's `stdapi` server does it.
//!
//! The rack answers errors with `text/plain` `"<message>\n"`, or with
//! `application/json` `{"error": "<message>"}` when the request's `Accept`
//! header asks for JSON. Handlers return [`ApiError`]; the
//! [`negotiate_errors`] middleware picks the body format.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered with a status code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// The message (the rack's error text).
    pub message: String,
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409 Conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
}

/// Marker put on error responses so [`negotiate_errors`] can re-render them.
#[derive(Debug, Clone)]
struct ErrorMessage(String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = Response::new(Body::from(format!("{}\n", self.message)));
        *res.status_mut() = self.status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"convox\""),
            );
        }
        res.extensions_mut().insert(ErrorMessage(self.message));
        res
    }
}

/// Middleware: renders error bodies as JSON when `Accept` mentions
/// `application/json`, and adds the rack's fixed security headers.
pub async fn negotiate_errors(req: Request, next: Next) -> Response {
    let wants_json = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("application/json"));
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if wants_json && let Some(ErrorMessage(message)) = res.extensions().get::<ErrorMessage>() {
        let body = serde_json::json!({ "error": message }).to_string();
        let (mut parts, _) = res.into_parts();
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(body));
    }
    res
}

/// Renders a value like the rack's `RenderJSON`: two-space indented JSON and a newline.
pub fn render_json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(mut s) => {
            s.push('\n');
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                s,
            )
                .into_response()
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Renders the rack's `RenderOK`: `ok\n`.
pub fn render_ok() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        "ok\n",
    )
        .into_response()
}

/// Fallback for unknown routes: 404.
pub async fn not_found() -> ApiError {
    ApiError::not_found("not found")
}
