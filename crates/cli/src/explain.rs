//! Gateway-aware error messages: every failure of a rack or gateway call is turned into a
//! message that says what is wrong and what to do, in this one place.

use convox_api::client::ClientError;

use crate::context::Target;
use crate::error::CliError;
use crate::mfa;

/// Gateway codes meaning the credential no longer works.
const DEAD_CREDENTIAL: &[&str] = &[
    "token_expired",
    "token_unknown",
    "token_revoked",
    "session_expired",
    "session_revoked",
    "auth_required",
    "auth_malformed",
];

/// Turns a failed call against `target` (if known) into a message for people.
pub fn explain(err: ClientError, target: Option<&Target>) -> CliError {
    let where_ = target.map(|t| t.base_url().to_string());
    let direct = matches!(target, Some(Target::Direct { .. }));
    match err {
        ClientError::Connect { url, reason } => {
            let place = where_.unwrap_or(url);
            if direct {
                CliError::Explained(format!("rack unreachable at {place} ({reason})"))
            } else {
                CliError::Explained(format!("gateway unreachable at {place} ({reason})"))
            }
        }
        ClientError::Timeout { url } => {
            CliError::Explained(format!("{} did not answer in time", where_.unwrap_or(url)))
        }
        ClientError::Api {
            status,
            code,
            message,
        } => explain_answer(status, code.as_deref(), message, target),
        other => CliError::Client(other),
    }
}

fn explain_answer(
    status: u16,
    code: Option<&str>,
    message: String,
    target: Option<&Target>,
) -> CliError {
    let gateway = target
        .map(|t| t.base_url().to_string())
        .unwrap_or_else(|| "the gateway".into());
    let login = target
        .map(Target::login_hint)
        .unwrap_or_else(|| "rack-gateway login <rack> <gateway-url>".into());
    if code == Some("mfa_required") {
        return mfa::required(target, &message);
    }
    match (status, code) {
        (401, Some(c)) if DEAD_CREDENTIAL.contains(&c) => {
            let api_token = target
                .and_then(Target::entry)
                .is_some_and(|e| e.token_type == crate::config::TokenType::ApiToken);
            if api_token {
                CliError::Explained(format!(
                    "API token expired or revoked ({message}): run `{login} --token <new token>`, \
                     or `{login}` to sign in through the browser"
                ))
            } else {
                CliError::Explained(format!(
                    "session expired or revoked ({message}): run `{login}`"
                ))
            }
        }
        (401, Some("user_locked")) => CliError::Explained(format!(
            "{message}: ask a gateway admin to unlock your account"
        )),
        (401, _) if matches!(target, Some(Target::Direct { .. })) => {
            CliError::Explained(format!("the rack refused the token ({message})"))
        }
        (401, _) => CliError::Explained(format!("not signed in ({message}): run `{login}`")),
        // The gateway names the missing permission and your role.
        (403, _) => CliError::Explained(message),
        (502, Some("rack_unreachable")) => CliError::Explained(format!(
            "the gateway at {gateway} is up but the rack is down ({message})"
        )),
        (502, Some("rack_refused_gateway")) => CliError::Explained(format!(
            "the gateway at {gateway} is up, but the rack refuses the gateway's own \
             credentials (its RACK_TOKEN): your sign-in is fine; tell the gateway's operator"
        )),
        (504, Some("rack_timeout")) => CliError::Explained(format!(
            "the gateway at {gateway} is up but the rack is slow: it did not answer in time"
        )),
        (503, Some("audit_unavailable")) => CliError::Explained(format!(
            "the gateway at {gateway} cannot write its audit log, so it forwards nothing: {message}"
        )),
        _ => CliError::Explained(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RackEntry, Selected, TokenType};

    fn target(kind: TokenType) -> Target {
        Target::Gateway(Selected {
            name: "staging".into(),
            entry: RackEntry {
                gateway_url: "https://gw.example.com".into(),
                token: "t".into(),
                token_type: kind,
                email: None,
                role: None,
                expires_at: None,
                token_name: None,
            },
        })
    }

    fn api(status: u16, code: &str, message: &str) -> ClientError {
        ClientError::Api {
            status,
            code: Some(code.into()),
            message: message.into(),
        }
    }

    #[test]
    fn expired_sessions_name_the_login_command() {
        let t = target(TokenType::Session);
        let msg = explain(api(401, "session_expired", "session expired"), Some(&t)).to_string();
        assert!(
            msg.starts_with("session expired or revoked")
                && msg.contains("`rack-gateway login staging https://gw.example.com`"),
            "{msg}"
        );
    }

    #[test]
    fn rack_trouble_says_which_side_is_down() {
        let t = target(TokenType::ApiToken);
        let msg = explain(
            api(502, "rack_unreachable", "rack unreachable: refused"),
            Some(&t),
        );
        assert!(msg.to_string().contains("is up but the rack is down"));
        let msg = explain(
            api(504, "rack_timeout", "rack did not respond in time"),
            Some(&t),
        );
        assert!(msg.to_string().contains("is up but the rack is slow"));
        let msg = explain(
            api(502, "rack_refused_gateway", "the rack refused ..."),
            Some(&t),
        );
        assert!(
            msg.to_string().contains("your sign-in is fine"),
            "not a sign-in problem: {msg}"
        );
        let msg = explain(
            ClientError::Connect {
                url: "x".into(),
                reason: "refused".into(),
            },
            Some(&t),
        );
        assert_eq!(
            msg.to_string(),
            "gateway unreachable at https://gw.example.com (refused)"
        );
    }

    #[test]
    fn mfa_goes_through_the_hook() {
        let t = target(TokenType::Session);
        let msg = explain(api(403, "mfa_required", "MFA needed"), Some(&t)).to_string();
        assert!(msg.contains("(MFA needed)"), "{msg}");
        assert!(
            msg.contains(&format!("rack-gateway --rack {} mfa verify", t.name())),
            "{msg}"
        );
    }

    #[test]
    fn denials_keep_the_gateway_message() {
        let msg = "permission denied: convox:apps:delete is required (your role: ops)";
        assert_eq!(
            explain(api(403, "permission_denied", msg), None).to_string(),
            msg
        );
    }
}
