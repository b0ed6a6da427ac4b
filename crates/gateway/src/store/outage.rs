//! PostgreSQL: failing fast while the server cannot be reached.
//!
//! sqlx's pool retries a refused connection until its acquire timeout (3 s), and the audit
//! writer retries a failed batch once: while PostgreSQL was down, every request waited 6 s or
//! more for its 503, holding its connection meanwhile. Once a call fails in a way that means
//! the server is gone, calls are refused at once ([`StoreError::Unreachable`]) until one
//! connection made directly (not through the pool, so without its retries: a refused
//! connection fails in a millisecond) succeeds. One such probe runs at a time, at most every
//! [`PROBE_EVERY`]; so the gateway notices within that long that the server is back.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::any::AnyConnectOptions;

use super::{StoreError, now_ms};

/// Least time between two probes while the server is unreachable.
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Longest a probe waits for its connection (a server that accepts and never answers).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the server was found unreachable, and how to look again.
pub(super) struct Outage {
    options: AnyConnectOptions,
    down: AtomicBool,
    /// When the last probe failed (unix ms).
    probed_at: AtomicI64,
    /// Held by the one probe under way.
    probing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the connect options: they hold the database password.
        f.debug_struct("Outage")
            .field("down", &self.down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Outage {
    pub(super) fn new(options: AnyConnectOptions) -> Outage {
        Outage {
            options,
            down: AtomicBool::new(false),
            probed_at: AtomicI64::new(0),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    /// `Ok` when calls may go to the server: it was not found down, or a probe just reached
    /// it. Otherwise the error to refuse the call with, at once.
    pub(super) async fn check(&self) -> Result<(), StoreError> {
        if !self.down.load(Ordering::Acquire) {
            return Ok(());
        }
        let refused = || {
            Err(StoreError::Unreachable(
                "the database could not be reached a moment ago".into(),
            ))
        };
        let since = now_ms().saturating_sub(self.probed_at.load(Ordering::Acquire));
        if since < PROBE_EVERY.as_millis() as i64 {
            return refused();
        }
        let Ok(_probe) = self.probing.try_lock() else {
            return refused();
        };
        if !self.down.load(Ordering::Acquire) {
            return Ok(());
        }
        let attempt = async {
            use sqlx::Connection;
            let conn = self.options.connect().await?;
            conn.close().await
        };
        let failure = match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "no connection within {} s",
                PROBE_TIMEOUT.as_secs()
            )),
        };
        match failure {
            None => {
                self.down.store(false, Ordering::Release);
                tracing::info!("the database can be reached again");
                Ok(())
            }
            Some(why) => {
                self.probed_at.store(now_ms(), Ordering::Release);
                Err(StoreError::Unreachable(why))
            }
        }
    }

    /// Takes note of a call's failure: one that means the server cannot be reached turns on
    /// fast refusals.
    pub(super) fn note(&self, error: &StoreError) {
        // The next call probes at once: a pool that timed out because every connection was
        // busy (not gone) costs one connection, not a spell of refusals.
        if unreachable(error) && !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error = %error,
                "the database cannot be reached: requests are refused at once (503) until a \
                 connection succeeds (tried every {} ms)",
                PROBE_EVERY.as_millis()
            );
        }
    }
}

/// Whether `error` says the server could not be reached, as opposed to a statement it refused.
fn unreachable(error: &StoreError) -> bool {
    match error {
        StoreError::Timeout(_) | StoreError::Unreachable(_) => true,
        StoreError::Database(e) => matches!(
            e,
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_)
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[tokio::test]
    async fn a_refused_server_is_refused_at_once_and_probed_again() {
        sqlx::any::install_default_drivers();
        // A port nothing listens on: connections are refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let options = AnyConnectOptions::from_str(&format!("postgres://x@127.0.0.1:{port}/x"))
            .unwrap_or_else(|e| panic!("{e}"));
        let outage = Outage::new(options);
        assert!(outage.check().await.is_ok(), "not down until a call fails");
        outage.note(&StoreError::NotFound("user".into()));
        assert!(
            outage.check().await.is_ok(),
            "a refused statement is no outage"
        );
        outage.note(&StoreError::Database(sqlx::Error::PoolTimedOut));
        // The next call probes: refused in well under the pool's 3 s, with the reason.
        let started = std::time::Instant::now();
        let e = outage
            .check()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("the database cannot be reached") && e.len() > 40,
            "{e}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // Then refused without a probe until the interval has passed.
        let e = outage
            .check()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.ends_with("could not be reached a moment ago"), "{e}");
        tokio::time::sleep(PROBE_EVERY).await;
        let e = outage
            .check()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.ends_with("a moment ago"), "probed again: {e}");
    }
}
