//! The Slack Web API methods approving from Slack needs, called with the app's bot token:
//! `users.info` (who pressed a button: their e-mail, and whether they are a full member of
//! the workspace), `views.open` (the dialog that asks for their code), and `auth.test` (for
//! `notify test`: the token works, with the scopes it needs).
//!
//! Slack answers HTTP 200 with `{"ok": false, "error": "…"}` when it refuses; the bot token
//! never appears in an error.

use std::collections::HashMap;
use std::time::{Duration, Instant};

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
    /// The workspace they belong to (`team_id`; another organisation's for someone reached
    /// through Slack Connect).
    pub team_id: Option<String>,
    /// Their Enterprise Grid organisation, if any.
    pub enterprise_id: Option<String>,
    /// Slack calls them a stranger: someone from another organisation the workspace shares
    /// no channel with any more.
    pub stranger: bool,
}

/// The workspace the app's bot token belongs to (`auth.test`): only its members decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// `team_id`.
    pub team_id: String,
    /// `enterprise_id`, on Enterprise Grid: its members in other workspaces of the same
    /// organisation are members too.
    pub enterprise_id: Option<String>,
}

impl Workspace {
    /// Whether `person` belongs to it.
    pub fn has(&self, person: &SlackPerson) -> bool {
        if person.stranger {
            return false;
        }
        let same_team = person.team_id.as_deref() == Some(self.team_id.as_str());
        let same_grid = self.enterprise_id.is_some() && person.enterprise_id == self.enterprise_id;
        same_team || same_grid
    }
}

/// Slack's Web API, as the gateway's app.
#[derive(Clone)]
pub struct SlackApi {
    http: reqwest::Client,
    config: SlackAppConfig,
    /// The bot token's workspace, asked of Slack once.
    workspace: std::sync::Arc<tokio::sync::OnceCell<Workspace>>,
    /// What `users.info` said lately, by user id (see [`PERSON_KEPT`]).
    people: std::sync::Arc<std::sync::Mutex<HashMap<String, (Instant, SlackPerson)>>>,
}

/// How long what Slack said of a person is taken as still true: a press and the dialog's
/// submission a few seconds later ask once, within Slack's three seconds for each, and a
/// member clicking again and again costs the bot token's rate limit one call per period.
const PERSON_KEPT: Duration = Duration::from_secs(30);

/// People remembered at once (then all are forgotten: each is one `users.info` call away).
const PEOPLE_KEPT: usize = 1024;

