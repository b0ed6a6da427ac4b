//! The audit trail: events for every call, linked outcomes, redaction, the chain, and the
//! database refusing changes.

use std::time::Duration;

use sqlx::{Connection, Executor};

use crate::both_backends;
use crate::kit::{Backend, Db, Gateway, admin, client, role_token, store};
use crate::upstream::TestRack;

/// Holds the audit chain's write lock from a separate connection until dropped.
#[allow(dead_code)] // the connections are held for their locks, never read
pub enum LockHolder {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

pub async fn hold_audit_lock(db: &Db) -> LockHolder {
    match db.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            conn.execute("BEGIN IMMEDIATE")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            LockHolder::Sqlite(conn)
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            conn.execute("BEGIN")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            conn.execute("LOCK TABLE audit_chain_head IN ACCESS EXCLUSIVE MODE")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            LockHolder::Postgres(conn)
        }
    }
}

// A client that gives up while its request waits for the audit commit: the request event is
// committed all the same (it was queued), so its outcome must be too, saying the request went
// nowhere — not the gap a crash leaves.
both_backends!(
    a_client_that_leaves_before_forwarding_gets_an_outcome,
    |db| async move {
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        // Connections opened and the credential read once, so that the request below waits
        // at its commit, not before.
        let warm = client()
            .get(gw.proxy("/apps"))
            .basic_auth("convox", Some(&viewer))
            .send()
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(warm.ok(), Some(200));
        let holder = hold_audit_lock(&db).await;
        let gave_up = client()
            .get(gw.proxy("/apps/left-early"))
            .basic_auth("convox", Some(&viewer))
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(
            gave_up.is_err(),
            "answered while the audit store was locked"
        );
        // The gateway notices the closed connection while it waits.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(holder);
        let events = || {
            gw.audit_lines()
                .into_iter()
                .filter(|l| l["path"] == "/apps/left-early")
                .collect::<Vec<_>>()
        };
        let both = crate::kit::eventually(|| {
            let n = events().len();
            async move { n == 2 }
        })
        .await;
        assert!(both, "{:?}\n{}", events(), gw.all_output());
        let lines = events();
        assert_eq!(lines[0]["kind"], "request");
        assert_eq!(lines[1]["kind"], "outcome");
        assert_eq!(lines[1]["request_id"], lines[0]["request_id"]);
        assert_eq!(
            lines[1]["details"]["error"],
            "client disconnected before the request was forwarded"
        );
        assert!(
            rack.seen().iter().all(|s| !s.path.contains("left-early")),
            "the request reached the rack"
        );
    }
);

