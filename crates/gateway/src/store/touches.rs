//! This instance's memory of recent "last used" writes for tokens and sessions.
//!
//! Requests carry the row as they read it. When its timestamp is stale, every request that
//! read it before the first update committed would write the same value again — at 16
//! concurrent clients, a burst of identical UPDATEs competing with the audit writer for
//! SQLite's single write lock. One claim per key and interval lets the first write and the
//! rest skip.

use std::collections::HashMap;
use std::sync::Mutex;

/// What was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Touched {
    /// An API token (by id).
    Token(i64),
    /// A session (by id).
    Session(i64),
}

/// Claims beyond this age are forgotten when the map is pruned; longer than any interval used.
const HORIZON_MS: i64 = 120_000;
/// Prune when the map reaches this many keys (bounds memory under many distinct sessions).
const PRUNE_AT: usize = 4096;

/// Recent claims, keyed by what was touched, valued by when (unix ms).
#[derive(Debug, Default)]
pub(super) struct Touches {
    claims: Mutex<HashMap<Touched, i64>>,
}

impl Touches {
    /// True when the caller should write now: this instance has not claimed `key` within the
    /// last `interval_ms` (a write in flight counts).
    pub(super) fn claim(&self, key: Touched, now: i64, interval_ms: i64) -> bool {
        let Ok(mut claims) = self.claims.lock() else {
            // A poisoned map only costs a redundant write.
            return true;
        };
        if claims
            .get(&key)
            .is_some_and(|&at| now.saturating_sub(at) < interval_ms)
        {
            return false;
        }
        if claims.len() >= PRUNE_AT {
            claims.retain(|_, at| now.saturating_sub(*at) < HORIZON_MS);
        }
        claims.insert(key, now);
        true
    }

    /// Forgets a claim whose write failed, so the next request tries again.
    pub(super) fn release(&self, key: Touched) {
        if let Ok(mut claims) = self.claims.lock() {
            claims.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_interval_and_key() {
        let t = Touches::default();
        assert!(t.claim(Touched::Token(1), 1_000, 60_000));
        assert!(
            !t.claim(Touched::Token(1), 1_001, 60_000),
            "in flight or just written"
        );
        assert!(t.claim(Touched::Session(1), 1_001, 30_000), "another key");
        assert!(
            t.claim(Touched::Token(1), 61_000, 60_000),
            "interval passed"
        );
    }

    #[test]
    fn a_released_claim_can_be_taken_again() {
        let t = Touches::default();
        assert!(t.claim(Touched::Session(7), 5, 30_000));
        t.release(Touched::Session(7));
        assert!(t.claim(Touched::Session(7), 6, 30_000));
    }

    #[test]
    fn the_map_stays_bounded() {
        let t = Touches::default();
        for id in 0..(PRUNE_AT as i64 * 3) {
            // Every key is older than the horizon by the time the next prune runs.
            assert!(t.claim(Touched::Session(id), id * HORIZON_MS, 1));
        }
        let len = t.claims.lock().map(|c| c.len()).unwrap_or(usize::MAX);
        assert!(len <= PRUNE_AT, "{len} keys kept");
    }
}
