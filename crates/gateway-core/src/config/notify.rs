//! `SLACK_WEBHOOK_URL`, `SMTP_URL`, `EMAIL_*`: where the gateway sends notifications; and
//! `SLACK_SIGNING_SECRET`, `SLACK_BOT_TOKEN`, `SLACK_API_URL`: deciding deploy requests from
//! Slack's messages.

use url::Url;

use super::values::{Pair, pair};
use super::{ConfigError, Secret, anchors::is_loopback};

/// Where notifications go; each channel is off unless configured.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    /// Slack, through an incoming webhook.
    pub slack: Option<SlackConfig>,
    /// E-mail, through an SMTP server.
    pub email: Option<EmailConfig>,
    /// `NOTIFY_REFUSAL_BURST`: refusals of one credential within five minutes that make a
    /// notice (0: none).
    pub refusal_burst: usize,
    /// `NOTIFY_OFF`: the topics (of [`NOTIFY_TOPICS`]) that are not sent on any channel.
    pub off: Vec<String>,
}

/// The topics `NOTIFY_OFF` may name: what `notify list` shows as each message's topic.
pub const NOTIFY_TOPICS: &[&str] = &[
    "approval_requested",
    "approval_decided",
    "token_created",
    "user_added",
    "role_changed",
    "role_defined",
    "app_rules_changed",
    "user_locked",
    "user_unlocked",
    "mfa_changed",
    "mfa_lockout",
    "new_sign_in_place",
    "refusal_burst",
    "audit_trouble",
];

/// `NOTIFY_REFUSAL_BURST`'s default.
pub const DEFAULT_REFUSAL_BURST: usize = 10;
/// `NOTIFY_REFUSAL_BURST`'s largest value.
pub const MAX_REFUSAL_BURST: usize = 10_000;

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            slack: None,
            email: None,
            refusal_burst: DEFAULT_REFUSAL_BURST,
            off: Vec::new(),
        }
    }
}

impl NotifyConfig {
    /// Reads only the notification settings through `lookup` (for `notify test`, which
    /// needs no rack).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<NotifyConfig, ConfigError> {
        parse_notify(&|name: &str| lookup(name).filter(|v| !v.trim().is_empty()))
    }

    /// True when no channel is configured (the notifier does not run).
    pub fn is_off(&self) -> bool {
        self.slack.is_none() && self.email.is_none()
    }
}

/// Slack's incoming webhook.
#[derive(Clone, Debug)]
pub struct SlackConfig {
    /// `SLACK_WEBHOOK_URL`: the webhook's address, which is its credential.
    pub webhook_url: Secret,
    /// The Slack app behind the webhook, when approving from Slack is on.
    pub app: Option<SlackAppConfig>,
}

/// Slack's own Web API.
pub const DEFAULT_SLACK_API_URL: &str = "https://slack.com/api/";

/// The Slack app that lets people approve or reject deploy requests from its messages: Slack
/// signs each button press with the app's signing secret, and the gateway asks Slack who
/// pressed it (their e-mail) with the app's bot token.
#[derive(Clone, Debug)]
pub struct SlackAppConfig {
    /// `SLACK_SIGNING_SECRET`: checks that a request comes from Slack, for this app.
    pub signing_secret: Secret,
    /// `SLACK_BOT_TOKEN`: the app's bot token (`xoxb-…`, scopes `users:read` and
    /// `users:read.email`).
    pub bot_token: Secret,
    /// `SLACK_API_URL`: Slack's Web API (default [`DEFAULT_SLACK_API_URL`]), ending in `/`.
    pub api_url: Url,
}

/// The SMTP server and addresses for e-mail.
#[derive(Clone, Debug)]
pub struct EmailConfig {
    /// `SMTP_URL`, e.g. `smtps://user:password@smtp.example.com` (it may hold a password).
    pub smtp_url: Secret,
    /// `EMAIL_FROM`: the sender, e.g. `Rack Gateway <gateway@example.com>`.
    pub from: String,
    /// `EMAIL_ALERTS_TO`: who gets security alerts (lockouts, new tokens, audit trouble), as
    /// well as the person each one is about.
    pub alerts_to: Vec<String>,
}

