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

/// The `n`th `KEY=value` given to `env set`, as its name and value.
///
/// Refusals never quote what was given: a value passed without its `KEY=` (`env set
/// $DATABASE_URL`) is often a secret, and would land in CI logs. For the same reason a name
/// must look like one (Kubernetes' rule: letters, digits, `_`, `.`, `-`, not starting with a
/// digit), or a URL with `?sslmode=require` in it would be taken as a name, and printed.
fn variable(n: usize, pair: &str) -> CliResult<(&str, &str)> {
    let Some((k, v)) = pair.split_once('=') else {
        return Err(CliError::Usage(format!(
            "variable #{n} is not KEY=value: it has no `=` (was a value given without its \
             name?)"
        )));
    };
    let k = k.trim();
    if k.is_empty() {
        return Err(CliError::Usage(format!(
            "variable #{n} has no name before its `=`"
        )));
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if !k.chars().all(name_char) || k.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(CliError::Usage(format!(
            "variable #{n} is not KEY=value: the part before its first `=` is not a variable \
             name (letters, digits, _, . and -, not starting with a digit; was a value given \
             without its name?)"
        )));
    }
    // `render` puts one variable on each line: a line break would start another variable.
    if v.contains(['\n', '\r']) {
        return Err(CliError::Usage(format!(
            "the value of {k} has a line break, which would make the rest of it other \
             variables: base64-encode a multi-line value and decode it in the app (e.g. \
             {k}=\"$(openssl base64 -A < file)\")"
        )));
    }
    Ok((k, v))
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
            // All checked before anything is asked of the gateway.
            let variables = pairs
                .iter()
                .enumerate()
                .map(|(i, pair)| variable(i + 1, pair))
                .collect::<CliResult<Vec<_>>>()?;
            let mut env = if replace {
                Env::new()
            } else {
                current(&client, &app, release).await?
            };
            let mut keys = Vec::new();
            for (k, v) in variables {
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

    fn refused(n: usize, pair: &str) -> String {
        match variable(n, pair) {
            Ok(kv) => panic!("{pair:?} was taken as {kv:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn variables_are_read_from_key_value_pairs() {
        assert_eq!(variable(1, "A=1=x").ok(), Some(("A", "1=x")));
        assert_eq!(variable(1, " B =").ok(), Some(("B", "")));
        assert_eq!(variable(1, "app.port-2=x").ok(), Some(("app.port-2", "x")));
    }

    /// A line break in a value would become a line of its own in the release's environment:
    /// another variable, set by whoever wrote the value.
    #[test]
    fn values_with_line_breaks_are_refused() {
        for pair in [
            "A=1\nB=2",
            "A=1\rB=2",
            "A=x\r\n",
            "CERT=-----BEGIN\nabc\n-----END",
        ] {
            let err = refused(1, pair);
            assert!(
                err.contains("line break") && err.contains("base64"),
                "{err}"
            );
            assert!(!err.contains("B=2") && !err.contains("abc"), "{err}");
        }
    }

    /// A value given without its `KEY=` (`env set $DATABASE_URL`) is not repeated in the
    /// error: it would land in CI logs.
    #[test]
    fn refusals_do_not_repeat_what_was_given() {
        let secret = "hunter2hunter2";
        for (n, pair) in [
            (2, format!("postgres://app:{secret}@db.internal/app")),
            (2, format!("={secret}")),
            (2, format!("pass word {secret}=x")),
            (
                2,
                format!("postgres://app:{secret}@db.internal/app?sslmode=require"),
            ),
        ] {
            let err = refused(n, &pair);
            assert!(!err.contains(secret), "{err}");
            assert!(err.contains("#2"), "says which one: {err}");
        }
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
