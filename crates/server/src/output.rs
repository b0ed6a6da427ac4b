//! The admin commands' output on stdout.
//!
//! `println!` panics when stdout fails: `users list | head -1` ended in "failed printing to
//! stdout: Broken pipe" and exit status 101. Here a reader that went away ends the command
//! quietly with the status a SIGPIPE death gives (141), as other Unix tools end, and any
//! other failure (a full disk under `> tokens.txt`) is the command's error: a new token or a
//! verdict is never lost without a word.

use std::io::Write;

/// Exit status for output cut short by its reader (128 + SIGPIPE).
pub const STDOUT_CLOSED_STATUS: u8 = 141;

/// Stdout's reader went away; nothing more can be said there.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed by its reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `args` and a newline to stdout.
pub fn line(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// `println!` for command output, through [`line()`]: evaluates to its `anyhow::Result`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
