//! `rack-gateway sessions`: where a person is signed in, and ending sessions — their own, and
//! for admins anyone's — against the real gateway's sessions API.

use dev_oidc::browser::Browser;

use crate::kit::{Dev, Home};

/// A browser signed in to `dev` as `email`, and its session's secret.
async fn browser_session(dev: &Dev, email: &str) -> (Browser, String) {
    let mut b = Browser::new(email).unwrap_or_else(|e| panic!("{e}"));
    let login = format!("{}/api/v1/auth/web/login?return_to=/account", dev.gateway);
    let page = b.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(page.body.contains(email), "{}", page.body);
    let session = b.cookies.get("rg_session").cloned().unwrap_or_default();
    assert!(session.starts_with("rgs_"), "{session}");
    (b, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_and_ended() {
    let dev = Dev::start();
    let (_laptop, session) = browser_session(&dev, "viewer@example.com").await;
    let (_phone, _) = browser_session(&dev, "viewer@example.com").await;
    let home = Home::new();
    home.run(&["login", "dev", &dev.gateway, "--token", &session])
        .ok();

    // Two sessions, the one asking marked.
    let listed = home.run(&["sessions", "--json"]).json();
    let all = listed.as_array().cloned().unwrap_or_default();
    assert_eq!(all.len(), 2, "{listed}");
    let current: Vec<_> = all.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{listed}");
    let other = all
        .iter()
        .find(|s| s["current"] == false)
        .and_then(|s| s["id"].as_i64())
        .unwrap_or_default();
    let table = home.run(&["sessions"]).ok();
    assert!(table.starts_with("ID"), "{table}");
    let mine = current[0]["id"].as_i64().unwrap_or_default();
    assert!(table.contains(&format!("{mine}*")), "{table}");

    // Someone else's are an admin's to see.
    let err = home
        .run(&["sessions", "--email", "admin@example.com"])
        .failed();
    assert!(err.contains("permission"), "{err}");

    // Ending the other one; then it is gone from the list.
    let out = home.run(&["sessions", "revoke", &other.to_string()]).ok();
    assert!(out.starts_with(&format!("Ended session {other}")), "{out}");
    let left = home.run(&["sessions", "--json"]).json();
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");

    // An admin (here with an API token, which has no sessions of its own) ends someone's.
    let admin = Home::new();
    admin.login(&dev, "dev", "admin");
    let err = admin.run(&["sessions"]).failed();
    assert!(err.contains("API token, which has no sessions"), "{err}");
    let theirs = admin
        .run(&["sessions", "--email", "viewer@example.com", "--json"])
        .json();
    assert_eq!(theirs.as_array().map(Vec::len), Some(1), "{theirs}");
    let out = admin
        .run(&["sessions", "revoke-all", "--email", "viewer@example.com"])
        .ok();
    assert!(
        out.starts_with("Ended 1 session of viewer@example.com"),
        "{out}"
    );
    // That was the CLI's own: it is refused from its next request on.
    let err = home.run(&["sessions"]).failed();
    assert!(err.contains("revoked"), "{err}");
}
