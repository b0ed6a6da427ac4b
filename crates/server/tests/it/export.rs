//! `audit export`: the events an auditor asks for, as the lines stdout carried or as CSV, into
//! a new file readable by its owner only, from a database it never changes.

use crate::both_backends;
use crate::kit::{Db, Gateway, admin, client, list_apps, role_token, scratch_dir};
use crate::upstream::TestRack;

/// `audit export` with `args`; (success, stdout, stderr).
fn export(db: &Db, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["audit", "export"];
    all.extend_from_slice(args);
    admin(db, &all)
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

both_backends!(
    an_export_is_the_trail_as_stdout_carried_it_and_selects_what_is_asked,
    |db| async move {
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        for _ in 0..2 {
            assert_eq!(list_apps(&gw, &viewer).await, Some(200));
        }
        let denied = client()
            .delete(gw.proxy("/apps/web"))
            .basic_auth("convox", Some(&viewer))
            .header("user-agent", "=HYPERLINK(\"http://evil.example\")")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(denied.status(), 403);
        let denied_id = crate::kit::request_id(&denied);
        // Every event of this gateway printed (outcomes come after their responses).
        let printed = crate::kit::eventually(|| async {
            gw.audit_lines()
                .iter()
                .filter(|l| l["kind"] == "outcome" && l["action"] == "convox:apps:list")
                .count()
                == 2
        })
        .await;
        assert!(printed, "{}", gw.all_output());
        let (_, gw) = gw.stop().await;

        // Everything: the very lines stdout carried, in order, for this gateway's events.
        let (ok, out, err) = export(&db, &[]);
        assert!(ok, "{err}");
        let all = json_lines(&out);
        let seqs: Vec<i64> = all.iter().filter_map(|l| l["seq"].as_i64()).collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{out}");
        assert!(
            err.contains(&format!(
                "exported {n} of the {n} events read",
                n = all.len()
            )),
            "{err}"
        );
        let stdout = gw.audit_lines();
        let from_gateway: Vec<&serde_json::Value> =
            stdout.iter().filter(|l| l["type"] == "audit").collect();
        assert!(from_gateway.len() >= 6, "{stdout:?}");
        for line in from_gateway {
            let seq = line["seq"].as_i64().unwrap_or(0);
            let exported = all.iter().find(|l| l["seq"] == seq);
            assert_eq!(exported, Some(line), "event {seq} differs from stdout's");
        }
        assert!(!out.contains(&viewer), "a token in the export");

        // The refusals, as CSV: one row, the user agent defused for a spreadsheet.
        let (ok, csv, err) = export(&db, &["--decision", "deny", "--format", "csv"]);
        assert!(ok, "{err}");
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows.len(), 2, "{csv}");
        assert!(rows[0].starts_with("seq,ts,kind,request_id,"), "{csv}");
        assert!(rows[1].contains("convox:apps:delete") && rows[1].contains(&denied_id));
        assert!(
            rows[1].contains("\"'=HYPERLINK(\"\"http://evil.example\"\")\""),
            "{csv}"
        );

        // Patterns, kinds, one request, a range of numbers.
        let (ok, out, _) = export(&db, &["--action", "convox:apps:*", "--kind", "outcome"]);
        assert!(ok);
        let outcomes = json_lines(&out);
        assert_eq!(outcomes.len(), 2, "{out}");
        assert!(outcomes.iter().all(|l| l["status"] == 200));
        let (ok, out, _) = export(&db, &["--request-id", &denied_id]);
        assert!(ok);
        assert_eq!(json_lines(&out).len(), 1, "{out}");
        let (ok, out, _) = export(&db, &["--from-seq", "2", "--to-seq", "3"]);
        assert!(ok);
        let range: Vec<i64> = json_lines(&out)
            .iter()
            .filter_map(|l| l["seq"].as_i64())
            .collect();
        assert_eq!(range, vec![2, 3]);
        let (ok, out, _) = export(
            &db,
            &[
                "--actor",
                "cli",
                "--action",
                "gateway:tokens:create",
                "--kind",
                "gateway",
            ],
        );
        assert!(ok);
        assert_eq!(
            json_lines(&out).len(),
            1,
            "the token made for the test: {out}"
        );

        // Times: everything is within the last hour, nothing is in the future.
        let (ok, out, _) = export(&db, &["--since", "1h"]);
        assert!(ok);
        assert_eq!(json_lines(&out).len(), all.len());
        let (ok, out, err) = export(&db, &["--since", "2999-01-01", "--format", "csv"]);
        assert!(ok, "{err}");
        assert_eq!(out.lines().count(), 1, "only the header: {out}");
        assert!(err.contains("exported 0 of"), "{err}");

        // Into a file: made for its owner only, and never overwritten.
        let dir = scratch_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("trail.jsonl");
        let path = file.to_string_lossy().to_string();
        let (ok, out, err) = export(&db, &["--output", &path]);
        assert!(ok, "{err}");
        assert!(out.is_empty());
        assert!(err.contains("into"), "{err}");
        let written = std::fs::read_to_string(&file).unwrap_or_default();
        assert_eq!(json_lines(&written), all);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        let (ok, _, err) = export(&db, &["--output", &path, "--format", "csv"]);
        assert!(!ok);
        assert!(err.contains("exists"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap_or_default(), written);
        let _ = std::fs::remove_dir_all(&dir);

        // The export changed nothing: the same trail once more.
        let (ok, again, _) = export(&db, &[]);
        assert!(ok);
        assert_eq!(json_lines(&again), all);
    }
);

both_backends!(an_export_says_what_it_cannot_take, |db| async move {
    for (args, expected) in [
        (
            vec!["--since", "yesterday"],
            "--since: \"yesterday\" is not a time",
        ),
        (
            vec!["--since", "2026-11-02", "--until", "2026-11-01"],
            "--since must be before --until",
        ),
        (
            vec!["--from-seq", "5", "--to-seq", "4"],
            "--from-seq must not be past --to-seq",
        ),
        (vec!["--action", " "], "--action: an empty pattern"),
    ] {
        let (ok, out, err) = export(&db, &args);
        assert!(!ok, "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let (ok, _, err) = export(&db, &["--format", "xml"]);
    assert!(!ok);
    assert!(err.contains("invalid value 'xml'"), "{err}");
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_a_sqlite_file_that_is_not_there_makes_none() {
    let dir = scratch_dir();
    let missing = dir.join("nothing-here.db");
    let db = Db::at(
        format!("sqlite://{}", missing.display()),
        crate::kit::Backend::Sqlite,
        dir.clone(),
    );
    let output = dir.join("out.jsonl");
    let (ok, _, err) = export(&db, &["--output", &output.to_string_lossy()]);
    assert!(!ok);
    assert!(err.contains("nothing-here.db"), "{err}");
    assert!(!missing.exists(), "a database was created");
    assert!(!output.exists(), "an export was started");
}

/// `GET /api/v1/audit/events` with `token` and `query`: the status and the body.
async fn audit_page(gw: &Gateway, token: &str, query: &str) -> (u16, serde_json::Value) {
    let resp = client()
        .get(format!("{}/api/v1/audit/events?{query}", gw.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

fn seqs(page: &serde_json::Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["seq"].as_i64()).collect())
        .unwrap_or_default()
}

both_backends!(
    the_audit_api_pages_back_through_the_trail_for_those_allowed_and_is_audited,
    |db| async move {
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let admin_token = role_token(&db, "admin");
        let auditor = crate::kit::token(&db, "auditor", &["--permissions", "gateway:audit:read"]);
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        for _ in 0..3 {
            assert_eq!(list_apps(&gw, &viewer).await, Some(200));
        }
        let denied = client()
            .delete(gw.proxy("/apps/web"))
            .basic_auth("convox", Some(&viewer))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(denied.status(), 403);

        // Not for a viewer, and the refusal is on the trail.
        let (status, body) = audit_page(&gw, &viewer, "").await;
        assert_eq!(status, 403, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("gateway:audit:read")
        );

        // Newest first, a page at a time, to the start of the chain.
        let (status, first) = audit_page(&gw, &auditor, "limit=4").await;
        assert_eq!(status, 200, "{first}");
        let page = seqs(&first);
        assert_eq!(page.len(), 4);
        assert!(page.windows(2).all(|w| w[0] > w[1]), "{page:?}");
        let mut all = page.clone();
        let mut next = first["next_before"].as_i64();
        let mut rounds = 0;
        while let Some(before) = next {
            let (status, more) =
                audit_page(&gw, &admin_token, &format!("limit=4&before={before}")).await;
            assert_eq!(status, 200, "{more}");
            all.extend(seqs(&more));
            next = more["next_before"].as_i64();
            rounds += 1;
            assert!(rounds < 100, "paging does not end");
        }
        assert_eq!(all.last(), Some(&1), "{all:?}");
        assert!(
            all.windows(2).all(|w| w[0] == w[1] + 1),
            "a gap or a repeat: {all:?}"
        );
        assert!(seqs(&first)[0] >= 12, "{all:?}");

        // Filters as `audit export` takes them.
        let (status, refusals) =
            audit_page(&gw, &admin_token, "decision=deny&action=convox%3Aapps%3A*").await;
        assert_eq!(status, 200);
        let events = refusals["events"].as_array().cloned().unwrap_or_default();
        assert_eq!(events.len(), 1, "{refusals}");
        assert_eq!(events[0]["action"], "convox:apps:delete");
        assert_eq!(events[0]["token_name"], "viewer-token");
        assert_eq!(refusals["next_before"], serde_json::Value::Null);
        let (status, bad) = audit_page(&gw, &admin_token, "acton=convox%3Aapps%3Adelete").await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            bad["error"]
                .as_str()
                .unwrap_or_default()
                .contains("unknown parameter")
        );

        // Each read is on the trail: who, with which filter, how much it returned.
        let (_, reads) = audit_page(
            &gw,
            &admin_token,
            "action=gateway%3Aaudit%3Aread&limit=1000",
        )
        .await;
        let reads = reads["events"].as_array().cloned().unwrap_or_default();
        let allowed: Vec<_> = reads
            .iter()
            .filter(|e| e["rbac_decision"] == "allow")
            .collect();
        let refused: Vec<_> = reads
            .iter()
            .filter(|e| e["rbac_decision"] == "deny")
            .collect();
        assert!(allowed.len() >= 3, "{reads:?}");
        assert!(allowed.iter().any(|e| e["token_name"] == "auditor"
            && e["details"]["query"] == "limit=4"
            && e["details"]["returned"] == 4));
        assert!(
            refused
                .iter()
                .any(|e| e["token_name"] == "viewer-token" && e["status"] == 403)
        );
        assert!(
            refused
                .iter()
                .any(|e| e["status"] == 400
                    && e["details"]["query"] == "acton=convox%3Aapps%3Adelete")
        );
    }
);

both_backends!(
    the_audit_api_shows_nothing_it_cannot_record_reading,
    |db| async move {
        let rack = TestRack::start().await;
        let admin_token = role_token(&db, "admin");
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let (status, _) = audit_page(&gw, &admin_token, "limit=5").await;
        assert_eq!(status, 200);

        // A trail that takes no writes: the read cannot be recorded, so nothing is shown.
        let refusal = crate::kit::refuse_audit_events(&db, "1 = 1").await;
        let (status, body) = audit_page(&gw, &admin_token, "limit=5").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "audit_unavailable", "{body}");
        assert!(body.get("events").is_none(), "{body}");

        refusal.lift().await;
        let back = crate::kit::eventually(|| async {
            audit_page(&gw, &admin_token, "limit=5").await.0 == 200
        })
        .await;
        assert!(back, "the trail took writes again but reads stayed refused");
    }
);
