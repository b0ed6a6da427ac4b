//! The rack proxy at `/api/v1/rack-proxy/*`.
//!
//! A request's path: request id → authenticate → normalise the path → classify (route →
//! permission) → RBAC → audit event durably written → forward (HTTP or WebSocket, streamed)
//! → outcome recorded. Each step is a function below; [`handle`] strings them together.

mod body;
pub mod env_mask;
mod env_rules;
mod flush_first;
mod headers;
pub mod held;
mod privileged;
mod sessions;
mod upstream;
mod write_bound;
mod ws;

use std::time::Instant;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::json;

pub use gateway_core::classify::Classified;
pub use gateway_core::path::{NormalisedPath, PathError, normalise};
pub use held::Busy;
pub use sessions::{Full, Sessions, Slot};
pub use upstream::{RackError, RackLookup, TokenCheck, Upstream, UpstreamError, audit_scrubber};

use crate::app::{AppState, Peer};
use crate::approvals;
use crate::audit::{
    AuditError, AuditEvent, Decision, EventKind, Pending, audited_path, audited_user_agent, redact,
};
use crate::error::ApiError;
use crate::identity::{
    AuthError, Authenticated, Principal, Reads, authenticate_with, extract_token,
};
use crate::rbac;
use body::OutcomeGuard;
pub(crate) use body::{Counted, Overrule, read_whole};

/// Refusals for a failed audit write, logged at most once a second (see
/// [`crate::log_throttle`]).
static AUDIT_REFUSALS: crate::log_throttle::Throttle = crate::log_throttle::Throttle::new(1000);

/// Where the rack API is mounted on the gateway.
pub const PROXY_PREFIX: &str = "/api/v1/rack-proxy";

/// Maps a method and normalised path to its permission ([`gateway_core::classify`]). Methods
/// outside the rack API's set are refused outright.
pub fn classify(method: &http::Method, decoded_path: &str) -> Result<Classified, ApiError> {
    gateway_core::classify::classify(method, decoded_path).ok_or(ApiError::MethodNotAllowed)
}

/// [`classify`] for a whole request: one that reaches beyond the app (see [`privileged`])
/// needs [`rbac::PRIVILEGED_RUN`] rather than the route's permission, and says why. `None` for
/// a path that could not be normalised.
fn classify_request(
    parts: &http::request::Parts,
    normalised: &Result<NormalisedPath, PathError>,
) -> (
    Option<Result<Classified, ApiError>>,
    Option<privileged::Reasons>,
) {
    let Ok(path) = normalised else {
        return (None, None);
    };
    let mut classified = classify(&parts.method, &path.decoded);
    let privileged = match &mut classified {
        Ok(c) => privileged::reasons(&c.permission, &path.decoded, &parts.headers),
        Err(_) => None,
    };
    if let (Ok(c), Some(_)) = (&mut classified, &privileged) {
        c.permission = rbac::PRIVILEGED_RUN.to_string();
    }
    (Some(classified), privileged)
}

/// The per-request facts every audit event of this request shares.
#[derive(Debug, Clone)]
struct RequestFacts {
    request_id: String,
    started: Instant,
    method: String,
    path: String,
    client_ip: String,
    /// The client's address, for the refusal budget.
    peer_ip: std::net::IpAddr,
    user_agent: Option<String>,
}

impl RequestFacts {
    fn event(&self, kind: EventKind, action: &str, principal: Option<&Principal>) -> AuditEvent {
        let mut e = AuditEvent::new(kind, self.request_id.clone(), action);
        e.method = Some(self.method.clone());
        e.path = Some(self.path.clone());
        e.client_ip = Some(self.client_ip.clone());
        e.user_agent = self.user_agent.clone();
        if let Some(p) = principal {
            e.actor_type = p.actor_type();
            e.user_email = p.email().map(str::to_string);
            e.token_name = p.token_name().map(str::to_string);
        }
        e
    }
}

