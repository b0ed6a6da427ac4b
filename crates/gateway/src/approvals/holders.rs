//! The holder processes of attached runs let through by approvals. `convox run` attached
//! starts a process that only sleeps (`sleep <timeout>`, an hour by default), runs the command
//! in it with `exec`, and stops it when the command ends. A credential that runs through an
//! approval (a cicd token) may not stop processes, so the holder used to sleep on, holding a
//! container, until its timeout. The gateway now remembers which process each holder it let
//! through is (from the rack's answer), and lets the credential whose approval started it —
//! and only that one — stop exactly that process.

use axum::body::Body;
use axum::response::Response;

use crate::app::AppState;
use crate::error::ApiError;
use crate::proxy::{Counted, Overrule, read_whole};
use crate::store::now_ms;

use super::Requester;
use super::gate::{Grant, is_rack_id};

/// How long a holder stays stoppable (unix ms): longer than the longest sleep
/// [`is_holder`] lets through (999 999 s, about 11.6 days).
pub const KEPT_MS: i64 = 14 * 24 * 3600 * 1000;

/// The most of the rack's answer to a run read to learn its process id (a process is a few
/// hundred bytes).
const ANSWER_LIMIT: usize = 1024 * 1024;

/// `convox run`'s holder process for an attached run (`sleep <timeout>`), which then `exec`s
/// the command.
pub fn is_holder(command: &str) -> bool {
    command
        .trim()
        .strip_prefix("sleep ")
        .is_some_and(|n| !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The rack's `response` to a holder's run let through by approval `approval_id` on `app`,
/// passed on unchanged, with the process it started remembered as that approval's. An answer
/// that is not a started process is passed on as it is; one too large to read is not (`502`,
/// which `overrule` records as the request's outcome).
pub async fn remembered(
    state: &AppState,
    approval_id: i64,
    app: &str,
    response: Response,
    overrule: &Overrule,
) -> Result<Response, ApiError> {
    let (parts, body) = response.into_parts();
    if !parts.status.is_success() {
        return Ok(Response::from_parts(parts, body));
    }
    // A process was started: its answer is read whatever else is held.
    let read = read_whole(body, ANSWER_LIMIT, Counted::Change, overrule, || {
        ApiError::RackUnreachable(
            "the rack's answer to starting a process could not be read whole".into(),
        )
    })
    .await?;
    let pid = serde_json::from_slice::<serde_json::Value>(&read.bytes)
        .ok()
        .and_then(|answer| answer.get("id")?.as_str().map(str::to_string))
        .filter(|pid| is_rack_id(pid));
    match pid {
        Some(pid) => {
            if let Err(e) = state
                .store
                .remember_approved_holder(approval_id, app, &pid, now_ms(), KEPT_MS)
                .await
            {
                // The run went through; only the clean-up is lost.
                tracing::warn!(
                    approval_id,
                    app,
                    error = %e,
                    "an approved run's holder process was not remembered: it runs until its \
                     sleep ends"
                );
            }
        }
        None => tracing::warn!(
            approval_id,
            app,
            "the rack's answer to an approved run names no process: its holder cannot be \
             stopped through the approval"
        ),
    }
    Ok(Response::from_parts(parts, Body::from(read.bytes.clone())))
}

/// The grant to stop process `pid` of `app`: only the holder an attached run of the
/// requester's started through one of its approvals, within [`KEPT_MS`].
pub async fn may_stop(
    state: &AppState,
    requester: &Requester,
    app: &str,
    pid: &str,
) -> Result<Grant, ApiError> {
    let since = now_ms().saturating_sub(KEPT_MS);
    let approval = state
        .store
        .approved_holder(requester.token_id, requester.user_id, app, pid, since)
        .await
        .map_err(ApiError::store)?;
    match approval {
        Some(approval) => Ok(Grant {
            approval_id: approval.id,
            git_commit: approval.git_commit,
            spent: false,
            until: approval.expires_at,
            starts_holder: false,
        }),
        None => Err(ApiError::NotApproved(format!(
            "stopping a process of app {app} needs convox:processes:terminate; through a deploy \
             approval, a credential stops only the holder process its own attached `convox run` \
             started"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attached_run_holder_is_a_plain_sleep() {
        assert!(is_holder("sleep 3600") && is_holder(" sleep 60 "));
        for not in [
            "sleep",
            "sleep ",
            "sleep 1; sh",
            "sleep 1234567",
            "sleep -1",
            "bash",
        ] {
            assert!(!is_holder(not), "{not}");
        }
    }
}
