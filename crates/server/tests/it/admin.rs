//! The admin subcommands against the configured database.

use crate::both_backends;
use crate::kit::{admin, store};

both_backends!(tokens_create_list_revoke, |db: crate::kit::Db| async move {
    // A PostgreSQL password may come as `?password=` (the drivers take it there too): the note
    // about a new database shows the URL without it.
    let with_password = format!("{}?password=s3cret-pw", db.url);
    let url = match db.backend {
        crate::kit::Backend::Postgres if !db.url.contains('?') => with_password.as_str(),
        _ => db.url.as_str(),
    };
    let (ok, out, err) = crate::kit::admin_with(
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
        &[("DATABASE_URL", url)],
    );
    assert!(ok, "{err}");
    assert!(!err.contains("s3cret-pw"), "{err}");
    // A SQLite file it makes is its owner's alone (the trail, token hashes, maybe the chain's
    // key), and so are the log files SQLite keeps beside it.
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        use std::os::unix::fs::PermissionsExt;
        for file in [
            path.to_string(),
            format!("{path}-wal"),
            format!("{path}-shm"),
        ] {
            let mode = std::fs::metadata(&file).map(|m| m.permissions().mode() & 0o777);
            if let Ok(mode) = mode {
                assert_eq!(mode, 0o600, "{file}");
            }
        }
        let made = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(made.ok(), Some(0o600), "{path}");
    }
    // The first command sets the database up, and says so (a mistyped DATABASE_URL would
    // leave a token that works on no gateway); the next ones do not.
    assert!(err.contains("held no gateway data"), "{err}");
    assert!(!err.contains(crate::kit::AUDIT_KEY), "{err}");
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

    // One usable token per name: the audit trail names tokens by name.
    let (ok, _, err) = admin(
        &db,
        &["tokens", "create", "--name", "ci", "--role", "viewer"],
    );
    assert!(!ok, "a second active token named ci was created");
    assert!(err.contains("already in use"), "{err}");

    let (ok, out, err) = admin(&db, &["tokens", "revoke", "ci"]);
    assert!(ok, "{out}");
    assert!(!err.contains("held no gateway data"), "{err}");
    // Once revoked, the name is free again.
    let (ok, _, err) = admin(
        &db,
        &["tokens", "create", "--name", "ci", "--role", "viewer"],
    );
    assert!(ok, "{err}");
    let (ok, out, _) = admin(&db, &["tokens", "revoke", "ci"]);
    assert!(ok, "{out}");
    let (ok, _, err) = admin(&db, &["tokens", "revoke", "ci"]);
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");
    let (_, list, _) = admin(&db, &["tokens", "list"]);
    assert!(list.contains("revoked"), "{list}");

    // A name shared by an expired token and its replacement names the one that works.
    let (ok, _, err) = admin(
        &db,
        &["tokens", "create", "--name", "rot", "--role", "viewer"],
    );
    assert!(ok, "{err}");
    let s = store(&db).await;
    let expired = s
        .execute_raw("UPDATE api_tokens SET expires_at = 1 WHERE name = 'rot'")
        .await;
    assert!(matches!(expired, Ok(1)), "{expired:?}");
    let (ok, _, err) = admin(
        &db,
        &["tokens", "create", "--name", "rot", "--role", "viewer"],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = admin(&db, &["tokens", "revoke", "rot"]);
    assert!(ok, "{out} {err}");
    let tokens = s.list_tokens().await.unwrap_or_default();
    let rot: Vec<_> = tokens.iter().filter(|t| t.name == "rot").collect();
    assert!(
        rot.len() == 2
            && rot
                .iter()
                .all(|t| (t.expires_at == Some(1)) != t.revoked_at.is_some()),
        "the live one was revoked, the expired one left: {rot:?}"
    );
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
            vec!["--name", "42", "--role", "viewer"],
            "must not be a number",
        ),
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
    // Accepted, but said to be useless as it stands.
    let (ok, _, err) = admin(&db, &["users", "add", "gone@example.com", "--role", "ops"]);
    assert!(ok, "{err}");
    let (ok, _, err) = admin(&db, &["users", "lock", "gone@example.com"]);
    assert!(ok, "{err}");
    for (args, warning) in [
        (
            vec!["--name", "typo", "--permissions", "convox:app:list"],
            "warning: convox:app:list grants no rack route",
        ),
        (
            vec![
                "--name",
                "locked",
                "--role",
                "ops",
                "--owner",
                "gone@example.com",
            ],
            "warning: gone@example.com is locked",
        ),
        (
            vec!["--name", "late", "--role", "ops", "--expires-in", "3651d"],
            "up to 3650d",
        ),
    ] {
        let mut full = vec!["tokens", "create"];
        full.extend(args);
        let (_, _, err) = admin(&db, &full);
        assert!(err.contains(warning), "{full:?}: {err}");
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
    // A right-to-left override would make the trail show another address.
    let (ok, _, err) = admin(
        &db,
        &[
            "users",
            "add",
            "moc.elpmaxe\u{202E}@evil.test",
            "--role",
            "ops",
        ],
    );
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
    let s = store(&db).await;
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
    // The lock's outcome says how many sessions it ended: a count, not a secret to mask.
    let rows = s.audit_rows(0, 100).await.unwrap_or_default();
    let lock_outcome = rows
        .iter()
        .find(|r| {
            r.event.action == "gateway:users:lock"
                && r.event.details["result"] == "done"
                && r.event.details.get("sessions_revoked_count").is_some()
        })
        .map(|r| r.event.details["sessions_revoked_count"].clone());
    assert_eq!(lock_outcome, Some(serde_json::json!(0)), "{rows:?}");
    // Who ran the command: the host's login and the user id it ran as.
    let operator = rows
        .iter()
        .find(|r| r.event.action == "gateway:users:lock")
        .and_then(|r| r.event.details["operator"].as_str().map(str::to_string))
        .unwrap_or_default();
    assert!(
        operator.starts_with("cli:") && operator.contains("(uid "),
        "{operator:?}"
    );
});

