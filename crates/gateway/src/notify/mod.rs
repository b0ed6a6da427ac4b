//! Notifications: Slack (deploy approval requests and decisions, security events) and e-mail
//! (to the person a change is about, and to `EMAIL_ALERTS_TO` for security events).
//!
//! They are made from the audit trail, not from the code paths that change things: every
//! change worth telling someone about is already an audit event, committed before (or with)
//! the change. A background task ([`worker`]) reads the events past its cursor, turns those
//! the [`rules`] pick into [`Notice`]s, renders them ([`render`]) and queues one row per
//! message in the `notifications` outbox in the same transaction that moves the cursor; then
//! it sends what is due ([`slack`], [`email`]), retrying with backoff. So a notification is
//! never lost to a crash, never made twice by two gateways, and a Slack outage slows nothing
//! but Slack messages. Everything in a message comes from audit events, which are redacted
//! when they are built: no secret can reach a message that is not already kept out of the
//! trail.

pub mod email;
pub mod refusals;
pub mod render;
pub mod rules;
pub mod slack;
pub mod worker;

pub use worker::{Notifier, spawn};

/// What a notification is about (stored as the outbox row's `topic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// CI (or someone) asked for a deploy to be approved.
    ApprovalRequested,
    /// A deploy request was approved or rejected.
    ApprovalDecided,
    /// An API token was created.
    TokenCreated,
    /// A user was added.
    UserAdded,
    /// A user's role changed.
    RoleChanged,
    /// A custom role was defined, changed or deleted.
    RoleDefined,
    /// An app's rules (secret or protected env vars, approved commands, images) were set or
    /// cleared.
    AppRulesChanged,
    /// A user was locked out by an admin.
    UserLocked,
    /// A user was unlocked.
    UserUnlocked,
    /// Someone's second factor was set up, removed, reset, or given new backup codes.
    MfaChanged,
    /// Too many wrong codes: someone's codes are refused for a while.
    MfaLockout,
    /// Someone signed in from a network new to them.
    NewSignInPlace,
    /// One credential was refused again and again in a few minutes.
    RefusalBurst,
    /// The audit trail itself needs attention (suppressed events, a recovery, a key rotation).
    AuditTrouble,
    /// An operator's test (`rack-gateway-server notify test`).
    Test,
}

impl Topic {
    /// Every topic but [`Topic::Test`]: those `NOTIFY_OFF` may turn off.
    pub const ALL: [Topic; 14] = [
        Topic::ApprovalRequested,
        Topic::ApprovalDecided,
        Topic::TokenCreated,
        Topic::UserAdded,
        Topic::RoleChanged,
        Topic::RoleDefined,
        Topic::AppRulesChanged,
        Topic::UserLocked,
        Topic::UserUnlocked,
        Topic::MfaChanged,
        Topic::MfaLockout,
        Topic::NewSignInPlace,
        Topic::RefusalBurst,
        Topic::AuditTrouble,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::ApprovalRequested => "approval_requested",
            Topic::ApprovalDecided => "approval_decided",
            Topic::TokenCreated => "token_created",
            Topic::UserAdded => "user_added",
            Topic::RoleChanged => "role_changed",
            Topic::RoleDefined => "role_defined",
            Topic::AppRulesChanged => "app_rules_changed",
            Topic::UserLocked => "user_locked",
            Topic::UserUnlocked => "user_unlocked",
            Topic::MfaChanged => "mfa_changed",
            Topic::MfaLockout => "mfa_lockout",
            Topic::NewSignInPlace => "new_sign_in_place",
            Topic::RefusalBurst => "refusal_burst",
            Topic::AuditTrouble => "audit_trouble",
            Topic::Test => "test",
        }
    }
}

/// A link into the gateway's web UI (made absolute with `PUBLIC_URL`; left out without it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The button's or line's label.
    pub label: &'static str,
    /// The path, e.g. `/deploy-approvals`.
    pub path: String,
}

/// Something to tell people, before it is rendered for a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What it is about.
    pub topic: Topic,
    /// One line saying what happened.
    pub title: String,
    /// Labelled facts, in order (values are shown as text, never as markup).
    pub facts: Vec<(&'static str, String)>,
    /// Where to act on it or read more.
    pub link: Option<Link>,
    /// The deploy request it asks a decision on: Slack shows Approve and Reject buttons for it
    /// when approving from Slack is on.
    pub decide: Option<i64>,
    /// Posted to Slack.
    pub slack: bool,
    /// E-mailed to these people (those it is about).
    pub email_to: Vec<String>,
    /// Also e-mailed to `EMAIL_ALERTS_TO`.
    pub alert: bool,
}

impl Notice {
    /// A notice of `topic` with `title`, going nowhere yet.
    pub fn new(topic: Topic, title: impl Into<String>) -> Notice {
        Notice {
            topic,
            title: title.into(),
            facts: Vec::new(),
            link: None,
            decide: None,
            slack: false,
            email_to: Vec::new(),
            alert: false,
        }
    }

    /// With one more fact (left out when `value` is empty).
    pub fn fact(mut self, label: &'static str, value: impl Into<String>) -> Notice {
        let value = value.into();
        if !value.trim().is_empty() {
            self.facts.push((label, value));
        }
        self
    }

    /// With a link to `path` in the web UI.
    pub fn link(mut self, label: &'static str, path: impl Into<String>) -> Notice {
        self.link = Some(Link {
            label,
            path: path.into(),
        });
        self
    }

    /// Offers Approve and Reject buttons for deploy request `id` in Slack (when it is on).
    pub fn decide(mut self, id: i64) -> Notice {
        self.decide = Some(id);
        self
    }

    /// Posted to Slack too.
    pub fn to_slack(mut self) -> Notice {
        self.slack = true;
        self
    }

    /// E-mailed to `address` too.
    pub fn email(mut self, address: impl Into<String>) -> Notice {
        self.email_to.push(address.into());
        self
    }

    /// E-mailed to `EMAIL_ALERTS_TO` too.
    pub fn alert(mut self) -> Notice {
        self.alert = true;
        self
    }
}

/// What became of one attempt to send a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted by Slack or the SMTP server.
    Sent,
    /// Failed for now: try again (no earlier than `after_secs`, when the service said).
    Retry {
        /// Why (never holding a secret).
        error: String,
        /// What the service asked for (`Retry-After`).
        after_secs: Option<u64>,
    },
    /// Refused for good (a revoked webhook, an address the server will not take).
    Failed {
        /// Why (never holding a secret).
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::Topic;

    #[test]
    fn every_topic_but_the_test_may_be_turned_off_by_its_name() {
        let names: Vec<&str> = Topic::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, gateway_core::config::NOTIFY_TOPICS);
        assert!(!names.contains(&Topic::Test.as_str()));
    }
}
