//! Deciding deploy requests from Slack. With a Slack app configured (`SLACK_SIGNING_SECRET`,
//! `SLACK_BOT_TOKEN`), a deploy request's message carries Approve and Reject buttons. A press
//! comes to [`interactions`] signed by Slack; the gateway asks Slack who pressed it
//! (`users.info`), takes them as the gateway person with the same e-mail, and — when that
//! person may approve, did not ask for the deploy, and has an authenticator app — opens a
//! dialog asking for a code. The submitted dialog is checked again from the start (who, what,
//! the code, counted towards the lockout as anywhere else) before the decision is made
//! through [`approvals::decide_as`], audited like one made on a page, with the Slack user.
//!
//! People without an authenticator app decide on the web page instead: a Slack account alone
//! never lets a deploy through.

pub mod modal;
pub mod signature;
pub mod web_api;

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{AppState, Peer};
use crate::approvals::{self, ApprovalError, Decider};
use crate::audit::{ActorType, AuditEvent, Decision, EventKind};
use crate::identity::manage::Actor;
use crate::mfa::{self, CodeCheck, MfaError};
use crate::notify::render::slack_text;
use crate::rbac::PermissionSet;
use crate::store::{ApprovalRow, UserRow, now_ms};
use crate::web::time;

pub use web_api::{SlackApi, SlackApiError, SlackPerson};

/// Where Slack sends button presses and dialog submissions (the app's "Request URL").
pub const INTERACTIONS_PATH: &str = "/api/v1/slack/interactions";
/// The Approve button's `action_id`.
pub const APPROVE_ACTION: &str = "rgw_approve";
/// The Reject button's `action_id`.
pub const REJECT_ACTION: &str = "rgw_reject";
/// The code dialog's `callback_id`.
const CALLBACK_ID: &str = "rgw_decide";
/// The audit action of a request to [`INTERACTIONS_PATH`] refused for not being Slack's.
pub const REFUSED_ACTION: &str = "gateway:slack:authenticate";

/// Largest request taken (Slack's payloads are a few KiB).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a request to [`INTERACTIONS_PATH`] is refused before anything in it is looked at.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// No Slack app is configured.
    #[error(
        "approving from Slack is off: set SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN (see \
         \"Approving from Slack\" in docs/deployment.md)"
    )]
    Off,
    /// Larger than any payload Slack sends.
    #[error("the request is larger than Slack sends")]
    TooLarge,
    /// Not signed by Slack for this app, or too old.
    #[error("not a request from Slack: {0}")]
    Unsigned(#[from] signature::SignatureError),
    /// Signed, but not a payload this endpoint reads.
    #[error("not an interaction payload: {0}")]
    Malformed(&'static str),
}

impl IntoResponse for SlackError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            SlackError::Off => (StatusCode::NOT_FOUND, "slack_off"),
            SlackError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            SlackError::Unsigned(_) => (StatusCode::UNAUTHORIZED, "slack_signature"),
            SlackError::Malformed(_) => (StatusCode::BAD_REQUEST, "bad_payload"),
        };
        let body = json!({ "error": self.to_string(), "code": code });
        (
            status,
            [(http::header::CACHE_CONTROL, "no-store")],
            Json(body),
        )
            .into_response()
    }
}

