//! Every rack API route the stock `convox` CLI uses, with the resource and action that make up
//! its permission (`convox:<resource>:<action>`).
//!
//! Mirrors the route table of the Convox v3 rack API, `pkg/api/routes.go` in `convox/convox`,
//! plus the two routes registered outside it: `GET /auth` (`pkg/api/api.go`, the credential
//! check `convox login` makes) and `GET /check` (the health check `stdapi` adds). `SOCKET`
//! routes are WebSocket upgrades on `GET`; `{key:.*}`-style parameters are written `{key*}`.
//!
//! Left out on purpose, so that only admins reach them: the catch-all proxies (`ANY /v2/*`, the
//! registry proxy, and `ANY /custom/http/proxy/*`), and the classic (v2 rack) routes that
//! `sdk/compat.go` only calls on old racks (`/apps/{app}/environment`, `formation`,
//! `parameters`, `processes/{service}/run`, `ssl`, `/instances/{id}/ssh`).
//!
//! The table is grouped by resource, in alphabetical order (a test checks this).

use crate::route::{Method, Route, RouteKind};

const fn http(
    method: Method,
    pattern: &'static str,
    resource: &'static str,
    action: &'static str,
) -> Route {
    Route {
        method,
        pattern,
        resource,
        action,
        kind: RouteKind::Http,
    }
}

const fn socket(pattern: &'static str, resource: &'static str, action: &'static str) -> Route {
    Route {
        method: Method::Get,
        pattern,
        resource,
        action,
        kind: RouteKind::WebSocket,
    }
}