impl std::fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackApi")
            .field("api_url", &self.config.api_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Every Web API answer: whether Slack did it, and if not, why.
#[derive(Deserialize)]
struct Status {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct UserAnswer {
    #[serde(default)]
    user: Option<User>,
}

#[derive(Deserialize)]
struct AuthAnswer {
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    team_id: Option<String>,
    #[serde(default)]
    enterprise_id: Option<String>,
}

/// What `auth.test` says of the bot token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCheck {
    /// The workspace's name and id.
    pub workspace: String,
    /// Scopes approving from Slack needs that the token lacks.
    pub missing_scopes: Vec<&'static str>,
}

/// The bot token's scopes approving from Slack needs.
pub const NEEDED_SCOPES: &[&str] = &["users:read", "users:read.email"];

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
    is_stranger: bool,
    #[serde(default)]
    team_id: Option<String>,
    #[serde(default)]
    enterprise_user: Option<EnterpriseUser>,
    #[serde(default)]
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct EnterpriseUser {
    #[serde(default)]
    enterprise_id: Option<String>,
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
        Ok(SlackApi {
            http,
            config,
            workspace: Default::default(),
            people: Default::default(),
        })
    }

    /// The app's signing secret, which checks Slack's requests.
    pub fn signing_secret(&self) -> &[u8] {
        self.config.signing_secret.expose().as_bytes()
    }

    /// Who Slack user `user` (`U…`) is: as Slack said in the last [`PERSON_KEPT`], or asked.
    pub async fn person(&self, user: &str) -> Result<SlackPerson, SlackApiError> {
        let kept = self.people.lock().ok().and_then(|people| {
            people
                .get(user)
                .filter(|(at, _)| at.elapsed() < PERSON_KEPT)
                .map(|(_, person)| person.clone())
        });
        if let Some(person) = kept {
            return Ok(person);
        }
        let person = self.ask_person(user).await?;
        if let Ok(mut people) = self.people.lock() {
            if people.len() >= PEOPLE_KEPT {
                people.clear();
            }
            people.insert(user.to_string(), (Instant::now(), person.clone()));
        }
        Ok(person)
    }

    /// `users.info` for `user`.
    async fn ask_person(&self, user: &str) -> Result<SlackPerson, SlackApiError> {
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
        let (_, body) = self.call(METHOD, request).await?;
        let answer: UserAnswer =
            serde_json::from_slice(&body).map_err(|_| SlackApiError::Malformed(METHOD))?;
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
            team_id: user.team_id.filter(|t| !t.is_empty()),
            enterprise_id: user
                .enterprise_user
                .and_then(|e| e.enterprise_id)
                .filter(|e| !e.is_empty()),
            stranger: user.is_stranger,
        })
    }

    /// The workspace the bot token belongs to: asked of Slack (`auth.test`) on first use,
    /// then remembered (a failure is not: the next press asks again).
    pub async fn workspace(&self) -> Result<&Workspace, SlackApiError> {
        const METHOD: &str = "auth.test";
        self.workspace
            .get_or_try_init(|| async {
                let (_, body) = self.call(METHOD, self.request(METHOD)?).await?;
                let answer: AuthAnswer =
                    serde_json::from_slice(&body).map_err(|_| SlackApiError::Malformed(METHOD))?;
                let team_id = answer
                    .team_id
                    .filter(|t| !t.is_empty())
                    .ok_or(SlackApiError::Malformed(METHOD))?;
                Ok(Workspace {
                    team_id,
                    enterprise_id: answer.enterprise_id.filter(|e| !e.is_empty()),
                })
            })
            .await
    }

    /// Checks the bot token with `auth.test`: its workspace, and the scopes it lacks (Slack
    /// lists a token's scopes in the `x-oauth-scopes` header).
    pub async fn check(&self) -> Result<AppCheck, SlackApiError> {
        const METHOD: &str = "auth.test";
        let (headers, body) = self.call(METHOD, self.request(METHOD)?).await?;
        let answer: AuthAnswer =
            serde_json::from_slice(&body).map_err(|_| SlackApiError::Malformed(METHOD))?;
        let scopes = headers
            .get("x-oauth-scopes")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let held: Vec<&str> = scopes.split(',').map(str::trim).collect();
        let shown = |s: Option<String>| -> String {
            s.unwrap_or_default()
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_REASON_CHARS)
                .collect()
        };
        Ok(AppCheck {
            workspace: format!("{} ({})", shown(answer.team), shown(answer.team_id)),
            missing_scopes: NEEDED_SCOPES
                .iter()
                .copied()
                .filter(|needed| !held.contains(needed))
                .collect(),
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

    /// Sends `request` (Web API `method`): the answer's headers and body, once Slack said
    /// `"ok": true`.
    async fn call(
        &self,
        method: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), SlackApiError> {
        let unreachable =
            |e: reqwest::Error| SlackApiError::Unreachable(e.without_url().to_string());
        let mut response = request.send().await.map_err(unreachable)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(SlackApiError::Unreachable(format!(
                "{method} answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(SlackApiError::Malformed(method));
            }
            body.extend_from_slice(&chunk);
        }
        let answer: Status =
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
        Ok((headers, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_of_the_apps_workspace_or_its_grid_and_never_strangers() {
        let person = |team: Option<&str>, grid: Option<&str>, stranger: bool| SlackPerson {
            email: Some("a@example.com".into()),
            deleted: false,
            bot: false,
            guest: false,
            team_id: team.map(str::to_string),
            enterprise_id: grid.map(str::to_string),
            stranger,
        };
        let alone = Workspace {
            team_id: "T0".into(),
            enterprise_id: None,
        };
        assert!(alone.has(&person(Some("T0"), None, false)));
        assert!(
            !alone.has(&person(Some("T9"), None, false)),
            "Slack Connect"
        );
        assert!(
            !alone.has(&person(None, None, false)),
            "no team said: not ours"
        );
        assert!(!alone.has(&person(Some("T0"), None, true)), "a stranger");
        assert!(
            !alone.has(&person(Some("T9"), None, false)),
            "no grid: another team is another team"
        );
        let grid = Workspace {
            team_id: "T0".into(),
            enterprise_id: Some("E1".into()),
        };
        assert!(grid.has(&person(Some("T5"), Some("E1"), false)));
        assert!(!grid.has(&person(Some("T5"), Some("E2"), false)));
        assert!(!grid.has(&person(Some("T5"), None, false)));
    }

    fn api(url: &str) -> SlackApi {
        // The binaries install it at start; unit tests build clients on their own.
        let _ = rustls::crypto::ring::default_provider().install_default();
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
