//! The gateway's own JSON endpoints: health, readiness, who the caller is, sign-in flows,
//! sessions, users, roles, tokens, the audit trail and deploy approvals.

pub mod app_rules;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod mfa;
pub mod roles;
pub mod sessions;
pub mod tokens;
pub mod users;

use std::net::IpAddr;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::app::{AppState, Peer};
use crate::audit::{ActorType, AuditEvent, Decision, EventKind, audited_path, audited_user_agent};
use crate::error::ApiError;
use crate::identity::{AuthError, Principal, PrincipalKind, authenticate, extract_token};
use crate::proxy::RackError;
use crate::web::cookies;

/// Most a JSON or form body sent to the gateway itself may hold (its endpoints take a few
/// fields; proxied bodies are streamed and not limited by this).
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON request body whose rejections answer in the gateway's error shape (`{"error",
/// "code"}`) instead of axum's plain text, and never quote the body back. The whole body must
/// arrive within `CLIENT_TIMEOUT_SECS` (else 408): a client that declares a body and then
/// goes quiet would otherwise hold its connection and buffer for ever.
///
/// A handler that checks a permission takes `Result<ApiJson<T>, ApiError>` and looks at it
/// only after the check: a caller without the permission is refused, and audited, whatever
/// the body holds (`api_matrix` sends the denied calls malformed bodies).
pub struct ApiJson<T>(pub T);

impl<T> axum::extract::FromRequest<AppState> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, ApiError> {
        if declares_too_much(&req) {
            return Err(ApiError::InvalidBody {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: "the request body is larger than 64 KiB",
            });
        }
        let within = state.config.client_timeout;
        let read = tokio::time::timeout(within, Json::<T>::from_request(req, state)).await;
        match read {
            Err(_) => Err(ApiError::BodyTimeout(within.as_secs())),
            Ok(Ok(Json(value))) => Ok(ApiJson(value)),
            Ok(Err(rejection)) => {
                let status = rejection.status();
                let message = match status.as_u16() {
                    413 => "the request body is larger than 64 KiB",
                    415 => "send the body as JSON with Content-Type: application/json",
                    422 => "the JSON body does not have the expected fields and types",
                    _ => "the request body is not valid JSON",
                };
                Err(ApiError::InvalidBody { status, message })
            }
        }
    }
}

/// Whether `req` declares a body over [`BODY_LIMIT`]: refused before reading any of it (the
/// limit on reading catches a body that turns out longer, chunked ones included).
pub(crate) fn declares_too_much(req: &axum::extract::Request) -> bool {
    req.headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > BODY_LIMIT as u64)
}

/// A JSON endpoint's path parameters: a value of the wrong type is the gateway's JSON 400
/// (axum's own answer is plain text quoting the input, control characters included).
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|_| ApiError::BadRequest("a value in the URL path is not valid here".into()))
    }
}

/// A JSON endpoint's query parameters, refused the same way as [`ApiPath`].
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|_| {
                ApiError::BadRequest(
                    "the query string is not valid here (a repeated or malformed parameter)".into(),
                )
            })
    }
}

/// Answer for a gateway route asked with a method it does not take: the JSON 405.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The caller of a JSON endpoint: `Authorization` (Basic password or Bearer), or the session
/// cookie — then state-changing methods must carry `X-CSRF-Token`.
async fn caller_for(
    state: &AppState,
    method: &http::Method,
    headers: &HeaderMap,
) -> Result<Principal, Refused> {
    let anonymous = |err| Refused {
        err: ApiError::Unauthenticated(err),
        principal: None,
    };
    let token = extract_token(headers).map_err(|e| anonymous(AuthError::Malformed(e)))?;
    if let Some(token) = token {
        return authenticate(&state.store, &state.config.sessions, &token)
            .await
            .map_err(anonymous);
    }
    let Some(cookie) = cookies::session(state, headers) else {
        return Err(anonymous(AuthError::Missing));
    };
    let principal = authenticate(&state.store, &state.config.sessions, &cookie)
        .await
        .map_err(anonymous)?;
    if !matches!(*method, http::Method::GET | http::Method::HEAD) {
        let submitted = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        if !cookies::csrf_ok(&cookie, submitted) {
            // Audited as the session's user: the trail shows whose browser was used.
            return Err(Refused {
                err: ApiError::CsrfRejected,
                principal: Some(principal),
            });
        }
    }
    Ok(principal)
}

