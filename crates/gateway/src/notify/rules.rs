//! Which audit events become notifications, and what they say.
//!
//! A change made through `identity::manage` is two events with one request id: the intent
//! (what was asked, committed before the change) and its outcome (`"result": "done"` once
//! made). Notices for those come from the outcome, so nobody is told of a change that was
//! refused; the intent supplies what was asked. A deploy decision is recorded before its
//! compare-and-set: its notice waits until the request shows the decision (or is dropped when
//! it never does).

use serde_json::Value;

use super::refusals::Burst;
use super::{Notice, Topic};
use crate::approvals;
use crate::audit::{ActorType, AuditEvent, Decision, EventKind};
use crate::store::{AuditRow, Store, StoreError};

/// How long a network someone signed in from is remembered unseen (then a sign-in from it is
/// news again).
const SIGN_IN_PLACE_KEPT_MS: i64 = 180 * 24 * 3600 * 1000;

/// How long a recorded deploy decision may wait to show in its request before it is taken as
/// never made (the compare-and-set lost to another decision, or the store refused it).
const DECISION_SETTLES_MS: i64 = 60_000;

/// What the rules make of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// These notices (often none).
    Notices(Vec<Notice>),
    /// Not settled yet: look at this event again later (and at none after it).
    NotYet,
}

impl Verdict {
    fn one(notice: Notice) -> Verdict {
        Verdict::Notices(vec![notice])
    }
    fn none() -> Verdict {
        Verdict::Notices(Vec::new())
    }
}

/// The notices for `row`, read at `now`.
pub async fn notices(store: &Store, row: &AuditRow, now: i64) -> Result<Verdict, StoreError> {
    let e = &row.event;
    let d = &e.details;
    if e.rbac_decision == Decision::Deny {
        return Ok(lockout(e).map_or_else(Verdict::none, Verdict::one));
    }
    let action = e.action.as_str();
    Ok(match (e.kind, action) {
        (EventKind::Gateway, approvals::REQUEST) if e.rbac_decision == Decision::Allow => {
            approval_requested(e).map_or_else(Verdict::none, Verdict::one)
        }
        (EventKind::Gateway, approvals::APPROVE | approvals::REJECT)
            if e.rbac_decision == Decision::Allow =>
        {
            approval_decided(store, e, now).await?
        }
        (EventKind::Gateway, "gateway:auth:signin") => new_sign_in_place(store, row)
            .await?
            .map_or_else(Verdict::none, Verdict::one),
        (EventKind::Gateway, "gateway:users:create") if d.get("reason").is_some() => {
            let email = text(d, "email");
            Verdict::one(
                Notice::new(
                    Topic::UserAdded,
                    format!("{email} signed in as the first admin"),
                )
                .fact("Role", "admin")
                .fact("Why", text(d, "reason"))
                .link("Users", "/users")
                .to_slack()
                .alert(),
            )
        }
        (
            EventKind::Gateway,
            "gateway:mfa:enable"
            | "gateway:mfa:disable"
            | "gateway:mfa:backup_codes"
            | "gateway:mfa:add_key"
            | "gateway:mfa:remove_key",
        ) if e.rbac_decision == Decision::Allow => {
            own_mfa_change(e).map_or_else(Verdict::none, Verdict::one)
        }
        (
            EventKind::Gateway,
            crate::audit::SUPPRESSED_ACTION
            | crate::audit::RECOVERED_ACTION
            | crate::audit::KEY_ROTATED_ACTION,
        ) => Verdict::one(audit_trouble(e)),
        (EventKind::Outcome, _) if d.get("result").and_then(Value::as_str) == Some("done") => {
            match managed(action) {
                Some(topic) => {
                    let asked = intent(store, row).await?;
                    managed_change(topic, e, asked.as_ref())
                        .map_or_else(Verdict::none, Verdict::one)
                }
                None => Verdict::none(),
            }
        }
        _ => Verdict::none(),
    })
}

