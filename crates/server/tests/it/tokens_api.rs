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