/// An interaction payload (the fields read; Slack sends many more).
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum Payload {
    #[serde(rename = "block_actions")]
    Pressed(Pressed),
    #[serde(rename = "view_submission")]
    Submitted(Submitted),
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct SlackUser {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Pressed {
    user: SlackUser,
    trigger_id: String,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    actions: Vec<PressedAction>,
}

#[derive(Debug, Deserialize)]
struct PressedAction {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Submitted {
    user: SlackUser,
    view: SubmittedView,
}

#[derive(Debug, Deserialize)]
struct SubmittedView {
    #[serde(default)]
    callback_id: String,
    #[serde(default)]
    private_metadata: String,
    state: ViewState,
}

#[derive(Debug, Deserialize)]
struct ViewState {
    values: HashMap<String, HashMap<String, FieldValue>>,
}

#[derive(Debug, Deserialize)]
struct FieldValue {
    #[serde(default)]
    value: Option<String>,
}

impl ViewState {
    fn field(&self, id: &str) -> Option<&str> {
        self.values.get(id)?.get(id)?.value.as_deref()
    }
}

/// Who and where a request came from, for its audit events.
struct Came<'a> {
    peer: Peer,
    headers: &'a HeaderMap,
    slack_user: &'a str,
}

impl Came<'_> {
    /// An event of `action` by `person` (when known) from this request.
    fn event(&self, action: &str, person: Option<&UserRow>, details: Value) -> AuditEvent {
        let mut e = AuditEvent::new(EventKind::Gateway, crate::request_id::current(), action);
        e.actor_type = if person.is_some() {
            ActorType::User
        } else {
            ActorType::Anonymous
        };
        e.user_email = person.map(|p| p.email.clone());
        e.client_ip = Some(self.peer.ip.to_string());
        e.user_agent = crate::audit::audited_user_agent(self.headers);
        e.method = Some("POST".into());
        e.path = Some(INTERACTIONS_PATH.into());
        let mut details = details;
        if let Some(map) = details.as_object_mut() {
            map.insert("via".into(), "slack".into());
            // Not known for a request refused for its signature.
            if !self.slack_user.is_empty() {
                map.insert("slack_user".into(), self.slack_user.into());
            }
        }
        e.with_details(details)
    }

    /// Audits `person`'s (or an unknown Slack user's) refused `action` on request `id`.
    async fn refused(
        &self,
        state: &AppState,
        action: &str,
        person: Option<&UserRow>,
        id: i64,
        reason: &str,
        more: Value,
    ) {
        let mut details = json!({ "approval_id": id, "reason": reason });
        if let (Some(map), Value::Object(more)) = (details.as_object_mut(), more) {
            map.extend(more);
        }
        let mut e = self.event(action, person, details);
        e.rbac_decision = Decision::Deny;
        e.status = Some(403);
        if let Err(err) = state.audit.record(e).await {
            tracing::error!(error = %err, "could not audit a refusal from Slack");
        }
    }
}

/// A gateway person who may decide from Slack: their row and what their role lets them do.
struct Approver {
    user: UserRow,
    holds: PermissionSet,
}

/// `POST /api/v1/slack/interactions`: a button press or a dialog submission from Slack.
pub async fn interactions(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match interaction(&state, peer, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn interaction(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, SlackError> {
    let Some(slack) = state.slack.clone() else {
        return Err(SlackError::Off);
    };
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                SlackError::TooLarge
            } else {
                SlackError::Malformed("the body could not be read")
            }
        })?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = signature::verify(
        slack.signing_secret(),
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        &body,
        now_ms() / 1000,
    );
    if let Err(e) = signed {
        audit_unsigned(state, peer, headers, e).await;
        return Err(e.into());
    }
    let payload = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or(SlackError::Malformed("no payload field"))?;
    let payload: Payload =
        serde_json::from_str(&payload).map_err(|_| SlackError::Malformed("unreadable JSON"))?;
    match payload {
        Payload::Pressed(p) => pressed(state, &slack, peer, headers, p).await,
        Payload::Submitted(s) => submitted(state, &slack, peer, headers, s).await,
        // Dialogs closed, and anything else Slack sends the app: nothing to do.
        Payload::Other => Ok(StatusCode::OK.into_response()),
    }
}

/// Requests refused for their signature are logged at most once a second (a flood of them is
/// one line a second, with how many were held back).
static UNSIGNED: crate::log_throttle::Throttle = crate::log_throttle::Throttle::new(1000);

/// Audits a request refused for its signature, within the budget of refusals audited one by
/// one per address (a flood is summarised, not written row by row).
async fn audit_unsigned(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    e: signature::SignatureError,
) {
    if let Some(held_back) = UNSIGNED.admit() {
        tracing::warn!(client_ip = %peer.ip, reason = e.reason(), held_back, "refused a request to the Slack endpoint: not signed by Slack");
    }
    if !state.refusals.admit(peer.ip, std::time::Instant::now()) {
        return;
    }
    let came = Came {
        peer,
        headers,
        slack_user: "",
    };
    let mut event = came.event(REFUSED_ACTION, None, json!({ "reason": e.reason() }));
    event.rbac_decision = Decision::Deny;
    event.status = Some(401);
    if let Err(err) = state.audit.record(event).await {
        tracing::error!(error = %err, "could not audit a refused Slack request");
    }
}

/// A Slack user id as Slack writes them (`U…` or `W…`, letters and digits).
fn slack_user_id(id: &str) -> Result<&str, SlackError> {
    let ok = (2..=32).contains(&id.len())
        && id.starts_with(['U', 'W'])
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    ok.then_some(id)
        .ok_or(SlackError::Malformed("user.id is not a Slack user id"))
}

/// Approve or Reject pressed on a deploy request's message: the dialog asking for a code, or
/// one saying why this person cannot decide here.
async fn pressed(
    state: &AppState,
    slack: &SlackApi,
    peer: Peer,
    headers: &HeaderMap,
    p: Pressed,
) -> Result<Response, SlackError> {
    let ours = p
        .actions
        .iter()
        .find(|a| a.action_id == APPROVE_ACTION || a.action_id == REJECT_ACTION);
    let Some(action) = ours else {
        return Ok(StatusCode::OK.into_response());
    };
    let approve = action.action_id == APPROVE_ACTION;
    let id = action
        .value
        .as_deref()
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or(SlackError::Malformed(
            "the button's value is not a request number",
        ))?;
    if p.trigger_id.is_empty() || p.trigger_id.len() > 256 {
        return Err(SlackError::Malformed("no trigger_id"));
    }
    let came = Came {
        peer,
        headers,
        slack_user: slack_user_id(&p.user.id)?,
    };
    let message = p.response_url.as_deref().and_then(|u| slack.message_url(u));
    let view = match may_decide(state, slack, &came, id, approve).await {
        Ok((_, row)) => {
            // In whole minutes, rounded up: a window of 90 s is not "1 minute".
            let window = state.config.deploy_approval_window.as_secs().div_ceil(60);
            modal::ask(
                &row,
                approve,
                window,
                message.as_ref().map(url::Url::as_str),
            )
        }
        Err(said) => {
            // Pressed on a request decided (or expired) meanwhile: its message says so now.
            if let (Some(row), Some(url)) = (said.settled, message) {
                settle(slack, url, &row);
            }
            said.view
        }
    };
    if let Err(e) = slack.open_view(&p.trigger_id, &view).await {
        tracing::warn!(error = %e, "could not open a dialog in Slack");
    }
    Ok(StatusCode::OK.into_response())
}

/// The code dialog submitted: the decision made (the dialog then says so), the dialog's
/// fields marked with what to fix, or a dialog saying why nothing was decided.
async fn submitted(
    state: &AppState,
    slack: &SlackApi,
    peer: Peer,
    headers: &HeaderMap,
    s: Submitted,
) -> Result<Response, SlackError> {
    if s.view.callback_id != CALLBACK_ID {
        return Ok(StatusCode::OK.into_response());
    }
    let asked: modal::Asked = serde_json::from_str(&s.view.private_metadata)
        .map_err(|_| SlackError::Malformed("private_metadata is not the gateway's"))?;
    let modal::Asked {
        id,
        approve,
        message,
    } = asked;
    let message = message.as_deref().and_then(|u| slack.message_url(u));
    let action = action_of(approve);
    let came = Came {
        peer,
        headers,
        slack_user: slack_user_id(&s.user.id)?,
    };
    let (who, _) = match may_decide(state, slack, &came, id, approve).await {
        Ok(fit) => fit,
        Err(said) => {
            // Decided elsewhere while the dialog was open: its message says so now.
            if let (Some(row), Some(url)) = (said.settled, message) {
                settle(slack, url, &row);
            }
            return Ok(update(said.view));
        }
    };
    let note = match approvals::check_note(s.view.state.field(modal::NOTE_FIELD)) {
        Ok(note) => note,
        Err(m) => return Ok(field_error(modal::NOTE_FIELD, &m)),
    };
    let code = s.view.state.field(modal::CODE_FIELD).unwrap_or_default();
    if let Err(answer) = code_right(state, &came, &who, id, approve, code).await {
        return Ok(answer);
    }
    let actor = Actor {
        actor_type: ActorType::User,
        email: Some(who.user.email.clone()),
        token_name: None,
        label: who.user.email.clone(),
        client_ip: Some(peer.ip.to_string()),
        user_agent: crate::audit::audited_user_agent(headers),
        decision: Decision::Allow,
        holds: Some(who.holds.clone()),
    };
    let decider = Decider {
        user_id: who.user.id,
        email: &who.user.email,
        slack_user: Some(came.slack_user),
    };
    let decided = approvals::decide_as(state, &actor, &decider, id, approve, note.as_deref());
    let decided = decided.await;
    if let Some(url) = message {
        match &decided {
            Ok(row) => settle(slack, url, row),
            // Another decision got there first, between the check above and this one.
            Err(ApprovalError::NotPending { .. }) => {
                if let Ok(Some(row)) = state.store.approval(id).await {
                    settle(slack, url, &row);
                }
            }
            Err(_) => {}
        }
    }
    let text = match decided {
        Ok(row) if approve => format!(
            "Approved: the deploy of *{}* at `{}` may run until {} UTC.",
            slack_text(&row.app),
            short(&row.git_commit),
            time(row.expires_at)
        ),
        Ok(row) => format!(
            "Rejected: the deploy of *{}* at `{}` will not run.",
            slack_text(&row.app),
            short(&row.git_commit)
        ),
        Err(e) => {
            if let Some(reason) = e.refusal_reason() {
                came.refused(state, action, Some(&who.user), id, reason, json!({}))
                    .await;
            }
            nothing_decided(&e)
        }
    };
    Ok(update(modal::said(approve, &text)))
}

/// Checks the code given in the dialog as anywhere else (counted towards the lockout; wrong
/// ones audited): `Err` is the answer that marks the field.
async fn code_right(
    state: &AppState,
    came: &Came<'_>,
    who: &Approver,
    id: i64,
    approve: bool,
    code: &str,
) -> Result<(), Response> {
    let action = action_of(approve);
    let refusal = match mfa::check_users_code(state, who.user.id, code).await {
        Ok(Some(CodeCheck::Accepted(_))) => return Ok(()),
        Ok(None) => {
            // Removed since the dialog opened.
            came.refused(
                state,
                action,
                Some(&who.user),
                id,
                "no_authenticator_app",
                json!({}),
            )
            .await;
            return Err(update(modal::said(approve, NO_APP)));
        }
        Ok(Some(check)) => match check.refusal() {
            Some(refusal) => refusal,
            None => {
                return Err(field_error(
                    modal::CODE_FIELD,
                    "Enter the six digits your authenticator app shows, a backup code, or a \
                     touch of your YubiKey.",
                ));
            }
        },
        Err(MfaError::Yubico(e)) => {
            tracing::error!(error = %e, "a YubiKey OTP from Slack could not be checked");
            return Err(field_error(
                modal::CODE_FIELD,
                "The YubiKey validation service cannot be reached: use a code from your \
                 authenticator app.",
            ));
        }
        Err(MfaError::Store(e)) => {
            tracing::error!(error = %e, "a code from Slack could not be checked");
            return Err(field_error(
                modal::CODE_FIELD,
                "The code could not be checked (the gateway's database did not answer): try \
                 again.",
            ));
        }
        Err(e) => {
            // The key or the stored secret: trying again will not help, nor will the web
            // page until an admin has looked (the gateway's log says what).
            tracing::error!(error = %e, "a code from Slack could not be checked");
            return Err(field_error(
                modal::CODE_FIELD,
                "The gateway cannot check codes at the moment (its log says why): tell an \
                 admin.",
            ));
        }
    };
    let mut details = refusal.details;
    if let Some(map) = details.as_object_mut() {
        map.insert("stage".into(), "right_now".into());
    }
    came.refused(state, action, Some(&who.user), id, refusal.reason, details)
        .await;
    let said = match refusal.locked_until {
        Some(until) => format!(
            "Too many wrong codes: codes are refused until {} UTC.",
            time(until)
        ),
        None => "That code is not right (or was used already).".into(),
    };
    Err(field_error(modal::CODE_FIELD, &said))
}

const NO_APP: &str = "Deciding from Slack takes a code from your authenticator app, and you \
                      have none on the gateway: set one up under *Your account*, or decide on \
                      the gateway's Deploy approvals page.";

/// Whether the Slack user behind `came` may decide on request `id` here — a gateway person
/// (by e-mail) who holds the permission, has an authenticator app, and did not ask for it,
/// on a request still pending — with the request; else the dialog saying why (audited).
async fn may_decide(
    state: &AppState,
    slack: &SlackApi,
    came: &Came<'_>,
    id: i64,
    approve: bool,
) -> Result<(Approver, ApprovalRow), Said> {
    let action = action_of(approve);
    let said = |text: &str| Said {
        view: modal::said(approve, text),
        settled: None,
    };
    let who = match person(state, slack, came.slack_user).await {
        Ok(who) => who,
        Err(unfit) => {
            let person = match &unfit {
                Unfit::Locked(user) | Unfit::Forbidden(user) | Unfit::NoApp(user) => Some(user),
                _ => None,
            };
            let more = match &unfit {
                Unfit::NotAGatewayUser(email) => json!({ "slack_email": email }),
                _ => json!({}),
            };
            if !matches!(unfit, Unfit::Trouble(_)) {
                came.refused(state, action, person, id, unfit.reason(), more)
                    .await;
            }
            return Err(said(&unfit.explain()));
        }
    };
    let row = match state.store.approval(id).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            came.refused(state, action, Some(&who.user), id, "not_found", json!({}))
                .await;
            return Err(said(&format!("There is no deploy request #{id}.")));
        }
        Err(e) => {
            tracing::error!(error = %e, "a deploy request could not be read for Slack");
            return Err(said(
                "The gateway's database did not answer: try again in a moment.",
            ));
        }
    };
    let refusal = if row.requested_by_user_id == Some(who.user.id) {
        Some(ApprovalError::OwnRequest)
    } else if row.state(now_ms()) != "pending" {
        Some(ApprovalError::NotPending {
            id,
            state: row.state(now_ms()).to_string(),
        })
    } else {
        None
    };
    if let Some(e) = refusal {
        let reason = e.refusal_reason().unwrap_or("refused");
        came.refused(state, action, Some(&who.user), id, reason, json!({}))
            .await;
        let settled = matches!(e, ApprovalError::NotPending { .. }).then_some(row);
        return Err(Said {
            settled,
            ..said(&nothing_decided(&e))
        });
    }
    Ok((who, row))
}

