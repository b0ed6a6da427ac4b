//! Audit anchors: the chain's head written to S3 under a COMPLIANCE Object Lock (against a
//! local S3 server, moto), and `audit verify` catching what the chain alone cannot — a chain
//! rebuilt with the key, or cut short.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use crate::both_backends;
use crate::kit::{
    AUDIT_KEY, Db, Gateway, S3_SECRET, S3_SESSION_TOKEN, S3Bucket, client, eventually, list_apps,
    role_token, s3_bucket, store, verify_with,
};
use crate::upstream::TestRack;
use gateway::audit::anchor::{self, AnchorRef};

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Whether `gw` logs a line with every one of `needles` within 10 s.
async fn logs(gw: &Gateway, needles: &[&str]) -> bool {
    eventually(|| {
        let output = gw.all_output();
        let found = needles.iter().all(|n| output.contains(n));
        async move { found }
    })
    .await
}

async fn anchors_in(s3: &S3Bucket) -> Vec<AnchorRef> {
    let bucket = s3.anchors();
    anchor::list_anchors(&bucket)
        .await
        .map(|listing| listing.anchors)
        .unwrap_or_else(|e| panic!("list anchors: {e}"))
}

/// Waits until `s3` holds `count` anchors (the start-up anchor of `gw` among them).
async fn await_anchors(gw: &Gateway, s3: &S3Bucket, count: usize) {
    let written = eventually(|| async { anchors_in(s3).await.len() == count }).await;
    assert!(written, "not {count} anchor(s): {}", gw.all_output());
}

/// What the keyless-credential runs start from: a SQLite database with an admin token, a
/// bucket and a fake rack; `None` (the test skips) without a local S3 server.
async fn keyless_setup() -> Option<(Db, S3Bucket, TestRack)> {
    let db = crate::kit::database(crate::kit::Backend::Sqlite).await?;
    let s3 = s3_bucket(true).await?;
    let rack = TestRack::start().await;
    role_token(&db, "admin");
    Some((db, s3, rack))
}