/// The proxy handler.
pub async fn handle(State(state): State<AppState>, peer: Peer, request: Request) -> Response {
    match proxy(&state, peer, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn proxy(state: &AppState, peer: Peer, request: Request) -> Result<Response, ApiError> {
    let started = Instant::now();
    // Announced before authentication, so a batch being committed can wait for this event.
    let pending = state.audit.pending();
    let (mut parts, body) = request.into_parts();
    let raw_path = parts
        .uri
        .path()
        .strip_prefix(PROXY_PREFIX)
        .unwrap_or_default()
        .to_string();
    // Copied: `parts` is taken apart for the upgrade, or moved into the forwarding.
    let query = parts.uri.query().map(str::to_string);
    let query = query.as_deref();
    let normalised = gateway_core::classify::normalise_for(&parts.method, &raw_path);
    let facts = request_facts(state, peer, &parts, &raw_path, query, &normalised, started);
    let is_upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));

    let (allowed, mut outcome) =
        authorise(state, &parts, normalised, &facts, pending, is_upgrade).await?;
    let principal = &allowed.principal;
    // What reaches the rack: the client's headers that may cross, the rack's credentials,
    // and the caller as the rack's actor.
    let forwarded = headers::upstream_headers(
        &parts.headers,
        state.upstream.authorization(),
        headers::actor(principal.email(), principal.token_name()),
    );

    if is_upgrade {
        let url = state.upstream.ws_url(&allowed.normalised.forward, query);
        // Boxed: the WebSocket future is several times the size of the rest of this one, and
        // every plain request's future would otherwise carry (and be moved with) that space.
        let lives = (allowed.lives_under.clone(), allowed.ends_at);
        let session = open_session(state, &mut parts, principal, forwarded, url, lives, outcome);
        return Box::pin(session).await;
    }
    let url = state.upstream.url(&allowed.normalised.forward, query);
    // Only release routes carry an environment (or, promoting, put one in effect): every other
    // request goes on untouched, without the (boxed) detour.
    let forwarding = Forwarding {
        body,
        headers: forwarded,
        masking: None,
        kept: Vec::new(),
    };
    let forwarding = if env_rules::applies(&allowed.classified.permission) {
        match Box::pin(app_rules_applied(
            state, &parts, query, &allowed, forwarding,
        ))
        .await
        {
            Ok(applied) => applied,
            Err(err) => return Err(outcome.fails_with(err)),
        }
    } else {
        forwarding
    };
    if !forwarding.kept.is_empty() {
        // Names only: which masked values the release kept rather than set.
        outcome
            .extra
            .insert("env_values_kept".into(), json!(forwarding.kept));
    }
    let (body, headers) = (forwarding.body, forwarding.headers);
    // Most answers stream through; the few the gateway reads whole first can say, on the
    // trail, that the client got something else.
    let reads_answer = forwarding.masking.is_some() || allowed.holder_for.is_some();
    let overrule = reads_answer.then(|| outcome.overrule());
    let counted = if parts.method == http::Method::GET || parts.method == http::Method::HEAD {
        Counted::Read
    } else {
        Counted::Change
    };
    let response = body::forward(state, parts, body, headers, url, outcome).await?;
    let Some(overrule) = overrule else {
        return Ok(response);
    };
    if let (Some(approval_id), Some(app)) = (
        allowed.holder_for,
        env_mask::app_of(&allowed.normalised.decoded),
    ) {
        let remembered =
            approvals::holders::remembered(state, approval_id, app, response, &overrule);
        return Box::pin(remembered).await;
    }
    match forwarding.masking {
        Some(masking) => env_mask::masked(response, &masking, counted, &overrule).await,
        None => Ok(response),
    }
}

/// What goes to the rack for a plain request, and what to do with its answer.
struct Forwarding {
    body: Body,
    headers: http::HeaderMap,
    /// What to mask in the answer.
    masking: Option<env_mask::Masking>,
    /// Env vars whose masked values the release kept (for the trail).
    kept: Vec<String>,
}

