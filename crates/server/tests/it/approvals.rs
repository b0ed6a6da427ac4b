//! Deploy approvals over HTTP, in front of the fake Convox rack: a CI token asks for one
//! commit, a signed-in person approves it, and exactly that deploy (upload, build, one
//! promote of a build of that commit) goes through for that token — nothing before the
//! approval, nothing after the promote, nothing for another token or app. Decisions are
//! people's, never the asker's, and every step is on the audit trail.

use std::time::Duration;

use dev_oidc::browser::Browser;
use serde_json::{Value, json};

use crate::both_backends;
use crate::kit::{admin, client, role_token, store, token};
use crate::signin::SignIn;

const SHA: &str = "1f0e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6";
const OTHER_SHA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A fake Convox rack (seeded apps `web` and others) on a free port, for the test's life.
pub(crate) async fn fake_rack() -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(mock_rack::serve(
        listener,
        mock_rack::MockRackConfig {
            token: crate::kit::RACK_TOKEN.into(),
            seed: 1,
        },
        async move {
            let _ = stopped.await;
        },
    ));
    (format!("http://{addr}"), stop)
}

/// The session cookie of `email`, signed in through the provider.
pub(crate) async fn session_of(s: &SignIn, email: &str) -> String {
    let mut b = Browser::new(email).unwrap_or_else(|e| panic!("{e}"));
    let login = format!("{}/api/v1/auth/web/login?return_to=/account", s.gw.url);
    let page = b.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(page.body.contains(email), "{}", page.body);
    b.cookies.get("rg_session").cloned().unwrap_or_default()
}

/// `method path` on the gateway with `credential` (and a JSON `body`): status and JSON.
async fn call(
    s: &SignIn,
    method: reqwest::Method,
    path: &str,
    credential: &str,
    body: Option<Value>,
) -> (u16, Value) {
    crate::app_rules::api(&s.gw.url, method, path, credential, body).await
}

/// `POST /api/v1/deploy-approvals/{id}/{verb}` (approve or reject) with `credential` and
/// `note`: status and JSON.
async fn decide(
    s: &SignIn,
    id: &Value,
    verb: &str,
    credential: &str,
    note: Option<&str>,
) -> (u16, Value) {
    let path = format!("/api/v1/deploy-approvals/{id}/{verb}");
    let body = json!({ "note": note });
    call(s, reqwest::Method::POST, &path, credential, Some(body)).await
}

