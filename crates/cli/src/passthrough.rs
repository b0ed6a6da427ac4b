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

/// Refuses to run `convox` when it is this program (`ln -s rack-gateway convox`): it would
/// hand the command to itself again, without end. When either path cannot be resolved there
/// is nothing to compare, and `convox` is run.
fn refuse_itself(convox: &Path) -> CliResult<()> {
    let Ok(this) = std::env::current_exe() else {
        return Ok(());
    };
    if same_file(convox, &this) {
        return Err(CliError::Usage(format!(
            "the `convox` on PATH ({}) is this program, rack-gateway, which would run itself \
             again without end: put the stock convox CLI first on PATH instead",
            convox.display()
        )));
    }
    Ok(())
}

/// Whether `a` and `b` are one file: the same path once links are resolved, or (on Unix) the
/// same inode, as a hard link is.
fn same_file(a: &Path, b: &Path) -> bool {
    if let (Ok(a), Ok(b)) = (a.canonicalize(), b.canonicalize())
        && a == b
    {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return a.dev() == b.dev() && a.ino() == b.ino();
        }
    }
    false
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
    refuse_itself(&convox)?;
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

    /// A `convox` on PATH that is this program (a link to it) would start itself again
    /// with the same arguments, without end.
    #[cfg(unix)]
    #[test]
    fn a_convox_that_is_this_program_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let this = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
        let link = dir.path().join("convox");
        std::os::unix::fs::symlink(&this, &link).unwrap_or_else(|e| panic!("{e}"));
        let err = refuse_itself(&link).map_err(|e| e.to_string());
        assert!(
            err.as_ref().is_err_and(|e| e.contains("is this program")),
            "{err:?}"
        );
        // Through a link to the directory too: what counts is the file it ends at.
        let dir_link = dir.path().join("bin");
        let parent = this.parent().unwrap_or(&this);
        std::os::unix::fs::symlink(parent, &dir_link).unwrap_or_else(|e| panic!("{e}"));
        let via_dir = dir_link.join(this.file_name().unwrap_or_default());
        assert!(refuse_itself(&via_dir).is_err());
        // A hard link has no target to resolve: the same inode is enough.
        let hard = dir.path().join("convox-hard");
        if std::fs::hard_link(&this, &hard).is_ok() {
            assert!(refuse_itself(&hard).is_err());
        }
        // Another program is run.
        let other = dir.path().join("other-convox");
        std::fs::write(&other, "#!/bin/sh\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(refuse_itself(&other).is_ok());
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
