//! The rack in the browser: `GET /rack` (the rack's status, its apps and instances) and
//! `GET /apps/{app}` (an app with its services, processes, builds and releases), read-only.
//!
//! Every read goes through the rack proxy in-process, with the browser session's own
//! credentials, exactly as `convox apps` through the gateway would: the same permission check,
//! the same audit events (request before the rack is asked, outcome after), the same masking
//! of the rack's token and of environment values. A section the person's role does not grant
//! is not asked for at all (no refusal on the trail for looking at a page); it says which
//! permission would show it.

use askama::Template;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::Value;

use super::{message, render, signed_in_page};
use crate::app::{AppState, Peer};
use crate::identity::Principal;
use crate::proxy::{self, PROXY_PREFIX};

/// The most of one rack answer a page reads (a release list carries manifests).
const ANSWER_LIMIT: usize = 8 * 1024 * 1024;
/// Builds and releases shown on an app's page (newest first, as the rack lists them).
const RECENT: usize = 20;

/// One section of a page: its rows, or why it is not shown.
enum Section<T> {
    Shown(Vec<T>),
    /// The role lacks the permission (named).
    NotGranted(String),
    /// The rack has no such thing (`404`; the message as the CLI would show it).
    NotFound(String),
    /// The gateway or the rack answered with another error (the message as the CLI would
    /// show it).
    Failed(String),
}

impl<T> Section<T> {
    /// The rows, when shown.
    fn rows(&self) -> Option<&Vec<T>> {
        match self {
            Section::Shown(rows) => Some(rows),
            _ => None,
        }
    }

    /// Why it is not shown, if it is not.
    fn why_not(&self) -> Option<String> {
        match self {
            Section::Shown(_) => None,
            Section::NotGranted(permission) => {
                Some(format!("Not shown: your role does not grant {permission}."))
            }
            Section::NotFound(why) | Section::Failed(why) => {
                Some(format!("Could not be read: {why}"))
            }
        }
    }
}

/// The fields that are times (RFC 3339, as the rack writes them): shown as the gateway's other
/// pages show times, and empty for Go's zero time (a build not ended yet).
const TIMES: &[&str] = &["started", "ended", "created"];

/// A field of a rack object as text (numbers and booleans too), empty when absent.
fn field(object: &Value, name: &str) -> String {
    if TIMES.contains(&name)
        && let Some(text) = object.get(name).and_then(Value::as_str)
    {
        if text.starts_with("0001-01-01") {
            return String::new();
        }
        if let Some(at) = crate::audit::anchor::parse_time(text)
            && let Ok(since) = at.duration_since(std::time::UNIX_EPOCH)
        {
            return super::time(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
        }
    }
    let text = match object.get(name) {
        Some(Value::Array(items)) => items
            .iter()
            .map(scalar)
            .filter(|item| !item.is_empty())
            .collect::<Vec<_>>()
            .join(", "),
        Some(value) => scalar(value),
        None => String::new(),
    };
    gateway_core::redact::clip(text.chars().map(gateway_core::text::shown).collect(), 200)
}

/// A value as text: a string, number or boolean as itself, a service's port as
/// `balancer:container`, anything else as nothing.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Object(port) => match (port.get("balancer"), port.get("container")) {
            (Some(Value::Number(b)), Some(Value::Number(c))) => format!("{b}:{c}"),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

/// The rack's answer to `GET {path}?{query}` for this browser session, read through the proxy
/// as if the session's credentials had been sent there; not asked for at all when the role
/// lacks the route's permission.
async fn read(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    (principal, token): (&Principal, &str),
    (path, query): (&str, Option<&str>),
) -> Section<Value> {
    if let Ok(classified) = proxy::classify(&Method::GET, path)
        && !principal.permissions.allows(&classified.permission)
    {
        return Section::NotGranted(classified.permission);
    }
    let mut request = http::Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    let target = match query {
        Some(query) => format!("{PROXY_PREFIX}{path}?{query}"),
        None => format!("{PROXY_PREFIX}{path}"),
    };
    let Ok(uri) = http::Uri::try_from(target) else {
        return Section::Failed("not a rack path".into());
    };
    *request.uri_mut() = uri;
    let Ok(bearer) = HeaderValue::try_from(format!("Bearer {token}")) else {
        return Section::Failed("the session's credentials cannot be sent".into());
    };
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
    // The browser's own, so the trail says what read the rack.
    if let Some(agent) = headers.get(header::USER_AGENT) {
        request
            .headers_mut()
            .insert(header::USER_AGENT, agent.clone());
    }
    let response = proxy::handle(State(state.clone()), peer, request).await;
    let status = response.status();
    let mut body = response.into_body();
    let read = proxy::held::read(&mut body, ANSWER_LIMIT, Some(&proxy::held::SHARED)).await;
    let (body, _held) = match read {
        Ok(read) => read,
        Err(proxy::held::NotRead::Busy(busy)) => return Section::Failed(busy.to_string()),
        Err(_) => return Section::Failed("the rack's answer is too large to show".into()),
    };
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        let said = answer
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        let said =
            gateway_core::redact::clip(said.chars().map(gateway_core::text::shown).collect(), 300);
        let why = format!("{} ({said})", status.as_u16());
        return if status == StatusCode::NOT_FOUND {
            Section::NotFound(why)
        } else {
            Section::Failed(why)
        };
    }
    Section::Shown(vec![answer])
}

