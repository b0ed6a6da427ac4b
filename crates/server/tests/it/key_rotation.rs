//! `audit rotate-key`: the chain moves to a new key in one event; gateways still running with
//! the retired key forward nothing; `audit verify` walks across the rotation with the retired
//! key given, and the events before it are sealed against whoever holds only that key.

use crate::both_backends;
use crate::kit::{AUDIT_KEY, Db, Gateway, admin_with, client, list_apps, role_token, store};
use crate::upstream::TestRack;

const NEW_KEY: &str = "the-new-audit-key-9876543210fedcba9876543210";

/// `audit rotate-key` to [`NEW_KEY`], retiring `retired` (AUDIT_HMAC_KEY_RETIRED; `""`: unset).
fn rotate(db: &Db, retired: &str) -> (bool, String, String) {
    admin_with(
        db,
        &["audit", "rotate-key"],
        &[
            ("AUDIT_HMAC_KEY", NEW_KEY),
            ("AUDIT_HMAC_KEY_RETIRED", retired),
        ],
    )
}

/// `audit verify` with `key` and `retired` (`""`: unset).
fn verify(db: &Db, key: &str, retired: &str) -> (bool, String, String) {
    admin_with(
        db,
        &["audit", "verify"],
        &[("AUDIT_HMAC_KEY", key), ("AUDIT_HMAC_KEY_RETIRED", retired)],
    )
}

/// Neither key appears in any of the command's output.
fn no_key_shown(out: &(bool, String, String)) {
    for text in [&out.1, &out.2] {
        assert!(
            !text.contains(AUDIT_KEY) && !text.contains(NEW_KEY),
            "a key was printed: {text}"
        );
    }
}

/// The event number a rotation's output names ("… at event N; …").
fn rotated_at(stdout: &str) -> i64 {
    stdout
        .split("at event ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no event number in {stdout:?}"))
}

