//! The newest link this process appended to the audit chain.
//!
//! The chain's head moves forward as this gateway, other instances and admin commands append;
//! it never moves back. A head found behind what this process wrote means someone with write
//! access to the database removed the newest events and moved the head back to match — a
//! consistent, shorter chain that the hashes alone cannot tell from the real one. The writer
//! refuses to extend it (nothing is forwarded: 503), and the anchor task anchors what was
//! written, so that `audit verify` reports the removal.

use std::sync::Mutex;

use super::StoreError;
use super::audit::ChainHead;

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Written(Mutex<Option<ChainHead>>);

impl Written {
    /// The newest link written, if any.
    pub(super) fn get(&self) -> Option<ChainHead> {
        self.0.lock().ok().and_then(|w| w.clone())
    }

    /// Notes `seq`/`hash` as appended by this process (kept only when newer).
    pub(super) fn note(&self, seq: i64, hash: &str) {
        if let Ok(mut written) = self.0.lock()
            && written.as_ref().is_none_or(|w| seq > w.seq)
        {
            *written = Some(ChainHead {
                seq,
                hash: hash.to_string(),
            });
        }
    }

    /// Fails when the head read from the database (`seq`, `hash`) is behind what this
    /// process wrote, or names another hash for the same event.
    pub(super) fn check(&self, seq: i64, hash: &str) -> Result<(), StoreError> {
        // Compared under the lock: this is on every audit batch's path.
        let written = self.0.lock().ok();
        match written.as_ref().and_then(|w| w.as_ref()) {
            Some(w) if seq < w.seq || (seq == w.seq && hash != w.hash) => {
                Err(StoreError::ChainMovedBack {
                    written: w.seq,
                    found: seq,
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_may_move_forward_never_back() {
        let w = Written::default();
        assert!(w.check(0, "0").is_ok(), "nothing written yet");
        w.note(5, "e");
        w.note(3, "c");
        assert_eq!(w.get().map(|h| h.seq), Some(5), "kept the newest");
        assert!(w.check(5, "e").is_ok());
        assert!(w.check(9, "i").is_ok(), "others appended after it");
        assert!(matches!(
            w.check(4, "d"),
            Err(StoreError::ChainMovedBack {
                written: 5,
                found: 4
            })
        ));
        assert!(w.check(5, "x").is_err(), "the same event, another hash");
    }
}
