//! Point reads on the request path, run inline on SQLite.
//!
//! Authentication reads one or two rows per request. Through sqlx each read is a hand-off to
//! a connection's worker thread and back: two thread wake-ups that cost more than the read
//! itself (a B-tree lookup in pages that are already cached). Here each async worker thread
//! keeps its own read-only connection and runs the prepared statement in place.
//!
//! A read never waits: with `busy_timeout = 0`, anything that would block (a WAL recovery, a
//! locked schema) returns `Busy` at once and the caller takes the ordinary sqlx path, which
//! waits off the async workers. Each statement is its own short read transaction, so the
//! reads always see the latest commit and never hold the WAL back from a checkpoint.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags, Params};
use thread_local::ThreadLocal;

use super::StoreError;
use super::columns::Columns;

/// What an inline read produced.
pub(super) enum Inline<T> {
    /// The read ran.
    Done(Result<Option<T>, StoreError>),
    /// It would have waited, or the connection is unusable: use the pooled path instead.
    Fallback,
}

/// One read-only connection per thread to the store's SQLite file.
pub(super) struct SqliteReads {
    path: PathBuf,
    conns: ThreadLocal<RefCell<Option<Reader>>>,
}

/// A thread's connection, and the column names of each statement it has run.
struct Reader {
    conn: Connection,
    /// (SQL, its result columns); a handful of statements run here, each naming its columns,
    /// so a statement's columns never change under it.
    columns: Vec<(String, Arc<[String]>)>,
}

/// The result columns of `sql` (prepared as `stmt`), from `known` or added to it.
fn column_names(
    known: &mut Vec<(String, Arc<[String]>)>,
    sql: &str,
    stmt: &rusqlite::Statement<'_>,
) -> Arc<[String]> {
    if let Some((_, names)) = known.iter().find(|(seen, _)| seen == sql) {
        return names.clone();
    }
    let names: Arc<[String]> = stmt.column_names().into_iter().map(String::from).collect();
    known.push((sql.to_string(), names.clone()));
    names
}

/// A row read by column name through the statement's list of names, kept per statement.
/// rusqlite's own by-name lookup asks SQLite for every column's name on each call: for the
/// ~18 columns of an authentication read, that was most of the time spent mapping the row.
struct Named<'a, 'stmt> {
    row: &'a rusqlite::Row<'stmt>,
    names: &'a [String],
    /// Where the previous lookup ended: columns are mostly read in SELECT order.
    next: Cell<usize>,
}

impl Named<'_, '_> {
    fn index(&self, name: &str) -> Result<usize, StoreError> {
        let count = self.names.len();
        let start = self.next.get();
        (0..count)
            .map(|k| (start + k) % count)
            .find(|&i| self.names[i] == name)
            .inspect(|&i| self.next.set(i + 1))
            .ok_or_else(|| rusqlite::Error::InvalidColumnName(name.to_string()).into())
    }
}

impl Columns for Named<'_, '_> {
    fn int(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self.row.get(self.index(name)?)?)
    }
    fn opt_int(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.row.get(self.index(name)?)?)
    }
    fn text(&self, name: &str) -> Result<String, StoreError> {
        Ok(self.row.get(self.index(name)?)?)
    }
    fn opt_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.row.get(self.index(name)?)?)
    }
}

