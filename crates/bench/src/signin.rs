//! A session token the way `rack-gateway login` gets one: the CLI sign-in flow over HTTP
//! (start, the browser's trip through the OIDC provider with `dev_oidc::browser`, poll).

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dev_oidc::browser::Browser;
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
    let url = start["browser_url"].as_str().context("browser_url")?;

    // The browser's trip through the gateway and the provider, back to the gateway.
    let page = Browser::new(email)?.visit_confirming(url).await?;
    if !(200..300).contains(&page.status) {
        bail!("sign-in page {}: {}: {}", page.url, page.status, page.body);
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
