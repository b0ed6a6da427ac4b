//! Diagnostic logs on stderr (stdout carries the audit JSON lines).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Sets up logging: `LOG_FORMAT=json|text` (default text), level from `LOG_LEVEL` or
/// `RUST_LOG` (default info). A value it cannot use stops start-up, like any other setting:
/// a typo must not quietly leave the gateway logging at another level or format.
pub fn init() -> anyhow::Result<()> {
    // Empty counts as unset, as for every other setting.
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let (name, filter) = match (set("LOG_LEVEL"), set("RUST_LOG")) {
        (Some(level), _) => ("LOG_LEVEL", level),
        (_, Some(level)) => ("RUST_LOG", level),
        _ => ("LOG_LEVEL", "info".to_string()),
    };
    let invalid = || {
        anyhow::anyhow!(
            "{name} is invalid: expected error, warn, info, debug, trace, off or a tracing \
             filter such as info,gateway=debug"
        )
    };
    // A bare word that is not a level is a filter for a module of that name: `warning` would
    // silence every log line, the warnings included.
    if !filter.split(',').map(str::trim).all(usable_directive) {
        return Err(invalid());
    }
    // PostgreSQL's notices (`relation "_sqlx_migrations" already exists, skipping` at every
    // start) are not news at info; a filter that names sqlx decides for itself.
    let filter = if filter.contains("sqlx") || filter.trim().eq_ignore_ascii_case("off") {
        filter.trim().to_string()
    } else {
        format!("{},sqlx::postgres::notice=warn", filter.trim())
    };
    let filter = EnvFilter::try_new(&filter).map_err(|_| invalid())?;
    let json = match set("LOG_FORMAT")
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("text") => false,
        Some("json") => true,
        Some(_) => anyhow::bail!("LOG_FORMAT is invalid: expected text or json"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("warning: logging already set up: {e}");
    }
    Ok(())
}

/// Whether `directive` (one comma-separated part of a filter) sets a level: a level name, or
/// `target=level`, or a span filter. A bare word would be read as a target and set nothing.
fn usable_directive(directive: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    directive.is_empty()
        || directive.contains('=')
        || directive.contains('[')
        || LEVELS.iter().any(|l| directive.eq_ignore_ascii_case(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_word_that_is_not_a_level_is_refused() {
        for ok in [
            "info",
            "WARN",
            "info,gateway=debug",
            "gateway=trace",
            "off",
            "info,",
        ] {
            assert!(ok.split(',').map(str::trim).all(usable_directive), "{ok}");
        }
        for bad in ["warning", "verbose", "info,loud"] {
            assert!(
                !bad.split(',').map(str::trim).all(usable_directive),
                "{bad}"
            );
        }
    }
}
