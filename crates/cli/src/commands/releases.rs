//! `releases`: list, info, promote, rollback (and the promote step `deploy` and `env` share).

use std::time::Duration;

use convox_api::client::{Client, ReleaseCreateOptions};

use super::{app_name, wait};
use crate::cli::{ReleasesArgs, ReleasesCommand};
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{self, Info, Table};

/// `releases …`.
pub async fn run(ctx: &Ctx, args: ReleasesArgs) -> CliResult<i32> {
    let app = app_name(&args.app)?;
    let client = ctx.client()?;
    match args.command {
        None => {
            let releases = client.releases(&app, args.limit).await?;
            if ctx.json {
                output::print_json(&releases)?;
                return Ok(0);
            }
            let active = client.app(&app).await?.release;
            let mut t = Table::new(&["ID", "STATUS", "BUILD", "CREATED", "DESCRIPTION"]);
            for r in &releases {
                let status = if r.id == active { "active" } else { "" };
                t.row(vec![
                    r.id.clone(),
                    status.into(),
                    r.build.clone(),
                    output::ago(&r.created),
                    r.description.clone(),
                ]);
            }
            t.print()?;
        }
        Some(ReleasesCommand::Info { id }) => {
            let r = client.release(&app, &id).await?;
            if ctx.json {
                output::print_json(&r)?;
            } else {
                Info::new()
                    .add("Id", r.id.clone())
                    .add("Build", r.build.clone())
                    .add(
                        "Created",
                        r.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    )
                    .add("Description", r.description.clone())
                    .add("Env", r.env.clone())
                    .print()?;
            }
        }
        Some(ReleasesCommand::Promote { id, force, wait }) => {
            let id = match id {
                Some(id) => id,
                None => client
                    .releases(&app, Some(1))
                    .await?
                    .into_iter()
                    .next()
                    .map(|r| r.id)
                    .ok_or_else(|| CliError::Failed(format!("{app} has no releases to promote")))?,
            };
            promote(&client, &app, &id, force, wait).await?;
        }
        Some(ReleasesCommand::Rollback { id, force, wait }) => {
            output::step(&format!("Rolling back to {id}"))?;
            let old = client.release(&app, &id).await?;
            let new = client
                .create_release(
                    &app,
                    &ReleaseCreateOptions {
                        build: Some(old.build),
                        env: Some(old.env),
                        ..ReleaseCreateOptions::default()
                    },
                )
                .await?;
            output::ok(Some(&new.id))?;
            promote(&client, &app, &new.id, force, wait).await?;
        }
    }
    Ok(0)
}

/// Promotes `id`; with `wait`, until the app runs it again.
pub async fn promote(
    client: &Client,
    app: &str,
    id: &str,
    force: bool,
    wait: bool,
) -> CliResult<()> {
    output::step(&format!("Promoting {id}"))?;
    client.promote_release(app, id, force).await?;
    output::ok(None)?;
    if wait {
        output::step(&format!("Waiting for {app} to run {id}"))?;
        wait::until(
            &format!("{app} to run {id}"),
            Duration::from_secs(1800),
            || async {
                let a = client.app(app).await?;
                Ok((a.status == "running" && a.release == id).then_some(()))
            },
        )
        .await?;
        output::ok(None)?;
    }
    Ok(())
}
