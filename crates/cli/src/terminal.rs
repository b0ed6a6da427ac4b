//! The local terminal: whether there is one, its size, and raw mode for interactive sessions.

use std::io::IsTerminal;

/// Whether stdin and stdout are both terminals (an interactive session).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// Whether stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// The terminal's (width, height), if there is one.
pub fn size() -> Option<(u16, u16)> {
    crossterm::terminal::size()
        .ok()
        .filter(|(w, h)| *w > 0 && *h > 0)
}

/// Raw mode for as long as it lives (keys go to the remote process as typed; Ctrl-C too).
#[derive(Debug)]
pub struct RawMode {
    active: bool,
}

impl RawMode {
    /// Enters raw mode if `wanted` and possible.
    pub fn enter(wanted: bool) -> Self {
        let active = wanted && crossterm::terminal::enable_raw_mode().is_ok();
        Self { active }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.active {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}
