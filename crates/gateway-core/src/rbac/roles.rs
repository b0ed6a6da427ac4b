//! The built-in roles and their permission sets. The README's "Roles" table and
//! docs/security-model.md describe them; `crates/server/tests/it/rbac_matrix.rs` pins every
//! route × role.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use super::PermissionSet;

/// A built-in role. viewer < ops < deployer < admin; cicd is automation-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Read-only: apps, services, processes, logs, builds, instances, rack status, and the
    /// deploy requests waiting for approval.
    Viewer,
    /// Viewer + restart services, run/exec/stop processes, copy files, releases, env and
    /// configs (read).
    Ops,
    /// Ops + builds, objects, releases create/promote, env set/unset, configs, app update,
    /// scale.
    Deployer,
    /// Everything.
    Admin,
    /// Automation: read basics — not releases, which carry the app's environment with its
    /// values — and ask for deploy approvals; an approved request lets exactly that deploy
    /// through (see `approvals`).
    Cicd,
}

const VIEWER: &[&str] = &[
    "convox:apps:list",
    "convox:apps:read",
    "convox:services:list",
    "convox:services:read",
    "convox:balancers:list",
    "convox:processes:list",
    "convox:processes:read",
    "convox:logs:read",
    "convox:builds:list",
    "convox:builds:read",
    "convox:builds:logs",
    "convox:instances:list",
    "convox:rack:check",
    "convox:rack:read",
    "convox:rack:capacity",
    "gateway:deploy-approvals:list",
    "gateway:app-rules:read",
];

const OPS: &[&str] = &[
    "convox:services:restart",
    "convox:processes:start",
    "convox:processes:exec",
    "convox:processes:terminate",
    "convox:releases:list",
    "convox:releases:read",
    "convox:env:read",
    "convox:configs:list",
    "convox:configs:read",
    "convox:files:read",
    "convox:files:upload",
    "convox:files:delete",
];

const DEPLOYER: &[&str] = &[
    "convox:apps:update",
    "convox:apps:cancel",
    "convox:services:update",
    "convox:builds:create",
    "convox:builds:update",
    "convox:builds:import",
    "convox:builds:export",
    "convox:objects:*",
    "convox:releases:create",
    "convox:releases:promote",
    "convox:env:set",
    "convox:env:unset",
    "convox:configs:update",
    "gateway:deploy-approvals:request",
];

// No `releases:list`: the rack returns each release with its environment, secrets included.
const CICD: &[&str] = &[
    "convox:apps:list",
    "convox:apps:read",
    "convox:services:list",
    "convox:processes:list",
    "convox:processes:read",
    "convox:builds:list",
    "convox:builds:read",
    "convox:builds:logs",
    "convox:rack:check",
    "convox:rack:read",
    "gateway:deploy-approvals:request",
    "gateway:app-rules:read",
];

impl Role {
    /// Every built-in role.
    pub const ALL: &'static [Role] = &[
        Role::Viewer,
        Role::Ops,
        Role::Deployer,
        Role::Admin,
        Role::Cicd,
    ];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Ops => "ops",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
            Role::Cicd => "cicd",
        }
    }

    /// What the role is for, in a line (the README's "Roles" table says more).
    pub fn description(self) -> &'static str {
        match self {
            Role::Viewer => "read-only: apps, services, processes, logs, builds, instances, rack",
            Role::Ops => {
                "viewer + restart, run/exec/stop processes, files, releases and env (read)"
            }
            Role::Deployer => {
                "ops + builds, objects, releases create/promote, env set/unset, scale; ask for \
                 deploy approvals"
            }
            Role::Admin => "everything, including users, roles, tokens and unknown routes",
            Role::Cicd => "automation: read basics and deploy only with an approved request",
        }
    }

    /// The permissions the role grants. Built once per role: every request asks.
    pub fn permissions(self) -> PermissionSet {
        static VIEWER_SET: OnceLock<PermissionSet> = OnceLock::new();
        static OPS_SET: OnceLock<PermissionSet> = OnceLock::new();
        static DEPLOYER_SET: OnceLock<PermissionSet> = OnceLock::new();
        static ADMIN_SET: OnceLock<PermissionSet> = OnceLock::new();
        static CICD_SET: OnceLock<PermissionSet> = OnceLock::new();
        let (cell, lists): (&OnceLock<PermissionSet>, &[&[&str]]) = match self {
            Role::Viewer => (&VIEWER_SET, &[VIEWER]),
            Role::Ops => (&OPS_SET, &[VIEWER, OPS]),
            Role::Deployer => (&DEPLOYER_SET, &[VIEWER, OPS, DEPLOYER]),
            Role::Admin => (&ADMIN_SET, &[&["*"]]),
            Role::Cicd => (&CICD_SET, &[CICD]),
        };
        cell.get_or_init(|| {
            // Built from constants checked by tests, so no validation needed here.
            PermissionSet(
                lists
                    .iter()
                    .flat_map(|l| l.iter().map(|p| p.to_string()))
                    .collect(),
            )
        })
        .clone()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected one of viewer, ops, deployer, admin, cicd, or a custom role")]
pub struct UnknownRole(pub String);

/// What a principal's permissions come from when they come from a role: a built-in one, or a
/// custom role an admin defined (stored in the `roles` table, its permissions read with the
/// credentials they apply to).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RoleName {
    /// A built-in role.
    BuiltIn(Role),
    /// A custom role, by name.
    Custom(std::sync::Arc<str>),
}