/// A refused JSON call, and who made it when the credentials themselves were fine.
struct Refused {
    err: ApiError,
    principal: Option<Principal>,
}

/// The authenticated caller of a JSON endpoint ([`caller_for`]), with what its refusals are
/// audited with. A refusal for the credentials is audited before it is answered: such
/// refusals are cheap to cause, so they count against the caller's address budget like the
/// proxy's (see `AppState::refusals`). A permission refusal ([`Caller::require`]) is audited
/// with the caller's identity.
pub struct Caller {
    /// Who is calling.
    pub principal: Principal,
    call: CallFacts,
}

/// The call, as its audit events describe it.
struct CallFacts {
    peer: IpAddr,
    method: String,
    path: String,
    user_agent: Option<String>,
}

impl CallFacts {
    fn of(parts: &http::request::Parts, peer: &Peer) -> CallFacts {
        CallFacts {
            peer: peer.ip,
            method: parts
                .method
                .as_str()
                .chars()
                .take(crate::audit::MAX_AUDITED_METHOD)
                .collect(),
            path: audited_path(parts.uri.path().to_string()),
            user_agent: audited_user_agent(&parts.headers),
        }
    }

    fn event(&self, action: &str, err: &ApiError) -> AuditEvent {
        let mut e = AuditEvent::new(EventKind::Gateway, crate::request_id::current(), action);
        e.rbac_decision = Decision::Deny;
        e.method = Some(self.method.clone());
        e.path = Some(self.path.clone());
        e.status = Some(i64::from(err.status().as_u16()));
        e.client_ip = Some(self.peer.to_string());
        e.user_agent = self.user_agent.clone();
        e
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &AppState,
    ) -> Result<Caller, ApiError> {
        let peer = Peer::from_request_parts(parts, state).await?;
        let call = CallFacts::of(parts, &peer);
        match caller_for(state, &parts.method, &parts.headers).await {
            Ok(principal) => Ok(Caller { principal, call }),
            Err(Refused {
                err,
                principal: Some(principal),
            }) => {
                audit_identified_refusal(state, &call, &principal, REFUSED_ACTION, &err, None)
                    .await;
                Err(err)
            }
            Err(Refused {
                err,
                principal: None,
            }) => {
                audit_refusal(state, &call, &err).await;
                Err(err)
            }
        }
    }
}

impl Caller {
    /// The caller's user agent, as audited.
    pub fn user_agent(&self) -> Option<&str> {
        self.call.user_agent.as_deref()
    }

    /// The caller as the author of a change `manage` makes (allowed: made after
    /// [`Caller::require`]), from `peer`.
    pub fn actor(&self, peer: Peer) -> crate::identity::manage::Actor {
        let principal = &self.principal;
        crate::identity::manage::Actor {
            actor_type: principal.actor_type(),
            email: principal.email().map(str::to_string),
            token_name: principal.token_name().map(str::to_string),
            label: principal
                .email()
                .map(str::to_string)
                .or_else(|| principal.token_name().map(|t| format!("token:{t}")))
                .unwrap_or_else(|| "unknown".into()),
            client_ip: Some(peer.ip.to_string()),
            user_agent: self.user_agent().map(str::to_string),
            decision: Decision::Allow,
            holds: Some(principal.permissions.clone()),
        }
    }

    /// An event of `action` allowed to the caller, for the handler to complete and record.
    pub fn event(&self, action: &str) -> AuditEvent {
        let call = &self.call;
        let mut e = AuditEvent::new(EventKind::Gateway, crate::request_id::current(), action);
        e.rbac_decision = Decision::Allow;
        e.method = Some(call.method.clone());
        e.path = Some(call.path.clone());
        e.client_ip = Some(call.peer.to_string());
        e.user_agent = call.user_agent.clone();
        e.actor_type = self.principal.actor_type();
        e.user_email = self.principal.email().map(str::to_string);
        e.token_name = self.principal.token_name().map(str::to_string);
        e
    }

    /// Requires `permission`; a refusal is audited (action: the permission).
    pub async fn require(&self, state: &AppState, permission: &str) -> Result<(), ApiError> {
        let Err(err) = require(&self.principal, permission) else {
            return Ok(());
        };
        audit_identified_refusal(state, &self.call, &self.principal, permission, &err, None).await;
        Err(err)
    }

