//! Health, readiness, start-up validation and graceful shutdown.

use std::process::Command;
use std::time::Duration;

use crate::both_backends;
use crate::kit::{BIN, Backend, Db, Gateway, admin, client, database, role_token, store};
use crate::upstream::TestRack;

both_backends!(health_and_readiness, |db| async move {
    let rack = TestRack::start().await;
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let c = client();
    let resp = c
        .get(format!("{}/api/v1/health", gw.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["status"], "ok");
    let resp = c
        .get(format!("{}/api/v1/health/ready", gw.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["database"]["ok"], true);
    assert_eq!(body["rack"]["ok"], true);
    // Anyone may ask, so checks are shared: a burst of 40 does not become 40 calls to the
    // rack (at most one per 2 s).
    let burst = (0..40).map(|_| {
        let c = c.clone();
        let url = format!("{}/api/v1/health/ready", gw.url);
        async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    let statuses = futures_util::future::join_all(burst).await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200))),
        "{statuses:?}"
    );
    let checks = rack.seen().iter().filter(|s| s.path == "/system").count();
    assert!(
        (1..=2).contains(&checks),
        "{checks} rack checks for 41 readiness requests"
    );
    // Unknown gateway routes are 404 JSON, not forwarded.
    let resp = c
        .get(format!("{}/api/v1/nope", gw.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 404);
    assert!(rack.seen().iter().all(|s| s.path == "/system"));
});

both_backends!(the_longest_timeouts_work, |db| async move {
    // Ten years, the most each duration setting takes: deadlines computed from them must not
    // overflow (near u64::MAX seconds every request panicked).
    let rack = TestRack::start().await;
    let deployer = role_token(&db, "deployer");
    let ten_years = "315360000";
    let env = [
        "CLIENT_TIMEOUT_SECS",
        "RACK_CONNECT_TIMEOUT_SECS",
        "RACK_READ_TIMEOUT_SECS",
        "SHUTDOWN_TIMEOUT_SECS",
        "SESSION_IDLE_TIMEOUT_SECS",
        "SESSION_LIFETIME_SECS",
    ]
    .map(|name| (name, ten_years));
    let gw = Gateway::start(&db, &rack.url, &env).await;
    let c = client();
    let resp = c
        .get(gw.proxy("/apps"))
        .basic_auth("convox", Some(&deployer))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200, "{}", gw.all_output());
    let resp = c
        .post(gw.proxy("/apps/web/objects/tmp/x.tgz"))
        .basic_auth("convox", Some(&deployer))
        .body(vec![1u8; 1 << 20])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200, "{}", gw.all_output());
    assert!(!gw.all_output().contains("panicked"), "{}", gw.all_output());
});

