//! The stdout sink: committed rows as JSON lines, written by a thread of its own so that a
//! reader that is slow (or gone) never holds up a commit; gap lines say what it could not print.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::foreign::ForeignRows;
use crate::store::AuditRow;

/// The stdout sink writes at most this often (the lines of all batches committed meanwhile in
/// one write).
const PRINT_PAUSE: Duration = Duration::from_millis(10);
/// Most committed rows waiting for the stdout sink (about a second's worth at full speed);
/// beyond it they are dropped from stdout, with a gap line (see [`Printer`]).
const PRINT_BACKLOG: usize = 32_768;

/// The stdout sink's own thread: serialising and writing the JSON lines took ~5 % of an async
/// worker's time under load, and a pipe or terminal that is slow to drain must not hold up the
/// commits behind it. Lines keep commit order (one thread, one queue). At most
/// [`PRINT_BACKLOG`] rows wait for it: when stdout stalls (a log shipper that stopped reading)
/// the rows beyond are dropped rather than held until memory runs out, and a gap line says how
/// many (the database, the source of truth, has every one).
pub(super) struct Printer {
    tx: Option<std::sync::mpsc::Sender<PrintJob>>,
    backlog: Arc<Backlog>,
    limit: usize,
}

/// Rows handed to the printer thread and not yet written, and rows dropped since the last gap
/// line.
#[derive(Debug, Default)]
struct Backlog {
    queued: AtomicUsize,
    dropped: AtomicUsize,
}

enum PrintJob {
    Rows(Vec<AuditRow>),
    Flush(oneshot::Sender<()>),
}

impl Printer {
    pub(super) fn start(foreign: Option<ForeignRows>) -> Printer {
        Printer::start_to(unbuffered_stdout(), PRINT_BACKLOG, foreign)
    }

    /// A printer writing to `out`, holding at most `limit` rows, and what admin commands
    /// commit when `foreign` is given.
    fn start_to(out: Box<dyn Write + Send>, limit: usize, foreign: Option<ForeignRows>) -> Printer {
        let (tx, rx) = std::sync::mpsc::channel::<PrintJob>();
        let backlog = Arc::new(Backlog::default());
        let print_loop = PrintLoop {
            out,
            stdout: StdoutState::default(),
            failing: false,
            foreign,
            backlog: backlog.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("audit-stdout".into())
            .spawn(move || print_loop.run(&rx));
        if let Err(e) = &spawned {
            tracing::warn!(error = %e, "no thread for the audit stdout sink; printing inline");
        }
        Printer {
            tx: spawned.is_ok().then_some(tx),
            backlog,
            limit,
        }
    }

    pub(super) fn print(&self, rows: Vec<AuditRow>) {
        let Some(tx) = &self.tx else {
            let _ = StdoutState::default().write(&mut std::io::stdout(), &rows);
            return;
        };
        let n = rows.len();
        if self.backlog.queued.fetch_add(n, Ordering::SeqCst) + n > self.limit {
            self.backlog.queued.fetch_sub(n, Ordering::SeqCst);
            if self.backlog.dropped.fetch_add(n, Ordering::SeqCst) == 0 {
                // Said now, from here: the printer thread, stuck in its write, says how many
                // only once stdout moves again (if ever).
                tracing::warn!(
                    backlog = self.limit,
                    "audit stdout is not being read: lines are being dropped (the database has \
                     every event; a gap line will say how many)"
                );
            }
            return;
        }
        if let Err(std::sync::mpsc::SendError(PrintJob::Rows(rows))) = tx.send(PrintJob::Rows(rows))
        {
            self.backlog.queued.fetch_sub(n, Ordering::SeqCst);
            let _ = StdoutState::default().write(&mut std::io::stdout(), &rows);
        }
    }

    /// Completes `done` once every row handed over before it is written.
    pub(super) fn flush(&self, done: oneshot::Sender<()>) {
        match &self.tx {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(PrintJob::Flush(done))) =
                    tx.send(PrintJob::Flush(done))
                {
                    let _ = done.send(());
                }
            }
            None => {
                let _ = done.send(());
            }
        }
    }
}