    /// [`Caller::require`] for a privileged change: also, for a session whose person has an
    /// authenticator app, a code from the last `MFA_STEP_UP_SECS` (see `mfa::step_up`); its
    /// absence is audited as a refusal of `permission` with `reason: mfa_required`.
    pub async fn require_privileged(
        &self,
        state: &AppState,
        permission: &str,
    ) -> Result<(), ApiError> {
        self.require(state, permission).await?;
        self.stepped_up(state, permission).await
    }

    /// The step-up half of [`Caller::require_privileged`], for a caller whose permission was
    /// checked already; a refusal is audited as one of `action`.
    async fn stepped_up(&self, state: &AppState, action: &str) -> Result<(), ApiError> {
        match crate::mfa::step_up::check(state, &self.principal).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(needed)) => {
                let err = ApiError::MfaRequired {
                    window_secs: needed.window_secs,
                };
                let details = serde_json::json!({ "reason": "mfa_required" });
                Err(self.refuse(state, action, err, details).await)
            }
            Err(crate::mfa::MfaError::Store(e)) => Err(ApiError::store(e)),
            Err(e) => {
                tracing::error!(error = %e, "a step-up check failed");
                Err(ApiError::StoreUnavailable)
            }
        }
    }

    /// The "right now" tier of step-up, for the changes that must not ride on a code given
    /// earlier (minting a token, approving a deploy): a person with an authenticator app gives
    /// a code with the request itself, checked and counted towards the lockout like any
    /// other. Without one: `403 mfa_code_required` (saying `what` needs it), audited as a
    /// refusal of `action` with `asked` and `reason: mfa_code_required`. A person without an
    /// app passes the step-up rule instead (so `MFA_REQUIRED` refuses them). An API token
    /// gives none (a robot has no second factor): one sent anyway is refused as a mistake.
    pub async fn require_code_now(
        &self,
        state: &AppState,
        action: &str,
        code: Option<&str>,
        what: &'static str,
        asked: &serde_json::Value,
    ) -> Result<(), ApiError> {
        let refuse = |err: ApiError, reason: &str| {
            let mut details = asked.clone();
            if let Some(map) = details.as_object_mut() {
                map.insert("reason".into(), reason.into());
            }
            self.refuse(state, action, err, details)
        };
        let Some(user_id) = self.principal.user_id() else {
            if code.is_some() {
                let err = ApiError::BadRequest(
                    "an API token gives no authenticator code: leave out \"code\"".into(),
                );
                return Err(refuse(err, "code_from_a_token").await);
            }
            return Ok(());
        };
        if !has_app(state, user_id).await? {
            // As for any privileged change: `MFA_REQUIRED` still stops a session without one.
            return self.stepped_up(state, action).await;
        }
        let code = code.unwrap_or("");
        if code.trim().is_empty() {
            return Err(refuse(ApiError::MfaCodeNeeded(what), "mfa_code_required").await);
        }
        mfa::code_given(state, self, code, action, "right_now").await?;
        Ok(())
    }

    /// The "right now" tier for a change of people (`permission`): with a session whose person
    /// has an authenticator app, a code given with the request itself ([`Caller::require_code_now`];
    /// `code`: the body's `"code"` or the `X-MFA-Code` header, see [`code_header`]); for
    /// everyone else, [`Caller::require_privileged`] (API tokens pass; `MFA_REQUIRED` still
    /// stops a session without an app).
    pub async fn require_now(
        &self,
        state: &AppState,
        permission: &str,
        code: Option<&str>,
        what: &'static str,
        asked: &serde_json::Value,
    ) -> Result<(), ApiError> {
        self.require(state, permission).await?;
        let has_app = match self.principal.user_id() {
            Some(id) => has_app(state, id).await?,
            None => false,
        };
        if has_app && self.principal.session_id().is_some() {
            self.require_code_now(state, permission, code, what, asked)
                .await
        } else {
            self.require_privileged(state, permission).await
        }
    }

    /// Whether the caller holds `permission` (nothing is audited: the caller decides what to
    /// answer, and records it with [`Caller::refuse`]).
    pub fn holds(&self, permission: &str) -> bool {
        require(&self.principal, permission).is_ok()
    }

    /// Audits `err` as the refusal of `action` (with `details` added: what was asked, why)
    /// and returns it, for refusals decided after the permission check — refused input, a
    /// change the caller may not make on themselves, a target that is not theirs.
    pub async fn refuse(
        &self,
        state: &AppState,
        action: &str,
        err: ApiError,
        details: serde_json::Value,
    ) -> ApiError {
        audit_identified_refusal(
            state,
            &self.call,
            &self.principal,
            action,
            &err,
            Some(details),
        )
        .await;
        err
    }
}

