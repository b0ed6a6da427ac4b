//! The dialogs (Slack "modals") approving from Slack opens: one that asks for a code (and an
//! optional note) to approve or reject a deploy request, and one that only says something —
//! why the person cannot decide here, or what came of their decision.
//!
//! Text from CI (the commit message, the branch) is escaped as in the channel's messages, so
//! it cannot mention anyone or make links.

use serde_json::{Value, json};

use crate::approvals::MAX_NOTE_CHARS;
use crate::notify::render::slack_text;
use crate::store::ApprovalRow;

use super::CALLBACK_ID;

/// The block (and action) ids of the dialog's two fields.
pub const CODE_FIELD: &str = "code";
/// See [`CODE_FIELD`].
pub const NOTE_FIELD: &str = "note";

/// Longest code field: a YubiKey's OTP is 44 characters; a security key's `rgk_` proof is not
/// taken here.
const MAX_CODE_CHARS: usize = 64;

/// What the dialog is about, carried by Slack from the dialog to its submission (Slack signs
/// both; who submits it is checked again all the same).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Asked {
    /// The deploy request.
    pub id: i64,
    /// Approve (else reject).
    pub approve: bool,
    /// Where to replace the message whose button was pressed once it is decided (Slack's
    /// `response_url`, checked to be Slack's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn plain(text: &str) -> Value {
    json!({ "type": "plain_text", "text": text })
}

/// The dialog's title (Slack takes at most 24 characters).
fn title(approve: bool) -> &'static str {
    if approve {
        "Approve deploy"
    } else {
        "Reject deploy"
    }
}

/// The dialog that asks for a code to approve (or reject) `row`; an approval lets the deploy
/// through for `window_mins` minutes. `message`: where the pressed message is replaced.
pub fn ask(row: &ApprovalRow, approve: bool, window_mins: u64, message: Option<&str>) -> Value {
    let asked = Asked {
        id: row.id,
        approve,
        message: message.map(str::to_string),
    };
    let mut summary = format!(
        "*Deploy of {} at {}* (#{})\n*Requested by:* {}",
        slack_text(&row.app),
        slack_text(row.git_commit.get(..12).unwrap_or(&row.git_commit)),
        row.id,
        slack_text(&row.requested_by),
    );
    for (label, value) in [
        ("Branch", row.branch.as_deref()),
        ("Message", Some(row.message.as_str())),
    ] {
        if let Some(value) = value.filter(|v| !v.trim().is_empty()) {
            summary.push_str(&format!("\n*{label}:* {}", slack_text(value)));
        }
    }
    let hint = if approve {
        format!(
            "From your authenticator app, a backup code, or a touch of your YubiKey. Approving \
             lets this commit deploy for the next {window_mins} minutes."
        )
    } else {
        "From your authenticator app, a backup code, or a touch of your YubiKey.".to_string()
    };
    json!({
        "type": "modal",
        "callback_id": CALLBACK_ID,
        "private_metadata": json!(asked).to_string(),
        "title": plain(title(approve)),
        "submit": plain(if approve { "Approve" } else { "Reject" }),
        "close": plain("Cancel"),
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": summary, "verbatim": true } },
            {
                "type": "input",
                "block_id": CODE_FIELD,
                "label": plain("Your code"),
                "hint": plain(&hint),
                "element": {
                    "type": "plain_text_input",
                    "action_id": CODE_FIELD,
                    "max_length": MAX_CODE_CHARS,
                },
            },
            {
                "type": "input",
                "block_id": NOTE_FIELD,
                "optional": true,
                "label": plain("Note"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": NOTE_FIELD,
                    "multiline": true,
                    "max_length": MAX_NOTE_CHARS,
                },
            },
        ],
    })
}

/// A deploy request's message once it is decided (or has expired): what became of it, with
/// no buttons left to press.
pub fn settled(row: &ApprovalRow, now: i64) -> Value {
    let state = row.state(now);
    let mut text = format!(
        "*Deploy of {} at {}* (#{}) — {state}",
        slack_text(&row.app),
        slack_text(row.git_commit.get(..12).unwrap_or(&row.git_commit)),
        row.id,
    );
    if let (Some(by), "approved" | "rejected" | "deployed") = (&row.decided_by, state) {
        text.push_str(&format!(" by {}", slack_text(by)));
    }
    if let Some(note) = row.note.as_deref().filter(|n| !n.trim().is_empty()) {
        text.push_str(&format!("\n*Note:* {}", slack_text(note)));
    }
    json!({
        "replace_original": true,
        "text": text,
        "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": text, "verbatim": true } }],
    })
}

/// A dialog that only says `text` (Slack `mrkdwn`, already escaped where it quotes others),
/// under `approve`'s title.
pub fn said(approve: bool, text: &str) -> Value {
    json!({
        "type": "modal",
        "title": plain(title(approve)),
        "close": plain("Close"),
        "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": text, "verbatim": true } }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ApprovalRow {
        ApprovalRow {
            id: 7,
            app: "web".into(),
            git_commit: "0123456789abcdef0123456789abcdef01234567".into(),
            message: "<!channel> see <https://evil.example|this>".into(),
            ci_url: None,
            branch: Some("main".into()),
            requested_by: "token:ci".into(),
            requested_by_token_id: Some(1),
            requested_by_user_id: None,
            status: "pending".into(),
            created_at: 0,
            expires_at: 1,
            decided_by: None,
            decided_by_user_id: None,
            decided_at: None,
            note: None,
            deployed_at: None,
            release_id: None,
        }
    }

    #[test]
    fn the_dialog_carries_the_request_and_escapes_what_ci_wrote() {
        let view = ask(&row(), true, 15, None);
        assert_eq!(view["callback_id"], CALLBACK_ID);
        let asked: Option<Asked> = view["private_metadata"]
            .as_str()
            .and_then(|m| serde_json::from_str(m).ok());
        assert_eq!(
            asked,
            Some(Asked {
                id: 7,
                approve: true,
                message: None
            })
        );
        let text = view["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(
            text.contains("*Deploy of web at 0123456789ab* (#7)"),
            "{text}"
        );
        assert!(
            text.contains("&lt;!channel&gt;") && !text.contains("<!channel>"),
            "{text}"
        );
        assert_eq!(view["blocks"][1]["block_id"], CODE_FIELD);
        assert_eq!(view["blocks"][2]["optional"], true);
        assert!(
            view["blocks"][1]["hint"]["text"]
                .as_str()
                .is_some_and(|h| h.contains("15 minutes"))
        );
        let mut decided = row();
        decided.status = "approved".into();
        decided.decided_by = Some("ann@example.com".into());
        decided.expires_at = i64::MAX;
        decided.note = Some("<!here> ok".into());
        let settled = settled(&decided, 0);
        assert_eq!(settled["replace_original"], true);
        let text = settled["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("(#7) — approved by ann@example.com"),
            "{text}"
        );
        assert!(text.contains("&lt;!here&gt; ok"), "{text}");
        assert!(settled["blocks"][0].get("elements").is_none(), "no buttons");
        for approve in [true, false] {
            let t = title(approve);
            assert!(t.chars().count() <= 24, "{t}");
            assert_eq!(said(approve, "x")["title"]["text"], t);
            assert!(said(approve, "x").get("submit").is_none());
        }
    }
}