/// Why nothing can be decided here: the dialog that says so, and the request when it is no
/// longer pending (its message can say what became of it).
struct Said {
    view: Value,
    settled: Option<ApprovalRow>,
}

/// Replaces the message a button was pressed on with what became of `row`, in the background
/// (the dialog's answer does not wait for it; a failure is only logged).
fn settle(slack: &SlackApi, url: url::Url, row: &ApprovalRow) {
    let message = modal::settled(row, now_ms());
    let slack = slack.clone();
    tokio::spawn(async move {
        if let Err(e) = slack.replace_message(url, &message).await {
            tracing::warn!(error = %e, "could not update a deploy request's message in Slack");
        }
    });
}

/// Why a Slack user cannot decide from Slack.
enum Unfit {
    /// Slack or the store did not answer (not audited: nobody was refused).
    Trouble(String),
    /// Slack shows no e-mail (the app lacks `users:read.email`).
    NoEmail,
    /// A deactivated account, an app's bot, a guest, or someone from another workspace
    /// (Slack Connect).
    NotAMember(&'static str),
    /// Nobody on the gateway has their e-mail.
    NotAGatewayUser(String),
    /// Their gateway account is locked.
    Locked(UserRow),
    /// Their role may not approve.
    Forbidden(UserRow),
    /// They have no authenticator app.
    NoApp(UserRow),
}

impl Unfit {
    fn reason(&self) -> &'static str {
        match self {
            Unfit::Trouble(_) => "unavailable",
            Unfit::NoEmail => "no_slack_email",
            Unfit::NotAMember(why) => why,
            Unfit::NotAGatewayUser(_) => "not_a_gateway_user",
            Unfit::Locked(_) => "user_locked",
            Unfit::Forbidden(_) => "forbidden",
            Unfit::NoApp(_) => "no_authenticator_app",
        }
    }

