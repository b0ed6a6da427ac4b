//! The gateway's HTTP-facing error: one enum, stable codes, turned into responses in one place.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::identity::AuthError;

/// An error answered to a client. The message is safe to show: it never contains secrets.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or bad credentials.
    #[error("{0}")]
    Unauthenticated(AuthError),
    /// Authenticated, but the role lacks the permission.
    #[error("permission denied: {permission} is required (your role: {role})")]
    Forbidden {
        /// The missing permission.
        permission: String,
        /// The caller's role name.
        role: String,
    },
    /// A state-changing call authenticated by the session cookie without the session's CSRF
    /// token (`X-CSRF-Token`): possibly another site's page acting through the browser.
    #[error("this call needs the session's CSRF token in X-CSRF-Token (it is on every page)")]
    CsrfRejected,
    /// A rack-proxy request made by a web page other than the gateway's own (its `Origin` or
    /// `Sec-Fetch-Site` says so): a browser holding a caller's Basic credentials, used by
    /// another site.
    #[error(
        "the rack proxy takes no requests made by other sites' web pages ({0}); use the convox \
         or rack-gateway CLI"
    )]
    CrossOrigin(&'static str),
    /// The request is malformed or ambiguous.
    #[error("{0}")]
    BadRequest(String),
    /// A JSON endpoint's body could not be read: too large, not JSON, or the wrong shape.
    #[error("{message}")]
    InvalidBody {
        /// 400, 413, 415 or 422.
        status: StatusCode,
        /// What to fix; never echoes the body.
        message: &'static str,
    },
    /// The change conflicts with the gateway's state (the message says how).
    #[error("{0}")]
    Conflict(String),
    /// The method is not one the gateway proxies.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A rack path asked for with a method the rack API does not use on it.
    #[error("{method} is not a method of {path} in the rack API (it takes {})", .allowed.join(", "))]
    WrongMethod {
        /// The method asked for.
        method: String,
        /// The path.
        path: String,
        /// The methods the catalogue knows for it.
        allowed: Vec<&'static str>,
    },
    /// No such gateway endpoint.
    #[error("not found")]
    NotFound,
    /// What an allowed caller named does not exist (`user ann@example.com`); said only where
    /// the caller may know whether it does.
    #[error("{0} not found")]
    NoSuch(String),
    /// A deploy step (upload, build, promote) the caller may take only with an approved deploy
    /// request, without one that lets it through (the message says what is missing).
    #[error("{0}")]
    NotApproved(String),
    /// A release that would set, change or unset an env var the app's rules protect, by a
    /// caller who may not (the message names them).
    #[error("{0}")]
    EnvProtected(String),
    /// A change the caller's permissions allow, refused for who the caller is (the message
    /// says why): a deploy decided by an API token, or by the person who asked for it.
    #[error("{0}")]
    NotYours(String),
    /// A credential asked for that would hold more than its creator does (permissions, a
    /// longer life, another owner); the message says what.
    #[error("{0}")]
    Escalation(String),
    /// The audit store cannot take the event, so nothing is forwarded.
    #[error("audit log unavailable: nothing was forwarded or changed")]
    AuditUnavailable,
    /// A privileged change by a session whose person has an authenticator app, without a code
    /// from the last `window_secs` (`MFA_STEP_UP_SECS`).
    #[error(
        "this change needs a code from your authenticator app from the last {window_secs} s: \
         give one (POST /api/v1/auth/mfa/verify, or the page this came from), or sign in again, \
         then repeat it (with MFA_REQUIRED and no app yet, set one up on /account/mfa \
         first)"
    )]
    MfaRequired {
        /// `MFA_STEP_UP_SECS`.
        window_secs: u64,
    },
    /// A change that needs a code given with it, right then (minting an API token, approving
    /// a deploy, changing people), by a person with an authenticator app who gave none.
    #[error(
        "{0} needs a code from your authenticator app given with it, right now (a recent \
         step-up is not enough): send it as \"code\" (or in the X-MFA-Code header)"
    )]
    MfaCodeNeeded(&'static str),
    /// An authenticator code was refused (wrong, used already, or codes are locked out).
    #[error("{message}")]
    MfaCodeRefused {
        /// Codes are locked out for a while (429), or just this one was wrong (403).
        locked: bool,
        /// What to do.
        message: String,
    },
    /// The rack could not be reached.
    #[error("rack unreachable: {0}")]
    RackUnreachable(String),
    /// The rack did not answer in time.
    #[error("rack did not respond in time")]
    RackTimeout,
    /// The rack refused the gateway's own credentials (`RACK_TOKEN`).
    #[error(
        "the rack refused the gateway's own credentials (its RACK_TOKEN is wrong or was \
         rotated): your credentials are fine; tell the gateway's operator"
    )]
    RackRefusedGateway,
    /// Too many sign-ins are in progress (from the caller's address, or in total).
    #[error("too many sign-ins in progress: finish one, or try again in a few minutes")]
    TooManySignIns,
    /// A WebSocket session limit is reached (the message says which).
    #[error("{0}")]
    TooManyWebSockets(crate::proxy::Full),
    /// The client went silent in the middle of its request body.
    #[error("request body stalled: nothing received for {0} s")]
    ClientTimeout(u64),
    /// A body the gateway reads itself (JSON, a form) did not arrive in full in time.
    #[error("request body not received within {0} s")]
    BodyTimeout(u64),
    /// The gateway holds as much as it may of bodies it reads whole (`proxy::held`).
    #[error("{0}")]
    Busy(crate::proxy::Busy),
    /// The gateway's own store failed (details are logged, not returned); nothing was changed
    /// that the answer does not say.
    #[error("gateway store unavailable, try again")]
    StoreUnavailable,
    /// The YubiKey validation service could not say whether an OTP is good (unreachable, or
    /// an answer that does not check out): nothing was let through, nor counted.
    #[error(
        "the YubiKey validation service cannot be reached: try again, or use a code from your authenticator app"
    )]
    YubicoUnavailable,
    /// Something failed inside the gateway; details are logged, not returned.
    #[error("internal error (request id in X-Request-Id)")]
    Internal,
}

