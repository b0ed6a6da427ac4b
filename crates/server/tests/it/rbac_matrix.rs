//! Every catalogue route × every role, through the real gateway: allowed calls reach the rack,
//! denied ones get 403 and never do. The expectations are written out here, independently of
//! the role definitions, so a policy change must change this table too.

use std::collections::BTreeMap;

use convox_api::{Method, ROUTES, RouteKind};

use crate::both_backends;
use crate::kit::{Gateway, client, role_token};
use crate::upstream::TestRack;

const ROLES: [&str; 5] = ["viewer", "ops", "deployer", "admin", "cicd"];

/// Which roles may use each permission (admin may use everything).
fn expectations() -> BTreeMap<&'static str, &'static [&'static str]> {
    const ALL: &[&str] = &["viewer", "ops", "deployer", "admin", "cicd"];
    const READERS: &[&str] = &["viewer", "ops", "deployer", "admin"];
    const OPS_UP: &[&str] = &["ops", "deployer", "admin"];
    const DEPLOY: &[&str] = &["deployer", "admin"];
    const ADMIN: &[&str] = &["admin"];
    BTreeMap::from([
        ("convox:apps:list", ALL),
        ("convox:apps:read", ALL),
        ("convox:apps:create", ADMIN),
        ("convox:apps:update", DEPLOY),
        ("convox:apps:delete", ADMIN),
        ("convox:apps:cancel", DEPLOY),
        ("convox:services:list", ALL),
        ("convox:services:read", READERS),
        ("convox:balancers:list", READERS),
        ("convox:configs:list", OPS_UP),
        ("convox:configs:read", OPS_UP),
        ("convox:configs:update", DEPLOY),
        ("convox:files:read", OPS_UP),
        ("convox:files:upload", OPS_UP),
        ("convox:files:delete", OPS_UP),
        ("convox:services:update", DEPLOY),
        ("convox:services:restart", OPS_UP),
        ("convox:processes:list", ALL),
        // cicd: `convox run` waits on the process it started (an approved command).
        ("convox:processes:read", ALL),
        ("convox:processes:start", OPS_UP),
        // A run with options that reach a node (proxy.rs tests it: no route of its own).
        ("convox:processes:privileged", ADMIN),
        ("convox:processes:exec", OPS_UP),
        ("convox:processes:terminate", OPS_UP),
        ("convox:logs:read", READERS),
        ("convox:builds:list", ALL),
        ("convox:builds:read", ALL),
        ("convox:builds:logs", ALL),
        ("convox:builds:create", DEPLOY),
        ("convox:builds:update", DEPLOY),
        ("convox:builds:import", DEPLOY),
        ("convox:builds:export", DEPLOY),
        ("convox:objects:create", DEPLOY),
        ("convox:objects:read", DEPLOY),
        ("convox:objects:exists", DEPLOY),
        ("convox:objects:delete", DEPLOY),
        ("convox:objects:list", DEPLOY),
        // Releases carry the app's environment (secrets): only roles that may read env.
        ("convox:releases:list", OPS_UP),
        ("convox:releases:read", OPS_UP),
        ("convox:releases:create", DEPLOY),
        ("convox:releases:promote", DEPLOY),
        ("convox:instances:list", READERS),
        ("convox:instances:terminate", ADMIN),
        ("convox:instances:keyroll", ADMIN),
        ("convox:instances:shell", ADMIN),
        ("convox:rack:check", ALL),
        ("convox:rack:read", ALL),
        ("convox:rack:jwt-token", ADMIN),
        ("convox:rack:jwt-rotate", ADMIN),
        ("convox:rack:capacity", READERS),
        ("convox:rack:update", ADMIN),
        ("convox:rack:metrics", ADMIN),
        ("convox:rack:processes", ADMIN),
        ("convox:rack:releases", ADMIN),
        ("convox:rack:logs", ADMIN),
    ])
}

