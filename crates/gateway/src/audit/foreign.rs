//! Events other processes commit to the same trail, for the stdout sink.
//!
//! A gateway's stdout carries the events it commits. The admin commands
//! (`rack-gateway-server tokens …`, `users …`) are processes of their own: their events — token
//! creations, role changes, locks, the ones a SIEM most wants — are in the database but were
//! on nobody's stdout. The sink sees their sequence numbers go by as gaps between its own rows,
//! and fetches the rows in those gaps that admin commands wrote (`actor_type: cli`), at most
//! once a second, off the request path. Rows of other gateway instances sharing a PostgreSQL
//! database are in those gaps too; they are left alone, each instance printing its own.

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
        }
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

    /// The admin commands' rows in the gaps noted, when a look is due (at most every
    /// [`EVERY`]); a failed look is logged and the gap kept for the next one.
    pub fn due(&mut self, now: Instant) -> Vec<AuditRow> {
        let Some((from, to)) = self.gap else {
            return Vec::new();
        };
        if self.looked.is_some_and(|t| now.duration_since(t) < EVERY) {
            return Vec::new();
        }
        self.looked = Some(now);
        let store = self.store.clone();
        let runtime = self.runtime.clone();
        // `block_on` panics once the runtime has shut down (the gateway stopping): the sink
        // must outlive that to write what is left, so a look then is simply not made.
        let fetched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(async move {
                store
                    .audit_rows_between(from, to, ActorType::Cli.as_str(), FETCH)
                    .await
            })
        }));
        match fetched {
            Ok(Ok(rows)) => {
                self.gap = None;
                rows
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not read admin commands' audit events for stdout");
                Vec::new()
            }
            Err(_) => {
                self.gap = None;
                Vec::new()
            }
        }
    }
}
