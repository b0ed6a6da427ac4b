//! The browser sign-in (`login <rack> <url>` without `--token`), end to end: the CLI prints
//! the sign-in URL, a minimal browser signs in at the dev OIDC provider, the CLI collects the
//! session with its PKCE verifier. Then `logout` ends the session on the gateway.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::kit::{Dev, Home};

/// A browser: manual redirects, one cookie jar, picks a dev OIDC test user (`login_hint`).
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    user: String,
}

impl Browser {
    fn new(user: &str) -> Browser {
        convox_api::client::install_crypto_provider();
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
            cookies: HashMap::new(),
            user: user.into(),
        }
    }

    /// Follows `url` to its end; returns the last status and body.
    async fn visit(&mut self, url: &str) -> (u16, String) {
        let mut url = url.to_string();
        for _ in 0..10 {
            if url.contains("/authorize?") && !url.contains("login_hint=") {
                url = format!("{url}&login_hint={}", self.user);
            }
            let cookie = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            let response = self
                .http
                .get(&url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            for value in response.headers().get_all("set-cookie") {
                let text = value.to_str().unwrap_or_default();
                let pair = text.split(';').next().unwrap_or_default();
                if let Some((k, v)) = pair.split_once('=') {
                    if v.is_empty() || text.contains("Max-Age=0") {
                        self.cookies.remove(k.trim());
                    } else {
                        self.cookies.insert(k.trim().to_string(), v.to_string());
                    }
                }
            }
            let status = response.status().as_u16();
            if (300..400).contains(&status) {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                url = if location.starts_with('/') {
                    let origin: String = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
                    format!("{origin}{location}")
                } else {
                    location
                };
                continue;
            }
            return (status, response.text().await.unwrap_or_default());
        }
        panic!("too many redirects");
    }
}

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

    let (status, body) = Browser::new("deployer@example.com").visit(&url).await;
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
