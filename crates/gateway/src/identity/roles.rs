//! Custom roles: what a stored role name grants, and defining, changing and deleting roles.
//!
//! A custom role is a name and a list of permission patterns. Users and tokens hold it by
//! name, like a built-in role; its permissions are read with their credentials, so a change
//! applies on the next request of everyone holding it. Nobody defines or changes a role to
//! grant more than they hold themselves ([`Actor::within_reach`]), so `gateway:roles:manage`
//! alone is no way to admin.

use serde_json::json;

use super::manage::{Actor, ManageError, audited};
use crate::audit::AuditLog;
use crate::rbac::{self, PermissionSet, Role, RoleName};
use crate::store::{NewRole, RoleGrant, RoleRow, Store, StoreError};

/// The most patterns a role lists (the catalogue has about a hundred permissions).
const MAX_PATTERNS: usize = 200;
/// The longest description.
const MAX_DESCRIPTION: usize = 500;

/// The role a stored name stands for and the permissions it grants, `grant` being what was
/// read with the credential for a custom role. A name that is neither built-in nor stored (a
/// role deleted by hand in the database) grants nothing: the caller is signed in and may do
/// nothing, rather than the request failing.
pub(super) fn granted(
    name: &str,
    grant: &RoleGrant,
) -> Result<(RoleName, PermissionSet), StoreError> {
    if let Ok(role) = name.parse::<Role>() {
        return Ok((RoleName::BuiltIn(role), role.permissions()));
    }
    let permissions = grant.0.clone().unwrap_or_default();
    Ok((RoleName::Custom(name.into()), permissions))
}

/// The permissions role `name` grants: a built-in role's, or a stored custom role's; `None`
/// when there is no such role.
pub async fn permissions_of(
    store: &Store,
    name: &str,
) -> Result<Option<PermissionSet>, StoreError> {
    if let Ok(role) = name.parse::<Role>() {
        return Ok(Some(role.permissions()));
    }
    // Not a name a custom role could have: no need to ask the database.
    if rbac::validate_role_name(name).is_err() {
        return Ok(None);
    }
    match store.custom_role(name).await? {
        Some(row) => PermissionSet::new(row.permissions)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("roles.permissions of {name}: {e}"))),
        None => Ok(None),
    }
}

/// Every role's name: the built-in ones, then the custom ones by name (for forms that offer
/// a choice).
pub async fn role_names(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut names: Vec<String> = Role::ALL.iter().map(|r| r.as_str().to_string()).collect();
    names.extend(store.list_roles().await?.into_iter().map(|r| r.name));
    Ok(names)
}

/// The permissions of role `name` for a change naming it, refused as input when there is no
/// such role.
pub(super) async fn known_role(store: &Store, name: &str) -> Result<PermissionSet, ManageError> {
    permissions_of(store, name).await?.ok_or_else(|| {
        let shown: String = name.chars().take(60).collect();
        ManageError::Invalid(format!(
            "unknown role {shown:?}: expected one of viewer, ops, deployer, admin, cicd, or a \
             custom role (`rack-gateway roles list`)"
        ))
    })
}

/// A role's permissions as given: trimmed, each listed once, checked, and none that grants
/// nothing (a typo such as `convox:app:list` would otherwise pass unnoticed).
pub fn checked_permissions(patterns: &[String]) -> Result<PermissionSet, ManageError> {
    let mut kept: Vec<String> = Vec::new();
    for p in patterns.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        if !kept.iter().any(|k| k == p) {
            kept.push(p.to_string());
        }
    }
    if kept.is_empty() {
        return Err(ManageError::Invalid(
            "a role needs at least one permission".into(),
        ));
    }
    if kept.len() > MAX_PATTERNS {
        return Err(ManageError::Invalid(format!(
            "a role lists at most {MAX_PATTERNS} permissions"
        )));
    }
    let set = PermissionSet::new(kept).map_err(|e| ManageError::Invalid(e.to_string()))?;
    if let Some(p) = set
        .patterns()
        .iter()
        .find(|p| rbac::convox_pattern_grants_nothing(p))
    {
        return Err(ManageError::Invalid(format!(
            "{p} grants no rack route (a typo?): permissions are convox:<resource>:<action>, \
             as `docs/security-model.md` lists them"
        )));
    }
    Ok(set)
}

fn checked_description(description: &str) -> Result<String, ManageError> {
    let description = description.trim();
    if description.chars().count() > MAX_DESCRIPTION
        || description.chars().any(gateway_core::text::is_hidden)
    {
        return Err(ManageError::Invalid(format!(
            "a description must be at most {MAX_DESCRIPTION} printable characters"
        )));
    }
    Ok(description.to_string())
}

/// Defines a custom role.
pub async fn create_role(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    name: &str,
    description: &str,
    permissions: &[String],
) -> Result<RoleRow, ManageError> {
    rbac::validate_role_name(name).map_err(|e| ManageError::Invalid(e.to_string()))?;
    let set = checked_permissions(permissions)?;
    let description = checked_description(description)?;
    actor.within_reach(&set, "a role cannot grant more than its maker holds")?;
    let asked = json!({
        "role": name, "permissions": set.patterns(), "description": description,
    });
    let (store, name, created_by) = (store.clone(), name.to_string(), actor.label.clone());
    let patterns = set.patterns().to_vec();
    audited(
        audit,
        actor,
        "gateway:roles:create",
        asked,
        async move {
            store
                .create_role(&NewRole {
                    name: &name,
                    description: &description,
                    permissions: &patterns,
                    created_by: &created_by,
                })
                .await
        },
        |_| json!({}),
    )
    .await
}

