//! The audit events of signing in and out, and the sign-in that must be recorded before its
//! session is handed out.

use http::HeaderMap;
use serde_json::json;

use crate::app::{AppState, Peer};
use crate::audit::{ActorType, AuditEvent, Decision, EventKind, audited_user_agent};
use crate::identity::sessions::{end_evicted, issue_session};
use crate::store::{CreatedSession, StoreError, UserRow};

/// Names, in a sign-in's audit details, the sessions it ends to keep the user within
/// `MAX_SESSIONS_PER_USER`: `"evicted": [{"session_id": …}, …]` (a key naming sessions
/// itself would be redacted as a secret's name).
fn evicted_details(ids: &[i64]) -> serde_json::Value {
    json!(
        ids.iter()
            .map(|id| json!({ "session_id": id }))
            .collect::<Vec<_>>()
    )
}

/// Why a signed-in person was given no session.
pub(super) enum NotIssued {
    /// Locked while signing in.
    Locked,
    /// The store could not create it (not yet logged).
    Store(StoreError),
    /// The sign-in could not be recorded: the session was withdrawn (logged).
    Unrecorded,
}

/// Issues `user` a session for `channel` and records the sign-in (its details from the new
/// session's id) before the session is handed out: the session and its token, both new.
pub(super) async fn issue_recorded_session(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    user: &UserRow,
    channel: &str,
    details: impl FnOnce(i64) -> serde_json::Value,
) -> Result<(CreatedSession, String), NotIssued> {
    let ua = audited_user_agent(headers);
    let ip = peer.ip.to_string();
    let sessions = &state.config.sessions;
    let issued = issue_session(
        &state.store,
        sessions,
        user,
        channel,
        ua.as_deref(),
        Some(&ip),
    );
    let (created, token) = issued.await.map_err(|e| match e {
        StoreError::UserLocked => NotIssued::Locked,
        e => NotIssued::Store(e),
    })?;
    let details = details(created.row.id);
    record_signin_and_evict(state, peer, headers, user, &created, details)
        .await
        .map_err(|_| NotIssued::Unrecorded)?;
    Ok((created, token))
}

/// Records a sign-in that created `created`'s session, then ends the sessions it named for
/// ending, in a task of its own (a caller that goes away cannot leave the event naming
/// sessions that were not ended). Unrecorded, the new session is withdrawn and nothing else
/// changes.
async fn record_signin_and_evict(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    user: &UserRow,
    created: &CreatedSession,
    mut details: serde_json::Value,
) -> Result<(), crate::audit::AuditError> {
    if let (false, Some(map)) = (created.to_end.is_empty(), details.as_object_mut()) {
        map.insert("evicted".into(), evicted_details(&created.to_end));
    }
    let (state, headers) = (state.clone(), headers.clone());
    let (user_id, email) = (user.id, user.email.clone());
    let (session_id, to_end) = (created.row.id, created.to_end.clone());
    let work = async move {
        if let Err(err) = record_signin(&state, &peer, &headers, &email, details).await {
            withdraw_session(&state, session_id, &err).await;
            return Err(err);
        }
        let limits = &state.config.sessions;
        match end_evicted(&state.store, limits, user_id, &to_end).await {
            // Sign-ins at the same moment each named the same sessions: the ones ended beyond
            // those are audited after, as revocations are.
            Ok(more) if !more.is_empty() => {
                let details =
                    json!({ "reason": "too_many_sessions", "evicted": evicted_details(&more) });
                let action = "gateway:auth:signout";
                audit_signin(&state, &peer, &headers, action, Some(&email), true, details).await;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(
                error = %e,
                user_id,
                "could not end sessions beyond MAX_SESSIONS_PER_USER (the next sign-in will)"
            ),
        }
        Ok(())
    };
    match crate::request_id::spawn(work).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, "recording a sign-in failed");
            Err(crate::audit::AuditError::Store(format!(
                "the sign-in task ended early: {e}"
            )))
        }
    }
}

/// Audits a sign-in event; a failure is logged (refusals and sign-outs go ahead without it).
pub(super) async fn audit_signin(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    action: &str,
    email: Option<&str>,
    allowed: bool,
    details: serde_json::Value,
) {
    if email.is_none() && !allowed && !state.refusals.admit(peer.ip, std::time::Instant::now()) {
        // An anonymous refusal over this address's budget: counted into a summary event.
        return;
    }
    let e = signin_event(peer, headers, action, email, allowed, details);
    if let Err(err) = state.audit.record(e).await {
        tracing::error!(error = %err, "could not audit a sign-in event");
    }
}

/// Records a successful sign-in before its credential is handed out: like a proxied request,
/// a session is not given to anyone when the trail cannot say so (the caller ends it).
async fn record_signin(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    email: &str,
    details: serde_json::Value,
) -> Result<(), crate::audit::AuditError> {
    let e = signin_event(
        peer,
        headers,
        "gateway:auth:signin",
        Some(email),
        true,
        details,
    );
    state.audit.record(e).await.map(|_| ())
}

pub(super) fn signin_event(
    peer: &Peer,
    headers: &HeaderMap,
    action: &str,
    email: Option<&str>,
    allowed: bool,
    details: serde_json::Value,
) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Gateway, crate::request_id::current(), action);
    e.actor_type = if email.is_some() {
        ActorType::User
    } else {
        ActorType::Anonymous
    };
    e.user_email = email.map(str::to_string);
    e.rbac_decision = if allowed {
        Decision::Allow
    } else {
        Decision::Deny
    };
    e.client_ip = Some(peer.ip.to_string());
    e.user_agent = audited_user_agent(headers);
    e.with_details(details)
}

/// Ends a session whose sign-in could not be recorded (best effort: it was never handed out).
async fn withdraw_session(state: &AppState, session_id: i64, err: &crate::audit::AuditError) {
    tracing::error!(error = %err, "sign-in not recorded: the new session is withdrawn");
    if let Err(e) = state.store.revoke_session(session_id).await {
        tracing::error!(error = %e, session_id, "withdrawing an unrecorded session failed");
    }
}

/// Audits a web sign-out: refused, with `refusal` details, or done.
pub(super) async fn signout_audit(
    state: &AppState,
    peer: &Peer,
    headers: &HeaderMap,
    principal: &crate::identity::Principal,
    refusal: Option<serde_json::Value>,
) {
    let allowed = refusal.is_none();
    let details = refusal.unwrap_or_else(|| json!({ "channel": "web" }));
    let (email, action) = (principal.email(), "gateway:auth:signout");
    audit_signin(state, peer, headers, action, email, allowed, details).await;
}
