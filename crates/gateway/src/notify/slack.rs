//! Posting to Slack through an incoming webhook (`SLACK_WEBHOOK_URL`).
//!
//! Slack answers `200 ok` when it took the message, `429` with `Retry-After` when it wants
//! fewer, `5xx` when it is having trouble (all tried again), and another `4xx` with a short
//! reason (`invalid_payload`, `no_service`, `channel_is_archived`, …) when the message or the
//! webhook is wrong: that is given up on. The webhook's address is its credential: it never
//! appears in an error.

use std::time::Duration;

use gateway_core::config::SlackConfig;

use super::Delivery;

/// Longest piece of Slack's answer kept in an error.
const MAX_REASON_CHARS: usize = 200;

/// A Slack incoming webhook.
#[derive(Clone)]
pub struct Slack {
    http: reqwest::Client,
    config: SlackConfig,
}

impl std::fmt::Debug for Slack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slack").finish_non_exhaustive()
    }
}

impl Slack {
    /// A sender for `config`.
    pub fn new(config: SlackConfig) -> Result<Slack, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| e.without_url().to_string())?;
        Ok(Slack { http, config })
    }

    /// Posts `payload` (the webhook's JSON).
    pub async fn post(&self, payload: &str) -> Delivery {
        let sent = self
            .http
            .post(self.config.webhook_url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload.to_string())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                return Delivery::Retry {
                    error: format!(
                        "slack could not be reached: {}",
                        with_causes(&e.without_url())
                    ),
                    after_secs: None,
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let reason: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_REASON_CHARS)
            .collect();
        let error = format!("slack answered {}: {reason}", status.as_u16());
        if status.is_success() {
            Delivery::Sent
        } else if status.as_u16() == 429 || status.is_server_error() {
            Delivery::Retry {
                error,
                after_secs: retry_after,
            }
        } else {
            Delivery::Failed { error }
        }
    }
}

/// `e` and what caused it, as one line ("error sending request" alone says nothing).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}