// Requests that read a token or session row with a stale "last used" time all want to update
// it; one instance writes it once per interval, not once per request in flight (a burst of
// identical writes competes with the audit writer for SQLite's write lock).
both_backends!(last_used_is_written_once_per_interval, |db| async move {
    use gateway::store::NewToken;
    let s = store(&db).await;
    s.migrate().await.unwrap_or_else(|e| panic!("migrate: {e}"));
    let token = s
        .create_token(&NewToken {
            name: "touch",
            token_hash: &"a".repeat(64),
            role: Some("viewer"),
            permissions: None,
            owner_user_id: None,
            created_by: "test",
            expires_at: None,
        })
        .await
        .unwrap_or_else(|e| panic!("token: {e}"));
    let reads = |s: gateway::store::Store| async move {
        s.token_with_owner(&"a".repeat(64))
            .await
            .ok()
            .flatten()
            .and_then(|(t, _, _, _)| t.last_used_at)
    };
    // Sixteen requests holding the never-used row.
    let touches = (0..16).map(|_| s.touch_token(token.id, None));
    for r in futures_util::future::join_all(touches).await {
        r.unwrap_or_else(|e| panic!("touch: {e}"));
    }
    let first = reads(s.clone()).await;
    assert!(first.is_some_and(|t| t >= token.created_at), "{first:?}");
    // Mark the row; a request still holding the old row must not write over it.
    s.execute_raw(&format!(
        "UPDATE api_tokens SET last_used_at = 1 WHERE id = {}",
        token.id
    ))
    .await
    .unwrap_or_else(|e| panic!("mark: {e}"));
    s.touch_token(token.id, None)
        .await
        .unwrap_or_else(|e| panic!("touch: {e}"));
    assert_eq!(
        reads(s.clone()).await,
        Some(1),
        "written twice in one interval"
    );

    let user = s
        .create_user("touch@example.com", "Touch", "viewer")
        .await
        .unwrap_or_else(|e| panic!("user: {e}"));
    let (session, _) = crate::credentials::another_session(&s, "cli", &user)
        .await
        .unwrap_or_else(|e| panic!("session: {e}"));
    let mut stale = session.clone();
    stale.last_seen_at = 0;
    s.touch_session(&stale, 30_000)
        .await
        .unwrap_or_else(|e| panic!("touch session: {e}"));
    let seen = |s: gateway::store::Store, id| async move {
        s.session_by_id(id)
            .await
            .ok()
            .flatten()
            .map(|r| r.last_seen_at)
    };
    let after = seen(s.clone(), session.id).await;
    assert!(after.is_some_and(|t| t >= session.created_at), "{after:?}");
    let user_seen = s
        .user_by_id(user.id)
        .await
        .ok()
        .flatten()
        .and_then(|u| u.last_seen_at);
    assert_eq!(user_seen, after, "session and user updated together");
    s.execute_raw(&format!(
        "UPDATE sessions SET last_seen_at = 1 WHERE id = {}",
        session.id
    ))
    .await
    .unwrap_or_else(|e| panic!("mark: {e}"));
    s.touch_session(&stale, 30_000)
        .await
        .unwrap_or_else(|e| panic!("touch session: {e}"));
    assert_eq!(seen(s.clone(), session.id).await, Some(1));
});