/// Changes a custom role's permissions (and description, when given). Whoever changes it must
/// hold what it granted before and what it grants after.
pub async fn update_role(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    name: &str,
    description: Option<&str>,
    permissions: &[String],
) -> Result<RoleRow, ManageError> {
    let set = checked_permissions(permissions)?;
    let description = description.map(checked_description).transpose()?;
    let current = custom_role(store, name).await?;
    actor.within_reach(
        &PermissionSet::new(current.permissions).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        "you cannot change a role that grants more than you hold",
    )?;
    actor.within_reach(&set, "a role cannot grant more than its maker holds")?;
    let asked = json!({
        "role": name, "permissions": set.patterns(), "description": description,
    });
    let (store, name) = (store.clone(), name.to_string());
    let patterns = set.patterns().to_vec();
    let (row, _) = audited(
        audit,
        actor,
        "gateway:roles:update",
        asked,
        async move {
            store
                .update_role(&name, &patterns, description.as_deref())
                .await
        },
        |(row, previous): &(RoleRow, Vec<String>)| {
            json!({
                "previous_permissions": previous,
                "users": row.users,
                "tokens": row.tokens,
            })
        },
    )
    .await?;
    Ok(row)
}

/// Deletes a custom role nobody holds.
pub async fn delete_role(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    name: &str,
) -> Result<RoleRow, ManageError> {
    let current = custom_role(store, name).await?;
    actor.within_reach(
        &PermissionSet::new(current.permissions).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        "you cannot delete a role that grants more than you hold",
    )?;
    let (store, name_owned) = (store.clone(), name.to_string());
    audited(
        audit,
        actor,
        "gateway:roles:delete",
        json!({ "role": name }),
        async move { store.delete_role(&name_owned).await },
        |row: &RoleRow| json!({ "permissions": row.permissions }),
    )
    .await
}

/// The stored custom role `name`; a built-in or unknown name is refused.
async fn custom_role(store: &Store, name: &str) -> Result<RoleRow, ManageError> {
    if name.parse::<Role>().is_ok() {
        return Err(ManageError::Invalid(format!(
            "{name} is a built-in role: it cannot be changed or deleted"
        )));
    }
    if rbac::validate_role_name(name).is_err() {
        return Err(StoreError::NotFound(format!(
            "role {}",
            name.chars().take(60).collect::<String>()
        ))
        .into());
    }
    store
        .custom_role(name)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("role {name}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(json: &str) -> RoleGrant {
        RoleGrant::parse(Some(json), "test").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_stored_role_name_grants_its_role() {
        let (role, set) = granted("ops", &RoleGrant(None)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(role, RoleName::BuiltIn(Role::Ops));
        assert!(set.allows("convox:services:restart"));
        // A built-in name is never read from the table, whatever came with it.
        let (_, set) = granted("viewer", &grant(r#"["*"]"#)).unwrap_or_else(|e| panic!("{e}"));
        assert!(!set.allows("convox:apps:delete"));
        let custom = grant(r#"["convox:logs:read"]"#);
        let (role, set) = granted("log-readers", &custom).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(role.as_str(), "log-readers");
        assert!(set.allows("convox:logs:read") && !set.allows("convox:apps:list"));
        // A role that is not stored grants nothing.
        let (role, set) = granted("gone", &RoleGrant(None)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(role.as_str(), "gone");
        assert!(set.patterns().is_empty());
        // A stored pattern that is not one is corruption, not a grant.
        for bad in [r#"["convox:apps"]"#, "not json", r#"{"a": 1}"#] {
            assert!(
                matches!(
                    RoleGrant::parse(Some(bad), "x-y"),
                    Err(StoreError::Corrupt(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn permissions_are_checked_trimmed_and_listed_once() {
        let given: Vec<String> = [" convox:logs:read", "convox:logs:read", "", "gateway:x:y"]
            .map(String::from)
            .to_vec();
        let set = checked_permissions(&given).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.patterns(), ["convox:logs:read", "gateway:x:y"]);
        for bad in [
            vec![],
            vec!["  ".to_string()],
            vec!["convox:apps".to_string()],
        ] {
            assert!(
                matches!(checked_permissions(&bad), Err(ManageError::Invalid(_))),
                "{bad:?}"
            );
        }
        let typo = checked_permissions(&["convox:app:list".to_string()]);
        assert!(
            matches!(&typo, Err(ManageError::Invalid(m)) if m.contains("grants no rack route")),
            "{typo:?}"
        );
        let many: Vec<String> = (0..201).map(|i| format!("gateway:r{i}:read")).collect();
        assert!(matches!(
            checked_permissions(&many),
            Err(ManageError::Invalid(_))
        ));
    }
}