// Every request waits for its batch's commit, so a store that is slow for a moment shows as
// latency the rack did not cause: the gateway says so on stderr.
both_backends!(a_slow_audit_commit_is_reported, |db| async move {
    let rack = TestRack::start().await;
    let admin = role_token(&db, "admin");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let c = client();
    let get = || {
        let request = c.get(gw.proxy("/apps")).basic_auth("convox", Some(&admin));
        async move { request.send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(get().await.ok(), Some(200));
    assert!(!gw.all_output().contains("audit commit was slow"));

    let holder = hold_audit_lock(&db).await;
    let waiting = tokio::spawn(get());
    tokio::time::sleep(Duration::from_millis(400)).await;
    drop(holder);
    let status = waiting.await.ok().and_then(Result::ok);
    assert_eq!(
        status,
        Some(200),
        "the request went through once the lock was gone"
    );
    let reported = crate::kit::eventually(|| {
        let output = gw.all_output();
        async move { output.contains("audit commit was slow") }
    })
    .await;
    assert!(reported, "{}", gw.all_output());
});

both_backends!(
    every_response_carries_the_request_id_of_its_audit_events,
    |db| async move {
        let rack = TestRack::start().await;
        let admin = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let c = client();
        let s = store(&db).await;
        // The id is the gateway's own: one a client sends is ignored.
        let forged = "forged-request-id";
        let id_of = |resp: &reqwest::Response| {
            let id = crate::kit::request_id(resp);
            assert!(!id.is_empty() && id != forged, "{}: {id:?}", resp.url());
            id
        };
        let audited_as = |id: String| {
            let s = s.clone();
            async move {
                let rows = crate::kit::eventually(|| {
                    let (s, id) = (s.clone(), id.clone());
                    async move { s.audit_by_request(&id).await.is_ok_and(|r| !r.is_empty()) }
                })
                .await;
                assert!(rows, "no audit event with request id {id}");
                s.audit_by_request(&id).await.unwrap_or_default()
            }
        };

        let health = c
            .get(format!("{}/api/v1/health", gw.url))
            .header("x-request-id", forged)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(health.status(), 200);
        let health_id = id_of(&health);
        let missing = c
            .get(format!("{}/no/such/page", gw.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(missing.status(), 404);
        assert_ne!(id_of(&missing), health_id, "each request has its own id");

        // A refused API call: the refusal's event has the id the caller was given.
        let refused = c
            .get(format!("{}/api/v1/info", gw.url))
            .header("x-request-id", forged)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(refused.status(), 401);
        let rows = audited_as(id_of(&refused)).await;
        assert_eq!(rows[0].event.rbac_decision.as_str(), "deny");

        // A change made through the API.
        let added = c
            .post(format!("{}/api/v1/users", gw.url))
            .bearer_auth(&admin)
            .header("x-request-id", forged)
            .json(&serde_json::json!({ "email": "new@example.com", "role": "viewer" }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(added.status().is_success(), "{}", added.status());
        let rows = audited_as(id_of(&added)).await;
        assert_eq!(rows[0].event.action, "gateway:users:create");
        // The same user again: a conflict, as the trail records it.
        let again = c
            .post(format!("{}/api/v1/users", gw.url))
            .bearer_auth(&admin)
            .json(&serde_json::json!({ "email": "new@example.com", "role": "viewer" }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.status(), 409);
        let id = id_of(&again);
        let body: serde_json::Value = again.json().await.unwrap_or_default();
        assert_eq!(body["code"], "conflict");
        let recorded = crate::kit::audited(&s, |r| {
            r.event.request_id == id && r.event.details["reason"] == "conflict"
        })
        .await;
        assert!(recorded, "the refused change's outcome says conflict");

        // A proxied call: its request and outcome events, and the rack never sees the forged id.
        let proxied = c
            .get(gw.proxy("/apps"))
            .bearer_auth(&admin)
            .header("x-request-id", forged)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(proxied.status(), 200);
        let id = id_of(&proxied);
        let _ = proxied.bytes().await;
        let rows = audited_as(id).await;
        assert_eq!(rows[0].event.kind.as_str(), "request");
        assert!(
            rack.seen()
                .iter()
                .all(|r| r.headers.iter().all(|(_, v)| v != forged)),
            "{:?}",
            rack.seen()
        );
    }
);

both_backends!(
    every_call_is_audited_with_a_linked_outcome,
    |db| async move {
        let rack = TestRack::start().await;
        let ops = role_token(&db, "ops");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let c = client();
        let resp = c
            .get(gw.proxy(
                "/apps/web/processes?password=hunter2&follow=true&url=postgres%3A%2F%2Fu%3Apw%40db",
            ))
            .basic_auth("convox", Some(&ops))
            .header("user-agent", "convox/3.0 test")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
        let request_id = crate::kit::request_id(&resp);
        let _ = resp.bytes().await;
        // A user agent that is not UTF-8 is recorded with replacement characters, not dropped.
        let hostile_ua = reqwest::header::HeaderValue::from_bytes(b"evil\xff/1 caf\xc3\xa9")
            .unwrap_or_else(|e| panic!("{e}"));
        let denied = c
            .delete(gw.proxy("/apps/web"))
            .basic_auth("convox", Some(&ops))
            .header("user-agent", hostile_ua)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(denied.status(), 403);
        let denied_id = crate::kit::request_id(&denied);

        let s = store(&db).await;
        let found = crate::kit::eventually(|| {
            let s = s.clone();
            let id = request_id.clone();
            async move {
                s.audit_by_request(&id)
                    .await
                    .map(|r| r.len() == 2)
                    .unwrap_or(false)
            }
        })
        .await;
        assert!(found, "request and outcome events");
        let rows = s.audit_by_request(&request_id).await.unwrap_or_default();
        let (req, out) = (&rows[0].event, &rows[1].event);
        assert_eq!(req.kind.as_str(), "request");
        assert_eq!(out.kind.as_str(), "outcome");
        assert!(rows[0].seq < rows[1].seq);
        assert_eq!(req.action, "convox:processes:list");
        assert_eq!(req.rbac_decision.as_str(), "allow");
        assert_eq!(req.token_name.as_deref(), Some("ops-token"));
        assert_eq!(req.method.as_deref(), Some("GET"));
        assert_eq!(req.client_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(req.user_agent.as_deref(), Some("convox/3.0 test"));
        let path = req.path.clone().unwrap_or_default();
        assert!(path.starts_with("/apps/web/processes?"), "{path}");
        assert!(path.contains("follow=true"));
        assert!(
            !path.contains("hunter2") && !path.contains("pw@"),
            "query not redacted: {path}"
        );
        let denial = s.audit_by_request(&denied_id).await.unwrap_or_default();
        assert_eq!(
            denial.first().and_then(|r| r.event.user_agent.as_deref()),
            Some("evil\u{fffd}/1 café")
        );
        assert_eq!(out.status, Some(200));
        assert!(out.latency_ms.is_some());
        assert_eq!(out.details["completed"], true);

        let all = s.audit_rows(0, 10_000).await.unwrap_or_default();
        let deny = all
            .iter()
            .find(|r| r.event.action == "convox:apps:delete")
            .unwrap_or_else(|| panic!("denial not audited"));
        assert_eq!(deny.event.rbac_decision.as_str(), "deny");
        assert_eq!(deny.event.status, Some(403));
        // Chain continuity.
        for pair in all.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1);
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        let (ok, out, err) = admin(&db, &["audit", "verify"]);
        assert!(ok, "verify failed: {out} {err}");
        assert!(out.contains("audit chain OK"), "{out}");

        // The JSON lines on stdout carry the agreed fields.
        let lines = gw.audit_lines();
        let line = lines
            .iter()
            .find(|l| l["request_id"] == request_id.as_str() && l["kind"] == "outcome")
            .unwrap_or_else(|| panic!("no stdout line for {request_id}: {lines:?}"));
        for field in [
            "ts",
            "user_email",
            "token_name",
            "method",
            "path",
            "action",
            "status",
            "latency_ms",
            "rbac_decision",
            "request_id",
            "client_ip",
        ] {
            assert!(
                line.get(field).is_some(),
                "stdout line lacks {field}: {line}"
            );
        }
        assert!(
            !serde_json::to_string(&lines)
                .unwrap_or_default()
                .contains("hunter2")
        );
    }
);

both_backends!(the_database_refuses_to_change_audit_rows, |db| async move {
    let rack = TestRack::start().await;
    let viewer = role_token(&db, "viewer");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let _ = client()
        .get(gw.proxy("/apps"))
        .basic_auth("convox", Some(&viewer))
        .send()
        .await;
    drop(gw);
    let s = store(&db).await;
    for sql in [
        "UPDATE audit_events SET path = '/forged'",
        "DELETE FROM audit_events",
        "DELETE FROM audit_chain_head",
        "UPDATE audit_chain_head SET seq = 0",
    ] {
        let result = s.execute_raw(sql).await;
        assert!(result.is_err(), "{sql} was allowed");
    }
    if db.backend == Backend::Postgres {
        assert!(
            s.execute_raw("TRUNCATE audit_events").await.is_err(),
            "TRUNCATE allowed"
        );
    }
    // Replacing a row in one statement (SQLite's REPLACE deletes without firing DELETE
    // triggers; PostgreSQL's upsert fires UPDATE ones).
    let copy = "SELECT seq, ts, request_id, kind, actor_type, user_email, token_name, method, \
                '/forged', action, rbac_decision, status, latency_ms, client_ip, user_agent, \
                details, prev_hash, hash FROM audit_events WHERE seq = 1";
    let columns = "(seq, ts, request_id, kind, actor_type, user_email, token_name, method, \
                   path, action, rbac_decision, status, latency_ms, client_ip, user_agent, \
                   details, prev_hash, hash)";
    let replaces = match db.backend {
        Backend::Sqlite => {
            vec![
                "INSERT OR REPLACE INTO audit_chain_head (id, seq, hash) VALUES (1, 0, 'x')".into(),
            ]
        }
        Backend::Postgres => vec![
            format!(
                "INSERT INTO audit_events {columns} {copy} ON CONFLICT (seq) DO UPDATE \
                 SET path = EXCLUDED.path"
            ),
            "INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, 0, 'x') \
             ON CONFLICT (id) DO UPDATE SET seq = 0"
                .into(),
        ],
    };
    for sql in replaces {
        assert!(s.execute_raw(&sql).await.is_err(), "{sql} was allowed");
    }
    let (ok, out, err) = admin(&db, &["audit", "verify"]);
    assert!(ok, "{out} {err}");

    // Someone with enough power to disable the triggers still cannot forge unnoticed.
    let disable = match db.backend {
        Backend::Sqlite => "DROP TRIGGER audit_events_no_update",
        Backend::Postgres => "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update",
    };
    s.execute_raw(disable)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Details edited into text that parses to the same JSON (a SQL query reading a duplicate
    // key would see another value): the chain covers the exact text.
    s.execute_raw("UPDATE audit_events SET details = ' ' || details WHERE seq = 2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = admin(&db, &["audit", "verify"]);
    assert!(!ok, "verify accepted re-spaced details: {out}");
    assert!(err.contains("broken at event 2"), "{err}");
    s.execute_raw("UPDATE audit_events SET details = substr(details, 2) WHERE seq = 2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = admin(&db, &["audit", "verify"]);
    assert!(ok, "the restored row does not verify: {out} {err}");
    s.execute_raw("UPDATE audit_events SET path = '/forged' WHERE seq = 2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = admin(&db, &["audit", "verify"]);
    assert!(!ok, "verify accepted a forged row: {out}");
    assert!(err.contains("broken at event 2"), "{err}");
    if db.backend == Backend::Sqlite {
        // Not refused (a trigger on every insert cost 6 % of a request's CPU), but the chain
        // shows it.
        s.execute_raw(&format!(
            "INSERT OR REPLACE INTO audit_events {columns} {copy}"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let (ok, out, err) = admin(&db, &["audit", "verify"]);
        assert!(!ok, "verify accepted a replaced event: {out}");
        assert!(err.contains("broken at event 1"), "{err}");
    }
    let _ = Duration::from_secs(0);
});

both_backends!(a_different_audit_key_is_refused, |db| async move {
    let _viewer = role_token(&db, "viewer");
    // A command that writes to the chain (listing reads no key).
    let out = std::process::Command::new(crate::kit::BIN)
        .args([
            "tokens",
            "create",
            "--name",
            "other-key",
            "--role",
            "viewer",
        ])
        .env("DATABASE_URL", &db.url)
        .env("AUDIT_HMAC_KEY", "another-key-another-key-another-key-1234")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AUDIT_HMAC_KEY does not match"), "{err}");
    assert!(!err.contains("another-key"), "key echoed: {err}");
});

both_backends!(
    two_gateways_and_an_admin_command_extend_one_chain,
    |db| async move {
        // Each writer keeps its own idea of the chain head; when another process has moved
        // it, the append must notice and re-link, never fork the chain or lose an event.
        let rack = TestRack::start().await;
        let admin_token = role_token(&db, "admin");
        let a = Gateway::start(&db, &rack.url, &[]).await;
        let b = Gateway::start(&db, &rack.url, &[]).await;
        let c = client();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let url = if i % 2 == 0 {
                a.proxy("/apps/web/restart")
            } else {
                b.proxy("/apps/web/restart")
            };
            let (c, token) = (c.clone(), admin_token.clone());
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..15 {
                    let resp = c
                        .post(&url)
                        .basic_auth("convox", Some(&token))
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(resp.status(), 200);
                    if let Some(id) = resp
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                    {
                        ids.push(id.to_string());
                    }
                }
                ids
            }));
        }
        // A third writer in another process while the gateways are busy.
        let (ok, out, err) = admin(
            &db,
            &["tokens", "create", "--name", "mid-run", "--role", "viewer"],
        );
        assert!(ok, "{out} {err}");
        let mut ids = Vec::new();
        for t in tasks {
            ids.extend(t.await.unwrap_or_else(|e| panic!("{e}")));
        }
        assert_eq!(ids.len(), 120);
        // A clean stop writes every queued outcome.
        let (mut a, mut b) = (a, b);
        assert!(a.terminate().is_some_and(|s| s.success()));
        assert!(b.terminate().is_some_and(|s| s.success()));

        let s = store(&db).await;
        let all = s.audit_rows(0, 100_000).await.unwrap_or_default();
        for pair in all.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1);
            assert_eq!(
                pair[1].prev_hash, pair[0].hash,
                "chain forked at {}",
                pair[1].seq
            );
        }
        for id in &ids {
            assert!(
                all.iter()
                    .any(|r| &r.event.request_id == id && r.event.kind.as_str() == "request"),
                "request {id} has no event"
            );
        }
        assert!(
            all.iter().any(|r| r.event.action == "gateway:tokens:create"
                && r.event.details.to_string().contains("mid-run")),
            "the admin command's event is on the chain"
        );
        let outcomes: Vec<_> = all
            .iter()
            .filter(|r| r.event.kind.as_str() == "outcome")
            .collect();
        let proxied = outcomes
            .iter()
            .filter(|r| ids.contains(&r.event.request_id))
            .count();
        assert_eq!(proxied, 120, "every request's outcome");
        // And the two token creations' (the admin token's, and mid-run's).
        assert_eq!(outcomes.len(), 122);
        let (ok, out, err) = admin(&db, &["audit", "verify"]);
        assert!(ok, "verify failed: {out} {err}");
    }
);

both_backends!(
    an_outcome_is_written_with_no_traffic_after_it,
    |db| async move {
        // The rack answers after 3 s: by then the writer has long gone idle, and the outcome,
        // which does not wake a busy writer, must wake an idle one.
        let rack = TestRack::start().await;
        rack.set_slow(true);
        let ops = role_token(&db, "ops");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let resp = client()
            .get(gw.proxy("/apps"))
            .basic_auth("convox", Some(&ops))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200);
        let request_id = crate::kit::request_id(&resp);
        let _ = resp.bytes().await;
        let s = store(&db).await;
        let written = crate::kit::audited(&s, |r| {
            r.event.request_id == request_id && r.event.kind.as_str() == "outcome"
        })
        .await;
        assert!(written, "the outcome of the last request was never written");
    }
);

/// An event whose text fields hold what JSON and SQL quoting must survive.
pub(crate) fn awkward_event(n: usize) -> gateway::audit::AuditEvent {
    use gateway::audit::{ActorType, AuditEvent, Decision, EventKind};
    let awkward = format!(
        "{n} \"quoted\" 'single' \\back\\slash\\ \t\r\n \u{1}\u{1f} é 日本 🦀 $1 ?1 ); DROP TABLE x; --"
    );
    AuditEvent {
        ts: 1_700_000_000_000 + n as i64,
        request_id: format!("req-{n}-{awkward}"),
        kind: EventKind::Gateway,
        actor_type: ActorType::User,
        user_email: Some(format!("{awkward}@example.com")),
        token_name: n.is_multiple_of(2).then(|| awkward.clone()),
        method: Some("POST".into()),
        path: Some(format!("/apps/{n}?q={awkward}")),
        action: format!("gateway:test:{awkward}"),
        rbac_decision: Decision::Allow,
        status: (!n.is_multiple_of(2)).then_some(i64::MAX),
        latency_ms: Some(i64::MIN),
        client_ip: None,
        user_agent: Some(awkward.clone()),
        details: serde_json::json!({"text": awkward, "null": null, "n": n, "list": [1, "two"]}),
    }
}

// Every way the store appends a batch — SQLite's writer, PostgreSQL's one-statement append and
// its locked fallback — stores each field exactly and links it into a chain that verifies.
both_backends!(
    awkward_text_round_trips_through_every_append_path,
    |db| async move {
        use gateway::store::Generation;
        use std::sync::Arc;
        let s = store(&db).await;
        s.migrate().await.unwrap_or_else(|e| panic!("migrate: {e}"));
        let key =
            gateway::audit::ChainKey::new(gateway::config::Secret::new(crate::kit::AUDIT_KEY));
        let link = |key: gateway::audit::ChainKey| {
            move |prev: &str, seq: i64, e: &gateway::audit::AuditEvent, details: &str| {
                key.link_with(prev, seq, e, details)
            }
        };
        let before = s.chain_head().await.unwrap_or_else(|e| panic!("{e}")).seq;

        // One statement (PostgreSQL's optimistic path; SQLite's writer).
        let first: Vec<_> = (0..5).map(awkward_event).collect();
        let links = s
            .append_audit(first.clone().into(), link(key.clone()))
            .await
            .unwrap_or_else(|e| panic!("append: {e}"));
        assert_eq!(links.len(), 5);

        // Two different generations in one batch take the locked path on PostgreSQL; the one
        // read at an older generation is left out.
        let now = Generation(crate::credentials::generation(&db).await);
        let older = Generation(now.0 - 1);
        let second: Vec<_> = (5..8).map(awkward_event).collect();
        let appended = s
            .append_audit_checked(
                second.clone().into(),
                Arc::new([Some(now), Some(older), None]),
                link(key.clone()),
            )
            .await
            .unwrap_or_else(|e| panic!("checked append: {e}"));
        let kept: Vec<bool> = appended.links.iter().map(Option::is_some).collect();
        assert_eq!(kept, [true, false, true]);

        let rows = s
            .audit_rows(before, 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let expected: Vec<_> = first
            .into_iter()
            .chain([second[0].clone(), second[2].clone()])
            .collect();
        assert_eq!(rows.len(), expected.len());
        for (row, event) in rows.iter().zip(&expected) {
            assert_eq!(&row.event, event, "stored differently at seq {}", row.seq);
        }
        let report = gateway::audit::verify_chain(&s, &key)
            .await
            .unwrap_or_else(|e| panic!("verify: {e}"));
        assert_eq!(report.events, before + 7, "{report:?}");
    }
);

both_backends!(verify_holds_while_the_gateway_appends, |db| async move {
    // Operators run `audit verify` against a live gateway: events appended while it walks the
    // chain must not make a sound chain look broken (it read the head last, so the head had
    // moved past the rows it had walked).
    let s = store(&db).await;
    s.migrate().await.unwrap_or_else(|e| panic!("migrate: {e}"));
    let key = gateway::audit::ChainKey::new(gateway::config::Secret::new(crate::kit::AUDIT_KEY));
    let link = |key: gateway::audit::ChainKey| {
        move |prev: &str, seq: i64, e: &gateway::audit::AuditEvent, details: &str| {
            key.link_with(prev, seq, e, details)
        }
    };
    let first: Vec<_> = (0..300).map(awkward_event).collect();
    s.append_audit(first.into(), link(key.clone()))
        .await
        .unwrap_or_else(|e| panic!("append: {e}"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let (s, key, stop) = (s.clone(), key.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<_> = (0..5).map(awkward_event).collect();
                s.append_audit(batch.into(), link(key.clone()))
                    .await
                    .unwrap_or_else(|e| panic!("append: {e}"));
                n += 5;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            n
        })
    };
    for round in 0..20 {
        let report = gateway::audit::verify_chain(&s, &key).await;
        assert!(report.is_ok(), "round {round}: {report:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let appended = appender.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(appended > 0, "nothing was appended during the checks");
    let report = gateway::audit::verify_chain(&s, &key)
        .await
        .unwrap_or_else(|e| panic!("verify: {e}"));
    assert_eq!(report.events, 300 + appended);
    // An event inserted by hand far past the head (inserts are allowed): never walked, but
    // found.
    s.execute_raw(
        "INSERT INTO audit_events (seq, ts, request_id, kind, actor_type, action, \
         rbac_decision, details, prev_hash, hash) SELECT seq + 1000000, ts, request_id, kind, \
         actor_type, action, rbac_decision, details, prev_hash, hash FROM audit_events \
         WHERE seq = 1",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let report = gateway::audit::verify_chain(&s, &key).await;
    assert!(
        matches!(&report, Err(gateway::audit::VerifyError::Broken { reason, .. }) if reason.contains("outside the chain")),
        "{report:?}"
    );
});

/// `audit verify` with `key` as AUDIT_HMAC_KEY (none: unset).
fn verify_with_key(db: &Db, key: Option<&str>) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(crate::kit::BIN);
    cmd.args(["audit", "verify"])
        .env("DATABASE_URL", &db.url)
        .env_remove("AUDIT_HMAC_KEY")
        .env_remove("RUST_LOG");
    if let Some(key) = key {
        cmd.env("AUDIT_HMAC_KEY", key);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

both_backends!(verify_reads_and_changes_nothing, |db| async move {
    // The database under examination is evidence: verifying it creates, migrates and stores
    // nothing, and a database that is not a gateway's is an error, not "0 events, OK".
    let (ok, out, err) = verify_with_key(&db, Some(crate::kit::AUDIT_KEY));
    assert!(!ok, "verified a database that holds no gateway data: {out}");
    match db.backend {
        Backend::Sqlite => {
            assert!(err.contains("cannot open the database"), "{err}");
            let file = db.url.trim_start_matches("sqlite://");
            assert!(
                !std::path::Path::new(file).exists(),
                "verify created {file}"
            );
        }
        Backend::Postgres => {
            assert!(err.contains("holds no gateway data"), "{err}");
            let pending = store(&db).await.migrations_pending().await;
            assert!(pending.as_ref().is_ok_and(|n| *n > 0), "{pending:?}");
        }
    }

    // A gateway's database, its chain started with a configured key.
    let _admin = role_token(&db, "admin");
    let s = store(&db).await;
    assert_eq!(s.migrations_pending().await.ok(), Some(0));
    let settings = || async {
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::query_scalar::<_, String>("SELECT key FROM settings ORDER BY key")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let before = settings().await;
    // Without the key: refused (before, a key was generated and stored in the database).
    let (ok, out, err) = verify_with_key(&db, None);
    assert!(!ok, "{out}");
    assert!(err.contains("keeps no generated key"), "{err}");
    assert_eq!(settings().await, before, "verify changed the settings");
    let (ok, out, err) = verify_with_key(&db, Some(crate::kit::AUDIT_KEY));
    assert!(ok, "{out}{err}");
    assert!(out.contains("audit chain OK"), "{out}");
    assert_eq!(settings().await, before, "verify changed the settings");
    // An admin command run without the key is refused the same way, and stores no key of
    // its own (one that was never the chain's).
    let out = std::process::Command::new(crate::kit::BIN)
        .args(["tokens", "create", "--name", "keyless", "--role", "viewer"])
        .env("DATABASE_URL", &db.url)
        .env_remove("AUDIT_HMAC_KEY")
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("keeps no generated key"), "{err}");
    assert_eq!(settings().await, before, "an admin command stored a key");
});

both_backends!(
    a_change_the_trail_cannot_record_is_not_made,
    |db| async move {
        // A change to users or tokens is audited like a proxied call: its event first (when
        // that cannot be written, nothing changes), then its outcome under the same id.
        let rack = TestRack::start().await;
        let admin_token = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let c = client();
        let s = store(&db).await;
        let add = || {
            c.post(format!("{}/api/v1/users", gw.url))
                .bearer_auth(&admin_token)
                .json(&serde_json::json!({ "email": "New@example.com", "role": "viewer" }))
                .send()
        };
        let refusal = crate::kit::refuse_audit_events(
            &db,
            "NEW.action IN ('gateway:users:create', 'gateway:tokens:create')",
        )
        .await;
        let refused = add().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(refused.status(), 503);
        let body: serde_json::Value = refused.json().await.unwrap_or_default();
        assert_eq!(body["code"], "audit_unavailable", "{body}");
        let found = s.find_user("new@example.com").await;
        assert!(matches!(found, Ok(None)), "made unaudited: {found:?}");
        // The admin command alike.
        let (ok, out, err) = admin(
            &db,
            &["tokens", "create", "--name", "blocked", "--role", "viewer"],
        );
        assert!(!ok && !out.contains("rgw_"), "{out}");
        assert!(err.contains("nothing changed"), "{err}");
        let tokens = s.list_tokens().await.unwrap_or_default();
        assert!(
            !tokens.iter().any(|t| t.name == "blocked"),
            "token made unaudited"
        );

        refusal.lift().await;
        let added = add().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(added.status(), 201);
        let user_id = s
            .find_user("new@example.com")
            .await
            .ok()
            .flatten()
            .map(|u| u.id)
            .unwrap_or_else(|| panic!("user not created"));
        let pair = |id: String| {
            let s = s.clone();
            async move {
                let complete = crate::kit::eventually(|| {
                    let (s, id) = (s.clone(), id.clone());
                    async move { s.audit_by_request(&id).await.is_ok_and(|r| r.len() == 2) }
                })
                .await;
                let rows = s.audit_by_request(&id).await.unwrap_or_default();
                assert!(complete, "{id}: not an event and its outcome: {rows:?}");
                assert!(
                    rows[0].seq < rows[1].seq,
                    "the event comes before its outcome"
                );
                (rows[0].event.clone(), rows[1].event.clone())
            }
        };
        let (asked, outcome) = pair(crate::kit::request_id(&added)).await;
        assert_eq!(asked.kind.as_str(), "gateway");
        assert_eq!(asked.action, "gateway:users:create");
        assert_eq!(asked.rbac_decision.as_str(), "allow");
        assert_eq!(asked.token_name.as_deref(), Some("admin-token"));
        assert_eq!(asked.details["email"], "new@example.com");
        assert_eq!(asked.details["role"], "viewer");
        assert_eq!(outcome.kind.as_str(), "outcome");
        assert_eq!(outcome.action, "gateway:users:create");
        assert_eq!(outcome.details["result"], "done");
        assert_eq!(outcome.details["user_id"], user_id);

        // What the store refused, and why, is the outcome.
        let lock = c
            .post(format!("{}/api/v1/users/nobody@example.com/lock", gw.url))
            .bearer_auth(&admin_token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lock.status(), 404);
        let id = crate::kit::request_id(&lock);
        let said: serde_json::Value = lock.json().await.unwrap_or_default();
        // Named, for the admin who asked: not a bare "not found".
        assert_eq!(said["error"], "user nobody@example.com not found", "{said}");
        assert_eq!(said["code"], "not_found", "{said}");
        let (asked, outcome) = pair(id).await;
        assert_eq!(asked.action, "gateway:users:lock");
        assert_eq!(asked.details["email"], "nobody@example.com");
        assert_eq!(outcome.details["result"], "refused");
        assert_eq!(outcome.details["reason"], "not_found");

        // What only the change itself knows is in its outcome.
        let role = c
            .put(format!("{}/api/v1/users/new@example.com/role", gw.url))
            .bearer_auth(&admin_token)
            .json(&serde_json::json!({ "role": "deployer" }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(role.status(), 200);
        let (asked, outcome) = pair(crate::kit::request_id(&role)).await;
        assert_eq!(asked.details["role"], "deployer");
        assert_eq!(outcome.details["previous_role"], "viewer");

        let (ok, out, err) = admin(&db, &["audit", "verify"]);
        assert!(ok, "verify failed: {out} {err}");
    }
);

/// Asks the gateway to add `email` as a viewer and gives up after 0.7 s, which the test made
/// too short (the change or its event is held back).
async fn add_user_and_leave(gw: &Gateway, admin_token: &str, email: &str) {
    let impatient = crate::kit::client_builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let gone = impatient
        .post(format!("{}/api/v1/users", gw.url))
        .bearer_auth(admin_token)
        .json(&serde_json::json!({ "email": email, "role": "viewer" }))
        .send()
        .await;
    assert!(gone.is_err(), "the change was not held back: {gone:?}");
}

both_backends!(
    a_change_whose_caller_went_away_is_finished_and_recorded,
    |db: Db| async move {
        // Only PostgreSQL can hold back the change and not its event (SQLite has one write
        // lock for the whole file).
        if db.backend != Backend::Postgres {
            return;
        }
        let rack = TestRack::start().await;
        let admin_token = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let s = store(&db).await;
        let mut holder =
            crate::kit::pg_holding(&db, "BEGIN; LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
                .await;
        add_user_and_leave(&gw, &admin_token, "late@example.com").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        holder
            .execute("COMMIT")
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        let asked = crate::kit::eventually(|| {
            let s = s.clone();
            async move {
                s.audit_rows(0, 10_000).await.is_ok_and(|rows| {
                    rows.iter().any(|r| {
                        r.event.action == "gateway:users:create"
                            && r.event.details["email"] == "late@example.com"
                    })
                })
            }
        })
        .await;
        assert!(asked, "the change's event is missing");
        let rows = s.audit_rows(0, 10_000).await.unwrap_or_default();
        let id = rows
            .iter()
            .find(|r| r.event.details["email"] == "late@example.com")
            .map(|r| r.event.request_id.clone())
            .unwrap_or_default();
        let finished = crate::kit::eventually(|| {
            let (s, id) = (s.clone(), id.clone());
            async move {
                s.audit_by_request(&id).await.is_ok_and(|r| {
                    r.iter().any(|r| {
                        r.event.kind.as_str() == "outcome" && r.event.details["result"] == "done"
                    })
                })
            }
        })
        .await;
        assert!(finished, "the change's outcome is missing");
        let user = s.find_user("late@example.com").await;
        assert!(matches!(user, Ok(Some(_))), "{user:?}");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_caller_went_away_while_its_event_was_written_is_made_and_recorded() {
    // The caller gives up while the change's event waits for the chain head: the event is
    // committed all the same, so the change must be made and its outcome recorded (they were
    // not: the event was awaited in the handler, which the caller's going away dropped).
    let Some(db) = crate::kit::database(Backend::Postgres).await else {
        return;
    };
    let rack = TestRack::start().await;
    let admin_token = role_token(&db, "admin");
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let s = store(&db).await;
    // Held under the writer's 3 s wait for the lock, longer than the caller waits.
    let mut holder = crate::kit::pg_holding(
        &db,
        "BEGIN; SELECT seq FROM audit_chain_head WHERE id = 1 FOR UPDATE",
    )
    .await;
    add_user_and_leave(&gw, &admin_token, "gone@example.com").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    holder
        .execute("COMMIT")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let finished = crate::kit::audited(&s, |r| {
        r.event.kind.as_str() == "outcome"
            && r.event.action == "gateway:users:create"
            && r.event.details["result"] == "done"
    })
    .await;
    let rows = s.audit_rows(0, 10_000).await.unwrap_or_default();
    let events: Vec<_> = rows
        .iter()
        .filter(|r| r.event.action == "gateway:users:create")
        .map(|r| r.event.kind.as_str())
        .collect();
    assert!(finished, "the change's outcome is missing: {events:?}");
    let user = s.find_user("gone@example.com").await;
    assert!(matches!(user, Ok(Some(_))), "{user:?}");
}

both_backends!(
    admin_commands_events_made_while_no_gateway_served_are_printed_at_start,
    |db| async move {
        // The tokens created before the first start (the README's order), and a change made
        // while the gateway was stopped, were on no stdout at all: the sink's count began at
        // its start. The next start prints them — once: a stopped gateway notes how far its
        // stdout went.
        let rack = TestRack::start().await;
        let _ = crate::kit::token(&db, "before-first-start", &["--role", "viewer"]);
        let printed = |gw: &Gateway, name: &'static str| {
            gw.audit_lines()
                .iter()
                .filter(|l| l["details"]["name"] == name && l["actor_type"] == "cli")
                .count()
        };
        let mut gw = Gateway::start(&db, &rack.url, &[]).await;
        let seen =
            crate::kit::eventually(|| async { printed(&gw, "before-first-start") == 1 }).await;
        assert!(seen, "{}", gw.all_output());
        assert!(gw.terminate().is_some_and(|s| s.success()));
        let _ = crate::kit::token(&db, "while-stopped", &["--role", "viewer"]);
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let seen = crate::kit::eventually(|| async { printed(&gw, "while-stopped") == 1 }).await;
        assert!(seen, "{}", gw.all_output());
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(
            printed(&gw, "before-first-start"),
            0,
            "printed again after a clean stop"
        );
    }
);

both_backends!(
    admin_commands_events_reach_the_serving_gateways_stdout,
    |db| async move {
        // An admin command is a process of its own: its events are committed to the same
        // trail, and the serving gateway's stdout (what a SIEM reads) must carry them too.
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let get = || async {
            let resp = client()
                .get(gw.proxy("/apps"))
                .bearer_auth(&viewer)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status(), 200);
        };
        get().await;
        let _ = crate::kit::token(&db, "made-meanwhile", &["--role", "viewer"]);
        get().await;
        let printed = crate::kit::eventually(|| async {
            gw.audit_lines().iter().any(|l| {
                l["action"] == "gateway:tokens:create"
                    && l["actor_type"] == "cli"
                    && l["details"]["name"] == "made-meanwhile"
            })
        })
        .await;
        assert!(printed, "the admin command's event is not on stdout");
        // On an idle gateway too: no request follows this one.
        let _ = crate::kit::token(&db, "made-while-idle", &["--role", "viewer"]);
        let printed = crate::kit::eventually(|| async {
            gw.audit_lines()
                .iter()
                .any(|l| l["details"]["name"] == "made-while-idle" && l["actor_type"] == "cli")
        })
        .await;
        assert!(
            printed,
            "an idle gateway left the admin command's event off stdout"
        );
        // Each event once, in the chain's order where they came in one look.
        let seqs: Vec<i64> = gw
            .audit_lines()
            .iter()
            .filter_map(|l| l["seq"].as_i64())
            .collect();
        let mut unique = seqs.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seqs.len(), "a line printed twice: {seqs:?}");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_event_it_cannot_read() {
    // SQLite keeps whatever type a hand-made UPDATE puts in a column: the row no longer
    // reads back, and verify must say which one rather than only that decoding failed.
    let Some(db) = crate::kit::database(Backend::Sqlite).await else {
        return;
    };
    let _ = crate::kit::token(&db, "one", &["--role", "viewer"]);
    let _ = crate::kit::token(&db, "two", &["--role", "viewer"]);
    let s = store(&db).await;
    for sql in [
        "DROP TRIGGER audit_events_no_update",
        "UPDATE audit_events SET ts = 'yesterday' WHERE seq = 3",
    ] {
        s.execute_raw(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    s.close().await;
    let (ok, out, err) = admin(&db, &["audit", "verify"]);
    assert!(!ok, "{out}");
    assert!(err.contains("audit event 3 could not be read"), "{err}");
}

both_backends!(
    a_gateway_started_on_an_empty_trail_takes_others_first_events_as_its_own_chain,
    |db| async move {
        // The README's order the other way round: the gateway first, on a new database, then
        // `tokens create` in another process. The chain was empty when the gateway read its
        // head (event 0, which no row holds), so finding the head past it with no row 0 is not
        // events removed: it was taken for tampering, and every request refused with 503.
        let rack = TestRack::start().await;
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let viewer = role_token(&db, "viewer");
        for _ in 0..3 {
            let status = client()
                .get(gw.proxy("/apps"))
                .basic_auth("convox", Some(&viewer))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(status, 200, "{}", gw.all_output());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(
            !gw.all_output().contains("no longer holds"),
            "{}",
            gw.all_output()
        );
    }
);
