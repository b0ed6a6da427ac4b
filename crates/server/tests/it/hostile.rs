//! Hostile and malformed input: a clear 4xx, nothing reaches the rack, the gateway keeps serving.

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::kit::{Gateway, client, role_token};
use crate::upstream::TestRack;

/// Sends raw bytes and returns the status code of the answer (0 if none).
pub async fn raw(gw: &Gateway, request: &[u8]) -> (u16, String) {
    let addr = gw.url.trim_start_matches("http://");
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get(path: &str, token: &str) -> Vec<u8> {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("convox:{token}"));
    format!(
        "GET /api/v1/rack-proxy{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

both_backends!(
    ambiguous_paths_are_400_and_never_forwarded,
    |db| async move {
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        for path in [
            "/apps/../system",
            "/apps/%2e%2e/system",
            "/apps/./web",
            "/apps//web",
            "/apps%2fweb",
            "/apps/web%2F..%2Fsystem",
            "/apps/%5c..",
            "/apps/%252e%252e/system",
            "/apps/%00",
            "/apps/%0d%0aX-Injected:%201",
            "/apps/%ff%fe",
            // A right-to-left override: the audit trail would show another path.
            "/apps/web%E2%80%AE",
            "/apps/%E2%80%8Bweb",
        ] {
            let (status, text) = raw(&gw, &get(path, &admin)).await;
            assert_eq!(status, 400, "{path}: {text}");
            assert!(text.contains("ambiguous path"), "{path}: {text}");
        }
        assert!(
            rack.seen().is_empty(),
            "ambiguous paths reached the rack: {:?}",
            rack.seen()
        );
        let (status, _) = raw(&gw, &get("/apps", &admin)).await;
        assert_eq!(status, 200, "still serving");
    }
);

both_backends!(malformed_requests_get_4xx_never_500, |db| async move {
    let rack = TestRack::start().await;
    let admin = role_token(&db, "admin");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("convox:{admin}"));
    let huge = "a".repeat(200 * 1024);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("odd method", format!("FOO /api/v1/rack-proxy/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n").into_bytes()),
        ("TRACE", format!("TRACE /api/v1/rack-proxy/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n").into_bytes()),
        ("huge header", format!("GET /api/v1/rack-proxy/apps HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\nConnection: close\r\n\r\n").into_bytes()),
        ("raw invalid UTF-8 in path", [&b"GET /api/v1/rack-proxy/apps/\xff\xfe HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "[..], auth.as_bytes(), b"\r\nConnection: close\r\n\r\n"].concat()),
        ("invalid UTF-8 in Basic", [&b"GET /api/v1/rack-proxy/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "[..], base64::engine::general_purpose::STANDARD.encode(b"convox:\xff\xfe").as_bytes(), b"\r\nConnection: close\r\n\r\n"].concat()),
        ("binary Authorization", [&b"GET /api/v1/rack-proxy/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Basic \xff\xfe\r\nConnection: close\r\n\r\n"[..]].concat()),
        ("two Authorization headers", format!("GET /api/v1/rack-proxy/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nAuthorization: Bearer x\r\nConnection: close\r\n\r\n").into_bytes()),
        ("two Content-Length values", format!("POST /api/v1/rack-proxy/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello").into_bytes()),
        ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n".to_vec()),
        ("Transfer-Encoding not ending in chunked", format!("POST /api/v1/rack-proxy/apps/web/restart HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nTransfer-Encoding: chunked, identity\r\nConnection: close\r\n\r\n0\r\n\r\n").into_bytes()),
        ("Transfer-Encoding on HTTP/1.0", format!("POST /api/v1/rack-proxy/apps/web/restart HTTP/1.0\r\nHost: x\r\nAuthorization: Basic {auth}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes()),
        ("Content-Length not a number", format!("POST /api/v1/rack-proxy/apps/web/restart HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: 5x\r\nConnection: close\r\n\r\nhello").into_bytes()),
        ("signed Content-Length", format!("POST /api/v1/rack-proxy/apps/web/restart HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: +5\r\nConnection: close\r\n\r\nhello").into_bytes()),
        ("space before a header's colon", format!("POST /api/v1/rack-proxy/apps/web/restart HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length : 5\r\nConnection: close\r\n\r\nhello").into_bytes()),
        ("folded header line", format!("POST /api/v1/rack-proxy/apps/web/restart HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n").into_bytes()),
    ];
    for (name, request) in cases {
        let (status, text) = raw(&gw, &request).await;
        assert!(
            (400..500).contains(&status) || status == 0,
            "{name}: expected 4xx, got {status}: {}",
            text.chars().take(300).collect::<String>()
        );
    }
    assert!(
        rack.seen()
            .iter()
            .all(|s| s.method != "FOO" && s.method != "TRACE" && !s.path.ends_with("/restart")),
        "{:?}",
        rack.seen()
    );
    let (status, _) = raw(&gw, &get("/apps", &admin)).await;
    assert_eq!(status, 200, "gateway keeps serving");
    assert!(!gw.all_output().contains("panicked"), "{}", gw.all_output());
});

both_backends!(
    a_request_with_both_content_length_and_chunked_is_read_as_chunked_and_ends_the_connection,
    |db| async move {
        // The request-smuggling shape: a front proxy that trusts Content-Length would take the
        // second request below for part of the first one's body. The gateway reads the body as
        // chunked (RFC 9112: Transfer-Encoding wins), answers, and closes the connection, so
        // what follows the body is never read as a request of its own.
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("convox:{admin}"));
        let smuggled = format!(
            "GET /api/v1/rack-proxy/apps/smuggled HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\r\n"
        );
        let body = format!("0\r\n\r\n{smuggled}");
        let length = body.len();
        let head = "POST /api/v1/rack-proxy/apps/web/restart HTTP/1.1\r\nHost: x";
        for framing in [
            format!("Content-Length: {length}\r\nTransfer-Encoding: chunked"),
            format!("Transfer-Encoding: chunked\r\nContent-Length: {length}"),
        ] {
            rack.clear();
            let request =
                format!("{head}\r\nAuthorization: Basic {auth}\r\n{framing}\r\n\r\n{body}");
            let (status, text) = raw(&gw, request.as_bytes()).await;
            assert_eq!(status, 200, "{framing}: {text}");
            // One answer, then the gateway closed the connection (`raw` reads to its end).
            assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{framing}: {text}");
            let seen = rack.seen();
            assert_eq!(seen.len(), 1, "{framing}: {seen:?}");
            assert!(seen[0].path.ends_with("/apps/web/restart"), "{seen:?}");
            assert_eq!(seen[0].body_bytes, 0, "the chunked body is empty: {seen:?}");
        }
        let (status, _) = raw(&gw, &get("/apps", &admin)).await;
        assert_eq!(status, 200, "gateway keeps serving");
    }
);

both_backends!(
    audit_store_down_means_503_and_nothing_forwarded,
    |db| async move {
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let c = client();
        let resp = c
            .get(gw.proxy("/apps"))
            .basic_auth("convox", Some(&admin))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
        rack.clear();

        // Hold the audit chain's write lock from outside, so the gateway cannot write its event.
        let holder = crate::audit::hold_audit_lock(&db).await;
        let resp = c
            .post(gw.proxy("/apps/web/restart"))
            .basic_auth("convox", Some(&admin))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 503);
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_eq!(body["code"], "audit_unavailable");
        assert!(
            rack.seen().is_empty(),
            "a request reached the rack unaudited"
        );
        drop(holder);

        // And it recovers by itself.
        let ok = crate::kit::eventually(|| {
            let c = c.clone();
            let url = gw.proxy("/apps");
            let admin = admin.clone();
            async move {
                c.get(url)
                    .basic_auth("convox", Some(admin))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        })
        .await;
        assert!(
            ok,
            "gateway did not recover after the audit store came back"
        );
    }
);

// PostgreSQL restarted or failed over: every connection the gateway holds dies at once,
// the audit writer's kept one included. Nothing is forwarded unaudited meanwhile, and the
// gateway recovers by itself, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_killed_under_the_gateway_are_replaced() {
    use sqlx::{Connection, Executor};
    let Some(db) = crate::kit::database(crate::kit::Backend::Postgres).await else {
        return;
    };
    let rack = TestRack::start().await;
    let admin = role_token(&db, "admin");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let c = client();
    let restart = || {
        c.post(gw.proxy("/apps/web/restart"))
            .basic_auth("convox", Some(&admin))
            .send()
    };
    for _ in 0..3 {
        let resp = restart().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
    }
    let mut conn = sqlx::PgConnection::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(killed >= 1, "no gateway connection to kill");
    let _ = conn.execute("SELECT 1").await;

    // Every answer is a success or a clean 503, and the gateway is back within seconds.
    let mut answers = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = restart().await.map(|r| r.status().as_u16()).unwrap_or(0);
        answers.push(status);
        if status == 200 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answers.last(), Some(&200), "never recovered: {answers:?}");
    assert!(
        answers.iter().all(|s| *s == 200 || *s == 503),
        "{answers:?}"
    );
    // Each restart that reached the rack has its audit event.
    let s = crate::kit::store(&db).await;
    let events = s
        .audit_rows(0, 10_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|r| r.event.kind.as_str() == "request" && r.event.rbac_decision.as_str() == "allow")
        .filter(|r| r.event.path.as_deref() == Some("/apps/web/restart"))
        .count();
    let forwarded = rack
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/restart"))
        .count();
    assert_eq!(forwarded, 3 + 1, "{answers:?}");
    assert!(
        events >= forwarded,
        "{events} events for {forwarded} forwarded"
    );
}

