//! Approving from Slack end to end: a gateway with a Slack app (a local stand-in for Slack's
//! webhook and Web API) puts Approve and Reject on a deploy request's message; presses and
//! dialog submissions signed as Slack signs them are turned into decisions only for a
//! workspace member who is a gateway person allowed to approve, with an authenticator app,
//! giving a right code; everything else opens a dialog saying why, is audited, and decides
//! nothing. Requests not signed by Slack are refused before anything in them is read.

use serde_json::{Value, json};

use crate::both_backends;
use crate::fake_notify::{BOT_TOKEN, FakeSlack, SIGNING_SECRET};
use crate::kit::{Db, admin, client, eventually, role_token};
use crate::mfa::{KEY, events, set_up, web_sign_in_as};
use crate::signin::SignIn;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const PATH: &str = "/api/v1/slack/interactions";
const BOSS: &str = "admin@example.com";

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

/// `body` posted to the Slack endpoint as Slack would, signed with `secret` at `ts`.
async fn send_signed(s: &SignIn, body: &str, secret: &str, ts: i64) -> reqwest::Response {
    let ts = ts.to_string();
    let signature = gateway::slack::signature::sign(secret.as_bytes(), &ts, body.as_bytes());
    client()
        .post(format!("{}{PATH}", s.gw.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", signature)
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `payload` as Slack sends it (`payload=<JSON>`, form-encoded), signed now: status and JSON.
async fn from_slack(s: &SignIn, payload: &Value) -> (u16, Value) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let r = send_signed(s, &body, SIGNING_SECRET, now_secs()).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Slack user `user` pressing `action` (`rgw_approve`, `rgw_reject`) on request `id`'s
/// message; the view Slack was then asked to open.
async fn press(s: &SignIn, slack: &FakeSlack, user: &str, action: &str, id: i64) -> Value {
    let before = slack.opened().len();
    let trigger = format!("trigger-{user}-{before}");
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user, "username": user.to_lowercase(), "team_id": "T0" },
        "team": { "id": "T0", "domain": "example" },
        "api_app_id": "A0",
        "trigger_id": trigger,
        "container": { "type": "message", "message_ts": "1.2", "channel_id": "C0" },
        "response_url": slack.response_url,
        "actions": [{
            "type": "button", "action_id": action, "block_id": "b0",
            "value": id.to_string(), "action_ts": "1.3",
        }],
    });
    let (status, body) = from_slack(s, &payload).await;
    assert_eq!(status, 200, "{body}");
    let opened = slack.opened();
    assert_eq!(opened.len(), before + 1, "one view opened: {opened:#?}");
    assert_eq!(opened[before]["trigger_id"], trigger.as_str());
    opened[before]["view"].clone()
}

/// Slack user `user` submitting the code dialog `view` with `code` and `note`: the answer.
async fn submit(
    s: &SignIn,
    user: &str,
    view: &Value,
    code: &str,
    note: Option<&str>,
) -> (u16, Value) {
    let payload = json!({
        "type": "view_submission",
        "user": { "id": user, "team_id": "T0" },
        "team": { "id": "T0" },
        "view": {
            "id": "V0",
            "type": "modal",
            "callback_id": view["callback_id"],
            "private_metadata": view["private_metadata"],
            "state": { "values": {
                "code": { "code": { "type": "plain_text_input", "value": code } },
                "note": { "note": { "type": "plain_text_input", "value": note } },
            } },
        },
    });
    from_slack(s, &payload).await
}

