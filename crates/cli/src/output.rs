//! Output the way `convox` prints it: tables with upper-case headers and aligned columns,
//! key/value blocks, `Doing something... OK` steps, relative times; or JSON.

use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{CliError, CliResult};

/// A table: upper-case headers, columns padded to their widest cell, two spaces between.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline. Line breaks and tabs
    /// in a cell are shown escaped (see [`one_line`]).
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let rows: Vec<Vec<Cow<'_, str>>> = self
            .rows
            .iter()
            .map(|row| row.iter().take(columns).map(|c| one_line(c)).collect())
            .collect();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| -> String {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                    out.push_str(&" ".repeat(pad));
                }
            }
            format!("{}\n", out.trim_end())
        };
        let mut out = line(self.headers.clone());
        for row in &rows {
            let cells: Vec<&str> = (0..columns)
                .map(|i| row.get(i).map(|c| c.as_ref()).unwrap_or(""))
                .collect();
            out.push_str(&line(cells));
        }
        out
    }

    /// Prints the table to stdout.
    pub fn print(&self) -> CliResult<()> {
        write_stdout(&self.render())
    }
}

/// `cell` on one line: a line feed, carriage return or tab shows as `\n`, `\r`, `\t`, so a
/// server's text (a release description) cannot start a row of its own in a table, or shift
/// the cells after it into other columns.
fn one_line(cell: &str) -> Cow<'_, str> {
    if !cell.contains(['\n', '\r', '\t']) {
        return Cow::Borrowed(cell);
    }
    let mut out = String::with_capacity(cell.len() + 8);
    for c in cell.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A key/value block (`convox apps info`): keys padded to the widest, values aligned;
/// a value's further lines are indented to the value column.
#[derive(Debug, Default)]
pub struct Info {
    rows: Vec<(String, String)>,
}

impl Info {
    /// An empty block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a row.
    pub fn add(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.rows.push((key.to_string(), value.into()));
        self
    }

    /// The block as text.
    pub fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0)
            + 2;
        let mut out = String::new();
        for (key, value) in &self.rows {
            let mut lines = value.lines();
            let first = lines.next().unwrap_or("");
            out.push_str(format!("{key:<width$}{first}").trim_end());
            out.push('\n');
            for more in lines {
                out.push_str(format!("{:width$}{more}", "").trim_end());
                out.push('\n');
            }
        }
        out
    }

    /// Prints the block to stdout.
    pub fn print(&self) -> CliResult<()> {
        write_stdout(&self.render())
    }
}

/// Prints `value` as pretty JSON.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> CliResult<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Failed(format!("cannot encode JSON: {e}")))?;
    write_raw(&format!("{}\n", json_printable(&text)))
}

/// `text` made safe for a terminal: control characters other than newline and tab (escape
/// sequences that move the cursor, clear the screen, set the window title or the clipboard),
/// C1 controls, and characters that hide or reorder text (bidirectional overrides) each
/// become `�`. Everything the CLI prints from a server goes through here, except what is
/// raw by nature: log lines, a process's output, an environment value asked for.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    gateway_core::text::readable(text)
}

/// JSON text with the characters [`printable`] would replace written as `\uXXXX` escapes
/// instead: the same data for a program reading it, nothing a terminal acts on. (serde_json
/// escapes C0 controls itself, not C1 ones or bidirectional overrides.)
fn json_printable(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if (c == '\x7f' || (c as u32) >= 0x80) && gateway_core::text::is_hidden(c) {
            for unit in c.encode_utf16(&mut [0; 2]) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes server-provided text as it is ([`write_stdout`] makes it [`printable`] first): log
/// lines and values the user asked for, whose bytes are the point.
pub fn write_raw(text: &str) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(CliError::io("writing to stdout", e)),
    }
}

/// Writes to stdout, [`printable`]; a closed pipe (`| head`) ends the program quietly.
pub fn write_stdout(text: &str) -> CliResult<()> {
    write_raw(&printable(text))
}

/// Writes values a program may want byte for byte (environment values): as they are into a
/// pipe or file (`env > backup.env`, `$(rack-gateway env get KEY)`), [`printable`] on a
/// terminal, where a value set by someone else must not drive it.
pub fn write_values(text: &str) -> CliResult<()> {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        write_stdout(text)
    } else {
        write_raw(text)
    }
}

/// Whether a `Doing something... ` line waits for its `OK`.
static LINE_OPEN: AtomicBool = AtomicBool::new(false);

/// Starts a step: prints `message... ` without a newline.
pub fn step(message: &str) -> CliResult<()> {
    LINE_OPEN.store(true, Ordering::SeqCst);
    write_stdout(&format!("{message}... "))
}

/// Ends a step with `OK` (and optional details: `OK, R1234`).
pub fn ok(detail: Option<&str>) -> CliResult<()> {
    LINE_OPEN.store(false, Ordering::SeqCst);
    match detail {
        Some(d) => write_stdout(&format!("OK, {d}\n")),
        None => write_stdout("OK\n"),
    }
}

