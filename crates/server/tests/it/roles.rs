//! Custom roles, through the real gateway: defined, given to a person and to a token, changed
//! (applied on the next request, remembered credentials included) and deleted once nobody
//! holds them; and never a way to more than the definer holds.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::credentials::{execute, user_with_session};
use crate::kit::{Gateway, client, role_token, store};
use crate::upstream::TestRack;

const RESTART: &str = "/apps/web/services/web/restart";

/// `method` on the gateway's `path` with `credential` and an optional JSON body: the status
/// and the JSON answer.
async fn call(
    gw: &Gateway,
    credential: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client()
        .request(method, format!("{}{path}", gw.url))
        .bearer_auth(credential);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap_or_else(|e| panic!("{e}"));
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

/// The status of `method` on the rack's `path` through the proxy with `credential`.
async fn proxied(gw: &Gateway, credential: &str, method: Method, path: &str) -> u16 {
    client()
        .request(method, gw.proxy(path))
        .basic_auth("convox", Some(credential))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts the answer is the refusal of what would give more than the caller holds.
#[track_caller]
fn beyond_reach(status: u16, body: &Value, what: impl std::fmt::Display) {
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("more_than_you_hold")),
        "{what}: {body}"
    );
}

both_backends!(
    a_custom_role_grants_what_it_lists_and_changes_apply_at_once,
    |db| async move {
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let viewer = role_token(&db, "viewer");
        let (st, _, ann) = user_with_session(&db, "ann@example.com", "viewer").await;
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let restarts = || {
            rack.seen()
                .iter()
                .filter(|s| s.path.ends_with("/restart"))
                .count()
        };

        // Defined by an admin; listed after the built-in roles.
        let (status, made) = call(
            &gw,
            &admin,
            Method::POST,
            "/api/v1/roles",
            Some(json!({
                "name": "restarters",
                "permissions": ["convox:apps:list", " convox:services:restart", "convox:apps:list"],
                "description": "on call: restart services",
            })),
        )
        .await;
        assert_eq!(status, 201, "{made}");
        assert_eq!(
            made["permissions"],
            json!(["convox:apps:list", "convox:services:restart"])
        );
        assert_eq!(made["created_by"], "token:admin-token");
        let (status, listed) = call(&gw, &admin, Method::GET, "/api/v1/roles", None).await;
        assert_eq!(status, 200, "{listed}");
        let names: Vec<&str> = listed
            .as_array()
            .map(|l| l.iter().filter_map(|r| r["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            names,
            ["viewer", "ops", "deployer", "admin", "cicd", "restarters"]
        );
        assert_eq!(listed[0]["built_in"], true);
        assert!(listed[0]["users"].is_null(), "{listed}");
        assert_eq!(listed[5]["users"], 0);
        // Not for a viewer.
        let (status, _) = call(&gw, &viewer, Method::GET, "/api/v1/roles", None).await;
        assert_eq!(status, 403);

        // Ann, a viewer, is refused a restart (and her session is remembered as a viewer's).
        for _ in 0..2 {
            assert_eq!(proxied(&gw, &ann, Method::GET, "/apps").await, 200);
        }
        assert_eq!(proxied(&gw, &ann, Method::POST, RESTART).await, 403);
        // Given the role: allowed on her next request.
        let (status, user) = call(
            &gw,
            &admin,
            Method::PUT,
            "/api/v1/users/ann@example.com/role",
            Some(json!({ "role": "restarters" })),
        )
        .await;
        assert_eq!(status, 200, "{user}");
        assert_eq!(user["role"], "restarters");
        assert_eq!(proxied(&gw, &ann, Method::POST, RESTART).await, 200);
        assert_eq!(proxied(&gw, &ann, Method::POST, RESTART).await, 200);
        assert_eq!(restarts(), 2);
        // …and nothing it does not list.
        assert_eq!(proxied(&gw, &ann, Method::GET, "/apps/web/env").await, 403);
        // A token minted with it holds the same.
        let (status, minted) = call(
            &gw,
            &admin,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "name": "pager", "role": "restarters" })),
        )
        .await;
        assert_eq!(status, 201, "{minted}");
        let pager = minted["secret"].as_str().unwrap_or_default().to_string();
        assert_eq!(proxied(&gw, &pager, Method::POST, RESTART).await, 200);
        assert_eq!(restarts(), 3);

        // Held, so not deleted.
        let (status, body) = call(
            &gw,
            &admin,
            Method::DELETE,
            "/api/v1/roles/restarters",
            None,
        )
        .await;
        assert_eq!(status, 409, "{body}");
        let said = body["error"].as_str().unwrap_or_default();
        assert!(said.contains("1 user and 1 token"), "{said}");

        // Changed: the next request of everyone holding it follows, remembered or not.
        let (status, changed) = call(
            &gw,
            &admin,
            Method::PUT,
            "/api/v1/roles/restarters",
            Some(json!({ "permissions": ["convox:apps:list"] })),
        )
        .await;
        assert_eq!(status, 200, "{changed}");
        assert_eq!(changed["description"], "on call: restart services");
        assert_eq!(
            (changed["users"].as_i64(), changed["tokens"].as_i64()),
            (Some(1), Some(1))
        );
        assert_eq!(proxied(&gw, &ann, Method::POST, RESTART).await, 403);
        assert_eq!(proxied(&gw, &pager, Method::POST, RESTART).await, 403);
        assert_eq!(
            restarts(),
            3,
            "a restart the role no longer grants reached the rack"
        );
        assert_eq!(proxied(&gw, &ann, Method::GET, "/apps").await, 200);

        // Audited: the definition, the change with what it granted before.
        let defined = crate::kit::audited(&st, |r| {
            r.event.action == "gateway:roles:create"
                && r.event.details["role"] == "restarters"
                && r.event.details["permissions"]
                    == json!(["convox:apps:list", "convox:services:restart"])
        })
        .await;
        assert!(defined);
        let updated = crate::kit::audited(&st, |r| {
            r.event.action == "gateway:roles:update"
                && r.event.details["result"] == "done"
                && r.event.details["previous_permissions"]
                    == json!(["convox:apps:list", "convox:services:restart"])
        })
        .await;
        assert!(updated);

        // Freed, then deleted; a name no stored role has (deleted by hand) grants nothing.
        let (status, _) = call(
            &gw,
            &admin,
            Method::PUT,
            "/api/v1/users/ann@example.com/role",
            Some(json!({ "role": "viewer" })),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) = call(&gw, &admin, Method::DELETE, "/api/v1/tokens/pager", None).await;
        assert_eq!(status, 200);
        let (status, gone) = call(
            &gw,
            &admin,
            Method::DELETE,
            "/api/v1/roles/restarters",
            None,
        )
        .await;
        assert_eq!(status, 200, "{gone}");
        assert_eq!(gone["permissions"], json!(["convox:apps:list"]));
        let (status, _) = call(
            &gw,
            &admin,
            Method::DELETE,
            "/api/v1/roles/restarters",
            None,
        )
        .await;
        assert_eq!(status, 404);
        execute(
            &db,
            "UPDATE users SET role = 'ghost-role' WHERE email = 'ann@example.com'",
        )
        .await;
        assert_eq!(proxied(&gw, &ann, Method::GET, "/apps").await, 403);
        let (status, me) = call(&gw, &ann, Method::GET, "/api/v1/info", None).await;
        assert_eq!(status, 200, "{me}");
    }
);

