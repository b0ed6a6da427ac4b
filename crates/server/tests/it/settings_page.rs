//! The settings page and API (`/settings`, `GET /api/v1/settings`): what the gateway runs with,
//! defaults included, for admins; secrets only as set or not, never their values; refused (and
//! audited) for anyone without `gateway:settings:read`.

use serde_json::Value;

use crate::approvals::fake_rack;
use crate::both_backends;
use crate::fake_notify::{FakeSlack, WEBHOOK_SECRET};
use crate::kit::{AUDIT_KEY, RACK_TOKEN, admin, client, role_token};
use crate::mfa::{KEY, events, go, web_sign_in_as};
use crate::signin::SignIn;

/// The value of setting `name` in the API's answer.
fn value<'a>(sections: &'a Value, name: &str) -> &'a str {
    sections
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["settings"].as_array().into_iter().flatten())
        .find(|s| s["name"] == name)
        .and_then(|s| s["value"].as_str())
        .unwrap_or_else(|| panic!("no {name} in {sections}"))
}

both_backends!(
    the_settings_show_what_the_gateway_runs_with_and_no_secret,
    |db| async move {
        let (rack_url, _stop) = fake_rack().await;
        for (email, role) in [
            ("admin@example.com", "admin"),
            ("viewer@example.com", "viewer"),
        ] {
            let (ok, _, err) = admin(&db, &["users", "add", email, "--role", role]);
            assert!(ok, "{err}");
        }
        let slack = FakeSlack::start().await;
        let env = [
            ("MFA_ENCRYPTION_KEY", KEY),
            ("SLACK_WEBHOOK_URL", slack.url.as_str()),
            ("DEPLOY_APPROVAL_WINDOW_SECS", "900"),
            ("TRUSTED_PROXIES", "10.0.0.0/8"),
        ];
        let s = SignIn::start_on_rack(&db, &env, &rack_url).await;
        let secrets = [RACK_TOKEN, KEY, WEBHOOK_SECRET, AUDIT_KEY, "gw-test-secret"];

        // An admin's token reads them.
        let token = role_token(&db, "admin");
        let answer = client()
            .get(format!("{}/api/v1/settings", s.gw.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer.status().as_u16(), 200);
        let sections: Value = answer.json().await.unwrap_or_default();
        assert_eq!(
            value(&sections, "DEPLOY_APPROVAL_WINDOW_SECS"),
            "900 s (15 min)"
        );
        assert_eq!(value(&sections, "TRUSTED_PROXIES"), "10.0.0.0/8");
        assert_eq!(value(&sections, "RACK_HOST"), format!("{rack_url}/"));
        assert_eq!(value(&sections, "RACK_TOKEN"), "set (not shown)");
        assert_eq!(value(&sections, "MFA_ENCRYPTION_KEY"), "set (not shown)");
        assert_eq!(value(&sections, "SLACK_WEBHOOK_URL"), "set (not shown)");
        assert_eq!(value(&sections, "SLACK_BOT_TOKEN"), "not set");
        assert_eq!(value(&sections, "Approving from Slack"), "off");
        assert_eq!(value(&sections, "MFA_REQUIRED"), "off");
        assert_eq!(value(&sections, "SESSION_LIFETIME_SECS"), "86400 s (1 day)");
        assert!(
            // The test gateway is reached by an address.
            value(&sections, "Security keys (WebAuthn)").starts_with("off: browsers reach"),
            "{sections}"
        );
        let backend = value(&sections, "DATABASE_URL");
        assert!(
            backend.starts_with("SQLite, ") || backend.starts_with("PostgreSQL, "),
            "{backend}"
        );
        let text = sections.to_string();
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in {text}");
        }

        // The page, for an admin signed in, linked from the others.
        let (mut b, _) = web_sign_in_as(&s, "admin@example.com").await;
        let rack = go(&mut b, &format!("{}/rack", s.gw.url)).await;
        assert!(rack.body.contains("id=\"settings-link\""), "{}", rack.body);
        let page = go(&mut b, &format!("{}/settings", s.gw.url)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(
            page.body.contains("id=\"setting-RACK_TOKEN\""),
            "{}",
            page.body
        );
        assert!(page.body.contains("900 s (15 min)"), "{}", page.body);
        for secret in secrets {
            assert!(!page.body.contains(secret), "{secret} on the page");
        }

        // A viewer may not: refused on both, audited, and not linked.
        let viewer = role_token(&db, "viewer");
        let refused = client()
            .get(format!("{}/api/v1/settings", s.gw.url))
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(refused.status().as_u16(), 403);
        let (mut v, _) = web_sign_in_as(&s, "viewer@example.com").await;
        let page = go(&mut v, &format!("{}/settings", s.gw.url)).await;
        assert_eq!(page.status, 403, "{}", page.body);
        let rack = go(&mut v, &format!("{}/rack", s.gw.url)).await;
        assert!(!rack.body.contains("id=\"settings-link\""), "{}", rack.body);
        let denials = events(&db, "gateway:settings:read").await;
        assert!(
            denials.len() >= 2
                && denials
                    .iter()
                    .all(|e| e.rbac_decision == gateway::audit::Decision::Deny),
            "{denials:?}"
        );
    }
);
