//! The append-only audit log and its chain head.

use std::sync::Arc;

use sqlx::Executor;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::written::{Confirm, KNOWN_LINK_SQL};
use super::{Backend, Generation, Store, StoreError, WriteTx, bounded};
use crate::audit::AuditEvent;

/// One stored audit event with its place in the hash chain.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRow {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hex hash of the previous event (all zeros for the first).
    pub prev_hash: String,
    /// Hex HMAC-SHA256 linking this event to the previous one.
    pub hash: String,
}

impl AuditRow {
    /// `event` at the place in the chain that `link` gives it.
    pub fn new(link: ChainLink, event: AuditEvent) -> AuditRow {
        AuditRow {
            seq: link.seq,
            event,
            prev_hash: link.prev_hash,
            hash: link.hash,
        }
    }
}

/// Where an appended event landed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Hex hash of the previous event.
    pub prev_hash: String,
    /// Hex HMAC-SHA256 linking this event to the previous one.
    pub hash: String,
}

/// What a checked append did (SQLite's audit writer, see [`Store::append_audit_blocking`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// One entry per event, in order: where it landed, or `None` when it was not appended
    /// because the credentials that authorised it have changed since they were read.
    pub links: Vec<Option<ChainLink>>,
}

impl Appended {
    /// Spreads the links of the appended events over all events, `None` where `current` is
    /// false (those were left out).
    pub(super) fn aligned(current: &[bool], appended: Vec<ChainLink>) -> Appended {
        let mut appended = appended.into_iter();
        Appended {
            links: current
                .iter()
                .map(|&ok| if ok { appended.next() } else { None })
                .collect(),
        }
    }
}

/// For each of `count` events, whether it may be appended at credential `generation`: those
/// without a `read_at` always, the others only if they were read at it.
pub(super) fn still_current(
    read_at: &[Option<Generation>],
    count: usize,
    generation: Generation,
) -> Vec<bool> {
    (0..count)
        .map(|i| {
            read_at
                .get(i)
                .copied()
                .flatten()
                .is_none_or(|g| g == generation)
        })
        .collect()
}

/// Computes an event's hash: `link(prev_hash, seq, event, details_json)`.
pub trait LinkFn: Fn(&str, i64, &AuditEvent, &str) -> String {}
impl<F: Fn(&str, i64, &AuditEvent, &str) -> String> LinkFn for F {}

/// An event linked onto the chain and ready to insert, with its details as the JSON text that
/// is both stored and hashed.
pub(super) struct Linked<'a> {
    pub(super) link: ChainLink,
    pub(super) event: &'a AuditEvent,
    pub(super) details: String,
}

/// The chain head as read, locked, inside a write transaction.
pub(super) struct LockedHead {
    /// Last sequence number (0 when empty).
    pub(super) seq: i64,
    /// Hex hash of the last event.
    pub(super) hash: String,
    /// The key the chain is written with, once rotated (`''` before).
    pub(super) key_fingerprint: String,
}

/// The chain's last position and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Last sequence number (0 when empty).
    pub seq: i64,
    /// Hex hash of the last event.
    pub hash: String,
}

macro_rules! columns {
    () => {
        "seq, ts, request_id, kind, actor_type, user_email, token_name, method, path, \
                       action, rbac_decision, status, latency_ms, client_ip, user_agent, details, \
                       prev_hash, hash"
    };
}

fn from_row(row: &AnyRow) -> Result<AuditRow, StoreError> {
    from_row_as_stored(row).map(|(row, _)| row)
}

