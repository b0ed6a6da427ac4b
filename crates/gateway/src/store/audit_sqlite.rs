//! The audit writer's own SQLite connection.
//!
//! Through sqlx every statement is a round trip to a per-connection worker thread; a batch
//! (begin, read head, insert, move head, commit) cost six such hops while requests waited on
//! it. Here the whole transaction runs in one blocking call on one connection kept for the
//! writer, so a batch costs one hop. Same file, same SQLite library (sqlx's), same pragmas.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::audit::{Appended, LinkFn, chain_rows, still_current};
use super::written::{Confirm, KNOWN_LINK_SQL, Written};
use super::{Generation, StoreError};
use crate::audit::AuditEvent;
use gateway_core::config::SqliteSync;

/// The audit writer's failed checkpoints, logged at most once a minute.
static WRITER_CHECKPOINT_FAILURES: crate::log_throttle::Throttle =
    crate::log_throttle::Throttle::new(60_000);

/// A dedicated connection for appending audit events on SQLite.
pub(super) struct SqliteAudit {
    path: PathBuf,
    /// `SQLITE_SYNCHRONOUS`.
    sync: SqliteSync,
    conn: Mutex<Option<Connection>>,
    /// Set by the background checkpointer: finish its checkpoint before the next batch.
    checkpoint_due: AtomicBool,
    /// The newest link this process appended: the head must never be found behind it.
    written: Arc<Written>,
}

impl std::fmt::Debug for SqliteAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteAudit")
            .field("path", &self.path)
            .finish()
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Sqlite(err.to_string())
    }
}

impl SqliteAudit {
    /// For the database file at `path`; the connection opens on first use (after migrations).
    pub(super) fn new(path: &Path, sync: SqliteSync, written: Arc<Written>) -> Arc<SqliteAudit> {
        Arc::new(SqliteAudit {
            path: path.to_path_buf(),
            sync,
            conn: Mutex::new(None),
            checkpoint_due: AtomicBool::new(false),
            written,
        })
    }

    pub(super) fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(&self.path)?;
        conn.execute_batch(super::sqlite_pragmas(self.sync))?;
        Ok(conn)
    }

    /// Asks the writer to checkpoint before its next batch (see [`SqliteAudit::append`]).
    pub(super) fn request_checkpoint(&self) {
        self.checkpoint_due.store(true, Ordering::Relaxed);
    }

    /// Appends `events` in one transaction; blocking, so call it off the async workers.
    /// `read_at[i]`, when present, is the credential generation that authorised `events[i]`:
    /// that event is appended only if the generation is still current (see [`Appended`]).
    pub(super) fn append(
        &self,
        events: &[AuditEvent],
        read_at: &[Option<Generation>],
        link: impl LinkFn,
    ) -> Result<Appended, StoreError> {
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| StoreError::Sqlite("audit connection poisoned".into()))?;
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(StoreError::Sqlite("audit connection missing".into()));
        };
        if self.checkpoint_due.swap(false, Ordering::Relaxed) {
            // The background checkpointer has copied most of the log into the database, but
            // under steady load frames keep arriving while it works, so its checkpoint never
            // catches up and the log is never restarted: it grew by ~100 MB a second at 12 000
            // requests a second. Here, between batches, nothing else is appending (this is the
            // only audit writer), so the remaining few frames are copied, the log is complete,
            // and the next transaction starts it again from the beginning.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                // Between every two batches while the disk fails: once a minute is news enough.
                if let Some(held_back) = WRITER_CHECKPOINT_FAILURES.admit() {
                    tracing::warn!(
                        error = %e,
                        failed_since_last = held_back,
                        "WAL checkpoint by the audit writer failed (at most one such line a \
                         minute)"
                    );
                }
            }
        }
        let result = append_on(conn, &self.written, events, read_at, link);
        if result.is_err() {
            // Start from a fresh connection next time rather than trust this one's state.
            *guard = None;
        }
        result
    }
}

