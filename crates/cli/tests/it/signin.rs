//! The browser sign-in (`login <rack> <url>` without `--token`), end to end: the CLI prints
//! the sign-in URL, a minimal browser signs in at the dev OIDC provider, the CLI collects the
//! session with its PKCE verifier. Then `logout` ends the session on the gateway.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use dev_oidc::browser::Browser;

use crate::kit::{Dev, Home};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sign_in_then_logout() {
    let dev = tokio::task::spawn_blocking(Dev::start)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let home = Home::new();
    let mut child = home
        .command(&["login", "dev", &dev.gateway, "--no-browser"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = mpsc::channel::<String>();
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let url = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
            if let Some(url) = line
                .trim()
                .strip_prefix("http")
                .map(|rest| format!("http{rest}"))
            {
                return url;
            }
            seen.push(line);
        }
        panic!("the CLI printed no sign-in URL: {seen:?}");
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        url.starts_with(&format!(
            "{}/api/v1/auth/cli/browser?login_id=",
            dev.gateway
        )),
        "{url}"
    );

    let page = Browser::new("deployer@example.com")
        .unwrap_or_else(|e| panic!("{e}"))
        .visit_confirming(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = (page.status, page.body);
    assert_eq!(status, 200, "{body}");

    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("Logged in to dev")
            && stdout.contains("deployer@example.com, role deployer"),
        "{stdout}"
    );
    let config = home.config();
    let entry = &config["racks"]["dev"];
    assert_eq!(entry["token_type"], "session");
    assert_eq!(entry["email"], "deployer@example.com");
    assert!(
        entry["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("rgs_")),
        "{entry}"
    );
    assert!(
        entry["expires_at"].as_i64().is_some_and(|t| t > 0),
        "{entry}"
    );

    let rack = home.run(&["rack"]).ok();
    assert!(
        rack.contains("User      deployer@example.com") && rack.contains("expires"),
        "{rack}"
    );
    assert!(home.run(&["apps"]).ok().contains("web"));

    // logout ends the session on the gateway: the token stops working.
    assert!(home.run(&["logout"]).ok().contains("Logged out of dev"));
    assert!(home.config()["racks"].get("dev").is_none());
    home.write_config(&config);
    let err = home.run(&["apps"]).failed();
    assert!(err.contains("session expired or revoked"), "{err}");
}
