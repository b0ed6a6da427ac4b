//! `SLACK_WEBHOOK_URL`, `SMTP_URL`, `EMAIL_*`: where the gateway sends notifications.

use url::Url;

use super::{ConfigError, Secret, anchors::is_loopback};

/// Where notifications go; each channel is off unless configured.
#[derive(Clone, Debug, Default)]
pub struct NotifyConfig {
    /// Slack, through an incoming webhook.
    pub slack: Option<SlackConfig>,
    /// E-mail, through an SMTP server.
    pub email: Option<EmailConfig>,
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
    let slack = get("SLACK_WEBHOOK_URL")
        .map(|raw| slack_webhook(raw.trim()))
        .transpose()?;
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
    Ok(NotifyConfig { slack, email })
}

fn slack_webhook(raw: &str) -> Result<SlackConfig, ConfigError> {
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
    Ok(SlackConfig {
        webhook_url: Secret::new(url.as_str()),
    })
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