/// The route catalogue.
pub static ROUTES: &[Route] = &[
    http(Method::Get, "/apps", "apps", "list"),
    http(Method::Post, "/apps", "apps", "create"),
    http(Method::Get, "/apps/{app}", "apps", "read"),
    http(Method::Put, "/apps/{app}", "apps", "update"),
    http(Method::Delete, "/apps/{app}", "apps", "delete"),
    http(Method::Get, "/apps/{app}/budget", "apps", "read"),
    http(Method::Post, "/apps/{app}/budget", "apps", "update"),
    http(Method::Delete, "/apps/{app}/budget", "apps", "update"),
    http(
        Method::Post,
        "/apps/{app}/budget/dismiss-recovery",
        "apps",
        "update",
    ),
    http(Method::Post, "/apps/{app}/budget/reset", "apps", "update"),
    http(
        Method::Get,
        "/apps/{app}/budget/shutdown-state",
        "apps",
        "read",
    ),
    http(
        Method::Post,
        "/apps/{app}/budget/simulate-shutdown",
        "apps",
        "update",
    ),
    http(Method::Post, "/apps/{app}/cancel", "apps", "cancel"),
    http(Method::Get, "/apps/{app}/cost", "apps", "read"),
    http(
        Method::Get,
        "/apps/{app}/manifest/services/{service}",
        "apps",
        "read",
    ),
    http(Method::Get, "/apps/{app}/metrics", "apps", "read"),
    http(
        Method::Get,
        "/apps/{app}/metrics-by-service",
        "apps",
        "read",
    ),
    http(Method::Get, "/apps/{app}/balancers", "balancers", "list"),
    http(Method::Get, "/apps/{app}/builds", "builds", "list"),
    http(Method::Post, "/apps/{app}/builds", "builds", "create"),
    http(
        Method::Post,
        "/apps/{app}/builds/import",
        "builds",
        "import",
    ),
    http(Method::Get, "/apps/{app}/builds/{id}", "builds", "read"),
    http(Method::Put, "/apps/{app}/builds/{id}", "builds", "update"),
    http(
        Method::Get,
        "/apps/{app}/builds/{id}.tgz",
        "builds",
        "export",
    ),
    http(
        Method::Post,
        "/apps/{app}/builds/{id}/image",
        "builds",
        "import",
    ),
    socket("/apps/{app}/builds/{id}/logs", "builds", "logs"),
    http(
        Method::Put,
        "/apps/{app}/ssl/{service}/{port}",
        "certificates",
        "apply",
    ),
    http(Method::Get, "/certificates", "certificates", "list"),
    http(Method::Post, "/certificates", "certificates", "create"),
    http(
        Method::Post,
        "/certificates/generate",
        "certificates",
        "generate",
    ),
    http(
        Method::Delete,
        "/certificates/{id}",
        "certificates",
        "delete",
    ),
    http(
        Method::Post,
        "/certificates/{id}/renew",
        "certificates",
        "renew",
    ),
    http(Method::Get, "/apps/{app}/configs", "configs", "list"),
    http(Method::Get, "/apps/{app}/configs/{name}", "configs", "read"),
    http(
        Method::Put,
        "/apps/{app}/configs/{name}",
        "configs",
        "update",
    ),
    http(Method::Post, "/events", "events", "create"),
    http(
        Method::Get,
        "/apps/{app}/processes/{pid}/files",
        "files",
        "read",
    ),
    http(
        Method::Post,
        "/apps/{app}/processes/{pid}/files",
        "files",
        "upload",
    ),
    http(
        Method::Delete,
        "/apps/{app}/processes/{pid}/files",
        "files",
        "delete",
    ),
    http(Method::Get, "/instances", "instances", "list"),
    http(Method::Post, "/instances/keyroll", "instances", "keyroll"),
    http(Method::Delete, "/instances/{id}", "instances", "terminate"),
    socket("/instances/{id}/shell", "instances", "shell"),
    http(Method::Get, "/letsencrypt/config", "letsencrypt", "read"),
    http(Method::Put, "/letsencrypt/config", "letsencrypt", "update"),
    // The diagnose report carries container log lines: it needs the logs permission.
    http(Method::Get, "/apps/{app}/diagnose", "logs", "read"),
    socket("/apps/{app}/logs", "logs", "read"),
    socket("/apps/{app}/processes/{pid}/logs", "logs", "read"),
    socket("/apps/{app}/services/{service}/logs", "logs", "read"),
    http(Method::Get, "/apps/{app}/objects", "objects", "list"),
    http(Method::Get, "/apps/{app}/objects/{key*}", "objects", "read"),
    http(
        Method::Head,
        "/apps/{app}/objects/{key*}",
        "objects",
        "exists",
    ),
    http(
        Method::Post,
        "/apps/{app}/objects/{key*}",
        "objects",
        "create",
    ),
    http(
        Method::Delete,
        "/apps/{app}/objects/{key*}",
        "objects",
        "delete",
    ),
    http(Method::Get, "/apps/{app}/processes", "processes", "list"),
    http(
        Method::Get,
        "/apps/{app}/processes/{pid}",
        "processes",
        "read",
    ),
    http(
        Method::Delete,
        "/apps/{app}/processes/{pid}",
        "processes",
        "terminate",
    ),
    socket("/apps/{app}/processes/{pid}/exec", "processes", "exec"),
    http(
        Method::Post,
        "/apps/{app}/services/{service}/processes",
        "processes",
        "start",
    ),
    socket("/proxy/{host}/{port}", "proxy", "connect"),
    http(Method::Get, "/auth", "rack", "check"),
    http(Method::Get, "/check", "rack", "check"),
    http(Method::Get, "/system", "rack", "read"),
    http(Method::Put, "/system", "rack", "update"),
    http(Method::Get, "/system/capacity", "rack", "capacity"),
    http(Method::Put, "/system/jwt/rotate", "rack", "jwt-rotate"),
    http(Method::Post, "/system/jwt/token", "rack", "jwt-token"),
    http(Method::Post, "/system/karpenter/cleanup", "rack", "update"),
    socket("/system/logs", "rack", "logs"),
    http(Method::Get, "/system/metrics", "rack", "metrics"),
    http(Method::Get, "/system/processes", "rack", "processes"),
    http(Method::Get, "/system/releases", "rack", "releases"),
    http(Method::Get, "/registries", "registries", "list"),
    http(Method::Post, "/registries", "registries", "create"),
    http(
        Method::Delete,
        "/registries/{server*}",
        "registries",
        "delete",
    ),
    http(Method::Get, "/apps/{app}/releases", "releases", "list"),
    http(Method::Post, "/apps/{app}/releases", "releases", "create"),
    http(Method::Get, "/apps/{app}/releases/{id}", "releases", "read"),
    http(
        Method::Post,
        "/apps/{app}/releases/{id}/promote",
        "releases",
        "promote",
    ),
    http(Method::Get, "/apps/{app}/resources", "resources", "list"),
    http(
        Method::Get,
        "/apps/{app}/resources/{name}",
        "resources",
        "read",
    ),
    socket(
        "/apps/{app}/resources/{name}/console",
        "resources",
        "console",
    ),
    http(
        Method::Get,
        "/apps/{app}/resources/{name}/data",
        "resources",
        "export",
    ),
    http(
        Method::Put,
        "/apps/{app}/resources/{name}/data",
        "resources",
        "import",
    ),
    http(Method::Get, "/resources", "resources", "list"),
    http(Method::Options, "/resources", "resources", "types"),
    http(Method::Post, "/resources", "resources", "create"),
    http(Method::Get, "/resources/{name}", "resources", "read"),
    http(Method::Put, "/resources/{name}", "resources", "update"),
    http(Method::Delete, "/resources/{name}", "resources", "delete"),
    http(Method::Post, "/resources/{name}/links", "resources", "link"),
    http(
        Method::Delete,
        "/resources/{name}/links/{app}",
        "resources",
        "unlink",
    ),
    http(Method::Get, "/apps/{app}/services", "services", "list"),
    http(
        Method::Put,
        "/apps/{app}/services/{service}",
        "services",
        "update",
    ),
    http(
        Method::Get,
        "/apps/{app}/services/{service}/metrics",
        "services",
        "read",
    ),
    http(
        Method::Post,
        "/apps/{app}/services/{service}/restart",
        "services",
        "restart",
    ),
    http(
        Method::Post,
        "/apps/{app}/services/{service}/scale-override",
        "services",
        "update",
    ),
    http(
        Method::Post,
        "/apps/{app}/services/{service}/triggers/disable",
        "services",
        "update",
    ),
    http(
        Method::Post,
        "/apps/{app}/services/{service}/triggers/enable",
        "services",
        "update",
    ),
    http(
        Method::Post,
        "/apps/{app}/services/{service}/triggers/threshold",
        "services",
        "update",
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::route::match_route;

    /// The parameters of a pattern as (name, suffix, rest-of-path) triples.
    fn params(pattern: &str) -> Vec<(&str, &str, bool)> {
        pattern
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{'))
            .map(|rest| {
                let (name, suffix) = rest.split_once('}').unwrap_or((rest, ""));
                match name.strip_suffix('*') {
                    Some(name) => (name, suffix, true),
                    None => (name, suffix, false),
                }
            })
            .collect()
    }

    /// A concrete path for `pattern`: `{x}` becomes `x1`, `{x}.tgz` becomes `x1.tgz` and a
    /// rest-of-path `{x*}` becomes `x1/more/x1` when `deep`, else `x1`.
    fn sample(pattern: &str, deep: bool) -> String {
        pattern
            .split('/')
            .map(|seg| match seg.strip_prefix('{') {
                Some(rest) => {
                    let (name, suffix) = rest.split_once('}').unwrap_or((rest, ""));
                    match name.strip_suffix('*') {
                        Some(name) if deep => format!("{name}1/more/{name}1{suffix}"),
                        Some(name) => format!("{name}1{suffix}"),
                        None => format!("{name}1{suffix}"),
                    }
                }
                None => seg.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The pattern with parameter names erased, so `/apps/{app}` and `/apps/{name}` compare
    /// equal.
    fn shape(pattern: &str) -> String {
        pattern
            .split('/')
            .map(|seg| match seg.strip_prefix('{') {
                Some(rest) => {
                    let (name, suffix) = rest.split_once('}').unwrap_or((rest, ""));
                    let star = if name.ends_with('*') { "*" } else { "" };
                    format!("{{{star}}}{suffix}")
                }
                None => seg.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn lookup(method: Method, path: &str) -> Option<&'static Route> {
        match_route(ROUTES, method, path).map(|m| m.route)
    }

    fn permission(method: Method, path: &str) -> Option<String> {
        lookup(method, path).map(Route::permission)
    }

    #[test]
    fn no_duplicate_method_and_pattern() {
        let mut seen = HashSet::new();
        let mut shapes = HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method, r.pattern)),
                "duplicate {} {}",
                r.method,
                r.pattern
            );
            // Two patterns that differ only in parameter names would be ambiguous.
            assert!(
                shapes.insert((r.method, shape(r.pattern))),
                "ambiguous {} {}",
                r.method,
                r.pattern
            );
        }
    }

    #[test]
    fn patterns_are_well_formed() {
        for r in ROUTES {
            let p = r.pattern;
            assert!(p.starts_with('/'), "{p} must start with '/'");
            assert!(
                !p[1..].split('/').any(str::is_empty),
                "{p} has an empty segment"
            );
            for seg in p[1..].split('/') {
                if seg.starts_with('{') {
                    assert_eq!(seg.matches('{').count(), 1, "{p}: {seg}");
                    assert_eq!(seg.matches('}').count(), 1, "{p}: {seg}");
                } else {
                    assert!(!seg.contains(['{', '}', '*']), "{p}: {seg}");
                }
            }
            let ps = params(p);
            for (name, _, rest) in &ps {
                assert!(
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase()),
                    "{p}: bad parameter name {name:?}"
                );
                assert!(
                    !rest || p.ends_with(&format!("/{{{name}*}}")),
                    "{p}: a rest-of-path parameter must be the whole last segment"
                );
            }
            let names: HashSet<&str> = ps.iter().map(|(n, _, _)| *n).collect();
            assert_eq!(names.len(), ps.len(), "{p} repeats a parameter name");
        }
    }

    #[test]
    fn resources_and_actions_are_well_formed() {
        for r in ROUTES {
            for word in [r.resource, r.action] {
                assert!(
                    !word.is_empty()
                        && !word.starts_with('-')
                        && word.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                    "{} {}: bad resource or action {word:?}",
                    r.method,
                    r.pattern
                );
            }
            assert_eq!(
                r.permission(),
                format!("convox:{}:{}", r.resource, r.action)
            );
        }
    }

    #[test]
    fn table_is_grouped_by_resource_in_order() {
        for pair in ROUTES.windows(2) {
            assert!(
                pair[0].resource <= pair[1].resource,
                "{} {} ({}) comes before {} {} ({})",
                pair[0].method,
                pair[0].pattern,
                pair[0].resource,
                pair[1].method,
                pair[1].pattern,
                pair[1].resource
            );
        }
    }

    #[test]
    fn every_route_is_reachable_by_a_sample_path() {
        for r in ROUTES {
            for deep in [false, true] {
                let path = sample(r.pattern, deep);
                let m = match_route(ROUTES, r.method, &path)
                    .unwrap_or_else(|| panic!("{} {path} matches nothing", r.method));
                assert_eq!(
                    crate::CATALOGUE.find(r.method, &path),
                    Some(r),
                    "the index finds {} {path} too",
                    r.method
                );
                assert_eq!(
                    m.route, r,
                    "{} {path} matched {}",
                    r.method, m.route.pattern
                );
                for (name, _, rest) in params(r.pattern) {
                    let want = if rest && deep {
                        format!("{name}1/more/{name}1")
                    } else {
                        format!("{name}1")
                    };
                    assert_eq!(m.param(name), Some(want.as_str()), "{} {path}", r.method);
                }
            }
        }
    }

    #[test]
    fn websocket_routes_are_exactly_the_socket_routes() {
        let ws: HashSet<&str> = ROUTES
            .iter()
            .filter(|r| r.kind == RouteKind::WebSocket)
            .map(|r| r.pattern)
            .collect();
        let want: HashSet<&str> = [
            "/apps/{app}/builds/{id}/logs",
            "/apps/{app}/logs",
            "/apps/{app}/processes/{pid}/exec",
            "/apps/{app}/processes/{pid}/logs",
            "/apps/{app}/resources/{name}/console",
            "/apps/{app}/services/{service}/logs",
            "/instances/{id}/shell",
            "/proxy/{host}/{port}",
            "/system/logs",
        ]
        .into();
        assert_eq!(ws, want);
        for r in ROUTES.iter().filter(|r| r.kind == RouteKind::WebSocket) {
            assert_eq!(r.method, Method::Get, "{} must be a GET upgrade", r.pattern);
        }
    }

    #[test]
    fn spot_checks() {
        let cases: &[(Method, &str, &str)] = &[
            (Method::Get, "/apps", "convox:apps:list"),
            (Method::Post, "/apps", "convox:apps:create"),
            (Method::Get, "/apps/web", "convox:apps:read"),
            (Method::Put, "/apps/web", "convox:apps:update"),
            (Method::Delete, "/apps/web", "convox:apps:delete"),
            (Method::Post, "/apps/web/cancel", "convox:apps:cancel"),
            (Method::Get, "/apps/web/builds", "convox:builds:list"),
            (Method::Get, "/apps/web/builds/B1", "convox:builds:read"),
            (
                Method::Get,
                "/apps/web/builds/B1.tgz",
                "convox:builds:export",
            ),
            (
                Method::Post,
                "/apps/web/builds/import",
                "convox:builds:import",
            ),
            (Method::Put, "/apps/web/builds/B1", "convox:builds:update"),
            (
                Method::Get,
                "/apps/web/builds/B1/logs",
                "convox:builds:logs",
            ),
            (Method::Get, "/apps/web/logs", "convox:logs:read"),
            (
                Method::Get,
                "/apps/web/processes/p1/logs",
                "convox:logs:read",
            ),
            (
                Method::Get,
                "/apps/web/processes/p1",
                "convox:processes:read",
            ),
            (
                Method::Get,
                "/apps/web/processes/p1/exec",
                "convox:processes:exec",
            ),
            (
                Method::Delete,
                "/apps/web/processes/p1",
                "convox:processes:terminate",
            ),
            (
                Method::Post,
                "/apps/web/services/api/processes",
                "convox:processes:start",
            ),
            (
                Method::Put,
                "/apps/web/services/api",
                "convox:services:update",
            ),
            (
                Method::Post,
                "/apps/web/services/api/restart",
                "convox:services:restart",
            ),
            (
                Method::Post,
                "/apps/web/objects/tmp/x/y.tgz",
                "convox:objects:create",
            ),
            (
                Method::Head,
                "/apps/web/objects/tmp/y.tgz",
                "convox:objects:exists",
            ),
            (Method::Get, "/apps/web/objects", "convox:objects:list"),
            (
                Method::Post,
                "/apps/web/releases/R1/promote",
                "convox:releases:promote",
            ),
            (
                Method::Post,
                "/instances/keyroll",
                "convox:instances:keyroll",
            ),
            (
                Method::Delete,
                "/instances/i-1",
                "convox:instances:terminate",
            ),
            (Method::Get, "/auth", "convox:rack:check"),
            (Method::Get, "/system", "convox:rack:read"),
            (Method::Put, "/system", "convox:rack:update"),
            (Method::Get, "/system/logs", "convox:rack:logs"),
            (
                Method::Post,
                "/certificates/generate",
                "convox:certificates:generate",
            ),
            (
                Method::Delete,
                "/certificates/c1",
                "convox:certificates:delete",
            ),
            (
                Method::Delete,
                "/registries/index.docker.io",
                "convox:registries:delete",
            ),
            (Method::Options, "/resources", "convox:resources:types"),
            (
                Method::Delete,
                "/resources/db/links/web",
                "convox:resources:unlink",
            ),
        ];
        for (method, path, want) in cases {
            assert_eq!(
                permission(*method, path).as_deref(),
                Some(*want),
                "{method} {path}"
            );
        }

        let m = match_route(ROUTES, Method::Get, "/apps/web/builds/B1.tgz");
        let m = m.unwrap_or_else(|| panic!("no match"));
        assert_eq!((m.param("app"), m.param("id")), (Some("web"), Some("B1")));

        let kind = |p| lookup(Method::Get, p).map(|r| r.kind);
        assert_eq!(kind("/apps/web/logs"), Some(RouteKind::WebSocket));
        assert_eq!(
            kind("/apps/web/processes/p1/exec"),
            Some(RouteKind::WebSocket)
        );
        assert_eq!(kind("/apps/web/processes"), Some(RouteKind::Http));
        assert_eq!(kind("/apps/web/builds/B1.tgz"), Some(RouteKind::Http));
    }

    #[test]
    fn routes_left_out_are_unknown() {
        for (method, path) in [
            (Method::Get, "/v2/anything"),
            (Method::Post, "/custom/http/proxy/a/b"),
            (Method::Post, "/apps/web/environment"),
            (Method::Get, "/apps/web/formation"),
            (Method::Get, "/apps/web/parameters"),
            (Method::Post, "/apps/web/processes/api/run"),
            (Method::Get, "/instances/i-1/ssh"),
            (Method::Post, "/apps/web/restart"),
            (Method::Get, "/apps/web/objects/"),
            (Method::Patch, "/apps/web"),
        ] {
            assert_eq!(lookup(method, path), None, "{method} {path}");
        }
    }
}