/// The row, and its `details` exactly as stored (the text the chain hashed).
fn from_row_as_stored(row: &AnyRow) -> Result<(AuditRow, String), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("audit_events.{what}"));
    let details: String = row.try_get("details")?;
    let parsed = AuditRow {
        seq: row.try_get("seq")?,
        event: AuditEvent {
            ts: row.try_get("ts")?,
            request_id: row.try_get("request_id")?,
            kind: row
                .try_get::<String, _>("kind")?
                .parse()
                .map_err(|_| corrupt("kind"))?,
            actor_type: row
                .try_get::<String, _>("actor_type")?
                .parse()
                .map_err(|_| corrupt("actor_type"))?,
            user_email: row.try_get("user_email")?,
            token_name: row.try_get("token_name")?,
            method: row.try_get("method")?,
            path: row.try_get("path")?,
            action: row.try_get("action")?,
            rbac_decision: row
                .try_get::<String, _>("rbac_decision")?
                .parse()
                .map_err(|_| corrupt("rbac_decision"))?,
            status: row.try_get("status")?,
            latency_ms: row.try_get("latency_ms")?,
            client_ip: row.try_get("client_ip")?,
            user_agent: row.try_get("user_agent")?,
            details: serde_json::from_str(&details).map_err(|_| corrupt("details"))?,
        },
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    };
    Ok((parsed, details))
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// [`INSERT_ONE`] with `row`'s values bound, in column order.
fn insert_one<'q>(row: &Linked<'_>) -> AnyQuery<'q> {
    let event = row.event;
    sqlx::query(INSERT_ONE)
        .bind(row.link.seq)
        .bind(event.ts)
        .bind(event.request_id.clone())
        .bind(event.kind.as_str())
        .bind(event.actor_type.as_str())
        .bind(event.user_email.clone())
        .bind(event.token_name.clone())
        .bind(event.method.clone())
        .bind(event.path.clone())
        .bind(event.action.clone())
        .bind(event.rbac_decision.as_str())
        .bind(event.status)
        .bind(event.latency_ms)
        .bind(event.client_ip.clone())
        .bind(event.user_agent.clone())
        .bind(row.details.clone())
        .bind(row.link.prev_hash.clone())
        .bind(row.link.hash.clone())
}

/// One row's insert with numbered placeholders (SQLite).
pub(super) const INSERT_ONE: &str = concat!(
    "INSERT INTO audit_events (",
    columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
);

/// PostgreSQL: a batch's rows travel as one JSON array in one parameter (objects keyed by
/// column name), so each statement below has one text whatever the batch's size and is
/// prepared once per connection. With a `VALUES` list of 18 placeholders per row, every batch
/// was a new statement: parsing, analysing and planning it was a third of the server's CPU
/// per request.
macro_rules! insert_rows_from_json {
    ($rows:literal) => {
        concat!(
            "INSERT INTO audit_events (",
            columns!(),
            ") SELECT ",
            columns!(),
            " FROM json_populate_recordset(NULL::audit_events, ",
            $rows,
            "::json)"
        )
    };
}

/// PostgreSQL: the rows (`$1`) appended in one statement (inside the locked transaction).
const INSERT_ROWS: &str = insert_rows_from_json!("$1");

/// PostgreSQL: moves the head from (`$3`, `$4`) to (`$1`, `$2`) and inserts the rows (`$5`),
/// or does neither when the head has moved or names another key than `$6` (rotated: the
/// locked path then says so).
const INSERT_IF_HEAD: &str = concat!(
    "WITH moved AS (UPDATE audit_chain_head SET seq = $1, hash = $2 \
     WHERE id = 1 AND seq = $3 AND hash = $4 AND key_fingerprint IN ('', $6) RETURNING id) ",
    insert_rows_from_json!("$5"),
    " WHERE EXISTS (SELECT 1 FROM moved)"
);

/// [`INSERT_IF_HEAD`], and only while the credential generation is still `$7`.
const INSERT_IF_HEAD_AND_GENERATION: &str = concat!(
    "WITH moved AS (UPDATE audit_chain_head SET seq = $1, hash = $2 \
     WHERE id = 1 AND seq = $3 AND hash = $4 AND key_fingerprint IN ('', $6) \
     AND (SELECT n FROM credential_generation WHERE id = 1) = $7 RETURNING id) ",
    insert_rows_from_json!("$5"),
    " WHERE EXISTS (SELECT 1 FROM moved)"
);

/// One row of [`rows_json`], keyed by column name.
#[derive(serde::Serialize)]
struct JsonRow<'a> {
    seq: i64,
    ts: i64,
    request_id: &'a str,
    kind: &'static str,
    actor_type: &'static str,
    user_email: Option<&'a str>,
    token_name: Option<&'a str>,
    method: Option<&'a str>,
    path: Option<&'a str>,
    action: &'a str,
    rbac_decision: &'static str,
    status: Option<i64>,
    latency_ms: Option<i64>,
    client_ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    details: &'a str,
    prev_hash: &'a str,
    hash: &'a str,
}

