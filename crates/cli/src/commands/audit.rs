//! `audit`: the gateway's audit trail, newest first, filtered on the gateway
//! (`GET /api/v1/audit/events`, permission `gateway:audit:read`: admins, or a token given it).

use crate::cli::AuditArgs;
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{self, Table};

/// Most events `--all` fetches: past it, the rest is `audit export`'s job on the server.
const ALL_LIMIT: usize = 100_000;

/// Events per request with `--all`.
const ALL_PAGE: usize = 1_000;

/// Runs `audit`.
pub async fn run(ctx: &Ctx, args: AuditArgs) -> CliResult<i32> {
    let (selected, api) = ctx.gateway("audit reads a rack-gateway's trail")?;
    let wanted = if args.all {
        ALL_LIMIT
    } else {
        usize::from(args.limit)
    };
    let mut before = args.before;
    let mut events = Vec::new();
    let mut older = None;
    while events.len() < wanted {
        let page = (wanted - events.len()).min(if args.all { ALL_PAGE } else { wanted });
        let mut query = args.query();
        query.push(("limit", page.to_string()));
        if let Some(b) = before {
            query.push(("before", b.to_string()));
        }
        let answer = api
            .audit_events(&selected.entry.token, &query)
            .await
            .map_err(CliError::Client)?;
        events.extend(answer.events);
        older = answer.next_before;
        match older {
            // A page cut short by the gateway's scan limit goes on from where it stopped.
            Some(next) if args.all || events.len() < wanted => before = Some(next),
            _ => break,
        }
    }
    if ctx.json {
        output::print_json(&events)?;
    } else {
        print_table(&events)?;
    }
    if let Some(next) = older {
        eprintln!("older events: add --before {next}");
    }
    Ok(0)
}

/// SEQ, TIME, WHO, ACTION, DECISION, STATUS and the request, one event a line.
fn print_table(events: &[serde_json::Value]) -> CliResult<()> {
    let mut table = Table::new(&[
        "SEQ", "TIME", "KIND", "WHO", "ACTION", "DECISION", "STATUS", "REQUEST",
    ]);
    let text = |v: &serde_json::Value| output::printable(v.as_str().unwrap_or("")).into_owned();
    for e in events {
        let who = match (e["user_email"].as_str(), e["token_name"].as_str()) {
            (_, Some(token)) => format!("token:{token}"),
            (Some(email), None) => email.to_string(),
            (None, None) => e["actor_type"].as_str().unwrap_or("").to_string(),
        };
        let request = match (e["method"].as_str(), e["path"].as_str()) {
            (Some(m), Some(p)) => format!("{m} {p}"),
            _ => String::new(),
        };
        table.row(vec![
            e["seq"].as_i64().map(|s| s.to_string()).unwrap_or_default(),
            text(&e["ts"]),
            text(&e["kind"]),
            output::printable(&who).into_owned(),
            text(&e["action"]),
            text(&e["rbac_decision"]),
            e["status"]
                .as_i64()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            output::printable(&request).into_owned(),
        ]);
    }
    table.print()
}
