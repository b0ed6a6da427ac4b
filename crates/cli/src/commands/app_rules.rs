//! `app-rules`: per-app rules (`/api/v1/app-rules`) — secret and protected env vars, and the
//! commands and images an approved deploy may run. Anyone may read them; setting and clearing
//! them is for admins, after a recent code.

use std::collections::BTreeMap;

use crate::cli::{AppRulesArgs, AppRulesCommand};
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::gateway_api::{AppRules, AppRulesInfo};
use crate::output::{self, Table};

/// Runs `app-rules`.
pub async fn run(ctx: &Ctx, args: AppRulesArgs) -> CliResult<i32> {
    let (selected, api) = ctx.gateway("app rules are a rack-gateway's")?;
    let credential = &selected.entry.token;
    match args.command {
        None => {
            let all = api
                .all_app_rules(credential)
                .await
                .map_err(CliError::Client)?;
            if ctx.json {
                output::print_json(&all)?;
            } else if all.is_empty() {
                output::write_stdout("No app has rules.\n")?;
            } else {
                print_table(&all)?;
            }
        }
        Some(AppRulesCommand::Show { app }) => {
            let app = super::app_name(&app)?;
            let info = api
                .app_rules(credential, &app)
                .await
                .map_err(CliError::Client)?;
            if ctx.json {
                output::print_json(&info)?;
            } else {
                print_one(&info)?;
            }
        }
        Some(AppRulesCommand::Set {
            app,
            secret_env,
            protected_env,
            approved_commands,
            service_images,
        }) => {
            let app = super::app_name(&app)?;
            let images = service_images
                .map(|given| parse_images(&given))
                .transpose()?;
            if secret_env.is_none()
                && protected_env.is_none()
                && approved_commands.is_none()
                && images.is_none()
            {
                return Err(CliError::Usage(
                    "nothing to set: give --secret-env, --protected-env, --approved-command or \
                     --service-image (`rack-gateway app-rules set --help`)"
                        .into(),
                ));
            }
            let mut rules = api
                .app_rules(credential, &app)
                .await
                .map_err(CliError::Client)?
                .rules;
            if let Some(names) = secret_env {
                rules.secret_env = names;
            }
            if let Some(names) = protected_env {
                rules.protected_env = names;
            }
            if let Some(commands) = approved_commands {
                rules.approved_commands = commands;
            }
            if let Some(images) = images {
                rules.service_images = images;
            }
            let info = api
                .set_app_rules(credential, &app, &rules)
                .await
                .map_err(CliError::Client)?;
            output::write_stdout(&format!(
                "Rules of app {} set.\n",
                output::printable(&info.app)
            ))?;
            print_one(&info)?;
        }
        Some(AppRulesCommand::Clear { app }) => {
            let app = super::app_name(&app)?;
            let info = api
                .clear_app_rules(credential, &app)
                .await
                .map_err(CliError::Client)?;
            output::write_stdout(&format!(
                "Rules of app {} cleared.\n",
                output::printable(&info.app)
            ))?;
        }
    }
    Ok(0)
}

/// `SERVICE=PATTERN` flags as a map; a lone '' empties it.
fn parse_images(given: &[String]) -> CliResult<BTreeMap<String, String>> {
    let mut images = BTreeMap::new();
    for entry in given.iter().filter(|e| !e.trim().is_empty()) {
        let Some((service, pattern)) = entry.split_once('=') else {
            return Err(CliError::Usage(format!(
                "--service-image {}: expected SERVICE=PATTERN, as in \
                 web=ghcr.io/acme/web:{{commit}}",
                output::printable(entry)
            )));
        };
        images.insert(service.trim().to_string(), pattern.trim().to_string());
    }
    Ok(images)
}

/// APP, SECRET, PROTECTED, COMMANDS, IMAGES.
fn print_table(all: &[AppRulesInfo]) -> CliResult<()> {
    let mut table = Table::new(&["APP", "SECRET ENV", "PROTECTED ENV", "COMMANDS", "IMAGES"]);
    for info in all {
        let r = &info.rules;
        table.row(vec![
            output::printable(&info.app).into_owned(),
            listed(&r.secret_env),
            listed(&r.protected_env),
            r.approved_commands.len().to_string(),
            r.service_images.len().to_string(),
        ]);
    }
    table.print()
}

/// One app's rules, a line each.
fn print_one(info: &AppRulesInfo) -> CliResult<()> {
    let AppRules {
        secret_env,
        protected_env,
        approved_commands,
        service_images,
    } = &info.rules;
    let mut text = format!("App:               {}\n", output::printable(&info.app));
    text.push_str(&format!("Secret env:        {}\n", listed(secret_env)));
    text.push_str(&format!("Protected env:     {}\n", listed(protected_env)));
    if approved_commands.is_empty() {
        text.push_str("Approved commands: -\n");
    }
    for (i, command) in approved_commands.iter().enumerate() {
        let label = if i == 0 { "Approved commands:" } else { "" };
        text.push_str(&format!("{label:<18} {}\n", output::printable(command)));
    }
    if service_images.is_empty() {
        text.push_str("Service images:    -\n");
    }
    for (i, (service, pattern)) in service_images.iter().enumerate() {
        let label = if i == 0 { "Service images:" } else { "" };
        text.push_str(&format!(
            "{label:<18} {}={}\n",
            output::printable(service),
            output::printable(pattern)
        ));
    }
    if let Some(by) = &info.updated_by {
        text.push_str(&format!("Set by:            {}\n", output::printable(by)));
    }
    output::write_stdout(&text)?;
    Ok(())
}

/// A list, comma-separated, or `-`.
fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        output::printable(&names.join(",")).into_owned()
    }
}