/// The printer thread: rows in commit order, admin commands' rows when they show up, gap
/// lines for what it could not print.
struct PrintLoop {
    out: Box<dyn Write + Send>,
    stdout: StdoutState,
    /// Set while writes fail (stdout closed: the log shipper exited), so that it is said once,
    /// not for every batch.
    failing: bool,
    /// What admin commands commit (see [`ForeignRows`]), for a gateway's own printer.
    foreign: Option<ForeignRows>,
    backlog: Arc<Backlog>,
}

impl PrintLoop {
    /// Prints what `rx` brings until every sender is gone.
    fn run(mut self, rx: &std::sync::mpsc::Receiver<PrintJob>) {
        let mut pending: Vec<AuditRow> = Vec::new();
        let mut flushes = Vec::new();
        self.start_foreign();
        loop {
            // Woken at least every `foreign::EVERY`, so that an admin command's events seen
            // as a gap are printed even when nothing follows them.
            let first = match rx.recv_timeout(super::foreign::EVERY) {
                Ok(job) => Some(job),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let timed_out = first.is_none();
            for job in first.into_iter().chain(rx.try_iter()) {
                match job {
                    PrintJob::Rows(rows) => pending.extend(rows),
                    PrintJob::Flush(done) => flushes.push(done),
                }
            }
            // Usually before the rows whose numbers revealed them: in order.
            self.print_foreign(&pending, timed_out);
            let taken = pending.len();
            if let Some(foreign) = self.foreign.as_mut() {
                foreign.drop_fetched(&mut pending);
            }
            // The dropped rows came after those queued: the gap line follows them. Rows a
            // failed write lost are not counted as printed: the stop notes them.
            if self.write(&pending)
                && let Some(foreign) = self.foreign.as_ref()
            {
                foreign.wrote(&pending);
            }
            let dropped = self.backlog.dropped.swap(0, Ordering::SeqCst);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "audit stdout fell behind: lines dropped (the database has every event)"
                );
                write_gap(&mut self.out, dropped);
            }
            self.backlog.queued.fetch_sub(taken, Ordering::SeqCst);
            pending.clear();
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
            // Let the next batches gather: a wake-up per commit was half a thread switch per
            // request under load.
            std::thread::sleep(PRINT_PAUSE);
        }
    }

    /// Where the count of admin commands' rows starts: the chain's head now, before this
    /// gateway serves, so that an admin command's events from its first moments are not
    /// missed; and what the last run could not print.
    fn start_foreign(&mut self) {
        let Some(foreign) = self.foreign.as_mut() else {
            return;
        };
        if let Some(unprinted) = foreign.unprinted_at_last_stop() {
            write_unprinted(&mut self.out, unprinted);
        }
        let theirs = foreign.idle(std::time::Instant::now());
        self.print_theirs(&theirs);
    }

    /// Admin commands' rows that are due, given the gateway's own `pending` rows (or none,
    /// after a quiet wait).
    fn print_foreign(&mut self, pending: &[AuditRow], timed_out: bool) {
        let Some(foreign) = self.foreign.as_mut() else {
            return;
        };
        let now = std::time::Instant::now();
        let theirs = if timed_out && pending.is_empty() {
            foreign.idle(now)
        } else {
            foreign.saw(pending);
            foreign.due(now)
        };
        self.print_theirs(&theirs);
    }

    /// Prints admin commands' `rows`, counting them as printed once written.
    fn print_theirs(&mut self, rows: &[AuditRow]) {
        if self.write(rows)
            && let Some(foreign) = self.foreign.as_mut()
        {
            foreign.wrote(rows);
        }
    }

    /// Writes `rows`, saying when stdout starts or stops failing; whether they all went out.
    fn write(&mut self, rows: &[AuditRow]) -> bool {
        // Nothing to write says nothing about stdout.
        if rows.is_empty() {
            return true;
        }
        let ok = self.stdout.write(&mut self.out, rows);
        if !ok {
            if !self.failing {
                tracing::warn!(
                    "audit stdout is closed or failing: lines are not printed (the database \
                     has every event; a gap line says which when stdout works again, or the \
                     next start does)"
                );
            }
            if let Some(foreign) = &self.foreign {
                foreign.write_failed();
            }
        } else if self.failing {
            tracing::info!("audit stdout works again (a gap line says what it missed)");
        }
        self.failing = !ok;
        ok
    }
}

