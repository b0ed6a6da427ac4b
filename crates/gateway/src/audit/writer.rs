//! The single audit writer task: group commit and chain extension. A batch's write and its
//! retry are in [`super::commit`]; the JSON lines on stdout in [`super::stdout`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gateway_core::scrub::Scrubber;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::commit::{Failed, Written, write_blocking_with_retry, write_with_retry};
use super::foreign::ForeignRows;
use super::in_doubt::{Abandoned, Doubts};
use super::retained::{Attempt, Retained};
use super::stdout::Printer;
use super::{AuditEvent, LinkingKeys};
use crate::store::{AuditRow, Generation, Store};

/// Most events committed in one transaction.
const MAX_BATCH: usize = 256;
/// Longest an outcome waits for the next commit while the writer is busy with others.
const LINGER: Duration = Duration::from_millis(5);
/// Longest a batch waits for requests that are on their way to the log (see [`Pending`]).
const COMPANY: Duration = Duration::from_micros(300);
/// Queue length; beyond it callers wait (back-pressure rather than unbounded memory).
const QUEUE: usize = 4096;
/// The event that says audit writes work again after failing (see [`AuditLog::try_recovery`]).
pub const RECOVERED_ACTION: &str = "gateway:audit:recovered";
/// A batch that takes longer than this to commit is reported (see [`SlowCommits`]).
const SLOW_COMMIT: Duration = Duration::from_millis(100);
/// At most one slow-commit report per this long; the ones between are counted in the next.
const SLOW_COMMIT_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Failed batches, logged at most once a second (see [`crate::log_throttle`]).
static FAILED_BATCHES: crate::log_throttle::Throttle = crate::log_throttle::Throttle::new(1000);

/// Why an event could not be recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The database refused or could not be reached.
    #[error("audit store unavailable: {0}")]
    Store(String),
    /// The writer has shut down.
    #[error("audit writer is shut down")]
    Closed,
    /// Not recorded: the credentials that authorised the request changed after they were read
    /// (see [`AuditLog::record_checked`]). Authorise it again from a fresh read.
    #[error("the credentials changed since they were read")]
    Stale,
}

enum Job {
    Event {
        event: Box<AuditEvent>,
        /// The credential generation that authorised the request, when it must still hold.
        read_at: Option<Generation>,
        ack: Option<oneshot::Sender<Result<i64, AuditError>>>,
    },
    Flush(oneshot::Sender<()>),
    /// Deferred events are waiting and the writer is asleep without a deadline.
    Wake,
}

/// Outcomes waiting for the next commit. They are queued without waking the writer: it picks
/// them up with the next request event's batch, or after [`LINGER`]. Waking it for each one
/// was a thread switch per request on the async workers and another on the writer.
#[derive(Default)]
struct Deferred {
    events: Mutex<Vec<AuditEvent>>,
    /// Set by the writer before it sleeps with no deadline; the next deferred event wakes it.
    writer_idle: AtomicBool,
    /// Requests that stopped waiting for their event (see [`Abandoned`]).
    gave_up: Mutex<Vec<String>>,
}

impl Deferred {
    /// Queues `events` for the next batch (the writer's own: it looks at the queue next).
    fn add(&self, events: Vec<AuditEvent>) {
        if !events.is_empty() {
            self.events
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(events);
        }
    }

    /// A request stopped waiting for its event (its caller was refused).
    fn gave_up(&self, request_id: String) {
        self.gave_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request_id);
    }

    /// Matches the requests that gave up against the committed events nobody took, and queues
    /// an outcome for each match.
    fn match_abandoned(&self, abandoned: &mut Abandoned) {
        let gave_up =
            std::mem::take(&mut *self.gave_up.lock().unwrap_or_else(PoisonError::into_inner));
        self.add(abandoned.match_up(gave_up));
    }

    fn take(&self) -> Vec<AuditEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn is_empty(&self) -> bool {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Whether the writer may sleep until the next job: true once it has announced that, and
    /// nothing was deferred before the announcement (a later one sees the flag and wakes it).
    fn writer_may_sleep(&self) -> bool {
        self.writer_idle.store(true, Ordering::SeqCst);
        if self.is_empty() {
            return true;
        }
        self.writer_idle.store(false, Ordering::SeqCst);
        false
    }
}

