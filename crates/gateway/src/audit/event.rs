//! The audit event model shared by proxied calls and gateway actions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A proxied request, written before it is forwarded (or when it is refused).
    Request,
    /// The outcome of a request, linked by request id.
    Outcome,
    /// A gateway action (token or user change, sign-in, …).
    Gateway,
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    /// A signed-in user.
    User,
    /// An API token.
    Token,
    /// Nobody identified (missing or bad credentials).
    Anonymous,
    /// An operator at the server's command line.
    Cli,
}

/// The RBAC decision for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Refused (authentication, authorisation or input).
    Deny,
    /// No decision applies (outcomes, operator actions).
    None,
}

macro_rules! str_enum {
    ($ty:ty { $($variant:ident => $s:literal),+ $(,)? }) => {
        impl $ty {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }
        }
        impl FromStr for $ty {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($s => Ok(Self::$variant),)+ _ => Err(()) }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(EventKind { Request => "request", Outcome => "outcome", Gateway => "gateway" });
str_enum!(ActorType { User => "user", Token => "token", Anonymous => "anonymous", Cli => "cli" });
str_enum!(Decision { Allow => "allow", Deny => "deny", None => "none" });

/// One audit event. Every field is already redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened (unix ms).
    pub ts: i64,
    /// The gateway's request id (shared by a request and its outcome).
    pub request_id: String,
    /// Request, outcome or gateway action.
    pub kind: EventKind,
    /// Who acted.
    pub actor_type: ActorType,
    /// The user's e-mail (or a token owner's).
    pub user_email: Option<String>,
    /// The API token's name, when a token was used.
    pub token_name: Option<String>,
    /// HTTP method.
    pub method: Option<String>,
    /// Path as forwarded (query redacted).
    pub path: Option<String>,
    /// The permission or gateway action, e.g. `convox:apps:list`, `gateway:tokens:create`.
    pub action: String,
    /// RBAC decision.
    pub rbac_decision: Decision,
    /// HTTP status (outcomes and refusals).
    pub status: Option<i64>,
    /// Time from arrival to the end of the response (outcomes).
    pub latency_ms: Option<i64>,
    /// The client's address.
    pub client_ip: Option<String>,
    /// The client's User-Agent.
    pub user_agent: Option<String>,
    /// Anything else, as redacted JSON.
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// A new event with the common fields; the rest start empty.
    pub fn new(kind: EventKind, request_id: impl Into<String>, action: impl Into<String>) -> Self {
        AuditEvent {
            ts: crate::store::now_ms(),
            request_id: request_id.into(),
            kind,
            actor_type: ActorType::Anonymous,
            user_email: None,
            token_name: None,
            method: None,
            path: None,
            action: action.into(),
            rbac_decision: Decision::None,
            status: None,
            latency_ms: None,
            client_ip: None,
            user_agent: None,
            details: serde_json::Value::Object(Default::default()),
        }
    }

    /// Sets `details`, redacting it first, then making every string in it plain to read
    /// ([`shown_plainly`]).
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        let mut details = super::redact::redact_json(details);
        shown_plainly(&mut details);
        self.details = details;
        self
    }

    /// The canonical bytes the chain commits to: a version tag, then every field in a fixed
    /// order, each length-prefixed (so field boundaries cannot shift).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        self.canonical_bytes_with(&self.details.to_string())
    }

    /// [`AuditEvent::canonical_bytes`] with the details already written as JSON text (what
    /// the store keeps), so a batch serialises them once.
    pub fn canonical_bytes_with(&self, details: &str) -> Vec<u8> {
        fn put(out: &mut Vec<u8>, field: Option<&[u8]>) {
            match field {
                None => out.push(0),
                Some(bytes) => {
                    out.push(1);
                    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
                    out.extend_from_slice(bytes);
                }
            }
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"rack-gateway-audit-v1");
        let ts = self.ts.to_be_bytes();
        let status = self.status.map(i64::to_be_bytes);
        let latency = self.latency_ms.map(i64::to_be_bytes);
        put(&mut out, Some(&ts));
        put(&mut out, Some(self.request_id.as_bytes()));
        put(&mut out, Some(self.kind.as_str().as_bytes()));
        put(&mut out, Some(self.actor_type.as_str().as_bytes()));
        put(&mut out, self.user_email.as_deref().map(str::as_bytes));
        put(&mut out, self.token_name.as_deref().map(str::as_bytes));
        put(&mut out, self.method.as_deref().map(str::as_bytes));
        put(&mut out, self.path.as_deref().map(str::as_bytes));
        put(&mut out, Some(self.action.as_bytes()));
        put(&mut out, Some(self.rbac_decision.as_str().as_bytes()));
        put(&mut out, status.as_ref().map(|b| &b[..]));
        put(&mut out, latency.as_ref().map(|b| &b[..]));
        put(&mut out, self.client_ip.as_deref().map(str::as_bytes));
        put(&mut out, self.user_agent.as_deref().map(str::as_bytes));
        // serde_json writes object keys in sorted order (no preserve_order), so the text is
        // stable.
        put(&mut out, Some(details.as_bytes()));
        out
    }
}

/// Longest path (with query) an audit event keeps. Longer ones are clipped, with the number of
/// bytes left out: rack and gateway paths are far shorter, and refusals are audited too, so
/// without it a caller with no credentials could write a 64 KiB row per request.
pub const MAX_AUDITED_PATH: usize = 2048;

