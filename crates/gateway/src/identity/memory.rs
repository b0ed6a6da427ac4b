//! Credentials remembered from earlier requests, so that a caller's token or session need not
//! be read from the database on each of its requests.
//!
//! Nothing remembered is trusted on its own. An answer from memory carries the credential
//! [`Generation`] its rows were read at, and the request's audit event — which is committed
//! before anything is forwarded — is committed only if that generation is still the
//! database's, checked inside the commit's own transaction or statement
//! (`AuditLog::record_checked`), on SQLite and PostgreSQL alike (several instances share the
//! counter).
//! Otherwise the request is authorised again from a fresh read. Database triggers move the
//! generation with every change that can alter an answer, whoever makes it (this gateway, an
//! admin command, a hand-written SQL statement), so a revocation, lock or role change takes
//! effect on the next request exactly as without memory. Only successful authentications are
//! remembered; a remembered one that now fails a check (expired, idle) is read again rather
//! than refused from memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::store::{Generation, RoleGrant, SessionRow, TokenRow, UserRow};

/// Most credentials remembered; past it the oldest generations go, then everything.
const CAPACITY: usize = 4096;
/// A remembered answer is read again after this long even if nothing changed (belt and
/// braces: the generation check is what keeps answers current).
const MAX_AGE: Duration = Duration::from_secs(60);

/// The rows an authentication was answered from.
#[derive(Debug, Clone)]
pub(super) enum Remembered {
    /// An API token, its owner when it acts for one, and its custom role's permissions.
    Token(Arc<(TokenRow, Option<UserRow>, RoleGrant)>),
    /// A session, its user, and the user's custom role's permissions.
    Session(Arc<(SessionRow, UserRow, RoleGrant)>),
}

#[derive(Debug)]
struct Entry {
    rows: Remembered,
    generation: Generation,
    read: Instant,
}

/// This instance's memory of recently authenticated credentials, by the SHA-256 of the
/// presented secret (the same hash the database stores; the secret itself is never kept).
#[derive(Debug)]
pub struct CredentialMemory {
    enabled: bool,
    entries: RwLock<HashMap<String, Entry>>,
    /// The newest generation any read has seen; entries read at an older one are stale.
    newest: AtomicI64,
}

impl CredentialMemory {
    /// A memory that remembers when `enabled`, and otherwise never answers (for callers that
    /// must read afresh).
    pub fn new(enabled: bool) -> CredentialMemory {
        CredentialMemory {
            enabled,
            entries: RwLock::new(HashMap::new()),
            newest: AtomicI64::new(i64::MIN),
        }
    }

    /// The rows remembered for `hash` and the generation they were read at, unless a newer
    /// generation has been seen since or they are older than [`MAX_AGE`].
    pub(super) fn recall(&self, hash: &str) -> Option<(Remembered, Generation)> {
        if !self.enabled {
            return None;
        }
        let entries = self.entries.read().ok()?;
        let entry = entries.get(hash)?;
        if entry.generation.0 < self.newest.load(Ordering::Acquire)
            || entry.read.elapsed() > MAX_AGE
        {
            return None;
        }
        Some((entry.rows.clone(), entry.generation))
    }

    /// Remembers the rows of a successful authentication, read at `generation`.
    pub(super) fn remember(&self, hash: String, rows: Remembered, generation: Generation) {
        if !self.enabled {
            return;
        }
        let newest = self
            .newest
            .fetch_max(generation.0, Ordering::AcqRel)
            .max(generation.0);
        if generation.0 < newest {
            // Read before a change another read has already seen: not worth keeping.
            return;
        }
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= CAPACITY && !entries.contains_key(&hash) {
            entries.retain(|_, e| e.generation.0 >= newest && e.read.elapsed() <= MAX_AGE);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            hash,
            Entry {
                rows,
                generation,
                read: Instant::now(),
            },
        );
    }

    /// Forgets what was remembered under `hash` (its answer turned out stale).
    pub(super) fn forget(&self, hash: &str) {
        // Refused callers (unknown tokens among them) usually have nothing here: look first,
        // so that they do not take the write lock.
        if !self.enabled || self.entries.read().is_ok_and(|e| !e.contains_key(hash)) {
            return;
        }
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(hash);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_rows(id: i64) -> Remembered {
        Remembered::Token(Arc::new((
            TokenRow {
                id,
                name: format!("t{id}"),
                token_hash: format!("h{id}"),
                role: Some("viewer".into()),
                permissions: None,
                owner_user_id: None,
                created_by: "test".into(),
                created_at: 0,
                expires_at: None,
                last_used_at: None,
                revoked_at: None,
            },
            None,
            RoleGrant::default(),
        )))
    }

    fn id_of(found: Option<(Remembered, Generation)>) -> Option<(i64, i64)> {
        match found {
            Some((Remembered::Token(rows), g)) => Some((rows.0.id, g.0)),
            _ => None,
        }
    }

    #[test]
    fn a_newer_generation_makes_older_entries_stale() {
        let m = CredentialMemory::new(true);
        m.remember("a".into(), token_rows(1), Generation(5));
        assert_eq!(id_of(m.recall("a")), Some((1, 5)));
        // Another credential read after a change: everything read before it is stale.
        m.remember("b".into(), token_rows(2), Generation(6));
        assert_eq!(id_of(m.recall("a")), None, "read before the change");
        assert_eq!(id_of(m.recall("b")), Some((2, 6)));
        // A read that started before the change and finished after it is not kept.
        m.remember("c".into(), token_rows(3), Generation(5));
        assert_eq!(id_of(m.recall("c")), None);
    }

    #[test]
    fn a_disabled_memory_never_answers() {
        let m = CredentialMemory::new(false);
        m.remember("a".into(), token_rows(1), Generation(1));
        assert_eq!(id_of(m.recall("a")), None);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn forgotten_entries_are_read_again() {
        let m = CredentialMemory::new(true);
        m.remember("a".into(), token_rows(1), Generation(1));
        m.forget("a");
        assert_eq!(id_of(m.recall("a")), None);
    }

    #[test]
    fn the_memory_stays_bounded() {
        let m = CredentialMemory::new(true);
        for i in 0..(CAPACITY as i64 * 2 + 7) {
            m.remember(format!("k{i}"), token_rows(i), Generation(1));
        }
        assert!(m.len() <= CAPACITY, "{} entries", m.len());
        let last = CAPACITY as i64 * 2 + 6;
        assert_eq!(id_of(m.recall(&format!("k{last}"))), Some((last, 1)));
    }
}