#[test]
fn start_up_validation_names_the_variable_and_hides_secrets() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("RACK_TOKEN", "sekrit-value")], "RACK_HOST is required"),
        (
            &[("RACK_HOST", "https://rack.example.com")],
            "RACK_TOKEN is required",
        ),
        (
            &[("RACK_HOST", "ftp://rack"), ("RACK_TOKEN", "sekrit-value")],
            "RACK_HOST is invalid",
        ),
        (
            &[
                ("RACK_HOST", "https://convox:sekrit-value@rack"),
                ("RACK_TOKEN", "sekrit-value"),
            ],
            "RACK_HOST is invalid",
        ),
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "x"),
                ("LISTEN_ADDR", "nowhere"),
            ],
            "LISTEN_ADDR is invalid",
        ),
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "x"),
                ("LOG_LEVEL", "garbage["),
            ],
            "LOG_LEVEL is invalid",
        ),
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "x"),
                ("LOG_FORMAT", "xml"),
            ],
            "LOG_FORMAT is invalid",
        ),
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "x"),
                ("DATABASE_URL", "mysql://db"),
            ],
            "DATABASE_URL is invalid",
        ),
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "x"),
                ("AUDIT_HMAC_KEY", "sekrit-value"),
            ],
            "AUDIT_HMAC_KEY is invalid",
        ),
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "x"),
                ("CLIENT_TIMEOUT_SECS", "18446744073709551615"),
            ],
            "CLIENT_TIMEOUT_SECS is invalid",
        ),
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "sekrit-value"),
                ("WORKER_THREADS", "0"),
            ],
            "WORKER_THREADS is invalid",
        ),
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "sekrit-value"),
                ("SQLITE_SYNCHRONOUS", "off"),
            ],
            "SQLITE_SYNCHRONOUS is invalid",
        ),
        // A bare word that is not a level would silence every log line.
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "x"),
                ("LOG_LEVEL", "warning"),
            ],
            "LOG_LEVEL is invalid",
        ),
        // Handed to every visitor in the sign-in redirect.
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "x"),
                ("PUBLIC_URL", "https://admin:sekrit-value@gw.example.com"),
            ],
            "PUBLIC_URL is invalid",
        ),
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "x"),
                ("PUBLIC_URL", "https://gw.example.com"),
                ("OIDC_ISSUER", "https://idp.example.com/?tok=sekrit-value"),
                ("OIDC_CLIENT_ID", "gw"),
                ("OIDC_CLIENT_SECRET", "s"),
            ],
            "OIDC_ISSUER is invalid",
        ),
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "x"),
                ("PUBLIC_URL", "https://gw.example.com"),
                ("OIDC_ISSUER", "https://idp.example.com"),
                ("OIDC_CLIENT_ID", "gw"),
                ("OIDC_CLIENT_SECRET", "s"),
                (
                    "OIDC_REDIRECT_URL",
                    "javascript:alert(1)//api/v1/auth/callback",
                ),
            ],
            "OIDC_REDIRECT_URL is invalid",
        ),
        // Every request carries the rack token: plain http only to this host.
        (
            &[
                ("RACK_HOST", "http://rack.internal:5443"),
                ("RACK_TOKEN", "x"),
            ],
            "RACK_HOST is invalid",
        ),
        // A pin for a rack reached without TLS would do nothing.
        (
            &[
                ("RACK_HOST", "http://127.0.0.1:5443"),
                ("RACK_TOKEN", "x"),
                (
                    "RACK_TLS_PIN_SHA256",
                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                ),
            ],
            "RACK_TLS_PIN_SHA256 is invalid",
        ),
        // Trusting everyone lets any client write its audited address.
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "x"),
                ("TRUSTED_PROXIES", "10.0.0.0/8, 0.0.0.0/0"),
            ],
            "TRUSTED_PROXIES is invalid",
        ),
        // Said as the admin commands say it, once (it read "database: database error: error
        // communicating with database: …"), and without the URL's password.
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "x"),
                ("LISTEN_ADDR", "127.0.0.1:0"),
                (
                    "DATABASE_URL",
                    "postgres://rgw:sekrit-value@127.0.0.1:1/rgw",
                ),
            ],
            "error: cannot open the database (DATABASE_URL): error communicating with \
             database: Connection refused",
        ),
        // SQLite said only "(code: 14) unable to open database file".
        (
            &[
                ("RACK_HOST", "https://rack"),
                ("RACK_TOKEN", "x"),
                ("LISTEN_ADDR", "127.0.0.1:0"),
                ("AUDIT_HMAC_KEY", "0123456789abcdef0123456789abcdef"),
                (
                    "DATABASE_URL",
                    "sqlite:///nonexistent-rgw-dir/sub/gateway.db",
                ),
            ],
            "error: cannot open the database (DATABASE_URL): the directory \
             /nonexistent-rgw-dir/sub does not exist",
        ),
    ];
    for (env, expected) in cases {
        let out = Command::new(BIN)
            .arg("serve")
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.status.success(), "{expected}: started anyway");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(!err.contains("sekrit-value"), "secret printed: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    }
}