/// The topic of a change made through `identity::manage` that is worth telling.
fn managed(action: &str) -> Option<Topic> {
    Some(match action {
        "gateway:tokens:create" => Topic::TokenCreated,
        "gateway:users:create" => Topic::UserAdded,
        "gateway:users:update" => Topic::RoleChanged,
        "gateway:users:lock" => Topic::UserLocked,
        "gateway:users:unlock" => Topic::UserUnlocked,
        "gateway:mfa:reset" => Topic::MfaChanged,
        "gateway:roles:create" | "gateway:roles:update" | "gateway:roles:delete" => {
            Topic::RoleDefined
        }
        "gateway:app-rules:update" | "gateway:app-rules:delete" => Topic::AppRulesChanged,
        _ => return None,
    })
}

/// The intent recorded before the outcome `row` (same request id and action).
async fn intent(store: &Store, row: &AuditRow) -> Result<Option<AuditEvent>, StoreError> {
    let rows = store.audit_by_request(&row.event.request_id).await?;
    Ok(rows
        .into_iter()
        .filter(|r| r.seq < row.seq)
        .map(|r| r.event)
        .rfind(|e| e.kind == EventKind::Gateway && e.action == row.event.action))
}

/// App rules (as the audit event carries them) in a line: each list that says something.
fn rules_said(rules: Option<&Value>) -> String {
    let Some(rules) = rules.filter(|r| r.is_object()) else {
        return String::new();
    };
    let mut said = Vec::new();
    for (key, label) in [
        ("secret_env", "secret"),
        ("protected_env", "protected"),
        ("approved_commands", "commands"),
    ] {
        let items: Vec<&str> = rules
            .get(key)
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !items.is_empty() {
            said.push(format!("{label}: {}", items.join(", ")));
        }
    }
    if let Some(images) = rules.get("service_images").and_then(Value::as_object)
        && !images.is_empty()
    {
        let images: Vec<String> = images
            .iter()
            .map(|(service, pattern)| format!("{service}={}", pattern.as_str().unwrap_or_default()))
            .collect();
        said.push(format!("images: {}", images.join(", ")));
    }
    said.join("; ")
}

