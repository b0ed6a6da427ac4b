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
//!
//! It also holds the keys this process links events with, and checks the head's key against
//! them in every appending transaction: a chain rotated to another key (`audit rotate-key`)
//! takes no more events from this process — unless it is the next key this process was
//! given, which it then moves to (see `audit::LinkingKeys`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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
    /// The keys this process links events with, once the chain's key was resolved
    /// (`audit::resolve_key`). Unset, only a chain never rotated takes its appends.
    keys: OnceLock<ExpectedKeys>,
}

/// The fingerprints of the keys this process may link with, and which one it uses.
#[derive(Debug)]
struct ExpectedKeys {
    current: String,
    /// `AUDIT_HMAC_KEY_NEXT`'s.
    next: Option<String>,
    /// Shared with the writer's `LinkingKeys`: set once the chain is found under `next`.
    next_in_use: Arc<AtomicBool>,
}

impl ExpectedKeys {
    fn in_use(&self) -> &str {
        match &self.next {
            Some(next) if self.next_in_use.load(Ordering::Acquire) => next,
            _ => &self.current,
        }
    }
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

    /// Notes the fingerprints of the keys this process links events with: `current`, and
    /// `next` once the chain is found rotated to it (`next_in_use` is then set, for the linking
    /// side to see).
    pub(super) fn expect_key(
        &self,
        current: &str,
        next: Option<String>,
        next_in_use: Arc<AtomicBool>,
    ) {
        // Set once: one process resolves its keys once.
        let _ = self.keys.set(ExpectedKeys {
            current: current.to_string(),
            next,
            next_in_use,
        });
    }

    /// The fingerprint of the key in use, if noted by [`Written::expect_key`].
    pub(super) fn key_fingerprint(&self) -> Option<String> {
        self.keys.get().map(|k| k.in_use().to_string())
    }

    /// Fails when the head (read in the appending transaction) names another key than the
    /// one this process links with: the key was rotated after it started, and an event linked
    /// with the retired key would break the chain. A head under the next key moves this
    /// process to it (before the caller links anything). `head_key` is `''` while the chain
    /// keeps its first key.
    pub(super) fn check_key(&self, head_key: &str) -> Result<(), StoreError> {
        if head_key.is_empty() {
            return Ok(());
        }
        // A process that never resolved its key (tests of the store alone) cannot tell.
        let Some(keys) = self.keys.get() else {
            return Err(StoreError::KeyRotated);
        };
        if head_key == keys.in_use() {
            return Ok(());
        }
        if keys.next.as_deref() == Some(head_key) {
            keys.next_in_use.store(true, Ordering::Release);
            tracing::warn!(
                "the audit chain was rotated to AUDIT_HMAC_KEY_NEXT: this gateway links with it \
                 from now on; restart it with that key as AUDIT_HMAC_KEY when convenient"
            );
            return Ok(());
        }
        Err(StoreError::KeyRotated)
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
        assert!(w.check_key("").is_ok(), "no key expected, never rotated");
        assert!(
            w.check_key("b").is_err(),
            "no key expected: a rotated chain is refused"
        );
        w.expect_key("a", None, Arc::default());
        assert!(w.check_key("").is_ok(), "never rotated");
        assert!(w.check_key("a").is_ok(), "rotated to this process's key");
        assert!(matches!(w.check_key("b"), Err(StoreError::KeyRotated)));
        w.expect_key("b", None, Arc::default());
        assert!(w.check_key("b").is_err(), "the first keys stay");
    }

    #[test]
    fn a_head_under_the_next_key_moves_to_it_for_good() {
        let w = Written::default();
        let in_use = Arc::new(AtomicBool::new(false));
        w.expect_key("a", Some("n".into()), in_use.clone());
        assert_eq!(w.key_fingerprint().as_deref(), Some("a"));
        assert!(w.check_key("a").is_ok());
        assert!(!in_use.load(Ordering::Acquire));
        assert!(w.check_key("n").is_ok(), "rotated to the next key");
        assert!(in_use.load(Ordering::Acquire), "the linking side is told");
        assert_eq!(w.key_fingerprint().as_deref(), Some("n"));
        assert!(w.check_key("a").is_err(), "never back to the retired key");
        assert!(w.check_key("x").is_err());
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
