//! Role-based access control: roles, permission strings with wildcards, and the decision.
//!
//! Permissions are `convox:<resource>:<action>` (one per rack route, see
//! `convox_api::catalogue`) and `gateway:<resource>:<action>`. A pattern may use `*` for any
//! one segment, and `*` alone grants everything (admin).

mod roles;

use std::fmt;
use std::str::FromStr;

pub use roles::{
    BadRoleName, EXPLICIT_PERMISSIONS, Role, RoleName, UnknownRole, validate_role_name,
};

/// The resource of [`unknown_route_permission`]s.
const UNKNOWN_RESOURCE: &str = "unknown";

/// The permission guarding rack routes the catalogue does not know. Only `*` or a pattern that
/// names this resource (`convox:unknown:*`, `convox:unknown:get`) grants it: a wildcard
/// resource does not, so `convox:*:*` or `convox:*:delete` covers every known route of its
/// kind but none of the unknown ones (the catch-all proxies, routes of newer racks), which stay
/// with admins.
pub fn unknown_route_permission(method: &str) -> String {
    format!("convox:{UNKNOWN_RESOURCE}:{}", method.to_ascii_lowercase())
}

/// Permissions that hand out power the gateway can neither see nor audit once given: a rack
/// JWT (calls made with it bypass the gateway), a shell on a node, a tunnel from inside the
/// rack's network, a process with node-level privileges (see [`PRIVILEGED_RUN`]). No wildcard
/// grants one — not `convox:rack:*`, not `convox:*:*` — only `*` or the permission named in
/// full, so a token made with a wide pattern does not quietly carry the rack's own power.
pub const ESCALATING: &[&str] = &[
    PRIVILEGED_RUN,
    "convox:rack:jwt-token",
    "convox:instances:shell",
    "convox:proxy:connect",
];

/// The permission a request needs when it reaches beyond the app on a route that ops may use: a
/// `convox run` with options that give the process node-level reach (a privileged container,
/// host paths, another image, …) or of the `build` service, and a shell in or the files of a
/// build's process, which holds the rack's password. The gateway lists them in
/// `proxy::privileged`. Not in the catalogue: it refines `convox:processes:start`,
/// `convox:processes:exec` and `convox:files:*`.
pub const PRIVILEGED_RUN: &str = "convox:processes:privileged";

/// True when a `convox:` pattern grants no permission the gateway ever asks for: no route of
/// the catalogue, not [`PRIVILEGED_RUN`], no unknown route (a typo such as
/// `convox:app:list`). `gateway:` and `*` patterns are not judged.
pub fn convox_pattern_grants_nothing(pattern: &str) -> bool {
    if !pattern.starts_with("convox:") {
        return false;
    }
    let known = convox_api::ROUTES
        .iter()
        .map(|r| r.permission())
        .chain([PRIVILEGED_RUN.to_string()])
        .chain(
            convox_api::Method::ALL
                .iter()
                .map(|m| unknown_route_permission(m.as_str())),
        );
    !known.into_iter().any(|p| pattern_matches(pattern, &p))
}

/// A malformed permission string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid permission {0:?}: expected `*` or `<convox|gateway|*>:<resource|*>:<action|*>`")]
pub struct InvalidPermission(pub String);

/// Checks a permission pattern's syntax.
pub fn validate_permission(pattern: &str) -> Result<(), InvalidPermission> {
    if pattern == "*" {
        return Ok(());
    }
    let parts: Vec<&str> = pattern.split(':').collect();
    let segment_ok = |s: &str| {
        s == "*"
            || (!s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'))
    };
    let ok = parts.len() == 3
        && matches!(parts[0], "convox" | "gateway" | "*")
        && parts.iter().all(|s| segment_ok(s));
    if ok {
        Ok(())
    } else {
        Err(InvalidPermission(pattern.to_string()))
    }
}

/// True when `pattern` grants `permission`.
pub fn pattern_matches(pattern: &str, permission: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if ESCALATING.contains(&permission) {
        return pattern == permission;
    }
    if permission.split(':').nth(1) == Some(UNKNOWN_RESOURCE)
        && pattern.split(':').nth(1) != Some(UNKNOWN_RESOURCE)
    {
        return false;
    }
    let mut p = pattern.split(':');
    let mut q = permission.split(':');
    loop {
        match (p.next(), q.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == "*" || a == b => {}
            _ => return false,
        }
    }
}

/// A set of granted permission patterns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PermissionSet(std::sync::Arc<[String]>);

impl PermissionSet {
    /// A set from validated patterns.
    pub fn new(patterns: Vec<String>) -> Result<PermissionSet, InvalidPermission> {
        for p in &patterns {
            validate_permission(p)?;
        }
        Ok(PermissionSet(patterns.into()))
    }

    /// True when any pattern grants `permission`.
    pub fn allows(&self, permission: &str) -> bool {
        self.0.iter().any(|p| pattern_matches(p, permission))
    }

    /// True when every permission `other` could grant is granted here (for "a token cannot
    /// mint a token with more power than it holds").
    pub fn covers(&self, other: &PermissionSet) -> bool {
        other.0.iter().all(|p| self.allows(p))
    }

    /// The patterns.
    pub fn patterns(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl FromStr for PermissionSet {
    type Err = InvalidPermission;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // A pattern listed twice is kept once, where it first appears.
        let mut patterns: Vec<String> = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if !patterns.iter().any(|seen| seen == p) {
                patterns.push(p.to_string());
            }
        }
        PermissionSet::new(patterns)
    }
}

/// The RBAC decision for one permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Granted.
    Allow,
    /// Refused: the permission that was missing.
    Deny {
        /// The permission the caller lacks.
        missing: String,
    },
}