/// Audits a refusal of a caller whose credentials were good (action: what was refused).
async fn audit_identified_refusal(
    state: &AppState,
    call: &CallFacts,
    principal: &Principal,
    action: &str,
    err: &ApiError,
    extra: Option<serde_json::Value>,
) {
    let mut e = call.event(action, err);
    e.actor_type = principal.actor_type();
    e.user_email = principal.email().map(str::to_string);
    e.token_name = principal.token_name().map(str::to_string);
    let mut details = json!({
        "reason": err.code(),
        "role": principal.role_name(),
    });
    if let (Some(serde_json::Value::Object(extra)), Some(map)) = (extra, details.as_object_mut()) {
        map.extend(extra);
    }
    let e = e.with_details(details);
    if let Err(error) = state.audit.record(e).await {
        tracing::error!(%error, "could not audit a refused gateway API call");
    }
}

/// Action of the audit event for a refused gateway API call.
pub const REFUSED_ACTION: &str = "gateway:api:authenticate";

async fn audit_refusal(state: &AppState, call: &CallFacts, err: &ApiError) {
    if matches!(err, ApiError::Unauthenticated(AuthError::Store(_)))
        || !state.refusals.admit(call.peer, std::time::Instant::now())
    {
        // The store is down (an audit write would fail too), or this address is over its
        // budget and the refusal goes into the next summary.
        return;
    }
    let mut e = call.event(REFUSED_ACTION, err);
    e.actor_type = ActorType::Anonymous;
    let e = e.with_details(json!({ "reason": err.code(), "message": err.message() }));
    if let Err(error) = state.audit.record(e).await {
        tracing::error!(%error, "could not audit a refused gateway API call");
    }
}

/// Requires `permission` of `principal`.
pub fn require(principal: &Principal, permission: &str) -> Result<(), ApiError> {
    if principal.permissions.allows(permission) {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            permission: permission.to_string(),
            role: principal.role_name().to_string(),
        })
    }
}

