//! Every gateway API route × every built-in role, through the real gateway, with an API token
//! of each role: a denied call answers 403 `permission_denied` (or, where the route hides what
//! the caller may not see, 404), changes nothing in the store and is audited as a refusal; an
//! allowed call is never refused for its permission and answers as the table says for a
//! harmless sample input. The expectations are written out here, independently of the role
//! definitions, so a policy change must change this table too. It also reads `build_app`'s
//! source: a `/api/v1/` route that is neither in the table nor in the public list fails
//! [`every_api_route_is_in_the_table`], and so does a row whose route is gone. The proxied rack
//! routes are `rbac_matrix.rs`'s.

use std::collections::{BTreeMap, BTreeSet};

use gateway::audit::Decision;
use gateway::store::Store;
use serde_json::{Value, json};

use crate::both_backends;
use crate::kit::{Gateway, client, eventually, request_id, role_token, store};
use crate::upstream::TestRack;

/// The built-in roles, admin last: on the one row where an allowed call changes something
/// (an admin revoking someone's session), nobody calls after it.
const ROLES: [&str; 5] = ["viewer", "ops", "deployer", "cicd", "admin"];

const ALL: &[&str] = &["viewer", "ops", "deployer", "cicd", "admin"];
const ADMIN: &[&str] = &["admin"];
/// Who may ask for a deploy approval.
const REQUESTERS: &[&str] = &["deployer", "cicd", "admin"];

/// Someone who is signed in (a session of theirs exists) and is none of the callers.
const SOMEONE: &str = "someone@example.com";
/// Nobody: no such user.
const NOBODY: &str = "nobody@example.com";

/// The source of the router, whose `/api/v1/` routes the table must cover.
const APP_RS: &str = include_str!("../../../gateway/src/app.rs");

/// What an allowed call answers with the row's sample input: a status, and the error code
/// when it is an error.
type Answer = (u16, Option<&'static str>);

const OK: Answer = (200, None);
const BAD_REQUEST: Answer = (400, Some("bad_request"));
const NO_SUCH: Answer = (404, Some("not_found"));
/// Refused by design after the permission check: deciding a deploy request takes a signed-in
/// person, never an API token (not even an admin's).
const NOT_A_PERSON: Answer = (403, Some("not_yours"));

/// How a role without the permission is refused.
#[derive(Debug, Clone, Copy)]
enum Denied {
    /// `403 permission_denied`, audited as the refusal of the row's permission (the first,
    /// when the row names alternatives with " or ").
    Forbidden,
    /// `404 not_found`, as if there were nothing (ids cannot be probed), audited as the
    /// refusal of this action.
    Hidden(&'static str),
}

/// One (method, route) of the gateway's API.
struct Row {
    method: &'static str,
    /// As registered in `build_app`.
    route: &'static str,
    /// The path called: `{session}` is someone else's session, `{approval}` a pending deploy
    /// request the cicd token asked for.
    sample: &'static str,
    body: Option<Value>,
    /// What the handler checks.
    permission: &'static str,
    /// The roles that hold it.
    allowed: &'static [&'static str],
    /// What they get with the sample.
    answer: Answer,
    /// What the others get.
    denied: Denied,
}

/// A row whose other roles are refused with 403, for a call without a body.
fn row(
    method: &'static str,
    route: &'static str,
    sample: &'static str,
    permission: &'static str,
    allowed: &'static [&'static str],
    answer: Answer,
) -> Row {
    Row {
        method,
        route,
        sample,
        body: None,
        permission,
        allowed,
        answer,
        denied: Denied::Forbidden,
    }
}

impl Row {
    /// Sent with this JSON body.
    fn body(mut self, body: Value) -> Row {
        self.body = Some(body);
        self
    }

    /// Refused as if there were nothing, audited as a refusal of `action`.
    fn hidden(mut self, action: &'static str) -> Row {
        self.denied = Denied::Hidden(action);
        self
    }
}

