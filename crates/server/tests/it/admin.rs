//! The admin subcommands against the configured database.

use crate::both_backends;
use crate::kit::admin;

both_backends!(tokens_create_list_revoke, |db| async move {
    let (ok, out, err) = admin(
        &db,
        &[
            "tokens",
            "create",
            "--name",
            "ci",
            "--role",
            "deployer",
            "--expires-in",
            "30d",
        ],
    );
    assert!(ok, "{err}");
    let secret = out.lines().last().unwrap_or_default();
    assert!(
        secret.starts_with("rgw_") && secret.len() == 47,
        "token alone on the last line: {out}"
    );
    assert!(out.contains("shown only once"));

    let (ok, list, _) = admin(&db, &["tokens", "list"]);
    assert!(ok);
    assert!(
        list.contains("ci") && list.contains("deployer") && list.contains("active"),
        "{list}"
    );
    assert!(!list.contains(secret), "list shows the secret");
    let (ok, json, _) = admin(&db, &["tokens", "list", "--json"]);
    assert!(ok);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(parsed[0]["name"], "ci");
    assert!(
        parsed[0].get("token_hash").is_none(),
        "hash exposed: {json}"
    );
    assert!(parsed[0]["expires_at"].is_i64());

    let (ok, out, _) = admin(&db, &["tokens", "revoke", "ci"]);
    assert!(ok, "{out}");
    let (ok, _, err) = admin(&db, &["tokens", "revoke", "ci"]);
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");
    let (_, list, _) = admin(&db, &["tokens", "list"]);
    assert!(list.contains("revoked"), "{list}");
});

both_backends!(token_create_rejects_bad_input, |db| async move {
    for (args, expected) in [
        (vec!["--name", "x", "--role", "root"], "unknown role"),
        (
            vec!["--name", "x", "--permissions", "apps:list"],
            "invalid permission",
        ),
        (
            vec!["--name", "x", "--role", "viewer", "--expires-in", "soon"],
            "invalid expiry",
        ),
        (vec!["--name", "", "--role", "viewer"], "token name"),
        (
            vec![
                "--name",
                "x",
                "--role",
                "viewer",
                "--owner",
                "nobody@example.com",
            ],
            "no user",
        ),
    ] {
        let mut full = vec!["tokens", "create"];
        full.extend(args);
        let (ok, _, err) = admin(&db, &full);
        assert!(!ok, "{full:?} accepted");
        assert!(err.contains(expected), "{full:?}: {err}");
    }
});

both_backends!(users_add_list_set_role_lock, |db| async move {
    let (ok, _, err) = admin(
        &db,
        &[
            "users",
            "add",
            "Alice@Example.com",
            "--role",
            "ops",
            "--name",
            "Alice",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = admin(&db, &["users", "add", "alice@example.com", "--role", "ops"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = admin(&db, &["users", "add", "not-an-email", "--role", "ops"]);
    assert!(!ok && err.contains("not an e-mail"), "{err}");
    let (ok, _, err) = admin(&db, &["users", "set-role", "alice@example.com", "wizard"]);
    assert!(!ok && err.contains("unknown role"), "{err}");
    let (ok, out, err) = admin(&db, &["users", "set-role", "alice@example.com", "deployer"]);
    assert!(ok && out.contains("deployer"), "{err}");
    let (ok, _, _) = admin(&db, &["users", "lock", "alice@example.com"]);
    assert!(ok);
    let (ok, out, _) = admin(&db, &["users", "list"]);
    assert!(ok);
    let line = out
        .lines()
        .find(|l| l.contains("alice@example.com"))
        .unwrap_or_default();
    assert!(line.contains("deployer") && line.contains("yes"), "{out}");
    let (ok, _, err) = admin(&db, &["users", "lock", "bob@example.com"]);
    assert!(!ok && err.contains("not found"), "{err}");
    // Every change is in the audit trail.
    let s = crate::kit::store(&db).await;
    let actions: Vec<String> = s
        .audit_rows(0, 100)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.event.action)
        .collect();
    for a in [
        "gateway:users:create",
        "gateway:users:update",
        "gateway:users:lock",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
});
