//! A session token the way `rack-gateway login` gets one: the CLI sign-in flow over HTTP
//! (start, the browser's trip through the OIDC provider, poll), with a minimal browser that
//! follows redirects, keeps cookies and picks the test user at the provider (`login_hint`).

use std::collections::HashMap;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest;

/// Signs `email` in through the CLI flow at `gateway` (`http://host:port`); the session token.
pub async fn cli_session(gateway: &str, email: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let start: serde_json::Value = http
        .post(format!("{gateway}/api/v1/auth/cli/start"))
        .json(&serde_json::json!({ "code_challenge": challenge, "code_challenge_method": "S256" }))
        .send()
        .await?
        .error_for_status()
        .context("POST /api/v1/auth/cli/start")?
        .json()
        .await?;
    let login_id = start["login_id"].as_str().context("login_id")?;
    let mut url = start["browser_url"]
        .as_str()
        .context("browser_url")?
        .to_string();

    // The browser: follow redirects through the gateway and the provider, back to the gateway.
    let mut cookies: HashMap<String, String> = HashMap::new();
    let mut done = false;
    for _ in 0..10 {
        if url.contains("/authorize?") && !url.contains("login_hint=") {
            url = format!("{url}&login_hint={email}");
        }
        let jar = cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let response = http.get(&url).header("cookie", jar).send().await?;
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                cookies.insert(k.trim().to_string(), v.to_string());
            }
        }
        let status = response.status();
        if status.is_redirection() {
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
        if !status.is_success() {
            bail!("sign-in page {url}: {status}: {}", response.text().await?);
        }
        done = true;
        break;
    }
    if !done {
        bail!("sign-in: too many redirects");
    }

    let poll = http
        .post(format!("{gateway}/api/v1/auth/cli/poll"))
        .json(&serde_json::json!({ "login_id": login_id, "code_verifier": verifier }))
        .send()
        .await?;
    let status = poll.status();
    let body: serde_json::Value = poll.json().await.unwrap_or_default();
    match body["session_token"].as_str() {
        Some(token) if status.is_success() => Ok(token.to_string()),
        _ => bail!("POST /api/v1/auth/cli/poll: {status}: {body}"),
    }
}
