//! Per-app rules end to end, through the real gateway in front of the fake Convox rack: secret
//! env vars masked for those who may not see them and kept when a masked value comes back,
//! protected ones changed only by admins, and the commands and images an approved deploy may
//! run — with the rules' own API, its permissions, and the trail.

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::approvals::{fake_rack, session_of};
use crate::both_backends;
use crate::kit::{Gateway, admin, audited, client, role_token, store, token};
use crate::signin::SignIn;

const DB_SECRET: &str = "s3cr3t-web-db-pass";
const SHA: &str = "1f0e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6";
const OTHER_SHA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A JSON call to the gateway's API with a bearer `credential`: status and JSON.
pub(crate) async fn api(
    gw_url: &str,
    method: reqwest::Method,
    path: &str,
    credential: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = client()
        .request(method, format!("{gw_url}{path}"))
        .bearer_auth(credential);
    if let Some(body) = body {
        rb = rb.json(&body);
    }
    let r = rb.send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// A call through the rack proxy as the convox CLI makes it: status and body text.
async fn rack(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    credential: &str,
    form: Option<&[(&str, &str)]>,
) -> (u16, String) {
    let mut rb = client()
        .request(method, gw.proxy(path))
        .basic_auth("convox", Some(credential));
    if let Some(form) = form {
        rb = rb.form(form);
    }
    let r = rb.send().await.unwrap_or_else(|e| panic!("{e}"));
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// The environment of app web's latest release, as `credential` is shown it (`convox env`).
async fn current_env(gw: &Gateway, credential: &str) -> String {
    let get = reqwest::Method::GET;
    let (status, list) = rack(
        gw,
        get.clone(),
        "/apps/web/releases?limit=1",
        credential,
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let list: Value = serde_json::from_str(&list).unwrap_or_default();
    let id = list[0]["id"].as_str().unwrap_or_default();
    let path = format!("/apps/web/releases/{id}");
    let (status, release) = rack(gw, get, &path, credential, None).await;
    assert_eq!(status, 200, "{release}");
    let release: Value = serde_json::from_str(&release).unwrap_or_default();
    release["env"].as_str().unwrap_or_default().to_string()
}

/// `convox env set` as the stock CLI does it: the current environment as read, with `set`
/// lines added (or replacing theirs), written back whole as a new release. Status and answer.
async fn env_set(gw: &Gateway, credential: &str, set: &[&str]) -> (u16, String) {
    let mut lines: Vec<String> = current_env(gw, credential)
        .await
        .lines()
        .filter(|line| {
            let name = line.split('=').next().unwrap_or_default();
            !set.iter().any(|s| s.split('=').next() == Some(name))
        })
        .map(str::to_string)
        .collect();
    lines.extend(set.iter().map(|s| s.to_string()));
    lines.sort();
    let env = lines.join("\n");
    let post = reqwest::Method::POST;
    rack(
        gw,
        post,
        "/apps/web/releases",
        credential,
        Some(&[("env", &env)]),
    )
    .await
}

/// `convox env unset NAME`: the environment as read, without `name`.
async fn env_unset(gw: &Gateway, credential: &str, name: &str) -> (u16, String) {
    let env: Vec<String> = current_env(gw, credential)
        .await
        .lines()
        .filter(|line| line.split('=').next() != Some(name))
        .map(str::to_string)
        .collect();
    let post = reqwest::Method::POST;
    let form = [("env", env.join("\n"))];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    rack(gw, post, "/apps/web/releases", credential, Some(&form)).await
}

fn code_of(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap_or_default()["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

both_backends!(
    secret_env_is_masked_and_kept_and_protected_env_is_for_admins,
    |db| async move {
        let (rack_url, _stop) = fake_rack().await;
        let admin_token = role_token(&db, "admin");
        let ops = role_token(&db, "ops");
        let deployer = role_token(&db, "deployer");
        let viewer = role_token(&db, "viewer");
        // A custom role that deploys but may not read the environment at all.
        let (ok, _, err) = admin(
            &db,
            &[
                "roles",
                "create",
                "blind-deployer",
                "--permissions",
                "convox:apps:read,convox:releases:*",
            ],
        );
        assert!(ok, "{err}");
        let blind = token(&db, "blind", &["--role", "blind-deployer"]);
        // A custom role that may set rules but not read secrets: it may not set them.
        let (ok, _, err) = admin(
            &db,
            &[
                "roles",
                "create",
                "rule-keeper",
                "--permissions",
                "gateway:app-rules:*",
            ],
        );
        assert!(ok, "{err}");
        let keeper = token(&db, "keeper", &["--role", "rule-keeper"]);
        let gw = Gateway::start(&db, &rack_url, &[]).await;
        let (put, get) = (reqwest::Method::PUT, reqwest::Method::GET);

        // No rules yet: empty, for anyone who may read them.
        let (status, none) =
            api(&gw.url, get.clone(), "/api/v1/app-rules/web", &viewer, None).await;
        assert_eq!(status, 200, "{none}");
        assert_eq!(none["rules"]["secret_env"], json!([]), "{none}");
        assert!(none["updated_by"].is_null(), "{none}");

        // Setting them: admins only; checked input; never by one they would not bind.
        let rules = json!({
            "secret_env": ["DATABASE_URL", "SECRET_*"],
            "protected_env": ["RAILS_ENV"],
        });
        for (credential, code) in [
            (&viewer, "permission_denied"),
            (&deployer, "permission_denied"),
            (&keeper, "more_than_you_hold"),
        ] {
            let (status, body) = api(
                &gw.url,
                put.clone(),
                "/api/v1/app-rules/web",
                credential,
                Some(rules.clone()),
            )
            .await;
            assert_eq!((status, body["code"].as_str()), (403, Some(code)), "{body}");
        }
        let (status, body) = api(
            &gw.url,
            put.clone(),
            "/api/v1/app-rules/web",
            &admin_token,
            Some(json!({ "secret_env": ["A B"] })),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("secret_env")),
            "{body}"
        );
        let (status, body) = api(
            &gw.url,
            put.clone(),
            "/api/v1/app-rules/web",
            &admin_token,
            Some(json!({ "secrets": ["A"] })),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        let (status, body) = api(
            &gw.url,
            put.clone(),
            "/api/v1/app-rules/no%20such",
            &admin_token,
            Some(rules.clone()),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let (status, set) = api(
            &gw.url,
            put.clone(),
            "/api/v1/app-rules/web",
            &admin_token,
            Some(rules.clone()),
        )
        .await;
        assert_eq!(status, 200, "{set}");
        assert_eq!(
            set["rules"]["secret_env"],
            json!(["DATABASE_URL", "SECRET_*"])
        );
        assert_eq!(set["updated_by"], "token:admin-token");
        let (status, all) = api(&gw.url, get.clone(), "/api/v1/app-rules", &viewer, None).await;
        assert_eq!(
            (status, all[0]["app"].as_str()),
            (200, Some("web")),
            "{all}"
        );

        // Secret values are masked for ops (who may read the environment) and kept for admins;
        // the other values stay readable.
        let shown = current_env(&gw, &ops).await;
        assert!(!shown.contains(DB_SECRET), "{shown}");
        assert!(
            shown.contains("DATABASE_URL=[redacted]")
                && shown.contains("SECRET_KEY_BASE=[redacted]"),
            "{shown}"
        );
        assert!(shown.contains("RAILS_ENV=production"), "{shown}");
        let (status, list) = rack(&gw, get.clone(), "/apps/web/releases", &ops, None).await;
        assert_eq!(status, 200, "{list}");
        assert!(
            !list.contains(DB_SECRET) && list.contains("DATABASE_URL=[redacted]"),
            "{list}"
        );
        assert!(current_env(&gw, &admin_token).await.contains(DB_SECRET));

        // Rules the store cannot read fail closed: the release call is refused (503), with no
        // value unmasked and nothing created; once readable again, all is as before.
        crate::credentials::execute(&db, "ALTER TABLE app_rules RENAME TO app_rules_away").await;
        let (status, list) = rack(&gw, get.clone(), "/apps/web/releases", &ops, None).await;
        assert_eq!(
            (status, code_of(&list).as_str()),
            (503, "store_unavailable"),
            "{list}"
        );
        assert!(!list.contains(DB_SECRET), "{list}");
        let (_, before) = rack(
            &gw,
            get.clone(),
            "/apps/web/releases?limit=20",
            &admin_token,
            None,
        )
        .await;
        let post = reqwest::Method::POST;
        let form = [("env", "RAILS_ENV=staging")];
        let (status, answer) = rack(
            &gw,
            post.clone(),
            "/apps/web/releases",
            &deployer,
            Some(&form),
        )
        .await;
        assert_eq!(status, 503, "{answer}");
        let (_, after) = rack(
            &gw,
            get.clone(),
            "/apps/web/releases?limit=20",
            &admin_token,
            None,
        )
        .await;
        assert_eq!(
            before, after,
            "a release was created while the rules could not be read"
        );
        // An admin, whom the rules do not bind, reads nothing and goes on.
        assert!(current_env(&gw, &admin_token).await.contains(DB_SECRET));
        crate::credentials::execute(&db, "ALTER TABLE app_rules_away RENAME TO app_rules").await;
        assert!(
            current_env(&gw, &ops)
                .await
                .contains("DATABASE_URL=[redacted]")
        );

        // `convox env set FOO=bar` by a deployer writes back the mask it read: the secret keeps
        // its value, FOO is set, and the answer is masked too.
        let (status, answer) = env_set(&gw, &deployer, &["FOO=bar"]).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            !answer.contains(DB_SECRET) && answer.contains("DATABASE_URL=[redacted]"),
            "{answer}"
        );
        let real = current_env(&gw, &admin_token).await;
        assert!(
            real.contains(DB_SECRET) && real.contains("FOO=bar"),
            "{real}"
        );
        assert!(!real.contains("[redacted]"), "a mask was stored: {real}");
        let st = store(&db).await;
        assert!(
            audited(&st, |r| r.event.action == "convox:releases:create"
                && r.event.details["env_values_kept"]
                    == json!(["DATABASE_URL", "SECRET_KEY_BASE"]))
            .await,
            "the trail says which masked values were kept"
        );

        // A secret may be given a new value by who may not read it.
        let (status, answer) = env_set(&gw, &deployer, &["DATABASE_URL=postgres://rotated"]).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            current_env(&gw, &admin_token)
                .await
                .contains("DATABASE_URL=postgres://rotated")
        );

        // A mask for a variable the release lacks is no value to keep.
        let (status, answer) = env_set(&gw, &deployer, &["SECRET_NEW=[redacted]"]).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains("SECRET_NEW"), "{answer}");

        // Protected: not set, changed or unset by a deployer; an admin may.
        for (what, (status, answer)) in [
            (
                "change",
                env_set(&gw, &deployer, &["RAILS_ENV=staging"]).await,
            ),
            ("unset", env_unset(&gw, &deployer, "RAILS_ENV").await),
        ] {
            assert_eq!(
                (status, code_of(&answer).as_str()),
                (403, "env_protected"),
                "{what}: {answer}"
            );
            assert!(
                answer.contains("RAILS_ENV") && answer.contains("gateway:protected-env:write"),
                "{answer}"
            );
        }
        assert!(
            current_env(&gw, &admin_token)
                .await
                .contains("RAILS_ENV=production")
        );
        let (status, answer) = env_set(&gw, &admin_token, &["RAILS_ENV=staging"]).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            current_env(&gw, &admin_token)
                .await
                .contains("RAILS_ENV=staging")
        );

        // Nor is an older value brought back by making the new release from an older one.
        let (_, list) = rack(
            &gw,
            get.clone(),
            "/apps/web/releases?limit=20",
            &deployer,
            None,
        )
        .await;
        let list: Value = serde_json::from_str(&list).unwrap_or_default();
        let older = list
            .as_array()
            .and_then(|rs| {
                rs.iter().find(|r| {
                    r["env"]
                        .as_str()
                        .is_some_and(|e| e.contains("RAILS_ENV=production"))
                })
            })
            .cloned()
            .unwrap_or_default();
        let (id, old_env) = (
            older["id"].as_str().unwrap_or_default(),
            older["env"].as_str().unwrap_or_default(),
        );
        assert!(!id.is_empty(), "{list}");
        let post = reqwest::Method::POST;
        let (status, answer) = rack(
            &gw,
            post.clone(),
            "/apps/web/releases",
            &deployer,
            Some(&[("env", old_env), ("parent-release", id)]),
        )
        .await;
        assert_eq!(
            (status, code_of(&answer).as_str()),
            (403, "env_protected"),
            "{answer}"
        );

        // Without convox:env:read every value comes back masked, and every one is kept.
        let blind_view = current_env(&gw, &blind).await;
        assert!(blind_view.contains("RAILS_ENV=[redacted]"), "{blind_view}");
        let (status, answer) = env_set(&gw, &blind, &["BLIND=1"]).await;
        assert_eq!(status, 200, "{answer}");
        let real = current_env(&gw, &admin_token).await;
        assert!(
            real.contains("RAILS_ENV=staging")
                && real.contains("DATABASE_URL=postgres://rotated")
                && real.contains("BLIND=1"),
            "{real}"
        );

        // Bodies the gateway could read otherwise than the rack are refused, not guessed at.
        let (status, answer) = rack(
            &gw,
            post.clone(),
            "/apps/web/releases?env=RAILS_ENV%3Dx",
            &deployer,
            None,
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        let (status, answer) = rack(
            &gw,
            post.clone(),
            "/apps/web/releases",
            &deployer,
            Some(&[("env", "A=1"), ("env", "RAILS_ENV=x")]),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        for (content_type, body) in [
            ("application/x-www-form-urlencoded", "env=RAILS_ENV%3Dx;a=b"),
            ("application/x-www-form-urlencoded", "env=RAILS_ENV%3Dx%zz"),
            ("application/json", r#"{"env":"RAILS_ENV=x"}"#),
        ] {
            let r = client()
                .post(gw.proxy("/apps/web/releases"))
                .basic_auth("convox", Some(&deployer))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let status = r.status().as_u16();
            assert!(matches!(status, 400 | 415), "{body}: {status}");
        }
        assert!(
            current_env(&gw, &admin_token)
                .await
                .contains("RAILS_ENV=staging")
        );

        // Cleared: ops sees the values again; the trail has both changes.
        let (status, cleared) = api(
            &gw.url,
            reqwest::Method::DELETE,
            "/api/v1/app-rules/web",
            &admin_token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{cleared}");
        assert!(current_env(&gw, &ops).await.contains("postgres://rotated"));
        let (status, _) = api(
            &gw.url,
            reqwest::Method::DELETE,
            "/api/v1/app-rules/web",
            &admin_token,
            None,
        )
        .await;
        assert_eq!(status, 404);
        for action in ["gateway:app-rules:update", "gateway:app-rules:delete"] {
            assert!(audited(&st, |r| r.event.action == action).await, "{action}");
        }
        // The trail says which variables were made secret (names, not values).
        assert!(
            audited(&st, |r| r.event.action == "gateway:app-rules:update"
                && r.event.details["rules"]["secret_env"]
                    == json!(["DATABASE_URL", "SECRET_*"]))
            .await
        );
        gw.stop().await;
    }
);

/// The rack's build `build` of web, as its build pod reports it: the manifest it read, then
/// The scene of a deploy through an approval: the fake rack (running while `_rack` is held:
/// bind it), a cicd token (`ci`) and an admin token (`pod`), and admin@example.com signed in
/// (`boss`) on the gateway (`s`) started with `env`.
struct Deploying {
    _rack: tokio::sync::oneshot::Sender<()>,
    ci: String,
    pod: String,
    s: SignIn,
    boss: String,
}

async fn deploying(db: &crate::kit::Db, env: &[(&str, &str)]) -> Deploying {
    let (rack_url, rack) = fake_rack().await;
    let (ok, _, err) = admin(
        db,
        &["users", "add", "admin@example.com", "--role", "admin"],
    );
    assert!(ok, "{err}");
    let ci = role_token(db, "cicd");
    let pod = role_token(db, "admin");
    let s = SignIn::start_on_rack(db, env, &rack_url).await;
    let boss = session_of(&s, "admin@example.com").await;
    Deploying {
        _rack: rack,
        ci,
        pod,
        s,
        boss,
    }
}

/// Sets app web's `rules` with the admin token `pod`.
async fn set_rules(gw: &Gateway, pod: &str, rules: Value) {
    let put = reqwest::Method::PUT;
    let (status, body) = api(&gw.url, put, "/api/v1/app-rules/web", pod, Some(rules)).await;
    assert_eq!(status, 200, "{body}");
}

/// Asks for a deploy of [`SHA`] of app web with `ci` and approves it as `boss`: its id.
async fn approved(gw: &Gateway, ci: &str, boss: &str) -> i64 {
    let post = reqwest::Method::POST;
    let (status, asked) = api(
        &gw.url,
        post.clone(),
        "/api/v1/deploy-approvals",
        ci,
        Some(json!({ "app": "web", "git_commit": SHA })),
    )
    .await;
    assert_eq!(status, 201, "{asked}");
    let path = format!("/api/v1/deploy-approvals/{}/approve", asked["id"]);
    let (status, body) = api(&gw.url, post, &path, boss, Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    asked["id"].as_i64().unwrap_or_default()
}

/// the release made from it (by `pod`, a credential standing for the rack's build pod).
async fn finish_build(gw: &Gateway, pod: &str, build: &str, image: &str) -> String {
    let manifest = format!("services:\n  web:\n    image: {image}\n    port: 3000\n");
    let path = format!("/apps/web/builds/{build}");
    let (status, body) = rack(
        gw,
        reqwest::Method::PUT,
        &path,
        pod,
        Some(&[("manifest", &manifest)]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let post = reqwest::Method::POST;
    let (status, release) = rack(
        gw,
        post,
        "/apps/web/releases",
        pod,
        Some(&[("build", build)]),
    )
    .await;
    assert_eq!(status, 200, "{release}");
    let release: Value = serde_json::from_str(&release).unwrap_or_default();
    release["id"].as_str().unwrap_or_default().to_string()
}

both_backends!(
    an_approved_deploy_runs_only_approved_commands_and_images,
    |db| async move {
        let Deploying {
            _rack,
            ci,
            pod,
            s,
            boss,
        } = deploying(&db, &[]).await;
        let gw = &s.gw;
        let (status, body) = api(
            &gw.url,
            reqwest::Method::PUT,
            "/api/v1/app-rules/web",
            &pod,
            Some(json!({
                "approved_commands": ["bin/rails db:migrate", "sleep 6 && echo migrated"],
                "service_images": { "web": "registry.example.com/web:{commit}" },
            })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let run_on =
            |command: &'static str, environment: Option<&'static str>, release: Option<String>| {
                let ci = ci.clone();
                async move {
                    let mut rb = client()
                        .post(gw.proxy("/apps/web/services/web/processes"))
                        .basic_auth("convox", Some(&ci))
                        .header("command", command);
                    if let Some(env) = environment {
                        rb = rb.header("environment", env);
                    }
                    if let Some(release) = release {
                        rb = rb.header("release", release);
                    }
                    let r = rb.send().await.unwrap_or_else(|e| panic!("{e}"));
                    (r.status().as_u16(), r.text().await.unwrap_or_default())
                }
            };
        let run = |command: &'static str, environment: Option<&'static str>| {
            run_on(command, environment, None)
        };

        // No approval: not even an approved command.
        let (status, body) = run("bin/rails db:migrate", None).await;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (403, "deploy_not_approved"),
            "{body}"
        );

        // Asked for and approved.
        let (status, asked) = api(
            &gw.url,
            reqwest::Method::POST,
            "/api/v1/deploy-approvals",
            &ci,
            Some(json!({ "app": "web", "git_commit": SHA })),
        )
        .await;
        assert_eq!(status, 201, "{asked}");
        let id = asked["id"].clone();
        let (status, body) = api(
            &gw.url,
            reqwest::Method::POST,
            &format!("/api/v1/deploy-approvals/{id}/approve"),
            &boss,
            Some(json!({})),
        )
        .await;
        assert_eq!(status, 200, "{body}");

        // The approved command runs (detached, or as `convox run`'s sleeping holder); any
        // other command, or one with an environment of its own, does not.
        let (status, body) = run("bin/rails db:migrate", None).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = run(" sleep 3600", None).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = run("bin/rails console", None).await;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (403, "deploy_not_approved"),
            "{body}"
        );
        assert!(
            body.contains("bin/rails db:migrate"),
            "the refusal names what is approved: {body}"
        );
        let (status, body) = run("bin/rails db:migrate", Some("RAILS_ENV=development")).await;
        assert_eq!(status, 403, "{body}");
        // The process the run started is one the CI token may look at (`convox run` waits on it).
        let (status, procs) =
            rack(gw, reqwest::Method::GET, "/apps/web/processes", &ci, None).await;
        assert_eq!(status, 200, "{procs}");
        let procs: Value = serde_json::from_str(&procs).unwrap_or_default();
        let pid = procs
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["command"] == "bin/rails db:migrate"))
            .and_then(|p| p["id"].as_str())
            .unwrap_or_default()
            .to_string();
        let (status, body) = rack(
            gw,
            reqwest::Method::GET,
            &format!("/apps/web/processes/{pid}"),
            &ci,
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");

        // `convox exec` (and an attached `convox run`) of an approved command in one of the
        // app's processes: the session lives past the gateway's re-check of its credentials
        // (every 5 s) on the approval's terms. Another command is refused at the upgrade.
        let exec = |command: &'static str| {
            let mut request =
                crate::streaming::ws_request(gw, &format!("/apps/web/processes/{pid}/exec"), &ci);
            request
                .headers_mut()
                .insert("command", http::HeaderValue::from_static(command));
            request
                .headers_mut()
                .insert("tty", http::HeaderValue::from_static("false"));
            tokio_tungstenite::connect_async(request)
        };
        let (mut socket, _) = exec("sleep 6 && echo migrated")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut said = String::new();
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(std::time::Duration::from_secs(20), socket.next()).await
        {
            match message {
                tokio_tungstenite::tungstenite::Message::Text(t) => said.push_str(&t),
                tokio_tungstenite::tungstenite::Message::Close(_) => break,
                _ => {}
            }
        }
        assert!(
            said.contains("migrated"),
            "the session was cut short: {said:?}"
        );
        match exec("sh").await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), 403)
            }
            other => panic!("an unapproved exec opened: {:?}", other.map(|_| ())),
        }

        // A build of the approved commit whose release runs another image: not promoted, and
        // the approval is not spent.
        let post = reqwest::Method::POST;
        let (status, body) = rack(
            gw,
            post.clone(),
            &format!("/apps/web/objects/tmp/{SHA}.tgz"),
            &ci,
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, build) = rack(
            gw,
            post.clone(),
            "/apps/web/builds",
            &ci,
            Some(&[
                ("url", &format!("object://web/tmp/{SHA}.tgz")),
                ("git-sha", SHA),
                ("external", "true"),
            ]),
        )
        .await;
        assert_eq!(status, 200, "{build}");
        let build: Value = serde_json::from_str(&build).unwrap_or_default();
        let build = build["id"].as_str().unwrap_or_default().to_string();
        let wrong = finish_build(
            gw,
            &pod,
            &build,
            &format!("registry.example.com/web:{OTHER_SHA}"),
        )
        .await;
        let (status, body) = rack(
            gw,
            post.clone(),
            &format!("/apps/web/releases/{wrong}/promote"),
            &ci,
            Some(&[]),
        )
        .await;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (403, "deploy_not_approved"),
            "{body}"
        );
        assert!(
            body.contains("image rules")
                && body.contains(&format!("registry.example.com/web:{SHA}")),
            "{body}"
        );

        // The same build reporting the approved image. Migrations run on it before the promote
        // (`convox run --release`), but not on the release with the other image.
        let right =
            finish_build(gw, &pod, &build, &format!("registry.example.com/web:{SHA}")).await;
        let (status, body) = run_on("bin/rails db:migrate", None, Some(wrong.clone())).await;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (403, "deploy_not_approved"),
            "{body}"
        );
        assert!(body.contains("image rules"), "{body}");
        let (status, body) = run_on("bin/rails db:migrate", None, Some(right.clone())).await;
        assert_eq!(status, 200, "{body}");
        // Promoted, which spends the approval.
        let (status, body) = rack(
            gw,
            post.clone(),
            &format!("/apps/web/releases/{right}/promote"),
            &ci,
            Some(&[]),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = run("bin/rails db:migrate", None).await;
        assert_eq!(status, 403, "spent: {body}");
    }
);

both_backends!(
    the_server_command_sets_lists_and_clears_rules,
    |db| async move {
        let dir = crate::kit::scratch_dir();
        let file = dir.join("web-rules.json");
        let write = |text: &str| std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
        let path = file.to_string_lossy().into_owned();

        write(r#"{"secret_env": ["STRIPE_KEY"], "approved_commands": ["bin/migrate"]}"#);
        let (ok, out, err) = admin(&db, &["app-rules", "set", "web", "--file", &path]);
        assert!(ok, "{err}");
        assert_eq!(out.trim(), "Set the rules of app web.");
        let (ok, out, err) = admin(&db, &["app-rules", "list", "--json"]);
        assert!(ok, "{err}");
        let listed: Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(
            listed[0]["rules"]["secret_env"],
            json!(["STRIPE_KEY"]),
            "{out}"
        );
        let (ok, out, _) = admin(&db, &["app-rules", "list"]);
        assert!(
            ok && out.contains("approved commands: bin/migrate"),
            "{out}"
        );

        // Bad input changes nothing, and says what is wrong.
        for (text, says) in [
            ("{\"secrets\": []}", "not app rules"),
            ("{\"secret_env\": [\"A B\"]}", "secret_env"),
        ] {
            write(text);
            let (ok, _, err) = admin(&db, &["app-rules", "set", "web", "--file", &path]);
            assert!(!ok && err.contains(says), "{text}: {err}");
        }
        let (ok, _, err) = admin(&db, &["app-rules", "set", "no such", "--file", &path]);
        assert!(!ok && err.contains("app"), "{err}");

        let (ok, out, err) = admin(&db, &["app-rules", "clear", "web"]);
        assert!(ok, "{err}");
        assert_eq!(out.trim(), "Cleared the rules of app web.");
        let (ok, out, _) = admin(&db, &["app-rules", "list"]);
        assert!(ok && out.contains("No app has rules."), "{out}");
        let (ok, _, err) = admin(&db, &["app-rules", "clear", "web"]);
        assert!(!ok && err.contains("not found"), "{err}");
        // On the trail with the operator's login.
        let st = store(&db).await;
        assert!(
            audited(&st, |r| r.event.action == "gateway:app-rules:update"
                && r.event.details["operator"]
                    .as_str()
                    .is_some_and(|o| o.starts_with("cli:")))
            .await
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
);

both_backends!(
    rules_fail_closed_when_the_rack_cannot_be_asked,
    |db| async move {
        let (rack_url, stop) = fake_rack().await;
        let admin_token = role_token(&db, "admin");
        let deployer = role_token(&db, "deployer");
        let gw = Gateway::start(&db, &rack_url, &[]).await;
        let rules = json!({ "secret_env": ["DATABASE_URL"], "protected_env": ["RAILS_ENV"] });
        let put = reqwest::Method::PUT;
        let path = "/api/v1/app-rules/web";
        let (status, body) = api(&gw.url, put, path, &admin_token, Some(rules)).await;
        assert_eq!(status, 200, "{body}");
        // What `convox env set` would write back: a masked secret, and a protected value.
        let env = "DATABASE_URL=[redacted]\nRAILS_ENV=production\nNEW=1";
        let release = || {
            let form = [("env", env)];
            let (gw, deployer) = (&gw, &deployer);
            async move {
                rack(
                    gw,
                    reqwest::Method::POST,
                    "/apps/web/releases",
                    deployer,
                    Some(&form),
                )
                .await
            }
        };
        // Up, the masked value is kept and the release made.
        let (status, made) = release().await;
        assert_eq!(status, 200, "{made}");

        // Down: the value to keep and the protected ones cannot be looked up, so the release
        // is refused with the reason — never sent with the mask as the value, never a 500.
        let _ = stop.send(());
        let (status, answer) = release().await;
        assert_eq!(
            (status, code_of(&answer).as_str()),
            (502, "rack_unreachable"),
            "{answer}"
        );
        assert!(!answer.contains(DB_SECRET), "{answer}");
        // Refused at the lookup, before anything was sent on.
        assert!(
            answer.contains("reading the environment the release changes"),
            "{answer}"
        );
        let (status, answer) = rack(
            &gw,
            reqwest::Method::GET,
            "/apps/web/releases",
            &deployer,
            None,
        )
        .await;
        assert_eq!(status, 502, "{answer}");
        // Both attempts are on the trail as the rack's failure.
        let st = store(&db).await;
        assert!(
            audited(&st, |row| row.event.action == "convox:releases:create"
                && row.event.status == Some(502))
            .await,
            "no failed release on the trail"
        );
    }
);

both_backends!(
    promoting_an_older_release_cannot_roll_protected_env_back,
    |db| async move {
        let (rack_url, _stop) = fake_rack().await;
        let admin_token = role_token(&db, "admin");
        let deployer = role_token(&db, "deployer");
        let gw = Gateway::start(&db, &rack_url, &[]).await;
        let (get, post) = (reqwest::Method::GET, reqwest::Method::POST);
        // The release in effect before the change.
        let (status, list) = rack(
            &gw,
            get.clone(),
            "/apps/web/releases?limit=1",
            &admin_token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{list}");
        let list: Value = serde_json::from_str(&list).unwrap_or_default();
        let before = list[0]["id"].as_str().unwrap_or_default().to_string();
        // An admin protects RAILS_ENV and changes it: a new latest release.
        let rules = json!({ "protected_env": ["RAILS_ENV"] });
        let (status, body) = api(
            &gw.url,
            reqwest::Method::PUT,
            "/api/v1/app-rules/web",
            &admin_token,
            Some(rules),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, made) = env_set(&gw, &admin_token, &["RAILS_ENV=staging"]).await;
        assert_eq!(status, 200, "{made}");
        let after = serde_json::from_str::<Value>(&made).unwrap_or_default()["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!after.is_empty() && after != before, "{made}");

        // A deployer promoting the older release would put RAILS_ENV=production back: refused,
        // naming it, before the rack hears of it.
        let promote = |id: &str| format!("/apps/web/releases/{id}/promote");
        let (status, answer) = rack(&gw, post.clone(), &promote(&before), &deployer, None).await;
        assert_eq!(
            (status, code_of(&answer).as_str()),
            (403, "env_protected"),
            "{answer}"
        );
        assert!(answer.contains("RAILS_ENV"), "{answer}");
        let st = store(&db).await;
        assert!(
            audited(&st, |row| row.event.action == "convox:releases:promote"
                && row.event.status == Some(403))
            .await,
            "the refusal is on the trail"
        );
        // The latest release (the admin's values) is theirs to promote; a mangled id is a 400.
        let (status, answer) = rack(&gw, post.clone(), &promote(&after), &deployer, None).await;
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = rack(&gw, post.clone(), &promote("R%20x"), &deployer, None).await;
        assert!(matches!(status, 400 | 404), "{status} {answer}");
        // An admin may roll it back.
        let (status, answer) = rack(&gw, post, &promote(&before), &admin_token, None).await;
        assert_eq!(status, 200, "{answer}");
    }
);

both_backends!(
    an_approved_exec_ends_with_its_approval_window,
    |db| async move {
        // A deploy window of 7 s: an exec it lets through must not outlive it.
        let env = [("DEPLOY_APPROVAL_WINDOW_SECS", "7")];
        let Deploying {
            _rack,
            ci,
            pod,
            s,
            boss,
        } = deploying(&db, &env).await;
        let gw = &s.gw;
        let rules = json!({ "approved_commands": ["sleep 30 && echo late"] });
        set_rules(gw, &pod, rules).await;
        approved(gw, &ci, &boss).await;
        let approved_at = std::time::Instant::now();

        let (status, procs) =
            rack(gw, reqwest::Method::GET, "/apps/web/processes", &ci, None).await;
        assert_eq!(status, 200, "{procs}");
        let procs: Value = serde_json::from_str(&procs).unwrap_or_default();
        let pid = procs[0]["id"].as_str().unwrap_or_default().to_string();
        let mut request =
            crate::streaming::ws_request(gw, &format!("/apps/web/processes/{pid}/exec"), &ci);
        request.headers_mut().insert(
            "command",
            http::HeaderValue::from_static("sleep 30 && echo late"),
        );
        request
            .headers_mut()
            .insert("tty", http::HeaderValue::from_static("false"));
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut said = String::new();
        let mut closed_with = None;
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(std::time::Duration::from_secs(40), socket.next()).await
        {
            match message {
                tokio_tungstenite::tungstenite::Message::Text(t) => said.push_str(&t),
                tokio_tungstenite::tungstenite::Message::Close(frame) => {
                    closed_with = frame.map(|f| f.reason.to_string());
                    break;
                }
                _ => {}
            }
        }
        // Ended at the window's end (7 s after the approval, which was before `approved_at`),
        // not by the command, nor at the next re-check of the credentials (every 5 s).
        let lasted = approved_at.elapsed();
        assert!(
            !said.contains("late"),
            "the session outlived its approval: {said:?}"
        );
        assert!(
            lasted < std::time::Duration::from_secs(9),
            "ended after {lasted:?}"
        );
        let reason = closed_with.unwrap_or_default();
        assert!(reason.contains("deploy approval"), "{reason:?} {said:?}");
    }
);

both_backends!(
    an_approved_attached_run_stops_its_own_holder_and_nothing_else,
    |db| async move {
        let other_ci = token(&db, "other-ci", &["--role", "cicd"]);
        // A short deploy window: the holder is stopped after it ends.
        let env = [("DEPLOY_APPROVAL_WINDOW_SECS", "4")];
        let Deploying {
            _rack,
            ci,
            pod,
            s,
            boss,
        } = deploying(&db, &env).await;
        let gw = &s.gw;
        let rules = json!({ "approved_commands": ["bin/rails db:migrate"] });
        set_rules(gw, &pod, rules).await;
        let delete = reqwest::Method::DELETE;
        let stop = |credential: String, pid: String| {
            let delete = delete.clone();
            async move {
                let path = format!("/apps/web/processes/{pid}");
                rack(gw, delete, &path, &credential, None).await
            }
        };
        let (status, procs) =
            rack(gw, reqwest::Method::GET, "/apps/web/processes", &pod, None).await;
        assert_eq!(status, 200, "{procs}");
        let procs: Value = serde_json::from_str(&procs).unwrap_or_default();
        let seeded = procs[0]["id"].as_str().unwrap_or_default().to_string();
        assert!(!seeded.is_empty(), "{procs}");
        // Without an approval, nothing is stopped, and the refusal says what could be.
        let (status, body) = stop(ci.clone(), seeded.clone()).await;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (403, "deploy_not_approved"),
            "{body}"
        );
        assert!(body.contains("holder process"), "{body}");

        let approval = approved(gw, &ci, &boss).await;
        let approved_at = std::time::Instant::now();
        let run = |command: &'static str| {
            let ci = ci.clone();
            async move {
                let r = client()
                    .post(gw.proxy("/apps/web/services/web/processes"))
                    .basic_auth("convox", Some(&ci))
                    .header("command", command)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or_default();
                (status, body["id"].as_str().unwrap_or_default().to_string())
            }
        };
        // `convox run` attached: the holder, then (in the CLI) an exec of the command.
        let (status, holder) = run("sleep 3600").await;
        assert_eq!(status, 200);
        assert!(!holder.is_empty());
        let (status, detached) = run("bin/rails db:migrate").await;
        assert_eq!(status, 200);

        // Not another process: not the app's own, not a detached run's, and not for another
        // credential, even one allowed to ask for approvals.
        for (credential, pid) in [(&ci, &seeded), (&ci, &detached), (&other_ci, &holder)] {
            let (status, body) = stop(credential.clone(), pid.clone()).await;
            assert_eq!(
                (status, code_of(&body).as_str()),
                (403, "deploy_not_approved"),
                "{pid}: {body}"
            );
        }
        // Not the same process id under another app.
        let (status, body) = rack(
            gw,
            delete.clone(),
            &format!("/apps/api/processes/{holder}"),
            &ci,
            None,
        )
        .await;
        assert_eq!(status, 403, "{body}");

        // The approval's window ends; the holder it started may still be stopped, once the
        // command ended, as `convox run` does.
        let window = std::time::Duration::from_secs(4);
        tokio::time::sleep(window.saturating_sub(approved_at.elapsed())).await;
        let (status, _) = run("bin/rails db:migrate").await;
        assert_eq!(status, 403, "the window is over");
        let (status, body) = stop(ci.clone(), holder.clone()).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = rack(
            gw,
            reqwest::Method::GET,
            &format!("/apps/web/processes/{holder}"),
            &pod,
            None,
        )
        .await;
        assert_eq!(status, 404, "the holder still runs: {body}");
        // The trail says which approval let the stop through.
        let st = store(&db).await;
        assert!(
            audited(&st, |r| r.event.action == "convox:processes:terminate"
                && r.event.details["deploy_approval"]["id"].as_i64()
                    == Some(approval))
            .await
        );
    }
);
