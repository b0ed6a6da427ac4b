//! Log lines that would repeat for every request during an outage, let through at most once a
//! second with a count of the ones held back.
//!
//! While the audit store is down every request is refused, and each refusal (and each failed
//! batch) said so on stderr: thousands of lines a second at production traffic, burying the
//! line that says why. One line a second carries the same news.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Lets a line through at most once per `every_ms`, counting those held back in between.
#[derive(Debug)]
pub struct Throttle {
    every_ms: i64,
    /// When a line last went through (unix ms; 0: never).
    last: AtomicI64,
    held: AtomicU64,
}

impl Throttle {
    /// At most one line per `every_ms` milliseconds.
    pub const fn new(every_ms: i64) -> Throttle {
        Throttle {
            every_ms,
            last: AtomicI64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this line should be logged, `n` being how many were held back since the
    /// last one; `None` when it is held back (and counted).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(crate::store::now_ms())
    }

    /// [`Throttle::admit`] at `now` (unix ms).
    pub(crate) fn admit_at(&self, now: i64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.every_ms
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_rest() {
        let throttle = Throttle::new(1000);
        assert_eq!(throttle.admit_at(10_000), Some(0));
        for t in 10_001..10_006 {
            assert_eq!(throttle.admit_at(t), None);
        }
        assert_eq!(throttle.admit_at(10_999), None);
        assert_eq!(throttle.admit_at(11_000), Some(6));
        assert_eq!(throttle.admit_at(20_000), Some(0));
    }
}
