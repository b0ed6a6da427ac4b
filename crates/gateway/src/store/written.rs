//! The newest link of the audit chain this process knows: one it appended, or a head it read
//! (at start-up, and while idle: admin commands' events).
//!
//! The chain's head moves forward as this gateway, other instances and admin commands append;
//! it never moves back. A head found behind that link, or past it with that link gone or
//! changed, means someone with write access to the database removed or replaced the newest
//! events and moved the head to match — a consistent chain that the hashes alone cannot tell
//! from the real one. The writer then refuses to extend the chain until the gateway is
//! restarted (nothing is forwarded: 503), and the anchor task anchors the link it knows, so
//! that `audit verify` reports the change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use super::StoreError;
use super::audit::ChainHead;

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Written {
    known: Mutex<Option<ChainHead>>,
    /// Set once the chain was found changed: it stays refused until a restart.
    refused: AtomicBool,
    /// How the chain was found changed, for the error: the known link's event, the head's
    /// event, and whether the head was behind it (else the link was gone or replaced).
    found: Mutex<Option<(i64, i64, bool)>>,
    /// The fingerprint of the key this process links events with, once the chain's key was
    /// resolved (`audit::resolve_key`). Unset, appends are not checked against the head's.
    key: OnceLock<String>,
}

/// Reads what the chain holds for a known link (`$1`: its event): the `prev_hash` of the event
/// after it. That event exists whenever the head is past the link, also for event 0 — the empty
/// chain's head, which no row holds (a gateway started on a new database knows only that one).
pub(super) const KNOWN_LINK_SQL: &str = "SELECT prev_hash FROM audit_events WHERE seq = $1 + 1";

/// What a head read from the database needs before events may be appended to it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Confirm {
    /// Nothing: it is the known link, or nothing is known yet.
    Nothing,
    /// The head moved past the known link (others appended): that link must still be in the
    /// chain, event `seq` with `hash` ([`Written::confirm`]).
    Row {
        /// The known link's event.
        seq: i64,
        /// Its hash.
        hash: String,
    },
}

impl Written {
    /// The newest link known, if any.
    pub(super) fn get(&self) -> Option<ChainHead> {
        self.known.lock().ok().and_then(|w| w.clone())
    }

    /// The newest known link's event number, if any.
    pub(super) fn seq(&self) -> Option<i64> {
        self.known
            .lock()
            .ok()
            .and_then(|w| w.as_ref().map(|w| w.seq))
    }

    /// The known link, once the chain was found changed under it.
    pub(super) fn refused_link(&self) -> Option<ChainHead> {
        self.refused
            .load(Ordering::Relaxed)
            .then(|| self.get())
            .flatten()
    }

    /// Notes `seq`/`hash` as a link of the chain (kept only when newer).
    pub(super) fn note(&self, seq: i64, hash: &str) {
        if let Ok(mut known) = self.known.lock()
            && known.as_ref().is_none_or(|w| seq > w.seq)
        {
            *known = Some(ChainHead {
                seq,
                hash: hash.to_string(),
            });
        }
    }

    /// Notes the fingerprint of the key this process links events with.
    pub(super) fn expect_key(&self, fingerprint: &str) {
        // Set once: one process links with one key.
        let _ = self.key.set(fingerprint.to_string());
    }

    /// The fingerprint noted by [`Written::expect_key`], if any.
    pub(super) fn key_fingerprint(&self) -> Option<String> {
        self.key.get().cloned()
    }

    /// Fails when the head (read in the appending transaction) names another key than this
    /// process's: the key was rotated after it started, and an event linked with the retired
    /// key would break the chain. `head_key` is `''` while the chain keeps its first key.
    pub(super) fn check_key(&self, head_key: &str) -> Result<(), StoreError> {
        match self.key.get() {
            Some(own) if !head_key.is_empty() && head_key != own => Err(StoreError::KeyRotated),
            _ => Ok(()),
        }
    }