/// The expectation table. Samples never change what a later row depends on: targets that do
/// not exist, bodies refused after the permission check, reads.
fn rows() -> Vec<Row> {
    vec![
        // Sessions: your own need nothing (an API token has none); anyone else's need
        // gateway:sessions:manage.
        row(
            "GET",
            "/api/v1/sessions",
            "/api/v1/sessions?email=someone@example.com",
            "gateway:sessions:manage",
            ADMIN,
            OK,
        ),
        row(
            "POST",
            "/api/v1/sessions/revoke-all",
            "/api/v1/sessions/revoke-all?email=nobody@example.com",
            "gateway:sessions:manage",
            ADMIN,
            NO_SUCH,
        ),
        // Someone else's session looks like none without the permission; the admin's call
        // revokes it (admin calls last).
        row(
            "DELETE",
            "/api/v1/sessions/{id}",
            "/api/v1/sessions/{session}",
            "gateway:sessions:manage",
            ADMIN,
            OK,
        )
        .hidden("gateway:sessions:revoke"),
        // Users.
        row(
            "GET",
            "/api/v1/users",
            "/api/v1/users",
            "gateway:users:list",
            ADMIN,
            OK,
        ),
        row(
            "POST",
            "/api/v1/users",
            "/api/v1/users",
            "gateway:users:create",
            ADMIN,
            BAD_REQUEST,
        )
        .body(json!({ "email": "not-an-email", "role": "viewer" })),
        row(
            "PUT",
            "/api/v1/users/{email}/role",
            "/api/v1/users/nobody@example.com/role",
            "gateway:users:update",
            ADMIN,
            NO_SUCH,
        )
        .body(json!({ "role": "viewer" })),
        row(
            "POST",
            "/api/v1/users/{email}/lock",
            "/api/v1/users/nobody@example.com/lock",
            "gateway:users:lock",
            ADMIN,
            NO_SUCH,
        ),
        row(
            "POST",
            "/api/v1/users/{email}/unlock",
            "/api/v1/users/nobody@example.com/unlock",
            "gateway:users:unlock",
            ADMIN,
            NO_SUCH,
        ),
        row(
            "DELETE",
            "/api/v1/users/{email}/mfa",
            "/api/v1/users/nobody@example.com/mfa",
            "gateway:mfa:reset",
            ADMIN,
            NO_SUCH,
        ),
        row(
            "DELETE",
            "/api/v1/users/{email}/trusted-browsers",
            "/api/v1/users/nobody@example.com/trusted-browsers",
            "gateway:sessions:manage",
            ADMIN,
            NO_SUCH,
        ),
        // The audit trail.
        row(
            "GET",
            "/api/v1/audit/events",
            "/api/v1/audit/events",
            "gateway:audit:read",
            ADMIN,
            OK,
        ),
        // The gateway's effective settings (secrets only as set or not).
        row(
            "GET",
            "/api/v1/settings",
            "/api/v1/settings",
            "gateway:settings:read",
            ADMIN,
            OK,
        ),
        // API tokens.
        row(
            "GET",
            "/api/v1/tokens",
            "/api/v1/tokens",
            "gateway:tokens:list",
            ADMIN,
            OK,
        ),
        row(
            "POST",
            "/api/v1/tokens",
            "/api/v1/tokens",
            "gateway:tokens:create",
            ADMIN,
            BAD_REQUEST,
        )
        .body(json!({ "name": "matrix-probe", "role": "viewer", "expires_in": "soon" })),
        row(
            "DELETE",
            "/api/v1/tokens/{token}",
            "/api/v1/tokens/no-such-token",
            "gateway:tokens:revoke",
            ADMIN,
            NO_SUCH,
        ),
        // Roles.
        row(
            "GET",
            "/api/v1/roles",
            "/api/v1/roles",
            "gateway:roles:list",
            ADMIN,
            OK,
        ),
        row(
            "POST",
            "/api/v1/roles",
            "/api/v1/roles",
            "gateway:roles:create",
            ADMIN,
            BAD_REQUEST,
        )
        .body(json!({ "name": "Not A Name", "permissions": ["convox:apps:list"] })),
        row(
            "PUT",
            "/api/v1/roles/{name}",
            "/api/v1/roles/no-such-role",
            "gateway:roles:update",
            ADMIN,
            NO_SUCH,
        )
        .body(json!({ "permissions": ["convox:apps:list"] })),
        row(
            "DELETE",
            "/api/v1/roles/{name}",
            "/api/v1/roles/no-such-role",
            "gateway:roles:delete",
            ADMIN,
            NO_SUCH,
        ),
        // Per-app rules: everyone reads them (they name variables and commands, never values).
        row(
            "GET",
            "/api/v1/app-rules",
            "/api/v1/app-rules",
            "gateway:app-rules:read",
            ALL,
            OK,
        ),
        row(
            "GET",
            "/api/v1/app-rules/{app}",
            "/api/v1/app-rules/web",
            "gateway:app-rules:read",
            ALL,
            OK,
        ),
        row(
            "PUT",
            "/api/v1/app-rules/{app}",
            "/api/v1/app-rules/web",
            "gateway:app-rules:write",
            ADMIN,
            BAD_REQUEST,
        )
        .body(json!({ "secret_env": ["A=B"] })),
        row(
            "DELETE",
            "/api/v1/app-rules/{app}",
            "/api/v1/app-rules/web",
            "gateway:app-rules:write",
            ADMIN,
            NO_SUCH,
        ),
        // Deploy approvals: listing is for holders of …:list (everyone's) or …:request (their
        // own), so every built-in role; deciding needs …:approve (reject too), then a person.
        row(
            "GET",
            "/api/v1/deploy-approvals",
            "/api/v1/deploy-approvals",
            "gateway:deploy-approvals:list or gateway:deploy-approvals:request",
            ALL,
            OK,
        ),
        row(
            "POST",
            "/api/v1/deploy-approvals",
            "/api/v1/deploy-approvals",
            "gateway:deploy-approvals:request",
            REQUESTERS,
            BAD_REQUEST,
        )
        .body(json!({ "app": "web", "git_commit": "1f0e2d3" })),
        row(
            "GET",
            "/api/v1/deploy-approvals/{id}",
            "/api/v1/deploy-approvals/{approval}",
            "gateway:deploy-approvals:list or gateway:deploy-approvals:request",
            ALL,
            OK,
        ),
        row(
            "POST",
            "/api/v1/deploy-approvals/{id}/approve",
            "/api/v1/deploy-approvals/{approval}/approve",
            "gateway:deploy-approvals:approve",
            ADMIN,
            NOT_A_PERSON,
        )
        .body(json!({})),
        row(
            "POST",
            "/api/v1/deploy-approvals/{id}/reject",
            "/api/v1/deploy-approvals/{approval}/reject",
            "gateway:deploy-approvals:approve",
            ADMIN,
            NOT_A_PERSON,
        )
        .body(json!({})),
    ]
}

