//! The audit writer's own SQLite connection.
//!
//! Through sqlx every statement is a round trip to a per-connection worker thread; a batch
//! (begin, read head, insert, move head, commit) cost six such hops while requests waited on
//! it. Here the whole transaction runs in one blocking call on one connection kept for the
//! writer, so a batch costs one hop. Same file, same SQLite library (sqlx's), same pragmas.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, TransactionBehavior, params};

use super::StoreError;
use super::audit::{AuditRow, chain_rows};
use crate::audit::AuditEvent;

/// A dedicated connection for appending audit events on SQLite.
pub(super) struct SqliteAudit {
    path: PathBuf,
    conn: Mutex<Option<Connection>>,
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
    pub(super) fn new(path: &Path) -> Arc<SqliteAudit> {
        Arc::new(SqliteAudit {
            path: path.to_path_buf(),
            conn: Mutex::new(None),
        })
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(&self.path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
             PRAGMA wal_autocheckpoint = 0;",
        )?;
        Ok(conn)
    }

    /// Appends `events` in one transaction; blocking, so call it off the async workers.
    pub(super) fn append(
        &self,
        events: &[AuditEvent],
        link: impl Fn(&str, i64, &AuditEvent) -> String,
    ) -> Result<Vec<AuditRow>, StoreError> {
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
        let result = append_on(conn, events, link);
        if result.is_err() {
            // Start from a fresh connection next time rather than trust this one's state.
            *guard = None;
        }
        result
    }
}

fn append_on(
    conn: &mut Connection,
    events: &[AuditEvent],
    link: impl Fn(&str, i64, &AuditEvent) -> String,
) -> Result<Vec<AuditRow>, StoreError> {
    // IMMEDIATE: take the write lock before reading the head, so the head cannot move under us
    // (another process — an admin command — may append to the same file).
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Statements are prepared once per connection and reused: parsing SQL showed up in
    // profiles of single-request batches.
    let (seq, hash): (i64, String) = tx
        .prepare_cached("SELECT seq, hash FROM audit_chain_head WHERE id = 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let rows = chain_rows(seq, &hash, events, link)?;
    {
        let mut insert = tx.prepare_cached(super::audit::INSERT_ONE)?;
        for (row, details) in &rows {
            let e = &row.event;
            insert.execute(params![
                row.seq,
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
                details,
                row.prev_hash,
                row.hash,
            ])?;
        }
    }
    if let Some((last, _)) = rows.last() {
        tx.prepare_cached("UPDATE audit_chain_head SET seq = ?1, hash = ?2 WHERE id = 1")?
            .execute(params![last.seq, last.hash])?;
    }
    tx.commit()?;
    Ok(rows.into_iter().map(|(row, _)| row).collect())
}
