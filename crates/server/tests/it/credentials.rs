//! Remembered credentials (SQLite) never outlive a change: the credential generation moves
//! with every change that can alter an authentication, and a request answered from memory is
//! recorded (and forwarded) only if it has not moved.

use reqwest::Method;
use sqlx::{Connection, Executor, Row};

use crate::both_backends;
use crate::kit::{Backend, Db, Gateway, admin, client, request_id, store};
use crate::upstream::TestRack;

const RESTART: &str = "/apps/web/services/web/restart";

/// A connection of its own to the test database (either backend).
async fn connect(db: &Db) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The database's credential generation.
pub async fn generation(db: &Db) -> i64 {
    let row = connect(db)
        .await
        .fetch_one("SELECT n FROM credential_generation WHERE id = 1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    row.try_get(0).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `sql`.
pub async fn execute(db: &Db, sql: &str) {
    connect(db)
        .await
        .execute(sqlx::AssertSqlSafe(sql.to_string()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The columns of `table`, from the database's own catalogue.
async fn columns(db: &Db, table: &str) -> Vec<String> {
    let sql = match db.backend {
        Backend::Sqlite => format!("SELECT name FROM pragma_table_info('{table}')"),
        Backend::Postgres => format!(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_name = '{table}' ORDER BY ordinal_position"
        ),
    };
    let rows = connect(db)
        .await
        .fetch_all(sqlx::AssertSqlSafe(sql))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    rows.iter().filter_map(|r| r.try_get(0).ok()).collect()
}

/// A migrated store, a user with `role` and a session of theirs (its row and secret).
pub async fn user_with_session(
    db: &Db,
    email: &str,
    role: &str,
) -> (gateway::store::Store, gateway::store::SessionRow, String) {
    let st = store(db).await;
    st.migrate().await.unwrap_or_else(|e| panic!("{e}"));
    let user = st
        .create_user(email, "Test", role)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (session, secret) = another_session(&st, "cli", &user)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (st, session, secret)
}

/// A new session of `user`'s on `channel` (its row and secret).
pub async fn another_session(
    st: &gateway::store::Store,
    channel: &str,
    user: &gateway::store::UserRow,
) -> Result<(gateway::store::SessionRow, String), gateway::store::StoreError> {
    gateway::identity::sessions::issue_session(st, &Default::default(), user, channel, None, None)
        .await
        .map(|(created, secret)| (created.row, secret))
}

/// The user `email` (who must exist).
pub async fn existing_user(st: &gateway::store::Store, email: &str) -> gateway::store::UserRow {
    st.find_user(email)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no user {email}"))
}

// Every column of the credential tables moves the generation when updated, except the "last
// used" times that requests write themselves, and a session's `mfa_at`, which no remembered
// answer holds (the step-up check reads it from the database each time); deleting a row moves
// it too. Enumerated from the schema, so a column added later without its trigger fails here.
both_backends!(
    every_credential_change_moves_the_generation,
    |db| async move {
        let (_st, session, _) = user_with_session(&db, "gen@example.com", "viewer").await;
        let _token = crate::kit::token(&db, "gen", &["--role", "viewer"]);
        let touched = [
            ("api_tokens", &["last_used_at"][..]),
            ("users", &["last_seen_at"][..]),
            ("sessions", &["last_seen_at", "mfa_at"][..]),
        ];
        for (table, untracked) in touched {
            let cols = columns(&db, table).await;
            assert!(cols.len() > 5, "{table}: {cols:?}");
            for col in cols {
                let before = generation(&db).await;
                execute(&db, &format!("UPDATE {table} SET {col} = {col}")).await;
                let after = generation(&db).await;
                if untracked.contains(&col.as_str()) {
                    assert_eq!(
                        after, before,
                        "{table}.{col}: written by requests, or no remembered answer holds it"
                    );
                } else {
                    assert!(after > before, "{table}.{col} changed without moving it");
                }
            }
        }
        let before = generation(&db).await;
        execute(
            &db,
            &format!("DELETE FROM sessions WHERE id = {}", session.id),
        )
        .await;
        assert!(generation(&db).await > before, "a deleted session");
        let before = generation(&db).await;
        execute(&db, "DELETE FROM api_tokens WHERE name = 'gen'").await;
        assert!(generation(&db).await > before, "a deleted token");
        // A custom role: its definition is part of the answer for everyone holding it, so
        // every change moves the generation, a new role too (a user may already name it).
        let before = generation(&db).await;
        execute(
            &db,
            "INSERT INTO roles (name, description, permissions, created_by, created_at, \
             updated_at) VALUES ('gen-role', '', '[\"convox:apps:list\"]', 'test', 0, 0)",
        )
        .await;
        assert!(generation(&db).await > before, "a new role");
        for col in columns(&db, "roles").await {
            let before = generation(&db).await;
            execute(&db, &format!("UPDATE roles SET {col} = {col}")).await;
            assert!(
                generation(&db).await > before,
                "roles.{col} changed without moving it"
            );
        }
        let before = generation(&db).await;
        execute(&db, "DELETE FROM roles WHERE name = 'gen-role'").await;
        assert!(generation(&db).await > before, "a deleted role");
        let before = generation(&db).await;
        let (ok, _, err) = admin(
            &db,
            &["users", "add", "new@example.com", "--role", "viewer"],
        );
        assert!(ok, "{err}");
        assert_eq!(
            generation(&db).await,
            before,
            "a new user changes no answer"
        );
    }
);

// A session used once (and so remembered) keeps following its user: a role raised is allowed
// at once (a refusal is never taken from memory), a role lowered is refused at once and the
// refused request never reaches the rack nor leaves an "allow" event, and a lock applies to
// the next request.
both_backends!(a_remembered_session_follows_its_user, |db| async move {
    let rack = TestRack::start().await;
    let (st, _, secret) = user_with_session(&db, "mem@example.com", "viewer").await;
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let c = client();
    let send = |method: Method, path: &str| {
        c.request(method, gw.proxy(path))
            .bearer_auth(&secret)
            .send()
    };
    let status = |r: Result<reqwest::Response, reqwest::Error>| {
        r.map(|r| r.status().as_u16())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let restarts = || {
        rack.seen()
            .iter()
            .filter(|s| s.path.ends_with("/restart"))
            .count()
    };

    for _ in 0..3 {
        assert_eq!(status(send(Method::GET, "/apps").await), 200);
    }
    assert_eq!(status(send(Method::POST, RESTART).await), 403, "viewer");
    let (ok, _, err) = admin(&db, &["users", "set-role", "mem@example.com", "ops"]);
    assert!(ok, "{err}");
    assert_eq!(
        status(send(Method::POST, RESTART).await),
        200,
        "raised to ops"
    );
    assert_eq!(restarts(), 1);
    // Remembered as ops now.
    assert_eq!(status(send(Method::POST, RESTART).await), 200);
    assert_eq!(restarts(), 2);

    let (ok, _, err) = admin(&db, &["users", "set-role", "mem@example.com", "viewer"]);
    assert!(ok, "{err}");
    let resp = send(Method::POST, RESTART)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 403, "lowered to viewer");
    assert_eq!(restarts(), 2, "the refused restart reached the rack");
    let refused = request_id(&resp);
    let events = st
        .audit_by_request(&refused)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let decisions: Vec<&str> = events
        .iter()
        .map(|r| r.event.rbac_decision.as_str())
        .collect();
    assert_eq!(
        decisions,
        ["deny"],
        "one refusal, nothing allowed: {events:?}"
    );

    assert_eq!(status(send(Method::GET, "/apps").await), 200);
    let (ok, _, err) = admin(&db, &["users", "lock", "mem@example.com"]);
    assert!(ok, "{err}");
    assert_eq!(status(send(Method::GET, "/apps").await), 401, "locked");
    let (ok, _, err) = admin(&db, &["users", "unlock", "mem@example.com"]);
    assert!(ok, "{err}");
    // The lock ended the session: unlocking does not bring it back.
    assert_eq!(status(send(Method::GET, "/apps").await), 401, "unlocked");
});

both_backends!(
    locks_end_sessions_and_cookies_hold_only_sessions,
    |db| async move {
        let rack = TestRack::start().await;
        let (_st, _, session) = user_with_session(&db, "ann@example.com", "admin").await;
        let gw = Gateway::start(&db, &rack.url, &[]).await;
        let info = |credential: String, cookie: bool| {
            let request = client().get(format!("{}/api/v1/info", gw.url));
            let request = if cookie {
                request.header("cookie", format!("rg_session={credential}"))
            } else {
                request.bearer_auth(credential)
            };
            async move {
                let resp = request.send().await.unwrap_or_else(|e| panic!("{e}"));
                let status = resp.status().as_u16();
                (status, resp.text().await.unwrap_or_default())
            }
        };
        assert_eq!(info(session.clone(), false).await.0, 200);

        // An admin cannot demote themselves (nobody might be left to manage users).
        let resp = client()
            .put(format!("{}/api/v1/users/Ann@example.com/role", gw.url))
            .bearer_auth(&session)
            .json(&serde_json::json!({ "role": "viewer" }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 400);
        let body = resp.text().await.unwrap_or_default();
        assert!(body.contains("your own role"), "{body}");
        // Nor with a token acting for them.
        let own = crate::kit::token(
            &db,
            "ann-robot",
            &["--role", "admin", "--owner", "ann@example.com"],
        );
        let resp = client()
            .put(format!("{}/api/v1/users/ann@example.com/role", gw.url))
            .bearer_auth(&own)
            .json(&serde_json::json!({ "role": "viewer" }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 400);
        // Nor unlock herself (never needed: a locked user cannot ask).
        let resp = client()
            .post(format!("{}/api/v1/users/ann@example.com/unlock", gw.url))
            .bearer_auth(&own)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 400);
        // Input the change turns away: an unknown role.
        let resp = client()
            .put(format!("{}/api/v1/users/nobody@example.com/role", gw.url))
            .bearer_auth(&own)
            .json(&serde_json::json!({ "role": "root" }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 400);
        // Each refused change is in the trail, with what was asked and why.
        let refusals = crate::kit::eventually(|| async {
            let rows = store(&db)
                .await
                .audit_rows(0, 1000)
                .await
                .unwrap_or_default();
            let refused = |action: &str, reason: &str| {
                rows.iter().any(|r| {
                    r.event.action == action
                        && r.event.rbac_decision.as_str() == "deny"
                        && r.event.status == Some(400)
                        && r.event.details["reason"] == reason
                })
            };
            refused("gateway:users:update", "own_account")
                && refused("gateway:users:unlock", "own_account")
                && refused("gateway:users:update", "bad_request")
        })
        .await;
        assert!(refusals, "refused changes missing from the trail");

        // Ann is the only admin: nobody may demote or lock her, not even another admin's
        // token (the gateway would have nobody left to manage users).
        let other = crate::kit::token(&db, "other-admin", &["--role", "admin"]);
        for (method, path, body) in [
            (
                Method::PUT,
                "role",
                Some(serde_json::json!({ "role": "viewer" })),
            ),
            (Method::POST, "lock", None),
        ] {
            let mut request = client()
                .request(
                    method,
                    format!("{}/api/v1/users/ann@example.com/{path}", gw.url),
                )
                .bearer_auth(&other);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let resp = request.send().await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status(), 409, "{path}");
            let body = resp.text().await.unwrap_or_default();
            assert!(
                body.contains("only unlocked admin") && body.contains("\"conflict\""),
                "{body}"
            );
        }
        assert_eq!(
            info(session.clone(), false).await.0,
            200,
            "a refused lock ended the session"
        );
        let (ok, _, err) = admin(&db, &["users", "add", "bo@example.com", "--role", "admin"]);
        assert!(ok, "{err}");

        // Unlocking must not bring back a session (or a stolen cookie) from before the lock.
        let (ok, _, err) = admin(&db, &["users", "lock", "ann@example.com"]);
        assert!(ok, "{err}");
        let (ok, _, err) = admin(&db, &["users", "unlock", "ann@example.com"]);
        assert!(ok, "{err}");
        let (status, body) = info(session.clone(), false).await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("session_revoked"), "{body}");

        // The session cookie holds a session, never an API token planted in it.
        let token = crate::kit::role_token(&db, "admin");
        assert_eq!(info(token.clone(), false).await.0, 200);
        let (status, body) = info(token, true).await;
        assert_eq!(status, 401, "{body}");
    }
);

both_backends!(a_locked_user_gets_no_new_session, |db| async move {
    // A sign-in checks the lock early (admission) and again where the session is written, in
    // the same transaction: one that finished just after an admin's lock committed would
    // otherwise leave a session that unlocking brings back.
    let (st, first, _) = user_with_session(&db, "late@example.com", "ops").await;
    let user = existing_user(&st, "late@example.com").await;
    let (_, ended) = st
        .lock_user("late@example.com", gateway::store::LastAdmin::Keep)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ended, 1);
    let late = another_session(&st, "cli", &user).await;
    assert!(
        matches!(late, Err(gateway::store::StoreError::UserLocked)),
        "a locked user got a session: {late:?}"
    );
    let open = st
        .user_sessions(user.id, 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(open.is_empty(), "{open:?}");
    assert!(
        st.session_by_id(first.id)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.revoked_at.is_some()),
        "the lock did not end the session"
    );
});

both_backends!(
    locks_race_touches_and_revokes_without_deadlock,
    |db| async move {
        // A lock writes sessions and the user under the users table's lock; a request's activity
        // touch writes the user and its session; a revoke writes a session (and the credential
        // generation). Taken in clashing orders, PostgreSQL broke the cycle after a second by
        // failing one of them: the admin's lock of an active user, say. Each round runs them at
        // the same moment; none may fail.
        let (st, session, _) = user_with_session(&db, "busy@example.com", "ops").await;
        st.create_user("keep@example.com", "Keep", "admin")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for round in 0..20 {
            let user = existing_user(&st, "busy@example.com").await;
            let (extra, _) = another_session(&st, "web", &user)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            let mut work = tokio::task::JoinSet::new();
            for kind in 0..4 {
                let st = st.clone();
                let (mut touched, extra) = (session.clone(), extra.clone());
                // Older than any throttle, so the touch writes.
                touched.last_seen_at = 0;
                if kind == 3 {
                    touched.id = extra.id;
                }
                work.spawn(async move {
                    match kind {
                        0 => st
                            .lock_user("busy@example.com", gateway::store::LastAdmin::Keep)
                            .await
                            .map(|_| ()),
                        1 => st.revoke_session(extra.id).await.map(|_| ()),
                        _ => st.touch_session(&touched, 0).await,
                    }
                });
            }
            while let Some(done) = work.join_next().await {
                done.unwrap_or_else(|e| panic!("{e}"))
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
            st.unlock_user("busy@example.com")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
);

both_backends!(
    ending_sessions_ends_uncollected_cli_sign_ins,
    |db| async move {
        // A CLI sign-in the browser finished becomes a session when its CLI next polls; a
        // "sign out everywhere" or a lock in between must not leave that door open.
        use gateway::store::{LoginLimits, NewLogin};
        let (st, _, _) = user_with_session(&db, "cli@example.com", "ops").await;
        let user = existing_user(&st, "cli@example.com").await;
        for (round, end) in ["revoke-all", "lock"].into_iter().enumerate() {
            let (id, hash) = (format!("attempt-{round}"), format!("{round:064}"));
            let created = st
                .create_login(
                    &NewLogin {
                        id: &id,
                        channel: "cli",
                        return_to: None,
                        cli_challenge: Some("challenge"),
                        cli_login_hash: Some(&hash),
                        expires_at: gateway::store::now_ms() + 600_000,
                        client_ip: "127.0.0.1",
                    },
                    LoginLimits::DEFAULT,
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(created);
            let done = st
                .finish_login(&id, "pending", "complete", Some(user.id), None)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(done);
            match end {
                "revoke-all" => {
                    st.revoke_user_sessions(user.id)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
                _ => {
                    st.lock_user("cli@example.com", gateway::store::LastAdmin::Keep)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    st.unlock_user("cli@example.com")
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            }
            let attempt = st
                .login_by_cli_hash(&hash)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("attempt gone"));
            assert_eq!(attempt.status, "refused", "{end}");
        }
    }
);