/// What the stdout sink's failed writes left behind: the rows they lost, said by a gap line at
/// the head of the next write that works, and whether a line was cut short (a full disk takes
/// part of a write), which that write ends first so the gap line stands on a line of its own.
#[derive(Debug)]
struct StdoutState {
    at_line_start: bool,
    /// Rows lost: how many, and the lowest and highest sequence numbers among them.
    lost: Option<(usize, i64, i64)>,
}

impl Default for StdoutState {
    fn default() -> Self {
        StdoutState {
            at_line_start: true,
            lost: None,
        }
    }
}

impl StdoutState {
    /// Writes `rows` as JSON lines to `out`, after what earlier failures call for; whether
    /// everything was written.
    fn write(&mut self, out: &mut dyn Write, rows: &[AuditRow]) -> bool {
        let mut buf = Vec::with_capacity(rows.len() * 512 + 256);
        if !self.at_line_start {
            buf.push(b'\n');
        }
        if let Some((count, from, to)) = self.lost {
            let line = serde_json::json!({
                "type": "audit_gap",
                "ts": format_time(std::time::SystemTime::now()),
                "from_seq": from,
                "to_seq": to,
                "not_printed": count,
                "message": "stdout refused these events' lines (closed or full); the database \
                            has every one (rack-gateway-server audit verify)",
            });
            buf.extend_from_slice(line.to_string().as_bytes());
            buf.push(b'\n');
        }
        let gap_end = buf.len();
        // Where each row's line ends in `buf`: those past what was written are lost.
        let mut ends = Vec::with_capacity(rows.len());
        for row in rows {
            if serde_json::to_writer(&mut buf, &JsonLine::from(row)).is_ok() {
                buf.push(b'\n');
            }
            ends.push(buf.len());
        }
        let (written, ok) = write_counted(out, &buf);
        if let Some(last) = written.checked_sub(1).and_then(|i| buf.get(i)) {
            self.at_line_start = *last == b'\n';
        }
        if ok {
            self.lost = None;
            return true;
        }
        if written >= gap_end {
            // The gap line went out: what it names is told.
            self.lost = None;
        }
        for (row, end) in rows.iter().zip(&ends) {
            if *end > written {
                self.lost = Some(match self.lost {
                    None => (1, row.seq, row.seq),
                    Some((n, from, to)) => (n + 1, from.min(row.seq), to.max(row.seq)),
                });
            }
        }
        false
    }
}

/// Stdout without std's line buffer: after a write the disk took only in part, that buffer
/// keeps some of the rest and counts it as written, then sends it ahead of whatever comes
/// next, so neither the lines lost nor where a cut line ends could be told. The sink writes
/// whole batches itself, so nothing is lost by going straight to the file descriptor.
#[cfg(unix)]
fn unbuffered_stdout() -> Box<dyn Write + Send> {
    use std::os::fd::AsFd;
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        // No stdout to copy (closed at start): std's handle treats that as a sink.
        Err(_) => Box::new(std::io::stdout()),
    }
}

#[cfg(not(unix))]
fn unbuffered_stdout() -> Box<dyn Write + Send> {
    Box::new(std::io::stdout())
}

