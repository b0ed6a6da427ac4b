//! The MFA hook. When the gateway answers `mfa_required` (a change that needs a recent code from
//! the person's authenticator app), the CLI ends up here and says how to give one.

use crate::context::Target;
use crate::error::CliError;

/// What to tell the user when the gateway asks for a recent authenticator code.
pub fn required(target: Option<&Target>, gateway_message: &str) -> CliError {
    let rack = match target {
        Some(t @ Target::Gateway(_)) => format!(" --rack {}", t.name()),
        _ => String::new(),
    };
    CliError::Explained(format!(
        "this change needs a recent code from your authenticator app ({gateway_message}): run \
         `rack-gateway{rack} mfa verify` (or `mfa verify --key` for a security key), then run \
         the command again"
    ))
}