/// `forwarding` under the app's rules and the caller's reach over its environment
/// ([`env_rules`], [`env_mask`]): what to mask in the answer, and a release creation's body
/// checked, with masked values restored.
async fn app_rules_applied(
    state: &AppState,
    parts: &http::request::Parts,
    query: Option<&str>,
    allowed: &Allowed,
    mut forwarding: Forwarding,
) -> Result<Forwarding, ApiError> {
    let (principal, path) = (&allowed.principal, &allowed.normalised.decoded);
    let permission = allowed.classified.permission.as_str();
    let app = env_mask::app_of(path);
    // Read once for both uses, and only when they could bind this caller. A store that cannot
    // answer fails the call: nothing is unmasked or let through unchecked.
    let rules = match app {
        Some(app) if env_rules::needs_rules(permission, principal) => state
            .store
            .app_rules(app)
            .await
            .map_err(ApiError::store)?
            .map(|row| row.rules)
            .unwrap_or_default(),
        _ => crate::app_rules::AppRules::default(),
    };
    forwarding.masking = env_mask::plan(permission, principal, &rules);
    if let Some(app) = app
        && permission == env_rules::RELEASE_CREATE
    {
        let (body, kept) = env_rules::checked(
            state,
            principal,
            (app, &rules),
            parts,
            query,
            forwarding.body,
            &mut forwarding.headers,
        )
        .await?;
        forwarding.body = body;
        forwarding.kept = kept;
    }
    if let Some(app) = app
        && permission == env_rules::RELEASE_PROMOTE
    {
        // `/apps/{app}/releases/{id}/promote`: the catalogue matched that shape.
        let release = path.split('/').nth(4).unwrap_or_default();
        env_rules::promote_checked(state, principal, (app, &rules), release).await?;
    }
    Ok(forwarding)
}

/// Opens the WebSocket session an allowed upgrade asks for: within the caller's and the
/// gateway's limits on sessions, to the rack's `url`, re-checking the caller's credentials
/// while it lasts.
async fn open_session(
    state: &AppState,
    parts: &mut http::request::Parts,
    principal: &Principal,
    forwarded: http::HeaderMap,
    url: String,
    (permission, ends_at): (String, Option<i64>),
    mut outcome: OutcomeGuard,
) -> Result<Response, ApiError> {
    let slot = match state.sessions.admit(principal) {
        Ok(slot) => slot,
        Err(full) => return Err(outcome.fails_with(ApiError::TooManyWebSockets(full))),
    };
    let upgrade = match ws::check_key(&parts.headers) {
        Err(problem) => Err(problem),
        Ok(()) => WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map_err(|e| e.to_string()),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(e) => {
            // Allowed, but not a usable upgrade: the outcome says what the client got.
            let err = ApiError::BadRequest(format!("bad WebSocket upgrade: {e}"));
            return Err(outcome.fails_with(err));
        }
    };
    // Authenticated above, so it is there; if not, the outcome still says what happened.
    let Some(token) = extract_token(&parts.headers).ok().flatten() else {
        return Err(outcome.fails_with(ApiError::Unauthenticated(AuthError::Missing)));
    };
    let recheck = ws::Recheck {
        state: state.clone(),
        token: crate::config::Secret::new(token),
        permission,
        ends_at,
    };
    ws::forward(state, upgrade, forwarded, url, outcome, recheck, slot).await
}