/// The anchor settings for `s3` without its keys, credentials coming from `source` instead.
fn keyless_env<const N: usize>(
    s3: &S3Bucket,
    source: [(&'static str, String); N],
) -> Vec<(&'static str, String)> {
    s3.env(3600)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_"))
        .chain(source)
        .collect()
}

/// Runs a gateway with anchors in `s3` (interval one hour: only the start-up and shutdown
/// anchors are written), sends a few requests and stops it. Returns the two anchors.
async fn anchored_run(db: &Db, s3: &S3Bucket) -> (AnchorRef, AnchorRef) {
    let rack = TestRack::start().await;
    // Creating the token is audited: the chain has a head to anchor at start-up.
    let admin = role_token(db, "admin");
    let env = s3.env(3600);
    let mut gw = Gateway::start(db, &rack.url, &as_refs(&env)).await;
    await_anchors(&gw, s3, 1).await;
    for _ in 0..3 {
        let status = list_apps(&gw, &admin).await;
        assert_eq!(status, Some(200));
    }
    assert!(gw.terminate().is_some_and(|s| s.success()));
    let output = gw.all_output();
    for secret in [S3_SECRET, S3_SESSION_TOKEN, "X-Amz-Signature"] {
        assert!(!output.contains(secret), "{secret} in the gateway's output");
    }
    let anchors = anchors_in(s3).await;
    assert_eq!(anchors.len(), 2, "{anchors:?}\n{output}");
    (anchors[0].clone(), anchors[1].clone())
}

both_backends!(
    the_head_is_anchored_at_start_and_shutdown_under_a_compliance_lock,
    |db| async move {
        let Some(s3) = s3_bucket(true).await else {
            return;
        };
        let (first, last) = anchored_run(&db, &s3).await;
        let s = store(&db).await;
        let head = s.chain_head().await.unwrap_or_else(|e| panic!("{e}"));
        // The shutdown anchor is the final head: the outcomes of the last requests included.
        assert_eq!(
            (last.seq, last.hash.as_str()),
            (head.seq, head.hash.as_str())
        );
        assert!(first.seq < last.seq, "{first:?} {last:?}");
        let rows = s
            .audit_rows_as_stored(first.seq - 1, 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rows.first().map(|(r, _)| r.hash.as_str()),
            Some(first.hash.as_str())
        );

        let bucket = s3.anchors();
        let content = anchor::read_anchor(&bucket, &last, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let first_bytes = bucket
            .get(&first.key, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let previous = content
            .previous
            .unwrap_or_else(|| panic!("no previous anchor"));
        assert_eq!(previous.key, first.key);
        assert_eq!(previous.sha256, hex::encode(Sha256::digest(&first_bytes)));
        let chain_id = s
            .setting("audit_chain_id")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Some(content.chain_id), chain_id);

        let lock = bucket
            .lock_of(&last.key, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lock.mode.as_deref(), Some("COMPLIANCE"));
        let until = lock
            .retain_until
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
            .unwrap_or_else(|| panic!("retain-until {lock:?}"));
        let days_left = until
            .duration_since(std::time::SystemTime::now())
            .map(|d| d.as_secs() / 86_400)
            .unwrap_or(0);
        assert_eq!(days_left, 399, "{lock:?}");
        // Other objects under the prefix are no anchors; deleting one is no deleted anchor.
        let stray = format!("{}/{}/gateway/anchors/readme.txt", s3.endpoint, s3.name);
        let put = client().put(&stray).body("notes").send().await;
        assert!(put.is_ok_and(|r| r.status().is_success()));
        let deleted = s3.delete("gateway/anchors/readme.txt").await;
        assert!((200..300).contains(&deleted), "delete: {deleted}");

        // Listings come in pages (1000 keys on S3); one key per page reads the same.
        let paged = s3.anchors().with_page_size(1);
        let listed = anchor::list_anchors(&paged)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed.anchors, [first.clone(), last.clone()]);
        let keys = paged.list(None).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys, [first.key.clone(), last.key.clone()]);

        let (ok, out, err) = verify_with(&db, &s3.env(3600));
        assert!(ok, "{out}\n{err}");
        assert!(
            out.contains(&format!(
                "anchors OK: 2 in s3://{}/gateway/anchors/ at ",
                s3.name
            )) && out.contains(&format!(
                "the newest at event {} (0 events since)",
                head.seq
            )),
            "{out}"
        );
        assert!(
            err.contains("note: 1 stored version(s) of other objects"),
            "{err}"
        );
        assert!(!err.contains("deleted"), "{err}");
        for secret in [S3_SECRET, S3_SESSION_TOKEN, "X-Amz-Signature"] {
            assert!(!out.contains(secret) && !err.contains(secret), "{secret}");
        }

        // A restart that forgot its newest anchor finds it in the bucket: no second anchor
        // of the same head, and the next one links to it.
        s.execute_raw("DELETE FROM settings WHERE key = 'audit_anchor_last'")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rack = TestRack::start().await;
        let env = s3.env(3600);
        let mut gw = Gateway::start(&db, &rack.url, &as_refs(&env)).await;
        // An event while it runs (the admin command appends to the same chain).
        crate::kit::token(&db, "second-run", &["--role", "viewer"]);
        assert!(gw.terminate().is_some_and(|st| st.success()));
        let anchors = anchors_in(&s3).await;
        assert_eq!(anchors.len(), 3, "{anchors:?}\n{}", gw.all_output());
        let newest = anchor::read_anchor(&bucket, &anchors[2], None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(newest.previous.map(|p| p.key), Some(last.key.clone()));
    }
);

/// Re-links events 1 to `upto` with `key`, each from its stored content, as someone holding
/// the key would after editing them (with [`disable_audit_triggers`] first); returns the last
/// hash.
pub(crate) async fn relink(s: &gateway::store::Store, key: &str, upto: i64) -> String {
    let key = gateway::audit::ChainKey::new(gateway::config::Secret::new(key));
    let rows = s
        .audit_rows_as_stored(0, upto)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut prev = "0".repeat(64);
    for (row, details) in &rows {
        let hash = key.link_with(&prev, row.seq, &row.event, details);
        s.execute_raw(&format!(
            "UPDATE audit_events SET prev_hash = '{prev}', hash = '{hash}' WHERE seq = {}",
            row.seq
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        prev = hash;
    }
    prev
}

/// Disables the triggers that keep the audit tables append-only: what someone with full
/// control of the database can do.
pub(crate) async fn disable_audit_triggers(db: &Db) {
    let s = store(db).await;
    let statements: &[&str] = match db.backend {
        crate::kit::Backend::Sqlite => &[
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_events_no_delete",
            "DROP TRIGGER audit_chain_head_forward",
        ],
        crate::kit::Backend::Postgres => &[
            "ALTER TABLE audit_events DISABLE TRIGGER USER",
            "ALTER TABLE audit_chain_head DISABLE TRIGGER USER",
        ],
    };
    for sql in statements {
        s.execute_raw(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

both_backends!(
    a_chain_cut_short_is_caught_by_its_anchors,
    |db| async move {
        let Some(s3) = s3_bucket(true).await else {
            return;
        };
        let (first, last) = anchored_run(&db, &s3).await;
        // The newest anchor "deleted" as well: S3 only hides it behind a delete marker.
        let status = s3.delete(&last.key).await;
        assert!((200..300).contains(&status), "delete: {status}");
        let visible = s3
            .anchors()
            .list(None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            visible,
            std::slice::from_ref(&first.key),
            "the delete marker hides the anchor"
        );
        disable_audit_triggers(&db).await;
        // Everything after the first anchor removed, the head moved back: a consistent chain.
        let s = store(&db).await;
        for sql in [
            format!("DELETE FROM audit_events WHERE seq > {}", first.seq),
            format!(
                "UPDATE audit_chain_head SET seq = {}, hash = '{}' WHERE id = 1",
                first.seq, first.hash
            ),
        ] {
            s.execute_raw(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let (ok, out, err) = verify_with(&db, &[]);
        assert!(ok, "the chain alone cannot see a cut: {out}\n{err}");
        let (ok, out, err) = verify_with(&db, &s3.env(3600));
        assert!(!ok, "verify accepted a chain cut short: {out}");
        let expected = format!(
            "names event {}, but the chain ends at event {}",
            last.seq, first.seq
        );
        assert!(err.contains(&expected), "{err}");
        assert!(err.contains("1 anchor(s) in s3://"), "{err}");
        assert!(err.contains("were deleted"), "{err}");
    }
);

both_backends!(
    a_chain_rebuilt_with_the_key_is_caught_by_its_anchors,
    |db| async move {
        let Some(s3) = s3_bucket(true).await else {
            return;
        };
        let (first, last) = anchored_run(&db, &s3).await;
        disable_audit_triggers(&db).await;
        // One event after the start-up anchor edited, and every hash from there on recomputed
        // with the key: the chain verifies, and only the anchors remember what it said.
        let s = store(&db).await;
        s.execute_raw(&format!(
            "UPDATE audit_events SET path = '/forged' WHERE seq = {}",
            first.seq + 1
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let prev = relink(&s, AUDIT_KEY, 100_000).await;
        s.execute_raw(&format!(
            "UPDATE audit_chain_head SET hash = '{prev}' WHERE id = 1"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let (ok, out, err) = verify_with(&db, &[]);
        assert!(
            ok,
            "the rebuilt chain should verify on its own: {out}\n{err}"
        );
        let (ok, out, err) = verify_with(&db, &s3.env(3600));
        assert!(!ok, "verify accepted a rebuilt chain: {out}");
        assert!(err.contains("differs from the one anchored in S3"), "{err}");
        // The start-up anchor still matches; the shutdown anchor does not.
        assert!(err.contains(&last.key), "{err}");
    }
);

// Anchors are off the request path: S3 refusing or unreachable costs anchors (and a warning
// saying why), never a request. `audit verify` cannot check anchors it cannot read: it fails.
#[tokio::test]
async fn s3_trouble_delays_anchors_never_requests() {
    let Some(db) = crate::kit::database(crate::kit::Backend::Sqlite).await else {
        return;
    };
    // A bucket without Object Lock: S3 refuses a locked object.
    let Some(unlocked) = s3_bucket(false).await else {
        return;
    };
    let rack = TestRack::start().await;
    let admin = role_token(&db, "admin");
    let env = unlocked.env(1);
    let mut gw = Gateway::start(&db, &rack.url, &as_refs(&env)).await;
    let status = list_apps(&gw, &admin).await;
    assert_eq!(status, Some(200));
    let warned =
        eventually(|| {
            let output = gw.all_output();
            async move {
                output.contains("audit anchor not written") && output.contains("InvalidRequest")
            }
        })
        .await;
    assert!(warned, "{}", gw.all_output());
    assert!(gw.terminate().is_some());
    assert!(anchors_in(&unlocked).await.is_empty());
    // Nothing anchors the chain yet, but its events are seconds old: not overdue.
    let (ok, out, err) = verify_with(&db, &unlocked.env(1));
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("note: no anchors in s3://"), "{err}");
    // An anchor someone wrote without a lock (this bucket cannot lock): checked, and flagged.
    let s = store(&db).await;
    let head = s.chain_head().await.unwrap_or_else(|e| panic!("{e}"));
    let chain_id = s.setting("audit_chain_id").await.ok().flatten();
    plant_anchor(
        &unlocked,
        head.seq,
        &head.hash,
        chain_id.as_deref(),
        "2026-12-03T00:00:00Z",
    )
    .await;
    let (ok, out, err) = verify_with(&db, &unlocked.env(1));
    assert!(
        !ok && out.contains("anchors checked: 1 in s3://"),
        "{out}\n{err}"
    );
    assert!(
        err.contains("error: S3 reports no COMPLIANCE lock"),
        "{err}"
    );
    assert!(!err.contains("belongs to chain"), "{err}");

    // S3 unreachable: a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"));
    let dead = S3Bucket {
        endpoint: format!("http://{closed}"),
        name: unlocked.name.clone(),
    };
    let env = dead.env(1);
    let mut gw = Gateway::start(&db, &rack.url, &as_refs(&env)).await;
    let status = list_apps(&gw, &admin).await;
    assert_eq!(status, Some(200));
    let warned = logs(&gw, &["S3 could not be reached"]).await;
    assert!(warned, "{}", gw.all_output());
    assert!(gw.terminate().is_some());
    let output = gw.all_output();
    for secret in [S3_SECRET, S3_SESSION_TOKEN, "X-Amz-Signature"] {
        assert!(!output.contains(secret), "{secret} in the gateway's output");
    }
    let (ok, out, err) = verify_with(&db, &dead.env(1));
    assert!(!ok, "verify passed without reading its anchors: {out}");
    assert!(err.contains("cannot list the audit anchors"), "{err}");
    for secret in [S3_SECRET, S3_SESSION_TOKEN, "X-Amz-Signature"] {
        assert!(!err.contains(secret), "{secret} in verify's output: {err}");
    }
}

/// Writes an anchor into `s3` as anyone with plain write access could: unlocked, with the
/// given content. Returns its key.
async fn plant_anchor(
    s3: &S3Bucket,
    seq: i64,
    hash: &str,
    chain_id: Option<&str>,
    written_at: &str,
) -> String {
    let key = anchor::anchor_key("gateway/anchors/", seq, hash);
    let body = serde_json::json!({
        "format": anchor::ANCHOR_FORMAT, "chain_id": chain_id.unwrap_or("planted"), "seq": seq,
        "hash": hash, "previous": null, "written_at": written_at
    });
    let put = client()
        .put(format!("{}/{}/{key}", s3.endpoint, s3.name))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok();
    assert_eq!(put, Some(200), "plant {key}");
    key
}

// Whoever can write to the bucket (or the database's settings) may plant an "anchor" far
// ahead of the chain. It must not stop anchoring: the gateway says so and goes on, and
// verify names the planted anchor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_anchor_does_not_stop_anchoring() {
    let Some(db) = crate::kit::database(crate::kit::Backend::Sqlite).await else {
        return;
    };
    let Some(s3) = s3_bucket(true).await else {
        return;
    };
    let rack = TestRack::start().await;
    let admin = role_token(&db, "admin");
    let planted = plant_anchor(
        &s3,
        i64::MAX,
        &"ab".repeat(32),
        None,
        "2026-12-03T00:00:00Z",
    )
    .await;
    let env = s3.env(1);
    let mut gw = Gateway::start(&db, &rack.url, &as_refs(&env)).await;
    assert!(
        logs(
            &gw,
            &["does not hold what its newest anchor says", &planted]
        )
        .await
    );
    let s3 = &s3;
    let anchored = |n: usize| move || async move { anchors_in(s3).await.len() == n };
    assert!(eventually(anchored(2)).await, "{}", gw.all_output());
    // Anchoring goes on as events are added.
    assert_eq!(list_apps(&gw, &admin).await, Some(200));
    assert!(eventually(anchored(3)).await, "{}", gw.all_output());
    assert!(gw.terminate().is_some_and(|st| st.success()));
    let (ok, _, err) = verify_with(&db, &s3.env(1));
    assert!(!ok, "{err}");
    // Unlocked: not one the gateway wrote, and named as such rather than blamed on the chain.
    assert!(
        err.contains(&format!("{planted} in s3://"))
            && err.contains("is not an anchor the gateway wrote (it has no COMPLIANCE lock"),
        "{err}"
    );
}

// Anchors are due every interval while events are added: events long after the newest
// anchor, and old enough to have been anchored since, mean anchoring stopped (switched off,
// or kept from writing), and verify fails even though every anchor matches.
both_backends!(anchoring_that_stopped_fails_verification, |db| async move {
    let Some(s3) = s3_bucket(true).await else {
        return;
    };
    let s = store(&db).await;
    s.migrate().await.unwrap_or_else(|e| panic!("{e}"));
    let key = gateway::audit::ChainKey::new(gateway::config::Secret::new(AUDIT_KEY));
    let now = gateway::store::now_ms();
    let seconds_ago = |secs: i64, n: usize| {
        let mut event = crate::audit::awkward_event(n);
        event.ts = now - secs * 1000;
        event
    };
    let minutes_ago = |m: i64, n: usize| seconds_ago(m * 60, n);
    let append = |events: Vec<gateway::audit::AuditEvent>| {
        let (s, key) = (s.clone(), key.clone());
        async move {
            s.append_audit(
                events.into(),
                move |prev: &str, seq: i64, e: &gateway::audit::AuditEvent, d: &str| {
                    key.link_with(prev, seq, e, d)
                },
            )
            .await
            .unwrap_or_else(|e| panic!("append: {e}"))
        }
    };
    append((0..3).map(|n| minutes_ago(20, n)).collect()).await;
    s.put_setting("audit_chain_id", "chain-under-test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Events 20 minutes old and no anchor at all: overdue.
    let (ok, out, err) = verify_with(&db, &s3.env(60));
    assert!(!ok && out.contains("audit chain OK"), "{out}\n{err}");
    assert!(err.contains("error: no anchors in s3://"), "{err}");
    assert!(
        !err.contains("note: no anchors"),
        "said twice, once as fine: {err}"
    );
    let head = s.chain_head().await.unwrap_or_else(|e| panic!("{e}"));
    // The anchor as the gateway would have written it 15 minutes ago, locked.
    let written = humantime::format_rfc3339_millis(
        std::time::SystemTime::now() - std::time::Duration::from_secs(15 * 60),
    )
    .to_string();
    let anchor_at = |written: &str| {
        serde_json::json!({
            "format": anchor::ANCHOR_FORMAT, "chain_id": "chain-under-test", "seq": head.seq,
            "hash": head.hash, "previous": null, "written_at": written, "interval_secs": 60
        })
        .to_string()
        .into_bytes()
    };
    let key = anchor::anchor_key("gateway/anchors/", head.seq, &head.hash);
    let bucket = s3.anchors();
    bucket
        .put_locked(&key, anchor_at(&written))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The anchor's writer had an interval of 60 s: events up to 2 minutes after the anchor,
    // or in the last 2 minutes, are not yet overdue — even for a verify configured with 1 s.
    append(vec![minutes_ago(14, 3), seconds_ago(100, 4)]).await;
    let (ok, out, err) = verify_with(&db, &s3.env(1));
    assert!(ok, "{out}\n{err}");
    let env = s3.env(60);
    append(vec![minutes_ago(5, 5)]).await;
    let (ok, out, err) = verify_with(&db, &env);
    assert!(!ok && out.contains("audit chain OK"), "{out}\n{err}");
    assert!(err.contains("anchoring stopped"), "{err}");
    assert!(err.contains(&format!("event {} (", head.seq + 3)), "{err}");
    // A new version of the anchor claiming a later time does not hide it: S3 stored the
    // first one before, and the earlier time counts.
    bucket
        .put_locked(&key, anchor_at("2099-01-01T00:00:00.000Z"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = verify_with(&db, &env);
    assert!(!ok, "{out}\n{err}");
    assert!(err.contains("anchoring stopped"), "{err}");
    // An anchor naming an absurd interval (anyone who can write to the bucket can name one):
    // bounded as the setting is, and said, rather than a panic.
    let head = s.chain_head().await.unwrap_or_else(|e| panic!("{e}"));
    let mut absurd: serde_json::Value =
        serde_json::from_slice(&anchor_at(&written)).unwrap_or_default();
    absurd["seq"] = head.seq.into();
    absurd["hash"] = head.hash.clone().into();
    absurd["interval_secs"] = u64::MAX.into();
    bucket
        .put_locked(
            &anchor::anchor_key("gateway/anchors/", head.seq, &head.hash),
            absurd.to_string().into_bytes(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = verify_with(&db, &env);
    assert!(ok, "{out}\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("warning: the newest anchor names an interval of 315360000 s"),
        "{err}"
    );
});

/// A fake container credentials endpoint (what ECS serves a task with a role): answers
/// `Authorization: <token>` with temporary credentials valid for `valid_secs`, anything else
/// with 403, and counts what it answered.
async fn container_credentials(
    token: &'static str,
    fail: bool,
    valid_secs: u64,
) -> (String, Arc<AtomicUsize>) {
    use axum::http::{HeaderMap, StatusCode};
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let app = axum::Router::new().route(
        "/creds",
        axum::routing::get(move |headers: HeaderMap| {
            let counter = counter.clone();
            async move {
                if fail {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "oops".to_string());
                }
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(token) {
                    return (StatusCode::FORBIDDEN, "no".to_string());
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let expires =
                    std::time::SystemTime::now() + std::time::Duration::from_secs(valid_secs);
                let body = serde_json::json!({
                    "AccessKeyId": "ASIATASKROLE",
                    "SecretAccessKey": CONTAINER_SECRET,
                    "Token": CONTAINER_SESSION,
                    "Expiration": humantime::format_rfc3339_seconds(expires).to_string(),
                    "RoleArn": "arn:aws:iam::123456789012:role/gateway"
                });
                (StatusCode::OK, body.to_string())
            }
        }),
    );
    (format!("http://{}/creds", serve_locally(app).await), served)
}

/// Serves `app` on a free loopback port for the rest of the test; returns the address.
async fn serve_locally(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

const CONTAINER_SECRET: &str = "task-role-secret-do-not-leak";
const CONTAINER_SESSION: &str = "task-role-session-do-not-leak";
const CONTAINER_AUTH: &str = "container-auth-token-do-not-leak";

// On ECS the gateway has no keys of its own: its task role's temporary credentials come from
// the container credentials endpoint, fetched once and kept until shortly before they expire.
// (Two worker threads: the fake endpoint runs here while the test blocks on the gateway.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecs_task_role_signs_the_anchors() {
    let Some((db, s3, rack)) = keyless_setup().await else {
        return;
    };
    let (url, served) = container_credentials(CONTAINER_AUTH, false, 3600).await;
    let role_env = |url: &str| {
        keyless_env(
            &s3,
            [
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", url.to_string()),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                    CONTAINER_AUTH.to_string(),
                ),
            ],
        )
    };
    // A run with one change while it is up (the admin command appends to the chain), made once
    // the start-up anchor is in (`anchored`: the anchors by then). Made earlier, the change
    // can land in the start-up anchor, and the shutdown has nothing new to anchor.
    let run = |url: String, token: &'static str, anchored: usize| {
        let (db, rack_url, env, s3) = (&db, rack.url.clone(), role_env(&url), &s3);
        async move {
            let mut gw = Gateway::start(db, &rack_url, &as_refs(&env)).await;
            await_anchors(&gw, s3, anchored).await;
            crate::kit::token(db, token, &["--role", "viewer"]);
            assert!(gw.terminate().is_some_and(|st| st.success()));
            gw.all_output()
        }
    };
    let output = run(url, "while-running", 1).await;
    assert_eq!(anchors_in(&s3).await.len(), 2, "{output}");
    // Two listings and two puts, one fetch: the credentials are good for an hour.
    assert_eq!(served.load(Ordering::SeqCst), 1);

    // Credentials that expire within five minutes are fetched again for every request.
    let (short, served) = container_credentials(CONTAINER_AUTH, false, 240).await;
    let output = run(short, "short-lived", 2).await;
    assert_eq!(anchors_in(&s3).await.len(), 3, "{output}");
    // Start-up: nothing new to anchor, no request. Shutdown: one listing, one get of the
    // anchor found, one put.
    assert_eq!(served.load(Ordering::SeqCst), 3);

    // An endpoint that fails: anchors wait, requests do not, nothing secret is said.
    let (broken, _) = container_credentials(CONTAINER_AUTH, true, 3600).await;
    let env = role_env(&broken);
    let mut gw = Gateway::start(&db, &rack.url, &as_refs(&env)).await;
    let admin = crate::kit::token(&db, "admin-2", &["--role", "admin"]);
    assert_eq!(list_apps(&gw, &admin).await, Some(200));
    // The new events' anchor is due at shutdown (the interval is an hour), and fails.
    assert!(gw.terminate().is_some());
    let output = gw.all_output();
    assert!(
        output.contains("audit anchor not written")
            && output.contains("the credentials endpoint answered 500"),
        "{output}"
    );
    assert_eq!(anchors_in(&s3).await.len(), 3);
    for secret in [CONTAINER_SECRET, CONTAINER_SESSION, CONTAINER_AUTH] {
        assert!(!output.contains(secret), "{secret} in the gateway's output");
    }
}

const IMDS_SECRET: &str = "instance-profile-secret-do-not-leak";
const IMDS_SESSION: &str = "instance-profile-session-do-not-leak";
const IMDS_TOKEN: &str = "imds-session-token-do-not-leak";

/// A fake EC2 instance metadata service speaking IMDSv2: a session token for a `PUT` that asks
/// for one, then, for `GET`s carrying it, the instance profile's role name (404 when `role` is
/// `None`) and its credentials; 401 for a `GET` without the token (IMDSv1). Counts the
/// credentials it handed out.
async fn instance_metadata(role: Option<&'static str>) -> (String, Arc<AtomicUsize>) {
    use axum::extract::Path;
    use axum::http::{HeaderMap, StatusCode};
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let has_token = |headers: &HeaderMap| {
        headers
            .get("x-aws-ec2-metadata-token")
            .and_then(|v| v.to_str().ok())
            == Some(IMDS_TOKEN)
    };
    let app = axum::Router::new()
        .route(
            "/latest/api/token",
            axum::routing::put(|headers: HeaderMap| async move {
                match headers.get("x-aws-ec2-metadata-token-ttl-seconds") {
                    Some(_) => (StatusCode::OK, IMDS_TOKEN),
                    None => (StatusCode::BAD_REQUEST, ""),
                }
            }),
        )
        .route(
            "/latest/meta-data/iam/security-credentials/",
            axum::routing::get(move |headers: HeaderMap| async move {
                match (has_token(&headers), role) {
                    (false, _) => (StatusCode::UNAUTHORIZED, String::new()),
                    (true, None) => (StatusCode::NOT_FOUND, String::new()),
                    (true, Some(role)) => (StatusCode::OK, format!("{role}\n")),
                }
            }),
        )
        .route(
            "/latest/meta-data/iam/security-credentials/{name}",
            axum::routing::get(move |headers: HeaderMap, Path(name): Path<String>| {
                let counter = counter.clone();
                async move {
                    if !has_token(&headers) {
                        return (StatusCode::UNAUTHORIZED, String::new());
                    }
                    if Some(name.as_str()) != role {
                        return (StatusCode::NOT_FOUND, String::new());
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let expires =
                        std::time::SystemTime::now() + std::time::Duration::from_secs(6 * 3600);
                    let body = serde_json::json!({
                        "Code": "Success",
                        "LastUpdated": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                        "Type": "AWS-HMAC",
                        "AccessKeyId": "ASIAINSTANCEPROFILE",
                        "SecretAccessKey": IMDS_SECRET,
                        "Token": IMDS_SESSION,
                        "Expiration": humantime::format_rfc3339_seconds(expires).to_string(),
                    });
                    (StatusCode::OK, body.to_string())
                }
            }),
        );
    (format!("http://{}", serve_locally(app).await), served)
}

// On EC2 without keys or a container endpoint the instance profile's credentials are used, as
// the AWS SDKs would: fetched once over IMDSv2, kept until shortly before they expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ec2_instance_profile_signs_the_anchors() {
    let Some((db, s3, rack)) = keyless_setup().await else {
        return;
    };
    let profile_env = |endpoint: &str| {
        keyless_env(
            &s3,
            [("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.to_string())],
        )
    };
    let (endpoint, served) = instance_metadata(Some("gateway-role")).await;
    let env = profile_env(&endpoint);
    let mut gw = Gateway::start(&db, &rack.url, &as_refs(&env)).await;
    await_anchors(&gw, &s3, 1).await;
    crate::kit::token(&db, "while-running", &["--role", "viewer"]);
    assert!(gw.terminate().is_some_and(|st| st.success()));
    let output = gw.all_output();
    assert_eq!(anchors_in(&s3).await.len(), 2, "{output}");
    assert_eq!(served.load(Ordering::SeqCst), 1, "one fetch for the run");
    let (ok, out, err) = verify_with(&db, &env);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("anchors OK: 2 in"), "{out}");
    for secret in [IMDS_SECRET, IMDS_SESSION, IMDS_TOKEN] {
        assert!(
            !output.contains(secret) && !err.contains(secret) && !out.contains(secret),
            "{secret} in the output"
        );
    }

    // An instance without a profile: anchors wait, requests do not, and the log says why.
    let (bare, _) = instance_metadata(None).await;
    let env = profile_env(&bare);
    let mut gw = Gateway::start(&db, &rack.url, &as_refs(&env)).await;
    let admin = crate::kit::token(&db, "admin-2", &["--role", "admin"]);
    assert_eq!(list_apps(&gw, &admin).await, Some(200));
    assert!(gw.terminate().is_some());
    let output = gw.all_output();
    assert!(
        output.contains("audit anchor not written")
            && output.contains("no instance profile (IAM role) is attached"),
        "{output}"
    );

    // Turned off, as the AWS SDKs allow: no credentials at all, said at once.
    let mut env = profile_env(&endpoint);
    env.push(("AWS_EC2_METADATA_DISABLED", "true".into()));
    let (ok, _, err) = verify_with(&db, &env);
    assert!(!ok);
    assert!(err.contains("AWS_ACCESS_KEY_ID is required"), "{err}");
}

both_backends!(
    events_removed_under_a_running_gateway_stop_it_and_are_anchored,
    |db| async move {
        // Someone with write access to the database (no key needed) removes the newest events
        // and moves the head back: a consistent, shorter chain. The running gateway knows what
        // it wrote: it refuses to extend the shortened chain, and anchors what it wrote.
        let s3 = s3_bucket(true).await;
        let env = s3.as_ref().map(|s3| s3.env(3600)).unwrap_or_default();
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let mut gw = Gateway::start(&db, &rack.url, &as_refs(&env)).await;
        for _ in 0..3 {
            assert_eq!(list_apps(&gw, &viewer).await, Some(200));
        }
        let s = store(&db).await;
        // An outcome is committed after its answer: wait for the third, so that the head read
        // next is the last event the gateway wrote (read before it, the removal below took the
        // outcome, and the gateway named a later event than the test expected).
        let outcomes = eventually(|| async {
            s.audit_rows(0, 1_000).await.is_ok_and(|rows| {
                rows.iter()
                    .filter(|r| {
                        r.event.kind == gateway::audit::EventKind::Outcome
                            && r.event.action == "convox:apps:list"
                    })
                    .count()
                    == 3
            })
        })
        .await;
        assert!(outcomes, "{}", gw.all_output());
        let head = s.chain_head().await.unwrap_or_else(|e| panic!("{e}"));
        disable_audit_triggers(&db).await;
        let kept = head.seq - 2;
        remove_newest(&db, 2).await;
        rack.clear();
        assert_eq!(
            list_apps(&gw, &viewer).await,
            Some(503),
            "a request was served on a chain cut short"
        );
        assert!(rack.seen().is_empty(), "a request reached the rack");
        assert!(
            logs(&gw, &[&format!("behind event {}", head.seq)]).await,
            "{}",
            gw.all_output()
        );
        // Not ready, and no write check can make it so: only a restart can.
        let ready_url = format!("{}/api/v1/health/ready", gw.url);
        let not_ready = crate::kit::eventually(|| async {
            let Ok(resp) = client().get(&ready_url).send().await else {
                return false;
            };
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            status == 503
                && body["audit"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("chain changed"))
        })
        .await;
        let last = client().get(&ready_url).send().await.ok();
        let last = match last {
            Some(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            None => String::new(),
        };
        assert!(not_ready, "READY: {last}\n{}", gw.all_output());
        let Some(s3) = s3 else {
            return;
        };
        assert!(gw.terminate().is_some_and(|st| st.success()));
        let (ok, out, err) = verify_with(&db, &s3.env(3600));
        assert!(!ok, "verify accepted a chain cut short: {out}");
        let expected = format!(
            "names event {}, but the chain ends at event {kept}",
            head.seq
        );
        assert!(err.contains(&expected), "{err}\n{}", gw.all_output());
    }
);

both_backends!(
    a_junk_anchor_is_named_and_the_database_not_blamed,
    |db| async move {
        // Someone with write access to the bucket alone puts an object where an anchor for a
        // real event would be, naming another hash. The database is not at fault: verify
        // names the object, checks the chain against the real anchors, and still fails.
        let Some(s3) = s3_bucket(true).await else {
            return;
        };
        let (first, _last) = anchored_run(&db, &s3).await;
        let key = anchor::anchor_key("gateway/anchors/", first.seq, &"0".repeat(64));
        let put = client()
            .put(format!("{}/{}/{key}", s3.endpoint, s3.name))
            .body("junk")
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok();
        assert_eq!(put, Some(200));
        let (ok, out, err) = verify_with(&db, &s3.env(3600));
        assert!(!ok, "{out}\n{err}");
        assert!(out.contains("audit chain OK"), "{out}\n{err}");
        assert!(
            err.contains(&format!("{key} in s3://"))
                && err.contains("is not an anchor the gateway wrote"),
            "{err}"
        );
        assert!(!err.contains("chain was rebuilt"), "{err}");
    }
);

/// Removes the chain's newest `n` events and moves the head back to match: a consistent,
/// shorter chain (no key needed).
async fn remove_newest(db: &Db, n: i64) {
    let s = store(db).await;
    let head = s.chain_head().await.unwrap_or_else(|e| panic!("{e}"));
    let kept = head.seq - n;
    for sql in [
        format!("DELETE FROM audit_events WHERE seq > {kept}"),
        format!(
            "UPDATE audit_chain_head SET seq = {kept}, \
             hash = (SELECT hash FROM audit_events WHERE seq = {kept}) WHERE id = 1"
        ),
    ] {
        s.execute_raw(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

both_backends!(
    events_removed_before_the_gateway_wrote_or_by_others_are_caught_too,
    |db| async move {
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let _ = crate::kit::token(&db, "one-more", &["--role", "viewer"]);
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        disable_audit_triggers(&db).await;
        // Right after start-up, before the gateway wrote anything: the head it read at start
        // is a link it knows.
        remove_newest(&db, 2).await;
        rack.clear();
        assert_eq!(list_apps(&gw, &viewer).await, Some(503));
        // Others appending past the removal (an admin command) do not make it good again.
        let _ = crate::kit::token(&db, "after-the-removal", &["--role", "viewer"]);
        let _ = crate::kit::token(&db, "and-another", &["--role", "viewer"]);
        assert_eq!(
            list_apps(&gw, &viewer).await,
            Some(503),
            "forwarding resumed once the head passed the removed events"
        );
        assert!(rack.seen().is_empty(), "a request reached the rack");
    }
);

both_backends!(
    a_chain_rebuilt_past_what_the_gateway_saw_is_anchored_as_it_saw_it,
    |db| async move {
        // The newest events removed, and others appended past where they were: the head is
        // ahead of the link the gateway saw. At shutdown it anchors that link, not the head
        // the others built, so verify reports the change.
        let Some(s3) = s3_bucket(true).await else {
            return;
        };
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let env = s3.env(3600);
        let mut gw = Gateway::start(&db, &rack.url, &as_refs(&env)).await;
        await_anchors(&gw, &s3, 1).await;
        // Events after the start-up anchor, known only to the gateway (and the chain).
        for _ in 0..2 {
            assert_eq!(list_apps(&gw, &viewer).await, Some(200));
        }
        disable_audit_triggers(&db).await;
        remove_newest(&db, 2).await;
        for name in ["past-one", "past-two"] {
            let _ = crate::kit::token(&db, name, &["--role", "viewer"]);
        }
        assert_eq!(list_apps(&gw, &viewer).await, Some(503));
        assert!(gw.terminate().is_some_and(|st| st.success()));
        let (ok, out, err) = verify_with(&db, &s3.env(3600));
        assert!(!ok, "verify accepted the changed chain: {out}");
        assert!(
            err.contains("differs from the one anchored"),
            "{err}\n{}",
            gw.all_output()
        );
    }
);

both_backends!(
    admin_commands_events_removed_under_an_idle_gateway_are_caught,
    |db| async move {
        // An admin command's events, seen by the serving gateway (its stdout printed them),
        // removed afterwards with the head moved back: the gateway refuses to go on.
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        assert_eq!(list_apps(&gw, &viewer).await, Some(200));
        let _ = crate::kit::token(&db, "made-then-hidden", &["--role", "viewer"]);
        let printed = eventually(|| async {
            gw.audit_lines()
                .iter()
                .any(|l| l["details"]["name"] == "made-then-hidden")
        })
        .await;
        assert!(printed, "{}", gw.all_output());
        disable_audit_triggers(&db).await;
        remove_newest(&db, 2).await;
        rack.clear();
        assert_eq!(list_apps(&gw, &viewer).await, Some(503));
        assert!(rack.seen().is_empty(), "a request reached the rack");
    }
);
