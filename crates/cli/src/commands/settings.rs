//! `settings`: what the gateway runs with, defaults included (`GET /api/v1/settings`;
//! `gateway:settings:read`, admins) — a secret only as set or not.

use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

/// Runs `settings`: SECTION, SETTING, VALUE (or the sections as JSON).
pub async fn run(ctx: &Ctx) -> CliResult<i32> {
    let (selected, api) = ctx.gateway("settings are a rack-gateway's")?;
    let sections = api
        .settings(&selected.entry.token)
        .await
        .map_err(CliError::Client)?;
    if ctx.json {
        output::print_json(&sections)?;
        return Ok(0);
    }
    let mut table = Table::new(&["SECTION", "SETTING", "VALUE"]);
    for section in &sections {
        for s in &section.settings {
            table.row(vec![
                output::printable(&section.title).into_owned(),
                output::printable(&s.name).into_owned(),
                output::printable(&s.value).into_owned(),
            ]);
        }
    }
    table.print()?;
    Ok(0)
}