fn append_on(
    conn: &mut Connection,
    written: &Written,
    events: &[AuditEvent],
    read_at: &[Option<Generation>],
    link: impl LinkFn,
) -> Result<Appended, StoreError> {
    // IMMEDIATE: take the write lock before reading the head, so the head cannot move under us
    // (another process — an admin command — may append to the same file). Credentials cannot
    // change either until this commits, so the generation read here holds for the whole batch.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Statements are prepared once per connection and reused: parsing SQL showed up in
    // profiles of single-request batches.
    let (seq, hash, generation, key): (i64, String, i64, String) = tx
        .prepare_cached(
            "SELECT h.seq, h.hash, g.n, h.key_fingerprint \
             FROM audit_chain_head h, credential_generation g WHERE h.id = 1 AND g.id = 1",
        )?
        .query_row([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?;
    written.check_key(&key)?;
    if let Confirm::Row {
        seq: known,
        hash: known_hash,
    } = written.check(seq, &hash)?
    {
        // Others appended since: the link this gateway knows must still be in the chain.
        let stored: Option<String> = tx
            .prepare_cached(KNOWN_LINK_SQL)?
            .query_row([known], |row| row.get(0))
            .optional()?;
        written.confirm(known, &known_hash, stored.as_deref(), seq)?;
    }
    let generation = Generation(generation);
    let current = still_current(read_at, events.len(), generation);
    let admitted = events
        .iter()
        .zip(&current)
        .filter_map(|(event, &ok)| ok.then_some(event));
    let rows = chain_rows(seq, &hash, admitted, link)?;
    {
        let mut insert = tx.prepare_cached(super::audit::INSERT_ONE)?;
        for row in &rows {
            let e = row.event;
            insert.execute(params![
                row.link.seq,
                e.ts,
                e.request_id,
                e.kind.as_str(),
                e.actor_type.as_str(),
                e.user_email,
                e.token_name,
                e.method,
                e.path,
                e.action,
                e.rbac_decision.as_str(),
                e.status,
                e.latency_ms,
                e.client_ip,
                e.user_agent,
                row.details,
                row.link.prev_hash,
                row.link.hash,
            ])?;
        }
    }
    if let Some(last) = rows.last().map(|row| &row.link) {
        tx.prepare_cached("UPDATE audit_chain_head SET seq = ?1, hash = ?2 WHERE id = 1")?
            .execute(params![last.seq, last.hash])?;
    }
    tx.commit()?;
    if let Some(last) = rows.last().map(|row| &row.link) {
        written.note(last.seq, &last.hash);
    }
    Ok(Appended::aligned(
        &current,
        rows.into_iter().map(|row| row.link).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;
    use crate::audit::{AuditEvent, EventKind};

    const MIGRATIONS: &[&str] = &[
        include_str!("../../migrations/sqlite/0001_core.sql"),
        include_str!("../../migrations/sqlite/0002_sessions.sql"),
        include_str!("../../migrations/sqlite/0003_drop_unused_audit_indexes.sql"),
        include_str!("../../migrations/sqlite/0004_login_attempt_limits.sql"),
        include_str!("../../migrations/sqlite/0005_audit_seq_is_the_rowid.sql"),
        include_str!("../../migrations/sqlite/0006_credential_generation.sql"),
        include_str!("../../migrations/sqlite/0007_audit_no_replace.sql"),
        include_str!("../../migrations/sqlite/0008_audit_key_fingerprint.sql"),
    ];

    fn migrate(conn: &Connection, migrations: &[&str]) {
        for migration in migrations {
            conn.execute_batch(migration)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// A WAL database in `dir` with `migrations` applied.
    fn database(dir: &tempfile::TempDir, migrations: &[&str]) -> (PathBuf, Connection) {
        let db = dir.path().join("audit.db");
        let conn = Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch("PRAGMA journal_mode = WAL;")
            .unwrap_or_else(|e| panic!("{e}"));
        migrate(&conn, migrations);
        (db, conn)
    }

    fn all_rows(conn: &Connection) -> Vec<(i64, String, String, String, String)> {
        let mut stmt = conn
            .prepare(
                "SELECT seq, request_id, details, prev_hash, hash FROM audit_events ORDER BY seq",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap_or_else(|e| panic!("{e}"));
        rows.map(|r| r.unwrap_or_else(|e| panic!("{e}"))).collect()
    }

    /// Migration 0005 rebuilds the audit table: every row keeps its place and hash, the
    /// separate index on seq is gone, and the table is still append-only.
    #[test]
    fn rebuilding_the_audit_table_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (db, conn) = database(&dir, &MIGRATIONS[..4]);
        // Today's writer also reads the credential generation and the head's key (later
        // migrations); lend the old schema those while it writes the rows the rebuild must keep.
        conn.execute_batch(
            "CREATE TABLE credential_generation (id INTEGER PRIMARY KEY, n INTEGER NOT NULL); \
             INSERT INTO credential_generation VALUES (1, 0); \
             ALTER TABLE audit_chain_head ADD COLUMN key_fingerprint TEXT NOT NULL DEFAULT '';",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let writer = SqliteAudit::new(&db, SqliteSync::default(), Default::default());
        for n in 0..40 {
            let batch: Vec<AuditEvent> = (0..3)
                .map(|i| AuditEvent::new(EventKind::Request, format!("r{n}-{i}"), "x"))
                .collect();
            writer
                .append(&batch, &[], |prev, seq, _, _| {
                    format!("{seq}:{}", &prev[..prev.len().min(8)])
                })
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let before = all_rows(&conn);
        assert_eq!(before.len(), 120);
        conn.execute_batch(
            "DROP TABLE credential_generation; \
             ALTER TABLE audit_chain_head DROP COLUMN key_fingerprint;",
        )
        .unwrap_or_else(|e| panic!("{e}"));

        migrate(&conn, &MIGRATIONS[4..]);
        assert_eq!(all_rows(&conn), before);
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_events'",
            )
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(indexes, ["audit_events_request_id"]);
        for tamper in [
            "DELETE FROM audit_events WHERE seq = 1",
            "UPDATE audit_events SET details = '{}'",
        ] {
            let err = conn.execute(tamper, []).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("append-only")),
                "{tamper}: {err:?}"
            );
        }
        // The writer carries on from the same head.
        let rows = writer
            .append(
                &[AuditEvent::new(EventKind::Request, "after", "x")],
                &[],
                |_, seq, _, _| seq.to_string(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rows.links.first().and_then(|r| r.as_ref()).map(|r| r.seq),
            Some(121)
        );
    }

    /// An event authorised at an old credential generation is left out of the batch (and the
    /// chain); the others, checked or not, are appended in order.
    #[test]
    fn events_read_at_a_stale_generation_are_not_appended() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (db, conn) = database(&dir, MIGRATIONS);
        let writer = SqliteAudit::new(&db, SqliteSync::default(), Default::default());
        let batch: Vec<AuditEvent> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| AuditEvent::new(EventKind::Request, *id, "x"))
            .collect();
        let link = |_: &str, seq: i64, _: &AuditEvent, _: &str| seq.to_string();
        // Credentials change (a token revoked): the counter moves from 0 to 1.
        conn.execute_batch(
            "INSERT INTO api_tokens (name, token_hash, created_by, created_at) \
             VALUES ('t', 'h', 'test', 0); UPDATE api_tokens SET revoked_at = 1;",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let appended = writer
            .append(
                &batch,
                &[
                    Some(Generation(0)),
                    None,
                    Some(Generation(1)),
                    Some(Generation(0)),
                ],
                link,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let seqs: Vec<Option<i64>> = appended
            .links
            .iter()
            .map(|l| l.as_ref().map(|l| l.seq))
            .collect();
        assert_eq!(seqs, [None, Some(1), Some(2), None]);
        let ids: Vec<String> = conn
            .prepare("SELECT request_id FROM audit_events ORDER BY seq")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids, ["b", "c"]);
        // Nothing checked, nothing left out; an empty outcome moves nothing.
        let all = writer
            .append(&batch[..1], &[Some(Generation(0))], link)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.links, [None]);
        let head: i64 = conn
            .query_row("SELECT seq FROM audit_chain_head", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(head, 2);
    }

    fn wal_size(db: &Path) -> u64 {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
    }

    /// Batches back to back, readers busy all the time, a background checkpointer beside
    /// them, and the writer asked to finish a checkpoint every 40 batches (about every 20 ms,
    /// as the gateway asks, but counted rather than timed, so a busy machine cannot starve the
    /// asking): the log must restart rather than grow with every batch (it reached 1.5 GB in
    /// 16 s under load).
    #[test]
    fn the_log_restarts_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (db, conn) = database(&dir, MIGRATIONS);
        drop(conn);
        let writer = SqliteAudit::new(&db, SqliteSync::default(), Default::default());
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let conn = Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
                while !stop.load(Ordering::Relaxed) {
                    let _ = conn.query_row("SELECT seq FROM audit_chain_head", [], |r| {
                        r.get::<_, i64>(0)
                    });
                }
            })
        };
        // The background checkpointer's share, running beside the writes: under steady
        // writes it never catches up, so alone it never lets the log restart.
        let checkpointer = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let conn = Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
        };
        let batch: Vec<AuditEvent> = (0..5)
            .map(|i| AuditEvent::new(EventKind::Request, format!("r{i}"), "convox:apps:list"))
            .collect();
        let mut largest = 0;
        for n in 0..6000 {
            // What the background checkpointer asks after each of its rounds; counted here.
            if n % 40 == 0 {
                writer.request_checkpoint();
            }
            writer
                .append(&batch, &[], |prev, seq, _, _| {
                    format!("{prev}{seq}").chars().rev().take(64).collect()
                })
                .unwrap_or_else(|e| panic!("batch {n}: {e}"));
            largest = largest.max(wal_size(&db));
        }
        stop.store(true, Ordering::Relaxed);
        let _ = reader.join();
        let _ = checkpointer.join();
        // 6000 batches write ~220 MB of log frames: ~200 MB of log without the writer's share
        // of the checkpoint, up to ~20 MB with it (a busy reader can hold a restart back).
        assert!(largest < 48 << 20, "the log grew to {largest} bytes");
    }
}