impl RoleName {
    /// The role's name.
    pub fn as_str(&self) -> &str {
        match self {
            RoleName::BuiltIn(role) => role.as_str(),
            RoleName::Custom(name) => name,
        }
    }

    /// The role `name` stands for: a built-in one when it is one's name, otherwise custom.
    pub fn of(name: &str) -> RoleName {
        match name.parse::<Role>() {
            Ok(role) => RoleName::BuiltIn(role),
            Err(_) => RoleName::Custom(name.into()),
        }
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a principal with explicit permissions (a token made with `--permissions`) is called
/// where a role's name would be; no role may take it.
pub const EXPLICIT_PERMISSIONS: &str = "custom";

/// Why a name cannot be a custom role's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRoleName {
    /// The name is a built-in role's, or the word for explicit permissions.
    #[error("{0:?} is a built-in name: choose another for a custom role")]
    Reserved(String),
    /// The name's shape.
    #[error(
        "{0:?} cannot be a role's name: use 2–40 lowercase letters, digits and dashes, \
         starting with a letter"
    )]
    Shape(String),
}

/// Checks a new custom role's name: 2–40 of `a-z`, `0-9` and `-`, starting with a letter (it
/// shows in URLs, audit events and `--role` flags as it is), and not a built-in name.
pub fn validate_role_name(name: &str) -> Result<(), BadRoleName> {
    let shown = || name.chars().take(60).collect::<String>();
    if name.parse::<Role>().is_ok() || name == EXPLICIT_PERMISSIONS {
        return Err(BadRoleName::Reserved(shown()));
    }
    let shape_ok = (2..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if shape_ok {
        Ok(())
    } else {
        Err(BadRoleName::Shape(shown()))
    }
}

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_constants_are_valid_patterns() {
        for role in Role::ALL {
            for p in role.permissions().patterns() {
                assert!(super::super::validate_permission(p).is_ok(), "{role}: {p}");
            }
            assert_eq!(role.as_str().parse::<Role>(), Ok(*role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn custom_role_names() {
        for good in ["release-managers", "sre", "on-call-2"] {
            assert_eq!(validate_role_name(good), Ok(()), "{good}");
            assert_eq!(RoleName::of(good), RoleName::Custom(good.into()));
        }
        for reserved in ["admin", "viewer", "cicd", "custom"] {
            assert!(
                matches!(validate_role_name(reserved), Err(BadRoleName::Reserved(_))),
                "{reserved}"
            );
        }
        let long = "a".repeat(41);
        for bad in [
            "a", "Admin", "2fa", "-x", "on call", "ops_team", "é-team", "", &long,
        ] {
            assert!(
                matches!(validate_role_name(bad), Err(BadRoleName::Shape(_))),
                "{bad:?}"
            );
        }
        assert_eq!(RoleName::of("ops"), RoleName::BuiltIn(Role::Ops));
        assert_eq!(RoleName::of("ops").as_str(), "ops");
    }
}
