//! `rack-gateway-server`: the gateway (`serve`), the one-command dev stack (`dev`), migrations
//! and admin commands that work directly against the configured database.

mod admin;
mod cli;
mod dev;
mod export;
mod limits;
mod logging;
mod notify;
mod output;
mod rotate;
mod serve;
mod verify;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// mimalloc rather than glibc's malloc: a proxied request allocates and frees many small
/// buffers across threads, and glibc's arena locking and consolidation took about a quarter of
/// the gateway's CPU (scripts/bench: 205–249 → 137–168 µs per GET). Built with `no_thp`: asking
/// for transparent huge pages raised the resident set after load from ~50 to ~60 MiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for every TLS client in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match gateway::config::worker_threads(&|name| std::env::var(name).ok()) {
        Ok(Some(n)) => {
            builder.worker_threads(n);
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return ExitCode::FAILURE;
        }
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let audience = match cli.command {
            Command::Serve | Command::Dev(_) => logging::Audience::Service,
            _ => logging::Audience::Command,
        };
        logging::init(audience)?;
        warn_about_environment(audience);
        match cli.command {
            Command::Serve => serve::run().await,
            Command::Dev(args) => dev::run(args).await,
            Command::Migrate => admin::migrate().await,
            Command::Tokens(cmd) => admin::tokens(cmd).await,
            Command::Users(cmd) => admin::users(cmd).await,
            Command::Roles(cmd) => admin::roles(cmd).await,
            Command::AppRules(cmd) => admin::app_rules(cmd).await,
            Command::Mfa(cmd) => admin::mfa(cmd).await,
            Command::Audit(cli::AuditCommand::Verify) => verify::run().await,
            Command::Audit(cli::AuditCommand::Export(args)) => export::run(*args).await,
            Command::Audit(cli::AuditCommand::RotateKey) => rotate::run().await,
            Command::Notify(cmd) => notify::run(cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `… | head`: the reader has what it wanted; no message, as other tools end.
        Err(err) if err.is::<output::StdoutClosed>() => {
            ExitCode::from(output::STDOUT_CLOSED_STATUS)
        }
        Err(err) => {
            eprintln!("error: {}", report(&err));
            ExitCode::FAILURE
        }
    }
}

/// Warns about what in the environment is most likely a mistake: a variable that looks like a
/// misspelt setting (`DATABSE_URL` would leave an admin command working on a new SQLite file
/// in the working directory, not the gateway's database), and, for a command, an unchecked
/// connection to a remote PostgreSQL server (`serve` and `dev` say so when they connect).
fn warn_about_environment(audience: logging::Audience) {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    for warning in gateway::config::misspelt_settings(names.iter().map(String::as_str)) {
        tracing::warn!("{warning}");
    }
    if audience == logging::Audience::Command
        && let Ok(url) = std::env::var("DATABASE_URL")
        && let Some(warning) =
            gateway::config::unverified_database(&url, |name| std::env::var(name).ok())
    {
        tracing::warn!("{warning}");
    }
}

/// `err` and its causes joined with `: `, leaving out a cause whose text the message before
/// it already ends with (errors that print their source, as `#[error("…: {0}")]` does, would
/// otherwise say the same thing two or three times).
fn report(err: &anyhow::Error) -> String {
    gateway::error::with_causes(err.as_ref())
}

#[cfg(test)]
mod tests {
    use super::report;

    /// An error that prints its source in its own message, as `#[error("…: {0}")]` does.
    #[derive(Debug)]
    struct Database(std::io::Error);

    impl std::fmt::Display for Database {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "database error: {}", self.0)
        }
    }

    impl std::error::Error for Database {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "pool timed out");
        let err = anyhow::Error::new(Database(timeout)).context("cannot open the store");
        assert_eq!(
            report(&err),
            "cannot open the store: database error: pool timed out"
        );
        let plain = anyhow::anyhow!("one").context("two");
        assert_eq!(report(&plain), "two: one");
    }
}