/// Handle to the audit writer. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: flume::Sender<Job>,
    deferred: Arc<Deferred>,
    on_the_way: Arc<AtomicUsize>,
    /// How far the stdout sink got (see `foreign`), when it has one.
    printed: Option<Arc<super::foreign::Printed>>,
    health: Arc<WriteHealth>,
    /// The rack's credentials, masked in every event before it is queued (see `mask`).
    rack_secrets: Arc<Scrubber>,
}

/// Whether the writer's latest attempt failed, for readiness: a gateway that refuses every
/// request for want of its audit trail must not report itself ready.
#[derive(Debug, Default)]
struct WriteHealth {
    failing: Mutex<Option<WriteFailure>>,
    /// Where events and commits are counted.
    metrics: Arc<crate::metrics::Metrics>,
    /// Set when the writer has ended: at shutdown, or before it by a panic, which would
    /// otherwise show only as every request refused (see [`AuditLog::stopped`]).
    stopped: AtomicBool,
    stopped_signal: tokio::sync::Notify,
}

/// Held by the running writer: marks it stopped however it ends, unwinding from a panic
/// included.
struct Running(Arc<WriteHealth>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        self.0.stopped_signal.notify_waiters();
    }
}

/// Resolves once the writer behind `health` has stopped.
async fn writer_stopped(health: Arc<WriteHealth>) {
    loop {
        // Registered before the flag is read, so a stop between the two is not missed.
        let signal = health.stopped_signal.notified();
        if health.stopped.load(Ordering::SeqCst) {
            return;
        }
        signal.await;
    }
}

/// Audit writes are failing (see [`AuditLog::write_failure`]). Whether the chain changed under
/// this process, which no write can mend, the store says (`Store::audit_refused_link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteFailure {
    /// Since the first failed attempt after the last success.
    pub since: std::time::Instant,
}

impl WriteHealth {
    /// Notes what a write of `count` events that took `took` came to (an empty write says
    /// nothing).
    fn observe(&self, result: &Result<Written, Failed>, count: usize, took: Duration) {
        let written = result
            .as_ref()
            .ok()
            .map(|w| w.rows.iter().filter(|row| row.is_some()).count());
        self.metrics.observe_commit(written, count, took);
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(_) if count > 0 => *failing = None,
            Ok(_) => {}
            Err(_) => {
                failing.get_or_insert(WriteFailure {
                    since: std::time::Instant::now(),
                });
            }
        }
    }
}

/// A request that will record an event soon (it is being authenticated and checked). While
/// any are on their way, the SQLite writer holds a batch for them, up to [`COMPANY`]: a commit
/// costs nearly the same for one event as for twenty, so under load fewer, larger commits use
/// less CPU per request; with nobody on the way, as at one client, it commits at once.
#[must_use]
#[derive(Debug)]
pub struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

