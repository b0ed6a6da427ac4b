//! `roles`: every role and what it grants; custom roles defined, changed and deleted by admins
//! (`gateway:roles:*`) — the changes `/api/v1/roles` makes, with its rules (never more than
//! you hold; a role someone holds is not deleted) and its audit events.

use crate::cli::{RolesArgs, RolesCommand};
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::gateway_api::{RoleChange, RoleInfo};
use crate::output::{self, Table};

/// Runs `roles`.
pub async fn run(ctx: &Ctx, args: RolesArgs) -> CliResult<i32> {
    let (selected, api) = ctx.gateway("roles are a rack-gateway's")?;
    let credential = &selected.entry.token;
    let (change, done) = match &args.command {
        None => {
            let roles = api.roles(credential).await.map_err(CliError::Client)?;
            if ctx.json {
                output::print_json(&roles)?;
            } else {
                print_table(&roles)?;
            }
            return Ok(0);
        }
        Some(RolesCommand::Create {
            name,
            permissions,
            description,
        }) => (
            RoleChange::Create {
                name,
                permissions,
                description,
            },
            "Defined",
        ),
        Some(RolesCommand::Update {
            name,
            permissions,
            description,
        }) => (
            RoleChange::Update {
                name,
                permissions,
                description: description.as_deref(),
            },
            "Changed",
        ),
        Some(RolesCommand::Delete { name }) => (RoleChange::Delete { name }, "Deleted"),
    };
    let role = match api.change_role(credential, change, None).await {
        // Changing a role's permissions takes a code with it: ask the person, once.
        Err(convox_api::client::ClientError::Api { code: Some(c), .. })
            if c == "mfa_code_required" =>
        {
            let code = super::mfa::ask_for_code(&api, credential).await?;
            api.change_role(credential, change, Some(&code)).await
        }
        other => other,
    }
    .map_err(CliError::Client)?;
    let held = match (role.users, role.tokens) {
        (Some(users), Some(tokens)) if !matches!(change, RoleChange::Delete { .. }) => {
            format!(
                ", held by {} and {}",
                count(users, "user"),
                count(tokens, "token")
            )
        }
        _ => String::new(),
    };
    output::write_stdout(&format!(
        "{done} role {} ({}{held}).\n",
        output::printable(&role.name),
        output::printable(&role.permissions.join(","))
    ))?;
    Ok(0)
}

/// ROLE, KIND, HELD BY, PERMISSIONS.
fn print_table(roles: &[RoleInfo]) -> CliResult<()> {
    let mut table = Table::new(&["ROLE", "KIND", "HELD BY", "PERMISSIONS"]);
    for r in roles {
        table.row(vec![
            output::printable(&r.name).into_owned(),
            if r.built_in { "built-in" } else { "custom" }.to_string(),
            match (r.users, r.tokens) {
                (Some(u), Some(t)) => format!("{}, {}", count(u, "user"), count(t, "token")),
                _ => "-".into(),
            },
            output::printable(&r.permissions.join(",")).into_owned(),
        ]);
    }
    table.print()
}

/// `1 user`, `2 tokens`.
fn count(n: i64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