/// The rows as the JSON array the PostgreSQL statements above read.
fn rows_json(rows: &[Linked<'_>]) -> Result<String, StoreError> {
    let rows: Vec<JsonRow<'_>> = rows
        .iter()
        .map(|row| {
            let e = row.event;
            JsonRow {
                seq: row.link.seq,
                ts: e.ts,
                request_id: &e.request_id,
                kind: e.kind.as_str(),
                actor_type: e.actor_type.as_str(),
                user_email: e.user_email.as_deref(),
                token_name: e.token_name.as_deref(),
                method: e.method.as_deref(),
                path: e.path.as_deref(),
                action: &e.action,
                rbac_decision: e.rbac_decision.as_str(),
                status: e.status,
                latency_ms: e.latency_ms,
                client_ip: e.client_ip.as_deref(),
                user_agent: e.user_agent.as_deref(),
                details: &row.details,
                prev_hash: &row.link.prev_hash,
                hash: &row.link.hash,
            }
        })
        .collect();
    serde_json::to_string(&rows).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Links `events` onto the chain whose head is (`seq`, `hash`): each with its sequence
/// number, previous hash and hash, and its details as JSON text.
pub(super) fn chain_rows<'a>(
    mut seq: i64,
    hash: &str,
    events: impl IntoIterator<Item = &'a AuditEvent>,
    link: impl LinkFn,
) -> Result<Vec<Linked<'a>>, StoreError> {
    let events = events.into_iter();
    let mut prev = hash.to_string();
    let mut rows = Vec::with_capacity(events.size_hint().0);
    for event in events {
        seq += 1;
        let details = serde_json::to_string(&event.details)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let hash = link(&prev, seq, event, &details);
        rows.push(Linked {
            link: ChainLink {
                seq,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            },
            event,
            details,
        });
    }
    Ok(rows)
}

fn links(rows: Vec<Linked<'_>>) -> Vec<ChainLink> {
    rows.into_iter().map(|row| row.link).collect()
}

impl Store {
    /// True when [`Store::append_audit_blocking`] works (SQLite): the audit writer then runs
    /// on a thread of its own instead of hopping to a blocking thread for every batch.
    pub fn appends_audit_blocking(&self) -> bool {
        self.sqlite_audit.is_some()
    }

    /// Appends `events` on the calling thread, blocking it until the commit (SQLite only:
    /// `None` on PostgreSQL, whose driver is async). For the audit writer's own thread.
    ///
    /// `read_at[i]`, when given, is the credential [`Generation`] at which the request that
    /// `events[i]` records was authorised. Inside the write transaction (which credential
    /// changes wait for) such an event is appended only if that generation is still the
    /// current one; otherwise its entry in [`Appended::links`] is `None` and nothing of it is
    /// written. Events without one are always appended.
    pub fn append_audit_blocking(
        &self,
        events: &[AuditEvent],
        read_at: &[Option<Generation>],
        link: impl LinkFn,
    ) -> Option<Result<Appended, StoreError>> {
        self.sqlite_audit
            .as_ref()
            .map(|writer| writer.append(events, read_at, link))
    }

    /// Appends `events` to the chain in one transaction. `link(prev_hash, seq, event)` computes
    /// each event's hash. Several gateway instances serialise on the chain head row.
    pub async fn append_audit<L>(
        &self,
        events: Arc<[AuditEvent]>,
        link: L,
    ) -> Result<Vec<ChainLink>, StoreError>
    where
        L: LinkFn + Send + 'static,
    {
        let appended = self
            .append_audit_checked(events, Arc::new([]), link)
            .await?;
        // Nothing was checked, so every event was appended.
        Ok(appended.links.into_iter().flatten().collect())
    }