/// Reads the notification settings.
pub(super) fn parse_notify(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<NotifyConfig, ConfigError> {
    let app = slack_app(get)?;
    let slack = match get("SLACK_WEBHOOK_URL") {
        Some(raw) => Some(SlackConfig {
            webhook_url: slack_webhook(raw.trim())?,
            app,
        }),
        None if app.is_some() => {
            return Err(ConfigError::Missing {
                name: "SLACK_WEBHOOK_URL",
                expected: "with SLACK_SIGNING_SECRET: the app's incoming webhook, which posts \
                           the messages people approve from",
            });
        }
        None => None,
    };
    let email = match get("SMTP_URL") {
        Some(raw) => Some(email(get, raw.trim())?),
        None => {
            for name in ["EMAIL_FROM", "EMAIL_ALERTS_TO"] {
                if get(name).is_some() {
                    return Err(ConfigError::Invalid {
                        name,
                        expected: "SMTP_URL as well: e-mail is sent through an SMTP server".into(),
                    });
                }
            }
            None
        }
    };
    let refusal_burst = match get("NOTIFY_REFUSAL_BURST") {
        None => DEFAULT_REFUSAL_BURST,
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_REFUSAL_BURST)
            .ok_or_else(|| ConfigError::Invalid {
                name: "NOTIFY_REFUSAL_BURST",
                expected: format!(
                    "a whole number from 0 (no such notices) to {MAX_REFUSAL_BURST}: refusals \
                     of one credential within five minutes that make a notice"
                ),
            })?,
    };
    Ok(NotifyConfig {
        slack,
        email,
        refusal_burst,
        off: off_topics(get("NOTIFY_OFF").as_deref())?,
    })
}

/// `NOTIFY_OFF`: topics, comma-separated, each one of [`NOTIFY_TOPICS`] (each kept once).
fn off_topics(raw: Option<&str>) -> Result<Vec<String>, ConfigError> {
    let mut off: Vec<String> = Vec::new();
    for name in raw.unwrap_or_default().split(',') {
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || off.contains(&name) {
            continue;
        }
        if !NOTIFY_TOPICS.contains(&name.as_str()) {
            return Err(ConfigError::Invalid {
                name: "NOTIFY_OFF",
                expected: format!(
                    "topics, comma-separated, from: {} ({:?} is none of them)",
                    NOTIFY_TOPICS.join(", "),
                    crate::redact::clip(name, 64)
                ),
            });
        }
        off.push(name);
    }
    Ok(off)
}

/// `SLACK_SIGNING_SECRET` and `SLACK_BOT_TOKEN` (both or neither), and `SLACK_API_URL`.
fn slack_app(get: &impl Fn(&str) -> Option<String>) -> Result<Option<SlackAppConfig>, ConfigError> {
    let (secret, token) = match pair(
        get,
        "SLACK_SIGNING_SECRET",
        "SLACK_BOT_TOKEN",
        "SLACK_API_URL",
    )? {
        Pair::Both(secret, token) => (secret, token),
        Pair::Neither => return Ok(None),
        Pair::Lacks(missing @ "SLACK_BOT_TOKEN") => {
            return Err(ConfigError::Missing {
                name: missing,
                expected: "with SLACK_SIGNING_SECRET: the Slack app's bot token (xoxb-…), to \
                           ask Slack who pressed a button",
            });
        }
        Pair::Lacks(missing) => {
            return Err(ConfigError::Missing {
                name: missing,
                expected: "with SLACK_BOT_TOKEN: the Slack app's signing secret (Basic \
                           Information), to check that button presses come from Slack",
            });
        }
    };
    // Both are credentials: never quoted back.
    if secret.len() < 16 || secret.len() > 256 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::Invalid {
            name: "SLACK_SIGNING_SECRET",
            expected: "the Slack app's signing secret (32 hexadecimal characters, from Basic \
                       Information → App Credentials)"
                .into(),
        });
    }
    let token_ok = token.starts_with("xoxb-")
        && token.len() <= 512
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !token_ok {
        return Err(ConfigError::Invalid {
            name: "SLACK_BOT_TOKEN",
            expected: "the Slack app's bot token, xoxb-… (OAuth & Permissions)".into(),
        });
    }
    let api_url = get("SLACK_API_URL");
    let api_url = api_url.as_deref().map_or(DEFAULT_SLACK_API_URL, str::trim);
    let invalid = |expected: &str| ConfigError::Invalid {
        name: "SLACK_API_URL",
        expected: expected.into(),
    };
    let mut api_url =
        Url::parse(api_url).map_err(|_| invalid("an address, e.g. https://slack.com/api/"))?;
    if api_url.scheme() != "https" && !(api_url.scheme() == "http" && is_loopback(&api_url)) {
        return Err(invalid(
            "an https:// address (the bot token goes with each request; plain http only to \
             this machine)",
        ));
    }
    if api_url.host_str().is_none() || api_url.query().is_some() {
        return Err(invalid("an address with a host and no query"));
    }
    // Methods are joined to it (`users.info`): it must end in a slash to keep its path.
    if !api_url.path().ends_with('/') {
        let path = format!("{}/", api_url.path());
        api_url.set_path(&path);
    }
    Ok(Some(SlackAppConfig {
        signing_secret: Secret::new(secret),
        bot_token: Secret::new(token),
        api_url,
    }))
}