    fn explain(&self) -> String {
        match self {
            Unfit::Trouble(what) => format!("{what}: try again in a moment."),
            Unfit::NoEmail => "Slack does not show the gateway your e-mail address, so it \
                               cannot tell who you are. (Its Slack app needs the \
                               `users:read.email` scope.)"
                .into(),
            Unfit::NotAMember(_) => "Only full members of this Slack workspace can decide on \
                                     deploys here."
                .into(),
            Unfit::NotAGatewayUser(email) => format!(
                "Nobody on the gateway has your Slack e-mail address ({}): ask an admin to add \
                 you, or decide on the gateway's Deploy approvals page.",
                slack_text(email)
            ),
            Unfit::Locked(_) => "Your gateway account is locked.".into(),
            Unfit::Forbidden(user) => format!(
                "Your role ({}) may not approve or reject deploys.",
                slack_text(&user.role)
            ),
            Unfit::NoApp(_) => NO_APP.into(),
        }
    }
}

/// The gateway person Slack user `slack_user` is, when they may decide from Slack.
async fn person(state: &AppState, slack: &SlackApi, slack_user: &str) -> Result<Approver, Unfit> {
    let member = match slack.person(slack_user).await {
        Ok(member) => member,
        Err(e) => {
            tracing::warn!(error = %e, "could not ask Slack who pressed a button");
            return Err(Unfit::Trouble("Slack did not say who you are".into()));
        }
    };
    if member.deleted {
        return Err(Unfit::NotAMember("slack_user_deactivated"));
    }
    if member.bot {
        return Err(Unfit::NotAMember("slack_bot"));
    }
    if member.guest {
        return Err(Unfit::NotAMember("slack_guest"));
    }
    match slack.workspace().await {
        Ok(workspace) if workspace.has(&member) => {}
        Ok(_) => return Err(Unfit::NotAMember("slack_other_workspace")),
        Err(e) => {
            tracing::warn!(error = %e, "could not ask Slack which workspace the app is in");
            return Err(Unfit::Trouble(
                "Slack did not say which workspace this is".into(),
            ));
        }
    }
    let Some(email) = member.email else {
        return Err(Unfit::NoEmail);
    };
    let trouble = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "a person deciding from Slack could not be looked up");
        Unfit::Trouble("The gateway's database did not answer".into())
    };
    let user = match state.store.find_user(&email).await {
        Ok(Some(user)) => user,
        Ok(None) => return Err(Unfit::NotAGatewayUser(email)),
        Err(e) => return Err(trouble(&e)),
    };
    if user.locked {
        return Err(Unfit::Locked(user));
    }
    let holds = match crate::identity::roles::permissions_of(&state.store, &user.role).await {
        Ok(Some(holds)) if holds.allows(approvals::APPROVE) => holds,
        Ok(_) => return Err(Unfit::Forbidden(user)),
        Err(e) => return Err(trouble(&e)),
    };
    match mfa::required(&state.store, user.id).await {
        Ok(Some(_)) => Ok(Approver { user, holds }),
        Ok(None) => Err(Unfit::NoApp(user)),
        Err(e) => Err(trouble(&e)),
    }
}