/// The facts every audit event of a request shares; its path as the trail shows it, with the
/// rack's credentials masked wherever they appear.
fn request_facts(
    state: &AppState,
    peer: Peer,
    parts: &http::request::Parts,
    raw_path: &str,
    query: Option<&str>,
    normalised: &Result<NormalisedPath, PathError>,
    started: Instant,
) -> RequestFacts {
    let rack_secrets = &state.upstream.scrubber;
    let shown_path = match normalised {
        // The audit log masks the rack's credentials wherever they appear; an encoded copy
        // would not appear, so such a path is recorded decoded (and then masked).
        Ok(p)
            if rack_secrets.contains(p.decoded.as_bytes())
                && !rack_secrets.contains(p.forward.as_bytes()) =>
        {
            p.decoded.chars().map(gateway_core::text::shown).collect()
        }
        Ok(p) => p.forward.clone(),
        Err(_) => {
            let mut decoded: Vec<u8> = percent_encoding::percent_decode_str(raw_path).collect();
            // Masked before the cut below, which a copy could straddle.
            rack_secrets.mask(&mut decoded);
            String::from_utf8_lossy(&decoded)
                .chars()
                // Control and invisible characters would make the trail show another path
                // (dropped, `w%00eb` read as `web`): such paths are refused, and the refusal
                // records each of them as U+FFFD, so the trail shows that something was there.
                .map(gateway_core::text::shown)
                .take(512)
                .collect()
        }
    };
    RequestFacts {
        // `request_id::assign` puts the id on the response.
        request_id: crate::request_id::current(),
        started,
        // Methods are ASCII tokens, so a cut at 32 bytes is a cut at 32 characters.
        method: {
            let method = parts.method.as_str();
            method
                .get(..crate::audit::MAX_AUDITED_METHOD)
                .unwrap_or(method)
                .to_string()
        },
        path: audited_path(match query {
            Some(q) => format!(
                "{shown_path}?{}",
                redact::redact_query_with(q, |v| rack_secrets.contains(v.as_bytes()))
            ),
            None => shown_path,
        }),
        client_ip: peer.ip.to_string(),
        peer_ip: peer.ip,
        user_agent: audited_user_agent(&parts.headers),
    }
}

/// A request allowed and recorded, ready to forward.
struct Allowed {
    principal: Principal,
    normalised: NormalisedPath,
    classified: Classified,
    /// The permission a WebSocket session needs to go on (re-checked while it lasts).
    lives_under: String,
    /// When a WebSocket session must end whatever the re-checks say (unix ms): the deploy
    /// window of the approval that let it through.
    ends_at: Option<i64>,
    /// The approval that let through an attached run's holder process: the process the rack
    /// starts is remembered as its own ([`approvals::holders`]).
    holder_for: Option<i64>,
}

