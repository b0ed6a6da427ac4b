//! Every rack API route the stock `convox` CLI uses, with the resource and action that make up
//! its permission (`convox:<resource>:<action>`).
//!
//! Mirrors the route table of the Convox rack API (`pkg/api/routes.go` in `convox/convox`):
//! `SOCKET` routes are WebSocket upgrades on `GET`; `{key:.*}`-style parameters are written
//! `{key*}`. Left out on purpose, so that only admins reach them: the catch-all proxies
//! (`/v2/*` registry proxy, `/custom/http/proxy/*`).

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
    http(Method::Post, "/apps/{app}/cancel", "apps", "cancel"),
    http(Method::Get, "/apps/{app}/diagnose", "apps", "read"),
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
    http(Method::Get, "/apps/{app}/cost", "apps", "read"),
    http(Method::Get, "/apps/{app}/budget", "apps", "read"),
    http(
        Method::Get,
        "/apps/{app}/budget/shutdown-state",
        "apps",
        "read",
    ),
    http(Method::Post, "/apps/{app}/budget", "apps", "update"),
    http(Method::Delete, "/apps/{app}/budget", "apps", "update"),
    http(Method::Post, "/apps/{app}/budget/reset", "apps", "update"),
    http(
        Method::Post,
        "/apps/{app}/budget/simulate-shutdown",
        "apps",
        "update",
    ),
    http(
        Method::Post,
        "/apps/{app}/budget/dismiss-recovery",
        "apps",
        "update",
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
    http(Method::Get, "/apps/{app}/configs", "configs", "list"),
    http(Method::Get, "/apps/{app}/configs/{name}", "configs", "read"),
    http(
        Method::Put,
        "/apps/{app}/configs/{name}",
        "configs",
        "update",
    ),
    socket("/apps/{app}/logs", "logs", "read"),
    http(Method::Get, "/apps/{app}/objects", "objects", "list"),
    http(
        Method::Post,
        "/apps/{app}/objects/{key*}",
        "objects",
        "create",
    ),
    http(Method::Get, "/apps/{app}/objects/{key*}", "objects", "read"),
    http(
        Method::Head,
        "/apps/{app}/objects/{key*}",
        "objects",
        "exists",
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
    socket("/apps/{app}/processes/{pid}/logs", "logs", "read"),
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
    http(Method::Get, "/apps/{app}/services", "services", "list"),
    http(
        Method::Put,
        "/apps/{app}/services/{service}",
        "services",
        "update",
    ),
    socket("/apps/{app}/services/{service}/logs", "logs", "read"),
    http(
        Method::Get,
        "/apps/{app}/services/{service}/metrics",
        "services",
        "read",
    ),
    http(
        Method::Post,
        "/apps/{app}/services/{service}/processes",
        "processes",
        "start",
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
    http(Method::Post, "/events", "events", "create"),
    http(Method::Get, "/instances", "instances", "list"),
    http(Method::Post, "/instances/keyroll", "instances", "keyroll"),
    http(Method::Delete, "/instances/{id}", "instances", "terminate"),
    socket("/instances/{id}/shell", "instances", "shell"),
    http(Method::Get, "/letsencrypt/config", "letsencrypt", "read"),
    http(Method::Put, "/letsencrypt/config", "letsencrypt", "update"),
    socket("/proxy/{host}/{port}", "proxy", "connect"),
    http(Method::Get, "/registries", "registries", "list"),
    http(Method::Post, "/registries", "registries", "create"),
    http(
        Method::Delete,
        "/registries/{server*}",
        "registries",
        "delete",
    ),
    http(Method::Get, "/resources", "resources", "list"),
    http(Method::Post, "/resources", "resources", "create"),
    http(Method::Options, "/resources", "resources", "types"),
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
    http(Method::Get, "/check", "rack", "check"),
    http(Method::Get, "/system", "rack", "read"),
    http(Method::Put, "/system", "rack", "update"),
    http(Method::Get, "/system/capacity", "rack", "capacity"),
    http(Method::Post, "/system/jwt/token", "rack", "jwt-token"),
    http(Method::Put, "/system/jwt/rotate", "rack", "jwt-rotate"),
    http(Method::Post, "/system/karpenter/cleanup", "rack", "update"),
    socket("/system/logs", "rack", "logs"),
    http(Method::Get, "/system/metrics", "rack", "metrics"),
    http(Method::Get, "/system/processes", "rack", "processes"),
    http(Method::Get, "/system/releases", "rack", "releases"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::match_route;

    fn sample(pattern: &str) -> String {
        pattern
            .split('/')
            .map(|seg| match seg.strip_prefix('{') {
                Some(rest) => {
                    let (name, suffix) = rest.split_once('}').unwrap_or((rest, ""));
                    format!("{}1{suffix}", name.trim_end_matches('*'))
                }
                None => seg.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn no_duplicates_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method, r.pattern)),
                "duplicate {} {}",
                r.method,
                r.pattern
            );
            assert!(r.pattern.starts_with('/'), "{}", r.pattern);
            assert!(
                !r.pattern[1..].split('/').any(str::is_empty),
                "{}",
                r.pattern
            );
            assert!(!r.resource.is_empty() && !r.action.is_empty());
        }
    }

    #[test]
    fn every_route_is_reachable_by_its_own_sample_path() {
        for r in ROUTES {
            let path = sample(r.pattern);
            let m = match_route(ROUTES, r.method, &path);
            assert_eq!(m.map(|m| m.route), Some(r), "{} {path}", r.method);
        }
    }

    #[test]
    fn spot_checks() {
        let perm = |m, p| match_route(ROUTES, m, p).map(|m| m.route.permission());
        assert_eq!(perm(Method::Get, "/apps"), Some("convox:apps:list".into()));
        assert_eq!(
            perm(Method::Get, "/apps/web/builds/B1.tgz"),
            Some("convox:builds:export".into())
        );
        assert_eq!(
            perm(Method::Get, "/apps/web/builds/B1"),
            Some("convox:builds:read".into())
        );
        assert_eq!(
            perm(Method::Post, "/apps/web/builds/import"),
            Some("convox:builds:import".into())
        );
        assert_eq!(
            perm(Method::Post, "/apps/web/objects/tmp/x/y.tgz"),
            Some("convox:objects:create".into())
        );
        assert_eq!(
            perm(Method::Delete, "/apps/web/processes/p1"),
            Some("convox:processes:terminate".into())
        );
        assert_eq!(perm(Method::Get, "/v2/anything"), None);
        let kind = |p| match_route(ROUTES, Method::Get, p).map(|m| m.route.kind);
        assert_eq!(kind("/apps/web/logs"), Some(RouteKind::WebSocket));
        assert_eq!(
            kind("/apps/web/processes/p1/exec"),
            Some(RouteKind::WebSocket)
        );
        assert_eq!(kind("/apps/web/processes"), Some(RouteKind::Http));
    }
}
