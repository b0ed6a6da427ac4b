//! `env`: list, get, set, unset. The environment lives in releases: reading takes the newest
//! (or the `--release`) release's `env`; a change creates a release with the whole new environment
//! (`POST /apps/{app}/releases env=…`), promoted only with `--promote` — as `convox env set`.
//! Values the gateway masks for this caller are kept exactly as they arrive.

use std::collections::BTreeMap;

use convox_api::client::{Client, ReleaseCreateOptions};

use super::{app_name, releases};
use crate::cli::{EnvArgs, EnvCommand};
use crate::context::Ctx;
use crate::error::{CliError, CliResult};
use crate::output;

/// An environment: `KEY=value` lines, sorted by key.
pub type Env = BTreeMap<String, String>;

/// Parses `KEY=value` lines (Convox's `Environment.Load`).
pub fn parse(text: &str) -> Env {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// A line of a `.env` file piped to `env set`, as `KEY=value`: blank lines and `#` comments
/// are skipped, a leading `export ` is dropped, and a value wrapped in matching quotes loses
/// them (as shells and dotenv tools read such files).
fn dotenv_line(line: &str) -> Option<String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let line = line.strip_prefix("export ").map_or(line, str::trim_start);
    let (key, value) = line.split_once('=')?;
    let value = value.trim_end();
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
        .unwrap_or(value);
    Some(format!("{}={unquoted}", key.trim()))
}

/// Renders an environment as sorted `KEY=value` lines without a trailing newline.
pub fn render(env: &Env) -> String {
    env.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The environment of `release`, or of the app's newest release (as `convox env` reads it:
/// a change made without `--promote` is visible to the next `env` command).
async fn current(client: &Client, app: &str, release: Option<&str>) -> CliResult<Env> {
    let id = match release {
        Some(r) => r.to_string(),
        None => match client.releases(app, Some(1)).await?.into_iter().next() {
            Some(r) => r.id,
            None => return Ok(Env::new()),
        },
    };
    Ok(parse(&client.release(app, &id).await?.env))
}

/// `env …`.
pub async fn run(ctx: &Ctx, args: EnvArgs) -> CliResult<i32> {
    let app = app_name(&args.app)?;
    let client = ctx.client()?;
    let release = args.release.as_deref();
    match args.command {
        None => {
            let env = current(&client, &app, release).await?;
            if ctx.json {
                output::print_json(&env)?;
            } else if !env.is_empty() {
                output::write_values(&format!("{}\n", render(&env)))?;
            }
        }
        Some(EnvCommand::Get { key }) => {
            let env = current(&client, &app, release).await?;
            let value = env
                .get(&key)
                .ok_or_else(|| CliError::Failed(format!("env not found: {key}")))?;
            // The value itself, byte for byte, for `$(rack-gateway env get KEY)`.
            output::write_values(&format!("{value}\n"))?;
        }
        Some(EnvCommand::Set {
            pairs,
            promote,
            replace,
        }) => {
            let mut pairs = pairs;
            if pairs.is_empty() && !crate::terminal::stdin_is_terminal() {
                let text = crate::stdin::read_all()
                    .map_err(|e| CliError::io("reading variables from stdin", e))?;
                pairs.extend(text.lines().filter_map(dotenv_line));
            }
            if pairs.is_empty() {
                return Err(CliError::Usage(
                    "nothing to set: give KEY=value pairs (or pipe them in)".into(),
                ));
            }
            let mut env = if replace {
                Env::new()
            } else {
                current(&client, &app, release).await?
            };
            let mut keys = Vec::new();
            for pair in &pairs {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| CliError::Usage(format!("{pair:?} is not KEY=value")))?;
                let k = k.trim();
                if k.is_empty() {
                    return Err(CliError::Usage(format!("{pair:?} has no variable name")));
                }
                if k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(CliError::Usage(format!(
                        "{k:?} is not a variable name: no spaces or control characters"
                    )));
                }
                keys.push(k.to_string());
                env.insert(k.to_string(), v.to_string());
            }
            keys.sort();
            keys.dedup();
            change(
                &client,
                &app,
                release,
                &env,
                &format!("Setting {}", keys.join(", ")),
                promote,
            )
            .await?;
        }
        Some(EnvCommand::Unset { keys, promote }) => {
            let mut env = current(&client, &app, release).await?;
            for k in &keys {
                env.remove(k);
            }
            let mut names = keys.clone();
            names.sort();
            change(
                &client,
                &app,
                release,
                &env,
                &format!("Unsetting {}", names.join(", ")),
                promote,
            )
            .await?;
        }
    }
    Ok(0)
}

/// Creates the release with `env`, prints its id, promotes it if asked.
async fn change(
    client: &Client,
    app: &str,
    parent: Option<&str>,
    env: &Env,
    step: &str,
    promote: bool,
) -> CliResult<()> {
    output::step(step)?;
    let release = client
        .create_release(
            app,
            &ReleaseCreateOptions {
                env: Some(render(env)),
                parent_release: parent.map(str::to_string),
                ..ReleaseCreateOptions::default()
            },
        )
        .await?;
    output::ok(None)?;
    output::write_stdout(&format!("Release: {}\n", release.id))?;
    if promote {
        releases::promote(client, app, &release.id, false, false).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_round_trip_sorted() {
        let env = parse("B=2\nA=1=x\n\n  C  =3\n=nokey\nnoeq");
        assert_eq!(render(&env), "A=1=x\nB=2\nC=3");
    }

    #[test]
    fn dotenv_lines_are_read_as_shells_read_them() {
        assert_eq!(dotenv_line("export X=1").as_deref(), Some("X=1"));
        assert_eq!(
            dotenv_line("Y=\"quoted value\"").as_deref(),
            Some("Y=quoted value")
        );
        assert_eq!(dotenv_line("Z='a=b'").as_deref(), Some("Z=a=b"));
        assert_eq!(
            dotenv_line("W=\"unbalanced").as_deref(),
            Some("W=\"unbalanced")
        );
        assert_eq!(dotenv_line("# a comment=no"), None);
        assert_eq!(dotenv_line("   "), None);
        assert_eq!(dotenv_line("no equals sign"), None);
    }
}
