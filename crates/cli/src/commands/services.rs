//! `services`, `scale`, `restart`.

use std::collections::BTreeMap;

use convox_api::client::{ProcessListOptions, ServiceUpdateOptions};
use serde_json::json;

use super::app_name;
use crate::cli::{AppArg, ScaleArgs};
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

/// `services`.
pub async fn list(ctx: &Ctx, app: &AppArg) -> CliResult<i32> {
    let app = app_name(app)?;
    let services = ctx.client()?.services(&app).await?;
    if ctx.json {
        output::print_json(&services)?;
        return Ok(0);
    }
    let mut t = Table::new(&["SERVICE", "DOMAIN", "PORTS"]);
    for s in &services {
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| {
                if p.balancer != 0 {
                    format!("{}:{}", p.balancer, p.container)
                } else {
                    p.container.to_string()
                }
            })
            .collect();
        t.row(vec![s.name.clone(), s.domain.clone(), ports.join(" ")]);
    }
    t.print()?;
    Ok(0)
}

/// `restart`: every service, in name order.
pub async fn restart(ctx: &Ctx, app: &AppArg) -> CliResult<i32> {
    let app = app_name(app)?;
    let client = ctx.client()?;
    let mut services = client.services(&app).await?;
    services.sort_by(|a, b| a.name.cmp(&b.name));
    for s in &services {
        output::step(&format!("Restarting {}", s.name))?;
        client.restart_service(&app, &s.name).await?;
        output::ok(None)?;
    }
    Ok(0)
}

/// `scale [service] [--count N] [--cpu N] [--memory N] [--min N] [--max N]`.
pub async fn scale(ctx: &Ctx, args: ScaleArgs) -> CliResult<i32> {
    let app = app_name(&args.app)?;
    let client = ctx.client()?;
    let change = ServiceUpdateOptions {
        count: args.count,
        cpu: args.cpu,
        memory: args.memory,
        min: args.min,
        max: args.max,
    };
    if !change.is_empty() {
        let service = args.service.ok_or_else(|| {
            CliError::Usage("name the service to scale: scale <service> --count N".into())
        })?;
        if change.count.is_some() && (change.min.is_some() || change.max.is_some()) {
            return Err(CliError::Usage(
                "--count and --min/--max cannot be combined".into(),
            ));
        }
        output::step(&format!("Scaling {service}"))?;
        client.update_service(&app, &service, &change).await?;
        output::ok(None)?;
        return Ok(0);
    }
    let mut services = client.services(&app).await?;
    if let Some(only) = &args.service {
        services.retain(|s| &s.name == only);
        if services.is_empty() {
            return Err(CliError::Failed(format!(
                "service {only:?} not found in app {app}"
            )));
        }
    }
    services.sort_by(|a, b| a.name.cmp(&b.name));
    let mut running: BTreeMap<String, i64> = BTreeMap::new();
    for p in client
        .processes(&app, &ProcessListOptions::default())
        .await?
    {
        *running.entry(p.name).or_default() += 1;
    }
    if ctx.json {
        let list: Vec<_> = services
            .iter()
            .map(|s| {
                json!({
                    "service": s.name,
                    "desired": s.count,
                    "running": running.get(&s.name).copied().unwrap_or(0),
                    "cpu": s.cpu,
                    "memory": s.memory,
                    "min": s.min,
                    "max": s.max,
                })
            })
            .collect();
        output::print_json(&list)?;
        return Ok(0);
    }
    let mut t = Table::new(&[
        "SERVICE", "DESIRED", "RUNNING", "CPU", "MEMORY", "MIN", "MAX",
    ]);
    let cell = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    for s in &services {
        t.row(vec![
            s.name.clone(),
            s.count.to_string(),
            running.get(&s.name).copied().unwrap_or(0).to_string(),
            s.cpu.to_string(),
            s.memory.to_string(),
            cell(s.min),
            cell(s.max),
        ]);
    }
    t.print()?;
    Ok(0)
}