/// [`read`] of a list: its items, at most `most`.
async fn read_list(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    who: (&Principal, &str),
    target: (&str, Option<&str>),
    most: usize,
) -> Section<Value> {
    match read(state, peer, headers, who, target).await {
        Section::Shown(mut answer) => match answer.pop() {
            Some(Value::Array(items)) => Section::Shown(items.into_iter().take(most).collect()),
            _ => Section::Failed("the rack's answer is not a list".into()),
        },
        other => other,
    }
}

/// A row of a table: its cells, in the template's order.
type Row = Vec<String>;

/// `items` as rows of `fields`.
fn rows(section: Section<Value>, fields: &[&str]) -> Section<Row> {
    match section {
        Section::Shown(items) => Section::Shown(
            items
                .iter()
                .map(|item| fields.iter().map(|f| field(item, f)).collect())
                .collect(),
        ),
        Section::NotGranted(p) => Section::NotGranted(p),
        Section::NotFound(why) => Section::NotFound(why),
        Section::Failed(why) => Section::Failed(why),
    }
}

#[derive(Template)]
#[template(path = "rack.html")]
struct RackPage {
    csrf: String,
    nav: super::Nav,
    /// Name, status, version, provider, region, instance count and type, when shown.
    system: Option<Vec<(&'static str, String)>>,
    system_not_shown: Option<String>,
    apps: Option<Vec<Row>>,
    apps_not_shown: Option<String>,
    instances: Option<Vec<Row>>,
    instances_not_shown: Option<String>,
}

/// `GET /rack`: the rack's status, its apps and its instances.
pub async fn page(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    let (principal, token) = match signed_in_page(&state, &headers, "/rack").await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    let who = (&principal, token.as_str());
    let system = read(&state, peer, &headers, who, ("/system", None)).await;
    let labels = [
        ("Name", "name"),
        ("Status", "status"),
        ("Version", "version"),
        ("Provider", "provider"),
        ("Region", "region"),
        ("Instances", "count"),
        ("Type", "type"),
    ];
    let shown_system = system.rows().and_then(|s| s.first()).map(|s| {
        labels
            .iter()
            .map(|(label, name)| (*label, field(s, name)))
            .collect()
    });
    let apps = rows(
        read_list(&state, peer, &headers, who, ("/apps", None), 1000).await,
        &["name", "status", "release", "generation"],
    );
    let instances = rows(
        read_list(&state, peer, &headers, who, ("/instances", None), 1000).await,
        &[
            "id",
            "status",
            "started",
            "processes",
            "private-ip",
            "public-ip",
        ],
    );
    render(
        StatusCode::OK,
        &RackPage {
            csrf: super::cookies::csrf_token(&token),
            nav: super::Nav::of(&principal),
            system: shown_system,
            system_not_shown: system.why_not(),
            apps: apps.rows().cloned(),
            apps_not_shown: apps.why_not(),
            instances: instances.rows().cloned(),
            instances_not_shown: instances.why_not(),
        },
    )
}

#[derive(Template)]
#[template(path = "app.html")]
struct AppPage {
    csrf: String,
    nav: super::Nav,
    name: String,
    summary: Option<Vec<(&'static str, String)>>,
    summary_not_shown: Option<String>,
    services: Option<Vec<Row>>,
    services_not_shown: Option<String>,
    processes: Option<Vec<Row>>,
    processes_not_shown: Option<String>,
    builds: Option<Vec<Row>>,
    builds_not_shown: Option<String>,
    releases: Option<Vec<Row>>,
    releases_not_shown: Option<String>,
}

/// `GET /apps/{app}`: an app, its services and processes, and its recent builds and releases.
pub async fn app(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    super::PagePath(app): super::PagePath<String>,
) -> Response {
    if !crate::approvals::input::is_app_name(&app) {
        return message(
            StatusCode::NOT_FOUND,
            "No such app",
            "That is not the name of an app.",
        );
    }
    let (principal, token) = match signed_in_page(&state, &headers, &format!("/apps/{app}")).await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    let who = (&principal, token.as_str());
    let summary = read(&state, peer, &headers, who, (&format!("/apps/{app}"), None)).await;
    if matches!(summary, Section::NotFound(_)) {
        return message(
            StatusCode::NOT_FOUND,
            "No such app",
            &format!("The rack has no app {app}."),
        );
    }
    let labels = [
        ("Status", "status"),
        ("Release", "release"),
        ("Generation", "generation"),
        ("Locked", "locked"),
    ];
    let shown_summary = summary.rows().and_then(|s| s.first()).map(|s| {
        labels
            .iter()
            .map(|(label, name)| (*label, field(s, name)))
            .collect()
    });
    let services = rows(
        read_list(
            &state,
            peer,
            &headers,
            who,
            (&format!("/apps/{app}/services"), None),
            1000,
        )
        .await,
        &["name", "count", "domain", "ports"],
    );
    let processes = rows(
        read_list(
            &state,
            peer,
            &headers,
            who,
            (&format!("/apps/{app}/processes"), None),
            1000,
        )
        .await,
        &["id", "name", "status", "release", "command", "started"],
    );
    let builds = rows(
        read_list(
            &state,
            peer,
            &headers,
            who,
            (
                &format!("/apps/{app}/builds"),
                Some(&format!("limit={RECENT}")),
            ),
            RECENT,
        )
        .await,
        &["id", "status", "release", "description", "started", "ended"],
    );
    let releases = rows(
        read_list(
            &state,
            peer,
            &headers,
            who,
            (
                &format!("/apps/{app}/releases"),
                Some(&format!("limit={RECENT}")),
            ),
            RECENT,
        )
        .await,
        &["id", "build", "description", "created"],
    );
    render(
        StatusCode::OK,
        &AppPage {
            csrf: super::cookies::csrf_token(&token),
            nav: super::Nav::of(&principal),
            name: app,
            summary: shown_summary,
            summary_not_shown: summary.why_not(),
            services: services.rows().cloned(),
            services_not_shown: services.why_not(),
            processes: processes.rows().cloned(),
            processes_not_shown: processes.why_not(),
            builds: builds.rows().cloned(),
            builds_not_shown: builds.why_not(),
            releases: releases.rows().cloned(),
            releases_not_shown: releases.why_not(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_text_and_times_are_shown_as_elsewhere() {
        let build = json!({
            "id": "B1", "count": 3, "locked": false,
            "started": "2026-12-04T19:02:27.467169542Z",
            "ended": "0001-01-01T00:00:00Z",
            "description": "a\u{1b}[31mred",
        });
        assert_eq!(field(&build, "id"), "B1");
        assert_eq!(field(&build, "count"), "3");
        assert_eq!(field(&build, "locked"), "false");
        assert_eq!(field(&build, "started"), "2026-12-04 19:02:27");
        assert_eq!(field(&build, "ended"), "");
        assert_eq!(field(&build, "missing"), "");
        assert!(!field(&build, "description").contains('\u{1b}'));
        let service = json!({ "ports": [{ "balancer": 443, "container": 3000 }, { "x": 1 }] });
        assert_eq!(field(&service, "ports"), "443:3000");
        let process = json!({ "ports": ["80", 81] });
        assert_eq!(field(&process, "ports"), "80, 81");
    }
}
