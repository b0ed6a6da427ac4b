//! Local stand-ins for the services notifications go to: a Slack incoming webhook (HTTP, with
//! Slack's answers: `ok`, `429` with `Retry-After`, `404 no_service`) and the two Web API
//! methods approving from Slack calls (`users.info`, `views.open`: bearer bot token, Slack's
//! `{"ok": …}` answers); and an SMTP server (plain SMTP as RFC 5321 has it, recording each
//! message's envelope and data).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The secret part of the fake webhook's address: never to be seen in logs or messages.
pub const WEBHOOK_SECRET: &str = "B0SECRETwebhookPATH";

/// The Slack app's signing secret and bot token, as the tests configure them.
pub const SIGNING_SECRET: &str = "5ee2c1a0b9d8e7f6a5b4c3d2e1f0a9b8";
pub const BOT_TOKEN: &str = "xoxb-1000-2000-BOTsecretTOKENvalue";

/// One answer the fake Slack gives.
#[derive(Debug, Clone)]
pub struct SlackAnswer {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: &'static str,
}

/// A fake Slack incoming webhook on a free port.
#[derive(Clone)]
pub struct FakeSlack {
    pub url: String,
    /// Its Web API (`SLACK_API_URL`).
    pub api_url: String,
    pub posts: Arc<Mutex<Vec<serde_json::Value>>>,
    /// Workspace members by user id, as `users.info` describes them.
    people: Arc<Mutex<std::collections::HashMap<String, serde_json::Value>>>,
    /// The user ids `users.info` was asked about, in order.
    pub asked_about: Arc<Mutex<Vec<String>>>,
    /// Every `views.open` taken: its trigger id and view.
    pub views: Arc<Mutex<Vec<serde_json::Value>>>,
    /// The bot token's scopes, as `auth.test` lists them (`x-oauth-scopes`).
    pub scopes: Arc<Mutex<String>>,
    /// A button press's `response_url`, and what was posted to it.
    pub response_url: String,
    pub replaced: Arc<Mutex<Vec<serde_json::Value>>>,
    answers: Arc<Mutex<VecDeque<SlackAnswer>>>,
    /// Answered to every post once the scripted ones are used up.
    always: Arc<Mutex<SlackAnswer>>,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let slack = FakeSlack {
            url: format!("http://{addr}/services/T0/{WEBHOOK_SECRET}"),
            api_url: format!("http://{addr}/api/"),
            posts: Arc::default(),
            people: Arc::default(),
            asked_about: Arc::default(),
            views: Arc::default(),
            scopes: Arc::new(Mutex::new(
                "incoming-webhook,users:read,users:read.email".into(),
            )),
            response_url: format!("http://{addr}/actions/T0/1/B0respond"),
            replaced: Arc::default(),
            answers: Arc::default(),
            always: Arc::new(Mutex::new(SlackAnswer {
                status: 200,
                retry_after: None,
                body: "ok",
            })),
        };
        let path = format!("/services/T0/{WEBHOOK_SECRET}");
        let state = slack.clone();
        let app = axum::Router::new().route(
            &path,
            axum::routing::post(move |body: String| {
                let state = state.clone();
                async move {
                    let answer = {
                        let scripted = state.answers.lock().map(|mut a| a.pop_front());
                        match scripted {
                            Ok(Some(answer)) => answer,
                            _ => state
                                .always
                                .lock()
                                .map(|a| a.clone())
                                .unwrap_or_else(|e| panic!("{e}")),
                        }
                    };
                    // Slack takes only JSON it can read.
                    let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
                        return (
                            http::StatusCode::BAD_REQUEST,
                            http::HeaderMap::new(),
                            "invalid_payload",
                        );
                    };
                    let mut headers = http::HeaderMap::new();
                    if let Some(secs) = answer.retry_after {
                        headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
                    }
                    if answer.status == 200
                        && let Ok(mut posts) = state.posts.lock()
                    {
                        posts.push(json);
                    }
                    let status = http::StatusCode::from_u16(answer.status)
                        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                    (status, headers, answer.body)
                }
            }),
        );
        let people = slack.people.clone();
        let asked_about = slack.asked_about.clone();
        let views = slack.views.clone();
        let replaced = slack.replaced.clone();
        let scopes = slack.scopes.clone();
        let app = app
            .route(
                "/api/auth.test",
                axum::routing::post(move |headers: http::HeaderMap| {
                    let scopes = scopes.clone();
                    async move {
                        let scopes = scopes.lock().map(|s| s.clone()).unwrap_or_default();
                        let answer = refused_auth(&headers).unwrap_or_else(|| {
                            axum::Json(serde_json::json!({
                                "ok": true, "url": "https://example.slack.com/",
                                "team": "Example", "team_id": "T0", "user": "rack-gateway",
                                "user_id": "U0BOT", "bot_id": "B0",
                            }))
                        });
                        ([("x-oauth-scopes", scopes)], answer)
                    }
                }),
            )
            .route(
                "/actions/T0/1/B0respond",
                axum::routing::post(move |body: String| {
                    let replaced = replaced.clone();
                    async move {
                        let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
                            return (http::StatusCode::BAD_REQUEST, "invalid_payload");
                        };
                        if let Ok(mut replaced) = replaced.lock() {
                            replaced.push(json);
                        }
                        (http::StatusCode::OK, "ok")
                    }
                }),
            )
            .route(
                "/api/users.info",
                axum::routing::post(move |headers: http::HeaderMap, body: String| {
                    let people = people.clone();
                    let asked_about = asked_about.clone();
                    async move {
                        if let Some(refused) = refused_auth(&headers) {
                            return refused;
                        }
                        let user = url::form_urlencoded::parse(body.as_bytes())
                            .find(|(k, _)| k == "user")
                            .map(|(_, v)| v.into_owned())
                            .unwrap_or_default();
                        if let Ok(mut asked) = asked_about.lock() {
                            asked.push(user.clone());
                        }
                        let found = people.lock().ok().and_then(|p| p.get(&user).cloned());
                        axum::Json(match found {
                            Some(member) => serde_json::json!({ "ok": true, "user": member }),
                            None => serde_json::json!({ "ok": false, "error": "user_not_found" }),
                        })
                    }
                }),
            )
            .route(
                "/api/views.open",
                axum::routing::post(move |headers: http::HeaderMap, body: String| {
                    let views = views.clone();
                    async move {
                        if let Some(refused) = refused_auth(&headers) {
                            return refused;
                        }
                        let json = serde_json::from_str::<serde_json::Value>(&body).ok();
                        let ok = json.as_ref().is_some_and(|j| {
                            j["trigger_id"].is_string() && j["view"]["type"] == "modal"
                        });
                        if !ok {
                            return axum::Json(
                                serde_json::json!({ "ok": false, "error": "invalid_arguments" }),
                            );
                        }
                        if let (Some(json), Ok(mut views)) = (json, views.lock()) {
                            views.push(json);
                        }
                        axum::Json(serde_json::json!({ "ok": true, "view": { "id": "V0" } }))
                    }
                }),
            );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        slack
    }

    /// A member of the workspace: `users.info` describes `id` with `email` (`None`: the app
    /// may not see e-mails) and the flags in `extra` (`is_restricted`, `deleted`, …).
    pub fn add_person(&self, id: &str, email: Option<&str>, extra: serde_json::Value) {
        let mut member = serde_json::json!({
            "id": id, "team_id": "T0", "name": id.to_lowercase(), "deleted": false,
            "is_bot": false, "is_restricted": false, "is_ultra_restricted": false,
            "profile": { "real_name": id },
        });
        if let Some(email) = email {
            member["profile"]["email"] = email.into();
        }
        if let (Some(map), serde_json::Value::Object(extra)) = (member.as_object_mut(), extra) {
            map.extend(extra);
        }
        if let Ok(mut people) = self.people.lock() {
            people.insert(id.to_string(), member);
        }
    }

    /// The messages replaced through `response_url` so far.
    pub fn replacements(&self) -> Vec<serde_json::Value> {
        self.replaced.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The views opened so far.
    pub fn opened(&self) -> Vec<serde_json::Value> {
        self.views.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The next posts get these answers, in order.
    pub fn answer_next(&self, answers: &[SlackAnswer]) {
        if let Ok(mut queue) = self.answers.lock() {
            queue.extend(answers.iter().cloned());
        }
    }

    /// Every later post gets `answer`.
    pub fn answer_always(&self, answer: SlackAnswer) {
        if let Ok(mut always) = self.always.lock() {
            *always = answer;
        }
    }

    /// The text of every message taken so far (each section's text, joined).
    pub fn texts(&self) -> Vec<String> {
        let posts = self.posts.lock().map(|p| p.clone()).unwrap_or_default();
        posts.iter().map(|p| p.to_string()).collect()
    }
}

/// Slack's answer to a Web API call without the bot token.
fn refused_auth(headers: &http::HeaderMap) -> Option<axum::Json<serde_json::Value>> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    (bearer != Some(&format!("Bearer {BOT_TOKEN}")))
        .then(|| axum::Json(serde_json::json!({ "ok": false, "error": "invalid_auth" })))
}