/// `GET /api/v1/health`: liveness. 200 whenever the process can serve.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// `GET /api/v1/health/ready`: readiness. 200 when the database and the rack both answer,
/// 503 otherwise, with each component's state.
pub async fn ready(State(state): State<AppState>) -> Response {
    let (ok, body) = state.readiness.current(&state).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// How long a readiness result is reused.
const READINESS_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// The last readiness check. Anyone may ask for readiness, and each check calls the rack's
/// `GET /system` with the rack's token (on a real rack, cloud API calls), so checks are
/// shared: at most one every two seconds, with concurrent callers waiting for the same one.
#[derive(Debug, Default)]
pub struct Readiness {
    last: tokio::sync::Mutex<Option<(std::time::Instant, bool, serde_json::Value)>>,
}

impl Readiness {
    /// The current readiness and its JSON body.
    pub async fn current(&self, state: &AppState) -> (bool, serde_json::Value) {
        let mut last = self.last.lock().await;
        if let Some((at, ok, body)) = last.as_ref()
            && at.elapsed() < READINESS_TTL
        {
            return (*ok, body.clone());
        }
        let (ok, body) = check_readiness(state).await;
        *last = Some((std::time::Instant::now(), ok, body.clone()));
        (ok, body)
    }
}

async fn check_readiness(state: &AppState) -> (bool, serde_json::Value) {
    let timeout = std::time::Duration::from_secs(3);
    let db = match tokio::time::timeout(timeout, state.store.ping()).await {
        Ok(Ok(())) => json!({ "ok": true }),
        Ok(Err(crate::store::StoreError::ReadOnly)) => {
            tracing::warn!("readiness: the database takes no writes");
            json!({ "ok": false, "error": "database read-only" })
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database check failed");
            json!({ "ok": false, "error": "database unavailable" })
        }
        Err(_) => json!({ "ok": false, "error": "database timed out" }),
    };
    let audit = audit_check(state, timeout).await;
    let rack = rack_check(state, timeout).await;
    let ok = db["ok"] == true && audit["ok"] == true && rack["ok"] == true;
    let body = json!({
        "status": if ok { "ready" } else { "not_ready" },
        "database": db,
        "audit": audit,
        "rack": rack,
    });
    (ok, body)
}

/// Whether the audit trail takes events. A database that answers reads can still refuse
/// every audit write (a full disk, a trigger, a chain changed under the gateway), and then
/// every proxied request is refused: not ready. While writes fail, each check tries the trail
/// once more (see [`crate::audit::AuditLog::try_recovery`]), so recovery shows without
/// traffic. The answer is public, so the reason stays in the log.
async fn audit_check(state: &AppState, timeout: std::time::Duration) -> serde_json::Value {
    // Refused from then on by the store itself, whatever a write attempt would say.
    if state.store.audit_refused_link().is_some() {
        return json!({
            "ok": false,
            "error": "audit chain changed under the gateway: restart it (see its log)",
        });
    }
    if state.audit.has_stopped() {
        return json!({ "ok": false, "error": "audit writer stopped: restart the gateway" });
    }
    // Seen before any request fails: a load balancer takes the instance out at once. A read
    // that fails is left to the database check.
    if let Ok(Ok(true)) = tokio::time::timeout(timeout, state.store.chain_key_retired()).await {
        return json!({
            "ok": false,
            "error": "audit key rotated since the gateway started: restart it with the new \
                      AUDIT_HMAC_KEY",
        });
    }
    if state.audit.write_failure().is_none() {
        return json!({ "ok": true });
    }
    match tokio::time::timeout(timeout, state.audit.try_recovery("readiness")).await {
        Ok(Ok(())) => {
            tracing::info!("readiness: audit writes work again");
            json!({ "ok": true })
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: audit writes are failing");
            json!({ "ok": false, "error": "audit writes failing" })
        }
        Err(_) => json!({ "ok": false, "error": "audit writes timed out" }),
    }
}

async fn rack_check(state: &AppState, timeout: std::time::Duration) -> serde_json::Value {
    use crate::proxy::TokenCheck;
    match state.upstream.check_token(timeout).await {
        TokenCheck::Accepted => json!({ "ok": true }),
        TokenCheck::Refused => {
            // Logged as the proxy logs it: the operator's problem, not a caller's.
            state.upstream.note_token_refused("401");
            json!({ "ok": false, "error": "rack refused RACK_TOKEN (401)" })
        }
        TokenCheck::Answered(status) => {
            json!({ "ok": false, "error": format!("rack answered {status}") })
        }
        TokenCheck::Failed(RackError::Timeout) => {
            json!({ "ok": false, "error": "rack timed out" })
        }
        TokenCheck::Failed(_) => json!({ "ok": false, "error": "rack unreachable" }),
    }
}

/// `GET /api/v1/info`: the caller, its role and permissions.
pub async fn info(caller: Caller) -> Result<Response, ApiError> {
    let principal = caller.principal;
    let (kind, expires_at, token_expires_at, channel) = match &principal.kind {
        PrincipalKind::ApiToken { expires_at, .. } => ("api_token", None, *expires_at, None),
        PrincipalKind::Session {
            expires_at,
            channel,
            ..
        } => ("session", Some(*expires_at), None, Some(channel.clone())),
    };
    Ok(Json(json!({
        "type": kind,
        "token_name": principal.token_name(),
        "email": principal.email(),
        "role": principal.role_name(),
        "permissions": principal.permissions.patterns(),
        "session_expires_at": expires_at,
        "token_expires_at": token_expires_at,
        "channel": channel,
    }))
    .into_response())
}

/// `GET /api/v1/settings`: the gateway's effective settings, secrets shown only as set or not
/// (`gateway:settings:read`; see [`crate::settings`]).
pub async fn settings(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&state, crate::settings::READ).await?;
    Ok(Json(crate::settings::effective(&state)).into_response())
}

/// Anything else: 404 JSON.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// The header a call without a body (a lock, a reset) gives its authenticator code in, for the
/// "right now" tier.
pub const MFA_CODE_HEADER: &str = "x-mfa-code";

/// The code given with a call: `body`'s, else the [`MFA_CODE_HEADER`] header's (when it is
/// text).
pub fn code_header<'a>(headers: &'a http::HeaderMap, body: Option<&'a str>) -> Option<&'a str> {
    body.or_else(|| headers.get(MFA_CODE_HEADER)?.to_str().ok())
}

/// Whether user `user_id` has a confirmed authenticator app (whose codes the changes of the
/// step-up and "right now" tiers ask for).
pub(crate) async fn has_app(state: &AppState, user_id: i64) -> Result<bool, ApiError> {
    crate::mfa::required(&state.store, user_id)
        .await
        .map(|app| app.is_some())
        .map_err(|e| match e {
            crate::mfa::MfaError::Store(e) => ApiError::store(e),
            _ => ApiError::StoreUnavailable,
        })
}