/// What the dialog says when nothing was decided.
fn nothing_decided(e: &ApprovalError) -> String {
    match e {
        ApprovalError::OwnRequest => "You asked for this deploy (or a token acting for you \
                                      did): another person must decide on it."
            .into(),
        ApprovalError::NotPending { id, state } => {
            format!("Deploy request #{id} is {state}: nothing was changed.")
        }
        ApprovalError::NotFound(id) => format!("There is no deploy request #{id}."),
        ApprovalError::Audit => {
            "Nothing was decided: the audit trail could not record it. Try again in a moment."
                .into()
        }
        e => {
            tracing::error!(error = %e, "a decision from Slack failed");
            "Nothing was decided: the gateway's database did not answer. Try again in a moment."
                .into()
        }
    }
}

fn action_of(approve: bool) -> &'static str {
    if approve {
        approvals::APPROVE
    } else {
        approvals::REJECT
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// The answer that replaces the submitted dialog with `view`.
fn update(view: Value) -> Response {
    Json(json!({ "response_action": "update", "view": view })).into_response()
}

/// The answer that keeps the dialog open with `message` under field `field`.
fn field_error(field: &str, message: &str) -> Response {
    Json(json!({ "response_action": "errors", "errors": { field: message } })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_user_ids_are_letters_and_digits() {
        assert!(slack_user_id("U024BE7LH").is_ok());
        assert!(slack_user_id("W012A3CDE").is_ok());
        for bad in [
            "",
            "U",
            "u024be7lh",
            "B024BE7LH",
            "U024BE7LH&x=1",
            "U../../x",
        ] {
            assert!(slack_user_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payloads_are_read_by_their_type() {
        let pressed = json!({
            "type": "block_actions",
            "user": { "id": "U1", "team_id": "T1" },
            "trigger_id": "1.2.abc",
            "actions": [{ "action_id": APPROVE_ACTION, "value": "5", "type": "button" }],
            "response_url": "https://hooks.slack.com/actions/x",
        });
        assert!(matches!(
            serde_json::from_value::<Payload>(pressed),
            Ok(Payload::Pressed(p)) if p.actions[0].value.as_deref() == Some("5")
        ));
        let closed = json!({ "type": "view_closed", "user": { "id": "U1" } });
        assert!(matches!(
            serde_json::from_value::<Payload>(closed),
            Ok(Payload::Other)
        ));
        let submitted = json!({
            "type": "view_submission",
            "user": { "id": "U1" },
            "view": {
                "callback_id": CALLBACK_ID,
                "private_metadata": "{\"id\":5,\"approve\":false}",
                "state": { "values": {
                    "code": { "code": { "type": "plain_text_input", "value": "123456" } },
                    "note": { "note": { "type": "plain_text_input", "value": null } },
                } },
            },
        });
        let Ok(Payload::Submitted(s)) = serde_json::from_value::<Payload>(submitted) else {
            panic!("not read");
        };
        assert_eq!(s.view.state.field("code"), Some("123456"));
        assert_eq!(s.view.state.field("note"), None);
    }
}