/// `path` as an audit event records it: gateway tokens in it masked (a token pasted into a
/// URL must not stay in a trail nobody can edit), then cut at [`MAX_AUDITED_PATH`] bytes.
pub fn audited_path(path: String) -> String {
    gateway_core::redact::clip(gateway_core::redact::redact_tokens(path), MAX_AUDITED_PATH)
}

/// Longest user agent an audit event keeps, in characters (cut without a marker).
pub const MAX_AUDITED_USER_AGENT: usize = 256;

/// Longest method an audit event keeps, in bytes (methods are ASCII tokens; cut without a
/// marker).
pub const MAX_AUDITED_METHOD: usize = 32;

/// The caller's `User-Agent` as an audit event (and a session's device) records it: at most
/// [`MAX_AUDITED_USER_AGENT`] characters. Bytes that are not UTF-8, and characters that hide or reorder text
/// ([`gateway_core::text::is_hidden`]: a right-to-left override would make the trail and the
/// account page show another agent), become U+FFFD rather than dropping the whole value: a
/// hostile client must not be able to erase its own user agent with one stray byte.
pub fn audited_user_agent(headers: &http::HeaderMap) -> Option<String> {
    headers.get(http::header::USER_AGENT).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(MAX_AUDITED_USER_AGENT)
            .map(gateway_core::text::shown)
            .collect()
    })
}

/// Details quote text from outside — a refused `return_to`, an identity provider's error, a
/// command — often from callers who have not signed in. Characters that hide or reorder text
/// ([`gateway_core::text::is_hidden`]: terminal escapes, carriage returns, bidirectional
/// overrides) become U+FFFD in every string and key, as in the user agent, so the trail reads
/// as what was sent. Line feeds and tabs stay: JSON escapes them, and multi-line values (an
/// env form, a command) keep their shape.
fn shown_plainly(value: &mut serde_json::Value) {
    fn plain(text: &str) -> Option<String> {
        match gateway_core::text::readable(text) {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(plain) => Some(plain),
        }
    }
    match value {
        serde_json::Value::String(s) => {
            if let Some(p) = plain(s) {
                *s = p;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(shown_plainly),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| plain(k).is_some()) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (plain(&k).unwrap_or(k), v))
                    .collect();
            }
            map.values_mut().for_each(shown_plainly);
        }
        _ => {}
    }
}

/// A new request id: a UUID v7, so ids sort by time and each new one lands at the end of the
/// audit table's `request_id` index (a random v4 id dirties a random index page per event,
/// which every commit then writes to the WAL).
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_show_hidden_characters_plainly() {
        let e = AuditEvent::new(EventKind::Gateway, "r".to_string(), "a").with_details(
            serde_json::json!({
                "return_to": "https://x\u{1b}[2J\u{202e}gro.live\r\n",
                "list": ["a\u{200b}b"],
                "env": {"K\u{202e}EY": "v"},
                "command": "sh -c 'a\n\tb'",
            }),
        );
        assert_eq!(
            e.details,
            serde_json::json!({
                "return_to": "https://x\u{fffd}[2J\u{fffd}gro.live\u{fffd}\n",
                "list": ["a\u{fffd}b"],
                "env": {"K\u{fffd}EY": "[redacted]"},
                "command": "sh -c 'a\n\tb'",
            })
        );
    }

    #[test]
    fn tokens_in_an_audited_path_are_masked() {
        let token = format!("rgw_{}", "A".repeat(43));
        assert_eq!(
            audited_path(format!("/apps/{token}/x")),
            "/apps/[redacted]/x"
        );
        let long = format!("/apps/{}{token}", "a".repeat(MAX_AUDITED_PATH - 20));
        assert!(
            !audited_path(long).contains("AAAAAAAAAAAAAAAA"),
            "masked before it is cut"
        );
    }

    #[test]
    fn a_user_agent_that_is_not_ascii_is_kept() {
        let ua = |bytes: &[u8]| {
            let mut h = http::HeaderMap::new();
            h.insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_bytes(bytes).unwrap_or_else(|e| panic!("{e}")),
            );
            audited_user_agent(&h)
        };
        assert_eq!(ua(b"convox/3.19").as_deref(), Some("convox/3.19"));
        assert_eq!(
            ua("curl/8 – café".as_bytes()).as_deref(),
            Some("curl/8 – café")
        );
        assert_eq!(
            ua(b"evil\xff\xfe/1").as_deref(),
            Some("evil\u{fffd}\u{fffd}/1")
        );
        assert_eq!(
            ua("abc\u{202E}fed\tx".as_bytes()).as_deref(),
            Some("abc\u{fffd}fed\u{fffd}x")
        );
        let long = "é".repeat(300);
        assert_eq!(ua(long.as_bytes()).map(|s| s.chars().count()), Some(256));
        assert_eq!(audited_user_agent(&http::HeaderMap::new()), None);
    }

    #[test]
    fn canonical_bytes_do_not_let_boundaries_shift() {
        let mut a = AuditEvent::new(EventKind::Request, "r1", "convox:apps:list");
        a.user_email = Some("ab".into());
        a.token_name = Some("c".into());
        let mut b = a.clone();
        b.user_email = Some("a".into());
        b.token_name = Some("bc".into());
        assert_ne!(a.canonical_bytes(), b.canonical_bytes());
        let mut c = a.clone();
        c.token_name = None;
        let mut d = a.clone();
        d.token_name = Some(String::new());
        assert_ne!(c.canonical_bytes(), d.canonical_bytes());
    }
}
