//! `instances`.

use crate::context::Ctx;
use crate::error::CliResult;
use crate::output::{self, Table};

/// `instances`.
pub async fn instances(ctx: &Ctx) -> CliResult<i32> {
    let instances = ctx.client()?.instances().await?;
    if ctx.json {
        output::print_json(&instances)?;
        return Ok(0);
    }
    let percent = |used: f64, of: f64| {
        let share = if of > 0.0 { used / of } else { used };
        format!("{:.2}%", share * 100.0)
    };
    let mut t = Table::new(&[
        "ID", "STATUS", "STARTED", "PS", "CPU", "MEM", "PUBLIC", "PRIVATE",
    ]);
    for i in &instances {
        let (cpu, mem) = if i.cpu_allocatable > 0.0 && i.memory_allocatable > 0.0 {
            (
                percent(i.cpu, i.cpu_allocatable),
                percent(i.memory, i.memory_allocatable),
            )
        } else {
            (percent(i.cpu, 0.0), percent(i.memory, 0.0))
        };
        t.row(vec![
            i.id.clone(),
            i.status.clone(),
            output::ago(&i.started),
            i.processes.to_string(),
            cpu,
            mem,
            i.public_ip.clone(),
            i.private_ip.clone(),
        ]);
    }
    t.print()?;
    Ok(0)
}