both_backends!(uniqueness_holds_when_creations_race, |db| async move {
    use gateway::store::{NewToken, StoreError};
    let st = store(&db).await;
    st.migrate().await.unwrap_or_else(|e| panic!("{e}"));

    // Open the pool's connections first, so that the creations below start together.
    let mut warm = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let st = st.clone();
        warm.spawn(async move { st.list_users().await.map(|_| ()) });
    }
    while let Some(done) = warm.join_next().await {
        done.unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    // Sixteen people signing in to a new gateway at once: one becomes its first user (and
    // admin), not several. On PostgreSQL the check and the insert race without the lock
    // (caught in about half the rounds, so five of them).
    for round in 0..5 {
        let mut firsts = tokio::task::JoinSet::new();
        for i in 0..16 {
            let st = st.clone();
            firsts.spawn(async move {
                st.create_first_user(&format!("u{i}@example.com"), "U", "admin")
                    .await
            });
        }
        let mut created = 0;
        while let Some(done) = firsts.join_next().await {
            let result = done.unwrap_or_else(|e| panic!("{e}"));
            if result.unwrap_or_else(|e| panic!("{e}")).is_some() {
                created += 1;
            }
        }
        assert_eq!(created, 1, "first users created in round {round}");
        assert_eq!(st.list_users().await.map(|u| u.len()).ok(), Some(1));
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::Executor::execute(&mut conn, "DELETE FROM users")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    // Sixteen tokens of one name at once: one is created, the others are conflicts.
    let mut tokens = tokio::task::JoinSet::new();
    for i in 0..16 {
        let st = st.clone();
        tokens.spawn(async move {
            st.create_token(&NewToken {
                name: "deploy",
                token_hash: &format!("{i:064}"),
                role: Some("deployer"),
                permissions: None,
                owner_user_id: None,
                created_by: "test",
                expires_at: None,
            })
            .await
        });
    }
    let (mut ok, mut conflicts) = (0, 0);
    while let Some(done) = tokens.join_next().await {
        match done.unwrap_or_else(|e| panic!("{e}")) {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 15));
    let usable = st
        .list_tokens()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|t| t.name == "deploy")
        .count();
    assert_eq!(usable, 1);
});