/// Authenticates the caller, judges the request and records its event, durably, before
/// anything is forwarded. Runs again from a fresh read when credentials answered from memory
/// turn out to have changed by the commit, or would be refused (a refusal never rests on
/// memory); a refusal is recorded and returned as the error.
async fn authorise(
    state: &AppState,
    parts: &http::request::Parts,
    normalised: Result<NormalisedPath, PathError>,
    facts: &RequestFacts,
    pending: Pending,
    is_upgrade: bool,
) -> Result<(Allowed, OutcomeGuard), ApiError> {
    let mut pending = Some(pending);
    let mut reads = Reads::Remembered;
    loop {
        let pending = pending.take().unwrap_or_else(|| state.audit.pending());
        let (classified, privileged) = classify_request(parts, &normalised);
        let action = match &classified {
            Some(Ok(c)) => c.permission.clone(),
            _ => "convox:unclassified".to_string(),
        };
        // Authenticate first: nothing about the route is revealed to an unknown caller.
        let Authenticated { principal, read_at } =
            match authenticate_request(state, &parts.headers, reads).await {
                Ok(a) => a,
                Err(err) => {
                    let err = ApiError::Unauthenticated(err);
                    deny(state, pending, facts, &action, None, &err).await;
                    return Err(err);
                }
            };
        let verdict = match headers::cross_origin(&parts.headers, state.config.public_url.as_ref())
        {
            Some(why) => Err(ApiError::CrossOrigin(why)),
            None => judge(
                &principal,
                &parts.method,
                &normalised,
                classified,
                is_upgrade,
            ),
        };
        if verdict.is_err() && read_at.is_some() {
            reads = Reads::Fresh;
            continue;
        }
        // A deploy step the caller's permissions lack may be let through by an approved deploy
        // request of its own. Asked only of fresh credentials: a promote spends the approval.
        // Boxed: its future (rack lookups included) would otherwise enlarge every request's.
        let (verdict, grant) = match verdict {
            Err(ApiError::Forbidden { permission, .. }) => {
                Box::pin(approved_step(
                    state,
                    parts,
                    &normalised,
                    &principal,
                    permission,
                    is_upgrade,
                ))
                .await
            }
            other => (other, None),
        };
        let classified = match verdict {
            Ok(c) => c,
            Err(err) => {
                deny(state, pending, facts, &action, Some(&principal), &err).await;
                return Err(err);
            }
        };
        // Destroying on the rack with a session (deleting an app …) needs a recent code, as
        // the gateway's own privileged changes do. Boxed: rarely taken.
        if principal.session_id().is_some()
            && crate::mfa::step_up::guards_rack(&classified.permission)
            && let Err(err) = Box::pin(rack_step_up(state, &principal)).await
        {
            deny(state, pending, facts, &action, Some(&principal), &err).await;
            return Err(err);
        }
        // Durable before forwarding: if the audit store cannot take it, nothing reaches the rack.
        let mut event = facts.event(EventKind::Request, &action, Some(&principal));
        event.rbac_decision = Decision::Allow;
        let mut details = request_details(parts, &principal, &classified, privileged, is_upgrade);
        if let (Some(grant), Some(map)) = (&grant, details.as_object_mut()) {
            map.insert(
                "deploy_approval".into(),
                json!({ "id": grant.approval_id, "git_commit": grant.git_commit, "spent": grant.spent }),
            );
        }
        let event = event.with_details(details);
        // Armed before the commit is awaited: a client that goes away meanwhile drops this
        // future, but its event is queued and committed all the same, and its outcome must
        // say the request went nowhere (not leave the gap a crash leaves).
        let mut outcome = OutcomeGuard::new(
            state.audit.clone(),
            facts.event(EventKind::Outcome, &action, Some(&principal)),
            facts.started,
            state.sessions.ending(),
        );
        outcome.before_forwarding = true;
        let recorded = state.audit.record_checked(pending, event, read_at).await;
        if recorded.is_err() {
            // No request event, no outcome.
            outcome.disarm();
        }
        match recorded {
            Ok(_) => {}
            Err(AuditError::Stale) if read_at.is_some() => {
                reads = Reads::Fresh;
                continue;
            }
            Err(err) => {
                if let Some(held_back) = AUDIT_REFUSALS.admit() {
                    tracing::error!(
                        request_id = %facts.request_id,
                        error = %err,
                        refused_since_last = held_back,
                        "refusing request: audit write failed (at most one such line a second)"
                    );
                }
                return Err(ApiError::AuditUnavailable);
            }
        }
        outcome.before_forwarding = false;
        match normalised {
            Ok(normalised) => {
                // A session an approval let through lives as long as its caller may still ask
                // for approvals, and no longer than the approval's deploy window.
                let (lives_under, ends_at) = match &grant {
                    Some(grant) => (approvals::REQUEST.to_string(), Some(grant.until)),
                    None => (classified.permission.clone(), None),
                };
                let holder_for = grant
                    .as_ref()
                    .filter(|g| g.starts_holder)
                    .map(|g| g.approval_id);
                let allowed = Allowed {
                    principal,
                    normalised,
                    classified,
                    lives_under,
                    ends_at,
                    holder_for,
                };
                return Ok((allowed, outcome));
            }
            // A classified route has a normalised path.
            Err(_) => {
                outcome.status = Some(ApiError::Internal.status().as_u16());
                return Err(ApiError::Internal);
            }
        }
    }
}