/// Routes under `/api/v1/` that check no permission, and why.
const PUBLIC: &[(&str, &str, &str)] = &[
    ("GET", "/api/v1/health", "liveness: no credentials"),
    ("GET", "/api/v1/health/ready", "readiness: no credentials"),
    (
        "GET",
        "/api/v1/info",
        "who the caller is: any credential (checked below for every role)",
    ),
    ("GET", "/api/v1/auth/web/login", "starts a browser sign-in"),
    (
        "POST",
        "/api/v1/auth/web/logout",
        "ends the caller's own browser session",
    ),
    (
        "GET",
        "/api/v1/auth/callback",
        "the identity provider's redirect back (OIDC_CALLBACK_PATH)",
    ),
    (
        "POST",
        "/api/v1/auth/logout",
        "ends the caller's own CLI session",
    ),
    ("POST", "/api/v1/auth/cli/start", "starts a CLI sign-in"),
    (
        "GET",
        "/api/v1/auth/cli/browser",
        "a CLI sign-in's browser leg",
    ),
    (
        "GET",
        "/api/v1/auth/cli/browser/confirm",
        "a CLI sign-in's browser confirmation",
    ),
    (
        "POST",
        "/api/v1/auth/cli/poll",
        "the CLI collects its session",
    ),
    (
        "GET",
        "/api/v1/auth/mfa",
        "a sign-in's second step (MFA_PATH)",
    ),
    (
        "POST",
        "/api/v1/auth/mfa",
        "a sign-in's second step (MFA_PATH)",
    ),
    (
        "POST",
        "/api/v1/auth/mfa/verify",
        "a step-up code for the caller's own session",
    ),
    (
        "POST",
        "/api/v1/auth/mfa/key/start",
        "a step-up with a security key, for the caller's own session",
    ),
    (
        "POST",
        "/api/v1/auth/mfa/key/poll",
        "a step-up with a security key, for the caller's own session",
    ),
    (
        "POST",
        "/api/v1/slack/interactions",
        "Slack's signed callback: the Slack user's own role must hold \
         gateway:deploy-approvals:approve (slack_approvals.rs)",
    ),
];

