//! What the background WAL checkpointer says about failures (SQLite).
//!
//! A disk that refuses writes fails every checkpoint, 20 a second, and a line for each would
//! flood the log (on the same full disk, perhaps). The first failure of an outage is news,
//! then one line a minute, then the recovery — once checkpoints have succeeded for a second
//! in a row, since one with nothing to copy succeeds even while the disk refuses writes.

use crate::log_throttle::Throttle;

/// Checkpoints in a row that must succeed after failures before they count as working again
/// (a second's worth at one every 50 ms).
const TO_RECOVER: u32 = 20;
/// At most one line about failures per this long.
const FAILURE_LINE_EVERY_MS: i64 = 60_000;

/// What to log about one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Say {
    /// Nothing.
    Nothing,
    /// That it failed; `held_back` failures were not logged since the last line.
    Failed { held_back: u64 },
    /// That checkpoints work again after `failures` failures.
    Recovered { failures: u64 },
}

/// The checkpointer's recent results.
#[derive(Debug)]
pub(super) struct CheckpointWatch {
    failed: u64,
    succeeded: u32,
    throttle: Throttle,
}

impl Default for CheckpointWatch {
    fn default() -> Self {
        CheckpointWatch {
            failed: 0,
            succeeded: 0,
            throttle: Throttle::new(FAILURE_LINE_EVERY_MS),
        }
    }
}

impl CheckpointWatch {
    /// A checkpoint at `now` (unix ms) succeeded (`ok`) or failed.
    pub(super) fn observe(&mut self, ok: bool, now: i64) -> Say {
        if !ok {
            self.failed += 1;
            self.succeeded = 0;
            return match self.throttle.admit_at(now) {
                Some(held_back) => Say::Failed { held_back },
                None => Say::Nothing,
            };
        }
        if self.failed == 0 {
            return Say::Nothing;
        }
        self.succeeded += 1;
        if self.succeeded < TO_RECOVER {
            return Say::Nothing;
        }
        let failures = self.failed;
        // The next outage's first failure is news again.
        *self = CheckpointWatch::default();
        Say::Recovered { failures }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_told_once_and_its_end_once() {
        let mut watch = CheckpointWatch::default();
        let mut now = 1_000_000;
        let mut tick = |watch: &mut CheckpointWatch, ok: bool| {
            now += 50;
            watch.observe(ok, now)
        };
        assert_eq!(tick(&mut watch, true), Say::Nothing);
        assert_eq!(tick(&mut watch, false), Say::Failed { held_back: 0 });
        // A second of failures, broken by checkpoints with nothing to copy: nothing more.
        for n in 0..40 {
            assert_eq!(tick(&mut watch, n % 7 == 0), Say::Nothing, "tick {n}");
        }
        // A minute after the first line, one more with the count of the rest: 34 failures
        // among those 40 ticks, and 1 159 of these before the minute is up.
        let mut said = Vec::new();
        for _ in 0..1200 {
            let say = tick(&mut watch, false);
            if say != Say::Nothing {
                said.push(say);
            }
        }
        assert_eq!(said, [Say::Failed { held_back: 1193 }]);
        // Working for a second: said once.
        let said: Vec<Say> = (0..40)
            .map(|_| tick(&mut watch, true))
            .filter(|s| *s != Say::Nothing)
            .collect();
        assert_eq!(
            said,
            [Say::Recovered {
                failures: 1 + 34 + 1200
            }]
        );
        // A new outage at once is news again.
        assert_eq!(tick(&mut watch, false), Say::Failed { held_back: 0 });
    }
}
