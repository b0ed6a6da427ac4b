//! `ps`: list, info, stop.

use convox_api::client::ProcessListOptions;

use super::app_name;
use crate::cli::{PsArgs, PsCommand};
use crate::context::Ctx;
use crate::error::CliResult;
use crate::output::{self, Info, Table};

/// `ps …`.
pub async fn run(ctx: &Ctx, args: PsArgs) -> CliResult<i32> {
    let app = app_name(&args.app)?;
    let client = ctx.client()?;
    match args.command {
        None => {
            let opts = ProcessListOptions {
                service: args.service,
                release: args.release,
            };
            let ps = client.processes(&app, &opts).await?;
            if ctx.json {
                output::print_json(&ps)?;
            } else {
                let mut t =
                    Table::new(&["ID", "SERVICE", "STATUS", "RELEASE", "STARTED", "COMMAND"]);
                for p in &ps {
                    t.row(vec![
                        p.id.clone(),
                        p.name.clone(),
                        p.status.clone(),
                        p.release.clone(),
                        output::ago(&p.started),
                        p.command.clone(),
                    ]);
                }
                t.print()?;
            }
        }
        Some(PsCommand::Info { pid }) => {
            let p = client.process(&app, &pid).await?;
            if ctx.json {
                output::print_json(&p)?;
            } else {
                Info::new()
                    .add("Id", p.id.clone())
                    .add("App", p.app.clone())
                    .add("Command", p.command.clone())
                    .add("Instance", p.instance.clone())
                    .add("Release", p.release.clone())
                    .add("Service", p.name.clone())
                    .add("Started", output::ago(&p.started))
                    .add("Status", p.status.clone())
                    .print()?;
            }
        }
        Some(PsCommand::Stop { pid }) => {
            output::step(&format!("Stopping {pid}"))?;
            client.stop_process(&app, &pid).await?;
            output::ok(None)?;
        }
    }
    Ok(0)
}