impl ApiError {
    /// [`ApiError::NoSuch`] for `what` (`user ann@example.com`), which may hold what the caller
    /// sent: shown with hidden characters made visible, and cut at 300 characters.
    pub fn no_such(what: &str) -> ApiError {
        ApiError::NoSuch(
            what.chars()
                .map(gateway_core::text::shown)
                .take(300)
                .collect(),
        )
    }

    /// A store failure while serving a request: logged here (the client is told only that the
    /// store is unavailable).
    pub fn store(err: crate::store::StoreError) -> ApiError {
        tracing::error!(error = %err, "store call failed");
        ApiError::StoreUnavailable
    }

    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated(AuthError::Store(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. }
            | ApiError::CsrfRejected
            | ApiError::CrossOrigin(_)
            | ApiError::MfaRequired { .. }
            | ApiError::NotApproved(_)
            | ApiError::NotYours(_)
            | ApiError::EnvProtected(_)
            | ApiError::MfaCodeNeeded(_)
            | ApiError::Escalation(_)
            | ApiError::MfaCodeRefused { locked: false, .. } => StatusCode::FORBIDDEN,
            ApiError::MfaCodeRefused { locked: true, .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::InvalidBody { status, .. } => *status,
            ApiError::MethodNotAllowed | ApiError::WrongMethod { .. } => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            ApiError::NotFound | ApiError::NoSuch(_) => StatusCode::NOT_FOUND,
            ApiError::AuditUnavailable
            | ApiError::StoreUnavailable
            | ApiError::YubicoUnavailable
            | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RackUnreachable(_) | ApiError::RackRefusedGateway => StatusCode::BAD_GATEWAY,
            ApiError::RackTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::ClientTimeout(_) | ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManySignIns | ApiError::TooManyWebSockets(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(e) => match e {
                AuthError::Missing => "auth_required",
                AuthError::Malformed(_) => "auth_malformed",
                AuthError::Unknown => "token_unknown",
                AuthError::Revoked => "token_revoked",
                AuthError::Expired => "token_expired",
                AuthError::OwnerLocked | AuthError::UserLocked => "user_locked",
                AuthError::SessionRevoked => "session_revoked",
                AuthError::SessionExpired => "session_expired",
                AuthError::Store(_) => "store_unavailable",
            },
            ApiError::Forbidden { .. } => "permission_denied",
            ApiError::CsrfRejected => "csrf_rejected",
            ApiError::CrossOrigin(_) => "cross_origin",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Conflict(_) => "conflict",
            ApiError::InvalidBody { status, .. } => match status.as_u16() {
                413 => "body_too_large",
                415 => "unsupported_media_type",
                _ => "invalid_body",
            },
            ApiError::MethodNotAllowed | ApiError::WrongMethod { .. } => "method_not_allowed",
            ApiError::NotFound | ApiError::NoSuch(_) => "not_found",
            ApiError::AuditUnavailable => "audit_unavailable",
            ApiError::NotApproved(_) => "deploy_not_approved",
            ApiError::NotYours(_) => "not_yours",
            ApiError::EnvProtected(_) => "env_protected",
            ApiError::MfaCodeNeeded(_) => "mfa_code_required",
            ApiError::Escalation(_) => "more_than_you_hold",
            ApiError::MfaRequired { .. } => "mfa_required",
            ApiError::MfaCodeRefused { locked: false, .. } => "mfa_code_refused",
            ApiError::MfaCodeRefused { locked: true, .. } => "mfa_locked_out",
            ApiError::StoreUnavailable => "store_unavailable",
            ApiError::YubicoUnavailable => "yubico_unavailable",
            ApiError::Busy(_) => "gateway_busy",
            ApiError::RackUnreachable(_) => "rack_unreachable",
            ApiError::RackTimeout => "rack_timeout",
            ApiError::RackRefusedGateway => "rack_refused_gateway",
            ApiError::ClientTimeout(_) | ApiError::BodyTimeout(_) => "client_timeout",
            ApiError::TooManySignIns => "too_many_sign_ins",
            ApiError::TooManyWebSockets(_) => "too_many_websockets",
            ApiError::Internal => "internal",
        }
    }

    /// The client-facing message (store errors are not spelled out).
    pub fn message(&self) -> String {
        match self {
            ApiError::Unauthenticated(AuthError::Store(_)) => {
                "gateway store unavailable, try again".to_string()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.message(), "code": self.code() });
        let mut response = (status, Json(body)).into_response();
        // The gateway's own answer, never to be cached (a rack's answers keep their headers),
        // and never read as anything but JSON (it may quote the caller's input).
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if let ApiError::WrongMethod { allowed, .. } = &self
            && let Ok(value) = HeaderValue::from_str(&allowed.join(", "))
        {
            response.headers_mut().insert(header::ALLOW, value);
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"rack-gateway\""),
            );
        }
        response
    }
}

/// `err` and its causes, joined with `: ` (many errors name only the step that failed, and
/// leave why to their source: hyper's "error reading a body from connection").
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors print their source in their own message as well.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::with_causes;

    #[test]
    fn causes_are_joined_once_each() {
        let inner = std::io::Error::other("Invalid chunk size line");
        let outer = std::io::Error::new(std::io::ErrorKind::InvalidData, Wrapper(inner));
        assert_eq!(
            with_causes(&outer),
            "error reading a body: Invalid chunk size line"
        );
        let plain = std::io::Error::other("alone");
        assert_eq!(with_causes(&plain), "alone");
    }

    /// An error that names its step and leaves why to its source, as hyper's do.
    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error reading a body")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