/// Decides whether `granted` covers `permission`.
pub fn decide(granted: &PermissionSet, permission: &str) -> Decision {
    if granted.allows(permission) {
        Decision::Allow
    } else {
        Decision::Deny {
            missing: permission.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(pattern_matches("*", "convox:apps:delete"));
        assert!(pattern_matches("convox:apps:*", "convox:apps:delete"));
        assert!(pattern_matches("convox:*:list", "convox:builds:list"));
        assert!(!pattern_matches("convox:apps:*", "convox:builds:list"));
        assert!(!pattern_matches("convox:apps", "convox:apps:list"));
        assert!(!pattern_matches("convox:apps:list:x", "convox:apps:list"));
        assert!(!pattern_matches("convox:*:*", "gateway:tokens:create"));
    }

    #[test]
    fn validation() {
        for ok in [
            "*",
            "convox:apps:list",
            "gateway:tokens:*",
            "*:*:*",
            "convox:deploy-approvals:request",
        ] {
            assert!(validate_permission(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "apps",
            "convox:apps",
            "convox::list",
            "other:apps:list",
            "convox:Apps:list",
            "convox:apps:list:x",
        ] {
            assert!(validate_permission(bad).is_err(), "{bad}");
        }
        let listed: PermissionSet = " convox:apps:list,convox:ps:list , convox:apps:list,,"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listed.patterns(), ["convox:apps:list", "convox:ps:list"]);
    }

    #[test]
    fn unknown_routes_need_admin() {
        let perm = unknown_route_permission("GET");
        for role in Role::ALL {
            let allowed = role.permissions().allows(&perm);
            assert_eq!(allowed, *role == Role::Admin, "{role}");
        }
        // A wildcard resource covers the known routes only; naming the resource grants it.
        for (pattern, granted) in [
            ("*", true),
            ("convox:unknown:*", true),
            ("convox:unknown:get", true),
            ("*:unknown:*", true),
            ("convox:unknown:post", false),
            ("convox:*:*", false),
            ("convox:*:get", false),
            ("*:*:*", false),
        ] {
            assert_eq!(pattern_matches(pattern, &perm), granted, "{pattern}");
        }
        assert!(pattern_matches("convox:*:*", "convox:apps:delete"));
        let wide: PermissionSet = "convox:*:*".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(!wide.covers(&Role::Admin.permissions()));
    }

    #[test]
    fn escalating_permissions_are_granted_only_by_name() {
        for role in Role::ALL {
            for perm in ESCALATING {
                let allowed = role.permissions().allows(perm);
                assert_eq!(allowed, *role == Role::Admin, "{role} {perm}");
            }
        }
        let jwt = "convox:rack:jwt-token";
        for (pattern, granted) in [
            ("*", true),
            ("convox:rack:jwt-token", true),
            ("convox:rack:*", false),
            ("convox:*:jwt-token", false),
            ("convox:*:*", false),
            ("*:*:*", false),
            ("*:rack:jwt-token", false),
        ] {
            assert_eq!(pattern_matches(pattern, jwt), granted, "{pattern}");
        }
        // The neighbours of an escalating permission are untouched.
        assert!(pattern_matches("convox:rack:*", "convox:rack:read"));
        assert!(pattern_matches(
            "convox:processes:*",
            "convox:processes:start"
        ));
        assert!(!pattern_matches("convox:processes:*", PRIVILEGED_RUN));
        // A token holding one by name may pass it on; a wide one may not mint it.
        let named: PermissionSet = PRIVILEGED_RUN.parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(named.covers(&named));
        let wide: PermissionSet = "convox:*:*".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(!wide.covers(&named));
    }

    #[test]
    fn patterns_that_grant_nothing_are_told_apart() {
        for nothing in [
            "convox:app:list",
            "convox:nonexist:thing",
            "convox:apps:lst",
        ] {
            assert!(convox_pattern_grants_nothing(nothing), "{nothing}");
        }
        for something in [
            "convox:apps:list",
            "convox:*:list",
            "convox:unknown:get",
            PRIVILEGED_RUN,
            "convox:rack:jwt-token",
            "gateway:anything:at-all",
            "*",
        ] {
            assert!(!convox_pattern_grants_nothing(something), "{something}");
        }
    }

    #[test]
    fn covers() {
        assert!(
            Role::Admin
                .permissions()
                .covers(&Role::Deployer.permissions())
        );
        assert!(
            Role::Deployer
                .permissions()
                .covers(&Role::Ops.permissions())
        );
        assert!(Role::Ops.permissions().covers(&Role::Viewer.permissions()));
        assert!(!Role::Viewer.permissions().covers(&Role::Ops.permissions()));
    }
}