both_backends!(
    oversized_and_malformed_bodies_on_inspected_routes_get_4xx,
    |db| async move {
        // The gateway's own JSON endpoints read their bodies (the proxy never does): a body
        // over the 1 MiB limit, a body that is not JSON, or JSON of the wrong shape is a 4xx,
        // and the gateway keeps serving.
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let c = client();
        let big = format!("{{\"email\":\"{}\"}}", "a".repeat(2 * 1024 * 1024));
        for (path, body, expected) in [
            ("/api/v1/users", big.clone(), 413),
            ("/api/v1/auth/cli/poll", big.clone(), 413),
            ("/api/v1/users", "{not json".to_string(), 400),
            ("/api/v1/users", "[1,2,3]".to_string(), 422),
            ("/api/v1/auth/cli/poll", "{\"login_id\":7}".to_string(), 422),
            // A field the endpoint does not take is not silently dropped: the user would be
            // created unlocked, or as the role given before a misspelt one.
            (
                "/api/v1/users",
                "{\"email\":\"u@example.com\",\"role\":\"viewer\",\"locked\":true}".to_string(),
                422,
            ),
        ] {
            let sent = client()
                .post(format!("{}{path}", gw.url))
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match sent {
                Ok(resp) => {
                    assert_eq!(resp.status().as_u16(), expected, "{path}");
                    // The gateway's own error shape, not axum's plain text.
                    let body: serde_json::Value = resp.json().await.unwrap_or_default();
                    let code = if expected == 413 {
                        "body_too_large"
                    } else {
                        "invalid_body"
                    };
                    assert_eq!(body["code"], code, "{path}: {body}");
                    assert!(
                        !body.to_string().contains("aaaa"),
                        "{path}: body quoted back"
                    );
                }
                // The 413 is sent as soon as Content-Length is read, and the connection closed
                // without reading the rest; a client still sending may see the reset first.
                Err(e) if expected == 413 => assert!(e.is_request(), "{path}: {e}"),
                Err(e) => panic!("{path}: {e}"),
            }
        }
        let resp = c
            .put(format!("{}/api/v1/users/u@example.com/role", gw.url))
            .bearer_auth(&admin)
            .json(&serde_json::json!({ "role": "viewer", "rol": "admin" }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 422, "an unknown field in a role change");
        let users = c
            .get(format!("{}/api/v1/users", gw.url))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default();
        assert!(!users.contains("u@example.com"), "created anyway: {users}");
        let resp = c
            .post(format!("{}/api/v1/users", gw.url))
            .bearer_auth(&admin)
            .body("{\"email\":\"x@example.com\"}")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 415, "JSON without a Content-Type");
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_eq!(body["code"], "unsupported_media_type", "{body}");

        // A bad value is quoted back cut short, not whole.
        let resp = c
            .post(format!("{}/api/v1/users", gw.url))
            .bearer_auth(&admin)
            .json(&serde_json::json!({ "email": "x".repeat(60_000), "role": "viewer" }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 400);
        let text = resp.text().await.unwrap_or_default();
        assert!(text.len() < 1024, "{} bytes of error", text.len());

        let resp = c
            .get(gw.proxy("/apps"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200, "gateway keeps serving");
        assert!(
            rack.seen().iter().all(|s| s.path == "/apps"),
            "{:?}",
            rack.seen()
        );
        assert!(!gw.all_output().contains("panicked"));
    }
);

both_backends!(
    huge_paths_are_clipped_in_the_audit_trail_not_in_the_request,
    |db| async move {
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        // ~60 KB of path and 3 KB of query, first without credentials: a denial is audited
        // too, so unclipped it would be a 64 KB row per unauthenticated request.
        let long = format!(
            "/apps/web/objects{}?q={}",
            "/a".repeat(30_000),
            "x".repeat(3000)
        );
        let resp = client()
            .get(gw.proxy(&long))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 401);
        let id = crate::kit::request_id(&resp);
        let s = crate::kit::store(&db).await;
        let clipped = |r: &gateway::store::AuditRow| {
            r.event
                .path
                .as_deref()
                .is_some_and(|p| p.len() < 2100 && p.ends_with("more bytes]"))
        };
        assert!(
            crate::kit::audited(&s, |r| r.event.request_id == id && clipped(r)).await,
            "the denial's path was not clipped"
        );
        // An allowed request reaches the rack whole; only its audit copy is clipped.
        let resp = client()
            .post(gw.proxy(&long))
            .basic_auth("convox", Some(&admin))
            .body("x")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
        let id = crate::kit::request_id(&resp);
        let seen = rack.seen();
        assert!(
            seen.iter().any(|r| r.path.len() > 60_000),
            "the rack got a shortened path"
        );
        assert!(
            crate::kit::audited(&s, |r| r.event.request_id == id && clipped(r)).await,
            "the allowed request's path was not clipped"
        );
    }
);

both_backends!(
    refusals_of_unauthenticated_floods_are_summarised,
    |db| async move {
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let mut gw = Gateway::start(&db, &rack.url, &[]).await;
        let c = client();
        for n in 0..100 {
            let resp = c
                .get(gw.proxy("/apps"))
                .basic_auth("convox", Some("rgw_not-a-real-token"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                resp.status(),
                401,
                "request {n}: the answer does not change"
            );
        }
        // A caller with a valid token is audited as always.
        let resp = c
            .get(gw.proxy("/apps"))
            .basic_auth("convox", Some(&viewer))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
        let allowed = crate::kit::request_id(&resp);
        // The summary is written when its minute is up, or at shutdown.
        let stopped = tokio::task::spawn_blocking(move || gw.terminate())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stopped.and_then(|s| s.code()), Some(0));
        let s = crate::kit::store(&db).await;
        let rows = s.audit_rows(0, 10_000).await.unwrap_or_default();
        let one_by_one = rows
            .iter()
            .filter(|r| r.event.details["reason"] == "token_unknown")
            .count();
        assert_eq!(
            one_by_one, 60,
            "the first 60 refusals a minute are audited one by one"
        );
        let summaries: Vec<_> = rows
            .iter()
            .filter(|r| r.event.action == "gateway:audit:suppressed")
            .map(|r| {
                (
                    r.event.client_ip.clone(),
                    r.event.details["suppressed_count"].clone(),
                )
            })
            .collect();
        assert_eq!(
            summaries,
            vec![(Some("127.0.0.1".to_string()), serde_json::json!(40))],
            "the other 40 as one summary"
        );
        assert!(rows.iter().any(|r| r.event.request_id == allowed));
    }
);

both_backends!(
    control_characters_in_names_and_keys_are_4xx,
    |db| async move {
        // PostgreSQL cannot store NUL in text: a name holding one used to reach the database
        // and come back as a 500, and so did an e-mail key holding one. Both backends answer
        // the same: a display name with control characters is refused, a key that no stored
        // user can have is not found.
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let c = client();
        for name in ["x\u{0}y", "bell\u{7}", "new\nline"] {
            let resp = c
                .post(format!("{}/api/v1/users", gw.url))
                .bearer_auth(&admin)
                .json(
                    &serde_json::json!({"email": "n@example.com", "name": name, "role": "viewer"}),
                )
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status(), 400, "name {name:?}");
        }
        // Each answers a key holding NUL as it answers a user that does not exist.
        let status = |method: &'static str, path: String| {
            let c = c.clone();
            let admin = admin.clone();
            let url = format!("{}{path}", gw.url);
            async move {
                let method = reqwest::Method::from_bytes(method.as_bytes())
                    .unwrap_or_else(|e| panic!("{e}"));
                let resp = c
                    .request(method, url)
                    .bearer_auth(&admin)
                    .json(&serde_json::json!({"role": "viewer"}))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let status = resp.status().as_u16();
                let said: serde_json::Value = resp.json().await.unwrap_or_default();
                (
                    status,
                    said["error"].as_str().unwrap_or_default().to_string(),
                )
            }
        };
        for (method, path) in [
            ("PUT", "/api/v1/users/{}/role"),
            ("POST", "/api/v1/users/{}/lock"),
            ("POST", "/api/v1/users/{}/unlock"),
            ("GET", "/api/v1/sessions?email={}"),
            ("POST", "/api/v1/sessions/revoke-all?email={}"),
        ] {
            let (nul, nul_said) = status(method, path.replace("{}", "a%00b@example.com")).await;
            let (nobody, said) = status(method, path.replace("{}", "nobody@example.com")).await;
            assert!((400..500).contains(&nul), "{method} {path}: {nul}");
            assert_eq!(nul, nobody, "{method} {path}");
            // The admin is told who: named, and a NUL shown as U+FFFD, not sent back raw.
            assert_eq!(said, "user nobody@example.com not found", "{method} {path}");
            assert!(!nul_said.contains('\0'), "{method} {path}: {nul_said:?}");
        }
        // A name without them is stored as given (trimmed).
        let resp = c
            .post(format!("{}/api/v1/users", gw.url))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"email": "n@example.com", "name": " Ada 日本 ", "role": "viewer"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 201);
        let user: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_eq!(user["name"], "Ada 日本", "{user}");
        assert!(!gw.all_output().contains("panicked"));
    }
);

