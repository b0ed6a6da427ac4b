//! Diagnostic logs on stderr (stdout carries the audit JSON lines).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Sets up logging: `LOG_FORMAT=json|text` (default text), level from `LOG_LEVEL` or
/// `RUST_LOG` (default info). A value it cannot use stops start-up, like any other setting:
/// a typo must not quietly leave the gateway logging at another level or format.
pub fn init() -> anyhow::Result<()> {
    let (name, filter) = match (std::env::var("LOG_LEVEL"), std::env::var("RUST_LOG")) {
        (Ok(level), _) => ("LOG_LEVEL", level),
        (_, Ok(level)) => ("RUST_LOG", level),
        _ => ("LOG_LEVEL", "info".to_string()),
    };
    let filter = EnvFilter::try_new(filter.trim()).map_err(|_| {
        anyhow::anyhow!(
            "{name} is invalid: expected error, warn, info, debug, trace or a tracing filter such \
             as gateway=debug"
        )
    })?;
    let json = match std::env::var("LOG_FORMAT").as_deref().map(str::trim) {
        Err(_) | Ok("text") => false,
        Ok("json") => true,
        Ok(_) => anyhow::bail!("LOG_FORMAT is invalid: expected text or json"),
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