fn slack_webhook(raw: &str) -> Result<Secret, ConfigError> {
    // The value is a credential: never quoted back.
    let invalid = |expected: &str| ConfigError::Invalid {
        name: "SLACK_WEBHOOK_URL",
        expected: expected.into(),
    };
    let url = Url::parse(raw).map_err(|_| {
        invalid("an incoming webhook's address, https://hooks.slack.com/services/…")
    })?;
    let plain_ok = url.scheme() == "http" && is_loopback(&url);
    if url.scheme() != "https" && !plain_ok {
        return Err(invalid(
            "an https:// address (the webhook's address is its credential; plain http only to \
             this machine)",
        ));
    }
    if url.host_str().is_none() {
        return Err(invalid("an address with a host"));
    }
    Ok(Secret::new(url.as_str()))
}

fn email(get: &impl Fn(&str) -> Option<String>, raw: &str) -> Result<EmailConfig, ConfigError> {
    let invalid = |expected: String| ConfigError::Invalid {
        name: "SMTP_URL",
        expected,
    };
    let url = Url::parse(raw).map_err(|_| {
        invalid(
            "an SMTP server's address, e.g. smtps://user:password@smtp.example.com or \
             smtp://smtp.example.com:587?tls=required"
                .into(),
        )
    })?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("an address with a host".into()));
    }
    let tls = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let encrypted = match (url.scheme(), tls.as_deref()) {
        ("smtps", None) => true,
        ("smtp", Some("required")) => true,
        ("smtp", None | Some("opportunistic")) => false,
        ("smtps", Some(_)) => {
            return Err(invalid(
                "smtps:// without ?tls= (it is TLS from the first byte)".into(),
            ));
        }
        ("smtp", Some(_)) => {
            return Err(invalid(
                "?tls=required or ?tls=opportunistic, or no tls parameter".into(),
            ));
        }
        _ => return Err(invalid("an smtp:// or smtps:// address".into())),
    };
    // STARTTLS that is only opportunistic can be stripped by anyone on the path.
    let to_another_host = !is_loopback(&url);
    if !encrypted && to_another_host && (url.password().is_some() || !url.username().is_empty()) {
        return Err(invalid(
            "smtps:// or ?tls=required when it carries a user and password to another host: \
             they would cross the network readable"
                .into(),
        ));
    }
    let from = get("EMAIL_FROM").ok_or(ConfigError::Missing {
        name: "EMAIL_FROM",
        expected: "with SMTP_URL: the sender, e.g. gateway@example.com or \
                   Rack Gateway <gateway@example.com>",
    })?;
    let from = from.trim().to_string();
    if !valid_mailbox(&from) {
        return Err(ConfigError::Invalid {
            name: "EMAIL_FROM",
            expected: "an e-mail address, or Name <address>".into(),
        });
    }
    let alerts_to = match get("EMAIL_ALERTS_TO") {
        None => Vec::new(),
        Some(list) => {
            let mut addresses = Vec::new();
            for address in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                if let Some(problem) = crate::text::email_problem(address) {
                    return Err(ConfigError::Invalid {
                        name: "EMAIL_ALERTS_TO",
                        expected: format!(
                            "e-mail addresses separated by commas ({address:?} {problem})"
                        ),
                    });
                }
                addresses.push(address.to_string());
            }
            addresses
        }
    };
    Ok(EmailConfig {
        smtp_url: Secret::new(raw),
        from,
        alerts_to,
    })
}

