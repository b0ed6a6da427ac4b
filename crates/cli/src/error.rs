//! The CLI's one error type.

use convox_api::client::ClientError;

/// Everything a command can fail with. The message is what the user sees after `ERROR: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or the situation is not usable as it stands (no rack, unknown rack…).
    #[error("{0}")]
    Usage(String),
    /// The config file cannot be read or written.
    #[error("{0}")]
    Config(String),
    /// A rack or gateway call failed; turned into a gateway-aware message by
    /// [`crate::explain::explain`] before it is shown.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A message that already names the problem and its fix.
    #[error("{0}")]
    Explained(String),
    /// The rack did what it was asked and the result is a failure (a failed build…).
    #[error("{0}")]
    Failed(String),
    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl CliError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CliError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for commands.
pub type CliResult<T> = Result<T, CliError>;