/// The verdict on a request refused for want of permission `missing`: allowed after all when
/// it is a deploy step an approved deploy request of the caller's lets through
/// ([`approvals::gate`]), else refused — saying how to get an approval where one would help.
/// Callers who may not ask for approvals (most refusals) are answered at once.
async fn approved_step(
    state: &AppState,
    parts: &http::request::Parts,
    normalised: &Result<NormalisedPath, PathError>,
    principal: &Principal,
    missing: String,
    is_upgrade: bool,
) -> (Result<Classified, ApiError>, Option<approvals::gate::Grant>) {
    let refused = |missing: String| ApiError::Forbidden {
        permission: missing,
        role: principal.role_name().to_string(),
    };
    if !principal.permissions.allows(approvals::REQUEST) {
        return (Err(refused(missing)), None);
    }
    let (Ok(path), (Some(Ok(classified)), _)) = (normalised, classify_request(parts, normalised))
    else {
        return (Err(refused(missing)), None);
    };
    let forwarded = headers::request_headers(&parts.headers);
    let Some((app, step)) =
        approvals::gate::deploy_step(&classified.permission, &path.decoded, &forwarded)
    else {
        return (Err(refused(missing)), None);
    };
    if classified.permission != missing {
        return (Err(refused(missing)), None);
    }
    // Judged again as if the permission were held, so every other check still applies.
    let mut widened = principal.clone();
    let mut patterns = principal.permissions.patterns().to_vec();
    patterns.push(classified.permission.clone());
    match rbac::PermissionSet::new(patterns) {
        Ok(set) => widened.permissions = set,
        Err(_) => return (Err(refused(missing)), None),
    }
    let rejudged = judge(
        &widened,
        &parts.method,
        normalised,
        Some(Ok(classified.clone())),
        is_upgrade,
    );
    if let Err(err) = rejudged {
        return (Err(err), None);
    }
    match approvals::gate::let_through(state, principal, &classified.permission, &app, step).await {
        Ok(grant) => (Ok(classified), Some(grant)),
        Err(err) => (Err(err), None),
    }
}

/// What an allowed request's event says beyond the shared facts: the route it matched, the
/// caller's role, whether it opens a WebSocket, its declared length, why it is privileged, and
/// the command `exec` and `run` run (redacted).
fn request_details(
    parts: &http::request::Parts,
    principal: &Principal,
    classified: &Classified,
    privileged: Option<privileged::Reasons>,
    is_upgrade: bool,
) -> serde_json::Value {
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok());
    let mut details = json!({
        "route": classified.route.map(|r| r.pattern),
        "role": principal.role_name(),
        "websocket": is_upgrade,
        "content_length": content_length,
    });
    let Some(map) = details.as_object_mut() else {
        return details;
    };
    if let Some(why) = privileged {
        map.insert("privileged".into(), json!(why));
    }
    // What `exec` and `run` run (the Convox SDK sends it in this header): who ran what. Read
    // from the headers as they will be forwarded: one the client listed in `Connection` never
    // reaches the rack, so it is not what ran.
    if matches!(
        classified.permission.as_str(),
        "convox:processes:exec" | "convox:processes:start" | rbac::PRIVILEGED_RUN
    ) && let Some(command) = headers::request_headers(&parts.headers).get("command")
    {
        let command = String::from_utf8_lossy(command.as_bytes());
        map.insert("command".into(), redact::redact_command(&command).into());
    }
    details
}

async fn authenticate_request(
    state: &AppState,
    headers: &http::HeaderMap,
    reads: Reads,
) -> Result<Authenticated, AuthError> {
    let token = extract_token(headers)?.ok_or(AuthError::Missing)?;
    authenticate_with(
        &state.store,
        &state.credentials,
        &state.config.sessions,
        &token,
        reads,
    )
    .await
}

