//! A [`Notice`] as a Slack message and as an e-mail.
//!
//! Much of a message is other people's text: a deploy request's message, branch and CI
//! address come from CI. In Slack it is escaped (`&`, `<`, `>`) and sent as verbatim `mrkdwn`
//! (so a bare address or `#channel` is not made a link), so it cannot mention `@channel`, make
//! links, or pass for the gateway's own words; in e-mail it is plain text.

use serde_json::{Value, json};
use url::Url;

use super::Notice;

/// Longest value shown in a message (a commit message can be long).
const MAX_VALUE_CHARS: usize = 500;

/// Where the messages come from, to say in each.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `PUBLIC_URL`, for links (left out without it).
    pub public_url: Option<Url>,
    /// What the gateway is called in messages (its public host, or `rack-gateway`).
    pub name: String,
}

impl Origin {
    /// The origin of a gateway at `public_url`.
    pub fn new(public_url: Option<Url>) -> Origin {
        let name = public_url
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "rack-gateway".into());
        Origin { public_url, name }
    }

    /// `path` made absolute, when the public URL is known.
    fn link(&self, path: &str) -> Option<Url> {
        self.public_url
            .as_ref()
            .and_then(|base| base.join(path).ok())
    }
}

/// `value` cut to [`MAX_VALUE_CHARS`], on one line, without control characters.
fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|c| !gateway_core::text::is_hidden(*c))
        .take(MAX_VALUE_CHARS)
        .collect();
    if value.chars().count() > MAX_VALUE_CHARS {
        out.push('…');
    }
    out
}

/// Text for Slack's `mrkdwn`: its three control characters escaped, as Slack asks.
pub(crate) fn slack_text(value: &str) -> String {
    shown(value)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The incoming webhook's JSON payload; with `decisions` (approving from Slack is on), a
/// deploy request's message carries Approve and Reject buttons.
pub fn slack(notice: &Notice, origin: &Origin, decisions: bool) -> Value {
    let title = slack_text(&notice.title);
    let mut body = format!("*{title}*");
    for (label, value) in &notice.facts {
        body.push_str(&format!("\n*{label}:* {}", slack_text(value)));
    }
    let mut blocks = vec![json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": body, "verbatim": true },
    })];
    let mut buttons = Vec::new();
    if let (Some(id), true) = (notice.decide, decisions) {
        for (action, label, style) in [
            (crate::slack::APPROVE_ACTION, "Approve", "primary"),
            (crate::slack::REJECT_ACTION, "Reject", "danger"),
        ] {
            buttons.push(json!({
                "type": "button",
                "action_id": action,
                "text": { "type": "plain_text", "text": label },
                "style": style,
                "value": id.to_string(),
            }));
        }
    }
    if let Some((link, url)) = notice
        .link
        .as_ref()
        .and_then(|l| origin.link(&l.path).map(|u| (l, u)))
    {
        buttons.push(json!({
            "type": "button",
            "text": { "type": "plain_text", "text": link.label },
            "url": url.as_str(),
        }));
    }
    if !buttons.is_empty() {
        blocks.push(json!({ "type": "actions", "elements": buttons }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": slack_text(&origin.name), "verbatim": true }],
    }));
    json!({
        // What notifications and screen readers show.
        "text": format!("{}: {title}", slack_text(&origin.name)),
        "blocks": blocks,
        "unfurl_links": false,
    })
}

/// An e-mail's subject and plain-text body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Email {
    /// The subject line.
    pub subject: String,
    /// The body, plain text.
    pub body: String,
}