/// The text of a view that only says something.
fn said(view: &Value) -> String {
    view["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The latest audit event of `action` whose reason is `reason`.
async fn refusal(db: &Db, action: &str, reason: &str) -> gateway::audit::AuditEvent {
    let found = events(db, action).await;
    found
        .into_iter()
        .rev()
        .find(|e| e.details["reason"] == reason)
        .unwrap_or_else(|| panic!("no {action} refused for {reason}"))
}

async fn request(s: &SignIn, credential: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = if body.is_some() {
        reqwest::Method::POST
    } else {
        reqwest::Method::GET
    };
    crate::app_rules::api(&s.gw.url, method, path, credential, body).await
}

both_backends!(
    a_deploy_is_approved_from_slack_by_a_gateway_admin_with_a_code_and_nobody_else,
    |db| async move {
        let (rack_url, _stop) = crate::approvals::fake_rack().await;
        let slack = FakeSlack::start().await;
        for (email, role) in [(BOSS, "admin"), ("viewer@example.com", "viewer")] {
            let (ok, _, err) = admin(&db, &["users", "add", email, "--role", role]);
            assert!(ok, "{err}");
        }
        slack.add_person("UBOSS", Some(BOSS), json!({}));
        slack.add_person("UVIEWER", Some("viewer@example.com"), json!({}));
        slack.add_person("USTRANGER", Some("stranger@example.com"), json!({}));
        // A guest whose account claims the admin's address; a member Slack shows no e-mail of.
        slack.add_person("UGUEST", Some(BOSS), json!({ "is_restricted": true }));
        slack.add_person("UHIDDEN", None, json!({}));
        // Someone from another organisation in a shared channel (Slack Connect), whose own
        // admins gave them the admin's address; and one Slack calls a stranger.
        slack.add_person("UCONNECT", Some(BOSS), json!({ "team_id": "T9" }));
        slack.add_person("USTRANGE", Some(BOSS), json!({ "is_stranger": true }));
        // A second admin, locked.
        let (ok, _, err) = admin(
            &db,
            &["users", "add", "locked@example.com", "--role", "admin"],
        );
        assert!(ok, "{err}");
        let (ok, _, err) = admin(&db, &["users", "lock", "locked@example.com"]);
        assert!(ok, "{err}");
        slack.add_person("ULOCKED", Some("locked@example.com"), json!({}));
        let ci = role_token(&db, "cicd");
        let env = [
            ("SLACK_WEBHOOK_URL", slack.url.as_str()),
            ("SLACK_SIGNING_SECRET", SIGNING_SECRET),
            ("SLACK_BOT_TOKEN", BOT_TOKEN),
            ("SLACK_API_URL", slack.api_url.as_str()),
            ("MFA_ENCRYPTION_KEY", KEY),
        ];
        let s = SignIn::start_on_rack(&db, &env, &rack_url).await;

        // CI asks; the channel's message offers the decision.
        let ask = json!({ "app": "web", "git_commit": SHA, "branch": "main", "message": "fix" });
        let (status, asked) = request(&s, &ci, "/api/v1/deploy-approvals", Some(ask)).await;
        assert_eq!(status, 201, "{asked}");
        let id = asked["id"].as_i64().unwrap_or_default();
        let posted = eventually(|| async { !slack.texts().is_empty() }).await;
        assert!(posted, "no message in Slack");
        let message = slack.posts.lock().map(|p| p[0].clone()).unwrap_or_default();
        let buttons = &message["blocks"][1]["elements"];
        assert_eq!(buttons[0]["action_id"], "rgw_approve", "{message}");
        assert_eq!(buttons[0]["value"], id.to_string());
        assert_eq!(buttons[1]["action_id"], "rgw_reject", "{message}");
        let pending = format!("/api/v1/deploy-approvals/{id}");

        // Not Slack: no signature, another secret, an old one. Nothing is read or opened.
        let pressed_body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(
                "payload",
                &json!({
                    "type": "block_actions", "user": { "id": "UBOSS" }, "trigger_id": "t",
                    "actions": [{ "action_id": "rgw_approve", "value": id.to_string() }],
                })
                .to_string(),
            )
            .finish();
        let unsigned = client()
            .post(format!("{}{PATH}", s.gw.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(pressed_body.clone())
            .send()
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(unsigned.ok(), Some(401));
        let forged = send_signed(
            &s,
            &pressed_body,
            "another-secret-of-32-characters!",
            now_secs(),
        )
        .await;
        assert_eq!(forged.status().as_u16(), 401);
        let old = send_signed(&s, &pressed_body, SIGNING_SECRET, now_secs() - 400).await;
        assert_eq!(old.status().as_u16(), 401);
        let said_old: Value = old.json().await.unwrap_or_default();
        assert!(
            said_old["error"]
                .as_str()
                .is_some_and(|e| e.contains("five minutes")),
            "{said_old}"
        );
        assert!(
            slack.opened().is_empty(),
            "nothing opened for unsigned requests"
        );
        let unsigned_events = events(&db, "gateway:slack:authenticate").await;
        let reasons: Vec<&Value> = unsigned_events
            .iter()
            .map(|e| &e.details["reason"])
            .collect();
        assert_eq!(
            reasons,
            ["no_timestamp", "bad_signature", "stale_timestamp"],
            "{unsigned_events:?}"
        );

        // Signed, but not a payload; larger than Slack sends.
        let garbage = send_signed(&s, "payload=%7Bnot-json", SIGNING_SECRET, now_secs()).await;
        assert_eq!(garbage.status().as_u16(), 400);
        let none = send_signed(&s, "nothing=here", SIGNING_SECRET, now_secs()).await;
        assert_eq!(none.status().as_u16(), 400);
        let huge = format!("payload={}", "a".repeat(100 * 1024));
        let huge = send_signed(&s, &huge, SIGNING_SECRET, now_secs()).await;
        assert_eq!(huge.status().as_u16(), 413);

        // People who may not decide here are told why, and it is audited.
        let view = press(&s, &slack, "USTRANGER", "rgw_approve", id).await;
        assert!(
            said(&view).contains("Nobody on the gateway has your Slack e-mail"),
            "{view}"
        );
        assert!(view.get("submit").is_none(), "{view}");
        let e = refusal(
            &db,
            "gateway:deploy-approvals:approve",
            "not_a_gateway_user",
        )
        .await;
        assert_eq!(e.details["slack_user"], "USTRANGER");
        assert_eq!(e.details["slack_email"], "stranger@example.com");
        assert_eq!(e.details["approval_id"], id);
        let view = press(&s, &slack, "UGUEST", "rgw_approve", id).await;
        assert!(said(&view).contains("Only full members"), "{view}");
        refusal(&db, "gateway:deploy-approvals:approve", "slack_guest").await;
        for outsider in ["UCONNECT", "USTRANGE"] {
            let view = press(&s, &slack, outsider, "rgw_approve", id).await;
            assert!(said(&view).contains("Only full members"), "{view}");
            let e = refusal(
                &db,
                "gateway:deploy-approvals:approve",
                "slack_other_workspace",
            )
            .await;
            assert_eq!(e.details["slack_user"], outsider);
        }
        let view = press(&s, &slack, "ULOCKED", "rgw_approve", id).await;
        assert!(said(&view).contains("account is locked"), "{view}");
        let e = refusal(&db, "gateway:deploy-approvals:approve", "user_locked").await;
        assert_eq!(e.user_email.as_deref(), Some("locked@example.com"));
        let view = press(&s, &slack, "UHIDDEN", "rgw_approve", id).await;
        assert!(said(&view).contains("users:read.email"), "{view}");
        let view = press(&s, &slack, "UVIEWER", "rgw_approve", id).await;
        assert!(
            said(&view).contains("Your role (viewer) may not approve"),
            "{view}"
        );
        let e = refusal(&db, "gateway:deploy-approvals:approve", "forbidden").await;
        assert_eq!(e.user_email.as_deref(), Some("viewer@example.com"));
        // Pressing again and again asks Slack who they are once (for 30 s): a member clicking
        // away does not use up the bot token's rate limit.
        for _ in 0..3 {
            press(&s, &slack, "UVIEWER", "rgw_approve", id).await;
        }
        let asked = slack
            .asked_about
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        assert_eq!(
            asked.iter().filter(|u| *u == "UVIEWER").count(),
            1,
            "{asked:?}"
        );
        // The admin has no authenticator app yet: a Slack account alone lets nothing through.
        let view = press(&s, &slack, "UBOSS", "rgw_approve", id).await;
        assert!(
            said(&view).contains("takes a code from your authenticator app"),
            "{view}"
        );
        refusal(
            &db,
            "gateway:deploy-approvals:approve",
            "no_authenticator_app",
        )
        .await;

        // With an app, Approve opens the code dialog.
        let (mut browser, _) = web_sign_in_as(&s, BOSS).await;
        let mut app = set_up(&s, &mut browser).await;
        let view = press(&s, &slack, "UBOSS", "rgw_approve", id).await;
        assert_eq!(view["callback_id"], "rgw_decide", "{view}");
        assert_eq!(view["submit"]["text"], "Approve");
        assert!(
            said(&view).contains(&format!("*Deploy of web at {}* (#{id})", &SHA[..12])),
            "{view}"
        );

        // A wrong code keeps the dialog open, is counted and audited; nothing is decided.
        let (status, answer) = submit(&s, "UBOSS", &view, &app.wrong_code(), None).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["response_action"], "errors", "{answer}");
        assert!(
            answer["errors"]["code"]
                .as_str()
                .is_some_and(|e| e.contains("not right")),
            "{answer}"
        );
        let e = refusal(&db, "gateway:deploy-approvals:approve", "wrong_code").await;
        assert_eq!(e.details["failures"], 1);
        assert_eq!(e.details["via"], "slack");
        let (_, still) = request(&s, &ci, &pending, None).await;
        assert_eq!(still["status"], "pending", "{still}");
        // Not a code at all: said so, not counted.
        let (_, answer) = submit(&s, "UBOSS", &view, "hello", None).await;
        assert!(
            answer["errors"]["code"]
                .as_str()
                .is_some_and(|e| e.contains("six digits")),
            "{answer}"
        );
        // Someone else submitting the admin's dialog is checked as themselves.
        let code = app.next_code().await;
        let (_, answer) = submit(&s, "UVIEWER", &view, &code, None).await;
        assert_eq!(answer["response_action"], "update", "{answer}");
        assert!(
            said(&answer["view"]).contains("may not approve"),
            "{answer}"
        );

        // The admin's right code approves it, with the note; the trail says it came from Slack.
        let (status, answer) = submit(&s, "UBOSS", &view, &code, Some("ship it")).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["response_action"], "update", "{answer}");
        let text = said(&answer["view"]);
        assert!(text.starts_with("Approved: the deploy of *web*"), "{text}");
        let (_, decided) = request(&s, &ci, &pending, None).await;
        assert_eq!(decided["status"], "approved", "{decided}");
        assert_eq!(decided["decided_by"], BOSS);
        assert_eq!(decided["note"], "ship it");
        let approvals = events(&db, "gateway:deploy-approvals:approve").await;
        let made = approvals
            .iter()
            .find(|e| e.details.get("deploy_until").is_some_and(|d| !d.is_null()))
            .unwrap_or_else(|| panic!("no approval event in {approvals:?}"));
        assert_eq!(made.user_email.as_deref(), Some(BOSS));
        assert_eq!(made.details["via"], "slack");
        assert_eq!(made.details["slack_user"], "UBOSS");
        assert_eq!(made.details["note"], "ship it");
        let heard = eventually(|| async {
            slack
                .texts()
                .iter()
                .any(|t| t.contains("approved by admin@example.com"))
        })
        .await;
        assert!(heard, "the channel hears of it: {:#?}", slack.texts());
        // The pressed message loses its buttons and says what became of the request.
        let replaced = eventually(|| async { !slack.replacements().is_empty() }).await;
        let replacements = slack.replacements();
        assert!(replaced, "the message is replaced");
        assert_eq!(replacements.len(), 1, "{replacements:#?}");
        assert_eq!(replacements[0]["replace_original"], true);
        let now_says = replacements[0]["text"].as_str().unwrap_or_default();
        assert!(
            now_says.contains(&format!("(#{id}) — approved by {BOSS}")),
            "{now_says}"
        );
        assert!(now_says.contains("ship it"), "{now_says}");

        // Sent again (a replay, or a second click): nothing more is decided, and the message
        // it came from is settled again (it may be a copy that still has its buttons).
        let (_, again) = submit(&s, "UBOSS", &view, &code, Some("ship it")).await;
        assert!(
            said(&again["view"]).contains("is approved: nothing was changed"),
            "{again}"
        );
        let settled = eventually(|| async { slack.replacements().len() == 2 }).await;
        assert!(settled, "{:#?}", slack.replacements());
        // A press on a copy of the message that still has its buttons: told, and it is settled.
        let view = press(&s, &slack, "UBOSS", "rgw_reject", id).await;
        assert!(
            said(&view).contains("is approved: nothing was changed"),
            "{view}"
        );
        let settled = eventually(|| async { slack.replacements().len() == 3 }).await;
        assert!(settled, "{:#?}", slack.replacements());

        // The admin's own request: another person must decide, from Slack as anywhere.
        let boss = browser
            .cookies
            .get("rg_session")
            .cloned()
            .unwrap_or_default();
        let mine = json!({ "app": "web", "git_commit": "ab".repeat(20) });
        let (status, own) = request(&s, &boss, "/api/v1/deploy-approvals", Some(mine)).await;
        assert_eq!(status, 201, "{own}");
        let own_id = own["id"].as_i64().unwrap_or_default();
        let view = press(&s, &slack, "UBOSS", "rgw_reject", own_id).await;
        assert!(said(&view).contains("You asked for this deploy"), "{view}");
        let e = refusal(&db, "gateway:deploy-approvals:reject", "own_request").await;
        assert_eq!(e.details["approval_id"], own_id);
        // No such request: said, and audited.
        let view = press(&s, &slack, "UBOSS", "rgw_approve", 999_999).await;
        assert!(
            said(&view).contains("There is no deploy request #999999"),
            "{view}"
        );
        let e = refusal(&db, "gateway:deploy-approvals:approve", "not_found").await;
        assert_eq!(e.details["approval_id"], 999_999);

        // Rejecting from Slack, with a backup code.
        let ask = json!({ "app": "web", "git_commit": "cd".repeat(20) });
        let (status, asked) = request(&s, &ci, "/api/v1/deploy-approvals", Some(ask)).await;
        assert_eq!(status, 201, "{asked}");
        let second = asked["id"].as_i64().unwrap_or_default();
        let view = press(&s, &slack, "UBOSS", "rgw_reject", second).await;
        assert_eq!(view["submit"]["text"], "Reject", "{view}");
        let backup = app.backup_codes[0].clone();
        let (_, answer) = submit(&s, "UBOSS", &view, &backup, Some("not today")).await;
        let text = said(&answer["view"]);
        assert!(text.starts_with("Rejected: the deploy of *web*"), "{text}");
        let (_, decided) =
            request(&s, &ci, &format!("/api/v1/deploy-approvals/{second}"), None).await;
        assert_eq!(decided["status"], "rejected", "{decided}");
        assert_eq!(decided["note"], "not today");

        // Wrong codes from Slack count towards the same lockout as anywhere: the fifth in a
        // row locks the approver's codes, and the dialog says until when.
        let ask = json!({ "app": "web", "git_commit": "ef".repeat(20) });
        let (status, asked) = request(&s, &ci, "/api/v1/deploy-approvals", Some(ask)).await;
        assert_eq!(status, 201, "{asked}");
        let third = asked["id"].as_i64().unwrap_or_default();
        let view = press(&s, &slack, "UBOSS", "rgw_approve", third).await;
        let mut last = Value::Null;
        for _ in 0..5 {
            (_, last) = submit(&s, "UBOSS", &view, &app.wrong_code(), None).await;
        }
        assert!(
            last["errors"]["code"]
                .as_str()
                .is_some_and(|e| e.contains("Too many wrong codes")),
            "{last}"
        );
        let e = refusal(&db, "gateway:deploy-approvals:approve", "locked_out").await;
        assert_eq!(e.details["via"], "slack");
        assert_eq!(e.details["lockout_started"], true);
        let (_, still) = request(&s, &ci, &format!("/api/v1/deploy-approvals/{third}"), None).await;
        assert_eq!(still["status"], "pending", "{still}");

        // Nothing secret reached the log.
        let log = s.gw.all_output();
        for secret in [SIGNING_SECRET, BOT_TOKEN, code.as_str()] {
            assert!(!log.contains(secret), "{secret} in the log");
        }
    }
);
