//! Diagnostic logs on stderr (stdout carries the audit JSON lines).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Who the log lines are for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// `serve` and `dev`: a log collector or a developer watching the stack, at info.
    Service,
    /// An admin command run by hand: its warnings only, without times or module names. They
    /// would otherwise go nowhere — a `DATABASE_URL` parameter the driver ignores, say.
    Command,
}

/// Sets up logging: `LOG_FORMAT=json|text` (default text), level from `LOG_LEVEL` or
/// `RUST_LOG` (default info for a service, warn for a command). A value it cannot use stops
/// start-up, like any other setting: a typo must not quietly leave the gateway logging at
/// another level or format.
pub fn init(audience: Audience) -> anyhow::Result<()> {
    // Empty counts as unset, as for every other setting.
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let default_level = match audience {
        Audience::Service => "info",
        Audience::Command => "warn",
    };
    let (name, filter) = match (set("LOG_LEVEL"), set("RUST_LOG")) {
        (Some(level), _) => ("LOG_LEVEL", level),
        (_, Some(level)) => ("RUST_LOG", level),
        _ => ("LOG_LEVEL", default_level.to_string()),
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
    let filter = EnvFilter::try_new(filter_text(&filter)).map_err(|_| invalid())?;
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
        // Its own report of a failed write goes out with `eprintln!`, which panics when stderr
        // fails (a log shipper gone, a full disk): the thread that logged (the audit writer, a
        // request) would die for a diagnostic line. A lost log line is the lesser harm.
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match (json, audience) {
        (true, _) => builder.json().try_init(),
        (false, Audience::Service) => builder.try_init(),
        (false, Audience::Command) => builder.without_time().with_target(false).try_init(),
    };
    if let Err(e) = result {
        eprintln!("warning: logging already set up: {e}");
    }
    Ok(())
}

/// Libraries whose debug and trace output carries what the rack sends and receives:
/// tungstenite logs the WebSocket handshake to the rack (its `Authorization` header: the rack
/// token), every message, and close frames' reasons, unmasked. Held at info, whatever the
/// filter says: secrets are never logged.
const CAPPED: [&str; 2] = ["tungstenite", "tokio_tungstenite"];

/// The filter the subscriber gets for `filter` as configured.
fn filter_text(filter: &str) -> String {
    let filter = filter.trim();
    let names_capped = |directive: &str| {
        let target = directive.split(['=', '[']).next().unwrap_or("").trim();
        CAPPED
            .iter()
            .any(|c| target == *c || target.starts_with(&format!("{c}::")))
    };
    let mut parts: Vec<String> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !names_capped(d))
        .map(str::to_string)
        .collect();
    if filter.eq_ignore_ascii_case("off") {
        return "off".into();
    }
    // PostgreSQL's notices (`relation "_sqlx_migrations" already exists, skipping` at every
    // start) are not news at info; a filter that names sqlx decides for itself.
    if !filter.contains("sqlx") {
        parts.push("sqlx::postgres::notice=warn".into());
    }
    // A cap, not a raise: no more than the filter's own level, and never past info.
    let global = filter
        .split(',')
        .map(str::trim)
        .filter_map(|d| LEVELS.iter().position(|l| d.eq_ignore_ascii_case(l)))
        .next_back()
        // Without a level of its own a filter shows only what it names.
        .unwrap_or(0);
    let info = LEVELS.iter().position(|l| *l == "info").unwrap_or(0);
    let cap = LEVELS[global.min(info)];
    parts.extend(CAPPED.iter().map(|c| format!("{c}={cap}")));
    parts.join(",")
}

/// Levels from quietest to loudest.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Whether `directive` (one comma-separated part of a filter) sets a level: a level name, or
/// `target=level`, or a span filter. A bare word would be read as a target and set nothing.
fn usable_directive(directive: &str) -> bool {
    directive.is_empty()
        || directive.contains('=')
        || directive.contains('[')
        || LEVELS.iter().any(|l| directive.eq_ignore_ascii_case(l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_libraries_that_log_the_rack_token_stay_at_info() {
        assert_eq!(
            filter_text("trace"),
            "trace,sqlx::postgres::notice=warn,tungstenite=info,tokio_tungstenite=info"
        );
        assert_eq!(
            filter_text("debug"),
            "debug,sqlx::postgres::notice=warn,tungstenite=info,tokio_tungstenite=info"
        );
        assert_eq!(
            filter_text(
                " info,tungstenite=trace,tokio_tungstenite::handshake=trace,gateway=debug "
            ),
            "info,gateway=debug,sqlx::postgres::notice=warn,tungstenite=info,\
             tokio_tungstenite=info"
        );
        assert_eq!(
            filter_text("sqlx=debug"),
            "sqlx=debug,tungstenite=off,tokio_tungstenite=off"
        );
        assert_eq!(
            filter_text("warn"),
            "warn,sqlx::postgres::notice=warn,tungstenite=warn,tokio_tungstenite=warn"
        );
        assert_eq!(filter_text("OFF"), "off");
        for text in [
            "trace",
            "info,tungstenite=trace",
            "debug",
            "warn,gateway=trace",
        ] {
            assert!(EnvFilter::try_new(filter_text(text)).is_ok(), "{text}");
        }
    }

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
