//! The WebSocket sessions in flight (logs, exec, run), so that a shutdown can wait for them
//! and, when its time is up, end them with their outcomes recorded rather than cut them off
//! unaudited.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Open WebSocket relays. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    tracker: TaskTracker,
    ending: CancellationToken,
}

impl Sessions {
    /// `relay`, counted as open until it finishes.
    pub fn track<F: Future>(&self, relay: F) -> impl Future<Output = F::Output> + use<F> {
        self.tracker.track_future(relay)
    }

    /// Resolves when the gateway asks every session to end.
    pub fn ending(&self) -> CancellationToken {
        self.ending.clone()
    }

    /// How many sessions are open.
    pub fn open(&self) -> usize {
        self.tracker.len()
    }

    /// Waits until every session has finished (new ones may still start while it waits).
    pub async fn finished(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Tells every session to close now (code 1001, "going away").
    pub fn end_all(&self) {
        self.ending.cancel();
    }
}