    /// [`Store::append_audit`] with the credential generation check of
    /// [`Store::append_audit_blocking`]: `read_at[i]`, when given, must still be the current
    /// generation for `events[i]` to be appended (read in the appending statement or
    /// transaction itself).
    pub async fn append_audit_checked<L>(
        &self,
        events: Arc<[AuditEvent]>,
        read_at: Arc<[Option<Generation>]>,
        link: L,
    ) -> Result<Appended, StoreError>
    where
        L: LinkFn + Send + 'static,
    {
        if let Some(writer) = &self.sqlite_audit {
            let writer = writer.clone();
            return tokio::task::spawn_blocking(move || writer.append(&events, &read_at, link))
                .await
                .map_err(|e| StoreError::Sqlite(format!("audit writer thread: {e}")))?;
        }
        self.reachable().await?;
        self.append_audit_pooled(events, read_at, link)
            .await
            .map_err(|e| self.noted(e))
    }

    /// [`Store::append_audit_checked`] through the pool (PostgreSQL, or SQLite in memory).
    async fn append_audit_pooled<L>(
        &self,
        events: Arc<[AuditEvent]>,
        read_at: Arc<[Option<Generation>]>,
        link: L,
    ) -> Result<Appended, StoreError>
    where
        L: LinkFn + Send + 'static,
    {
        let mut checked: Vec<Generation> = read_at.iter().flatten().copied().collect();
        checked.sort_unstable();
        checked.dedup();
        if self.backend == Backend::Postgres && checked.len() <= 1 {
            // Optimistic first: one statement, one round trip, when this instance's idea of the
            // head is current (and, when the batch asks, the credential generation too).
            // Another writer (instance or admin command) moving the head, or a credential
            // change, makes it insert nothing; re-read the head and try again, then fall back
            // to locking the head row, which always makes progress.
            for _ in 0..2 {
                // This instance's own last head, unless a newer link is known (read at start
                // or while idle): then the head is read and checked against it.
                let known = self.audit_written.seq();
                let cached = self
                    .audit_head
                    .lock()
                    .ok()
                    .and_then(|h| h.clone())
                    .filter(|h| known.is_none_or(|k| k <= h.seq));
                let head = match cached {
                    Some(head) => head,
                    None => {
                        let head = self.chain_head().await?;
                        self.confirm_head(&head).await?;
                        head
                    }
                };
                let at = checked.first().copied();
                if let Some(rows) = self.append_audit_if_head(&head, at, &events, &link).await? {
                    self.remember_head(&rows);
                    return Ok(Appended {
                        links: rows.into_iter().map(Some).collect(),
                    });
                }
                self.forget_head();
            }
        }
        let appended = self.append_audit_locked(&events, &read_at, link).await;
        match &appended {
            Ok(appended) => {
                let rows: Vec<ChainLink> = appended.links.iter().flatten().cloned().collect();
                self.remember_head(&rows);
            }
            Err(_) => self.forget_head(),
        }
        appended
    }

    fn remember_head(&self, rows: &[ChainLink]) {
        if let Some(last) = rows.last() {
            self.audit_written.note(last.seq, &last.hash);
        }
        if let (Some(last), Ok(mut head)) = (rows.last(), self.audit_head.lock()) {
            *head = Some(ChainHead {
                seq: last.seq,
                hash: last.hash.clone(),
            });
        }
    }

    /// The newest link of the chain this process knows (appended, or read as the head), if
    /// any (see `written`).
    pub fn audit_written(&self) -> Option<ChainHead> {
        self.audit_written.get()
    }

    /// The link of the chain this process knew, once the writer found the chain changed
    /// under it (see `written`): what the anchor job anchors instead of the database's head.
    pub fn audit_refused_link(&self) -> Option<ChainHead> {
        self.audit_written.refused_link()
    }

    /// Notes `head`, read from the database, as a link of the chain (at start-up, and by the
    /// stdout sink's idle looks): events removed from before it are found by the writer.
    pub fn note_audit_head(&self, head: &ChainHead) {
        self.audit_written.note(head.seq, &head.hash);
    }