/// Routes registered with a constant for a path, by the constant's value.
fn constant_path(expr: &str) -> Option<&'static str> {
    match expr {
        "crate::config::OIDC_CALLBACK_PATH" => Some(gateway::config::OIDC_CALLBACK_PATH),
        "api::auth::MFA_PATH" => Some(gateway::api::auth::MFA_PATH),
        "crate::slack::INTERACTIONS_PATH" => Some(gateway::slack::INTERACTIONS_PATH),
        _ => None,
    }
}

/// The characters of `text` outside its string literals, with their byte offsets.
fn outside_strings(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let (mut in_string, mut escaped) = (false, false);
    text.char_indices().filter(move |&(_, ch)| {
        if in_string {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            return false;
        }
        in_string = ch == '"';
        !in_string
    })
}

/// Where the `(` at `open` closes, skipping string literals.
fn closing(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, ch) in outside_strings(&text[open..]) {
        match ch {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `text` split at its top-level commas.
fn top_level_args(text: &str) -> Vec<&str> {
    let mut args = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, ch) in outside_strings(text) {
        match ch {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                args.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = text[start..].trim();
    if !last.is_empty() {
        args.push(last);
    }
    args
}

/// The functions called at the top level of a method router: `get(a).post(b)` → get, post.
fn methods_of(handler: &str) -> Vec<String> {
    let mut methods = Vec::new();
    let mut depth = 0i32;
    let mut ident = String::new();
    for ch in handler.chars() {
        match ch {
            '(' => {
                if depth == 0 && !ident.is_empty() {
                    let name = ident.rsplit("::").next().unwrap_or(&ident);
                    methods.push(name.to_ascii_uppercase());
                }
                ident.clear();
                depth += 1;
            }
            ')' => depth -= 1,
            c if depth == 0 && (c.is_alphanumeric() || c == '_' || c == ':') => ident.push(c),
            _ if depth == 0 => ident.clear(),
            _ => {}
        }
    }
    methods
}

/// Every (method, path) `build_app` registers under `/api/v1/`, but the proxy's (see
/// `rbac_matrix.rs`); or what could not be read.
fn registered_api_routes() -> Result<BTreeSet<(String, String)>, Vec<String>> {
    let Some(start) = APP_RS.find("pub fn build_app(") else {
        return Err(vec![
            "no `pub fn build_app(` in crates/gateway/src/app.rs".into(),
        ]);
    };
    let end = APP_RS[start..]
        .find("\n}\n")
        .map_or(APP_RS.len(), |e| start + e);
    let body = &APP_RS[start..end];
    let mut routes = BTreeSet::new();
    let mut problems = Vec::new();
    let mut at = 0;
    while let Some(found) = body[at..].find(".route(") {
        let open = at + found + ".route".len();
        let Some(close) = closing(body, open) else {
            problems.push(format!("unbalanced `.route(` at byte {open} of build_app"));
            break;
        };
        at = close;
        let args = top_level_args(&body[open + 1..close]);
        let [path_expr, handler] = args[..] else {
            problems.push(format!(
                "`.route({})`: not (path, handler)",
                args.join(", ")
            ));
            continue;
        };
        let path = if let Some(lit) = path_expr
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
        {
            lit.to_string()
        } else if path_expr.contains("PROXY_PREFIX") {
            // The rack proxy: every rack route × role is rbac_matrix.rs's.
            continue;
        } else if let Some(value) = constant_path(path_expr) {
            value.to_string()
        } else {
            problems.push(format!(
                "`.route({path_expr}, …)`: a path given by an expression this test does not \
                 know; add it to `constant_path` in api_matrix.rs"
            ));
            continue;
        };
        if !path.starts_with("/api/v1/") {
            continue;
        }
        let methods = methods_of(handler);
        if methods.is_empty() {
            problems.push(format!("`{path}`: no method found in `{handler}`"));
        }
        for method in methods {
            routes.insert((method, path.clone()));
        }
    }
    if routes.is_empty() {
        problems.push("no `/api/v1/` route found in build_app".into());
    }
    if problems.is_empty() {
        Ok(routes)
    } else {
        Err(problems)
    }
}

#[test]
fn every_api_route_is_in_the_table() {
    let registered = registered_api_routes().unwrap_or_else(|problems| {
        panic!(
            "reading build_app in crates/gateway/src/app.rs:\n{}",
            problems.join("\n")
        )
    });
    let mut known: BTreeMap<(String, String), &str> = BTreeMap::new();
    let mut problems = Vec::new();
    let table = rows();
    let entries = table
        .iter()
        .map(|r| (r.method, r.route, "the expectation table"))
        .chain(PUBLIC.iter().map(|(m, p, _)| (*m, *p, "the public list")));
    for (method, path, list) in entries {
        let key = (method.to_string(), path.to_string());
        if let Some(other) = known.insert(key, list) {
            problems.push(format!(
                "{method} {path} is twice: in {other} and in {list}"
            ));
        }
    }
    for (method, path) in &registered {
        if !known.contains_key(&(method.clone(), path.clone())) {
            problems.push(format!(
                "{method} {path} is registered in build_app but is neither in the expectation \
                 table nor in the public list of api_matrix.rs: decide who may call it"
            ));
        }
    }
    for ((method, path), list) in &known {
        if !registered.contains(&(method.clone(), path.clone())) {
            problems.push(format!(
                "{method} {path} is in {list} of api_matrix.rs but build_app no longer \
                 registers it"
            ));
        }
    }
    for (method, path, reason) in PUBLIC {
        assert!(!reason.is_empty(), "{method} {path}: say why it is public");
    }
    for r in &table {
        assert!(
            r.allowed.iter().all(|role| ROLES.contains(role)),
            "{} {}: an unknown role in {:?}",
            r.method,
            r.route,
            r.allowed
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What the store holds that a refused call could change: users, tokens, roles, app rules,
/// deploy requests and someone's sessions (without last-use times, which any authenticated
/// call may move).
async fn snapshot(s: &Store, someone: i64) -> String {
    fn plain(mut v: Value) -> Value {
        match &mut v {
            Value::Array(items) => {
                *items = std::mem::take(items).into_iter().map(plain).collect();
            }
            Value::Object(map) => {
                map.remove("last_used_at");
                map.remove("last_seen_at");
                let fields = std::mem::take(map);
                *map = fields.into_iter().map(|(k, v)| (k, plain(v))).collect();
            }
            _ => {}
        }
        v
    }
    let json = |r: Result<Value, serde_json::Error>| plain(r.unwrap_or_else(|e| panic!("{e}")));
    let users = s.list_users_with_mfa().await;
    let users = json(serde_json::to_value(
        users.unwrap_or_else(|e| panic!("{e}")),
    ));
    let tokens = s.list_tokens().await;
    let tokens = json(serde_json::to_value(
        tokens.unwrap_or_else(|e| panic!("{e}")),
    ));
    let roles = s.list_roles().await;
    let roles = json(serde_json::to_value(
        roles.unwrap_or_else(|e| panic!("{e}")),
    ));
    let sessions = s.user_sessions(someone, 0).await;
    let sessions = json(serde_json::to_value(
        sessions.unwrap_or_else(|e| panic!("{e}")),
    ));
    let rules = s.list_app_rules().await.unwrap_or_else(|e| panic!("{e}"));
    let approvals = s
        .list_approvals(None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    format!(
        "users {users}\ntokens {tokens}\nroles {roles}\nsessions {sessions}\n\
         app rules {rules:?}\napprovals {approvals:?}"
    )
}

/// `method url` with `token` (and a JSON body): the status, the JSON answer (null when it is
/// none) and the request id.
async fn call(
    c: &reqwest::Client,
    method: &str,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut req = c.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let id = request_id(&resp);
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        id,
    )
}

/// A refused call, to find on the audit trail.
struct Refusal {
    what: String,
    request_id: String,
    action: String,
    token_name: String,
}

/// The row's sample with each value the route takes from the path replaced by one no handler
/// can read (`%FF` decodes to a byte that is not UTF-8, and is no number); `None` for a route
/// without one.
fn garbled_path(r: &Row) -> Option<String> {
    let route: Vec<&str> = r.route.split('/').collect();
    let sample: Vec<&str> = r.sample.split('/').collect();
    assert_eq!(route.len(), sample.len(), "{}: {}", r.route, r.sample);
    let garbled: Vec<&str> = route
        .iter()
        .zip(&sample)
        .map(|(pattern, given)| {
            if pattern.starts_with('{') {
                "%FF"
            } else {
                given
            }
        })
        .collect();
    (garbled != sample).then(|| garbled.join("/"))
}

/// Notes a failure unless `got` (status, body, request id) is the refusal `want` (status,
/// code), and the refusal to look for on the trail.
fn expect_refusal(
    failures: &mut Vec<String>,
    refusals: &mut Vec<Refusal>,
    what: String,
    got: (u16, &Value, String),
    want: (u16, &str),
    action: &str,
    role: &str,
) {
    let (status, body, request_id) = got;
    if (status, body["code"].as_str()) != (want.0, Some(want.1)) {
        failures.push(format!(
            "{what}: {status} {body}, expected a refusal: {} {}",
            want.0, want.1
        ));
    }
    refusals.push(Refusal {
        what,
        request_id,
        action: action.to_string(),
        token_name: format!("{role}-token"),
    });
}

both_backends!(every_api_route_for_every_role, |db| async move {
    let rack = TestRack::start().await;
    let tokens: Vec<(&str, String)> = ROLES.iter().map(|r| (*r, role_token(&db, r))).collect();
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let c = client();
    let s = store(&db).await;
    let token_of = |role: &str| {
        tokens
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("no {role} token"))
    };

    // Someone else's session, and a pending deploy request of the cicd token's.
    let someone = s
        .create_user(SOMEONE, "Someone", "viewer")
        .await
        .unwrap_or_else(|e| panic!("user: {e}"));
    let (session, _) = crate::credentials::another_session(&s, "cli", &someone)
        .await
        .unwrap_or_else(|e| panic!("session: {e}"));
    let ask = json!({ "app": "web", "git_commit": "1f0e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6" });
    let (status, asked, _) = call(
        &c,
        "POST",
        &format!("{}/api/v1/deploy-approvals", gw.url),
        &token_of("cicd"),
        Some(&ask),
    )
    .await;
    assert_eq!(status, 201, "{asked}");
    let approval = asked["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id: {asked}"));
    assert!(
        s.find_user(NOBODY)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );

    let mut failures = Vec::new();
    let mut refusals = Vec::new();
    let mut checked = 0;
    for r in rows() {
        let path = r
            .sample
            .replace("{session}", &session.id.to_string())
            .replace("{approval}", &approval.to_string());
        let url = format!("{}{path}", gw.url);
        let (allowed, denied): (Vec<_>, Vec<_>) = tokens
            .iter()
            .partition(|(role, _)| r.allowed.contains(role));
        let before = snapshot(&s, someone.id).await;
        for (role, token) in &denied {
            let (status, body, id) = call(&c, r.method, &url, token, r.body.as_ref()).await;
            let (want, action) = match r.denied {
                Denied::Forbidden => {
                    let first = r.permission.split(" or ").next().unwrap_or(r.permission);
                    ((403, "permission_denied"), first)
                }
                Denied::Hidden(action) => ((404, "not_found"), action),
            };
            let what = format!("{} {path} as {role}", r.method);
            if (status, body["code"].as_str()) != (want.0, Some(want.1)) {
                failures.push(format!(
                    "{what} ({}): {status} {body}, expected a refusal: {} {}",
                    r.permission, want.0, want.1
                ));
            }
            refusals.push(Refusal {
                what,
                request_id: id,
                action: action.to_string(),
                token_name: format!("{role}-token"),
            });
            // The permission is checked before the body is looked at: a malformed one is
            // refused the same way (and audited), not answered 400.
            if r.body.is_some() {
                let garbled = c
                    .request(
                        reqwest::Method::from_bytes(r.method.as_bytes())
                            .unwrap_or_else(|e| panic!("{e}")),
                        &url,
                    )
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body("{not json")
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{url}: {e}"));
                let status = garbled.status().as_u16();
                let id = request_id(&garbled);
                let body: Value = garbled.json().await.unwrap_or(Value::Null);
                let what = format!("{} {path} as {role} with a malformed body", r.method);
                let got = (status, &body, id);
                expect_refusal(&mut failures, &mut refusals, what, got, want, action, role);
            }
            // So is the path: a value in it that is not one (a request number that is not a
            // number, an e-mail that is not UTF-8) is refused as the call would be, not
            // answered 400 unaudited.
            if let (Some(garbled), Denied::Forbidden) = (garbled_path(&r), &r.denied) {
                let url = format!("{}{garbled}", gw.url);
                let (status, body, id) = call(&c, r.method, &url, token, r.body.as_ref()).await;
                let what = format!("{} {url} as {role} with a malformed path value", r.method);
                let got = (status, &body, id);
                expect_refusal(&mut failures, &mut refusals, what, got, want, action, role);
            }
            checked += 1;
        }
        if !denied.is_empty() {
            let after = snapshot(&s, someone.id).await;
            if after != before {
                let (was, now): (Vec<_>, Vec<_>) = before
                    .lines()
                    .zip(after.lines())
                    .filter(|(b, a)| b != a)
                    .unzip();
                failures.push(format!(
                    "{} {path}: a refused call changed the store:\nbefore: {}\nafter: {}",
                    r.method,
                    was.join("\n"),
                    now.join("\n")
                ));
            }
        }
        for (role, token) in &allowed {
            let (status, body, _) = call(&c, r.method, &url, token, r.body.as_ref()).await;
            let code = body["code"].as_str();
            let refused = code == Some("permission_denied");
            let expected = match r.answer.1 {
                Some(want) => code == Some(want),
                None => true,
            };
            if refused || status != r.answer.0 || !expected {
                failures.push(format!(
                    "{} {path} as {role} ({}): {status} {body}, expected it allowed: {} {}",
                    r.method,
                    r.permission,
                    r.answer.0,
                    r.answer.1.unwrap_or("")
                ));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, rows().len() * ROLES.len());
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Every refusal is on the trail, as a refusal of what was asked, by that token, and
    // nothing of its request was allowed.
    assert!(!refusals.is_empty());
    let wanted: BTreeSet<&str> = refusals.iter().map(|r| r.request_id.as_str()).collect();
    assert!(!wanted.contains(""), "a response without x-request-id");
    let (s_ref, wanted_ref) = (&s, &wanted);
    let complete = eventually(|| async move {
        let rows = s_ref.audit_rows(0, 100_000).await.unwrap_or_default();
        let seen: BTreeSet<&str> = rows.iter().map(|r| r.event.request_id.as_str()).collect();
        wanted_ref.iter().all(|id| seen.contains(id))
    })
    .await;
    let trail = s
        .audit_rows(0, 100_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut by_request: BTreeMap<&str, Vec<&gateway::audit::AuditEvent>> = BTreeMap::new();
    for row in &trail {
        by_request
            .entry(row.event.request_id.as_str())
            .or_default()
            .push(&row.event);
    }
    for refusal in &refusals {
        let events = by_request
            .get(refusal.request_id.as_str())
            .cloned()
            .unwrap_or_default();
        let denied = events.iter().any(|e| {
            e.rbac_decision == Decision::Deny
                && e.action == refusal.action
                && e.token_name.as_deref() == Some(refusal.token_name.as_str())
        });
        let allowed = events.iter().any(|e| e.rbac_decision == Decision::Allow);
        if !denied || allowed {
            failures.push(format!(
                "{}: audited as {:?}, expected a refusal of {} by {} and nothing allowed",
                refusal.what,
                events
                    .iter()
                    .map(|e| format!("{} {}", e.rbac_decision, e.action))
                    .collect::<Vec<_>>(),
                refusal.action,
                refusal.token_name
            ));
        }
    }
    assert!(
        failures.is_empty() && complete,
        "{} refusals not audited as such:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The public `info`: any credential, no permission.
    for (role, token) in &tokens {
        let (status, body, _) =
            call(&c, "GET", &format!("{}/api/v1/info", gw.url), token, None).await;
        assert_eq!(
            (status, body["role"].as_str()),
            (200, Some(*role)),
            "{body}"
        );
    }
});
