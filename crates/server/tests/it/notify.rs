//! Notifications end to end: a gateway configured with a (fake) Slack webhook and a (fake) SMTP
//! server tells Slack about deploy requests and decisions and security events, e-mails the
//! people a change is about and `EMAIL_ALERTS_TO`, retries when Slack asks it to wait, gives up
//! (and says why in `notify list`) when Slack refuses for good, announces nothing from before
//! it started, and never lets a secret (a new token, the webhook's address) into a message or
//! a log line.

use std::time::Duration;

use gateway::store::NewNotification;
use serde_json::{Value, json};

use crate::both_backends;
use crate::fake_notify::{FakeSlack, FakeSmtp, Mail, SlackAnswer, WEBHOOK_SECRET};
use crate::kit::{admin, admin_with, client, eventually, role_token};
use crate::signin::SignIn;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

async fn post(s: &SignIn, path: &str, credential: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}{path}", s.gw.url))
        .bearer_auth(credential)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Waits (up to 10 s) until Slack holds a message containing `needle`; that message.
async fn slack_message(s: &SignIn, slack: &FakeSlack, needle: &str) -> String {
    let found = eventually(|| async { slack.texts().iter().any(|t| t.contains(needle)) }).await;
    let texts = slack.texts();
    let log = s.gw.all_output();
    let log: Vec<&str> = log.lines().filter(|l| l.contains("notif")).collect();
    assert!(
        found,
        "no Slack message with {needle:?} in {texts:#?}; the gateway said {log:#?}"
    );
    texts
        .into_iter()
        .find(|t| t.contains(needle))
        .unwrap_or_default()
}

/// Waits (up to 10 s) until the SMTP server took mail to `to` whose data contains `needle`.
async fn mail_to(smtp: &FakeSmtp, to: &str, needle: &str) -> Mail {
    let matches = |m: &Mail| m.to.iter().any(|t| t == to) && m.data.contains(needle);
    let found = eventually(|| async { smtp.mails().iter().any(matches) }).await;
    let mails = smtp.mails();
    assert!(found, "no mail to {to} with {needle:?} in {mails:#?}");
    mails
        .into_iter()
        .find(matches)
        .unwrap_or_else(|| panic!("gone"))
}