impl std::fmt::Debug for SqliteReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReads")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteReads {
    /// For the database file at `path`; connections open on first use (after migrations).
    pub(super) fn new(path: &Path) -> Arc<SqliteReads> {
        Arc::new(SqliteReads {
            path: path.to_path_buf(),
            conns: ThreadLocal::new(),
        })
    }

    fn open(&self) -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // rusqlite's default is to wait up to 5 s; an async worker must not.
        conn.busy_timeout(std::time::Duration::ZERO)?;
        Ok(conn)
    }

    /// Runs `sql` (one row at most) on this thread's connection and maps the row.
    pub(super) fn one<T, P: Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnOnce(&dyn Columns) -> Result<T, StoreError>,
    ) -> Inline<T> {
        let cell = self.conns.get_or(|| RefCell::new(None));
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return Inline::Fallback;
        };
        if slot.is_none() {
            match self.open() {
                Ok(conn) => {
                    *slot = Some(Reader {
                        conn,
                        columns: Vec::new(),
                    })
                }
                Err(e) => {
                    // The pooled path will report whatever is really wrong.
                    tracing::debug!(error = %e, "inline SQLite read connection did not open");
                    return Inline::Fallback;
                }
            }
        }
        let Some(reader) = slot.as_mut() else {
            return Inline::Fallback;
        };
        let outcome = (|| {
            let mut stmt = reader.conn.prepare_cached(sql).map_err(Failure::Sql)?;
            let names = column_names(&mut reader.columns, sql, &stmt);
            let mut rows = stmt.query(params).map_err(Failure::Sql)?;
            match rows.next().map_err(Failure::Sql)? {
                Some(row) => {
                    let named = Named {
                        row,
                        names: &names,
                        next: Cell::new(0),
                    };
                    map(&named).map(Some).map_err(Failure::Map)
                }
                None => Ok(None),
            }
        })();
        match outcome {
            Ok(found) => Inline::Done(Ok(found)),
            Err(Failure::Map(e)) => Inline::Done(Err(e)),
            Err(Failure::Sql(e)) => {
                if !is_busy(&e) {
                    // Start from a fresh connection next time; the pooled path answers now.
                    tracing::debug!(error = %e, "inline SQLite read failed");
                    *slot = None;
                }
                Inline::Fallback
            }
        }
    }
}

enum Failure {
    Sql(rusqlite::Error),
    Map(StoreError),
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> (PathBuf, Connection) {
        let dir = std::env::temp_dir().join(format!("rgw-reads-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("db.sqlite");
        let conn = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
             INSERT INTO t (id, v) VALUES (1, 'first');",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (path, conn)
    }

    fn read(reads: &SqliteReads, id: i64) -> Option<Option<String>> {
        match reads.one("SELECT v FROM t WHERE id = $1", [id], |row| row.text("v")) {
            Inline::Done(found) => Some(found.unwrap_or_else(|e| panic!("{e}"))),
            Inline::Fallback => None,
        }
    }

    #[test]
    fn every_read_sees_the_latest_commit_and_holds_no_snapshot() {
        let (path, writer) = scratch();
        let reads = SqliteReads::new(&path);
        assert_eq!(read(&reads, 1), Some(Some("first".into())));
        assert_eq!(read(&reads, 2), Some(None));
        // A revoke or lock committed by another connection (another process, even) must show
        // on the very next read of this thread's long-lived connection.
        writer
            .execute_batch("UPDATE t SET v = 'second' WHERE id = 1; INSERT INTO t VALUES (2, 'x');")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(&reads, 1), Some(Some("second".into())));
        assert_eq!(read(&reads, 2), Some(Some("x".into())));
        // No read transaction is left open: a full checkpoint can reset the log.
        let busy: i64 = writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(busy, 0, "an inline read kept a snapshot open");
    }

    #[test]
    fn columns_are_found_by_name_in_any_order() {
        let (path, _writer) = scratch();
        let reads = SqliteReads::new(&path);
        for _ in 0..2 {
            // Twice: the second read takes the statement's names from the cache.
            let got = reads.one("SELECT id, v FROM t WHERE id = 1", [], |row| {
                Ok((row.text("v")?, row.int("id")?, row.opt_text("v")?))
            });
            let Inline::Done(Ok(Some(got))) = got else {
                panic!("the read did not run");
            };
            assert_eq!(got, ("first".to_string(), 1, Some("first".to_string())));
        }
        let other = reads.one("SELECT v AS w FROM t WHERE id = 1", [], |row| row.text("w"));
        assert!(matches!(other, Inline::Done(Ok(Some(ref w))) if w == "first"));
        let missing = reads.one("SELECT id FROM t WHERE id = 1", [], |row| row.text("nope"));
        assert!(matches!(missing, Inline::Done(Err(_))));
    }

    #[test]
    fn a_database_it_cannot_open_means_fallback_not_an_error() {
        let reads = SqliteReads::new(Path::new("/nonexistent-rgw-dir/db.sqlite"));
        assert_eq!(read(&reads, 1), None);
    }

    #[test]
    fn a_bad_statement_falls_back_and_the_next_read_reopens() {
        let (path, _writer) = scratch();
        let reads = SqliteReads::new(&path);
        let bad = reads.one("SELECT nope FROM t", [], |_| Ok(()));
        assert!(matches!(bad, Inline::Fallback));
        assert_eq!(read(&reads, 1), Some(Some("first".into())));
    }
}