/// Whether `role` may use `permission`: from the table, admin-only when not listed there
/// (resources, certificates, registries, balancers, files…).
fn expected(permission: &str, role: &str) -> bool {
    if role == "admin" {
        return true;
    }
    match expectations().get(permission) {
        Some(roles) => roles.contains(&role),
        None => {
            let resource = permission.split(':').nth(1).unwrap_or_default();
            assert!(
                !matches!(
                    resource,
                    "apps"
                        | "services"
                        | "processes"
                        | "logs"
                        | "builds"
                        | "objects"
                        | "releases"
                        | "instances"
                        | "rack"
                        | "configs"
                        | "files"
                        | "balancers"
                ),
                "{permission} is not in the expectation table: decide who may use it"
            );
            false
        }
    }
}

fn sample_path(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| {
            if let Some(rest) = seg.strip_prefix('{') {
                let (name, suffix) = rest.split_once('}').unwrap_or((rest, ""));
                let value = match name.trim_end_matches('*') {
                    "app" => "web",
                    "key" => "tmp/build.tgz",
                    other => other,
                };
                format!("{value}1{suffix}").replace("web1", "web")
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The status of a WebSocket handshake through the gateway: 101 when it was upgraded.
async fn websocket_status(gw: &Gateway, path: &str, token: &str) -> u16 {
    match tokio_tungstenite::connect_async(crate::streaming::ws_request(gw, path, token)).await {
        Ok((mut socket, response)) => {
            let _ = socket.close(None).await;
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("WebSocket to {path}: {e}"),
    }
}

fn method(m: Method) -> reqwest::Method {
    reqwest::Method::from_bytes(m.as_str().as_bytes()).unwrap_or(reqwest::Method::GET)
}

both_backends!(every_route_for_every_role, |db| async move {
    let rack = TestRack::start().await;
    let tokens: Vec<(&str, String)> = ROLES.iter().map(|r| (*r, role_token(&db, r))).collect();
    let gw = Gateway::start(&db, &rack.url, &[]).await;
    let c = client();
    let mut failures = Vec::new();
    let mut checked = 0;
    for route in ROUTES {
        let path = sample_path(route.pattern);
        let permission = route.permission();
        for (role, token) in &tokens {
            rack.clear();
            let socket = route.kind == RouteKind::WebSocket;
            let status = if socket {
                websocket_status(&gw, &path, token).await
            } else {
                let resp = c
                    .request(method(route.method), gw.proxy(&path))
                    .basic_auth("convox", Some(token))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                resp.status().as_u16()
            };
            let reached = rack
                .seen()
                .iter()
                .any(|s| s.path == path && s.method == route.method.as_str());
            let want = expected(&permission, role);
            let ok = if want {
                status == if socket { 101 } else { 200 } && reached
            } else {
                status == 403 && !reached
            };
            if !ok {
                failures.push(format!(
                    "{} {path} ({permission}, {:?}) as {role}: status {status}, reached rack {reached}, expected {}",
                    route.method,
                    route.kind == RouteKind::WebSocket,
                    if want { "allow" } else { "deny" }
                ));
            }
            checked += 1;
        }
    }
    assert!(checked >= ROUTES.len() * ROLES.len());
    assert!(
        failures.is_empty(),
        "{} wrong decisions:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // A WebSocket route asked for as plain HTTP, and an upgrade on an HTTP route: refused
    // before the rack, whoever asks.
    let admin_token = &tokens[3].1;
    for route in ROUTES {
        let path = sample_path(route.pattern);
        rack.clear();
        let status = if route.kind == RouteKind::WebSocket {
            let resp = c
                .get(gw.proxy(&path))
                .basic_auth("convox", Some(admin_token))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            resp.status().as_u16()
        } else if route.method == Method::Get {
            websocket_status(&gw, &path, admin_token).await
        } else {
            continue;
        };
        assert_eq!(status, 400, "{} {path} with the wrong kind", route.method);
        assert!(
            rack.seen().is_empty(),
            "{path} with the wrong kind reached the rack"
        );
    }

    // Unknown routes: admin only.
    for (role, token) in &tokens {
        let resp = c
            .get(gw.proxy("/definitely/not/a/convox/route"))
            .basic_auth("convox", Some(token))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let want = if *role == "admin" { 200 } else { 403 };
        assert_eq!(resp.status().as_u16(), want, "unknown route as {role}");
    }
});
