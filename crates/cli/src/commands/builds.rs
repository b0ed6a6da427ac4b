//! `builds`: list, info, logs.

use convox_api::client::{LogTarget, LogsOptions};

use super::{app_name, logs};
use crate::cli::{BuildsArgs, BuildsCommand};
use crate::context::Ctx;
use crate::error::CliResult;
use crate::output::{self, Info, Table};

/// `builds …`.
pub async fn run(ctx: &Ctx, args: BuildsArgs) -> CliResult<i32> {
    let app = app_name(&args.app)?;
    let client = ctx.client()?;
    match args.command {
        None => {
            let builds = client.builds(&app, args.limit).await?;
            if ctx.json {
                output::print_json(&builds)?;
            } else {
                let mut t = Table::new(&[
                    "ID",
                    "STATUS",
                    "RELEASE",
                    "STARTED",
                    "ELAPSED",
                    "DESCRIPTION",
                ]);
                for b in &builds {
                    t.row(vec![
                        b.id.clone(),
                        b.status.clone(),
                        b.release.clone(),
                        output::ago(&b.started),
                        output::elapsed(&b.started, &b.ended),
                        b.description.clone(),
                    ]);
                }
                t.print()?;
            }
        }
        Some(BuildsCommand::Info { id }) => {
            let b = client.build(&app, &id).await?;
            if ctx.json {
                output::print_json(&b)?;
            } else {
                Info::new()
                    .add("Id", b.id.clone())
                    .add("Status", b.status.clone())
                    .add("Release", b.release.clone())
                    .add("Description", b.description.clone())
                    .add("Started", output::ago(&b.started))
                    .add("Elapsed", output::elapsed(&b.started, &b.ended))
                    .print()?;
            }
        }
        Some(BuildsCommand::Logs { id }) => {
            let stream = client
                .logs(&LogTarget::Build { app, id }, &LogsOptions::default())
                .await?;
            logs::print_stream(stream).await?;
        }
    }
    Ok(0)
}