both_backends!(
    security_events_and_deploy_requests_reach_slack_and_the_people_they_are_about,
    |db| async move {
        let (rack_url, _stop) = crate::approvals::fake_rack().await;
        let slack = FakeSlack::start().await;
        let smtp = FakeSmtp::start().await;
        for (email, role) in [
            ("admin@example.com", "admin"),
            ("deployer@example.com", "deployer"),
            ("viewer@example.com", "viewer"),
        ] {
            let (ok, _, err) = admin(&db, &["users", "add", email, "--role", role]);
            assert!(ok, "{err}");
        }
        let ci = role_token(&db, "cicd");
        // Slack is busy when the first message comes: it asks for a second's wait.
        slack.answer_next(&[SlackAnswer {
            status: 429,
            retry_after: Some(1),
            body: "rate_limited",
        }]);
        let env = [
            ("SLACK_WEBHOOK_URL", slack.url.as_str()),
            ("SMTP_URL", smtp.url.as_str()),
            ("EMAIL_FROM", "Rack Gateway <gateway@example.com>"),
            ("EMAIL_ALERTS_TO", "security@example.com"),
        ];
        let s = SignIn::start_on_rack(&db, &env, &rack_url).await;
        let boss = crate::approvals::session_of(&s, "admin@example.com").await;

        // CI asks for a deploy; its message tries to ping the channel and to pass off a link.
        let ask = json!({
            "app": "web", "git_commit": SHA, "branch": "main",
            "message": "<!channel> urgent: see <https://evil.example|the fix>",
            "ci_url": "https://ci.example.com/p/9",
        });
        let (status, asked) = post(&s, "/api/v1/deploy-approvals", &ci, ask).await;
        assert_eq!(status, 201, "{asked}");
        let id = asked["id"].as_i64().unwrap_or_default();
        let text = slack_message(&s, &slack, "waits for approval").await;
        assert!(
            text.contains(&format!(
                "Deploy of web at {} waits for approval (#{id})",
                &SHA[..12]
            )),
            "{text}"
        );
        assert!(text.contains("API token cicd-token"), "{text}");
        assert!(
            !text.contains("<!channel>") && !text.contains("<https://evil"),
            "{text}"
        );
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        assert!(
            text.contains(&format!("{}/deploy-approvals#request-{id}", s.gw.url)),
            "the button leads to the request: {text}"
        );
        // Without a Slack app, no decision buttons, and nothing answers Slack's presses.
        assert!(!text.contains("rgw_approve"), "{text}");
        let pressed = client()
            .post(format!("{}/api/v1/slack/interactions", s.gw.url))
            .body("payload=%7B%7D")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pressed.status().as_u16(), 404);
        let said: Value = pressed.json().await.unwrap_or_default();
        assert_eq!(said["code"], "slack_off", "{said}");
        assert!(
            said["error"]
                .as_str()
                .is_some_and(|e| e.contains("\"Approving from Slack\" in docs/deployment.md")),
            "{said}"
        );

        // A person approves it.
        let path = format!("/api/v1/deploy-approvals/{id}/approve");
        let (status, body) = post(&s, &path, &boss, json!({ "note": "ship it" })).await;
        assert_eq!(status, 200, "{body}");
        let text = slack_message(&s, &slack, "approved by admin@example.com").await;
        assert!(
            text.contains("ship it") && text.contains("Deploy before"),
            "{text}"
        );
        assert!(
            text.contains("*Requested by:* API token cicd-token"),
            "{text}"
        );

        // A token made at the server's command line for a person: Slack, the owner and the
        // alerts list hear of it; nobody sees its secret.
        let (ok, out, err) = admin(
            &db,
            &[
                "tokens",
                "create",
                "--name",
                "laptop",
                "--role",
                "deployer",
                "--owner",
                "deployer@example.com",
            ],
        );
        assert!(ok, "{err}");
        let secret = out.lines().last().unwrap_or_default().trim().to_string();
        let text = slack_message(&s, &slack, "API token laptop created by").await;
        // Named as the trail names them: the host's login, at the server's command line.
        assert!(
            text.contains(" (server command line)") && !text.contains("an operator"),
            "{text}"
        );
        let to_owner = mail_to(&smtp, "deployer@example.com", "API token laptop created").await;
        assert_eq!(to_owner.from, "gateway@example.com");
        assert!(
            to_owner.data.contains("Access: role deployer"),
            "{}",
            to_owner.data
        );
        mail_to(&smtp, "security@example.com", "API token laptop created").await;

        // An admin locks someone: Slack, the person and the alerts list.
        let lock = "/api/v1/users/viewer@example.com/lock";
        let (status, body) = post(&s, lock, &boss, json!({})).await;
        assert_eq!(status, 200, "{body}");
        slack_message(
            &s,
            &slack,
            "viewer@example.com was locked by admin@example.com",
        )
        .await;
        let locked = mail_to(
            &smtp,
            "viewer@example.com",
            "was locked by admin@example.com",
        )
        .await;
        assert!(
            locked
                .data
                .contains("Subject: [127.0.0.1] viewer@example.com was locked"),
            "{}",
            locked.data
        );
        mail_to(&smtp, "security@example.com", "was locked by").await;

        // Someone added over HTTP gets a welcome with the way in.
        let add = json!({ "email": "newbie@example.com", "role": "deployer" });
        let (status, body) = post(&s, "/api/v1/users", &boss, add).await;
        assert_eq!(status, 201, "{body}");
        let welcome = mail_to(
            &smtp,
            "newbie@example.com",
            "newbie@example.com was added by admin@example.com",
        )
        .await;
        assert!(
            welcome.data.contains(&format!("Sign in: {}/", s.gw.url)),
            "{}",
            welcome.data
        );
        assert!(welcome.data.contains("Role: deployer"), "{}", welcome.data);

        // Nothing from before the start is announced (three users were added then), a refused
        // change is not announced, and no secret is anywhere.
        let (status, _) = post(
            &s,
            "/api/v1/users/nobody@example.com/lock",
            &boss,
            json!({}),
        )
        .await;
        assert_eq!(status, 404);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let texts = slack.texts();
        let added: Vec<_> = texts
            .iter()
            .filter(|t| t.contains("was added by"))
            .collect();
        assert_eq!(added.len(), 1, "only the one added since: {texts:#?}");
        assert!(
            !texts.iter().any(|t| t.contains("nobody@example.com")),
            "{texts:#?}"
        );
        let mails = smtp.mails();
        for m in &mails {
            assert!(
                !m.data.contains(&secret) && !m.data.contains(&ci),
                "{}",
                m.data
            );
        }
        assert!(!texts.iter().any(|t| t.contains(&secret) || t.contains(&ci)));
        let output = s.gw.all_output();
        assert!(
            !output.contains(WEBHOOK_SECRET),
            "the webhook's address was logged"
        );
        assert!(output.contains("notification sent"), "sending is logged");

        // Every message went once, the one Slack asked to wait for included.
        let requested = texts
            .iter()
            .filter(|t| t.contains("waits for approval"))
            .count();
        assert_eq!(requested, 1, "{texts:#?}");
        let (ok, listed, err) = admin(&db, &["notify", "list", "--json"]);
        assert!(ok, "{err}");
        let listed: Vec<Value> = serde_json::from_str(&listed).unwrap_or_default();
        let retried = listed.iter().find(|n| n["topic"] == "approval_requested");
        assert_eq!(
            retried.map(|n| n["state"].clone()),
            Some(json!("sent")),
            "{listed:#?}"
        );
        assert_eq!(
            retried.map(|n| n["attempts"].clone()),
            Some(json!(2)),
            "{listed:#?}"
        );
    }
);