impl AuditLog {
    /// Starts the writer. On SQLite it runs on a thread of its own and commits there (one
    /// thread hand-off per batch each way); on PostgreSQL it is an async task. The returned
    /// task finishes when the writer has written everything queued and all handles are gone.
    /// Events and commits are counted in `metrics`.
    pub fn start(
        store: Store,
        key: LinkingKeys,
        stdout: bool,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> (AuditLog, JoinHandle<()>) {
        let (tx, rx) = flume::bounded(QUEUE);
        let deferred = Arc::new(Deferred::default());
        let on_the_way = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(WriteHealth {
            metrics,
            ..WriteHealth::default()
        });
        let queues = Queues {
            rx,
            deferred: deferred.clone(),
            on_the_way: on_the_way.clone(),
            health: health.clone(),
        };
        // The stdout sink also prints what admin commands commit (see `foreign`).
        let foreign = tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| ForeignRows::new(store.clone(), runtime));
        let printed = foreign
            .as_ref()
            .filter(|_| stdout)
            .map(ForeignRows::printed);
        let task = if store.appends_audit_blocking() {
            let (finished, done) = oneshot::channel::<()>();
            let (thread_store, thread_key, thread_queues) =
                (store.clone(), key.clone(), queues.clone());
            let spawned = std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || {
                    run_blocking(&thread_store, &thread_key, stdout, foreign, &thread_queues);
                    let _ = finished.send(());
                });
            match spawned {
                Ok(_) => tokio::spawn(async move {
                    let _ = done.await;
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "no thread for the audit writer; using a task");
                    tokio::spawn(run(store, key, stdout, None, queues))
                }
            }
        } else {
            tokio::spawn(run(store, key, stdout, foreign, queues))
        };
        (
            AuditLog {
                tx,
                deferred,
                on_the_way,
                printed,
                health,
                rack_secrets: Arc::new(Scrubber::new::<&str>(&[])),
            },
            task,
        )
    }

    /// This log, masking `secrets` (the rack's credentials) in every event it is given.
    pub fn masking(self, secrets: Arc<Scrubber>) -> AuditLog {
        AuditLog {
            rack_secrets: secrets,
            ..self
        }
    }

    /// Whether stdout has not yet carried event `seq`, which was committed (false without a
    /// stdout sink).
    pub fn stdout_behind(&self, seq: i64) -> bool {
        self.printed
            .as_ref()
            .is_some_and(|printed| printed.through() < seq)
    }

    /// Whether a write to stdout failed (closed by its reader), losing rows.
    pub fn stdout_failed(&self) -> bool {
        self.printed
            .as_ref()
            .is_some_and(|printed| printed.failed())
    }

    /// The highest sequence number written to stdout, if any: where the next start's stdout
    /// takes up the admin commands' events (see `foreign`).
    pub fn printed_through(&self) -> Option<i64> {
        let seq = self.printed.as_ref()?.through();
        (seq > 0).then_some(seq)
    }

    /// Announces an event to come (see [`Pending`]); hand it back to [`AuditLog::record_pending`].
    pub fn pending(&self) -> Pending {
        self.on_the_way.fetch_add(1, Ordering::SeqCst);
        Pending(self.on_the_way.clone())
    }

    /// [`AuditLog::record`] for an announced event.
    pub async fn record_pending(
        &self,
        pending: Pending,
        event: AuditEvent,
    ) -> Result<i64, AuditError> {
        self.record_checked(pending, event, None).await
    }

    /// [`AuditLog::record_pending`] for a request authorised from credentials read at
    /// generation `read_at` (remembered from an earlier request): the event is committed only
    /// if no credential has changed since, checked inside the commit's own transaction, so a
    /// revocation, lock or role change committed before it always wins. Otherwise nothing is
    /// written and the answer is [`AuditError::Stale`].
    pub async fn record_checked(
        &self,
        pending: Pending,
        event: AuditEvent,
        read_at: Option<Generation>,
    ) -> Result<i64, AuditError> {
        // No longer on the way before it is queued: the writer must never wait for an event
        // that is already in its batch.
        drop(pending);
        self.send(event, read_at).await
    }

    /// Records `event` durably; returns its sequence number once committed.
    pub async fn record(&self, event: AuditEvent) -> Result<i64, AuditError> {
        self.send(event, None).await
    }

    async fn send(
        &self,
        mut event: AuditEvent,
        read_at: Option<Generation>,
    ) -> Result<i64, AuditError> {
        super::mask::mask_event(&self.rack_secrets, &mut event);
        self.health.metrics.observe_event(&event);
        // Told to the writer if this stops waiting (see `Abandoned`).
        let request_id =
            (event.kind != super::EventKind::Outcome).then(|| event.request_id.clone());
        let (ack, done) = oneshot::channel();
        let recorded = async {
            self.tx
                .send_async(Job::Event {
                    event: Box::new(event),
                    read_at,
                    ack: Some(ack),
                })
                .await
                .map_err(|_| AuditError::Closed)?;
            done.await.map_err(|_| AuditError::Closed)?
        };
        // A store that stopped answering must not hold the request (and its connection) for
        // ever: it is refused instead. The event may still be committed later: then it gets
        // the refusal as its outcome.
        let deadline = crate::store::STORE_DEADLINE;
        match tokio::time::timeout(deadline, recorded).await {
            Ok(recorded) => recorded,
            Err(_) => {
                if let Some(request_id) = request_id {
                    self.deferred.gave_up(request_id);
                }
                Err(AuditError::Store(format!(
                    "the audit store did not answer within {} s",
                    deadline.as_secs()
                )))
            }
        }
    }

    /// Queues `event` without waiting (outcomes: the request event is already durable, so a
    /// lost outcome shows as a request without one, never as a silent gap).
    pub fn record_later(&self, mut event: AuditEvent) {
        super::mask::mask_event(&self.rack_secrets, &mut event);
        self.health.metrics.observe_event(&event);
        let queued = {
            let mut events = self
                .deferred
                .events
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            events.push(event);
            events.len()
        };
        if queued >= MAX_BATCH || self.deferred.writer_idle.swap(false, Ordering::SeqCst) {
            // A full queue means the writer is busy and will look again anyway.
            let _ = self.tx.try_send(Job::Wake);
        }
    }

    /// Whether the writer has stopped. Before shutdown that is a bug (a panic): nothing can be
    /// recorded, so every request is refused until the gateway restarts.
    pub fn has_stopped(&self) -> bool {
        self.health.stopped.load(Ordering::SeqCst)
    }

    /// Resolves once the writer has stopped (see [`AuditLog::has_stopped`]). It holds no
    /// handle on the log, so it does not keep the writer running at shutdown.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        writer_stopped(self.health.clone())
    }

    /// Whether the latest attempt to write events failed (`None` once one succeeds again).
    pub fn write_failure(&self) -> Option<WriteFailure> {
        *self
            .health
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Tries the audit trail while writes are failing, with an event that says so if it
    /// takes it (`gateway:audit:recovered`): the same path requests take, so a store that
    /// takes its writes again shows without any request having to fail first. `checked_by`
    /// names who asked.
    pub async fn try_recovery(&self, checked_by: &str) -> Result<(), AuditError> {
        let Some(failure) = self.write_failure() else {
            return Ok(());
        };
        let failing_for = u64::try_from(failure.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        let event = AuditEvent::new(
            super::EventKind::Gateway,
            super::new_request_id(),
            RECOVERED_ACTION,
        )
        .with_details(serde_json::json!({
            "failing_for_ms": failing_for,
            "checked_by": checked_by,
        }));
        self.record(event).await.map(|_| ())
    }

    /// Waits until everything queued before this call is written (or has failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send_async(Job::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Moves whatever is queued into `batch`, up to [`MAX_BATCH`].
fn drain(rx: &flume::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => return,
        }
    }
}

