//! `mfa verify`: gives this CLI session a code from the person's authenticator app, so that the
//! changes the gateway guards with a recent code (people, roles, API tokens) go through for its
//! window. The code is asked for on the terminal when not given.
//!
//! Wherever a code is asked for, the person may confirm with a security key instead: the CLI
//! cannot talk to the key, so it asks the gateway for a confirmation, has the person answer
//! with the key on the page its link opens, and gives the proof it then collects where the
//! code would go (`mfa::cli_key` on the gateway).

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::cli::{MfaArgs, MfaCommand};
use crate::config::TokenType;
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::gateway_api::{GatewayApi, KeyPoll};
use crate::output;
use convox_api::client::ClientError;

/// Runs `mfa …`.
pub async fn run(ctx: &Ctx, args: MfaArgs) -> CliResult<i32> {
    let MfaCommand::Verify { code, key } = args.command;
    let (selected, api) = ctx.gateway("codes are for a rack-gateway")?;
    if selected.entry.token_type != TokenType::Session {
        return Err(CliError::Usage(
            "this rack is used with an API token, which is never asked for a code: sign in \
             with `rack-gateway login` to use a session"
                .into(),
        ));
    }
    let token = &selected.entry.token;
    let code = match (code, key) {
        (Some(_), true) => {
            return Err(CliError::Usage("give a code or --key, not both".into()));
        }
        (Some(code), false) => code,
        (None, true) => key_in_browser(&api, token).await?,
        (None, false) => ask_for_code(&api, token).await?,
    };
    let verified = api
        .verify_mfa(&selected.entry.token, code.trim())
        .await
        .map_err(CliError::Client)?;
    let minutes = verified.valid_for_secs.div_ceil(60);
    let how = match verified.factor.as_str() {
        "backup_code" => " (a backup code: it is used up)",
        "security_key" => " with your security key",
        _ => "",
    };
    output::write_stdout(&format!(
        "Verified{how}: changes to people, roles and API tokens are allowed for the next \
         {minutes} minute(s).\n"
    ))?;
    Ok(0)
}

/// What typed at the prompt means "a security key in the browser" (as does Enter alone at a
/// terminal).
const USE_A_KEY: &str = "key";

/// The code from the terminal (prompted on stderr), or the first line of stdin; `key` (or Enter
/// alone at a terminal) confirms with a security key in the browser instead (session `token`
/// on `api`), giving the proof that yields. When the gateway has no key to confirm with (the
/// person has none, or keys are off), it says why and the next line is read as the code, so
/// an Enter pressed by habit costs a line, not the command.
pub(crate) async fn ask_for_code(api: &GatewayApi, token: &str) -> CliResult<String> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let mut keys_possible = true;
    loop {
        if terminal {
            eprint!(
                "{}",
                if keys_possible {
                    "Code from your authenticator app (a backup code, or touch your YubiKey), or \
                     Enter to use a security key in your browser: "
                } else {
                    "Code from your authenticator app (a backup code, or touch your YubiKey): "
                }
            );
            let _ = std::io::stderr().flush();
        }
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| CliError::io("reading the code", e))?;
        let code = line.trim().to_string();
        let wants_key = code.eq_ignore_ascii_case(USE_A_KEY) || (terminal && code.is_empty());
        if keys_possible && wants_key {
            match key_in_browser(api, token).await {
                Err(CliError::Client(ClientError::Api {
                    status: 409,
                    message,
                    ..
                })) => {
                    eprintln!("{}", output::printable(&message));
                    keys_possible = false;
                    continue;
                }
                other => return other,
            }
        }
        if code.is_empty() || wants_key {
            return Err(CliError::Usage(
                "no code given: `rack-gateway mfa verify CODE`, type it when asked, or answer \
                 `key` to use a security key in your browser"
                    .into(),
            ));
        }
        return Ok(code);
    }
}

/// Confirms with a security key in the browser: asks the gateway for a confirmation, opens
/// (or prints) its link, and waits for the proof, which then goes where a code would.
pub(crate) async fn key_in_browser(api: &GatewayApi, token: &str) -> CliResult<String> {
    let start = api
        .start_key_confirmation(token)
        .await
        .map_err(CliError::Client)?;
    let link = output::printable(&start.browser_url);
    if !crate::browser::is_web_link(&start.browser_url) {
        return Err(CliError::Explained(format!(
            "the gateway's confirmation link {link:?} is not an http(s) link; not using it"
        )));
    }
    let base = api.base();
    // As at sign-in: a link elsewhere (behind a port-forward, an internal name) is shown, not
    // opened, so you look before you go.
    let ours = crate::browser::is_gateway_link(&start.browser_url, base);
    if !ours {
        eprintln!(
            "warning: the confirmation link points away from {base}; open it only if you \
             expect your gateway there"
        );
    }
    if ours && crate::browser::allowed() && crate::browser::open(&start.browser_url) {
        eprintln!("Opening your browser to confirm with your security key.");
        eprintln!("If it does not open, visit: {link}");
    } else {
        eprintln!("Open this URL in a browser signed in to {base} and use your security key:");
        eprintln!("  {link}");
    }
    eprintln!(
        "The page must show the code {}. Waiting (Ctrl-C to cancel)...",
        output::printable(&start.code)
    );
    let interval = Duration::from_secs(start.poll_interval_secs.clamp(1, 10));
    let deadline = Instant::now() + Duration::from_secs(start.expires_in_secs.clamp(1, 900));
    loop {
        if Instant::now() >= deadline {
            return Err(CliError::Explained(
                "the security key confirmation expired: run the command again".into(),
            ));
        }
        tokio::time::sleep(interval).await;
        match api
            .poll_key_confirmation(token, &start.id)
            .await
            .map_err(CliError::Client)?
        {
            KeyPoll::Pending => continue,
            KeyPoll::Confirmed(proof) => {
                eprintln!("Confirmed with your security key.");
                return Ok(proof);
            }
            KeyPoll::Expired(message) => {
                return Err(CliError::Explained(format!(
                    "the security key confirmation is over ({message}): run the command again"
                )));
            }
        }
    }
}