both_backends!(the_last_unlocked_admin_stays, |db| async move {
    use gateway::store::{LastAdmin, StoreError};
    let (ok, _, err) = admin(&db, &["users", "add", "ann@example.com", "--role", "admin"]);
    assert!(ok, "{err}");
    let st = store(&db).await;
    let last = |result: Result<(), StoreError>| match result {
        Err(StoreError::LastAdmin(email)) => email == "ann@example.com",
        _ => false,
    };
    let keep = LastAdmin::Keep;
    let demote = st.set_user_role("ann@example.com", "deployer", keep).await;
    assert!(last(demote.map(|_| ())), "the last admin was demoted");
    assert!(last(
        st.lock_user("ann@example.com", keep).await.map(|_| ())
    ));
    // Keeping the role, and other users' changes, are fine; a locked admin does not count.
    st.set_user_role("ann@example.com", "admin", keep)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    st.create_user("bo@example.com", "Bo", "admin")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    st.lock_user("bo@example.com", keep)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let demote = st.set_user_role("ann@example.com", "viewer", keep).await;
    assert!(last(demote.map(|_| ())), "a locked admin was counted");
    st.set_user_role("bo@example.com", "viewer", keep)
        .await
        .unwrap_or_else(|e| panic!("a locked admin could not be demoted: {e}"));

    // The host's commands are the way back in: they may lock a compromised sole admin (whose
    // session could otherwise undo each new admin), and say that nobody is left.
    let (ok, out, err) = admin(&db, &["users", "lock", "ann@example.com"]);
    assert!(ok && out.contains("Locked"), "{err}");
    assert!(err.contains("no unlocked admin is left"), "{err}");
    assert!(!st.has_unlocked_admin().await.unwrap_or(true));
    let (ok, _, err) = admin(&db, &["users", "set-role", "bo@example.com", "admin"]);
    assert!(
        ok && err.contains("no unlocked admin"),
        "bo is locked: {err}"
    );
    let (ok, _, err) = admin(&db, &["users", "unlock", "bo@example.com"]);
    assert!(ok, "{err}");
    assert!(st.has_unlocked_admin().await.unwrap_or(false));
    let (ok, _, err) = admin(&db, &["users", "set-role", "bo@example.com", "admin"]);
    assert!(ok && !err.contains("warning"), "{err}");

    // Two admins taking each other's role (or locking each other) at the same moment: one
    // change wins, the other is refused, and one admin is left. The check and the change are
    // one locked write; without the lock both went through.
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Open the pool's connections first, so that the changes below start together.
    let mut warm = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let st = st.clone();
        warm.spawn(async move { st.list_users().await.map(|_| ()) });
    }
    while let Some(done) = warm.join_next().await {
        done.unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for round in 0..8 {
        // Only these two are admins.
        sqlx::Executor::execute(&mut conn, "DELETE FROM users")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (
            format!("a{round}@example.com"),
            format!("b{round}@example.com"),
        );
        for who in [&a, &b] {
            st.create_user(who, "A", "admin")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut changes = tokio::task::JoinSet::new();
        for (i, who) in [a.clone(), b.clone()].into_iter().enumerate() {
            let st = st.clone();
            let lock = round % 2 == 1 && i == 0;
            changes.spawn(async move {
                if lock {
                    st.lock_user(&who, LastAdmin::Keep).await.map(|_| ())
                } else {
                    st.set_user_role(&who, "viewer", LastAdmin::Keep)
                        .await
                        .map(|_| ())
                }
            });
        }
        let (mut done, mut refused) = (0, 0);
        while let Some(result) = changes.join_next().await {
            match result.unwrap_or_else(|e| panic!("{e}")) {
                Ok(()) => done += 1,
                Err(StoreError::LastAdmin(_)) => refused += 1,
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!((done, refused), (1, 1), "round {round}");
        let admins = st
            .list_users()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .filter(|u| u.role == "admin" && !u.locked)
            .count();
        assert_eq!(admins, 1, "round {round}");
    }
});

#[test]
fn a_database_that_cannot_be_used_is_named() {
    // The pool alone only says it timed out; the command must say why.
    let dir = crate::kit::scratch_dir();
    let not_a_database = dir.join("notes.txt");
    std::fs::write(&not_a_database, "not a database\n").unwrap_or_else(|e| panic!("{e}"));
    for (url, why) in [
        (
            format!("sqlite://{}", not_a_database.display()),
            "file is not a database",
        ),
        (
            "postgres://gateway@127.0.0.1:1/gateway".to_string(),
            "Connection refused",
        ),
    ] {
        let out = std::process::Command::new(crate::kit::BIN)
            .args(["users", "list"])
            .env("DATABASE_URL", &url)
            .env("AUDIT_HMAC_KEY", crate::kit::AUDIT_KEY)
            .env_remove("RUST_LOG")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {err}");
        assert!(err.contains(why), "{url}: {err}");
        assert!(!err.contains("pool timed out"), "{url}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `rack-gateway-server <args>` with `database_url`, as the unprivileged `nobody` when
/// the tests run as root (root reads and writes whatever the permissions say).
fn as_reader(database_url: &str, args: &[&str]) -> (bool, String, String) {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let mut cmd = if root {
        let mut cmd = std::process::Command::new("runuser");
        cmd.args(["-u", "nobody", "--", crate::kit::BIN]);
        cmd
    } else {
        std::process::Command::new(crate::kit::BIN)
    };
    let out = cmd
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("AUDIT_HMAC_KEY", crate::kit::AUDIT_KEY)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

both_backends!(
    listing_and_verifying_need_only_read_access,
    |db| async move {
        // An auditor gets a read-only copy of the SQLite file, or a PostgreSQL role that may
        // only read: the commands that only look must work with that, and write nothing.
        let (ok, _, err) = admin(
            &db,
            &["users", "add", "auditor@example.com", "--role", "viewer"],
        );
        assert!(ok, "{err}");
        let _ = crate::kit::token(&db, "ci-reader", &["--role", "viewer"]);
        let (url, copy_dir) = match db.backend {
            crate::kit::Backend::Sqlite => {
                let dir = crate::kit::scratch_dir();
                let file = dir.join("copy.db");
                let original = db.url.trim_start_matches("sqlite://");
                // Everything into the file itself first, as a copy for an auditor would be
                // made (the file stays in WAL mode).
                let s = store(&db).await;
                s.execute_raw("PRAGMA wal_checkpoint(TRUNCATE)")
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                s.close().await;
                std::fs::copy(original, &file).unwrap_or_else(|e| panic!("{e}"));
                let mode = |path: &std::path::Path, mode: u32| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                        .unwrap_or_else(|e| panic!("{e}"));
                };
                mode(&file, 0o444);
                mode(&dir, 0o555);
                (format!("sqlite://{}", file.display()), Some(dir))
            }
            crate::kit::Backend::Postgres => {
                let reader = format!("reader_{}", uuid::Uuid::new_v4().simple());
                let s = store(&db).await;
                for sql in [
                    format!("CREATE ROLE {reader} LOGIN"),
                    format!("GRANT USAGE ON SCHEMA public TO {reader}"),
                    format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}"),
                ] {
                    s.execute_raw(&sql)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                }
                s.close().await;
                let url =
                    db.url
                        .replacen("postgres://postgres@", &format!("postgres://{reader}@"), 1);
                assert_ne!(url, db.url, "the test PostgreSQL URL names another user");
                (url, None)
            }
        };
        let (ok, out, err) = as_reader(&url, &["users", "list"]);
        assert!(ok && out.contains("auditor@example.com"), "{out}{err}");
        let (ok, out, err) = as_reader(&url, &["tokens", "list", "--json"]);
        assert!(ok && out.contains("ci-reader"), "{out}{err}");
        let (ok, out, err) = as_reader(&url, &["audit", "verify"]);
        assert!(ok && out.contains("audit chain OK"), "{out}{err}");
        // A command that writes is refused, and says why.
        let (ok, _, err) = as_reader(&url, &["users", "lock", "auditor@example.com"]);
        assert!(!ok, "a write went through read-only access");
        assert!(
            err.contains("read") || err.contains("permission denied"),
            "{err}"
        );
        if let Some(dir) = copy_dir {
            let names: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{e}"))
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, ["copy.db"], "files written beside the copy");
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
            let _ = std::fs::remove_dir_all(dir);
        }
    }
);

both_backends!(
    a_database_migrated_by_a_newer_version_is_named,
    |db| async move {
        let (ok, _, err) = admin(&db, &["migrate"]);
        assert!(ok, "{err}");
        let checksum = match db.backend {
            crate::kit::Backend::Sqlite => "x'00'",
            crate::kit::Backend::Postgres => "'\\x00'::bytea",
        };
        let s = store(&db).await;
        s.execute_raw(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a newer version', true, {checksum}, 1)"
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
        s.close().await;
        let (ok, _, err) = admin(&db, &["migrate"]);
        assert!(!ok, "migrated a schema it does not know");
        assert!(
            err.contains("migrated by a newer rack-gateway (it has migration 9999"),
            "{err}"
        );
    }
);

both_backends!(the_clock_is_compared_with_the_databases, |db| async move {
    let s = store(&db).await;
    s.migrate().await.unwrap_or_else(|e| panic!("{e}"));
    let offset = s.clock_offset_ms().await.unwrap_or_else(|e| panic!("{e}"));
    match db.backend {
        crate::kit::Backend::Sqlite => assert_eq!(offset, None),
        // The same machine's clock: well inside the 5 s that start-up warns about.
        crate::kit::Backend::Postgres => {
            assert!(offset.is_some_and(|ms| ms.abs() < 1_000), "{offset:?}")
        }
    }
});

both_backends!(
    listing_a_database_without_the_schema_says_what_to_do,
    |db| async move {
        // A database that is not (yet) a gateway's: the listing commands said
        // `relation "api_tokens" does not exist`, which names no cause and no remedy.
        let db: crate::kit::Db = db;
        if db.backend == crate::kit::Backend::Sqlite {
            sqlx::any::install_default_drivers();
            let url = format!("{}?mode=rwc", db.url);
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            sqlx::query("CREATE TABLE other (x INTEGER)")
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        for args in [["tokens", "list"], ["users", "list"]] {
            let (ok, out, err) = admin(&db, &args);
            assert!(!ok, "{args:?}: {out}");
            assert!(
                err.contains("holds no gateway data") && err.contains("migrate"),
                "{args:?}: {err}"
            );
        }
    }
);

// Run beside the gateway a command has the gateway's RACK_TOKEN, and masks it in its audit
// events as the gateway does: a token named after it is recorded masked.
both_backends!(
    admin_commands_mask_the_rack_token_in_the_trail,
    |db| async move {
        let token = crate::kit::RACK_TOKEN;
        let name = format!("ci-{token}");
        let (ok, _, err) = crate::kit::admin_with(
            &db,
            &["tokens", "create", "--name", &name, "--role", "viewer"],
            &[("RACK_TOKEN", token)],
        );
        assert!(ok, "{err}");
        let s = store(&db).await;
        let rows = s.audit_rows(0, 10_000).await.unwrap_or_default();
        let dump = serde_json::to_string(&rows).unwrap_or_default();
        assert!(
            dump.contains(&format!("ci-{}", "*".repeat(token.len()))),
            "the creation is recorded, masked: {dump}"
        );
        assert!(!dump.contains(token), "rack token in audit rows: {dump}");
    }
);

both_backends!(
    a_closed_or_full_stdout_ends_a_command_without_a_panic,
    |db: crate::kit::Db| async move {
        let run = |args: &[&str], stdout: std::process::Stdio, close_stdout: bool| {
            let mut child = std::process::Command::new(crate::kit::BIN)
                .args(args)
                .env("DATABASE_URL", &db.url)
                .env("AUDIT_HMAC_KEY", crate::kit::AUDIT_KEY)
                .stdin(std::process::Stdio::null())
                .stdout(stdout)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{e}"));
            if close_stdout {
                // `| head -0`: the reader is gone before the command writes.
                drop(child.stdout.take());
            }
            let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ok, _, err) = admin(
            &db,
            &["users", "add", "ann@example.com", "--role", "viewer"],
        );
        assert!(ok, "{err}");

        // A reader that went away: quietly, with a SIGPIPE death's status, as other tools.
        // `println!` panicked ("failed printing to stdout", status 101) before.
        for args in [
            &["users", "list"][..],
            &["tokens", "list", "--json"],
            &["audit", "verify"],
        ] {
            let (code, err) = run(args, std::process::Stdio::piped(), true);
            assert_eq!(code, Some(141), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
        }

        // A full disk under stdout: a new token must not vanish without a word.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap_or_else(|e| panic!("/dev/full: {e}"));
        let (code, err) = run(
            &["tokens", "create", "--name", "lost", "--role", "viewer"],
            full.into(),
            false,
        );
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("error: cannot write to stdout"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
);

both_backends!(
    admin_commands_warn_about_a_mistyped_environment,
    |db| async move {
        // Found by review: only `serve` warned about the environment, and admin commands had
        // nowhere to show the store's own warnings. A misspelt DATABASE_URL, set beside the
        // real one here, would otherwise send a command to a new SQLite file unnoticed.
        let (ok, _, err) = admin(&db, &["migrate"]);
        assert!(ok, "{err}");
        let mistyped = [("DATABSE_URL", "postgres://gateway@db.internal/gateway")];
        let (ok, _, err) = crate::kit::admin_with(&db, &["users", "list"], &mistyped);
        assert!(ok, "{err}");
        assert!(
            err.contains(
                "DATABSE_URL is not a setting (did you mean DATABASE_URL?): it is ignored"
            ),
            "{err}"
        );
        assert!(
            !err.contains("INFO"),
            "a command logs only what may be wrong: {err}"
        );
        let out = std::process::Command::new(crate::kit::BIN)
            .args(["users", "list"])
            .env_clear()
            .env("DATABASE_URL", &db.url)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.is_empty(), "nothing to warn about, nothing said: {err}");
        if db.url.starts_with("postgres") {
            let sep = if db.url.contains('?') { '&' } else { '?' };
            let url = format!("{}{sep}sslmod=verify-full", db.url);
            let (ok, _, err) =
                crate::kit::admin_with(&db, &["users", "list"], &[("DATABASE_URL", &url)]);
            assert!(ok, "{err}");
            assert!(
                err.contains("connection parameters the PostgreSQL driver does not know")
                    && err.contains("sslmod"),
                "{err}"
            );
        }
    }
);

#[test]
fn an_admin_command_warns_about_an_unchecked_database_connection() {
    // 0.0.0.0 is not a loopback address, so the server counts as remote; connecting to it
    // reaches this host, where nothing listens on port 1: refused at once.
    let out = std::process::Command::new(crate::kit::BIN)
        .args(["tokens", "list"])
        .env(
            "DATABASE_URL",
            "postgres://gateway:sekrit-pw@0.0.0.0:1/gateway?sslmode=require",
        )
        .env_remove("RUST_LOG")
        .env_remove("LOG_LEVEL")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("encrypted, but its certificate is not checked (sslmode=require)"),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    assert!(
        !err.contains("sekrit-pw"),
        "the password was printed: {err}"
    );
}

#[test]
fn a_sqlite_path_that_cannot_be_used_is_named() {
    // SQLite says only "(code: 14) unable to open database file"; a mistyped path, or a
    // listing run before anything set the database up, is told what is wrong, and no file is
    // made (a new empty database would "verify").
    let dir = crate::kit::scratch_dir();
    let file = dir.join("typo.db");
    let url = format!("sqlite://{}", file.display());
    for args in [
        &["users", "list"][..],
        &["tokens", "list"][..],
        &["audit", "verify"][..],
    ] {
        let said = format!("there is no database file at {}", file.display());
        let err = refused(args, &url, false, &said);
        assert!(!err.contains("code: 14"), "{args:?}: {err}");
        assert!(!file.exists(), "{args:?} created the database");
    }
    // Commands that set a database up make the file, not a directory that is not there.
    let nested = dir.join("no-such-dir").join("gateway.db");
    let url = format!("sqlite://{}", nested.display());
    for args in [
        &["migrate"][..],
        &["tokens", "create", "--name", "ci", "--role", "viewer"][..],
    ] {
        let said = format!(
            "the directory {} does not exist",
            dir.join("no-such-dir").display()
        );
        refused(args, &url, false, &said);
        assert!(
            !dir.join("no-such-dir").exists(),
            "{args:?} made the directory"
        );
    }
    // A directory named as the file; SQLite said "disk I/O error" or "unable to open".
    let url = format!("sqlite://{}", dir.display());
    for args in [&["migrate"][..], &["users", "list"][..]] {
        refused(args, &url, false, "is a directory");
    }
    // A directory this user may not write to (as root, the command runs as nobody).
    let locked = dir.join("locked");
    std::fs::create_dir(&locked).unwrap_or_else(|e| panic!("{e}"));
    set_mode(&locked, 0o555);
    let url = format!("sqlite://{}", locked.join("gateway.db").display());
    let err = refused(
        &["migrate"],
        &url,
        true,
        "cannot create or write the database file",
    );
    assert!(!err.contains("code: 14"), "{err}");
    // A database file this user may only read, in a directory it may write: SQLite opened it
    // read-only without a word and failed at the first write ("attempt to write a readonly
    // database"), after `serve` had got as far as its audit key.
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).unwrap_or_else(|e| panic!("{e}"));
    set_mode(&shared, 0o777);
    let file = shared.join("gateway.db");
    let url = format!("sqlite://{}", file.display());
    let (code, err) = run_with_database(&["migrate"], &url, false);
    assert_eq!(code, Some(0), "{err}");
    set_mode(&file, 0o444);
    for args in [
        &["migrate"][..],
        &["tokens", "create", "--name", "ci", "--role", "viewer"][..],
    ] {
        let said = format!(
            "cannot create or write the database file {}:",
            file.display()
        );
        let err = refused(args, &url, true, &said);
        assert!(!err.contains("readonly database"), "{args:?}: {err}");
    }
    // Commands that only read still may.
    let (code, err) = run_with_database(&["users", "list"], &url, true);
    assert_eq!(code, Some(0), "{err}");
}

/// Runs `args` as [`run_with_database`] does and checks that it fails (exit code 1) saying
/// `said`; its stderr, for further checks.
fn refused(args: &[&str], url: &str, as_nobody: bool, said: &str) -> String {
    let (code, err) = run_with_database(args, url, as_nobody);
    assert_eq!(code, Some(1), "{args:?}: {err}");
    assert!(err.contains(said), "{args:?}: {err}");
    err
}

/// Runs the server binary with `args` on `url`; with `as_nobody`, under user 65534 when this
/// runs as root (root may write anywhere). Its exit code and stderr.
fn run_with_database(args: &[&str], url: &str, as_nobody: bool) -> (Option<i32>, String) {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    // A copy nobody may run, wherever the build lives (removed after the run: 76 MB each,
    // left in /tmp by every test run until 2026-12-05).
    let copy = (as_nobody && root).then(|| {
        let dir = crate::kit::scratch_dir();
        set_mode(&dir, 0o755);
        let bin = dir.join("rack-gateway-server");
        std::fs::copy(crate::kit::BIN, &bin).unwrap_or_else(|e| panic!("{e}"));
        set_mode(&bin, 0o755);
        (dir, bin)
    });
    let run = || {
        let mut command = match &copy {
            Some((_, bin)) => {
                let mut c = std::process::Command::new("setpriv");
                c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                    .arg(bin);
                c
            }
            None => std::process::Command::new(crate::kit::BIN),
        };
        command
            .args(args)
            .env("DATABASE_URL", url)
            .env("AUDIT_HMAC_KEY", "0123456789abcdef0123456789abcdef")
            .env_remove("RUST_LOG")
            .output()
    };
    // The fresh copy can be "busy" for a moment: a process another test forks while the copy
    // was being written holds it open until that child execs (ETXTBSY). Tried again.
    let mut out = run();
    for _ in 0..20 {
        match &out {
            Ok(o) if String::from_utf8_lossy(&o.stderr).contains("Text file busy") => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                out = run();
            }
            _ => break,
        }
    }
    if let Some((dir, _)) = &copy {
        let _ = std::fs::remove_dir_all(dir);
    }
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