both_backends!(
    malformed_urls_on_gateway_endpoints_get_the_json_error,
    |db| async move {
        // Path and query values of the wrong shape, and a method a route does not take: the
        // gateway's JSON error (the stock CLI and ours read `error`), never axum's plain text
        // echoing the input.
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let c = client();
        for (method, path, status, code) in [
            (
                reqwest::Method::DELETE,
                "/api/v1/sessions/abc",
                400,
                "bad_request",
            ),
            (
                reqwest::Method::DELETE,
                "/api/v1/sessions/1%00",
                400,
                "bad_request",
            ),
            (
                reqwest::Method::GET,
                "/api/v1/sessions?email=a@x.test&email=b@x.test",
                400,
                "bad_request",
            ),
            (
                reqwest::Method::GET,
                "/api/v1/auth/logout",
                405,
                "method_not_allowed",
            ),
            (
                reqwest::Method::PATCH,
                "/api/v1/users",
                405,
                "method_not_allowed",
            ),
        ] {
            let resp = c
                .request(method.clone(), format!("{}{path}", gw.url))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status().as_u16(), status, "{method} {path}");
            let text = resp.text().await.unwrap_or_default();
            assert!(!text.contains('\0'), "{method} {path}: {text:?}");
            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            assert_eq!(body["code"], code, "{method} {path}: {text}");
        }
        // Pages answer with a page, and never quote the input back.
        for (method, path) in [
            (reqwest::Method::GET, "/api/v1/auth/cli/browser"),
            (
                reqwest::Method::GET,
                "/api/v1/auth/cli/browser/confirm?login_id=x",
            ),
            (
                reqwest::Method::POST,
                "/account/sessions/%1b%5b31mabc/revoke",
            ),
            (reqwest::Method::POST, "/api/v1/auth/web/logout"),
        ] {
            let resp = c
                .request(method.clone(), format!("{}{path}", gw.url))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status().as_u16(), 400, "{method} {path}");
            let html = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/html"));
            let text = resp.text().await.unwrap_or_default();
            assert!(html, "{method} {path}: {text}");
            assert!(!text.contains('\u{1b}'), "{method} {path}: {text:?}");
        }
    }
);

