//! `mfa verify`: gives this CLI session a code from the person's authenticator app, so that the
//! changes the gateway guards with a recent code (people, roles, API tokens) go through for its
//! window. The code is asked for on the terminal when not given.

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::{MfaArgs, MfaCommand};
use crate::config::TokenType;
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::output;

/// Runs `mfa …`.
pub async fn run(ctx: &Ctx, args: MfaArgs) -> CliResult<i32> {
    let MfaCommand::Verify { code } = args.command;
    let (selected, api) = ctx.gateway("codes are for a rack-gateway")?;
    if selected.entry.token_type != TokenType::Session {
        return Err(CliError::Usage(
            "this rack is used with an API token, which is never asked for a code: sign in \
             with `rack-gateway login` to use a session"
                .into(),
        ));
    }
    let code = match code {
        Some(code) => code,
        None => ask_for_code()?,
    };
    let verified = api
        .verify_mfa(&selected.entry.token, code.trim())
        .await
        .map_err(CliError::Client)?;
    let minutes = verified.valid_for_secs.div_ceil(60);
    let how = if verified.factor == "backup_code" {
        " (a backup code: it is used up)"
    } else {
        ""
    };
    output::write_stdout(&format!(
        "Verified{how}: changes to people, roles and API tokens are allowed for the next \
         {minutes} minute(s).\n"
    ))?;
    Ok(0)
}

/// The code from the terminal (prompted on stderr), or the first line of stdin.
pub(crate) fn ask_for_code() -> CliResult<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Code from your authenticator app (a backup code, or touch your YubiKey): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::io("reading the code", e))?;
    let code = line.trim().to_string();
    if code.is_empty() {
        return Err(CliError::Usage(
            "no code given: `rack-gateway mfa verify CODE`, or type it when asked".into(),
        ));
    }
    Ok(code)
}
