//! `sessions`: where you are signed in (admins: anyone, with `--email`), and ending a session
//! or all of them — what `/api/v1/sessions` lists and revokes, with its rules (someone else's
//! only with `gateway:sessions:manage`) and its audit events.

use crate::cli::{SessionsArgs, SessionsCommand};
use crate::config::TokenType;
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::gateway_api::SessionInfo;
use crate::output::{self, Table};

/// Runs `sessions`.
pub async fn run(ctx: &Ctx, args: SessionsArgs) -> CliResult<i32> {
    let (selected, api) = ctx.gateway("sessions are a rack-gateway's")?;
    let credential = &selected.entry.token;
    let email = args.email.as_deref();
    let own = !matches!(args.command, Some(SessionsCommand::Revoke { .. }));
    if own && email.is_none() && selected.entry.token_type != TokenType::Session {
        return Err(CliError::Usage(
            "this rack is used with an API token, which has no sessions: give --email EMAIL \
             for someone's (admins), or sign in with `rack-gateway login` for your own"
                .into(),
        ));
    }
    match args.command {
        None => {
            let sessions = api
                .sessions(credential, email)
                .await
                .map_err(CliError::Client)?;
            if ctx.json {
                output::print_json(&sessions)?;
            } else {
                print_table(&sessions)?;
            }
        }
        Some(SessionsCommand::Revoke { id }) => {
            // Whose is the gateway's to check: `--email` changes nothing here.
            let live = api
                .revoke_session(credential, id)
                .await
                .map_err(CliError::Client)?;
            let said = if live {
                format!("Ended session {id}: its next request is refused.\n")
            } else {
                format!("Session {id} had ended already.\n")
            };
            output::write_stdout(&said)?;
        }
        Some(SessionsCommand::RevokeAll) => {
            let n = api
                .revoke_all_sessions(credential, email)
                .await
                .map_err(CliError::Client)?;
            let sessions = if n == 1 { "session" } else { "sessions" };
            let whose = match email {
                Some(email) => format!(" of {}", output::printable(email)),
                None => " (this one too: `rack-gateway login` to sign in again)".into(),
            };
            output::write_stdout(&format!("Ended {n} {sessions}{whose}.\n"))?;
        }
    }
    Ok(0)
}

/// ID, CHANNEL, FROM, DEVICE, SIGNED IN, LAST SEEN, ENDS; `*` marks the session asking.
fn print_table(sessions: &[SessionInfo]) -> CliResult<()> {
    let mut table = Table::new(&[
        "ID",
        "CHANNEL",
        "FROM",
        "DEVICE",
        "SIGNED IN",
        "LAST SEEN",
        "ENDS",
    ]);
    for s in sessions {
        let id = if s.current {
            format!("{}*", s.id)
        } else {
            s.id.to_string()
        };
        table.row(vec![
            id,
            output::printable(&s.channel).into_owned(),
            output::printable(s.ip.as_deref().unwrap_or("-")).into_owned(),
            output::printable(s.user_agent.as_deref().unwrap_or("-")).into_owned(),
            output::unix_ms(s.created_at),
            output::unix_ms(s.last_seen_at),
            output::unix_ms(s.expires_at),
        ]);
    }
    table.print()
}
