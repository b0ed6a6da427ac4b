//! The single audit writer task: group commit, chain extension, stdout sink.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{AuditEvent, ChainKey};
use crate::store::{AuditRow, Store};

/// Most events committed in one transaction.
const MAX_BATCH: usize = 256;
/// How long a batch of outcomes alone waits for company.
const LINGER: Duration = Duration::from_millis(5);
/// Queue length; beyond it callers wait (back-pressure rather than unbounded memory).
const QUEUE: usize = 4096;

/// Why an event could not be recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The database refused or could not be reached.
    #[error("audit store unavailable: {0}")]
    Store(String),
    /// The writer has shut down.
    #[error("audit writer is shut down")]
    Closed,
}

enum Job {
    Event {
        event: Box<AuditEvent>,
        ack: Option<oneshot::Sender<Result<i64, AuditError>>>,
    },
    Flush(oneshot::Sender<()>),
}

impl Job {
    /// True when a caller is waiting for this job to finish.
    fn is_awaited(&self) -> bool {
        match self {
            Job::Event { ack, .. } => ack.is_some(),
            Job::Flush(_) => true,
        }
    }
}

/// Handle to the audit writer. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

impl AuditLog {
    /// Starts the writer task.
    pub fn start(store: Store, key: ChainKey, stdout: bool) -> (AuditLog, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(store, key, stdout, rx));
        (AuditLog { tx }, task)
    }

    /// Records `event` durably; returns its sequence number once committed.
    pub async fn record(&self, event: AuditEvent) -> Result<i64, AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Event {
                event: Box::new(event),
                ack: Some(ack),
            })
            .await
            .map_err(|_| AuditError::Closed)?;
        done.await.map_err(|_| AuditError::Closed)?
    }

    /// Queues `event` without waiting (outcomes: the request event is already durable, so a
    /// lost outcome shows as a request without one, never as a silent gap).
    pub fn record_later(&self, event: AuditEvent) {
        let job = Job::Event {
            event: Box::new(event),
            ack: None,
        };
        if let Err(mpsc::error::TrySendError::Full(job)) = self.tx.try_send(job) {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(job).await;
            });
        }
    }

    /// Waits until everything queued before this call is written (or has failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Job::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(store: Store, key: ChainKey, stdout: bool, mut rx: mpsc::Receiver<Job>) {
    let printer = stdout.then(Printer::start);
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if !batch.iter().any(Job::is_awaited) && batch.len() < MAX_BATCH {
            // Only outcomes, which nobody waits for: linger briefly so they share the next
            // request event's commit instead of costing one of their own.
            let room = MAX_BATCH - batch.len();
            let _ = tokio::time::timeout(LINGER, rx.recv_many(&mut batch, room)).await;
        }
        let mut events = Vec::with_capacity(batch.len());
        let mut acks = Vec::with_capacity(batch.len());
        let mut flushes = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Event { event, ack } => {
                    events.push(*event);
                    acks.push(ack);
                }
                Job::Flush(done) => flushes.push(done),
            }
        }
        if !events.is_empty() {
            let count = events.len();
            let result = write_with_retry(&store, &key, events).await;
            match result {
                Ok(rows) => {
                    // Waiting requests go first; the stdout copy is not what they wait for.
                    for (ack, row) in acks.into_iter().zip(&rows) {
                        if let Some(ack) = ack {
                            let _ = ack.send(Ok(row.seq));
                        }
                    }
                    if let Some(printer) = &printer {
                        printer.print(rows);
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, events = count, "audit write failed");
                    for ack in acks.into_iter().flatten() {
                        let _ = ack.send(Err(err.clone()));
                    }
                }
            }
        }
        for done in flushes {
            match &printer {
                Some(printer) => printer.flush(done),
                None => {
                    let _ = done.send(());
                }
            }
        }
    }
    // Everything committed is on stdout before the writer reports itself finished.
    if let Some(printer) = &printer {
        let (done, wait) = oneshot::channel();
        printer.flush(done);
        let _ = wait.await;
    }
}

/// The stdout sink's own thread: serialising and writing the JSON lines took ~5 % of an async
/// worker's time under load, and a pipe or terminal that is slow to drain must not hold up the
/// commits behind it. Lines keep commit order (one thread, one queue).
struct Printer {
    tx: Option<std::sync::mpsc::Sender<PrintJob>>,
}

enum PrintJob {
    Rows(Vec<AuditRow>),
    Flush(oneshot::Sender<()>),
}

impl Printer {
    fn start() -> Printer {
        let (tx, rx) = std::sync::mpsc::channel::<PrintJob>();
        let spawned = std::thread::Builder::new()
            .name("audit-stdout".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        PrintJob::Rows(rows) => print_rows(&rows),
                        PrintJob::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        if let Err(e) = &spawned {
            tracing::warn!(error = %e, "no thread for the audit stdout sink; printing inline");
        }
        Printer {
            tx: spawned.is_ok().then_some(tx),
        }
    }

    fn print(&self, rows: Vec<AuditRow>) {
        match &self.tx {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(PrintJob::Rows(rows))) =
                    tx.send(PrintJob::Rows(rows))
                {
                    print_rows(&rows);
                }
            }
            None => print_rows(&rows),
        }
    }

    /// Completes `done` once every row handed over before it is written.
    fn flush(&self, done: oneshot::Sender<()>) {
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

/// One quick retry covers a transient lock or connection hiccup; after that the callers get
/// the error (and their requests a 503).
async fn write_with_retry(
    store: &Store,
    key: &ChainKey,
    events: Vec<AuditEvent>,
) -> Result<Vec<AuditRow>, AuditError> {
    let events: Arc<[AuditEvent]> = events.into();
    let link = |key: ChainKey| move |prev: &str, seq: i64, e: &AuditEvent| key.link(prev, seq, e);
    match store.append_audit(events.clone(), link(key.clone())).await {
        Ok(rows) => Ok(rows),
        Err(first) => {
            tracing::warn!(error = %first, "audit write failed, retrying once");
            tokio::time::sleep(Duration::from_millis(50)).await;
            store
                .append_audit(events, link(key.clone()))
                .await
                .map_err(|e| AuditError::Store(e.to_string()))
        }
    }
}

/// JSON lines on stdout, one per committed event, for log shippers. The batch goes out in one
/// write (stdout is line-buffered: line by line would be a system call per event).
fn print_rows(rows: &[AuditRow]) {
    let mut buf = Vec::with_capacity(rows.len() * 512);
    for row in rows {
        if serde_json::to_writer(&mut buf, &JsonLine::from(row)).is_ok() {
            buf.push(b'\n');
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&buf);
    let _ = out.flush();
}

/// RFC 3339 UTC time with milliseconds.
pub fn format_time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The stdout form of an event, serialised straight from the row (no intermediate JSON tree).
#[derive(serde::Serialize)]
struct JsonLine<'a> {
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