both_backends!(
    a_webhook_slack_refuses_is_given_up_on_and_listed_with_why,
    |db| async move {
        let slack = FakeSlack::start().await;
        slack.answer_always(SlackAnswer {
            status: 404,
            retry_after: None,
            body: "no_service",
        });
        let env = [("SLACK_WEBHOOK_URL", slack.url.as_str())];
        let with_metrics = [env[0], ("METRICS_LISTEN_ADDR", "127.0.0.1:0")];
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &with_metrics).await;
        let (ok, _, err) = admin(
            &db,
            &["tokens", "create", "--name", "gone", "--role", "viewer"],
        );
        assert!(ok, "{err}");
        let listed = eventually(|| async {
            let (_, out, _) = admin(&db, &["notify", "list", "--failed"]);
            out.contains("token_created")
        })
        .await;
        let (ok, out, err) = admin(&db, &["notify", "list", "--failed"]);
        assert!(ok && listed, "{out}{err}");
        assert!(
            out.contains("failed") && out.contains("slack answered 404: no_service"),
            "{out}"
        );
        assert!(!out.contains(WEBHOOK_SECRET), "{out}");
        assert!(!s.gw.all_output().contains(WEBHOOK_SECRET));
        // Operators can alert on it.
        let metrics_addr =
            s.gw.all_output()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find_map(|v| v["fields"]["metrics_addr"].as_str().map(str::to_string))
                .unwrap_or_default();
        let scraped = client()
            .get(format!("http://{metrics_addr}/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default();
        assert!(
            scraped.contains(
                "rack_gateway_notifications_total{channel=\"slack\",result=\"failed\"} 1\n"
            ),
            "{scraped}"
        );

        // `notify test` says the same at once, and fails.
        let (ok, out, err) = admin_with(&db, &["notify", "test"], &env);
        assert!(!ok, "{out}");
        assert!(
            out.contains("slack: refused: slack answered 404: no_service"),
            "{out}{err}"
        );
        assert!(!format!("{out}{err}").contains(WEBHOOK_SECRET));
    }
);

both_backends!(
    a_sign_in_from_a_network_new_to_its_person_is_told_to_them,
    |db| async move {
        let smtp = FakeSmtp::start().await;
        for (email, role) in [("viewer@example.com", "viewer"), ("ops@example.com", "ops")] {
            let (ok, _, err) = admin(&db, &["users", "add", email, "--role", role]);
            assert!(ok, "{err}");
        }
        let env = [
            ("SMTP_URL", smtp.url.as_str()),
            ("EMAIL_FROM", "Rack Gateway <gateway@example.com>"),
            ("EMAIL_ALERTS_TO", "security@example.com"),
            // The test's requests say where they come from, as a load balancer would.
            ("TRUSTED_PROXIES", "127.0.0.0/8"),
        ];
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &env).await;
        let sign_in = |email: &'static str, from: &'static str| {
            let login = format!("{}/api/v1/auth/web/login?return_to=/account", s.gw.url);
            async move {
                let mut b = dev_oidc::browser::Browser::from_address(email, from)
                    .unwrap_or_else(|e| panic!("{e}"));
                let page = b.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
                assert!(page.body.contains(email), "{}", page.body);
            }
        };
        // The first sign-in ever, then one from the same network: not news.
        sign_in("viewer@example.com", "203.0.113.5").await;
        sign_in("viewer@example.com", "203.0.113.77").await;
        // Another network: its person is told, with where from.
        sign_in("viewer@example.com", "198.51.100.9").await;
        let mail = mail_to(&smtp, "viewer@example.com", "new network").await;
        assert!(mail.data.contains("198.51.100.0/24"), "{}", mail.data);
        assert!(mail.data.contains("the web"), "{}", mail.data);
        // Known from then on; and each person's places are their own.
        sign_in("viewer@example.com", "198.51.100.10").await;
        sign_in("ops@example.com", "198.51.100.9").await;
        // Something later that is news: everything before it has been looked at by then.
        let (ok, _, err) = admin(&db, &["users", "lock", "ops@example.com"]);
        assert!(ok, "{err}");
        mail_to(&smtp, "ops@example.com", "was locked").await;
        let told: Vec<Mail> = smtp
            .mails()
            .into_iter()
            .filter(|m| m.data.contains("new network"))
            .collect();
        assert_eq!(told.len(), 1, "{told:#?}");
        assert_eq!(
            told[0].to,
            ["viewer@example.com"],
            "only its person: {told:#?}"
        );

        // Noting the same event again (a restart, a second gateway) gives the same answer;
        // a later sign-in from there is not news; a person's first place never is.
        let st = crate::kit::store(&db).await;
        let day = 24 * 3600 * 1000;
        let note = |email: &'static str, place: &'static str, seq: i64| {
            let st = st.clone();
            async move {
                st.note_sign_in_place(email, place, seq, gateway::store::now_ms(), 180 * day)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        assert!(note("viewer@example.com", "192.0.2.0/24", 1_000_000).await);
        assert!(note("viewer@example.com", "192.0.2.0/24", 1_000_000).await);
        assert!(!note("viewer@example.com", "192.0.2.0/24", 1_000_001).await);
        assert!(!note("nobody@example.com", "192.0.2.0/24", 1_000_002).await);
        // Someone back after a long absence: every place of theirs is forgotten, yet they
        // signed in before, so a sign-in from anywhere is news — an account left dormant is
        // what a stolen password is tried on.
        let long_ago = gateway::store::now_ms() - 400 * day;
        let kept = 180 * day;
        let st2 = st.clone();
        let note_at = |place: &'static str, seq: i64, at: i64| {
            let st = st2.clone();
            async move {
                st.note_sign_in_place("dormant@example.com", place, seq, at, kept)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        assert!(!note_at("192.0.2.0/24", 2_000_000, long_ago).await);
        let now = gateway::store::now_ms();
        assert!(note_at("198.51.100.0/24", 2_000_001, now).await);
        assert!(
            note_at("192.0.2.0/24", 2_000_002, now).await,
            "unseen for 400 days"
        );
        assert!(
            note_at("192.0.2.0/24", 2_000_002, now).await,
            "the same event again: the same answer"
        );
        assert!(!note_at("192.0.2.0/24", 2_000_003, now).await, "seen now");
    }
);

// Two workers: the command is waited for on one, the fakes answer it on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_sends_on_every_channel_and_needs_no_database() {
    let slack = FakeSlack::start().await;
    let smtp = FakeSmtp::start().await;
    let env = [
        ("SLACK_WEBHOOK_URL", slack.url.as_str()),
        ("SMTP_URL", smtp.url.as_str()),
        ("EMAIL_FROM", "gateway@example.com"),
        ("PUBLIC_URL", "https://gw.example.com"),
    ];
    let out = std::process::Command::new(crate::kit::BIN)
        .args(["notify", "test", "--to", "ops@example.com"])
        .env_remove("DATABASE_URL")
        .envs(env)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("slack: sent") && stdout.contains("email to ops@example.com: sent"),
        "{stdout}"
    );
    let texts = slack.texts();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Test notification") && t.contains("https://gw.example.com/")),
        "{texts:?}"
    );
    let mails = smtp.mails();
    assert!(
        mails.iter().any(|m| m.to == ["ops@example.com"]
            && m.data
                .contains("Subject: [gw.example.com] Test notification")),
        "{mails:#?}"
    );

    // With the Slack app: its bot token is checked too, scopes and all.
    let with_app = |scopes: &str| {
        if let Ok(mut held) = slack.scopes.lock() {
            *held = scopes.to_string();
        }
        std::process::Command::new(crate::kit::BIN)
            .args(["notify", "test"])
            .env_remove("DATABASE_URL")
            .env_remove("SMTP_URL")
            .envs([
                ("SLACK_WEBHOOK_URL", slack.url.as_str()),
                ("SLACK_SIGNING_SECRET", crate::fake_notify::SIGNING_SECRET),
                ("SLACK_BOT_TOKEN", crate::fake_notify::BOT_TOKEN),
                ("SLACK_API_URL", slack.api_url.as_str()),
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let out = with_app("incoming-webhook,users:read,users:read.email");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("slack app: the bot token works in Example (T0)"),
        "{stdout}"
    );
    let out = with_app("incoming-webhook,users:read");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("lacks the scope(s) users:read.email"),
        "{stdout}"
    );
    assert!(!stdout.contains(crate::fake_notify::BOT_TOKEN), "{stdout}");

    // Nothing configured: said so.
    let out = std::process::Command::new(crate::kit::BIN)
        .args(["notify", "test"])
        .env_remove("SLACK_WEBHOOK_URL")
        .env_remove("SMTP_URL")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no notification channel is configured"));
}

both_backends!(
    the_outbox_is_queued_once_and_claimed_by_one_sender_at_a_time,
    |db| async move {
        let store = crate::kit::store(&db).await;
        store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
        let message = |seq: i64| NewNotification {
            channel: "email",
            recipient: "ann@example.com".into(),
            topic: "test",
            message: r#"{"subject":"s","body":"b"}"#.into(),
            audit_seq: seq,
        };
        // The cursor starts where it is first asked for, and stays there.
        assert_eq!(store.notify_cursor(7).await.ok(), Some(7));
        assert_eq!(store.notify_cursor(99).await.ok(), Some(7));
        let now = 1_000_000;
        let queued = store
            .queue_notifications(7, 9, &[message(8), message(9)], None, now)
            .await;
        assert_eq!(queued.ok(), Some(true));
        // A second instance that read the same cursor queues nothing.
        let lost = store
            .queue_notifications(7, 9, &[message(8)], None, now)
            .await;
        assert_eq!(lost.ok(), Some(false));
        assert_eq!(store.notify_cursor(0).await.ok(), Some(9));
        let all = store
            .list_notifications(false, 10)
            .await
            .unwrap_or_default();
        assert_eq!(all.len(), 2, "{all:?}");

        // One claim holds both; another sender gets none until the lease runs out.
        let first = store
            .claim_notifications(now, 60_000, 10)
            .await
            .unwrap_or_default();
        assert_eq!(first.iter().map(|n| n.attempts).collect::<Vec<_>>(), [1, 1]);
        let second = store
            .claim_notifications(now + 1, 60_000, 10)
            .await
            .unwrap_or_default();
        assert!(second.is_empty(), "{second:?}");
        let (a, b) = (first[0].id, first[1].id);
        let claim = first[0]
            .claimed_until
            .unwrap_or_else(|| panic!("{first:?}"));
        assert_eq!(claim, now + 60_000);
        // The claim is renewed for one message right before it is sent; a claim that does not
        // hold it (a stale one) renews and records nothing.
        let renewed = store.renew_notification_claim(a, claim, now + 70_000).await;
        assert_eq!(renewed.ok(), Some(true));
        let stale = store.renew_notification_claim(a, claim, now + 80_000).await;
        assert_eq!(stale.ok(), Some(false));
        let sent = store.notification_sent(a, claim, now + 2).await;
        assert_eq!(
            sent.ok(),
            Some(false),
            "recorded under a claim that no longer holds it"
        );
        let sent = store.notification_sent(a, now + 70_000, now + 2).await;
        assert_eq!(sent.ok(), Some(true));
        let failed = store
            .notification_failed(b, claim, "try later", now + 2, Some(now + 30_000))
            .await;
        assert_eq!(failed.ok(), Some(true));
        let early = store
            .claim_notifications(now + 29_000, 60_000, 10)
            .await
            .unwrap_or_default();
        assert!(early.is_empty(), "{early:?}");
        let again = store
            .claim_notifications(now + 30_000, 60_000, 10)
            .await
            .unwrap_or_default();
        assert_eq!(
            again.iter().map(|n| (n.id, n.attempts)).collect::<Vec<_>>(),
            [(b, 2)]
        );
        // Its claim runs out while it is being sent; another instance takes it. The first one's
        // outcome is not recorded over the second's claim.
        let slow_claim = again[0].claimed_until.unwrap_or_default();
        let taken = store
            .claim_notifications(slow_claim, 60_000, 10)
            .await
            .unwrap_or_default();
        assert_eq!(
            taken.iter().map(|n| (n.id, n.attempts)).collect::<Vec<_>>(),
            [(b, 3)]
        );
        let late = store
            .notification_failed(b, slow_claim, "timed out", now + 95_000, None)
            .await;
        assert_eq!(late.ok(), Some(false));
        let takers_claim = taken[0].claimed_until.unwrap_or_default();
        store
            .notification_failed(b, takers_claim, "refused for good", now + 96_000, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let failed = store.list_notifications(true, 10).await.unwrap_or_default();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].last_error.as_deref(), Some("refused for good"));
        let expired_lease = store.claim_notifications(now + 999_999, 60_000, 10).await;
        assert!(
            expired_lease.unwrap_or_default().is_empty(),
            "sent and failed ones stay put"
        );

        // Kept a while, then pruned; a queued one is never pruned.
        store
            .queue_notifications(9, 10, &[message(10)], None, now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.prune_notifications(now + 1).await.ok(), Some(2));
        assert_eq!(
            store
                .list_notifications(false, 10)
                .await
                .unwrap_or_default()
                .len(),
            1
        );
    }
);

