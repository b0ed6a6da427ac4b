//! Setting and clearing an app's rules, audited the way users and roles are changed
//! ([`crate::identity::manage`]): the event first, nothing changed without it.

use serde_json::json;

use super::{AppRules, READ_SECRETS, WRITE_PROTECTED};
use crate::approvals::input::is_app_name;
use crate::audit::AuditLog;
use crate::identity::manage::{Actor, ManageError, audited};
use crate::rbac::PermissionSet;
use crate::store::{AppRulesRow, Store, StoreError, now_ms};

/// What the rules of an app bind, which whoever changes them must hold: weakening a rule is
/// as good as passing it, so only those it does not bind may change it.
fn bypassing() -> Result<PermissionSet, ManageError> {
    PermissionSet::new(vec![READ_SECRETS.to_string(), WRITE_PROTECTED.to_string()])
        .map_err(|e| ManageError::Invalid(e.to_string()))
}

fn checked_app(app: &str) -> Result<(), ManageError> {
    if is_app_name(app) {
        Ok(())
    } else {
        Err(ManageError::Invalid(
            "app: a Convox app name (letters, digits and '-')".into(),
        ))
    }
}

/// Sets app `app`'s rules (all of them: what is not given is cleared). Rules that say nothing
/// clear the app's rules.
pub async fn set_rules(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    app: &str,
    rules: AppRules,
) -> Result<Option<AppRulesRow>, ManageError> {
    checked_app(app)?;
    let rules = rules.checked().map_err(ManageError::Invalid)?;
    actor.within_reach(
        &bypassing()?,
        "app rules bind everyone who lacks what they guard",
    )?;
    if rules.is_empty() {
        return match clear_rules(store, audit, actor, app).await {
            Ok(_) | Err(ManageError::Store(StoreError::NotFound(_))) => Ok(None),
            Err(e) => Err(e),
        };
    }
    let asked = json!({ "app": app, "rules": rules });
    let (store, app, by) = (store.clone(), app.to_string(), actor.label.clone());
    let (row, _) = audited(
        audit,
        actor,
        "gateway:app-rules:update",
        asked,
        async move { store.put_app_rules(&app, &rules, &by, now_ms()).await },
        |(_, previous): &(AppRulesRow, Option<AppRules>)| json!({ "previous": previous }),
    )
    .await?;
    Ok(Some(row))
}

/// Clears app `app`'s rules; answers with what they were.
pub async fn clear_rules(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    app: &str,
) -> Result<AppRulesRow, ManageError> {
    checked_app(app)?;
    actor.within_reach(
        &bypassing()?,
        "app rules bind everyone who lacks what they guard",
    )?;
    let (store, app_owned) = (store.clone(), app.to_string());
    audited(
        audit,
        actor,
        "gateway:app-rules:delete",
        json!({ "app": app }),
        async move { store.delete_app_rules(&app_owned).await },
        |row: &AppRulesRow| json!({ "previous": row.rules }),
    )
    .await
}
