//! Commands rack-gateway does not implement run the stock `convox` CLI, with `RACK_URL`
//! pointing at the gateway and carrying the stored credential.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::context::Target;
use crate::error::{CliError, CliResult};

/// Finds `convox` on `PATH`.
pub fn find_convox() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("convox"))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(p: &Path) -> bool {
    p.is_file()
}

/// Runs `convox <args>` against `target`; returns its exit code.
pub fn run(target: &Target, args: &[String]) -> CliResult<i32> {
    let command = args.first().map(String::as_str).unwrap_or_default();
    let Some(convox) = find_convox() else {
        return Err(CliError::Usage(format!(
            "`{command}` is not a rack-gateway command, and the stock `convox` CLI is not on \
             PATH to run it (install convox, or see `rack-gateway --help`)"
        )));
    };
    let status = Command::new(&convox)
        .args(args)
        .env("RACK_URL", target.rack_url()?)
        .status()
        .map_err(|e| CliError::io(format!("running {}", convox.display()), e))?;
    Ok(status.code().unwrap_or(1))
}