both_backends!(
    nobody_defines_or_gives_a_role_beyond_what_they_hold,
    |db| async move {
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        // Someone trusted with roles and people, and with reading the rack (a viewer's
        // permissions and a few more), but not with changing it.
        let delegate = crate::kit::token(
            &db,
            "delegate",
            &[
                "--permissions",
                "gateway:roles:*,gateway:users:*,gateway:deploy-approvals:list,\
                 gateway:app-rules:read,convox:*:list,convox:*:read,convox:builds:logs,\
                 convox:rack:*",
            ],
        );
        let (ok, _, err) =
            crate::kit::admin(&db, &["users", "add", "bob@example.com", "--role", "ops"]);
        assert!(ok, "{err}");
        let (ok, _, err) =
            crate::kit::admin(&db, &["users", "add", "cy@example.com", "--role", "viewer"]);
        assert!(ok, "{err}");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let define = |credential: String, name: &'static str, permissions: Value| {
            let gw = &gw;
            async move {
                call(
                    gw,
                    &credential,
                    Method::POST,
                    "/api/v1/roles",
                    Some(json!({ "name": name, "permissions": permissions })),
                )
                .await
            }
        };

        // Wider than the definer: refused, naming what they lack.
        let (status, body) = define(delegate.clone(), "wide", json!(["convox:apps:*"])).await;
        beyond_reach(status, &body, "a wider role");
        let said = body["error"].as_str().unwrap_or_default();
        assert!(said.contains("you do not hold convox:apps:*"), "{said}");
        let (status, body) = define(delegate.clone(), "root", json!(["*"])).await;
        beyond_reach(status, &body, "a role granting everything");
        // Within: defined.
        let (status, body) = define(
            delegate.clone(),
            "log-readers",
            json!(["convox:apps:list", "convox:logs:read"]),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        // An admin's wider role is out of the delegate's reach: not changed, not deleted.
        let (status, body) = define(admin.clone(), "operators", json!(["convox:services:*"])).await;
        assert_eq!(status, 201, "{body}");
        for (method, body) in [
            (
                Method::PUT,
                Some(json!({ "permissions": ["convox:apps:list"] })),
            ),
            (Method::DELETE, None),
        ] {
            let (status, said) = call(
                &gw,
                &delegate,
                method.clone(),
                "/api/v1/roles/operators",
                body,
            )
            .await;
            beyond_reach(status, &said, &method);
        }

        // People: no role beyond the delegate's to give, and nobody holding more to change.
        let set_role = |email: &'static str, role: &'static str| {
            let (gw, delegate) = (&gw, delegate.clone());
            async move {
                call(
                    gw,
                    &delegate,
                    Method::PUT,
                    &format!("/api/v1/users/{email}/role"),
                    Some(json!({ "role": role })),
                )
                .await
            }
        };
        for role in ["admin", "ops", "operators"] {
            let (status, body) = set_role("cy@example.com", role).await;
            beyond_reach(status, &body, role);
        }
        let (status, body) = set_role("bob@example.com", "log-readers").await;
        beyond_reach(status, &body, "set bob's role");
        let (status, body) = call(
            &gw,
            &delegate,
            Method::POST,
            "/api/v1/users/bob@example.com/lock",
            None,
        )
        .await;
        beyond_reach(status, &body, "lock bob");
        let (status, body) = call(
            &gw,
            &delegate,
            Method::POST,
            "/api/v1/users",
            Some(json!({ "email": "dee@example.com", "role": "operators" })),
        )
        .await;
        beyond_reach(status, &body, "add dee");
        // Within reach: allowed.
        let (status, body) = set_role("cy@example.com", "log-readers").await;
        assert_eq!(status, 200, "{body}");

        // Input: each refused with a 4xx saying why, nothing stored.
        let cases = [
            (
                json!({ "name": "admin", "permissions": ["convox:apps:list"] }),
                400,
                "built-in",
            ),
            (
                json!({ "name": "Bad Name", "permissions": ["convox:apps:list"] }),
                400,
                "lowercase",
            ),
            (
                json!({ "name": "empty", "permissions": [] }),
                400,
                "at least one",
            ),
            (
                json!({ "name": "typo", "permissions": ["convox:app:list"] }),
                400,
                "grants no rack route",
            ),
            (
                json!({ "name": "shape", "permissions": ["convox:apps"] }),
                400,
                "invalid permission",
            ),
            (
                json!({ "name": "log-readers", "permissions": ["convox:apps:list"] }),
                409,
                "already exists",
            ),
            (
                json!({ "name": "x-y", "permissions": ["convox:apps:list"], "grants": "*" }),
                422,
                "",
            ),
            (
                json!({ "name": "x-y", "permissions": ["convox:apps:list"], "description": "a\u{0}b" }),
                400,
                "printable",
            ),
        ];
        for (body, want, says) in cases {
            let (status, said) = call(
                &gw,
                &admin,
                Method::POST,
                "/api/v1/roles",
                Some(body.clone()),
            )
            .await;
            assert_eq!(status, want, "{body}: {said}");
            assert!(
                said["error"].as_str().unwrap_or_default().contains(says),
                "{body}: {said}"
            );
        }
        for (method, path, body, want) in [
            (
                Method::PUT,
                "/api/v1/roles/ops",
                Some(json!({ "permissions": ["*"] })),
                400,
            ),
            (Method::DELETE, "/api/v1/roles/admin", None, 400),
            (
                Method::PUT,
                "/api/v1/roles/nobody-has",
                Some(json!({ "permissions": ["convox:apps:list"] })),
                404,
            ),
            (Method::DELETE, "/api/v1/roles/..%2F..%2Fetc", None, 404),
            (
                Method::PUT,
                "/api/v1/users/cy@example.com/role",
                Some(json!({ "role": "nobody-has" })),
                400,
            ),
        ] {
            let (status, said) = call(&gw, &admin, method.clone(), path, body).await;
            assert_eq!(status, want, "{method} {path}: {said}");
        }
        let (status, listed) = call(&gw, &admin, Method::GET, "/api/v1/roles", None).await;
        assert_eq!(status, 200);
        assert_eq!(listed.as_array().map(Vec::len), Some(7), "{listed}");

        // The refusals are on the trail with why.
        let st = store(&db).await;
        let refused = crate::kit::audited(&st, |r| {
            r.event.action == "gateway:roles:create"
                && r.event.token_name.as_deref() == Some("delegate")
                && r.event.details["reason"] == "more_than_you_hold"
                && r.event.status == Some(403)
        })
        .await;
        assert!(refused);
        let refused = crate::kit::audited(&st, |r| {
            r.event.action == "gateway:users:update"
                && r.event.details["reason"] == "more_than_you_hold"
                && r.event.details["role"] == "admin"
        })
        .await;
        assert!(refused);
    }
);