/// Writes `buf` to `out` as far as it goes: how many bytes went out, and whether all did (and
/// were flushed).
fn write_counted(out: &mut dyn Write, buf: &[u8]) -> (usize, bool) {
    let mut done = 0;
    while done < buf.len() {
        match out.write(&buf[done..]) {
            Ok(0) => return (done, false),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return (done, false),
        }
    }
    (done, out.flush().is_ok())
}

/// The line standing for `dropped` events the sink could not keep up with.
fn write_gap(out: &mut dyn Write, dropped: usize) {
    let line = serde_json::json!({
        "type": "audit_gap",
        "ts": format_time(std::time::SystemTime::now()),
        "dropped": dropped,
        "message": "stdout fell behind and these events were not printed; the database has \
                    every one (rack-gateway-server audit verify)",
    });
    let _ = writeln!(out, "{line}");
}

/// The line standing for the events the last run committed but could not print.
fn write_unprinted(out: &mut dyn Write, unprinted: super::foreign::Unprinted) {
    let mut line = serde_json::json!({
        "type": "audit_gap",
        "ts": format_time(std::time::SystemTime::now()),
        "to_seq": unprinted.to,
        "message": "the gateway's last run stopped while stdout was not being read, and these \
                    events were not printed; the database has every one (rack-gateway-server \
                    audit verify)",
    });
    if let (Some(from), Some(map)) = (unprinted.from, line.as_object_mut()) {
        map.insert("from_seq".into(), from.into());
    }
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// RFC 3339 UTC time with milliseconds.
pub fn format_time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The stdout form of an event, serialised straight from the row (no intermediate JSON tree).
#[derive(serde::Serialize)]
pub(super) struct JsonLine<'a> {
    r#type: &'static str,
    ts: String,
    seq: i64,
    kind: &'a super::EventKind,
    request_id: &'a str,
    actor_type: &'a super::ActorType,
    user_email: &'a Option<String>,
    token_name: &'a Option<String>,
    method: &'a Option<String>,
    path: &'a Option<String>,
    action: &'a str,
    rbac_decision: &'a super::Decision,
    status: Option<i64>,
    latency_ms: Option<i64>,
    client_ip: &'a Option<String>,
    user_agent: &'a Option<String>,
    details: &'a serde_json::Value,
    hash: &'a str,
}