/// What the writer reads from: the jobs that wake it and the events that do not.
#[derive(Clone)]
struct Queues {
    rx: flume::Receiver<Job>,
    deferred: Arc<Deferred>,
    on_the_way: Arc<AtomicUsize>,
    health: Arc<WriteHealth>,
}

/// How the writer waits for its next job.
#[derive(Clone, Copy)]
enum Sleep {
    /// Until a job arrives or [`LINGER`] has passed (deferred events may be arriving).
    Linger,
    /// Until a job arrives (nothing deferred; the next deferred event sends one).
    Idle,
}

impl Queues {
    /// Whether to keep the batch open for requests on their way.
    fn company_expected(&self, batch: &[Job]) -> bool {
        batch.len() < MAX_BATCH && self.on_the_way.load(Ordering::SeqCst) > 0
    }

    /// Adds to `batch` what arrives while requests are on their way, until [`COMPANY`] after
    /// `since` (blocking; the writer's own thread).
    fn await_company_blocking(&self, batch: &mut Vec<Job>, since: std::time::Instant) {
        let deadline = since + COMPANY;
        loop {
            drain(&self.rx, batch);
            if !self.company_expected(batch) {
                return;
            }
            match self.rx.recv_deadline(deadline) {
                Ok(job) => batch.push(job),
                Err(_) => return,
            }
        }
    }

    /// After a wait: the jobs in `batch` and those queued meanwhile, plus the deferred events,
    /// as one batch.
    fn gather(&self, batch: &mut Vec<Job>) -> Split {
        drain(&self.rx, batch);
        // After the jobs: a flush then covers the events deferred before it was sent.
        let mut parts = split(batch);
        for event in self.deferred.take() {
            parts.events.push(event);
            parts.read_at.push(None);
            parts.acks.push(None);
        }
        parts
    }

    /// How to wait next, given what the last round wrote.
    fn next_sleep(&self, wrote: bool) -> Sleep {
        if wrote || !self.deferred.writer_may_sleep() {
            Sleep::Linger
        } else {
            Sleep::Idle
        }
    }
}

