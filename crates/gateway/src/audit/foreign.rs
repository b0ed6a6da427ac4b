//! Events other processes commit to the same trail, for the stdout sink.
//!
//! A gateway's stdout carries the events it commits. The admin commands
//! (`rack-gateway-server tokens …`, `users …`) are processes of their own: their events — token
//! creations, role changes, locks, the ones a SIEM most wants — are in the database but were
//! on nobody's stdout. The sink sees their sequence numbers go by as gaps between its own rows,
//! and fetches the rows in those gaps that admin commands wrote (`actor_type: cli`), at most
//! once a second, off the request path. A gateway that prints nothing for a second looks at
//! the chain's head instead, so that an idle gateway prints them too. Rows of other gateway
//! instances sharing a PostgreSQL database are in those gaps too; they are left alone, each
//! instance printing its own. At start-up, the admin commands' events since the trail's last
//! event by a gateway are printed: they were made while no gateway served. A gateway that
//! stopped while nobody read its stdout could not print its last events: the next start says
//! which, in an `audit_gap` line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::audit::ActorType;
use crate::store::{AuditRow, Store};

/// Gaps are looked into at most this often.
pub const EVERY: Duration = Duration::from_secs(1);

/// Most rows fetched at once (a gap larger than this is another instance's traffic).
const FETCH: i64 = 1000;

/// Tracks the gaps in what the sink printed, and fetches what admin commands wrote in them.
pub struct ForeignRows {
    store: Store,
    runtime: tokio::runtime::Handle,
    /// The highest sequence number seen.
    last: Option<i64>,
    /// Sequence numbers not printed here since the last look, first and last.
    gap: Option<(i64, i64)>,
    looked: Option<Instant>,
    /// The head could not be read at the last idle look (warned once, not every second).
    head_unreadable: bool,
    /// How far stdout got.
    printed: Arc<Printed>,
    /// The admin commands' rows fetched here, by number, until this process's own rows pass
    /// them: `dev` writes its set-up as the command line does, in this process, so such a row
    /// can arrive both ways; it is printed once ([`ForeignRows::drop_fetched`]).
    fetched: std::collections::BTreeSet<i64>,
}

/// How far stdout got, shared by the sink and the gateway's shutdown.
#[derive(Debug, Default)]
pub struct Printed {
    /// The highest sequence number written to stdout (0: none yet).
    through: AtomicI64,
    /// A write to stdout failed (closed: the log shipper exited): rows were lost.
    failed: AtomicBool,
}

impl Printed {
    /// The highest sequence number written to stdout (0: none yet).
    pub fn through(&self) -> i64 {
        self.through.load(Ordering::Relaxed)
    }

    /// Whether a write to stdout failed, losing rows.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

/// The setting a stopping gateway leaves the last sequence number its stdout carried in: the
/// next start prints the admin commands' events after it.
pub const STDOUT_THROUGH_SETTING: &str = "audit_stdout_through";

/// The setting a gateway that stopped with stdout stuck leaves the sequence numbers it could
/// not print in (`from-to`, `from` empty when it printed nothing): the next start says so on
/// stdout, once.
pub const STDOUT_UNPRINTED_SETTING: &str = "audit_stdout_unprinted";

/// Events the last run committed but could not print (its stdout was not being read when it
/// stopped): from (when known) and to, by sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unprinted {
    /// The first, when the run printed anything at all.
    pub from: Option<i64>,
    /// The last.
    pub to: i64,
}

impl Unprinted {
    /// The setting's value.
    pub fn to_setting(self) -> String {
        match self.from {
            Some(from) => format!("{from}-{}", self.to),
            None => format!("-{}", self.to),
        }
    }

    fn from_setting(value: &str) -> Option<Unprinted> {
        let (from, to) = value.split_once('-')?;
        let from = match from {
            "" => None,
            from => Some(from.parse().ok()?),
        };
        Some(Unprinted {
            from,
            to: to.parse().ok()?,
        })
    }
}

impl ForeignRows {
    /// For `store`, fetching on `runtime` (the sink is a plain thread).
    pub fn new(store: Store, runtime: tokio::runtime::Handle) -> ForeignRows {
        ForeignRows {
            store,
            runtime,
            last: None,
            gap: None,
            looked: None,
            head_unreadable: false,
            printed: Arc::default(),
            fetched: std::collections::BTreeSet::new(),
        }
    }

    /// Leaves out of this process's own `rows` (in sequence order) those already printed as
    /// fetched ones.
    pub fn drop_fetched(&mut self, rows: &mut Vec<AuditRow>) {
        if self.fetched.is_empty() {
            return;
        }
        rows.retain(|r| !self.fetched.contains(&r.seq));
        // Own rows come in sequence order: none below the newest seen will follow.
        if let Some(newest) = rows.last().map(|r| r.seq) {
            self.fetched = self.fetched.split_off(&newest);
        }
    }

    /// What the last run could not print when it stopped, taken (so said once).
    pub fn unprinted_at_last_stop(&self) -> Option<Unprinted> {
        let store = self.store.clone();
        let taken =
            self.block_on(async move { store.take_setting(STDOUT_UNPRINTED_SETTING).await });
        match taken? {
            Ok(value) => value.as_deref().and_then(Unprinted::from_setting),
            Err(e) => {
                tracing::warn!(error = %e, "could not read what the last run left unprinted");
                None
            }
        }
    }

    /// Shares how far stdout got.
    pub fn printed(&self) -> Arc<Printed> {
        self.printed.clone()
    }

