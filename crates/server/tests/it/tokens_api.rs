//! API tokens over HTTP: admins list them (never a secret or its hash) and revoke one, which
//! is refused from its next request on; others are refused, and every revocation is audited.

use crate::both_backends;
use crate::kit::{Gateway, client, list_apps, role_token, store};
use crate::upstream::TestRack;

both_backends!(
    an_admin_lists_and_revokes_tokens_over_http,
    |db| async move {
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let viewer = role_token(&db, "viewer");
        let ci = crate::kit::token(&db, "ci deploy/1", &["--role", "deployer"]);
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let c = client();
        assert_eq!(list_apps(&gw, &ci).await, Some(200));

        let listed = c
            .get(format!("{}/api/v1/tokens", gw.url))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed.status(), 200);
        let text = listed.text().await.unwrap_or_default();
        for secret in [&admin, &viewer, &ci] {
            assert!(
                !text.contains(secret.as_str()),
                "a secret in the list: {text}"
            );
        }
        assert!(!text.contains("token_hash"), "{text}");
        let tokens: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(tokens.len(), 3, "{text}");
        let ci_row = tokens
            .iter()
            .find(|t| t["name"] == "ci deploy/1")
            .cloned()
            .unwrap_or_default();
        assert_eq!(ci_row["role"], "deployer");
        assert!(ci_row["last_used_at"].is_i64(), "{ci_row}");

        // Not for a viewer.
        let refused = c
            .delete(format!("{}/api/v1/tokens/1", gw.url))
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(refused.status(), 403);

        // By name (any characters, encoded in the path): refused from the next request on.
        let revoked = c
            .delete(format!("{}/api/v1/tokens/ci%20deploy%2F1", gw.url))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(revoked.status(), 200);
        let row: serde_json::Value = revoked.json().await.unwrap_or_default();
        assert_eq!(row["name"], "ci deploy/1");
        assert!(row["revoked_at"].is_i64(), "{row}");
        assert_eq!(list_apps(&gw, &ci).await, Some(401));
        let again = c
            .delete(format!("{}/api/v1/tokens/ci%20deploy%2F1", gw.url))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.status(), 404);

        // On the trail: who revoked which token, and the refusal of the viewer.
        let s = store(&db).await;
        let by_admin = crate::kit::audited(&s, |r| {
            r.event.action == "gateway:tokens:revoke"
                && r.event.token_name.as_deref() == Some("admin-token")
                && r.event.details["name"] == "ci deploy/1"
        })
        .await;
        assert!(by_admin);
        let refusal = crate::kit::audited(&s, |r| {
            r.event.action == "gateway:tokens:revoke"
                && r.event.token_name.as_deref() == Some("viewer-token")
                && r.event.status == Some(403)
        })
        .await;
        assert!(refusal);
    }
);

/// `POST /api/v1/tokens` with `credential` and `body`: status, JSON and `Cache-Control`.
async fn mint(
    gw: &Gateway,
    credential: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value, String) {
    let r = client()
        .post(format!("{}/api/v1/tokens", gw.url))
        .bearer_auth(credential)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, r.json().await.unwrap_or_default(), cache)
}