/// A batch taken apart: the events to write, who waits for each, and the flushes to answer
/// once they are written.
struct Split {
    events: Vec<AuditEvent>,
    read_at: Vec<Option<Generation>>,
    acks: Vec<Option<oneshot::Sender<Result<i64, AuditError>>>>,
    flushes: Vec<oneshot::Sender<()>>,
}

fn split(batch: &mut Vec<Job>) -> Split {
    let mut events = Vec::with_capacity(batch.len());
    let mut read_at = Vec::with_capacity(batch.len());
    let mut acks = Vec::with_capacity(batch.len());
    let mut flushes = Vec::new();
    for job in batch.drain(..) {
        match job {
            Job::Event {
                event,
                read_at: at,
                ack,
            } => {
                events.push(*event);
                read_at.push(at);
                acks.push(ack);
            }
            Job::Flush(done) => flushes.push(done),
            Job::Wake => {}
        }
    }
    Split {
        events,
        read_at,
        acks,
        flushes,
    }
}

/// Answers the waiting requests (first: the stdout copy is not what they wait for), hands the
/// rows to the stdout sink, matches committed events nobody took with the requests that gave
/// up on them ([`Abandoned`]), then answers the flushes. Returns the events of a failed batch that
/// nobody waits for, to be kept (see [`Retained`]).
fn finish(
    result: Result<Written, Failed>,
    acks: Vec<Option<oneshot::Sender<Result<i64, AuditError>>>>,
    flushes: Vec<oneshot::Sender<()>>,
    printer: Option<&Printer>,
    (abandoned, deferred): (&mut Abandoned, &Deferred),
) -> Vec<AuditEvent> {
    let keep = match result {
        Ok(Written {
            rows: written,
            kept,
        }) => {
            let mut rows = Vec::with_capacity(written.len());
            for (ack, row) in acks.into_iter().zip(written) {
                let answer = match &row {
                    Some(row) => Ok(row.seq),
                    None => Err(AuditError::Stale),
                };
                if let Some(ack) = ack
                    && ack.send(answer).is_err()
                    && let Some(row) = &row
                    && row.event.kind != super::EventKind::Outcome
                {
                    abandoned.unanswered(row.event.clone());
                }
                rows.extend(row);
            }
            print(printer, rows);
            kept
        }
        Err(Failed { error, kept, .. }) => {
            if let Some(held_back) = FAILED_BATCHES.admit() {
                tracing::error!(
                    error = %error,
                    events = acks.len(),
                    failed_since_last = held_back,
                    "audit write failed (at most one such line a second)"
                );
            }
            for ack in acks.into_iter().flatten() {
                let _ = ack.send(Err(error.clone()));
            }
            kept
        }
    };
    // Requests that stopped waiting meanwhile get their refusal as the outcome (queued for
    // the next batch).
    deferred.match_abandoned(abandoned);
    for done in flushes {
        match printer {
            Some(printer) => printer.flush(done),
            None => {
                let _ = done.send(());
            }
        }
    }
    keep
}

/// Hands committed rows to the stdout sink, if there is one.
fn print(printer: Option<&Printer>, rows: Vec<AuditRow>) {
    if let Some(printer) = printer {
        printer.print(rows);
    }
}

/// The kept events due for a retry, as the transactions to write them in: all in one, or
/// one each (see [`Attempt`]).
fn kept_due(retained: &mut Retained, force: bool) -> Option<(Vec<Vec<AuditEvent>>, Attempt)> {
    let (events, attempt) = retained.take_due(std::time::Instant::now(), force)?;
    let groups = match attempt {
        Attempt::Together => vec![events],
        Attempt::OneByOne => events.into_iter().map(|e| vec![e]).collect(),
    };
    Some((groups, attempt))
}

