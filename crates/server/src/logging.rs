//! Diagnostic logs on stderr (stdout carries the audit JSON lines).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Sets up logging: `LOG_FORMAT=json|text` (default text), level from `LOG_LEVEL` or
/// `RUST_LOG` (default info).
pub fn init() {
    let filter = std::env::var("LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("warning: logging already set up: {e}");
    }
}