both_backends!(
    sigterm_finishes_in_flight_requests_then_exits_zero,
    |db| async move {
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        rack.set_slow(true);
        let c = client();
        let url = gw.proxy("/apps/web/restart");
        let in_flight = tokio::spawn({
            let admin = admin.clone();
            async move {
                c.post(url)
                    .basic_auth("convox", Some(admin))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
        });
        // Let the request reach the rack, then ask the gateway to stop.
        let reached = crate::kit::eventually(|| {
            let n = rack.seen().len();
            async move { n > 0 }
        })
        .await;
        assert!(reached);
        let (exit, gw) = gw.stop().await;
        assert_eq!(exit.and_then(|s| s.code()), Some(0), "{}", gw.all_output());
        assert_eq!(
            in_flight.await.ok().and_then(Result::ok),
            Some(200),
            "in-flight request finished"
        );
        // Its outcome was flushed before exit.
        let s = store(&db).await;
        let rows = s.audit_rows(0, 1000).await.unwrap_or_default();
        assert!(
            rows.iter()
                .any(|r| r.event.kind.as_str() == "outcome" && r.event.status == Some(200)),
            "outcome flushed on shutdown"
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_gateway_told_to_sync_every_commit_says_so_and_audits() {
    // SQLITE_SYNCHRONOUS=full reaches the store (its unit test checks both connections'
    // pragma); here, that the gateway starts with it, says which it runs with, and audits.
    let Some(db) = database(Backend::Sqlite).await else {
        return;
    };
    let rack = TestRack::start().await;
    let token = role_token(&db, "viewer");
    for (value, says) in [("full", "\"FULL\""), ("", "\"NORMAL\"")] {
        let gw = Gateway::start(&db, &rack.url, &[("SQLITE_SYNCHRONOUS", value)]).await;
        let resp = client()
            .get(gw.proxy("/apps"))
            .basic_auth("convox", Some(&token))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
        let id = crate::kit::request_id(&resp);
        let logged = crate::kit::eventually(|| {
            let out = gw.all_output();
            async move { out.contains("SQLite store") && out.contains(says) }
        })
        .await;
        assert!(logged, "{value:?}: {}", gw.all_output());
        let s = store(&db).await;
        let kinds = || async {
            let rows = s.audit_by_request(&id).await.unwrap_or_default();
            rows.iter()
                .map(|r| r.event.kind.as_str().to_string())
                .collect::<Vec<_>>()
        };
        // The outcome follows the answer within milliseconds.
        crate::kit::eventually(|| async { kinds().await.len() == 2 }).await;
        let kinds = kinds().await;
        assert_eq!(kinds, ["request", "outcome"], "{value:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent() {
    let Some(db) = database(Backend::Sqlite).await else {
        return;
    };
    for _ in 0..2 {
        let (ok, out, err) = crate::kit::admin(&db, &["migrate"]);
        assert!(ok, "{out} {err}");
    }
    let _ = Duration::from_secs(0);
}

both_backends!(
    commands_migrating_one_new_database_at_once_all_succeed,
    |db| async move {
        // Admin commands run side by side against a database nobody has migrated yet (a
        // provisioning script): on SQLite all but one failed with "table … already exists".
        let db: std::sync::Arc<Db> = std::sync::Arc::new(db);
        let runs: Vec<_> = [
            &["migrate"][..],
            &["migrate"][..],
            &["users", "add", "par@example.com", "--role", "viewer"][..],
            &["tokens", "create", "--name", "par", "--role", "viewer"][..],
        ]
        .into_iter()
        .map(|args| {
            let db = db.clone();
            std::thread::spawn(move || admin(&db, args))
        })
        .collect();
        for run in runs {
            let (ok, out, err) = run.join().unwrap_or_else(|_| panic!("thread"));
            assert!(ok, "{out} {err}");
        }
        let (ok, out, err) = admin(&db, &["audit", "verify"]);
        assert!(ok, "{out} {err}");
    }
);

// A misspelt DATABASE_URL left `serve` on a new SQLite file in its working directory without a
// word (found by a docs-against-behaviour pass): such names are now warned about, and the
// start-up line names the database in use.
both_backends!(
    a_misspelt_setting_is_named_and_the_database_shown,
    |db| async move {
        let rack = TestRack::start().await;
        let gw = Gateway::start(
            &db,
            &rack.url,
            &[
                ("DATABASE_URI", "postgres://gw:pw@db.internal/gw"),
                ("DATABSE_URL", "x"),
            ],
        )
        .await;
        // Up to the database's name: the tests' names (`rgw_…`) look like gateway tokens, which
        // the line masks.
        let url = db
            .url
            .rsplit_once('/')
            .map_or(db.url.as_str(), |(base, _)| base);
        let shown = crate::kit::eventually(|| async {
            let out = gw.all_output();
            out.contains("DATABASE_URI is not a setting (did you mean DATABASE_URL?)")
                && out.contains("DATABSE_URL is not a setting (did you mean DATABASE_URL?)")
                && out
                    .lines()
                    .any(|l| l.contains("rack-gateway listening") && l.contains(url))
        })
        .await;
        assert!(shown, "{}", gw.all_output());
        let out = gw.all_output();
        assert!(!out.contains(":pw@"), "a password in the log: {out}");
    }
);

// Found by review: sqlx ignores a URL parameter it does not know with a warning that prints
// its value, so libpq's `sslpassword=` (a client key's passphrase) reached the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_url_parameters_are_named_without_their_values() {
    let Some(db) = database(Backend::Postgres).await else {
        return;
    };
    let rack = TestRack::start().await;
    let with_params = Db::at(
        format!(
            "{}?sslpassword=hunter2-passphrase&connect_timeout=5",
            db.url
        ),
        Backend::Postgres,
        crate::kit::scratch_dir(),
    );
    let viewer = role_token(&db, "viewer");
    let gw = Gateway::start(&with_params, &rack.url, &[]).await;
    let resp = client()
        .get(gw.proxy("/apps"))
        .basic_auth("convox", Some(&viewer))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let named = crate::kit::eventually(|| async {
        gw.all_output()
            .contains("connection parameters the PostgreSQL driver does not know")
    })
    .await;
    let out = gw.all_output();
    assert!(
        named && out.contains("sslpassword, connect_timeout"),
        "{out}"
    );
    assert!(
        !out.contains("hunter2-passphrase"),
        "a passphrase in the log: {out}"
    );
}