/// What became of one transaction of kept events.
fn settle_kept(
    result: Result<Written, Failed>,
    attempt: Attempt,
    retained: &mut Retained,
    printer: Option<&Printer>,
) {
    match (result, attempt) {
        (Ok(written), _) => {
            print(printer, written.rows.into_iter().flatten().collect());
            if attempt == Attempt::Together {
                retained.written();
            }
        }
        (Err(failed), Attempt::Together) => {
            retained.failed(failed.kept, std::time::Instant::now());
        }
        (Err(Failed { error, kept, .. }), Attempt::OneByOne) => {
            for event in kept {
                tracing::error!(
                    error = %error,
                    request_id = %event.request_id,
                    kind = event.kind.as_str(),
                    action = %event.action,
                    "an audit event kept from a failed batch was refused again while other \
                     events were written: given up"
                );
            }
        }
    }
}

/// Reports slow commits on stderr. Every request in a batch waits for its commit before it is
/// forwarded, so a slow disk or database shows up as latency the rack did not cause; this says
/// so where operators look, without a line per batch when the store is slow for a while.
#[derive(Debug, Default)]
struct SlowCommits {
    last_report: Option<std::time::Instant>,
    /// Slow commits since the last report that were not reported.
    unreported: u64,
}

impl SlowCommits {
    /// Takes the time a batch of `events` took; true when it was reported.
    fn observe(&mut self, took: Duration, events: usize, now: std::time::Instant) -> bool {
        if took < SLOW_COMMIT || events == 0 {
            return false;
        }
        if self
            .last_report
            .is_some_and(|at| now.duration_since(at) < SLOW_COMMIT_REPORT_EVERY)
        {
            self.unreported += 1;
            return false;
        }
        tracing::warn!(
            took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            events,
            slow_commits_not_reported_since_last = self.unreported,
            "audit commit was slow: the requests in the batch waited for it"
        );
        self.last_report = Some(now);
        self.unreported = 0;
        true
    }
}

/// The writer as an async task (PostgreSQL, whose driver is async).
async fn run(
    store: Store,
    key: LinkingKeys,
    stdout: bool,
    foreign: Option<ForeignRows>,
    queues: Queues,
) {
    let _running = Running(queues.health.clone());
    let printer = stdout.then(|| Printer::start(foreign));
    let mut slow = SlowCommits::default();
    let mut kept = Retained::default();
    let mut doubts = Doubts::default();
    let mut abandoned = Abandoned::default();
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut sleep = Sleep::Idle;
    loop {
        let first = match sleep {
            Sleep::Idle => queues.rx.recv_async().await.map(Some),
            Sleep::Linger => match tokio::time::timeout(LINGER, queues.rx.recv_async()).await {
                Ok(job) => job.map(Some),
                Err(_) => Ok(None),
            },
        };
        let closed = first.is_err();
        // No waiting for requests on their way here: a PostgreSQL commit is a network round
        // trip and an fsync, so under load the queue fills while it runs, and holding a batch
        // back only delays the next one.
        if let Ok(Some(job)) = first {
            batch.push(job);
        }
        let parts = queues.gather(&mut batch);
        let count = parts.events.len();
        let started = std::time::Instant::now();
        let waited: Vec<bool> = parts.acks.iter().map(Option::is_some).collect();
        let mut result =
            write_with_retry(&store, &key, parts.events, &parts.read_at, &waited).await;
        let took = started.elapsed();
        queues.health.observe(&result, count, took);
        slow.observe(took, count, std::time::Instant::now());
        // Something was committed, so the chain head moved (see `in_doubt`).
        let appended = result
            .as_ref()
            .is_ok_and(|written| written.rows.iter().any(Option::is_some));
        if count > 0 && result.is_ok() {
            kept.store_answered();
        }
        if let Err(failed) = &mut result
            && let Some(cut_off) = failed.in_doubt.take()
        {
            doubts.add(cut_off);
        }
        kept.keep(
            finish(
                result,
                parts.acks,
                parts.flushes,
                printer.as_ref(),
                (&mut abandoned, &queues.deferred),
            ),
            started,
        );
        // After the waiting requests are answered, and only once an append went through:
        // then the cut-off batches can no longer be committed (see `in_doubt`).
        if appended && !doubts.is_empty() {
            match doubts.settle(&store).await {
                Ok(settled) => {
                    print(printer.as_ref(), settled.committed);
                    queues.deferred.add(settled.outcomes);
                    kept.keep(settled.lost, started);
                }
                Err(e) => tracing::warn!(error = %e, "could not look up cut-off audit events yet"),
            }
        }
        // After the waiting requests are answered: kept events are nobody's wait.
        if let Some((groups, attempt)) = kept_due(&mut kept, closed) {
            for events in groups {
                let (none, waited) = (vec![None; events.len()], vec![false; events.len()]);
                let started = std::time::Instant::now();
                let result = write_with_retry(&store, &key, events, &none, &waited).await;
                queues
                    .health
                    .observe(&result, none.len(), started.elapsed());
                settle_kept(result, attempt, &mut kept, printer.as_ref());
            }
            if attempt == Attempt::OneByOne {
                kept.written();
            }
        }
        if closed {
            break;
        }
        sleep = queues.next_sleep(count > 0 || !kept.is_empty());
    }
    // Everything committed is on stdout before the writer reports itself finished.
    if let Some(printer) = &printer {
        let (done, wait) = oneshot::channel();
        printer.flush(done);
        let _ = wait.await;
    }
    kept.report_lost();
    doubts.report_unsettled();
}

