//! `logs` (and the shared log printer used by `builds logs` and `deploy`).

use convox_api::client::{LogStream, LogTarget, LogsOptions};

use super::app_name;
use crate::cli::LogsArgs;
use crate::context::Ctx;
use crate::error::CliResult;
use crate::output;

/// `logs`.
pub async fn run(ctx: &Ctx, args: LogsArgs) -> CliResult<i32> {
    let app = app_name(&args.app)?;
    let target = match (args.service, args.process) {
        (Some(service), _) => LogTarget::Service { app, service },
        (None, Some(pid)) => LogTarget::Process { app, pid },
        (None, None) => LogTarget::App(app),
    };
    let opts = LogsOptions {
        // Followed unless told not to, as `convox logs` does.
        follow: Some(!args.no_follow),
        since: args.since,
        filter: args.filter,
        tail: args.tail,
        prefix: args.no_prefix.then_some(false),
    };
    let stream = ctx.client()?.logs(&target, &opts).await?;
    print_stream(stream).await?;
    Ok(0)
}

/// Copies a log stream to stdout as it arrives.
pub async fn print_stream(mut stream: LogStream) -> CliResult<()> {
    while let Some(chunk) = stream.next_chunk().await {
        output::write_raw(&chunk?)?;
    }
    Ok(())
}
