//! The two Slack Web API methods approving from Slack needs, called with the app's bot token:
//! `users.info` (who pressed a button: their e-mail, and whether they are a full member of
//! the workspace) and `views.open` (the dialog that asks for their code).
//!
//! Slack answers HTTP 200 with `{"ok": false, "error": "…"}` when it refuses; the bot token
//! never appears in an error.

use std::time::Duration;

use gateway_core::config::SlackAppConfig;
use serde::Deserialize;
use serde_json::Value;

/// How long a call may take: a button press's `trigger_id` is good for three seconds, and
/// Slack waits that long for the gateway's answer.
const TIMEOUT: Duration = Duration::from_millis(2500);

/// Largest answer read from Slack (a `users.info` answer is a few KiB).
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// Longest piece of Slack's refusal kept in an error.
const MAX_REASON_CHARS: usize = 100;

/// Why Slack did not answer as asked.
#[derive(Debug, thiserror::Error)]
pub enum SlackApiError {
    /// Not reached, too slow, or not HTTP 200.
    #[error("Slack's Web API could not be reached: {0}")]
    Unreachable(String),
    /// Slack said no (`user_not_found`, `invalid_auth`, `missing_scope`, `expired_trigger_id`…).
    #[error("Slack refused {method}: {error}")]
    Refused {
        /// The method called.
        method: &'static str,
        /// Slack's `error`.
        error: String,
    },
    /// Not the JSON Slack answers with.
    #[error("Slack's answer to {0} could not be read")]
    Malformed(&'static str),
}

/// A Slack user, as `users.info` describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackPerson {
    /// Their e-mail (lower-cased), when Slack shows it (the app needs `users:read.email`).
    pub email: Option<String>,
    /// Deactivated.
    pub deleted: bool,
    /// An app's bot user.
    pub bot: bool,
    /// A guest (single- or multi-channel), from outside the organisation.
    pub guest: bool,
}

/// Slack's Web API, as the gateway's app.
#[derive(Clone)]
pub struct SlackApi {
    http: reqwest::Client,
    config: SlackAppConfig,
}

impl std::fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackApi")
            .field("api_url", &self.config.api_url.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    user: Option<User>,
}

#[derive(Deserialize)]
struct User {
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    is_bot: bool,
    #[serde(default)]
    is_restricted: bool,
    #[serde(default)]
    is_ultra_restricted: bool,
    #[serde(default)]
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    #[serde(default)]
    email: Option<String>,
}

impl SlackApi {
    /// A client for `config`'s app.
    pub fn new(config: SlackAppConfig) -> Result<SlackApi, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| e.without_url().to_string())?;
        Ok(SlackApi { http, config })
    }

    /// The app's signing secret, which checks Slack's requests.
    pub fn signing_secret(&self) -> &[u8] {
        self.config.signing_secret.expose().as_bytes()
    }

    /// Who Slack user `user` (`U…`) is.
    pub async fn person(&self, user: &str) -> Result<SlackPerson, SlackApiError> {
        const METHOD: &str = "users.info";
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("user", user)
            .finish();
        let request = self
            .request(METHOD)?
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        let answer = self.call(METHOD, request).await?;
        let user = answer.user.ok_or(SlackApiError::Malformed(METHOD))?;
        Ok(SlackPerson {
            email: user
                .profile
                .and_then(|p| p.email)
                .map(|e| e.trim().to_ascii_lowercase())
                .filter(|e| !e.is_empty()),
            deleted: user.deleted,
            bot: user.is_bot,
            guest: user.is_restricted || user.is_ultra_restricted,
        })
    }

    /// Opens `view` (a modal) for the button press `trigger_id` came with.
    pub async fn open_view(&self, trigger_id: &str, view: &Value) -> Result<(), SlackApiError> {
        const METHOD: &str = "views.open";
        let body = serde_json::json!({ "trigger_id": trigger_id, "view": view });
        let request = self
            .request(METHOD)?
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(body.to_string());
        self.call(METHOD, request).await.map(|_| ())
    }

    /// `raw` (a button press's `response_url`) when it is Slack's: `https://hooks.slack.com/…`,
    /// or on the host of `SLACK_API_URL` (a stand-in's). Nothing else is posted to.
    pub fn message_url(&self, raw: &str) -> Option<url::Url> {
        let url = url::Url::parse(raw).ok().filter(|_| raw.len() <= 1024)?;
        let api = &self.config.api_url;
        let slack = url.scheme() == "https" && url.host_str() == Some("hooks.slack.com");
        let stand_in = url.origin() == api.origin() && api.host_str() != Some("slack.com");
        (slack || stand_in).then_some(url)
    }

    /// Replaces the message a button was pressed on with `message`, through the press's
    /// `response_url` (see [`SlackApi::message_url`]).
    pub async fn replace_message(
        &self,
        url: url::Url,
        message: &Value,
    ) -> Result<(), SlackApiError> {
        let response = self
            .http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(message.to_string())
            .send()
            .await
            .map_err(|e| SlackApiError::Unreachable(e.without_url().to_string()))?;
        if response.status() == reqwest::StatusCode::OK {
            Ok(())
        } else {
            Err(SlackApiError::Unreachable(format!(
                "response_url answered HTTP {}",
                response.status().as_u16()
            )))
        }
    }

    fn request(&self, method: &'static str) -> Result<reqwest::RequestBuilder, SlackApiError> {
        let url = self
            .config
            .api_url
            .join(method)
            .map_err(|_| SlackApiError::Malformed(method))?;
        Ok(self
            .http
            .post(url)
            .bearer_auth(self.config.bot_token.expose()))
    }

    async fn call(
        &self,
        method: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, SlackApiError> {
        let unreachable =
            |e: reqwest::Error| SlackApiError::Unreachable(e.without_url().to_string());
        let mut response = request.send().await.map_err(unreachable)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(SlackApiError::Unreachable(format!(
                "{method} answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(SlackApiError::Malformed(method));
            }
            body.extend_from_slice(&chunk);
        }
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|_| SlackApiError::Malformed(method))?;
        if !answer.ok {
            let error = answer
                .error
                .unwrap_or_default()
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(MAX_REASON_CHARS)
                .collect();
            return Err(SlackApiError::Refused { method, error });
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(url: &str) -> SlackApi {
        let config = SlackAppConfig {
            signing_secret: gateway_core::config::Secret::new("s".repeat(32)),
            bot_token: gateway_core::config::Secret::new("xoxb-1"),
            api_url: url::Url::parse(url).unwrap_or_else(|e| panic!("{e}")),
        };
        SlackApi::new(config).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_slacks_response_urls_are_posted_to() {
        let real = api("https://slack.com/api/");
        assert!(
            real.message_url("https://hooks.slack.com/actions/T0/1/abc")
                .is_some()
        );
        for other in [
            "http://hooks.slack.com/actions/T0/1/abc",
            "https://hooks.slack.com.evil.example/actions",
            "https://slack.com/api/chat.postMessage",
            "https://169.254.169.254/latest/meta-data/",
            "not a url",
        ] {
            assert!(real.message_url(other).is_none(), "{other}");
        }
        let long = format!("https://hooks.slack.com/actions/{}", "a".repeat(1024));
        assert!(real.message_url(&long).is_none());
        // A stand-in's own host, for tests.
        let local = api("http://127.0.0.1:9/api/");
        assert!(local.message_url("http://127.0.0.1:9/actions/1").is_some());
        assert!(local.message_url("http://127.0.0.1:10/actions/1").is_none());
    }
}
