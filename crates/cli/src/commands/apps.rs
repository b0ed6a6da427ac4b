//! `apps`: list, info, create, delete.

use std::time::Duration;

use convox_api::client::ClientError;

use super::{app_name, wait};
use crate::cli::{AppsArgs, AppsCommand};
use crate::context::Ctx;
use crate::error::CliResult;
use crate::output::{self, Info, Table};

/// `apps …`.
pub async fn run(ctx: &Ctx, args: AppsArgs) -> CliResult<i32> {
    let client = ctx.client()?;
    match args.command {
        None => {
            let apps = client.apps().await?;
            if ctx.json {
                output::print_json(&apps)?;
            } else {
                let mut t = Table::new(&["APP", "STATUS", "RELEASE"]);
                for a in &apps {
                    t.row(vec![a.name.clone(), a.status.clone(), a.release.clone()]);
                }
                t.print()?;
            }
        }
        Some(AppsCommand::Info { name }) => {
            let name = match name {
                Some(n) => n,
                None => app_name(&args.app)?,
            };
            let a = client.app(&name).await?;
            if ctx.json {
                output::print_json(&a)?;
            } else {
                let mut i = Info::new();
                i.add("Name", a.name.clone())
                    .add("Status", a.status.clone())
                    .add("Generation", a.generation.clone())
                    .add("Locked", a.locked.to_string())
                    .add("Release", a.release.clone());
                if !a.router.is_empty() {
                    i.add("Router", a.router.clone());
                }
                i.print()?;
            }
        }
        Some(AppsCommand::Create { name, generation }) => {
            output::step(&format!("Creating {name}"))?;
            client.create_app(&name, generation.as_deref()).await?;
            wait::until(
                &format!("{name} to be running"),
                Duration::from_secs(600),
                || async {
                    let a = client.app(&name).await?;
                    Ok((a.status == "running").then_some(()))
                },
            )
            .await?;
            output::ok(None)?;
        }
        Some(AppsCommand::Delete { name }) => {
            output::step(&format!("Deleting {name}"))?;
            client.delete_app(&name).await?;
            wait::until(
                &format!("{name} to be deleted"),
                Duration::from_secs(600),
                || async {
                    match client.app(&name).await {
                        Err(ClientError::Api { status: 404, .. }) => Ok(Some(())),
                        Err(e) => Err(e.into()),
                        Ok(_) => Ok(None),
                    }
                },
            )
            .await?;
            output::ok(None)?;
        }
    }
    Ok(0)
}
