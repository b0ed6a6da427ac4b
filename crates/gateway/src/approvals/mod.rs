//! Deploy approvals. CI (or a person whose role may only ask) requests a deploy of one commit
//! of one app; a person who may approve (`gateway:deploy-approvals:approve`) approves or
//! rejects it; an approval lets exactly that deploy through for the credential that asked,
//! for `DEPLOY_APPROVAL_WINDOW_SECS` (see [`gate`]). Every request and decision is audited,
//! and a decision is committed to the trail before it is made.
//!
//! Rules that keep a human in the loop: only a signed-in person decides (never an API token),
//! and never on a request they made, or that a token acting for them made.

pub mod gate;
pub mod holders;
pub mod input;

use serde::Serialize;
use serde_json::json;

use crate::app::AppState;
use crate::audit::EventKind;
use crate::identity::manage::Actor;
use crate::identity::{Principal, PrincipalKind};
use crate::store::{ApprovalDecision, ApprovalRow, NewApproval, StoreError, now_ms};

pub use input::{Asked, MAX_NOTE_CHARS, check_note};

/// Permission to ask for a deploy approval.
pub const REQUEST: &str = "gateway:deploy-approvals:request";
/// Permission to see everyone's requests (a caller always sees their own).
pub const LIST: &str = "gateway:deploy-approvals:list";
/// Permission to approve or reject a request.
pub const APPROVE: &str = "gateway:deploy-approvals:approve";
/// Audit action of a rejection (an approval's is [`APPROVE`]).
pub const REJECT: &str = "gateway:deploy-approvals:reject";

/// Why a request or a decision was not made.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The input is not usable (the message says why).
    #[error("{0}")]
    Invalid(String),
    /// No such request (or not one the caller may see).
    #[error("deploy request {0}")]
    NotFound(i64),
    /// Decisions are made by signed-in people, not API tokens.
    #[error(
        "deploy requests are approved or rejected by a signed-in person, not an API token: use \
         the web page or `rack-gateway deploy-approval approve` after `rack-gateway login`"
    )]
    NotAPerson,
    /// The person deciding asked for it (or a token of theirs did).
    #[error(
        "you asked for this deploy (or a token acting for you did): another person must decide \
         on it"
    )]
    OwnRequest,
    /// It is not pending any more.
    #[error("deploy request {id} is {state}, not pending: nothing was changed")]
    NotPending {
        /// The request.
        id: i64,
        /// What it is now.
        state: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit trail could not take the event: nothing was changed.
    #[error("audit log unavailable")]
    Audit,
}

impl ApprovalError {
    /// The audited reason of a decision refused for who decides or what the request has
    /// become; `None` for failures.
    pub fn refusal_reason(&self) -> Option<&'static str> {
        match self {
            ApprovalError::NotAPerson => Some("not_a_person"),
            ApprovalError::OwnRequest => Some("own_request"),
            ApprovalError::NotPending { .. } => Some("not_pending"),
            _ => None,
        }
    }
}

/// A request as the API and the CLI show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ApprovalView {
    /// Its number.
    pub id: i64,
    /// The Convox app.
    pub app: String,
    /// The full commit id.
    pub git_commit: String,
    /// What CI said about it.
    pub message: String,
    /// The pipeline's address.
    pub ci_url: Option<String>,
    /// The branch.
    pub branch: Option<String>,
    /// Who asked.
    pub requested_by: String,
    /// `pending`, `approved`, `rejected`, `deployed` or `expired`.
    pub status: String,
    /// When asked (unix ms).
    pub created_at: i64,
    /// Pending: until when it can be decided; approved: until when the deploy may run.
    pub expires_at: i64,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When (unix ms).
    pub decided_at: Option<i64>,
    /// What they wrote.
    pub note: Option<String>,
    /// When the approved deploy was promoted (unix ms).
    pub deployed_at: Option<i64>,
    /// The release promoted.
    pub release: Option<String>,
}

impl ApprovalView {
    /// `row` as of `now`.
    pub fn of(row: ApprovalRow, now: i64) -> ApprovalView {
        ApprovalView {
            status: row.state(now).to_string(),
            id: row.id,
            app: row.app,
            git_commit: row.git_commit,
            message: row.message,
            ci_url: row.ci_url,
            branch: row.branch,
            requested_by: row.requested_by,
            created_at: row.created_at,
            expires_at: row.expires_at,
            decided_by: row.decided_by,
            decided_at: row.decided_at,
            note: row.note,
            deployed_at: row.deployed_at,
            release: row.release_id,
        }
    }
}

/// The credential a request belongs to: the deploy is let through for it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester {
    /// The API token, when a token asks.
    pub token_id: Option<i64>,
    /// The person asking (with no token), or the token's owner.
    pub user_id: Option<i64>,
}

impl Requester {
    /// The credential `principal` is; a token's owner is looked up (`None` when it has none).
    pub async fn of(state: &AppState, principal: &Principal) -> Result<Requester, StoreError> {
        match &principal.kind {
            PrincipalKind::Session { user_id, .. } => Ok(Requester {
                token_id: None,
                user_id: Some(*user_id),
            }),
            PrincipalKind::ApiToken {
                id, owner_email, ..
            } => {
                let user_id = match owner_email {
                    Some(email) => state.store.find_user(email).await?.map(|u| u.id),
                    None => None,
                };
                Ok(Requester {
                    token_id: Some(*id),
                    user_id,
                })
            }
        }
    }