// A role deleted at the moment someone is given it, or a token made with it: one of the two
// wins, and nobody is left holding a role that no longer exists. On PostgreSQL the count and
// the delete would otherwise race the assignment (both read before either writes).
both_backends!(
    a_role_is_never_deleted_from_under_someone_just_given_it,
    |db| async move {
        use gateway::store::{NewRole, NewToken, StoreError};
        let st = store(&db).await;
        st.migrate().await.unwrap_or_else(|e| panic!("{e}"));
        let users: Vec<String> = (0..8).map(|i| format!("u{i}@example.com")).collect();
        for email in &users {
            st.create_user(email, "U", "viewer")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let permissions = ["convox:apps:list".to_string()];
        for round in 0..10 {
            let name = format!("racy-{round}");
            st.create_role(&NewRole {
                name: &name,
                description: "",
                permissions: &permissions,
                created_by: "test",
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            let mut racers = tokio::task::JoinSet::new();
            for (i, email) in users.iter().enumerate() {
                let (st, name, email) = (st.clone(), name.clone(), email.clone());
                racers.spawn(async move {
                    if i % 2 == 0 {
                        st.set_user_role(&email, &name, gateway::store::LastAdmin::MayGo)
                            .await
                            .map(|_| ())
                    } else {
                        let hash = format!("{round:02}{i:062}");
                        st.create_token(&NewToken {
                            name: &format!("t-{round}-{i}"),
                            token_hash: &hash,
                            role: Some(&name),
                            permissions: None,
                            owner_user_id: None,
                            created_by: "test",
                            expires_at: None,
                        })
                        .await
                        .map(|_| ())
                    }
                });
            }
            let (st2, name2) = (st.clone(), name.clone());
            racers.spawn(async move { st2.delete_role(&name2).await.map(|_| ()) });
            while let Some(done) = racers.join_next().await {
                match done.unwrap_or_else(|e| panic!("{e}")) {
                    Ok(()) | Err(StoreError::NotFound(_) | StoreError::InUse(_)) => {}
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
            let exists = st
                .custom_role(&name)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_some();
            let holders = st
                .list_users()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .iter()
                .filter(|u| u.role == name)
                .count()
                + st.list_tokens()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .iter()
                    .filter(|t| t.role.as_deref() == Some(name.as_str()))
                    .count();
            assert!(
                exists || holders == 0,
                "round {round}: {holders} hold {name}, which was deleted"
            );
            // Everyone back to viewer for the next round.
            for email in &users {
                st.set_user_role(email, "viewer", gateway::store::LastAdmin::MayGo)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
);

// A role that may see releases but not the environment (a custom role, or a token's explicit
// permissions): the rack's release answers reach it with every value masked and the names
// kept; a role that may read the environment sees the values.
both_backends!(
    release_answers_mask_environment_values_for_those_who_may_not_read_them,
    |db| async move {
        let (rack_url, _stop) = crate::approvals::fake_rack().await;
        let ops = role_token(&db, "ops");
        let auditor = crate::kit::token(
            &db,
            "release-auditor",
            &["--permissions", "convox:apps:list,convox:releases:*"],
        );
        let gw = Gateway::start(&db, &rack_url, &[]).await;
        let get = |credential: String, path: &'static str| {
            let gw = &gw;
            async move {
                let r = client()
                    .get(gw.proxy(path))
                    .basic_auth("convox", Some(credential))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let status = r.status().as_u16();
                let length = r.content_length();
                let body = r.text().await.unwrap_or_default();
                (status, length, body)
            }
        };
        const SECRET: &str = "s3cr3t-web-db-pass";

        let (status, _, body) = get(ops.clone(), "/apps/web/releases").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(SECRET),
            "ops may read the environment: {body}"
        );

        let (status, length, body) = get(auditor.clone(), "/apps/web/releases").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            !body.contains(SECRET),
            "a value reached the release auditor: {body}"
        );
        assert_eq!(length, Some(body.len() as u64));
        let releases: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(releases.len(), 3, "{body}");
        let env = releases[0]["env"].as_str().unwrap_or_default();
        assert!(
            env.contains("DATABASE_URL=[redacted]") && env.contains("RAILS_ENV=[redacted]"),
            "{env}"
        );
        assert!(releases[0]["id"].is_string() && releases[0]["manifest"].is_string());
        // One release (`convox env`, `convox releases info`) alike.
        let id = releases[0]["id"].as_str().unwrap_or_default().to_string();
        let path: &'static str = Box::leak(format!("/apps/web/releases/{id}").into_boxed_str());
        let (status, _, body) = get(auditor.clone(), path).await;
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains(SECRET), "{body}");
        assert!(body.contains("DATABASE_URL=[redacted]"), "{body}");
        // The rack's refusals pass as they are.
        let (status, _, body) = get(auditor, "/apps/nope/releases").await;
        assert_eq!(status, 404, "{body}");
    }
);

// Where the gateway runs, an operator defines, lists, changes and deletes custom roles with
// `rack-gateway-server roles …`, audited with their login, under the same rules.
both_backends!(the_server_command_manages_custom_roles, |db| async move {
    use crate::kit::admin;
    let (ok, out, err) = admin(
        &db,
        &[
            "roles",
            "create",
            "log-readers",
            "--permissions",
            "convox:apps:list,convox:logs:read",
            "--description",
            "read logs",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "Defined role log-readers (convox:apps:list,convox:logs:read)."
    );
    let (ok, _, err) = admin(
        &db,
        &["users", "add", "ann@example.com", "--role", "log-readers"],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = admin(&db, &["roles", "list"]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("log-readers"))
        .unwrap_or_default();
    assert!(
        line.contains("custom") && line.contains("1 users, 0 tokens"),
        "{out}"
    );
    let (ok, out, err) = admin(&db, &["roles", "list", "--json"]);
    assert!(ok, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(listed.len(), 6, "{out}");
    assert_eq!(listed[5]["users"], 1);

    // The rules hold here too.
    let (ok, _, err) = admin(&db, &["roles", "delete", "log-readers"]);
    assert!(!ok && err.contains("held by 1 user and 0 tokens"), "{err}");
    let (ok, _, err) = admin(
        &db,
        &[
            "roles",
            "create",
            "admin",
            "--permissions",
            "convox:apps:list",
        ],
    );
    assert!(!ok && err.contains("is a built-in name"), "{err}");
    let (ok, _, err) = admin(
        &db,
        &[
            "roles",
            "update",
            "log-readers",
            "--permissions",
            "convox:app:list",
        ],
    );
    assert!(!ok && err.contains("grants no rack route"), "{err}");
    let (ok, out, err) = admin(
        &db,
        &[
            "roles",
            "update",
            "log-readers",
            "--permissions",
            "convox:apps:list,convox:logs:read,convox:builds:logs",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("held by 1 user(s) and 0 token(s)"), "{out}");
    let (ok, _, err) = admin(&db, &["users", "set-role", "ann@example.com", "viewer"]);
    assert!(ok, "{err}");
    let (ok, out, err) = admin(&db, &["roles", "delete", "log-readers"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "Deleted role log-readers.");

    // On the trail with the operator who ran them.
    let st = store(&db).await;
    for action in [
        "gateway:roles:create",
        "gateway:roles:update",
        "gateway:roles:delete",
    ] {
        let found = crate::kit::audited(&st, |r| {
            r.event.action == action
                && r.event.details["operator"]
                    .as_str()
                    .is_some_and(|o| o.starts_with("cli:"))
        })
        .await;
        assert!(found, "{action}");
    }
});