    /// Fails when the chain was found changed before, or when the head read from the
    /// database (`seq`, `hash`) is behind the known link or names another hash for its
    /// event; says what to confirm when the head is past it.
    pub(super) fn check(&self, seq: i64, hash: &str) -> Result<Confirm, StoreError> {
        if self.refused.load(Ordering::Relaxed) {
            return Err(self.error());
        }
        // Compared under the lock: this is on every audit batch's path.
        let known = self.known.lock().ok();
        match known.as_ref().and_then(|w| w.as_ref()) {
            Some(w) if seq < w.seq => Err(self.fail(w.seq, seq, true)),
            Some(w) if seq == w.seq && hash != w.hash => Err(self.fail(w.seq, seq, false)),
            Some(w) if seq > w.seq => Ok(Confirm::Row {
                seq: w.seq,
                hash: w.hash.clone(),
            }),
            _ => Ok(Confirm::Nothing),
        }
    }

    /// The answer for a [`Confirm::Row`]: `stored` is the hash the database holds for that
    /// event, read with [`KNOWN_LINK_SQL`] (`None`: no event follows it).
    pub(super) fn confirm(
        &self,
        seq: i64,
        hash: &str,
        stored: Option<&str>,
        head: i64,
    ) -> Result<(), StoreError> {
        if stored == Some(hash) {
            return Ok(());
        }
        Err(self.fail(seq, head, false))
    }

    /// Refuses the chain from now on.
    fn fail(&self, known: i64, found: i64, behind: bool) -> StoreError {
        self.refused.store(true, Ordering::Relaxed);
        if let Ok(mut f) = self.found.lock()
            && f.is_none()
        {
            *f = Some((known, found, behind));
        }
        self.error()
    }

    fn error(&self) -> StoreError {
        let (known, found, behind) = self.found.lock().ok().and_then(|f| *f).unwrap_or_default();
        if behind {
            StoreError::ChainMovedBack {
                written: known,
                found,
            }
        } else {
            StoreError::ChainReplaced { known, found }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_may_move_forward_never_back() {
        let w = Written::default();
        assert_eq!(
            w.check(0, "0").ok(),
            Some(Confirm::Nothing),
            "nothing known yet"
        );
        w.note(5, "e");
        w.note(3, "c");
        assert_eq!(w.get().map(|h| h.seq), Some(5), "kept the newest");
        assert_eq!(w.check(5, "e").ok(), Some(Confirm::Nothing));
        // Others appended after it: the known link must still be there.
        assert_eq!(
            w.check(9, "i").ok(),
            Some(Confirm::Row {
                seq: 5,
                hash: "e".into()
            })
        );
        assert!(w.confirm(5, "e", Some("e"), 9).is_ok());
        assert!(matches!(
            w.check(4, "d"),
            Err(StoreError::ChainMovedBack {
                written: 5,
                found: 4
            })
        ));
        // Once found changed, refused until a restart, whatever the head says later.
        assert!(w.check(5, "e").is_err());
        assert!(w.check(12, "l").is_err());
    }

    #[test]
    fn a_head_under_another_key_is_refused() {
        let w = Written::default();
        assert!(w.check_key("b").is_ok(), "no key expected: not checked");
        w.expect_key("a");
        assert!(w.check_key("").is_ok(), "never rotated");
        assert!(w.check_key("a").is_ok(), "rotated to this process's key");
        assert!(matches!(w.check_key("b"), Err(StoreError::KeyRotated)));
        w.expect_key("b");
        assert!(w.check_key("b").is_err(), "the first key stays");
    }

    #[test]
    fn a_known_link_gone_from_a_longer_chain_is_refused() {
        let w = Written::default();
        w.note(5, "e");
        assert!(matches!(w.check(7, "g"), Ok(Confirm::Row { seq: 5, .. })));
        assert!(w.confirm(5, "e", None, 7).is_err(), "event 5 removed");
        assert!(w.check(8, "h").is_err(), "and refused from then on");
        let w = Written::default();
        w.note(5, "e");
        assert!(
            w.confirm(5, "e", Some("forged"), 7).is_err(),
            "event 5 replaced"
        );
        assert!(w.check(5, "x").is_err(), "the same event, another hash");
    }
}