both_backends!(
    a_token_minted_over_http_holds_no_more_than_its_creator,
    |db| async move {
        use serde_json::json;
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let viewer = role_token(&db, "viewer");
        let (ok, _, err) =
            crate::kit::admin(&db, &["users", "add", "ann@example.com", "--role", "admin"]);
        assert!(ok, "{err}");
        let minter = crate::kit::token(
            &db,
            "minter",
            &[
                "--permissions",
                "gateway:tokens:create,convox:apps:list",
                "--expires-in",
                "2h",
                "--owner",
                "ann@example.com",
            ],
        );
        let gw = Gateway::start(&db, &rack.url, &[]).await;

        // An admin token mints a cicd token; its secret works at once and is shown only here.
        let (status, made, cache) = mint(
            &gw,
            &admin,
            json!({ "name": "ci", "role": "cicd", "expires_in": "30d" }),
        )
        .await;
        assert_eq!(status, 201, "{made}");
        assert_eq!(cache, "no-store");
        let secret = made["secret"].as_str().unwrap_or_default().to_string();
        assert!(secret.starts_with("rgw_"), "{made}");
        assert_eq!(made["token"]["role"], "cicd", "{made}");
        assert!(made["token"]["expires_at"].is_i64(), "{made}");
        assert_eq!(list_apps(&gw, &secret).await, Some(200));

        // A token holding little mints only within it, for its own owner, not past its life.
        let (status, body, _) =
            mint(&gw, &minter, json!({ "name": "m1", "role": "deployer" })).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("more_than_you_hold")),
            "{body}"
        );
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("convox:") && !error.contains("convox:apps:list"),
            "{body}"
        );
        let (status, body, _) = mint(
            &gw,
            &minter,
            json!({ "name": "m2", "permissions": ["convox:apps:*"] }),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("more_than_you_hold")),
            "{body}"
        );
        let (status, body, _) = mint(
            &gw,
            &minter,
            json!({ "name": "m3", "permissions": ["convox:apps:list"], "expires_in": "30d" }),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("more_than_you_hold")),
            "{body}"
        );
        let (status, body, _) = mint(&gw, &minter, json!({ "name": "m4", "permissions": ["convox:apps:list"], "owner": "bob@example.com" })).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("more_than_you_hold")),
            "{body}"
        );
        let (status, body, _) = mint(
            &gw,
            &minter,
            json!({ "name": "m5", "permissions": ["convox:apps:list"], "code": "123456" }),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let (status, child, _) = mint(
            &gw,
            &minter,
            json!({ "name": "m6", "permissions": ["convox:apps:list"] }),
        )
        .await;
        assert_eq!(status, 201, "{child}");
        let parent_expiry = crate::kit::store(&db)
            .await
            .list_tokens()
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|t| t.name == "minter")
            .and_then(|t| t.expires_at)
            .unwrap_or_default();
        let child_expiry = child["token"]["expires_at"].as_i64().unwrap_or(i64::MAX);
        assert!(
            child_expiry <= parent_expiry,
            "{child} outlives its minter ({parent_expiry})"
        );
        assert!(
            child_expiry > parent_expiry - 120_000,
            "{child}: passed on, not cut short"
        );
        let ann = store(&db)
            .await
            .find_user("ann@example.com")
            .await
            .ok()
            .flatten()
            .map(|u| u.id);
        assert_eq!(
            child["token"]["owner_user_id"].as_i64(),
            ann,
            "the minter's owner: {child}"
        );

        // Bad input is a 400; a viewer may not mint at all.
        for bad in [
            json!({ "name": "x", "role": "emperor" }),
            json!({ "name": "x", "role": "viewer", "permissions": ["convox:apps:list"] }),
            json!({ "name": "x" }),
            json!({ "name": "x", "role": "viewer", "expires_in": "forever" }),
            json!({ "name": "x", "permissions": ["not a permission"] }),
        ] {
            let (status, body, _) = mint(&gw, &admin, bad.clone()).await;
            assert_eq!(status, 400, "{bad}: {body}");
        }
        let (status, body, _) = mint(
            &gw,
            &admin,
            json!({ "name": "x", "role": "viewer", "colour": "red" }),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        let (status, body, _) = mint(&gw, &viewer, json!({ "name": "v", "role": "viewer" })).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("permission_denied")),
            "{body}"
        );

        // Every refusal is on the trail with why; the secrets are nowhere in it.
        let rows = store(&db)
            .await
            .audit_rows(0, 10_000)
            .await
            .unwrap_or_default();
        let refused: Vec<_> = rows
            .iter()
            .filter(|r| {
                r.event.action == "gateway:tokens:create"
                    && r.event.details["reason"] == "more_than_you_hold"
            })
            .collect();
        assert_eq!(refused.len(), 4, "{refused:#?}");
        let trail = serde_json::to_string(&rows.iter().map(|r| &r.event).collect::<Vec<_>>())
            .unwrap_or_default();
        assert!(!trail.contains(&secret), "a minted secret in the trail");
    }
);