/// Whether `principal` may make this request: a usable path, a known route, the permission,
/// and a WebSocket upgrade exactly where the route is a WebSocket one.
fn judge(
    principal: &Principal,
    method: &http::Method,
    normalised: &Result<NormalisedPath, PathError>,
    classified: Option<Result<Classified, ApiError>>,
    is_upgrade: bool,
) -> Result<Classified, ApiError> {
    let path = match normalised {
        Ok(path) => path,
        Err(e) => return Err(ApiError::BadRequest(e.to_string())),
    };
    let classified = match classified {
        Some(Ok(c)) => c,
        Some(Err(err)) => return Err(err),
        // A normalised path is always classified.
        None => return Err(ApiError::Internal),
    };
    if let rbac::Decision::Deny { missing } =
        rbac::decide(&principal.permissions, &classified.permission)
    {
        // A known path with a method the rack does not use on it (`HEAD /apps`): say so, not
        // that an unknown-route permission is missing. (Admins' requests go as asked.)
        let allowed = match classified.route {
            None => gateway_core::classify::methods_for(&path.decoded),
            Some(_) => Vec::new(),
        };
        if !allowed.is_empty() {
            return Err(ApiError::WrongMethod {
                method: method.to_string(),
                path: gateway_core::redact::clip(path.decoded.clone(), 256),
                allowed,
            });
        }
        return Err(ApiError::Forbidden {
            permission: missing,
            role: principal.role_name().to_string(),
        });
    }
    // A privileged request refines its route's permission: it needs that one too.
    if classified.permission == rbac::PRIVILEGED_RUN
        && let Some(route) = classified.route
        && let rbac::Decision::Deny { missing } =
            rbac::decide(&principal.permissions, &route.permission())
    {
        return Err(ApiError::Forbidden {
            permission: missing,
            role: principal.role_name().to_string(),
        });
    }
    if let Some(problem) = classified
        .route
        .and_then(|route| privileged::process_id_problem(route.pattern, &path.decoded))
    {
        return Err(ApiError::BadRequest(problem));
    }
    // Judged after the permission, so a caller learns nothing about a route it may not use. An
    // upgrade on an HTTP route would hold a WebSocket slot and be recorded as a session for a
    // request the rack serves as plain HTTP; a plain request on a WebSocket route is refused by
    // the rack. Unknown routes (admins only) go as asked.
    if let Some(route) = classified.route {
        let socket = route.kind == convox_api::RouteKind::WebSocket;
        if socket != is_upgrade {
            return Err(ApiError::BadRequest(if socket {
                format!(
                    "{} is a WebSocket route: connect with `Upgrade: websocket`",
                    route.pattern
                )
            } else {
                format!(
                    "{} is not a WebSocket route: send it without `Upgrade: websocket`",
                    route.pattern
                )
            }));
        }
    }
    Ok(classified)
}

/// Records a refusal. Nothing is forwarded either way, so a failed write is logged, not fatal.
/// `Ok` when `principal`'s session gave a code recently enough for a destructive rack route
/// (or needs none: no authenticator app).
async fn rack_step_up(state: &AppState, principal: &Principal) -> Result<(), ApiError> {
    match crate::mfa::step_up::check(state, principal).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(needed)) => Err(ApiError::MfaRequired {
            window_secs: needed.window_secs,
        }),
        Err(crate::mfa::MfaError::Store(e)) => Err(ApiError::store(e)),
        Err(e) => {
            tracing::error!(error = %e, "a step-up check failed");
            Err(ApiError::StoreUnavailable)
        }
    }
}

async fn deny(
    state: &AppState,
    pending: Pending,
    facts: &RequestFacts,
    action: &str,
    principal: Option<&Principal>,
    err: &ApiError,
) {
    if matches!(err, ApiError::Unauthenticated(AuthError::Store(_))) {
        // The store is what failed: an audit write would fail too, only slower.
        tracing::error!(request_id = %facts.request_id, "refused: store unavailable");
        return;
    }
    if principal.is_none()
        && !state
            .refusals
            .admit(facts.peer_ip, std::time::Instant::now())
    {
        // Over this address's budget: counted into the next summary event instead.
        return;
    }
    let mut event = facts.event(EventKind::Request, action, principal);
    event.rbac_decision = Decision::Deny;
    event.status = Some(i64::from(err.status().as_u16()));
    event.latency_ms = Some(elapsed_ms(facts.started));
    event = event.with_details(json!({ "reason": err.code(), "message": err.message() }));
    if let Err(e) = state.audit.record_pending(pending, event).await {
        tracing::error!(request_id = %facts.request_id, error = %e, "could not audit a refusal");
    }
}

fn elapsed_ms(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// A response relayed from the rack's refusal of a WebSocket handshake.
fn relay_status(status: StatusCode, body: Option<Vec<u8>>) -> Response {
    let body = body.map(Body::from).unwrap_or_else(Body::empty);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}