    /// Whether `row` was asked by this credential.
    pub fn asked(&self, row: &ApprovalRow) -> bool {
        match self.token_id {
            Some(token) => row.requested_by_token_id == Some(token),
            None => row.requested_by_token_id.is_none() && row.requested_by_user_id == self.user_id,
        }
    }

    /// The listing filter for "only mine".
    pub fn filter(&self) -> (Option<i64>, Option<i64>) {
        (self.token_id, self.user_id)
    }
}

/// Who `principal` is, as a request shows it.
fn label(principal: &Principal) -> String {
    match (principal.token_name(), principal.email()) {
        (Some(token), _) => format!("token:{token}"),
        (None, Some(email)) => email.to_string(),
        (None, None) => "unknown".into(),
    }
}

/// Asks for approval of `asked` for `principal` (who holds [`REQUEST`]): a new pending
/// request, or the live one this credential already has for the same app and commit (the
/// second value says whether it is new). A new one is audited.
pub async fn request(
    state: &AppState,
    actor: &Actor,
    principal: &Principal,
    asked: &Asked,
) -> Result<(ApprovalRow, bool), ApprovalError> {
    let requester = Requester::of(state, principal).await?;
    let now = now_ms();
    let ttl = i64::try_from(state.config.deploy_approval_request_ttl.as_millis()).unwrap_or(0);
    let label = label(principal);
    let new = NewApproval {
        app: &asked.app,
        git_commit: &asked.git_commit,
        message: &asked.message,
        ci_url: asked.ci_url.as_deref(),
        branch: asked.branch.as_deref(),
        token_id: requester.token_id,
        user_id: requester.user_id,
        requested_by: &label,
        expires_at: now.saturating_add(ttl),
    };
    let (row, created) = state.store.request_approval(&new, now).await?;
    if created {
        // Recorded after the row exists, to name it; a request alone lets nothing through,
        // and the decision that would is committed to the trail before it is made.
        let event = actor.event(
            EventKind::Gateway,
            &crate::request_id::current(),
            REQUEST,
            json!({
                "approval_id": row.id,
                "app": row.app,
                "git_commit": row.git_commit,
                "message": row.message,
                "ci_url": row.ci_url,
                "branch": row.branch,
            }),
        );
        state
            .audit
            .record(event)
            .await
            .map_err(|_| ApprovalError::Audit)?;
    }
    Ok((row, created))
}

/// The person deciding on a request.
#[derive(Debug, Clone, Copy)]
pub struct Decider<'a> {
    /// Their user id.
    pub user_id: i64,
    /// Their e-mail, recorded as who decided.
    pub email: &'a str,
    /// The Slack user who pressed the button, when the decision came from Slack.
    pub slack_user: Option<&'a str>,
}

/// Approves (or rejects) request `id` as `principal`, who holds [`APPROVE`] (and has given a
/// recent code where one is asked for). The decision is audited before it is made.
pub async fn decide(
    state: &AppState,
    actor: &Actor,
    principal: &Principal,
    id: i64,
    approve: bool,
    note: Option<&str>,
) -> Result<ApprovalRow, ApprovalError> {
    let Some(user_id) = principal.user_id() else {
        return Err(ApprovalError::NotAPerson);
    };
    let decider = Decider {
        user_id,
        email: principal.email().unwrap_or_default(),
        slack_user: None,
    };
    decide_as(state, actor, &decider, id, approve, note).await
}

/// [`decide`] for `decider`, a person who holds [`APPROVE`] and has given a code where one is
/// asked for (from a page, the API, or Slack).
pub async fn decide_as(
    state: &AppState,
    actor: &Actor,
    decider: &Decider<'_>,
    id: i64,
    approve: bool,
    note: Option<&str>,
) -> Result<ApprovalRow, ApprovalError> {
    let user_id = decider.user_id;
    let now = now_ms();
    let Some(row) = state.store.approval(id).await? else {
        return Err(ApprovalError::NotFound(id));
    };
    if row.requested_by_user_id == Some(user_id) {
        return Err(ApprovalError::OwnRequest);
    }
    if row.state(now) != "pending" {
        return Err(ApprovalError::NotPending {
            id,
            state: row.state(now).to_string(),
        });
    }
    let window = i64::try_from(state.config.deploy_approval_window.as_millis()).unwrap_or(0);
    let deploy_until = now.saturating_add(window);
    let action = if approve { APPROVE } else { REJECT };
    let mut details = json!({
        "approval_id": row.id,
        "app": row.app,
        "git_commit": row.git_commit,
        "requested_by": row.requested_by,
        "note": note,
        "deploy_until": approve.then_some(deploy_until),
    });
    if let (Some(slack_user), Some(map)) = (decider.slack_user, details.as_object_mut()) {
        map.insert("via".into(), "slack".into());
        map.insert("slack_user".into(), slack_user.into());
    }
    let event = actor.event(
        EventKind::Gateway,
        &crate::request_id::current(),
        action,
        details,
    );
    state
        .audit
        .record(event)
        .await
        .map_err(|_| ApprovalError::Audit)?;
    let decision = ApprovalDecision {
        approve,
        by: decider.email,
        by_user_id: user_id,
        note,
        now,
        deploy_until,
    };
    match state.store.decide_approval(id, &decision).await? {
        Some(row) => Ok(row),
        // Decided by someone else, or expired, since it was read.
        None => {
            let state_now = match state.store.approval(id).await? {
                Some(row) => row.state(now_ms()).to_string(),
                None => "gone".into(),
            };
            Err(ApprovalError::NotPending {
                id,
                state: state_now,
            })
        }
    }
}
