//! `tokens`: the gateway's API tokens, listed (`gateway:tokens:list`), created
//! (`gateway:tokens:create`, the secret shown once) and revoked (`gateway:tokens:revoke`):
//! admins.

use crate::cli::{TokensArgs, TokensCommand};
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::gateway_api::{ApiToken, NewToken};
use crate::output::{self, Table};

/// Runs `tokens`.
pub async fn run(ctx: &Ctx, args: TokensArgs) -> CliResult<i32> {
    let (selected, api) = ctx.gateway("tokens are a rack-gateway's")?;
    let credential = &selected.entry.token;
    match args.command {
        None => {
            let tokens = api.tokens(credential).await.map_err(CliError::Client)?;
            if ctx.json {
                output::print_json(&tokens)?;
            } else {
                print_table(&tokens)?;
            }
        }
        Some(TokensCommand::Create {
            name,
            role,
            permissions,
            expires_in,
            owner,
            code,
        }) => {
            let mut new = NewToken {
                name,
                role,
                permissions,
                expires_in,
                owner,
                code,
            };
            let created = match api.create_token(credential, &new).await {
                // Asked for a code right then: ask the person, once.
                Err(convox_api::client::ClientError::Api { code: Some(c), .. })
                    if c == "mfa_code_required" && new.code.is_none() =>
                {
                    new.code = Some(super::mfa::ask_for_code(&api, credential).await?);
                    api.create_token(credential, &new).await
                }
                other => other,
            }
            .map_err(CliError::Client)?;
            if ctx.json {
                output::print_json(&created)?;
            } else {
                let t = &created.token;
                let scope = scope(t);
                let expires = t
                    .expires_at
                    .map(output::unix_ms)
                    .unwrap_or_else(|| "never".into());
                output::write_stdout(&format!(
                    "Created API token {} {} ({}; expires {expires}). Its secret, shown this \
                     once:\n{}\n",
                    t.id,
                    output::printable(&format!("{:?}", t.name)),
                    output::printable(&scope),
                    created.secret
                ))?;
            }
        }
        Some(TokensCommand::Revoke { token }) => {
            let row = api
                .revoke_token(credential, &token)
                .await
                .map_err(CliError::Client)?;
            output::write_stdout(&format!(
                "Revoked API token {} {}.\n",
                row.id,
                output::printable(&format!("{:?}", row.name))
            ))?;
        }
    }
    Ok(0)
}

/// ID, NAME, SCOPE, CREATED, EXPIRES, LAST USED, STATUS.
fn print_table(tokens: &[ApiToken]) -> CliResult<()> {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "SCOPE",
        "CREATED BY",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "STATUS",
    ]);
    let now = chrono::Utc::now().timestamp_millis();
    let when = |ms: Option<i64>| ms.map(output::unix_ms).unwrap_or_else(|| "-".into());
    for t in tokens {
        let scope = scope(t);
        let status = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        table.row(vec![
            t.id.to_string(),
            output::printable(&t.name).into_owned(),
            output::printable(&scope).into_owned(),
            output::printable(&t.created_by).into_owned(),
            output::unix_ms(t.created_at),
            when(t.expires_at),
            when(t.last_used_at),
            status.to_string(),
        ]);
    }
    table.print()
}

/// What a token may do: `role R`, or its permissions.
fn scope(t: &ApiToken) -> String {
    match (&t.role, &t.permissions) {
        (Some(role), _) => format!("role {role}"),
        (None, Some(p)) => p.join(","),
        (None, None) => String::new(),
    }
}
