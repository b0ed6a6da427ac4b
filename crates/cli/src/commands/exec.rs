//! `run` and `exec`: interactive sessions over WebSocket (raw TTY when interactive, the
//! terminal's size sent along, stdin forwarded, the remote exit code passed through).

use std::time::Duration;

use convox_api::client::{Client, ExecOptions, ProcessRunOptions};

use super::{app_name, wait};
use crate::cli::{ExecArgs, RunArgs};
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::output;
use crate::terminal::{self, RawMode};

/// `exec <pid> <command>`.
pub async fn exec(ctx: &Ctx, args: ExecArgs) -> CliResult<i32> {
    let app = app_name(&args.app)?;
    let client = ctx.client()?;
    session(&client, &app, &args.pid, &args.command.join(" ")).await
}

/// `run <service> <command>`: a new process (sleeping), exec in it, stop it.
pub async fn run(ctx: &Ctx, args: RunArgs) -> CliResult<i32> {
    let app = app_name(&args.app)?;
    let client = ctx.client()?;
    let command = args.command.join(" ");
    let size = terminal::size();
    let mut opts = ProcessRunOptions {
        release: args.release.clone(),
        width: size.map(|(w, _)| w),
        height: size.map(|(_, h)| h),
        ..ProcessRunOptions::default()
    };
    if args.detach {
        opts.command = Some(command);
        output::step("Running detached process")?;
        let p = client.run_process(&app, &args.service, &opts).await?;
        output::ok(Some(&p.id))?;
        return Ok(0);
    }
    opts.command = Some(format!("sleep {}", args.timeout));
    let p = client.run_process(&app, &args.service, &opts).await?;
    let result = async {
        wait::until(
            &format!("process {} to start", p.id),
            Duration::from_secs(300),
            || async {
                let current = client.process(&app, &p.id).await?;
                match current.status.as_str() {
                    "running" => Ok(Some(())),
                    "failed" | "exited" | "stopped" => Err(CliError::Failed(format!(
                        "process {} is {}",
                        p.id, current.status
                    ))),
                    _ => Ok(None),
                }
            },
        )
        .await?;
        session(&client, &app, &p.id, &command).await
    }
    .await;
    if let Err(e) = client.stop_process(&app, &p.id).await {
        let what = format!("warning: could not stop process {}: {e}", p.id);
        eprintln!("{}", crate::output::printable(&what));
    }
    result
}

/// One exec session on the local terminal.
async fn session(client: &Client, app: &str, pid: &str, command: &str) -> CliResult<i32> {
    let interactive = terminal::interactive();
    let size = if interactive { terminal::size() } else { None };
    let opts = ExecOptions {
        tty: interactive,
        width: size.map(|(w, _)| w),
        height: size.map(|(_, h)| h),
        ..ExecOptions::default()
    };
    let input = crate::stdin::spawn_reader();
    let raw = RawMode::enter(interactive);
    let mut stdout = tokio::io::stdout();
    let code = client
        .exec(app, pid, command, &opts, input, &mut stdout)
        .await;
    drop(raw);
    Ok(code?)
}
