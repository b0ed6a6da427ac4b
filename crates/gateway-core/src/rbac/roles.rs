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
    "convox:builds:list",
    "convox:builds:read",
    "convox:builds:logs",
    "convox:rack:check",
    "convox:rack:read",
    "gateway:deploy-approvals:request",
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
#[error("unknown role {0:?}: expected one of viewer, ops, deployer, admin, cicd")]
pub struct UnknownRole(pub String);

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
}