/// Through the rack proxy: status and JSON.
async fn rack(
    s: &SignIn,
    method: reqwest::Method,
    path: &str,
    credential: &str,
    form: Option<&[(&str, &str)]>,
) -> (u16, Value) {
    let mut rb = client()
        .request(method, s.gw.proxy(path))
        .basic_auth("convox", Some(credential));
    rb = match form {
        Some(form) => rb.form(form),
        None => rb.body("source tarball bytes"),
    };
    let r = rb.send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Uploads and builds `sha` on `web` with `credential`; the release the build made.
async fn build(
    s: &SignIn,
    credential: &str,
    sha: &str,
    reader: &str,
) -> Result<String, (u16, Value)> {
    let post = reqwest::Method::POST;
    let key = format!("tmp/{sha}.tgz");
    let (status, body) = rack(
        s,
        post.clone(),
        &format!("/apps/web/objects/{key}"),
        credential,
        None,
    )
    .await;
    if status != 200 {
        return Err((status, body));
    }
    let url = format!("object://web/{key}");
    let form = [
        ("url", url.as_str()),
        ("git-sha", sha),
        ("description", "ci"),
    ];
    let (status, body) = rack(s, post, "/apps/web/builds", credential, Some(&form)).await;
    if status != 200 {
        return Err((status, body));
    }
    let id = body["id"].as_str().unwrap_or_default().to_string();
    // `reader` reads the build until the fake rack has finished it.
    for _ in 0..100 {
        let (_, b) = rack(
            s,
            reqwest::Method::GET,
            &format!("/apps/web/builds/{id}"),
            reader,
            None,
        )
        .await;
        if let Some(release) = b["release"].as_str().filter(|r| !r.is_empty()) {
            return Ok(release.to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("build {id} did not finish");
}

both_backends!(
    an_approved_request_lets_exactly_that_deploy_through,
    |db| async move {
        let (rack_url, _stop) = fake_rack().await;
        for (email, role) in [
            ("admin@example.com", "admin"),
            ("deployer@example.com", "deployer"),
            ("viewer@example.com", "viewer"),
        ] {
            let (ok, _, err) = admin(&db, &["users", "add", email, "--role", role]);
            assert!(ok, "{err}");
        }
        let ci = role_token(&db, "cicd");
        let other_ci = token(&db, "other-ci", &["--role", "cicd"]);
        let reader = role_token(&db, "admin");
        let s = SignIn::start_on_rack(&db, &[], &rack_url).await;
        let boss = session_of(&s, "admin@example.com").await;
        let post = reqwest::Method::POST;
        let get = reqwest::Method::GET;

        // Before any approval the token may not upload, build or promote; it is told how.
        let refused = build(&s, &ci, SHA, &reader).await.err().unwrap_or_default();
        assert_eq!(refused.0, 403, "{refused:?}");
        assert_eq!(refused.1["code"], "deploy_not_approved", "{refused:?}");
        assert!(
            refused.1["error"]
                .as_str()
                .is_some_and(|e| e.contains("rack-gateway deploy-approval request --app web")),
            "{refused:?}"
        );

        // The request: refused input first, then a pending request; asking again is the same.
        let ask = |sha: &str| json!({ "app": "web", "git_commit": sha, "message": "Fix login", "branch": "main", "ci_url": "https://ci.example.com/p/7" });
        let (status, body) = call(
            &s,
            post.clone(),
            "/api/v1/deploy-approvals",
            &ci,
            Some(json!({ "app": "web", "git_commit": "1f0e2d3" })),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("full commit")),
            "{body}"
        );
        let (status, asked) = call(
            &s,
            post.clone(),
            "/api/v1/deploy-approvals",
            &ci,
            Some(ask(SHA)),
        )
        .await;
        assert_eq!(status, 201, "{asked}");
        assert_eq!(asked["status"], "pending");
        assert_eq!(asked["requested_by"], "token:cicd-token");
        let id = asked["id"].as_i64().unwrap_or_default();
        let (status, again) = call(
            &s,
            post.clone(),
            "/api/v1/deploy-approvals",
            &ci,
            Some(ask(SHA)),
        )
        .await;
        assert_eq!((status, again["id"].as_i64()), (200, Some(id)), "{again}");

        // Pending is not approved.
        assert_eq!(
            build(&s, &ci, SHA, &reader).await.err().map(|e| e.0),
            Some(403)
        );

        // The CI token polls its own; another token sees nothing of it; a viewer lists it.
        let (status, own) = call(
            &s,
            get.clone(),
            &format!("/api/v1/deploy-approvals/{id}"),
            &ci,
            None,
        )
        .await;
        assert_eq!(
            (status, own["status"].as_str()),
            (200, Some("pending")),
            "{own}"
        );
        let (status, _) = call(
            &s,
            get.clone(),
            &format!("/api/v1/deploy-approvals/{id}"),
            &other_ci,
            None,
        )
        .await;
        assert_eq!(status, 404);
        let (status, listed) =
            call(&s, get.clone(), "/api/v1/deploy-approvals", &other_ci, None).await;
        assert_eq!(
            (status, listed.as_array().map(Vec::len)),
            (200, Some(0)),
            "{listed}"
        );
        let viewer = session_of(&s, "viewer@example.com").await;
        let (status, listed) = call(
            &s,
            get.clone(),
            "/api/v1/deploy-approvals?status=pending",
            &viewer,
            None,
        )
        .await;
        assert_eq!(status, 200, "{listed}");
        assert_eq!(listed[0]["id"].as_i64(), Some(id), "{listed}");
        let (status, _) = call(
            &s,
            get.clone(),
            "/api/v1/deploy-approvals?status=maybe",
            &viewer,
            None,
        )
        .await;
        assert_eq!(status, 400);

        // Only a person who may approve decides, never with an API token, never the asker.
        let (status, body) = decide(&s, &json!(id), "approve", &viewer, None).await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = decide(&s, &json!(id), "approve", &reader, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("not_yours")),
            "{body}"
        );
        let (status, body) = decide(&s, &json!(id), "approve", &boss, Some("ok \u{202E}x")).await;
        assert_eq!(status, 400, "{body}");
        let (status, approved) = decide(&s, &json!(id), "approve", &boss, Some("go")).await;
        assert_eq!(status, 200, "{approved}");
        assert_eq!(approved["status"], "approved");
        assert_eq!(approved["decided_by"], "admin@example.com");
        let (status, body) = decide(&s, &json!(id), "reject", &boss, None).await;
        assert_eq!(status, 409, "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("is approved")),
            "{body}"
        );

        // Approved: the asking token builds; another token, or another app, still may not.
        assert_eq!(
            build(&s, &other_ci, SHA, &reader).await.err().map(|e| e.0),
            Some(403)
        );
        let (status, _) = rack(&s, post.clone(), "/apps/api/objects/tmp/x.tgz", &ci, None).await;
        assert_eq!(status, 403);
        // A build of another commit may run, but its release is not the approved deploy.
        let wrong = build(&s, &ci, OTHER_SHA, &reader)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let (status, body) = rack(
            &s,
            post.clone(),
            &format!("/apps/web/releases/{wrong}/promote"),
            &ci,
            Some(&[]),
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains(OTHER_SHA) && e.contains(SHA)),
            "{body}"
        );
        let (status, _) = rack(
            &s,
            post.clone(),
            "/apps/web/releases/RNOSUCH/promote",
            &ci,
            Some(&[]),
        )
        .await;
        assert_eq!(status, 403);
        // Other deploy-adjacent routes stay closed.
        let (status, _) = rack(
            &s,
            post.clone(),
            "/apps/web/releases",
            &ci,
            Some(&[("env", "A=1")]),
        )
        .await;
        assert_eq!(status, 403);

        // The right build's release is promoted once; the approval is then spent.
        let release = build(&s, &ci, SHA, &reader)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let promote = format!("/apps/web/releases/{release}/promote");
        let (status, body) = rack(&s, post.clone(), &promote, &ci, Some(&[])).await;
        assert_eq!(status, 200, "{body}");
        let (_, own) = call(
            &s,
            get.clone(),
            &format!("/api/v1/deploy-approvals/{id}"),
            &ci,
            None,
        )
        .await;
        assert_eq!(own["status"], "deployed", "{own}");
        assert_eq!(own["release"].as_str(), Some(release.as_str()), "{own}");
        let (status, _) = rack(&s, post.clone(), &promote, &ci, Some(&[])).await;
        assert_eq!(status, 403);
        assert_eq!(
            build(&s, &ci, SHA, &reader).await.err().map(|e| e.0),
            Some(403)
        );

        // On the trail: the request, the approval, and the promote it let through.
        let st = store(&db).await;
        let rows = st.audit_rows(0, 10_000).await.unwrap_or_default();
        let find = |action: &str| rows.iter().filter(|r| r.event.action == action).count();
        // Asked twice, recorded once (the second answer is the same request); the refused
        // first try is recorded as a refusal.
        assert_eq!(find("gateway:deploy-approvals:request"), 2);
        assert!(
            rows.iter()
                .any(|r| r.event.action == "gateway:deploy-approvals:request"
                    && r.event.details["approval_id"] == id
                    && r.event.details["git_commit"] == SHA
                    && r.event.token_name.as_deref() == Some("cicd-token"))
        );
        assert!(
            rows.iter()
                .any(|r| r.event.action == "gateway:deploy-approvals:approve"
                    && r.event.user_email.as_deref() == Some("admin@example.com")
                    && r.event.details["approval_id"] == id
                    && r.event.details["note"] == "go")
        );
        assert!(
            rows.iter()
                .any(|r| r.event.action == "convox:releases:promote"
                    && r.event.token_name.as_deref() == Some("cicd-token")
                    && r.event.details["deploy_approval"]["id"] == id
                    && r.event.details["deploy_approval"]["spent"] == true)
        );
        assert!(
            rows.iter()
                .any(|r| r.event.action == "gateway:deploy-approvals:approve"
                    && r.event.token_name.as_deref() == Some("admin-token")
                    && r.event.details["reason"] == "not_a_person")
        );
    }
);

both_backends!(
    people_cannot_approve_their_own_and_requests_expire,
    |db| async move {
        let (rack_url, stop) = fake_rack().await;
        let ci = role_token(&db, "cicd");
        for (email, role) in [
            ("admin@example.com", "admin"),
            ("deployer@example.com", "deployer"),
        ] {
            let (ok, _, err) = admin(&db, &["users", "add", email, "--role", role]);
            assert!(ok, "{err}");
        }
        // A token acting for the admin: its requests are the admin's own.
        let (ok, out, err) = admin(
            &db,
            &[
                "tokens",
                "create",
                "--name",
                "boss-ci",
                "--role",
                "cicd",
                "--owner",
                "admin@example.com",
            ],
        );
        assert!(ok, "{err}");
        let boss_ci = out.lines().last().unwrap_or_default().trim().to_string();
        let s = SignIn::start_on_rack(&db, &[("DEPLOY_APPROVAL_REQUEST_TTL_SECS", "2")], &rack_url)
            .await;
        let boss = session_of(&s, "admin@example.com").await;
        let deployer = session_of(&s, "deployer@example.com").await;
        let post = reqwest::Method::POST;
        let ask = json!({ "app": "web", "git_commit": SHA });

        let (status, mine) = call(
            &s,
            post.clone(),
            "/api/v1/deploy-approvals",
            &boss_ci,
            Some(ask.clone()),
        )
        .await;
        assert_eq!(status, 201, "{mine}");
        let (status, body) = decide(&s, &mine["id"], "approve", &boss, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("not_yours")),
            "{body}"
        );

        // A person asks (a deployer may), and may not approve it either; the admin rejects it.
        let (status, theirs) = call(
            &s,
            post.clone(),
            "/api/v1/deploy-approvals",
            &deployer,
            Some(ask.clone()),
        )
        .await;
        assert_eq!(status, 201, "{theirs}");
        assert_eq!(theirs["requested_by"], "deployer@example.com");
        let (status, _) = decide(&s, &theirs["id"], "approve", &deployer, None).await;
        assert_eq!(status, 403);
        let (status, rejected) =
            decide(&s, &theirs["id"], "reject", &boss, Some("not on a Friday")).await;
        assert_eq!(
            (status, rejected["status"].as_str()),
            (200, Some("rejected")),
            "{rejected}"
        );

        let (status, later) = call(
            &s,
            post.clone(),
            "/api/v1/deploy-approvals",
            &deployer,
            Some(json!({ "app": "web", "git_commit": OTHER_SHA })),
        )
        .await;
        assert_eq!(status, 201, "{later}");

        // Unanswered past DEPLOY_APPROVAL_REQUEST_TTL_SECS: expired, and no longer decidable.
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        let (_, listed) = call(
            &s,
            reqwest::Method::GET,
            "/api/v1/deploy-approvals",
            &boss,
            None,
        )
        .await;
        let state_of = |id: &Value| {
            listed
                .as_array()
                .and_then(|l| l.iter().find(|r| &r["id"] == id))
                .map(|r| r["status"].clone())
        };
        assert_eq!(state_of(&mine["id"]), Some(json!("expired")), "{listed}");
        assert_eq!(state_of(&theirs["id"]), Some(json!("rejected")), "{listed}");
        let (status, body) = decide(&s, &mine["id"], "approve", &deployer, None).await;
        assert_eq!(status, 403, "a deployer may not approve: {body}");
        let (status, body) = decide(&s, &later["id"], "approve", &boss, None).await;
        assert_eq!(status, 409, "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("is expired")),
            "{body}"
        );
        // An expired request is asked again as a new one.
        let (status, fresh) = call(
            &s,
            post.clone(),
            "/api/v1/deploy-approvals",
            &boss_ci,
            Some(ask),
        )
        .await;
        assert_eq!(status, 201, "{fresh}");
        assert_ne!(fresh["id"], mine["id"]);

        // A promote the gateway cannot check with the rack (the rack is down) is refused with
        // the rack's failure, and the approval is not spent.
        let (status, asked) = call(
            &s,
            post.clone(),
            "/api/v1/deploy-approvals",
            &ci,
            Some(json!({ "app": "web", "git_commit": SHA })),
        )
        .await;
        assert_eq!(status, 201, "{asked}");
        let (status, body) = decide(&s, &asked["id"], "approve", &boss, None).await;
        assert_eq!(status, 200, "{body}");
        let _ = stop.send(());
        let mut answer = (0, Value::Null);
        for _ in 0..50 {
            answer = rack(
                &s,
                post.clone(),
                "/apps/web/releases/RABCDEFGHIJ/promote",
                &ci,
                Some(&[]),
            )
            .await;
            if answer.0 == 502 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(answer.0, 502, "{answer:?}");
        assert_eq!(answer.1["code"], "rack_unreachable", "{answer:?}");
        let (_, still) = call(
            &s,
            reqwest::Method::GET,
            &format!("/api/v1/deploy-approvals/{}", asked["id"]),
            &ci,
            None,
        )
        .await;
        assert_eq!(still["status"], "approved", "{still}");
    }
);

// A token holding approvals of two commits of one app (CI asked for A, then for B, both
// approved) promotes a build of A with A's approval, not refused for B's being the newest; B's
// stays for B.
both_backends!(
    a_promote_spends_the_approval_of_its_own_commit,
    |db| async move {
        const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        let (rack_url, _stop) = fake_rack().await;
        let (ok, _, err) = admin(
            &db,
            &["users", "add", "admin@example.com", "--role", "admin"],
        );
        assert!(ok, "{err}");
        let ci = role_token(&db, "cicd");
        let reader = role_token(&db, "admin");
        let s = SignIn::start_on_rack(&db, &[], &rack_url).await;
        let boss = session_of(&s, "admin@example.com").await;
        let post = reqwest::Method::POST;
        let mut ids = Vec::new();
        for sha in [A, B] {
            let ask = json!({ "app": "web", "git_commit": sha });
            let (status, asked) =
                call(&s, post.clone(), "/api/v1/deploy-approvals", &ci, Some(ask)).await;
            assert_eq!(status, 201, "{asked}");
            let (status, body) = decide(&s, &asked["id"], "approve", &boss, None).await;
            assert_eq!(status, 200, "{body}");
            ids.push(asked["id"].as_i64().unwrap_or_default());
        }
        let release = build(&s, &ci, A, &reader)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let promote = format!("/apps/web/releases/{release}/promote");
        let (status, body) = rack(&s, post.clone(), &promote, &ci, Some(&[])).await;
        assert_eq!(status, 200, "{body}");
        let rows = store(&db)
            .await
            .list_approvals(None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status_of = |id: i64| {
            rows.iter()
                .find(|r| r.id == id)
                .map(|r| r.status.clone())
                .unwrap_or_default()
        };
        assert_eq!(status_of(ids[0]), "deployed", "A's approval spent");
        assert_eq!(status_of(ids[1]), "approved", "B's left for B");
    }
);
