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

/// Takes `--rack NAME` (or `--rack=NAME`) out of a passed-through command's `args`: it names
/// one of this CLI's racks, whose credential `convox` then runs with (left in, `convox`
/// would get the current rack's credential and a rack name it reads as its own). `given` is
/// `--rack` before the command; both naming different racks is refused.
pub fn take_rack(
    given: Option<String>,
    args: Vec<String>,
) -> CliResult<(Option<String>, Vec<String>)> {
    let mut rack = given;
    let mut kept = Vec::with_capacity(args.len());
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let named = if arg == "--rack" {
            Some(args.next().ok_or_else(|| {
                CliError::Usage("--rack needs a rack name (see `rack-gateway racks`)".into())
            })?)
        } else {
            arg.strip_prefix("--rack=").map(str::to_string)
        };
        match (named, &rack) {
            (Some(name), Some(before)) if *before != name => {
                return Err(CliError::Usage(format!(
                    "--rack names two racks: {before} and {name}"
                )));
            }
            (Some(name), _) => rack = Some(name),
            (None, _) => kept.push(arg),
        }
    }
    Ok((rack, kept))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_rack_is_taken_out_of_a_passed_through_command() {
        let taken = take_rack(None, args(&["certs", "--rack", "prod", "-a", "web"]));
        assert_eq!(
            taken.ok(),
            Some((Some("prod".into()), args(&["certs", "-a", "web"])))
        );
        let taken = take_rack(Some("prod".into()), args(&["certs", "--rack=prod"]));
        assert_eq!(taken.ok(), Some((Some("prod".into()), args(&["certs"]))));
        assert!(take_rack(Some("dev".into()), args(&["certs", "--rack", "prod"])).is_err());
        assert!(take_rack(None, args(&["certs", "--rack"])).is_err());
        let untouched = take_rack(None, args(&["certs", "-a", "web"]));
        assert_eq!(untouched.ok(), Some((None, args(&["certs", "-a", "web"]))));
    }
}