/// A string field of `details` (empty when absent or not a string).
fn text(details: &Value, key: &str) -> String {
    details
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Who acted: a person's e-mail, an API token's name, or the operator at the command line.
pub fn who(e: &AuditEvent) -> String {
    match (e.actor_type, &e.user_email, &e.token_name) {
        (ActorType::Token, _, Some(name)) => format!("API token {name}"),
        (_, Some(email), _) => email.clone(),
        (ActorType::Cli, _, _) => {
            let operator = text(&e.details, "operator");
            if operator.is_empty() {
                "an operator (server command line)".into()
            } else {
                format!("{operator} (server command line)")
            }
        }
        _ => "someone not signed in".into(),
    }
}

/// A deploy request's asker as stored (`token:<name>` or an e-mail), said as [`who`] says it.
fn requester(stored: &str) -> String {
    match stored.strip_prefix("token:") {
        Some(name) => format!("API token {name}"),
        None => stored.to_string(),
    }
}

/// The first 12 characters of a commit id.
fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn approval_requested(e: &AuditEvent) -> Option<Notice> {
    let d = &e.details;
    let id = d.get("approval_id").and_then(Value::as_i64)?;
    let app = text(d, "app");
    let commit = text(d, "git_commit");
    Some(
        Notice::new(
            Topic::ApprovalRequested,
            format!(
                "Deploy of {app} at {} waits for approval (#{id})",
                short(&commit)
            ),
        )
        .fact("Requested by", who(e))
        .fact("Commit", commit)
        .fact("Branch", text(d, "branch"))
        .fact("Message", text(d, "message"))
        .fact("CI", text(d, "ci_url"))
        .link(
            "Review in the gateway",
            format!("/deploy-approvals#request-{id}"),
        )
        .decide(id)
        .to_slack(),
    )
}

async fn approval_decided(store: &Store, e: &AuditEvent, now: i64) -> Result<Verdict, StoreError> {
    let d = &e.details;
    let Some(id) = d.get("approval_id").and_then(Value::as_i64) else {
        return Ok(Verdict::none());
    };
    let approved = e.action == approvals::APPROVE;
    let Some(row) = store.approval(id).await? else {
        return Ok(Verdict::none());
    };
    let shows_it = row.decided_by.is_some()
        && row.decided_by == e.user_email
        && match row.status.as_str() {
            "approved" | "deployed" => approved,
            "rejected" => !approved,
            _ => false,
        };
    if !shows_it {
        // Still pending: the compare-and-set may be on its way. Decided otherwise, or pending
        // long after: this decision was never made.
        let waiting = row.status == "pending" && now.saturating_sub(e.ts) < DECISION_SETTLES_MS;
        return Ok(if waiting {
            Verdict::NotYet
        } else {
            Verdict::none()
        });
    }
    let verb = if approved { "approved" } else { "rejected" };
    let mut notice = Notice::new(
        Topic::ApprovalDecided,
        format!(
            "Deploy of {} at {} {verb} by {} (#{id})",
            row.app,
            short(&row.git_commit),
            who(e)
        ),
    )
    .fact("Requested by", requester(&row.requested_by))
    .fact("Note", row.note.clone().unwrap_or_default());
    if approved {
        notice = notice.fact(
            "Deploy before",
            format!("{} UTC", crate::web::time(row.expires_at)),
        );
    }
    Ok(Verdict::one(
        notice
            .link(
                "Deploy approvals",
                format!("/deploy-approvals#request-{id}"),
            )
            .to_slack(),
    ))
}

/// The notice for a change made through `identity::manage`: `e` its outcome, `intent` the
/// event recorded before it (what was asked, and who asked: an operator is named there).
fn managed_change(topic: Topic, e: &AuditEvent, intent: Option<&AuditEvent>) -> Option<Notice> {
    let by = who(intent.unwrap_or(e));
    let empty = Value::Null;
    let asked = intent.map_or(&empty, |i| &i.details);
    let email = text(asked, "email");
    Some(match topic {
        Topic::TokenCreated => {
            let name = text(asked, "name");
            let owner = text(asked, "owner");
            let access = match asked.get("permissions").and_then(Value::as_array) {
                Some(list) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                None => format!("role {}", text(asked, "role")),
            };
            let expires = asked
                .get("expires_at")
                .and_then(Value::as_i64)
                .map(|at| format!("{} UTC", crate::web::time(at)))
                .unwrap_or_else(|| "never".into());
            let mut n = Notice::new(
                Topic::TokenCreated,
                format!("API token {name} created by {by}"),
            )
            .fact("Access", access)
            .fact("Owner", owner.clone())
            .fact("Expires", expires)
            .link("API tokens", "/tokens")
            .to_slack()
            .alert();
            if !owner.is_empty() {
                n = n.email(owner);
            }
            n
        }
        Topic::UserAdded => Notice::new(Topic::UserAdded, format!("{email} was added by {by}"))
            .fact("Role", text(asked, "role"))
            .link("Sign in", "/")
            .to_slack()
            .email(email),
        Topic::RoleChanged => Notice::new(
            Topic::RoleChanged,
            format!("{email}'s role changed to {} by {by}", text(asked, "role")),
        )
        .fact("Previous role", text(&e.details, "previous_role"))
        .link("Users", "/users")
        .to_slack()
        .alert()
        .email(email),
        Topic::RoleDefined => {
            let role = text(asked, "role");
            let list = |v: Option<&Value>| {
                v.and_then(Value::as_array)
                    .map(|l| {
                        l.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            let (title, now, before) = match e.action.as_str() {
                "gateway:roles:create" => (
                    format!("Role {role} was defined by {by}"),
                    list(asked.get("permissions")),
                    String::new(),
                ),
                "gateway:roles:update" => (
                    format!("Role {role} was changed by {by}"),
                    list(asked.get("permissions")),
                    list(e.details.get("previous_permissions")),
                ),
                _ => (
                    format!("Role {role} was deleted by {by}"),
                    String::new(),
                    list(e.details.get("permissions")),
                ),
            };
            Notice::new(Topic::RoleDefined, title)
                .fact("Grants", now)
                .fact("Granted before", before)
                .link("Roles", "/roles")
                .to_slack()
                .alert()
        }
        Topic::AppRulesChanged => {
            let app = text(asked, "app");
            let (title, now, before) = match e.action.as_str() {
                "gateway:app-rules:update" => (
                    format!("The rules of app {app} were changed by {by}"),
                    asked.get("rules"),
                    e.details.get("previous"),
                ),
                _ => (
                    format!("The rules of app {app} were cleared by {by}"),
                    None,
                    e.details.get("previous"),
                ),
            };
            Notice::new(Topic::AppRulesChanged, title)
                .fact("Rules", rules_said(now))
                .fact("Rules before", rules_said(before))
                .link("App rules", "/app-rules")
                .to_slack()
                .alert()
        }
        Topic::UserLocked => Notice::new(Topic::UserLocked, format!("{email} was locked by {by}"))
            .fact(
                "Sessions ended",
                e.details
                    .get("sessions_revoked_count")
                    .and_then(Value::as_i64)
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
            )
            .link("Users", "/users")
            .to_slack()
            .alert()
            .email(email),
        Topic::UserUnlocked => {
            Notice::new(Topic::UserUnlocked, format!("{email} was unlocked by {by}"))
                .link("Users", "/users")
                .to_slack()
                .email(email)
        }
        Topic::MfaChanged => Notice::new(
            Topic::MfaChanged,
            format!("{email}'s authenticator app was reset by {by}"),
        )
        .fact(
            "What now",
            "their next sign-in needs only the identity provider; they should set up a new app",
        )
        .link("Account security", "/account/mfa")
        .to_slack()
        .alert()
        .email(email),
        _ => return None,
    })
}

/// A person's own change to their second factor: e-mailed to them (and, when it is removed,
/// to the alerts list as well).
fn own_mfa_change(e: &AuditEvent) -> Option<Notice> {
    let email = e.user_email.clone()?;
    let (title, alert) = match e.action.as_str() {
        "gateway:mfa:enable" => (format!("{email} set up an authenticator app"), false),
        "gateway:mfa:disable" => (format!("{email} removed their authenticator app"), true),
        "gateway:mfa:add_key" => (format!("{email} added a security key"), false),
        "gateway:mfa:remove_key" => (format!("{email} removed a security key"), false),
        _ => (format!("{email} made new backup codes"), false),
    };
    let n = Notice::new(Topic::MfaChanged, title);
    let mut n = if e.action.ends_with("_key") {
        n.fact("Key", text(&e.details, "name"))
    } else {
        n.fact("Confirmed with", text(&e.details, "factor"))
    };
    n = n
        .fact("From", e.client_ip.clone().unwrap_or_default())
        .fact(
            "Not you?",
            "tell an admin at once: they can lock the account and end its sessions",
        )
        .link("Account security", "/account/mfa")
        .email(email);
    if alert {
        n = n.alert().to_slack();
    }
    Some(n)
}

/// The network `ip` is in, as a sign-in place: its IPv4 /24 or IPv6 /48 (an address moves
/// within its provider's block from day to day; a new block is a new place).
fn sign_in_place(ip: &str) -> String {
    let v4 = |v4: std::net::Ipv4Addr| {
        let [a, b, c, _] = v4.octets();
        format!("{a}.{b}.{c}.0/24")
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(addr)) => v4(addr),
        Ok(std::net::IpAddr::V6(addr)) => match addr.to_ipv4_mapped() {
            Some(addr) => v4(addr),
            None => {
                let [a, b, c, ..] = addr.segments();
                format!("{a:x}:{b:x}:{c:x}::/48")
            }
        },
        Err(_) => ip.to_string(),
    }
}

/// A sign-in from a network the person has not signed in from before (their first sign-in
/// ever is not news): an e-mail to them, so a stolen identity-provider account shows.
async fn new_sign_in_place(store: &Store, row: &AuditRow) -> Result<Option<Notice>, StoreError> {
    let e = &row.event;
    let (Some(email), Some(ip)) = (e.user_email.as_deref(), e.client_ip.as_deref()) else {
        return Ok(None);
    };
    let place = sign_in_place(ip);
    let new = store
        .note_sign_in_place(email, &place, row.seq, e.ts, SIGN_IN_PLACE_KEPT_MS)
        .await?;
    if !new {
        return Ok(None);
    }
    let to = match text(&e.details, "channel").as_str() {
        "cli" => "the command line (rack-gateway login)",
        _ => "the web",
    };
    Ok(Some(
        Notice::new(
            Topic::NewSignInPlace,
            format!("{email} signed in from a new network"),
        )
        .fact("From", format!("{ip} (network {place})"))
        // The client's own words (its User-Agent): said as such, and short, since whoever
        // signed in chose them.
        .fact(
            "Client (as it says)",
            e.user_agent
                .as_deref()
                .unwrap_or_default()
                .chars()
                .take(100)
                .collect::<String>(),
        )
        .fact("To", to)
        .fact(
            "Not you?",
            "sign out everywhere from your account page and tell an admin at once: someone may \
             have the password to your identity provider account",
        )
        .link("Your account", "/account")
        .email(email),
    ))
}

/// The wrong code that started a lockout (not those refused during it).
fn lockout(e: &AuditEvent) -> Option<Notice> {
    let d = &e.details;
    if d.get("reason").and_then(Value::as_str) != Some("locked_out")
        || d.get("lockout_started").and_then(Value::as_bool) != Some(true)
    {
        return None;
    }
    let email = e.user_email.clone()?;
    let stage = match d.get("stage").and_then(Value::as_str) {
        Some("step_up" | "right_now") => "confirming an action",
        _ if e.action == "gateway:auth:mfa" || e.action == "gateway:auth:signin" => "signing in",
        _ => "changing their authenticator",
    };
    Some(
        Notice::new(
            Topic::MfaLockout,
            format!("Too many wrong codes for {email}: codes are refused for a while"),
        )
        .fact("While", stage)
        .fact("Until", format!("{} UTC", text(d, "until")))
        .fact("From", e.client_ip.clone().unwrap_or_default())
        .fact(
            "Not you?",
            "someone may have the password to your identity provider account: tell an admin",
        )
        .to_slack()
        .alert()
        .email(email),
    )
}

/// The notice for a burst of refusals by one credential: to Slack, `EMAIL_ALERTS_TO` and the
/// person (a token's owner).
pub fn refusal_burst(b: &Burst) -> Notice {
    let who = match (&b.token, &b.email) {
        (Some(name), _) => format!("API token {name}"),
        (None, Some(email)) => email.clone(),
        (None, None) => "someone".into(),
    };
    let over = if b.over_ms < 60_000 {
        "under a minute".to_string()
    } else {
        let minutes = (b.over_ms + 59_999) / 60_000;
        format!("{minutes} minutes")
    };
    let (audit_filter, listed, what_to_do) = match (&b.token, &b.email) {
        (Some(name), _) => (
            format!("token={}", query_value(name)),
            format!(
                "rack-gateway audit --token {} --decision deny --since 1h",
                shell_word(name)
            ),
            format!(
                "if nobody should be using it this way, revoke it (rack-gateway tokens revoke \
                 {}) and look at what it did",
                shell_word(name)
            ),
        ),
        (None, email) => (
            format!("user={}", query_value(email.as_deref().unwrap_or_default())),
            format!(
                "rack-gateway audit --user {} --decision deny --since 1h",
                shell_word(email.as_deref().unwrap_or_default())
            ),
            "if it was not you, end your sessions (Account → Sessions) and tell an admin; \
             admins can lock the account"
                .to_string(),
        ),
    };
    let mut notice = Notice::new(
        Topic::RefusalBurst,
        format!("{who} was refused {} times in {over}", b.count),
    )
    .fact(
        "Owner",
        b.token.as_ref().and(b.email.clone()).unwrap_or_default(),
    )
    .fact("Refused", b.actions.join(", "))
    .fact("From", b.from.join(", "))
    .fact("What to do", what_to_do)
    .fact("All of them", listed)
    .link("Audit log", format!("/audit?decision=deny&{audit_filter}"))
    .to_slack()
    .alert();
    if let Some(email) = &b.email {
        notice = notice.email(email.clone());
    }
    notice
}

/// `value` percent-encoded for a query string.
/// `value` as one word a POSIX shell takes literally, for a command a notice suggests
/// pasting: token names (and an e-mail's local part) may hold `` ` ``, `$`, `;` or spaces,
/// chosen by whoever named the token.
fn shell_word(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "@._+-/:=,%".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\'', "'\\''"))
}

fn query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn audit_trouble(e: &AuditEvent) -> Notice {
    let title = match e.action.as_str() {
        crate::audit::SUPPRESSED_ACTION => {
            "A flood of refused requests: some were counted, not recorded one by one"
        }
        crate::audit::RECOVERED_ACTION => "The audit log could not be written for a while",
        _ => "The audit chain's key was rotated",
    };
    let details = serde_json::to_string(&e.details).unwrap_or_default();
    let details: String = details.chars().take(600).collect();
    Notice::new(Topic::AuditTrouble, title)
        .fact("Recorded by", who(e))
        .fact("Details", details)
        .link("Audit log", "/audit")
        .to_slack()
        .alert()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: EventKind, action: &str, details: Value) -> AuditEvent {
        let mut e = AuditEvent::new(kind, "r1", action).with_details(details);
        e.actor_type = ActorType::User;
        e.user_email = Some("ann@example.com".into());
        e.rbac_decision = Decision::Allow;
        e
    }

    #[test]
    fn names_in_suggested_commands_are_one_literal_shell_word() {
        assert_eq!(shell_word("ci-robot"), "ci-robot");
        assert_eq!(shell_word("ann@example.com"), "ann@example.com");
        assert_eq!(shell_word("`curl x|sh`"), "'`curl x|sh`'");
        assert_eq!(shell_word("$(id); rm -rf ~"), "'$(id); rm -rf ~'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word(""), "''");
        let notice = refusal_burst(&Burst {
            token: Some("`touch /tmp/owned`".into()),
            email: None,
            count: 10,
            over_ms: 60_000,
            actions: vec!["convox:apps:delete".into()],
            from: vec!["203.0.113.7".into()],
        });
        let text = format!("{notice:?}");
        assert!(!text.contains("revoke `touch"), "{text}");
        assert!(text.contains("revoke '`touch /tmp/owned`'"), "{text}");
    }

    #[test]
    fn a_sign_in_place_is_a_network() {
        assert_eq!(sign_in_place("203.0.113.77"), "203.0.113.0/24");
        assert_eq!(sign_in_place("::ffff:203.0.113.9"), "203.0.113.0/24");
        assert_eq!(sign_in_place("2001:db8:1:2::5"), "2001:db8:1::/48");
        assert_eq!(sign_in_place("2001:db8:1:ffff::1"), "2001:db8:1::/48");
        assert_eq!(sign_in_place("not an address"), "not an address");
    }

    #[test]
    fn a_lockout_is_told_once_when_it_starts() {
        let mut e = event(
            EventKind::Gateway,
            "gateway:auth:mfa",
            json!({"reason": "locked_out", "until": "2026-12-05 10:00", "lockout_started": true}),
        );
        e.rbac_decision = Decision::Deny;
        let n = lockout(&e);
        assert!(n.as_ref().is_some_and(|n| n.alert && n.slack), "{n:?}");
        assert_eq!(
            n.map(|n| n.email_to),
            Some(vec!["ann@example.com".to_string()])
        );
        e.details["lockout_started"] = json!(false);
        assert_eq!(lockout(&e), None);
        e.details = json!({"reason": "wrong_code", "failures": 2});
        assert_eq!(lockout(&e), None);
    }

    #[test]
    fn own_second_factor_changes_are_told_to_their_person() {
        let details = json!({"factor": "security_key", "key_id": 3, "name": "Keyring"});
        let added = own_mfa_change(&event(EventKind::Gateway, "gateway:mfa:add_key", details));
        let added = added.unwrap_or_else(|| panic!("no notice"));
        assert_eq!(added.title, "ann@example.com added a security key");
        assert!(
            added.facts.contains(&("Key", "Keyring".to_string())),
            "{added:?}"
        );
        assert_eq!(added.email_to, vec!["ann@example.com".to_string()]);
        assert!(!added.alert && !added.slack);
        let details = json!({"factor": "totp"});
        let off = own_mfa_change(&event(EventKind::Gateway, "gateway:mfa:disable", details));
        let off = off.unwrap_or_else(|| panic!("no notice"));
        assert!(off.alert && off.slack, "removing the app alerts: {off:?}");
        assert!(off.facts.contains(&("Confirmed with", "totp".to_string())));
    }

    #[test]
    fn a_token_is_announced_with_its_access_and_never_its_secret() {
        let asked =
            json!({"name": "ci", "role": "cicd", "owner": "bob@example.com", "expires_at": null});
        let outcome = event(
            EventKind::Outcome,
            "gateway:tokens:create",
            json!({"result": "done", "token_id": 3}),
        );
        let intent = event(EventKind::Gateway, "gateway:tokens:create", asked);
        let n = managed_change(Topic::TokenCreated, &outcome, Some(&intent));
        let n = n.unwrap_or_else(|| Notice::new(Topic::Test, "missing"));
        assert_eq!(n.title, "API token ci created by ann@example.com");
        assert!(n.facts.contains(&("Access", "role cicd".into())));
        assert!(n.facts.contains(&("Expires", "never".into())));
        assert_eq!(n.email_to, vec!["bob@example.com".to_string()]);
        assert!(n.alert && n.slack);
    }

    #[test]
    fn an_app_rules_change_says_what_they_are_now_and_before() {
        let asked = json!({"app": "web", "rules": {
            "secret_env": ["STRIPE_KEY", "AWS_*"], "protected_env": [], "approved_commands": [],
            "service_images": {"web": "ghcr.io/acme/web:{commit}"}}});
        let outcome = event(
            EventKind::Outcome,
            "gateway:app-rules:update",
            json!({"result": "done", "previous": {"secret_env": ["STRIPE_KEY"]}}),
        );
        let intent = event(EventKind::Gateway, "gateway:app-rules:update", asked);
        assert_eq!(
            managed("gateway:app-rules:update"),
            Some(Topic::AppRulesChanged)
        );
        let n = managed_change(Topic::AppRulesChanged, &outcome, Some(&intent));
        let n = n.unwrap_or_else(|| Notice::new(Topic::Test, "missing"));
        assert_eq!(
            n.title,
            "The rules of app web were changed by ann@example.com"
        );
        assert_eq!(
            n.facts,
            vec![
                (
                    "Rules",
                    "secret: STRIPE_KEY, AWS_*; images: web=ghcr.io/acme/web:{commit}".to_string()
                ),
                ("Rules before", "secret: STRIPE_KEY".to_string())
            ]
        );
        assert!(n.alert && n.slack && n.email_to.is_empty());
        let cleared = event(
            EventKind::Outcome,
            "gateway:app-rules:delete",
            json!({"result": "done", "previous": {"protected_env": ["DATABASE_URL"]}}),
        );
        let intent = event(
            EventKind::Gateway,
            "gateway:app-rules:delete",
            json!({"app": "web"}),
        );
        let n = managed_change(Topic::AppRulesChanged, &cleared, Some(&intent));
        let n = n.unwrap_or_else(|| Notice::new(Topic::Test, "missing"));
        assert_eq!(
            n.title,
            "The rules of app web were cleared by ann@example.com"
        );
        assert_eq!(
            n.facts,
            vec![("Rules before", "protected: DATABASE_URL".to_string())]
        );
    }

    #[test]
    fn a_role_change_says_what_it_grants_now_and_before() {
        let asked = json!({"role": "on-call", "permissions": ["convox:apps:list"]});
        let outcome = event(
            EventKind::Outcome,
            "gateway:roles:update",
            json!({"result": "done", "previous_permissions": ["convox:apps:*"], "users": 2}),
        );
        let intent = event(EventKind::Gateway, "gateway:roles:update", asked);
        assert_eq!(managed("gateway:roles:update"), Some(Topic::RoleDefined));
        let n = managed_change(Topic::RoleDefined, &outcome, Some(&intent));
        let n = n.unwrap_or_else(|| Notice::new(Topic::Test, "missing"));
        assert_eq!(n.title, "Role on-call was changed by ann@example.com");
        assert_eq!(
            n.facts,
            vec![
                ("Grants", "convox:apps:list".to_string()),
                ("Granted before", "convox:apps:*".to_string())
            ]
        );
        assert!(n.alert && n.slack && n.email_to.is_empty());
        let deleted = event(
            EventKind::Outcome,
            "gateway:roles:delete",
            json!({"result": "done", "permissions": ["convox:logs:read"]}),
        );
        let intent = event(
            EventKind::Gateway,
            "gateway:roles:delete",
            json!({"role": "x-y"}),
        );
        let n = managed_change(Topic::RoleDefined, &deleted, Some(&intent));
        let n = n.unwrap_or_else(|| Notice::new(Topic::Test, "missing"));
        assert_eq!(n.title, "Role x-y was deleted by ann@example.com");
        assert_eq!(
            n.facts,
            vec![("Granted before", "convox:logs:read".to_string())]
        );
    }

    #[test]
    fn who_names_tokens_people_and_operators() {
        let mut e = event(EventKind::Gateway, "x", json!({"operator": "root"}));
        assert_eq!(who(&e), "ann@example.com");
        e.actor_type = ActorType::Token;
        e.token_name = Some("deploy-bot".into());
        assert_eq!(who(&e), "API token deploy-bot");
        e.actor_type = ActorType::Cli;
        e.user_email = None;
        assert_eq!(who(&e), "root (server command line)");
    }

    #[test]
    fn an_approval_request_links_to_its_row() {
        let e = event(
            EventKind::Gateway,
            approvals::REQUEST,
            json!({"approval_id": 7, "app": "web", "git_commit": "a".repeat(40), "message": "fix", "branch": "main"}),
        );
        let n = approval_requested(&e);
        assert_eq!(
            n.as_ref().map(|n| n.title.as_str()),
            Some("Deploy of web at aaaaaaaaaaaa waits for approval (#7)")
        );
        assert_eq!(
            n.and_then(|n| n.link).map(|l| l.path),
            Some("/deploy-approvals#request-7".to_string())
        );
    }
}
