//! The MFA hook. When the gateway answers `mfa_required` (a 401 or 403), the CLI ends up here.
//! Today it explains what to do; once the gateway's MFA lands, this is the one place that will
//! prompt for a code or a security-key touch and retry the request.

use crate::context::Target;
use crate::error::CliError;

/// What to tell the user when the gateway asks for multi-factor authentication.
pub fn required(target: Option<&Target>, gateway_message: &str) -> CliError {
    let account = target
        .map(|t| format!("{}/account", t.base_url()))
        .unwrap_or_else(|| "the gateway's account page".into());
    CliError::Explained(format!(
        "this action needs multi-factor authentication ({gateway_message}): \
         complete MFA at {account}, then run the command again"
    ))
}