/// `address` or `Name <address>`, the address one this gateway accepts.
fn valid_mailbox(from: &str) -> bool {
    let address = match (from.rfind('<'), from.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        (None, None) => from,
        _ => return false,
    };
    !from.chars().any(crate::text::is_hidden) && crate::text::email_problem(address).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<NotifyConfig, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_notify(&|name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn nothing_set_is_off() {
        assert!(parse(&[]).map(|c| c.is_off()).unwrap_or(false));
    }

    #[test]
    fn topics_are_turned_off_by_name() {
        let off = |value: &str| parse(&[("NOTIFY_OFF", value)]).map(|c| c.off);
        assert_eq!(
            off(" new_sign_in_place, Refusal_Burst,,new_sign_in_place ").ok(),
            Some(vec![
                "new_sign_in_place".to_string(),
                "refusal_burst".to_string()
            ])
        );
        assert_eq!(parse(&[]).map(|c| c.off).ok(), Some(Vec::new()));
        let err = off("token_created,tokens_created")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("NOTIFY_OFF")
                && err.contains("tokens_created")
                && err.contains("mfa_lockout"),
            "{err}"
        );
        // `notify test` always sends.
        assert!(off("test").is_err());
    }

    #[test]
    fn a_refusal_burst_is_ten_unless_said_and_zero_turns_it_off() {
        let burst = |value: Option<&str>| {
            let pairs: Vec<(&str, &str)> = value
                .map(|v| ("NOTIFY_REFUSAL_BURST", v))
                .into_iter()
                .collect();
            parse(&pairs).map(|c| c.refusal_burst)
        };
        assert_eq!(burst(None).ok(), Some(DEFAULT_REFUSAL_BURST));
        assert_eq!(NotifyConfig::default().refusal_burst, DEFAULT_REFUSAL_BURST);
        assert_eq!(burst(Some(" 25 ")).ok(), Some(25));
        assert_eq!(burst(Some("0")).ok(), Some(0));
        for bad in ["-1", "ten", "10001", "1e3"] {
            let err = burst(Some(bad))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("NOTIFY_REFUSAL_BURST"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_slack_webhook_must_be_https_and_is_never_quoted_back() {
        let secret = "https://hooks.slack.com/services/T0/B0/SECRETPART";
        let c = parse(&[("SLACK_WEBHOOK_URL", secret)]).map_err(|e| e.to_string());
        assert!(c.as_ref().is_ok_and(|c| c.slack.is_some()), "{c:?}");
        assert!(!format!("{c:?}").contains("SECRETPART"));
        let plain = "http://hooks.example.com/services/SECRETPART";
        let e = parse(&[("SLACK_WEBHOOK_URL", plain)])
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            e.as_ref()
                .is_err_and(|e| e.contains("https://") && !e.contains("SECRETPART")),
            "{e:?}"
        );
        assert!(parse(&[("SLACK_WEBHOOK_URL", "http://127.0.0.1:9/hook")]).is_ok());
        assert!(parse(&[("SLACK_WEBHOOK_URL", "not a url")]).is_err());
    }

    const HOOK: &str = "https://hooks.slack.com/services/T0/B0/SECRETPART";
    const SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const BOT: &str = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy";

    #[test]
    fn slack_approvals_take_the_signing_secret_and_the_bot_token_together() {
        let c = parse(&[
            ("SLACK_WEBHOOK_URL", HOOK),
            ("SLACK_SIGNING_SECRET", SIGNING),
            ("SLACK_BOT_TOKEN", BOT),
        ]);
        let app = c.ok().and_then(|c| c.slack).and_then(|s| s.app);
        let app = app.unwrap_or_else(|| panic!("no Slack app"));
        assert_eq!(app.api_url.as_str(), DEFAULT_SLACK_API_URL);
        assert!(!format!("{app:?}").contains("pdFZ") && !format!("{app:?}").contains("8f74"));
        let plain = parse(&[("SLACK_WEBHOOK_URL", HOOK)])
            .ok()
            .and_then(|c| c.slack);
        assert!(plain.is_some_and(|s| s.app.is_none()));

        let alone = |pairs: &[(&str, &str)], name: &str| {
            let e = parse(pairs).map(|_| ()).map_err(|e| e.to_string());
            assert!(
                e.as_ref()
                    .is_err_and(|e| e.contains(name) && !e.contains("pdFZ") && !e.contains("8f74")),
                "{pairs:?}: {e:?}"
            );
        };
        alone(
            &[
                ("SLACK_WEBHOOK_URL", HOOK),
                ("SLACK_SIGNING_SECRET", SIGNING),
            ],
            "SLACK_BOT_TOKEN",
        );
        alone(
            &[("SLACK_WEBHOOK_URL", HOOK), ("SLACK_BOT_TOKEN", BOT)],
            "SLACK_SIGNING_SECRET",
        );
        alone(
            &[("SLACK_SIGNING_SECRET", SIGNING), ("SLACK_BOT_TOKEN", BOT)],
            "SLACK_WEBHOOK_URL",
        );
        alone(
            &[
                ("SLACK_WEBHOOK_URL", HOOK),
                ("SLACK_API_URL", "https://slack.com/api/"),
            ],
            "SLACK_API_URL",
        );
        let with = |name: &'static str, value: &'static str| {
            vec![
                ("SLACK_WEBHOOK_URL", HOOK),
                ("SLACK_SIGNING_SECRET", SIGNING),
                ("SLACK_BOT_TOKEN", BOT),
                (name, value),
            ]
        };
        // A user token, or a secret pasted with a space in it, is not taken.
        let mut user_token = with("SLACK_API_URL", "https://slack.com/api/");
        user_token[2] = ("SLACK_BOT_TOKEN", "xoxp-1234-5678-pdFZKVeTuE8sk7oOcBrzbqgy");
        alone(&user_token, "SLACK_BOT_TOKEN");
        let mut spaced = with("SLACK_API_URL", "https://slack.com/api/");
        spaced[1] = ("SLACK_SIGNING_SECRET", "8f742231b10e 8888abcd99yyyzzz85a5");
        alone(&spaced, "SLACK_SIGNING_SECRET");
        alone(
            &with("SLACK_API_URL", "http://slack.example.com/api/"),
            "https://",
        );
        alone(
            &with("SLACK_API_URL", "https://slack.example.com/api/?x=1"),
            "no query",
        );
        // A local stand-in may be plain http; the path keeps its last part.
        let local = parse(&with("SLACK_API_URL", "http://127.0.0.1:9/api"));
        let api = local
            .ok()
            .and_then(|c| c.slack)
            .and_then(|s| s.app)
            .map(|a| a.api_url);
        assert_eq!(
            api.and_then(|u| u.join("users.info").ok())
                .map(|u| u.to_string()),
            Some("http://127.0.0.1:9/api/users.info".to_string())
        );
    }

    #[test]
    fn smtp_needs_a_sender_and_keeps_passwords_off_plain_connections() {
        let e = parse(&[("SMTP_URL", "smtps://u:p@smtp.example.com")]).map(|_| ());
        assert!(
            matches!(
                e,
                Err(ConfigError::Missing {
                    name: "EMAIL_FROM",
                    ..
                })
            ),
            "{e:?}"
        );
        let ok = |url: &str| {
            parse(&[
                ("SMTP_URL", url),
                ("EMAIL_FROM", "Gateway <gw@example.com>"),
            ])
            .map(|c| c.email.is_some())
            .map_err(|e| e.to_string())
        };
        assert_eq!(ok("smtps://u:p@smtp.example.com"), Ok(true));
        assert_eq!(ok("smtp://u:p@smtp.example.com:587?tls=required"), Ok(true));
        assert_eq!(ok("smtp://127.0.0.1:2525"), Ok(true));
        assert_eq!(ok("smtp://relay.internal:25"), Ok(true));
        for refused in [
            "smtp://u:p@smtp.example.com:587",
            "smtp://u:p@smtp.example.com:587?tls=opportunistic",
            "smtp://smtp.example.com?tls=sometimes",
            "smtps://smtp.example.com?tls=required",
            "https://smtp.example.com",
            "smtp://",
        ] {
            let e = ok(refused);
            assert!(
                e.as_ref().is_err_and(|e| !e.contains(":p@")),
                "{refused}: {e:?}"
            );
        }
    }

    #[test]
    fn addresses_are_checked() {
        let with = |from: &str, alerts: &str| {
            parse(&[
                ("SMTP_URL", "smtp://127.0.0.1:25"),
                ("EMAIL_FROM", from),
                ("EMAIL_ALERTS_TO", alerts),
            ])
            .map(|c| c.email.map(|e| e.alerts_to).unwrap_or_default())
        };
        assert_eq!(
            with("gw@example.com", "a@example.com, b@example.com").ok(),
            Some(vec![
                "a@example.com".to_string(),
                "b@example.com".to_string()
            ])
        );
        assert!(with("not an address", "a@example.com").is_err());
        assert!(with("Name <gw@example.com", "a@example.com").is_err());
        assert!(with("gw@example.com", "a@example.com, nope").is_err());
        let e = parse(&[("EMAIL_FROM", "gw@example.com")]).map(|_| ());
        assert!(matches!(
            e,
            Err(ConfigError::Invalid {
                name: "EMAIL_FROM",
                ..
            })
        ));
    }
}