/// The e-mail for `notice`.
pub fn email(notice: &Notice, origin: &Origin) -> Email {
    let title = shown(&notice.title);
    let mut body = format!("{title}\n\n");
    for (label, value) in &notice.facts {
        body.push_str(&format!("{label}: {}\n", shown(value)));
    }
    if let Some((link, url)) = notice
        .link
        .as_ref()
        .and_then(|l| origin.link(&l.path).map(|u| (l, u)))
    {
        body.push_str(&format!("\n{}: {url}\n", link.label));
    }
    body.push_str(&format!(
        "\n-- \nSent by the rack gateway {} (this address gets its notifications).\n",
        origin.name
    ));
    Email {
        subject: format!("[{}] {title}", origin.name),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Topic;

    fn origin() -> Origin {
        Origin::new(Url::parse("https://gw.example.com/").ok())
    }

    #[test]
    fn ci_text_cannot_mention_the_channel_or_make_links_in_slack() {
        let n = Notice::new(Topic::ApprovalRequested, "Deploy of web")
            .fact(
                "Message",
                "<!channel> see <https://evil.example|your bank> & more",
            )
            .link("Review", "/deploy-approvals#request-1");
        let payload = slack(&n, &origin(), false).to_string();
        assert!(!payload.contains("<!channel>"), "{payload}");
        assert!(!payload.contains("<https://evil"), "{payload}");
        assert!(
            payload
                .contains("&lt;!channel&gt; see &lt;https://evil.example|your bank&gt; &amp; more")
        );
        assert!(payload.contains("https://gw.example.com/deploy-approvals#request-1"));
        // Nor can a bare address (or a #channel) become a link: Slack turns those into links
        // in mrkdwn unless it is told the text is verbatim.
        let value = slack(&n, &origin(), true);
        let mut texts = Vec::new();
        collect_mrkdwn(&value, &mut texts);
        assert_eq!(texts.len(), 2, "{value}");
        assert!(texts.iter().all(|t| t["verbatim"] == true), "{value}");
    }

    /// Every `mrkdwn` text object in `value`.
    fn collect_mrkdwn<'a>(value: &'a Value, found: &mut Vec<&'a Value>) {
        match value {
            Value::Object(map) => {
                if map.get("type").and_then(Value::as_str) == Some("mrkdwn") {
                    found.push(value);
                }
                map.values().for_each(|v| collect_mrkdwn(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| collect_mrkdwn(v, found)),
            _ => {}
        }
    }

    #[test]
    fn a_deploy_request_offers_its_decision_in_slack_only_when_asked_to() {
        let n = Notice::new(Topic::ApprovalRequested, "Deploy of web")
            .link("Review", "/deploy-approvals#request-7")
            .decide(7);
        let with = slack(&n, &origin(), true);
        let buttons = &with["blocks"][1]["elements"];
        assert_eq!(buttons[0]["action_id"], crate::slack::APPROVE_ACTION);
        assert_eq!(buttons[0]["value"], "7");
        assert_eq!(buttons[1]["action_id"], crate::slack::REJECT_ACTION);
        assert_eq!(buttons[1]["style"], "danger");
        assert_eq!(
            buttons[2]["url"],
            "https://gw.example.com/deploy-approvals#request-7"
        );
        let without = slack(&n, &origin(), false);
        assert_eq!(
            without["blocks"][1]["elements"].as_array().map(Vec::len),
            Some(1)
        );
        // Without a public URL, the buttons alone.
        let plain = slack(&n, &Origin::new(None), true);
        assert_eq!(
            plain["blocks"][1]["elements"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn no_public_url_no_link_and_long_values_are_cut() {
        let n = Notice::new(Topic::TokenCreated, "t\nx")
            .fact("Message", "m".repeat(2000))
            .link("Tokens", "/tokens");
        let plain = Origin::new(None);
        let payload = slack(&n, &plain, false);
        assert_eq!(payload["blocks"].as_array().map(Vec::len), Some(2));
        let mail = email(&n, &plain);
        assert_eq!(mail.subject, "[rack-gateway] t x");
        assert!(
            mail.body
                .contains(&format!("Message: {}…\n", "m".repeat(MAX_VALUE_CHARS)))
        );
        assert!(!mail.body.contains("/tokens"));
    }

    #[test]
    fn an_email_names_its_gateway_and_links_back() {
        let n = Notice::new(
            Topic::UserAdded,
            "ann@example.com was added by bob@example.com",
        )
        .fact("Role", "deployer")
        .link("Sign in", "/");
        let mail = email(&n, &origin());
        assert_eq!(
            mail.subject,
            "[gw.example.com] ann@example.com was added by bob@example.com"
        );
        assert!(mail.body.contains("Role: deployer\n"));
        assert!(mail.body.contains("Sign in: https://gw.example.com/\n"));
    }
}
