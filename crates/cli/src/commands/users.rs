//! `users`: people and their roles, for admins (`gateway:users:*`): list, add, change a role,
//! lock and unlock, reset an authenticator app, forget trusted browsers — the changes `/api/v1/users` makes, with its rules (not on yourself; the
//! last admin who can manage users stays one) and its audit events.

use crate::cli::{UsersArgs, UsersCommand};
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::gateway_api::{User, UserChange};
use crate::output::{self, Table};

/// Runs `users`.
pub async fn run(ctx: &Ctx, args: UsersArgs) -> CliResult<i32> {
    let (selected, api) = ctx.gateway("users are a rack-gateway's")?;
    let credential = &selected.entry.token;
    let (change, done) = match &args.command {
        None => {
            let users = api.users(credential).await.map_err(CliError::Client)?;
            if ctx.json {
                output::print_json(&users)?;
            } else {
                print_table(&users)?;
            }
            return Ok(0);
        }
        Some(UsersCommand::ForgetBrowsers { email }) => {
            let n = api
                .forget_browsers(credential, email)
                .await
                .map_err(CliError::Client)?;
            let browsers = if n == 1 { "browser" } else { "browsers" };
            output::write_stdout(&format!(
                "Forgot {n} trusted {browsers} of {}: their next sign-in asks for their code.\n",
                output::printable(email)
            ))?;
            return Ok(0);
        }
        Some(UsersCommand::Add { email, role, name }) => (
            UserChange::Add {
                email,
                role,
                name: name.as_deref().unwrap_or_default(),
            },
            "Added",
        ),
        Some(UsersCommand::SetRole { email, role }) => {
            (UserChange::Role { email, role }, "Changed the role of")
        }
        Some(UsersCommand::Lock { email }) => (
            UserChange::Locked {
                email,
                locked: true,
            },
            "Locked (sessions ended, tokens stopped)",
        ),
        Some(UsersCommand::Unlock { email }) => (
            UserChange::Locked {
                email,
                locked: false,
            },
            "Unlocked",
        ),
        Some(UsersCommand::ResetMfa { email }) => (
            UserChange::ResetMfa { email },
            "Removed the authenticator app of",
        ),
    };
    let user = match api.change_user(credential, change, None).await {
        // A person with an authenticator app gives a code with the change: ask, once.
        Err(convox_api::client::ClientError::Api { code: Some(c), .. })
            if c == "mfa_code_required" =>
        {
            let code = super::mfa::ask_for_code(&api, credential).await?;
            api.change_user(credential, change, Some(&code)).await
        }
        other => other,
    }
    .map_err(CliError::Client)?;
    output::write_stdout(&format!(
        "{done} {} (role {}).\n",
        output::printable(&user.email),
        output::printable(&user.role)
    ))?;
    Ok(0)
}

/// The MFA column: `on` or `off`, with what stands beside the app ("on (1 security key,
/// 2 trusted browsers)"); `-` from a gateway that does not say.
fn mfa_cell(u: &User) -> String {
    let state = match u.mfa {
        Some(true) => "on",
        Some(false) => "off",
        None => return "-".into(),
    };
    let counted = [
        (u.security_keys, "security key", "security keys"),
        (u.yubikeys, "YubiKey", "YubiKeys"),
        (u.trusted_browsers, "trusted browser", "trusted browsers"),
    ];
    let extras: Vec<String> = counted
        .iter()
        .filter_map(|(n, one, many)| match n {
            Some(1) => Some(format!("1 {one}")),
            Some(n) if *n > 1 => Some(format!("{n} {many}")),
            _ => None,
        })
        .collect();
    if extras.is_empty() {
        state.to_string()
    } else {
        format!("{state} ({})", extras.join(", "))
    }
}

/// EMAIL, NAME, ROLE, STATUS, MFA, LAST SEEN.
fn print_table(users: &[User]) -> CliResult<()> {
    let mut table = Table::new(&["EMAIL", "NAME", "ROLE", "STATUS", "MFA", "LAST SEEN"]);
    for u in users {
        table.row(vec![
            output::printable(&u.email).into_owned(),
            output::printable(&u.name).into_owned(),
            output::printable(&u.role).into_owned(),
            if u.locked { "locked" } else { "active" }.to_string(),
            mfa_cell(u),
            u.last_seen_at
                .map(output::unix_ms)
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    table.print()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mfa_cell_says_what_stands_beside_the_app() {
        let mut u = User {
            mfa: Some(true),
            ..User::default()
        };
        assert_eq!(mfa_cell(&u), "on");
        u.security_keys = Some(1);
        u.yubikeys = Some(0);
        u.trusted_browsers = Some(2);
        assert_eq!(mfa_cell(&u), "on (1 security key, 2 trusted browsers)");
        u.mfa = None;
        assert_eq!(mfa_cell(&u), "-");
        u.mfa = Some(false);
        u.security_keys = None;
        u.trusted_browsers = None;
        assert_eq!(mfa_cell(&u), "off");
    }
}