/// The writer on a thread of its own (SQLite): it commits in place, so a batch costs one
/// hand-off from the requests to this thread and one back, not four through an async task
/// and the blocking pool (~12 % of the async workers' time under load went to those).
fn run_blocking(
    store: &Store,
    key: &LinkingKeys,
    stdout: bool,
    foreign: Option<ForeignRows>,
    queues: &Queues,
) {
    let _running = Running(queues.health.clone());
    let printer = stdout.then(|| Printer::start(foreign));
    let mut slow = SlowCommits::default();
    let mut kept = Retained::default();
    let mut abandoned = Abandoned::default();
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut sleep = Sleep::Idle;
    loop {
        let first = match sleep {
            Sleep::Idle => queues.rx.recv().map(Some).map_err(|_| ()),
            Sleep::Linger => match queues.rx.recv_timeout(LINGER) {
                Ok(job) => Ok(Some(job)),
                Err(flume::RecvTimeoutError::Timeout) => Ok(None),
                Err(flume::RecvTimeoutError::Disconnected) => Err(()),
            },
        };
        let closed = first.is_err();
        if let Ok(Some(job)) = first {
            batch.push(job);
            queues.await_company_blocking(&mut batch, std::time::Instant::now());
        }
        let parts = queues.gather(&mut batch);
        let count = parts.events.len();
        let started = std::time::Instant::now();
        let waited: Vec<bool> = parts.acks.iter().map(Option::is_some).collect();
        let result = write_blocking_with_retry(store, key, parts.events, &parts.read_at, &waited);
        let took = started.elapsed();
        queues.health.observe(&result, count, took);
        slow.observe(took, count, std::time::Instant::now());
        if count > 0 && result.is_ok() {
            kept.store_answered();
        }
        kept.keep(
            finish(
                result,
                parts.acks,
                parts.flushes,
                printer.as_ref(),
                (&mut abandoned, &queues.deferred),
            ),
            started,
        );
        if let Some((groups, attempt)) = kept_due(&mut kept, closed) {
            for events in groups {
                let (none, waited) = (vec![None; events.len()], vec![false; events.len()]);
                let started = std::time::Instant::now();
                let result = write_blocking_with_retry(store, key, events, &none, &waited);
                queues
                    .health
                    .observe(&result, none.len(), started.elapsed());
                settle_kept(result, attempt, &mut kept, printer.as_ref());
            }
            if attempt == Attempt::OneByOne {
                kept.written();
            }
        }
        if closed {
            break;
        }
        sleep = queues.next_sleep(count > 0 || !kept.is_empty());
    }
    if let Some(printer) = &printer {
        let (done, wait) = oneshot::channel();
        printer.flush(done);
        let _ = wait.blocking_recv();
    }
    kept.report_lost();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::EventKind;
    use gateway_core::config::Secret;

    async fn rows(store: &Store) -> usize {
        store
            .audit_rows(0, 1000)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .len()
    }

    /// Polls until `want` rows are committed; nobody else sends the writer anything meanwhile.
    async fn wait_for_rows(store: &Store, want: usize) {
        for _ in 0..500 {
            if rows(store).await >= want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{want} rows were never written: {}", rows(store).await);
    }

    async fn sqlite_log(dir: &tempfile::TempDir) -> (Store, AuditLog) {
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        let store = Store::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
        store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
        let key =
            super::super::ChainKey::new(Secret::new("writer-test-key-0123456789abcdef")).into();
        let (log, _task) = AuditLog::start(store.clone(), key, false, Default::default());
        (store, log)
    }

    #[test]
    fn slow_commits_are_reported_at_most_every_ten_seconds() {
        let mut slow = SlowCommits::default();
        let t0 = std::time::Instant::now();
        let ms = Duration::from_millis;
        assert!(!slow.observe(ms(99), 10, t0), "fast enough");
        assert!(!slow.observe(ms(500), 0, t0), "nothing was written");
        assert!(slow.observe(ms(100), 3, t0));
        assert!(!slow.observe(ms(250), 3, t0 + ms(9_000)));
        assert!(!slow.observe(ms(250), 3, t0 + ms(9_500)));
        assert_eq!(slow.unreported, 2);
        assert!(slow.observe(ms(250), 3, t0 + ms(10_000)));
        assert_eq!(slow.unreported, 0);
    }

    /// A batch waits for requests on their way only briefly: one that never arrives (stuck
    /// upstream of the log, or dropped) must not hold up the others' commits.
    /// A writer that panics must show as stopped (readiness, and `serve`, which then exits):
    /// otherwise every request is refused while the gateway looks healthy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_panics_is_seen_to_stop() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (_store, log) = sqlite_log(&dir).await;
        assert!(!log.has_stopped());
        let health = Arc::new(WriteHealth::default());
        let waiting = tokio::spawn(writer_stopped(health.clone()));
        let running = Running(health.clone());
        let died = std::thread::spawn(move || {
            let _running = running;
            panic!("a bug in the writer");
        })
        .join();
        assert!(died.is_err());
        assert!(health.stopped.load(Ordering::SeqCst));
        tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .unwrap_or_else(|_| panic!("the stop was not signalled"))
            .unwrap_or_else(|e| panic!("{e}"));
        // Asked after the fact, it resolves at once.
        tokio::time::timeout(Duration::from_secs(2), writer_stopped(health))
            .await
            .unwrap_or_else(|_| panic!("a stop before the wait was missed"));
        // The real writer ends when its last handle goes, and says so.
        let stopped = log.stopped();
        drop(log);
        tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .unwrap_or_else(|_| panic!("the writer's end was not signalled"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_on_its_way_delays_a_commit_only_briefly() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (_store, log) = sqlite_log(&dir).await;
        let stuck = log.pending();
        let started = std::time::Instant::now();
        let event = AuditEvent::new(EventKind::Request, "r1", "convox:apps:list");
        tokio::time::timeout(Duration::from_secs(2), log.record(event))
            .await
            .unwrap_or_else(|_| panic!("the commit waited for the request on its way"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(started.elapsed() < Duration::from_secs(1));
        // Announced and then recorded: committed like any other event.
        let event = AuditEvent::new(EventKind::Request, "r2", "convox:apps:list");
        let seq = log.record_pending(stuck, event).await;
        assert_eq!(seq.ok(), Some(2));
    }

    /// Deferred outcomes do not wake a busy writer, so they must still be written when no other
    /// event follows: right after a request (the writer lingers) and after it has gone idle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_events_are_written_without_further_traffic() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (store, log) = sqlite_log(&dir).await;

        let request = AuditEvent::new(EventKind::Request, "r1", "convox:apps:list");
        log.record(request).await.unwrap_or_else(|e| panic!("{e}"));
        log.record_later(AuditEvent::new(
            EventKind::Outcome,
            "r1",
            "convox:apps:list",
        ));
        wait_for_rows(&store, 2).await;

        // Long enough for the writer to find nothing and sleep without a deadline.
        tokio::time::sleep(LINGER * 4).await;
        log.record_later(AuditEvent::new(
            EventKind::Outcome,
            "r2",
            "convox:apps:list",
        ));
        wait_for_rows(&store, 3).await;

        // Many at once: the ones past a batch's worth wake the writer themselves.
        for i in 0..(MAX_BATCH + 10) {
            log.record_later(AuditEvent::new(EventKind::Outcome, format!("m{i}"), "x"));
        }
        log.flush().await;
        assert_eq!(rows(&store).await, 3 + MAX_BATCH + 10);
    }
}