impl<'a> From<&'a AuditRow> for JsonLine<'a> {
    fn from(row: &'a AuditRow) -> Self {
        let e = &row.event;
        let ts = UNIX_EPOCH + Duration::from_millis(u64::try_from(e.ts).unwrap_or(0));
        JsonLine {
            r#type: "audit",
            ts: format_time(ts),
            seq: row.seq,
            kind: &e.kind,
            request_id: &e.request_id,
            actor_type: &e.actor_type,
            user_email: &e.user_email,
            token_name: &e.token_name,
            method: &e.method,
            path: &e.path,
            action: &e.action,
            rbac_decision: &e.rbac_decision,
            status: e.status,
            latency_ms: e.latency_ms,
            client_ip: &e.client_ip,
            user_agent: &e.user_agent,
            details: &e.details,
            hash: &row.hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, EventKind};
    use std::sync::{Mutex, PoisonError};

    /// A stdout that takes nothing until opened, then keeps what it is given.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        taken: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, changed) = &*self.open;
            let mut is_open = open.lock().unwrap_or_else(PoisonError::into_inner);
            while !*is_open {
                is_open = changed
                    .wait(is_open)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            self.taken
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn row(seq: i64) -> AuditRow {
        AuditRow {
            seq,
            event: AuditEvent::new(EventKind::Request, format!("r{seq}"), "convox:apps:list"),
            prev_hash: "0".repeat(64),
            hash: "1".repeat(64),
        }
    }

    #[test]
    fn a_stalled_stdout_holds_a_bounded_backlog_and_reports_the_gap() {
        let gate = Gate::default();
        let printer = Printer::start_to(Box::new(gate.clone()), 10, None);
        // The first row reaches the thread, which then waits on the closed stdout.
        printer.print(vec![row(1)]);
        std::thread::sleep(Duration::from_millis(100));
        for batch in 0..4 {
            printer.print((0..5).map(|i| row(2 + batch * 5 + i)).collect());
        }
        assert!(printer.backlog.queued.load(Ordering::SeqCst) <= 10);
        // 1 held by the thread + 5 queued; the other three batches do not fit.
        assert_eq!(printer.backlog.dropped.load(Ordering::SeqCst), 15);
        {
            let (open, changed) = &*gate.open;
            *open.lock().unwrap_or_else(PoisonError::into_inner) = true;
            changed.notify_all();
        }
        let (done, wait) = oneshot::channel();
        printer.flush(done);
        let _ = wait.blocking_recv();
        let text =
            String::from_utf8_lossy(&gate.taken.lock().unwrap_or_else(PoisonError::into_inner))
                .into_owned();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let gaps: Vec<_> = lines.iter().filter(|l| l["type"] == "audit_gap").collect();
        assert_eq!(gaps.len(), 1, "{text}");
        assert_eq!(gaps[0]["dropped"], 15);
        assert_eq!(lines.len(), 1 + 1 + 5, "{text}");
        assert_eq!(printer.backlog.queued.load(Ordering::SeqCst), 0);
    }

    /// A stdout that takes `budget` more bytes (all when `None`), then fails every write: a
    /// disk that fills up, later freed.
    #[derive(Clone, Default)]
    struct Filling {
        budget: Arc<Mutex<Option<usize>>>,
        taken: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Filling {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
            let n = budget.map_or(buf.len(), |left| left.min(buf.len()));
            if n == 0 {
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
            if let Some(left) = budget.as_mut() {
                *left -= n;
            }
            self.taken
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Found by the 2026-12-04 fault pass: rows a failing stdout lost vanished from it without
    /// a word once it worked again (the sequence numbers jumped), and a line cut short by the
    /// full disk ran into the next one.
    #[test]
    fn a_stdout_that_fails_for_a_while_resumes_with_a_gap_line() {
        let out = Filling::default();
        let mut state = StdoutState::default();
        let mut sink: Box<dyn Write + Send> = Box::new(out.clone());
        assert!(state.write(&mut sink, &[row(1), row(2)]));
        // The disk fills 10 bytes into row 3's line.
        *out.budget.lock().unwrap_or_else(PoisonError::into_inner) = Some(10);
        assert!(!state.write(&mut sink, &[row(3), row(4)]));
        assert!(!state.write(&mut sink, &[row(5)]));
        *out.budget.lock().unwrap_or_else(PoisonError::into_inner) = None;
        assert!(state.write(&mut sink, &[row(6)]));
        assert!(state.write(&mut sink, &[row(7)]));
        let text =
            String::from_utf8_lossy(&out.taken.lock().unwrap_or_else(PoisonError::into_inner))
                .into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        let json = |l: &str| serde_json::from_str::<serde_json::Value>(l).ok();
        assert_eq!(json(lines[0]).map(|v| v["seq"].clone()), Some(1.into()));
        assert_eq!(json(lines[1]).map(|v| v["seq"].clone()), Some(2.into()));
        // The cut line stands alone, ended before the gap line.
        assert_eq!(lines[2].len(), 10, "{text}");
        assert!(json(lines[2]).is_none());
        let gap = json(lines[3]).unwrap_or_default();
        assert_eq!(gap["type"], "audit_gap", "{text}");
        assert_eq!(
            (&gap["from_seq"], &gap["to_seq"], &gap["not_printed"]),
            (&3.into(), &5.into(), &3.into()),
            "{gap}"
        );
        assert_eq!(json(lines[4]).map(|v| v["seq"].clone()), Some(6.into()));
        assert_eq!(json(lines[5]).map(|v| v["seq"].clone()), Some(7.into()));
    }
}