    /// Fails when `head`, read from the database, shows the chain changed under this process
    /// (see `written`): behind the link it knows, or past it without it.
    async fn confirm_head(&self, head: &ChainHead) -> Result<(), StoreError> {
        if let Confirm::Row { seq, hash } = self.audit_written.check(head.seq, &head.hash)? {
            let stored: Option<String> = sqlx::query_scalar(KNOWN_LINK_SQL)
                .bind(seq)
                .fetch_optional(&self.pool)
                .await?;
            self.audit_written
                .confirm(seq, &hash, stored.as_deref(), head.seq)?;
        }
        Ok(())
    }

    fn forget_head(&self) {
        if let Ok(mut head) = self.audit_head.lock() {
            *head = None;
        }
    }

    /// PostgreSQL: moves the head from `head` and inserts the rows in one statement, or does
    /// nothing (`None`) when the head is no longer `head` or, with `read_at`, the credential
    /// generation is no longer `read_at`. A single statement is atomic, and a concurrent
    /// writer's update of the head row makes this one's `WHERE` fail after it commits (READ
    /// COMMITTED re-checks the row), so two writers never both extend one head.
    async fn append_audit_if_head(
        &self,
        head: &ChainHead,
        read_at: Option<Generation>,
        events: &[AuditEvent],
        link: impl LinkFn,
    ) -> Result<Option<Vec<ChainLink>>, StoreError> {
        // Read before linking: should the key in use move to the next one meanwhile, the
        // statement then names the key the rows were not linked with and inserts nothing.
        let key_fingerprint = self.audit_written.key_fingerprint().unwrap_or_default();
        let rows = chain_rows(head.seq, &head.hash, events, link)?;
        let Some(last) = rows.last().map(|row| &row.link) else {
            return Ok(Some(Vec::new()));
        };
        let rows_json = rows_json(&rows)?;
        let mut query = sqlx::query(match read_at {
            Some(_) => INSERT_IF_HEAD_AND_GENERATION,
            None => INSERT_IF_HEAD,
        })
        .bind(last.seq)
        .bind(last.hash.clone())
        .bind(head.seq)
        .bind(head.hash.clone())
        .bind(rows_json)
        .bind(key_fingerprint);
        if let Some(at) = read_at {
            query = query.bind(at.0);
        }
        let mut held = self.audit_conn.lock().await;
        let mut conn = Unfinished(Some(match held.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        }));
        // After an error, or when the writer's deadline cancels this mid-query, the
        // connection's state is unknown: `Unfinished` closes it, and the next batch takes a
        // fresh one.
        let Some(open) = conn.0.as_mut() else {
            return Err(StoreError::Corrupt("audit connection missing".into()));
        };
        let inserted = query.execute(&mut **open).await?.rows_affected();
        *held = conn.0.take();
        drop(held);
        if inserted == 0 {
            return Ok(None);
        }
        if inserted != rows.len() as u64 {
            return Err(StoreError::Corrupt(format!(
                "audit append inserted {inserted} of {} rows",
                rows.len()
            )));
        }
        Ok(Some(links(rows)))
    }

    /// Appends inside a transaction that locks the chain head first, leaving out the events
    /// whose `read_at` generation is no longer the current one.
    async fn append_audit_locked(
        &self,
        events: &[AuditEvent],
        read_at: &[Option<Generation>],
        link: impl LinkFn,
    ) -> Result<Appended, StoreError> {
        let mut tx = self.begin_write().await?;
        let LockedHead {
            seq: head_seq,
            hash: head_hash,
            key_fingerprint,
        } = self.lock_chain_head(&mut tx).await?;
        self.audit_written.check_key(&key_fingerprint)?;
        if let Confirm::Row { seq, hash } = self.audit_written.check(head_seq, &head_hash)? {
            let stored: Option<String> = sqlx::query_scalar(KNOWN_LINK_SQL)
                .bind(seq)
                .fetch_optional(&mut **tx.conn()?)
                .await?;
            self.audit_written
                .confirm(seq, &hash, stored.as_deref(), head_seq)?;
        }
        // Read after the head is locked: a credential change committed before this point is
        // seen, one committed later comes after these events.
        let generation = Generation(
            sqlx::query("SELECT n FROM credential_generation WHERE id = 1")
                .fetch_one(&mut **tx.conn()?)
                .await?
                .try_get("n")?,
        );
        let current = still_current(read_at, events.len(), generation);
        let admitted = events
            .iter()
            .zip(&current)
            .filter_map(|(event, &ok)| ok.then_some(event));
        let rows = chain_rows(head_seq, &head_hash, admitted, link)?;
        let Some(last) = rows.last().map(|row| &row.link) else {
            return Ok(Appended {
                links: current.iter().map(|_| None).collect(),
            });
        };
        let (last_seq, last_hash) = (last.seq, last.hash.clone());
        self.insert_linked(&mut tx, &rows).await?;
        sqlx::query("UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(last_seq)
            .bind(last_hash)
            .execute(&mut **tx.conn()?)
            .await?;
        tx.commit().await?;
        Ok(Appended::aligned(&current, links(rows)))
    }

    /// Reads the chain head inside `tx` and keeps other writers from moving it until `tx`
    /// ends: PostgreSQL locks the row (waiting at most 3 s behind another holder), SQLite's
    /// `BEGIN IMMEDIATE` holds the database's write lock already.
    pub(super) async fn lock_chain_head(&self, tx: &mut WriteTx) -> Result<LockedHead, StoreError> {
        if self.backend == Backend::Postgres {
            // Never wait indefinitely behind another holder of the chain head: fail, and let
            // the request be refused with 503.
            sqlx::query("SET LOCAL lock_timeout = '3s'")
                .execute(&mut **tx.conn()?)
                .await?;
        }
        let head_sql = match self.backend {
            Backend::Sqlite => {
                "SELECT seq, hash, key_fingerprint FROM audit_chain_head WHERE id = 1"
            }
            Backend::Postgres => {
                "SELECT seq, hash, key_fingerprint FROM audit_chain_head WHERE id = 1 FOR UPDATE"
            }
        };
        let head = sqlx::query(head_sql).fetch_one(&mut **tx.conn()?).await?;
        Ok(LockedHead {
            seq: head.try_get("seq")?,
            hash: head.try_get("hash")?,
            key_fingerprint: head.try_get("key_fingerprint")?,
        })
    }

    /// Inserts linked `rows` inside `tx` (the head is moved by the caller).
    pub(super) async fn insert_linked(
        &self,
        tx: &mut WriteTx,
        rows: &[Linked<'_>],
    ) -> Result<(), StoreError> {
        match self.backend {
            Backend::Postgres => {
                sqlx::query(INSERT_ROWS)
                    .bind(rows_json(rows)?)
                    .execute(&mut **tx.conn()?)
                    .await?;
            }
            // An in-memory database, or an admin command's rotation (a gateway's appends to a
            // file go through its own writer).
            Backend::Sqlite => {
                for row in rows {
                    insert_one(row).execute(&mut **tx.conn()?).await?;
                }
            }
        }
        Ok(())
    }

    /// Events with `seq > after`, in order, at most `limit`.
    pub async fn audit_rows(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let rows = self.audit_rows_as_stored(after, limit).await?;
        Ok(rows.into_iter().map(|(row, _)| row).collect())
    }

    /// Events with `seq < before`, newest first, at most `limit`: the audit API's pages.
    pub async fn audit_rows_before(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM audit_events WHERE seq < $1 ORDER BY seq DESC LIMIT $2"
            );
            let rows = sqlx::query(sql)
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    /// [`Store::audit_rows`] with each event's `details` exactly as stored: what `audit
    /// verify` hashes, so an edit that parses to the same JSON (spacing, a duplicate key that
    /// SQL's JSON functions would read instead) still breaks the chain.
    pub async fn audit_rows_as_stored(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(AuditRow, String)>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
            );
            let rows = sqlx::query(sql)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(from_row_as_stored).collect()
        })
        .await
    }

    /// The gateway's own events (action `gateway:…`) and the refusals (proxied calls too)
    /// numbered after `after` and up to `through`, in order, at most `limit`: what
    /// notifications are made of. The proxied calls allowed between them are skipped in the
    /// database, not read.
    pub async fn notable_events_between(
        &self,
        after: i64,
        through: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM audit_events WHERE seq > $1 AND seq <= $2 \
                 AND (action LIKE 'gateway:%' OR rbac_decision = 'deny') ORDER BY seq LIMIT $3"
            );
            let rows = sqlx::query(sql)
                .bind(after)
                .bind(through)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    /// Events numbered `from..=to` recorded with `actor_type`, in order, at most `limit`.
    pub async fn audit_rows_between(
        &self,
        from: i64,
        to: i64,
        actor_type: &str,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM audit_events WHERE seq >= $1 AND seq <= $2 AND actor_type = $3 \
                 ORDER BY seq LIMIT $4"
            );
            let rows = sqlx::query(sql)
                .bind(from)
                .bind(to)
                .bind(actor_type)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|r| from_row_as_stored(r).map(|(row, _)| row))
                .collect()
        })
        .await
    }

    /// The newest event not written by `actor_type` (0 when there is none): on the trail,
    /// where events by other actors end. Read from the end of the chain, so cheap while the
    /// events after it are few.
    pub async fn last_seq_not_by(&self, actor_type: &str) -> Result<i64, StoreError> {
        bounded(self, async {
            let seq: Option<i64> = sqlx::query_scalar(
                "SELECT seq FROM audit_events WHERE actor_type <> $1 ORDER BY seq DESC LIMIT 1",
            )
            .bind(actor_type)
            .fetch_optional(&self.pool)
            .await?;
            Ok(seq.unwrap_or(0))
        })
        .await
    }

    /// Events for one request id, in order.
    pub async fn audit_by_request(&self, request_id: &str) -> Result<Vec<AuditRow>, StoreError> {
        bounded(self, async {
            let sql = concat!(
                "SELECT ",
                columns!(),
                " FROM audit_events WHERE request_id = $1 ORDER BY seq"
            );
            let rows = sqlx::query(sql)
                .bind(request_id)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(from_row).collect()
        })
        .await
    }

    /// How many audit events are numbered where the chain does not reach: 0 or below, or past
    /// the head (read in the same statement, so events being appended are not counted).
    pub async fn audit_rows_outside_chain(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM audit_events WHERE seq <= 0 \
             OR seq > (SELECT seq FROM audit_chain_head WHERE id = 1)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// The first event after `after_seq` (up to `until_seq`) whose time is within
    /// `from_ms..to_ms`: its number and time.
    pub async fn first_event_between(
        &self,
        after_seq: i64,
        until_seq: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, ts FROM audit_events WHERE seq > $1 AND seq <= $2 AND ts > $3 \
             AND ts < $4 ORDER BY seq LIMIT 1",
        )
        .bind(after_seq)
        .bind(until_seq)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("seq")?, r.try_get("ts")?)))
            .transpose()
    }

    /// The first gateway event (by `seq`) whose action is `action`, with its details as
    /// stored, if any.
    pub async fn first_gateway_event(
        &self,
        action: &str,
    ) -> Result<Option<(i64, String)>, StoreError> {
        bounded(self, async {
            let row = sqlx::query(
                "SELECT seq, details FROM audit_events WHERE action = $1 AND kind = 'gateway' \
                 ORDER BY seq LIMIT 1",
            )
            .bind(action)
            .fetch_optional(&self.pool)
            .await?;
            row.map(|r| Ok((r.try_get("seq")?, r.try_get("details")?)))
                .transpose()
        })
        .await
    }

    /// The chain head.
    pub async fn chain_head(&self) -> Result<ChainHead, StoreError> {
        bounded(self, async {
            let row = sqlx::query("SELECT seq, hash FROM audit_chain_head WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
            Ok(ChainHead {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
            })
        })
        .await
    }

    /// Runs one raw statement; for tests that prove the database refuses tampering.
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, StoreError> {
        Ok(self
            .pool
            .execute(sqlx::AssertSqlSafe(sql.to_string()))
            .await?
            .rows_affected())
    }
}

/// A pooled connection a query is using that may be cancelled (the audit writer's deadline)
/// or fail: unless taken back out after the query, it is detached from the pool and closed at
/// once when dropped. Returned to the pool instead, it would be pinged there without a time
/// limit — against a hung server, for as long as TCP takes to give up — while still counting
/// against the pool's size.
struct Unfinished(Option<sqlx::pool::PoolConnection<sqlx::Any>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}