/// One message the fake SMTP server took.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body, quoted-printable soft breaks undone.
    pub data: String,
}

/// A fake SMTP server on a free port.
#[derive(Clone)]
pub struct FakeSmtp {
    pub url: String,
    pub mails: Arc<Mutex<Vec<Mail>>>,
}

impl FakeSmtp {
    pub async fn start() -> FakeSmtp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let smtp = FakeSmtp {
            url: format!("smtp://{addr}"),
            mails: Arc::default(),
        };
        let mails = smtp.mails.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let mails = mails.clone();
                tokio::spawn(async move {
                    let _ = session(socket, mails).await;
                });
            }
        });
        smtp
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

async fn session(
    socket: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 fake-smtp ESMTP ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250-fake-smtp\r\n250 8BITMIME\r\n"
        } else if let Some(rest) = upper.strip_prefix("MAIL FROM:") {
            from = address(&command[command.len() - rest.len()..]);
            to.clear();
            b"250 2.1.0 OK\r\n"
        } else if let Some(rest) = upper.strip_prefix("RCPT TO:") {
            to.push(address(&command[command.len() - rest.len()..]));
            b"250 2.1.5 OK\r\n"
        } else if upper == "DATA" {
            write
                .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                .await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(
                    line.strip_prefix('.')
                        .filter(|_| line.starts_with(".."))
                        .unwrap_or(&line),
                );
            }
            let data = data.replace("=\r\n", "").replace("=3D", "=");
            if let Ok(mut mails) = mails.lock() {
                mails.push(Mail {
                    from: from.clone(),
                    to: to.clone(),
                    data,
                });
            }
            b"250 2.0.0 queued\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            b"250 2.0.0 OK\r\n"
        } else {
            b"502 5.5.2 command not recognised\r\n"
        };
        write.write_all(reply).await?;
    }
}

/// The address inside `<…>` (and before any parameters).
fn address(arg: &str) -> String {
    let arg = arg.trim();
    match (arg.find('<'), arg.find('>')) {
        (Some(open), Some(close)) if open < close => arg[open + 1..close].to_string(),
        _ => arg
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}