    /// Notes `rows` as written to stdout.
    pub fn wrote(&self, rows: &[AuditRow]) {
        if let Some(max) = rows.iter().map(|r| r.seq).max() {
            self.printed.through.fetch_max(max, Ordering::Relaxed);
        }
    }

    /// Notes that a write to stdout failed: its rows were lost.
    pub fn write_failed(&self) {
        self.printed.failed.store(true, Ordering::Relaxed);
    }

    /// Notes rows about to be printed (in sequence order): numbers skipped before them are a
    /// gap. The first rows seen start the count (what came before is history, not news).
    pub fn saw(&mut self, rows: &[AuditRow]) {
        for row in rows {
            if let Some(last) = self.last
                && row.seq > last + 1
            {
                let (from, to) = (last + 1, row.seq - 1);
                self.gap = Some(match self.gap {
                    Some((a, b)) => (a.min(from), b.max(to)),
                    None => (from, to),
                });
            }
            self.last = Some(self.last.map_or(row.seq, |last| last.max(row.seq)));
        }
    }

    /// When nothing was printed for [`EVERY`]: the chain's head shows whether rows were added
    /// meanwhile (an admin command's, on an idle gateway), and the admin commands' rows among
    /// them are fetched as a gap's would be.
    pub fn idle(&mut self, now: Instant) -> Vec<AuditRow> {
        if self.gap.is_none() && !self.recently_looked(now) {
            let store = self.store.clone();
            match self.block_on(async move { store.chain_head().await }) {
                Some(Ok(head)) => {
                    self.head_unreadable = false;
                    // Admin commands' events count as known links too: removed later, the
                    // writer finds it.
                    self.store.note_audit_head(&head);
                    match self.last {
                        // Nothing seen yet: the count starts here, after the admin commands'
                        // events made while no gateway served (the tokens created before the
                        // first start, a user locked during an outage), which no stdout
                        // carried (see `printed_before`).
                        None => {
                            let store = self.store.clone();
                            let since = self.block_on(async move { printed_before(&store).await });
                            if let Some(Ok(since)) = since
                                && head.seq > since
                            {
                                self.gap = Some((since + 1, head.seq));
                            }
                            self.last = Some(head.seq);
                        }
                        Some(last) if head.seq > last => {
                            // This gateway's own rows still on their way to the sink may be in
                            // the gap: never fetched (not the admin commands'), printed when
                            // they arrive.
                            self.gap = Some((last + 1, head.seq));
                            self.last = Some(head.seq);
                        }
                        Some(_) => {}
                    }
                }
                Some(Err(e)) => {
                    // Once per outage: a database that is down says so elsewhere too.
                    if !self.head_unreadable {
                        tracing::warn!(error = %e, "could not read the audit chain's head for stdout");
                    }
                    self.head_unreadable = true;
                    self.looked = Some(now);
                }
                None => {}
            }
        }
        self.due(now)
    }

    /// The admin commands' rows in the gaps noted, when a look is due (at most every
    /// [`EVERY`]); a failed look is logged and the gap kept for the next one.
    pub fn due(&mut self, now: Instant) -> Vec<AuditRow> {
        let Some((from, to)) = self.gap else {
            return Vec::new();
        };
        if self.recently_looked(now) {
            return Vec::new();
        }
        self.looked = Some(now);
        let store = self.store.clone();
        let fetched = self.block_on(async move {
            store
                .audit_rows_between(from, to, ActorType::Cli.as_str(), FETCH)
                .await
        });
        match fetched {
            Some(Ok(rows)) => {
                self.gap = None;
                self.fetched.extend(rows.iter().map(|r| r.seq));
                rows
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "could not read admin commands' audit events for stdout");
                Vec::new()
            }
            None => {
                self.gap = None;
                Vec::new()
            }
        }
    }

    fn recently_looked(&self, now: Instant) -> bool {
        self.looked.is_some_and(|t| now.duration_since(t) < EVERY)
    }

    /// Runs `work` on the gateway's runtime and waits for it; `None` once that runtime has
    /// shut down (the gateway stopping: the sink outlives it to write what is left, so a look
    /// then is simply not made). Spawned rather than `block_on`, which panics on a runtime
    /// being shut down.
    fn block_on<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        // On a runtime that has shut down the task is dropped unrun, and with it `tx`.
        drop(self.runtime.spawn(async move {
            let _ = tx.send(work.await);
        }));
        rx.recv().ok()
    }
}

/// Where the last stdout stopped: what the last gateway to stop cleanly had printed through,
/// else (a trail from before that was kept, or a gateway killed) the trail's last event by a
/// gateway — admin commands' events after it were made while none served. A copy of one
/// printed before may come out again (told apart by `seq`).
async fn printed_before(store: &Store) -> Result<i64, crate::store::StoreError> {
    let kept = store.setting(STDOUT_THROUGH_SETTING).await?;
    match kept.and_then(|v| v.parse::<i64>().ok()) {
        Some(seq) => Ok(seq),
        None => store.last_seq_not_by(ActorType::Cli.as_str()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::Unprinted;

    #[test]
    fn unprinted_ranges_round_trip_and_bad_values_are_none() {
        for u in [
            Unprinted {
                from: Some(101),
                to: 150,
            },
            Unprinted { from: None, to: 7 },
        ] {
            assert_eq!(Unprinted::from_setting(&u.to_setting()), Some(u));
        }
        for bad in ["", "12", "a-3", "3-", "-", "1-2-3"] {
            assert_eq!(Unprinted::from_setting(bad), None, "{bad}");
        }
    }
}