/// Ends a step left open by an error, so the error starts on its own line.
pub fn close_open_line() {
    if LINE_OPEN.swap(false, Ordering::SeqCst) {
        let _ = write_stdout("\n");
    }
}

/// "3 minutes ago", as `convox` (go-humanize) prints it; empty for an unset time.
pub fn ago(t: &DateTime<Utc>) -> String {
    if convox_api::client::is_zero_time(t) {
        return String::new();
    }
    let secs = (Utc::now() - *t).num_seconds();
    let (secs, suffix) = if secs < 0 {
        (-secs, "from now")
    } else {
        (secs, "ago")
    };
    const MINUTE: i64 = 60;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    const WEEK: i64 = 7 * DAY;
    const MONTH: i64 = 30 * DAY;
    const YEAR: i64 = 365 * DAY;
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit} {suffix}")
        } else {
            format!("{n} {unit}s {suffix}")
        }
    };
    match secs {
        0 => "now".into(),
        s if s < MINUTE => plural(s, "second"),
        s if s < HOUR => plural(s / MINUTE, "minute"),
        s if s < DAY => plural(s / HOUR, "hour"),
        s if s < WEEK => plural(s / DAY, "day"),
        s if s < MONTH => plural(s / WEEK, "week"),
        s if s < YEAR => plural(s / MONTH, "month"),
        s => plural(s / YEAR, "year"),
    }
}

/// A build's run time (`1m30s`), empty while it runs.
pub fn elapsed(start: &DateTime<Utc>, end: &DateTime<Utc>) -> String {
    if convox_api::client::is_zero_time(end) || convox_api::client::is_zero_time(start) {
        return String::new();
    }
    let total = (*end - *start).num_seconds().max(0);
    let (min, sec) = (total / 60, total % 60);
    if min >= 1 {
        format!("{min}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

/// A span of milliseconds for people: `3h12m`, `45m`, `20s`.
pub fn span_ms(ms: i64) -> String {
    let secs = (ms / 1000).max(0);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

/// A unix-milliseconds time as RFC 3339 (UTC).
pub fn unix_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A byte count for people: `512 B`, `12.3 KiB`, `4.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's text cannot drive the terminal: escape sequences (clear screen, window
    /// title, OSC 52 clipboard writes), C1 controls, carriage returns and bidi overrides all
    /// become `�`; newlines, tabs and ordinary text stay. JSON keeps the data, escaped.
    #[test]
    fn server_text_is_printable() {
        let hostile = "app\u{1b}[2J\u{1b}]52;c;ZWNobyBwd25lZA==\u{7}\rx\u{9b}1m\u{202e}txt.exe";
        let shown = printable(hostile);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(!shown.contains('\u{202e}'));
        assert!(shown.starts_with("app\u{FFFD}[2J"));
        assert_eq!(printable("a\tb\nc"), "a\tb\nc");
        assert!(matches!(printable("plain"), std::borrow::Cow::Borrowed(_)));
        let json = json_printable(&serde_json::to_string(&hostile).unwrap_or_default());
        assert!(
            !json.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{json}"
        );
        let back: String = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(
            back, hostile,
            "the JSON still says exactly what the server said"
        );
    }

    #[test]
    fn tables_align_like_convox() {
        let mut t = Table::new(&["APP", "STATUS", "RELEASE"]);
        t.row(vec!["api".into(), "running".into(), "RABC".into()]);
        t.row(vec!["worker-long".into(), "updating".into(), String::new()]);
        assert_eq!(
            t.render(),
            "APP          STATUS    RELEASE\napi          running   RABC\nworker-long  updating\n"
        );
    }

    /// A server's text in a cell (a release description) cannot start a row of its own, or
    /// push the cells after it about: line breaks and tabs show as `\n`, `\r`, `\t`.
    #[test]
    fn table_cells_stay_on_their_row() {
        let mut t = Table::new(&["RELEASE", "DESCRIPTION", "STATUS"]);
        t.row(vec![
            "R1".into(),
            "fix\nR123  deploy  active\r\tx".into(),
            String::new(),
        ]);
        assert_eq!(
            t.render(),
            "RELEASE  DESCRIPTION                     STATUS\n\
             R1       fix\\nR123  deploy  active\\r\\tx\n"
        );
    }

    #[test]
    fn info_blocks_indent_continuation_lines() {
        let mut i = Info::new();
        i.add("Id", "R1").add("Env", "A=1\nB=2");
        assert_eq!(i.render(), "Id   R1\nEnv  A=1\n     B=2\n");
    }

    #[test]
    fn relative_times() {
        let now = Utc::now();
        assert_eq!(ago(&(now - chrono::Duration::seconds(5))), "5 seconds ago");
        assert_eq!(ago(&(now - chrono::Duration::minutes(61))), "1 hour ago");
        assert_eq!(ago(&(now - chrono::Duration::days(3))), "3 days ago");
        assert_eq!(ago(&convox_api::client::go_zero_time()), "");
        let start = now - chrono::Duration::seconds(95);
        assert_eq!(elapsed(&start, &now), "1m35s");
        assert_eq!(span_ms(3 * 3600 * 1000 + 12 * 60 * 1000), "3h12m");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