both_backends!(
    bodies_the_gateway_reads_itself_must_arrive_in_time,
    |db| async move {
        // A client that declares a body and goes quiet held its connection (and up to the
        // body limit of memory) for ever on the gateway's own endpoints; enough of them and
        // the gateway ran out of file descriptors. Now: 408 within CLIENT_TIMEOUT_SECS.
        let rack = TestRack::start().await;
        let gw = Gateway::start(&db, &rack.url, &[("CLIENT_TIMEOUT_SECS", "2")]).await;
        let json = "POST /api/v1/auth/cli/start HTTP/1.1\r\nHost: x\r\n\
                    Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{";
        let chunked = "POST /api/v1/auth/cli/poll HTTP/1.1\r\nHost: x\r\n\
                       Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
                       1\r\n{\r\n";
        let form = "POST /api/v1/auth/web/logout HTTP/1.1\r\nHost: x\r\n\
                    Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\n\
                    csrf=";
        let started = std::time::Instant::now();
        let (a, b, c) = tokio::join!(
            raw(&gw, json.as_bytes()),
            raw(&gw, chunked.as_bytes()),
            raw(&gw, form.as_bytes())
        );
        let elapsed = started.elapsed();
        for (status, text) in [&a, &b] {
            assert_eq!(*status, 408, "{text}");
            assert!(text.contains("\"client_timeout\""), "{text}");
        }
        assert_eq!(c.0, 408, "{}", c.1);
        assert!(c.1.contains("did not arrive in time"), "{}", c.1);
        assert!(
            elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(10),
            "{elapsed:?}"
        );

        // Bodies are a few fields: 64 KiB is the most a gateway endpoint reads.
        let big = "POST /api/v1/auth/cli/start HTTP/1.1\r\nHost: x\r\n\
                   Content-Type: application/json\r\nContent-Length: 65537\r\n\r\n{";
        let (status, text) = raw(&gw, big.as_bytes()).await;
        assert_eq!(status, 413, "{text}");
        let big_form = "POST /api/v1/auth/web/logout HTTP/1.1\r\nHost: x\r\n\
                        Content-Type: application/x-www-form-urlencoded\r\n\
                        Content-Length: 65537\r\n\r\ncsrf=";
        let (status, text) = raw(&gw, big_form.as_bytes()).await;
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("Form too large"), "{text}");
        let resp = client()
            .get(format!("{}/api/v1/health", gw.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
    }
);

both_backends!(
    connections_beyond_max_connections_wait_their_turn,
    |db| async move {
        // Idle or slow connections used to be accepted without bound until the process ran
        // out of file descriptors, and then nobody was served. Past MAX_CONNECTIONS a client
        // waits to be accepted until one closes (here: the idle ones, at the header timeout).
        let rack = TestRack::start().await;
        let gw = Gateway::start(
            &db,
            &rack.url,
            &[("MAX_CONNECTIONS", "2"), ("CLIENT_TIMEOUT_SECS", "2")],
        )
        .await;
        let addr = gw.url.trim_start_matches("http://").to_string();
        let mut idle = Vec::new();
        for _ in 0..2 {
            idle.push(
                tokio::net::TcpStream::connect(&addr)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        // Let the gateway accept both before the third arrives.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let resp = client()
            .get(format!("{}/api/v1/health", gw.url))
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let waited = started.elapsed();
        assert_eq!(resp.status(), 200);
        assert!(
            waited >= Duration::from_millis(1000),
            "served at once, past the limit: {waited:?}"
        );
        drop(idle);
        let resp = client()
            .get(format!("{}/api/v1/health", gw.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);

        // Those waiting are queued by the kernel, not turned away: with the standard queue of
        // 128, the 130th connection's handshake went unanswered and its client retried
        // seconds later, long after a place was free.
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(
                tokio::net::TcpStream::connect(&addr)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waiting = futures_util::future::join_all((0..400).map(|_| {
            let addr = addr.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_millis(900),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
            }
        }))
        .await;
        let queued = waiting.iter().filter(|c| matches!(c, Ok(Ok(_)))).count();
        assert_eq!(queued, 400, "clients turned away from the listen queue");
        drop((held, waiting));
    }
);

both_backends!(
    a_request_body_that_is_not_valid_http_is_named_as_such,
    |db| async move {
        // A chunk size that overflows, after the head was forwarded: the answer said "client
        // disconnected", which it had not; now it names what was wrong with the body.
        let rack = TestRack::start().await;
        let deployer = role_token(&db, "deployer");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("convox:{deployer}"));
        let request = format!(
            "POST /api/v1/rack-proxy/apps/web/services/web/restart HTTP/1.1\r\nHost: x\r\n\
             Authorization: Basic {auth}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             FFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"
        );
        let (status, text) = raw(&gw, request.as_bytes()).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("not valid HTTP"), "{text}");
        assert!(text.contains("invalid chunk size"), "{text}");
        let s = crate::kit::store(&db).await;
        let recorded = crate::kit::audited(&s, |r| {
            r.event.kind.as_str() == "outcome"
                && r.event.status == Some(400)
                && r.event.details["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("invalid chunk size"))
        })
        .await;
        assert!(recorded, "the outcome does not name the cause");
    }
);

both_backends!(
    request_targets_in_other_forms_reach_only_the_rack,
    |db| async move {
        // HTTP/1.1 lets a request name a host in its target (absolute form, for proxies),
        // CONNECT asks for a tunnel, and `OPTIONS *` names no path. None of them may make the
        // gateway talk to another host, tunnel to the rack, or reach it outside the proxy path.
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("convox:{admin}"));
        let rack_authority = rack.url.split("://").nth(1).unwrap_or_default().to_string();

        // Absolute form naming another host: the path is what counts; it goes to the rack, as
        // the rack's own host, and the trail shows the path alone.
        let request = format!(
            "GET http://evil.example:8080/api/v1/rack-proxy/apps HTTP/1.1\r\nHost: \
             evil.example:8080\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
        );
        let (status, text) = raw(&gw, request.as_bytes()).await;
        assert_eq!(status, 200, "{text}");
        let seen = rack.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].path, "/apps");
        let host = seen[0].header("host").unwrap_or_default();
        assert!(
            !host.contains("evil"),
            "the client's host reached the rack: {host}"
        );
        rack.clear();

        for (name, request) in [
            (
                "absolute form to the rack itself, outside the proxy path",
                format!(
                    "GET https://{rack_authority}/apps HTTP/1.1\r\nHost: {rack_authority}\r\n\
                     Authorization: Basic {auth}\r\nConnection: close\r\n\r\n"
                ),
            ),
            (
                "CONNECT to the rack",
                format!(
                    "CONNECT {rack_authority} HTTP/1.1\r\nHost: {rack_authority}\r\n\
                     Authorization: Basic {auth}\r\nConnection: close\r\n\r\n"
                ),
            ),
            (
                "CONNECT through the proxy path",
                format!(
                    "CONNECT /api/v1/rack-proxy/apps HTTP/1.1\r\nHost: x\r\n\
                     Authorization: Basic {auth}\r\nConnection: close\r\n\r\n"
                ),
            ),
            (
                "OPTIONS *",
                format!(
                    "OPTIONS * HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
                     Connection: close\r\n\r\n"
                ),
            ),
        ] {
            let (status, text) = raw(&gw, request.as_bytes()).await;
            assert!(
                (400..500).contains(&status) || status == 0,
                "{name}: expected 4xx, got {status}: {}",
                text.chars().take(300).collect::<String>()
            );
        }
        assert!(
            rack.seen().is_empty(),
            "reached the rack: {:?}",
            rack.seen()
        );
        let (status, _) = raw(&gw, &get("/apps", &admin)).await;
        assert_eq!(status, 200, "still serving");
        // The trail shows the rack path of the absolute-form request, not the URL.
        let s = crate::kit::store(&db).await;
        let evil = |r: &gateway::store::AuditRow| {
            r.event.path.as_deref().is_some_and(|p| p.contains("evil"))
        };
        let listed = |r: &gateway::store::AuditRow| {
            r.event.action == "convox:apps:list" && r.event.path.as_deref() == Some("/apps")
        };
        assert!(
            crate::kit::audited(&s, listed).await,
            "the request was not audited"
        );
        let rows = s.audit_rows(0, 10_000).await.unwrap_or_default();
        assert!(!rows.iter().any(evil), "the trail names the client's host");
    }
);