both_backends!(
    a_rotated_key_stops_gateways_on_the_old_one_and_verify_walks_across_it,
    |db| async move {
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let old = Gateway::start(&db, &rack.url, &[]).await;
        assert_eq!(list_apps(&old, &viewer).await, Some(200));

        let out = rotate(&db, AUDIT_KEY);
        assert!(out.0, "rotate-key failed: {}", out.2);
        assert!(out.1.contains("audit chain moved to the key"), "{}", out.1);
        assert!(out.2.contains("restart every other one"), "{}", out.2);
        no_key_shown(&out);
        let at = rotated_at(&out.1);

        // The gateway still linking with the retired key is not ready (a load balancer takes it
        // out before any request fails) and forwards nothing from now on.
        let ready_url = format!("{}/api/v1/health/ready", old.url);
        let not_ready = crate::kit::eventually(|| {
            let url = ready_url.clone();
            async move {
                let Ok(resp) = client().get(url).send().await else {
                    return false;
                };
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                status == 503 && body.contains("audit key rotated")
            }
        })
        .await;
        assert!(not_ready, "readiness did not say the key was rotated");
        rack.clear();
        let refused = client()
            .get(old.proxy("/apps"))
            .basic_auth("convox", Some(&viewer))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(refused.status().as_u16(), 503);
        let body = refused.text().await.unwrap_or_default();
        assert!(body.contains("audit_unavailable"), "{body}");
        // Refused without credentials: an event no credential check holds back, which takes
        // the writer's other statement on PostgreSQL.
        let anonymous = client().get(old.proxy("/apps")).send().await;
        assert_eq!(anonymous.map(|r| r.status().as_u16()).ok(), Some(401));
        assert!(rack.seen().is_empty(), "forwarded: {:?}", rack.seen());
        assert!(
            old.all_output().contains("audit rotate-key"),
            "the log does not say why: {}",
            old.all_output()
        );
        let (_, old) = old.stop().await;
        drop(old);

        // Restarted with the new key, it serves, and its events follow the rotation.
        let new = Gateway::start(&db, &rack.url, &[("AUDIT_HMAC_KEY", NEW_KEY)]).await;
        assert_eq!(list_apps(&new, &viewer).await, Some(200));
        let (_, new) = new.stop().await;
        drop(new);

        // The rotation is in the chain, naming both keys by fingerprint only.
        let s = store(&db).await;
        let rows = s
            .audit_rows(at - 1, 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rotation = rows.first().unwrap_or_else(|| panic!("no event {at}"));
        assert_eq!(rotation.event.action, "gateway:audit:key_rotated");
        assert!(rotation.event.details["operator"].is_string());
        assert_eq!(rotation.event.details["retired_key_type"], "configured");
        s.close().await;

        let out = verify(&db, NEW_KEY, "");
        assert!(!out.0, "verified without the retired key: {}", out.1);
        assert!(out.2.contains("AUDIT_HMAC_KEY_RETIRED"), "{}", out.2);
        assert!(
            out.2.contains(&format!("retired at event {at}")),
            "{}",
            out.2
        );
        let out = verify(&db, NEW_KEY, AUDIT_KEY);
        assert!(out.0, "verify failed: {}", out.2);
        assert!(out.1.contains("audit chain OK"), "{}", out.1);
        no_key_shown(&out);
        let out = verify(&db, AUDIT_KEY, "");
        assert!(!out.0, "the retired key still reads as the chain's");
        assert!(out.2.contains("does not match"), "{}", out.2);
        let out = admin_with(
            &db,
            &["tokens", "create", "--name", "late", "--role", "viewer"],
            &[],
        );
        assert!(!out.0, "an admin command appended with the retired key");
    }
);

both_backends!(
    a_gateway_given_the_next_key_serves_on_across_the_rotation,
    |db| async move {
        let rack = TestRack::start().await;
        let viewer = role_token(&db, "viewer");
        let next = [("AUDIT_HMAC_KEY_NEXT", NEW_KEY)];
        let gw = Gateway::start(&db, &rack.url, &next).await;
        assert_eq!(list_apps(&gw, &viewer).await, Some(200));

        // Run where the gateway runs: its AUDIT_HMAC_KEY is retired for its NEXT.
        let out = admin_with(&db, &["audit", "rotate-key"], &next);
        assert!(out.0, "rotate-key failed: {}", out.2);
        no_key_shown(&out);
        let at = rotated_at(&out.1);

        rack.clear();
        for _ in 0..3 {
            assert_eq!(list_apps(&gw, &viewer).await, Some(200));
        }
        assert_eq!(rack.seen().len(), 3, "not forwarded");
        let ready = client()
            .get(format!("{}/api/v1/health/ready", gw.url))
            .send()
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(ready.ok(), Some(200));
        assert!(
            gw.all_output().contains("rotated to AUDIT_HMAC_KEY_NEXT"),
            "{}",
            gw.all_output()
        );
        // A restart with the same settings starts on the next key: the chain has it now.
        let (_, gw) = gw.stop().await;
        drop(gw);
        let gw = Gateway::start(&db, &rack.url, &next).await;
        assert_eq!(list_apps(&gw, &viewer).await, Some(200));
        let (_, gw) = gw.stop().await;
        drop(gw);

        // Every event after the rotation is linked with the new key.
        let out = verify(&db, NEW_KEY, AUDIT_KEY);
        assert!(out.0, "verify failed: {}", out.2);
        let events: i64 = out
            .1
            .split("OK: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_default();
        assert!(events > at + 3, "{}", out.1);
        // And where the gateways run, with their settings alone.
        let out = admin_with(&db, &["audit", "verify"], &next);
        assert!(
            out.0,
            "verify with the gateway's settings failed: {}",
            out.2
        );
        let out = admin_with(&db, &["audit", "rotate-key"], &next);
        assert!(!out.0, "rotated twice");
        assert!(out.2.contains("already"), "{}", out.2);
    }
);

both_backends!(
    a_rotation_seals_the_events_before_it_against_the_retired_key,
    |db| async move {
        let _viewer = role_token(&db, "viewer");
        let _deployer = role_token(&db, "deployer");
        let out = rotate(&db, AUDIT_KEY);
        assert!(out.0, "rotate-key failed: {}", out.2);
        let at = rotated_at(&out.1);
        let _late = admin_with(
            &db,
            &["tokens", "create", "--name", "after", "--role", "viewer"],
            &[("AUDIT_HMAC_KEY", NEW_KEY)],
        );
        assert!(verify(&db, NEW_KEY, AUDIT_KEY).0);

        // Someone holding the retired key (and the database) rewrites event 1 and re-links
        // every event up to the rotation with it: the rotation's link, made with the new key,
        // no longer fits.
        crate::anchors::disable_audit_triggers(&db).await;
        let s = store(&db).await;
        s.execute_raw("UPDATE audit_events SET path = '/forged' WHERE seq = 1")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let prev = crate::anchors::relink(&s, AUDIT_KEY, at - 1).await;
        // The rotation's own prev_hash made to match: only its hash, which needs the new key,
        // is left as it was.
        s.execute_raw(&format!(
            "UPDATE audit_events SET prev_hash = '{prev}' WHERE seq = {at}"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        s.close().await;
        let out = verify(&db, NEW_KEY, AUDIT_KEY);
        assert!(!out.0, "verify accepted a rewritten chain: {}", out.1);
        assert!(
            out.2.contains(&format!("broken at event {at}")),
            "{}",
            out.2
        );
    }
);

both_backends!(
    a_generated_key_is_retired_for_a_configured_one,
    |db| async move {
        // A chain started without AUDIT_HMAC_KEY (its key generated and kept in the database).
        let out = admin_with(
            &db,
            &["users", "add", "ann@example.com", "--role", "admin"],
            &[("AUDIT_HMAC_KEY", "")],
        );
        assert!(out.0, "{}", out.2);
        // AUDIT_HMAC_KEY_RETIRED is not needed: the generated key is in the database.
        let out = rotate(&db, "");
        assert!(out.0, "rotate-key failed: {}", out.2);
        assert!(out.2.contains("generated"), "{}", out.2);
        let first = rotated_at(&out.1);
        let out = verify(&db, NEW_KEY, "");
        assert!(out.0, "verify failed: {}", out.2);
        assert!(
            !out.2.contains("key was generated"),
            "still warned about a generated key: {}",
            out.2
        );
        // Without a key the gateway no longer starts on a generated one.
        let out = admin_with(
            &db,
            &["users", "add", "bob@example.com", "--role", "viewer"],
            &[("AUDIT_HMAC_KEY", "")],
        );
        assert!(!out.0, "appended with the retired generated key");
        assert!(out.2.contains("AUDIT_HMAC_KEY is not set"), "{}", out.2);

        // Rotated once more: verify walks generated → NEW_KEY → the third, finding the
        // generated key in the database and NEW_KEY in AUDIT_HMAC_KEY_RETIRED.
        let third = "a-third-audit-key-0000000000000000000000000";
        let out = admin_with(
            &db,
            &["audit", "rotate-key"],
            &[
                ("AUDIT_HMAC_KEY", third),
                ("AUDIT_HMAC_KEY_RETIRED", NEW_KEY),
            ],
        );
        assert!(out.0, "second rotation failed: {}", out.2);
        let out = verify(&db, third, "");
        assert!(!out.0, "verified without NEW_KEY");
        assert!(
            out.2
                .contains(&format!("audit event {first} moves the chain to the key")),
            "{}",
            out.2
        );
        // A key the chain never used among the retired ones changes nothing.
        let out = verify(&db, third, &format!("{AUDIT_KEY}\n{NEW_KEY}"));
        assert!(out.0, "verify across two rotations failed: {}", out.2);
    }
);

both_backends!(
    a_rotation_without_the_current_key_changes_nothing,
    |db| async move {
        let _viewer = role_token(&db, "viewer");
        let out = rotate(&db, "");
        assert!(!out.0, "rotated without the current key");
        assert!(
            out.2.contains("is not among AUDIT_HMAC_KEY_RETIRED"),
            "{}",
            out.2
        );
        no_key_shown(&out);
        let out = rotate(&db, "some-other-key-that-is-long-enough-000000");
        assert!(!out.0, "rotated with a wrong retired key");
        let out = admin_with(
            &db,
            &["audit", "rotate-key"],
            &[("AUDIT_HMAC_KEY_RETIRED", AUDIT_KEY)],
        );
        assert!(!out.0, "rotated to the key it has");
        assert!(out.2.contains("already"), "{}", out.2);
        let out = admin_with(
            &db,
            &["tokens", "create", "--name", "same", "--role", "viewer"],
            &[("AUDIT_HMAC_KEY_NEXT", AUDIT_KEY)],
        );
        assert!(!out.0, "took a next key that is the current one");
        assert!(
            out.2.contains("AUDIT_HMAC_KEY_NEXT is the same key"),
            "{}",
            out.2
        );
        no_key_shown(&out);
        // A database file that is not there: named, and none is made.
        let scratch = crate::kit::scratch_dir();
        let missing = scratch.join("no-such.db");
        let missing_url = format!("sqlite://{}", missing.display());
        let out = admin_with(
            &db,
            &["audit", "rotate-key"],
            &[
                ("DATABASE_URL", missing_url.as_str()),
                ("AUDIT_HMAC_KEY_NEXT", NEW_KEY),
            ],
        );
        assert!(!out.0, "rotated a database that is not there");
        assert!(out.2.contains("there is no database file at"), "{}", out.2);
        assert!(!missing.exists(), "a database file was made");
        let _ = std::fs::remove_dir_all(&scratch);
        // Nothing changed: the chain is still the current key's alone.
        let out = verify(&db, AUDIT_KEY, "");
        assert!(out.0, "{}", out.2);
        let out = admin_with(&db, &["audit", "rotate-key"], &[("AUDIT_HMAC_KEY", "")]);
        assert!(!out.0);
        assert!(out.2.contains("AUDIT_HMAC_KEY is not set"), "{}", out.2);
    }
);