/// `n` calls with `token` that its role refuses.
async fn refuse(s: &SignIn, token: &str, n: usize) {
    let url = format!("{}/api/v1/rack-proxy/apps/web", s.gw.url);
    for _ in 0..n {
        let r = client()
            .delete(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 403);
    }
}

/// Makes news (a token named `name`) and waits for it in Slack: every event before it has
/// been read by then.
async fn read_up(db: &crate::kit::Db, s: &SignIn, slack: &FakeSlack, name: &str) {
    crate::kit::token(db, name, &["--role", "viewer"]);
    slack_message(s, slack, name).await;
}

both_backends!(
    a_burst_of_refusals_by_one_credential_is_told_once_an_hour,
    |db| async move {
        let slack = FakeSlack::start().await;
        let smtp = FakeSmtp::start().await;
        for (email, role) in [
            ("admin@example.com", "admin"),
            ("ops@example.com", "ops"),
            ("viewer@example.com", "viewer"),
        ] {
            let (ok, _, err) = admin(&db, &["users", "add", email, "--role", role]);
            assert!(ok, "{err}");
        }
        let ci = crate::kit::token(
            &db,
            "ci-robot",
            &["--role", "viewer", "--owner", "ops@example.com"],
        );
        let env = [
            ("SLACK_WEBHOOK_URL", slack.url.as_str()),
            ("SMTP_URL", smtp.url.as_str()),
            ("EMAIL_FROM", "Rack Gateway <gateway@example.com>"),
            ("EMAIL_ALERTS_TO", "security@example.com"),
            ("NOTIFY_REFUSAL_BURST", "5"),
        ];
        let first = SignIn::start(&db, dev_oidc::Quirks::default(), &env).await;
        // Four refusals and an allowed call: no burst.
        refuse(&first, &ci, 4).await;
        let r = client()
            .get(format!("{}/api/v1/rack-proxy/apps", first.gw.url))
            .bearer_auth(&ci)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 200);
        read_up(&db, &first, &slack, "news-1").await;
        assert!(
            !slack.texts().iter().any(|t| t.contains("was refused")),
            "{:#?}",
            slack.texts()
        );
        // The counts are kept with the notifier's cursor, for the next gateway (or a restart).
        let st = crate::kit::store(&db).await;
        let kept = st.refusal_counts().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            kept.as_deref()
                .is_some_and(|k| k.contains("token:ci-robot")),
            "{kept:?}"
        );

        // Another gateway (a restart, or a second instance) goes on counting: the fifth, made
        // through it, is a burst. Slack, the alerts list and the token's owner are told, with
        // what and where to look; never the token itself.
        drop(first);
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &env).await;
        refuse(&s, &ci, 1).await;
        let text = slack_message(&s, &slack, "was refused").await;
        assert!(
            text.contains("API token ci-robot was refused 5 times in under a minute"),
            "{text}"
        );
        assert!(text.contains("convox:apps:delete"), "{text}");
        assert!(text.contains("127.0.0.1"), "{text}");
        assert!(text.contains("ops@example.com"), "the owner: {text}");
        assert!(
            text.contains(&format!("{}/audit?decision=deny&token=ci-robot", s.gw.url)),
            "{text}"
        );
        assert!(!text.contains(&ci), "{text}");
        let mail = mail_to(&smtp, "security@example.com", "was refused").await;
        assert!(
            mail.data.contains("tokens revoke ci-robot"),
            "{}",
            mail.data
        );
        assert!(
            mail.data
                .contains("rack-gateway audit --token ci-robot --decision deny"),
            "{}",
            mail.data
        );
        assert!(!mail.data.contains(&ci));
        mail_to(&smtp, "ops@example.com", "was refused").await;

        // Going on is not news again within the hour.
        refuse(&s, &ci, 12).await;
        read_up(&db, &s, &slack, "news-2").await;
        let told = slack
            .texts()
            .iter()
            .filter(|t| t.contains("was refused"))
            .count();
        assert_eq!(told, 1, "{:#?}", slack.texts());

        // A person refused on the gateway's own API is told too (their session, their mail).
        let viewer = crate::approvals::session_of(&s, "viewer@example.com").await;
        for _ in 0..5 {
            let r = client()
                .get(format!("{}/api/v1/users", s.gw.url))
                .header("cookie", format!("rg_session={viewer}"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.status().as_u16(), 403);
        }
        let mail = mail_to(
            &smtp,
            "viewer@example.com",
            "viewer@example.com was refused",
        )
        .await;
        assert!(mail.data.contains("gateway:users:list"), "{}", mail.data);
        assert!(mail.data.contains("end your sessions"), "{}", mail.data);
        assert!(!mail.data.contains(&viewer));

        // The notice's link shows an admin those refusals, and its form keeps the token.
        let boss = crate::approvals::session_of(&s, "admin@example.com").await;
        let page = client()
            .get(format!("{}/audit?decision=deny&token=ci-robot", s.gw.url))
            .header("cookie", format!("rg_session={boss}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status().as_u16(), 200);
        let page = page.text().await.unwrap_or_default();
        assert!(page.contains(r#"name="token" value="ci-robot""#), "{page}");
        assert_eq!(
            page.matches("<td>token:ci-robot</td>").count(),
            17,
            "{page}"
        );
        assert!(!page.contains("viewer@example.com"), "{page}");
    }
);

both_backends!(
    topics_named_in_notify_off_are_sent_nowhere,
    |db| async move {
        let slack = FakeSlack::start().await;
        let smtp = FakeSmtp::start().await;
        let (ok, _, err) = admin(&db, &["users", "add", "ops@example.com", "--role", "ops"]);
        assert!(ok, "{err}");
        let env = [
            ("SLACK_WEBHOOK_URL", slack.url.as_str()),
            ("SMTP_URL", smtp.url.as_str()),
            ("EMAIL_FROM", "Rack Gateway <gateway@example.com>"),
            ("EMAIL_ALERTS_TO", "security@example.com"),
            ("NOTIFY_OFF", "token_created, user_unlocked"),
        ];
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &env).await;
        crate::kit::token(&db, "quiet-token", &["--role", "viewer"]);
        for verb in ["lock", "unlock"] {
            let (ok, _, err) = admin(&db, &["users", verb, "ops@example.com"]);
            assert!(ok, "{err}");
        }
        // The lock, made after the token, is told: everything before it has been read by then.
        slack_message(&s, &slack, "was locked").await;
        mail_to(&smtp, "security@example.com", "was locked").await;
        let (ok, _, err) = admin(&db, &["users", "lock", "ops@example.com"]);
        assert!(ok, "{err}");
        let locks = || {
            slack
                .texts()
                .iter()
                .filter(|t| t.contains("was locked"))
                .count()
        };
        assert!(
            eventually(|| async { locks() == 2 }).await,
            "{:#?}",
            slack.texts()
        );
        let texts = slack.texts().join("\n");
        assert!(!texts.contains("quiet-token"), "{texts}");
        assert!(!texts.contains("unlocked"), "{texts}");
        let mails: Vec<Mail> = smtp.mails();
        assert!(
            !mails
                .iter()
                .any(|m| m.data.contains("quiet-token") || m.data.contains("unlocked")),
            "{mails:#?}"
        );
    }
);