// A token acts in its owner's name: their e-mail on its calls, their lock stopping it, and its
// deploy requests theirs — which they may not approve, but whoever minted it could. So a
// person mints tokens for themselves unless they manage people; otherwise someone allowed to
// mint and to approve could approve their own token's deploys by naming a colleague.
both_backends!(
    a_person_names_another_owner_only_if_they_manage_people,
    |db| async move {
        use serde_json::json;
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let c = client();
        let role = json!({
            "name": "release-helper",
            "permissions": [
                "gateway:tokens:create", "gateway:deploy-approvals:request",
                "gateway:deploy-approvals:approve", "convox:apps:list",
            ],
        });
        let made = c
            .post(format!("{}/api/v1/roles", gw.url))
            .bearer_auth(&admin)
            .json(&role)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(made.status(), 201, "{:?}", made.text().await);
        for (email, role) in [
            ("pat@example.com", "release-helper"),
            ("quinn@example.com", "viewer"),
            ("ann@example.com", "admin"),
        ] {
            let (ok, _, err) = crate::kit::admin(&db, &["users", "add", email, "--role", role]);
            assert!(ok, "{err}");
        }
        let st = store(&db).await;
        let session = |email: &'static str| {
            let st = st.clone();
            async move {
                let user = crate::credentials::existing_user(&st, email).await;
                let (_, secret) = crate::credentials::another_session(&st, "cli", &user)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                (user.id, secret)
            }
        };
        let (pat_id, pat) = session("pat@example.com").await;
        let (_, ann) = session("ann@example.com").await;
        let quinn_id = crate::credentials::existing_user(&st, "quinn@example.com")
            .await
            .id;

        // Pat may mint, but not in Quinn's name.
        let ask = json!({ "name": "ci-as-quinn", "permissions": ["convox:apps:list"], "owner": "quinn@example.com" });
        let (status, body, _) = mint(&gw, &pat, ask).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("more_than_you_hold")),
            "{body}"
        );
        let said = body["error"].as_str().unwrap_or_default();
        assert!(said.contains("gateway:users:update"), "{said}");
        // Their own name (however it is written), or none, is theirs.
        for (name, owner) in [("pat-1", Some("PAT@example.com")), ("pat-2", None)] {
            let mut ask = json!({ "name": name, "permissions": ["convox:apps:list"] });
            if let Some(owner) = owner {
                ask["owner"] = owner.into();
            }
            let (status, body, _) = mint(&gw, &pat, ask).await;
            assert_eq!(status, 201, "{body}");
            assert_eq!(
                body["token"]["owner_user_id"].as_i64(),
                Some(pat_id),
                "{body}"
            );
        }
        // An admin, who manages people, names Quinn.
        let ask = json!({ "name": "quinn-ci", "permissions": ["convox:apps:list"], "owner": "quinn@example.com" });
        let (status, body, _) = mint(&gw, &ann, ask).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            body["token"]["owner_user_id"].as_i64(),
            Some(quinn_id),
            "{body}"
        );

        let names: Vec<String> = st
            .list_tokens()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert!(!names.iter().any(|n| n == "ci-as-quinn"), "{names:?}");
        let refused = st.audit_rows(0, 10_000).await.unwrap_or_default();
        assert!(
            refused
                .iter()
                .any(|r| r.event.action == "gateway:tokens:create"
                    && r.event.user_email.as_deref() == Some("pat@example.com")
                    && r.event.rbac_decision.as_str() == "deny"),
            "the refusal is on the trail"
        );
    }
);

// The /tokens page lists revoked and expired tokens for 30 days, then only says how many it
// leaves out (every CI run that mints one would otherwise grow it without end).
both_backends!(
    the_tokens_page_lists_ended_tokens_for_thirty_days,
    |db: crate::kit::Db| async move {
        let (ok, _, err) = crate::kit::admin(
            &db,
            &["users", "add", "admin@example.com", "--role", "admin"],
        );
        assert!(ok, "{err}");
        for name in ["old-ci", "recent-ci", "live-ci"] {
            let _ = crate::kit::token(&db, name, &["--role", "viewer"]);
        }
        for name in ["old-ci", "recent-ci"] {
            let (ok, _, err) = crate::kit::admin(&db, &["tokens", "revoke", name]);
            assert!(ok, "{err}");
        }
        let days_31 = 31_i64 * 24 * 3600 * 1000;
        crate::credentials::execute(
            &db,
            &format!(
                "UPDATE api_tokens SET revoked_at = revoked_at - {days_31} WHERE name = 'old-ci'"
            ),
        )
        .await;
        let s = crate::signin::SignIn::start(&db, dev_oidc::Quirks::default(), &[]).await;
        let session = crate::approvals::session_of(&s, "admin@example.com").await;
        let page = client()
            .get(format!("{}/tokens", s.gw.url))
            .header("cookie", format!("rg_session={session}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status(), 200);
        let body = page.text().await.unwrap_or_default();
        assert!(
            body.contains("<td>recent-ci</td>") && body.contains("<td>live-ci</td>"),
            "{body}"
        );
        assert!(!body.contains("<td>old-ci</td>"), "{body}");
        assert!(
            body.contains("1 token(s) revoked or expired more than 30 days ago"),
            "{body}"
        );
    }
);
