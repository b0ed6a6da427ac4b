//! `GET /api/v1/audit/events`: the audit trail for admins and auditors (`gateway:audit:read`),
//! newest first, filtered as `audit export` filters it, a page at a time. Reading the trail is
//! itself audited (`gateway:audit:read`), as SOC 2 asks of access to audit logs.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Caller;
use crate::app::AppState;
use crate::audit::export::{ExportFilter, json_value, parse_time};
use crate::audit::{ActorType, Decision, EventKind};
use crate::error::ApiError;
use crate::store::AuditRow;

/// The permission to read the trail.
pub const READ: &str = "gateway:audit:read";

/// Events in a page unless `limit` says otherwise, and most it may say.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

/// Most events one call reads looking for matches: a narrow filter over a long trail answers
/// with fewer events and a `next_before` to go on from, rather than scanning it all at once.
const MAX_SCANNED: usize = 20_000;

/// Events read from the store at a time.
const PAGE: i64 = 1_000;

/// A page request: the filter, how many, and where to start.
#[derive(Debug)]
pub(crate) struct PageQuery {
    filter: ExportFilter,
    limit: usize,
    /// Only events numbered below this.
    before: Option<i64>,
}

/// Reads `query` (`since`, `until`, `from_seq`, `to_seq`, `action`…, `user`, `token`,
/// `kind`…, `decision`…, `actor`…, `request_id`, `limit`, `before`). A parameter it does not
/// know is refused, as a misspelt filter would otherwise return everything.
pub(crate) fn parse_query(query: &str, now_ms: i64) -> Result<PageQuery, String> {
    let mut page = PageQuery {
        filter: ExportFilter::default(),
        limit: DEFAULT_LIMIT,
        before: None,
    };
    let number = |name: &str, value: &str| {
        value
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("{name} must be a whole number from 1"))
    };
    let f = &mut page.filter;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim();
        match name.as_ref() {
            "since" => {
                f.since_ms = Some(parse_time(value, now_ms).map_err(|e| format!("since: {e}"))?)
            }
            "until" => {
                f.until_ms = Some(parse_time(value, now_ms).map_err(|e| format!("until: {e}"))?)
            }
            "from_seq" => f.from_seq = Some(number("from_seq", value)?),
            "to_seq" => f.to_seq = Some(number("to_seq", value)?),
            "before" => page.before = Some(number("before", value)?),
            "action" if value.is_empty() => return Err("action: an empty pattern".into()),
            "action" => f.actions.push(value.to_string()),
            "user" => f.user = Some(value.to_string()),
            "token" => f.token = Some(value.to_string()),
            "request_id" => f.request_id = Some(value.to_string()),
            "kind" => f.kinds.push(
                value
                    .parse::<EventKind>()
                    .map_err(|()| "kind must be request, outcome or gateway".to_string())?,
            ),
            "decision" => f.decisions.push(
                value
                    .parse::<Decision>()
                    .map_err(|()| "decision must be allow, deny or none".to_string())?,
            ),
            "actor" => f.actor_types.push(
                value
                    .parse::<ActorType>()
                    .map_err(|()| "actor must be user, token, anonymous or cli".to_string())?,
            ),
            "limit" => {
                page.limit = number("limit", value)?
                    .try_into()
                    .ok()
                    .filter(|n| *n <= MAX_LIMIT)
                    .ok_or_else(|| format!("limit must be at most {MAX_LIMIT}"))?;
            }
            other => {
                return Err(format!(
                    "unknown parameter {:?}",
                    gateway_core::redact::clip(other.to_string(), 64)
                ));
            }
        }
    }
    if let (Some(since), Some(until)) = (f.since_ms, f.until_ms)
        && since >= until
    {
        return Err("since must be before until".into());
    }
    Ok(page)
}

/// `GET /api/v1/audit/events`
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&state, READ).await?;
    let query = query.unwrap_or_default();
    let page = match parse_query(&query, crate::store::now_ms()) {
        Ok(page) => page,
        Err(e) => {
            let asked = json!({ "query": gateway_core::redact::clip(query, 512) });
            return Err(caller
                .refuse(&state, READ, ApiError::BadRequest(e), asked)
                .await);
        }
    };
    let (rows, next_before, scanned) = scan(&state, &page).await?;
    // Recorded before anything is shown: who read what, found by which filter.
    let event = caller.event(READ).with_details(json!({
        "query": gateway_core::redact::clip(query, 512),
        "returned": rows.len(),
        "scanned": scanned,
    }));
    state
        .audit
        .record(event)
        .await
        .map_err(|_| ApiError::AuditUnavailable)?;
    Ok(Json(json!({
        "events": rows.iter().map(json_value).collect::<Vec<_>>(),
        "next_before": next_before,
        "scanned": scanned,
    }))
    .into_response())
}

/// Reads the trail downwards from `page.before` until the page is full, the filter's range or
/// the chain's start is reached, or [`MAX_SCANNED`] events were read. Returns the events kept,
/// where to go on from (`None`: nothing older can match) and how many were read.
pub(crate) async fn scan(
    state: &AppState,
    page: &PageQuery,
) -> Result<(Vec<AuditRow>, Option<i64>, usize), ApiError> {
    let store = &state.store;
    scan_pages(page, MAX_SCANNED, move |before| async move {
        store
            .audit_rows_before(before, PAGE)
            .await
            .map_err(ApiError::store)
    })
    .await
}

/// [`scan`], reading with `fetch` (events below a number, newest first, [`PAGE`] at most) and
/// stopping after `max_scanned` events.
async fn scan_pages<F, Fut>(
    page: &PageQuery,
    max_scanned: usize,
    mut fetch: F,
) -> Result<(Vec<AuditRow>, Option<i64>, usize), ApiError>
where
    F: FnMut(i64) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<AuditRow>, ApiError>>,
{
    let filter = &page.filter;
    let mut before = page.before.unwrap_or(i64::MAX);
    if let Some(to) = filter.to_seq {
        before = before.min(to.saturating_add(1));
    }
    let floor = filter.from_seq.unwrap_or(1);
    let mut kept = Vec::new();
    let mut scanned = 0;
    loop {
        if before <= floor {
            return Ok((kept, None, scanned));
        }
        let rows = fetch(before).await?;
        let exhausted = rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX);
        for row in rows {
            before = row.seq;
            if row.seq < floor {
                return Ok((kept, None, scanned));
            }
            scanned += 1;
            if filter.keeps(&row) {
                kept.push(row);
                if kept.len() == page.limit {
                    return Ok((kept, Some(before).filter(|b| *b > floor), scanned));
                }
            }
            if scanned == max_scanned {
                return Ok((kept, Some(before).filter(|b| *b > floor), scanned));
            }
        }
        if exhausted {
            return Ok((kept, None, scanned));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trail of `n` events, every tenth a refusal.
    fn trail(n: i64) -> Vec<AuditRow> {
        (1..=n)
            .map(|seq| {
                let mut e =
                    crate::audit::AuditEvent::new(EventKind::Request, "r", "convox:apps:list");
                if seq % 10 == 0 {
                    e.rbac_decision = Decision::Deny;
                }
                AuditRow {
                    seq,
                    event: e,
                    prev_hash: String::new(),
                    hash: String::new(),
                }
            })
            .collect()
    }

    /// Scans `rows` (oldest first) as the store would hand them out.
    async fn run(
        rows: &[AuditRow],
        query: &str,
        max_scanned: usize,
    ) -> (Vec<i64>, Option<i64>, usize) {
        let page = parse_query(query, 0).unwrap_or_else(|e| panic!("{e}"));
        let fetch = |before: i64| {
            let page = usize::try_from(PAGE).unwrap_or(0);
            std::future::ready(Ok(rows
                .iter()
                .rev()
                .filter(|r| r.seq < before)
                .take(page)
                .cloned()
                .collect()))
        };
        let (kept, next, scanned) = scan_pages(&page, max_scanned, fetch)
            .await
            .unwrap_or_else(|_| panic!("scan failed"));
        (kept.iter().map(|r| r.seq).collect(), next, scanned)
    }

    #[tokio::test]
    async fn a_scan_stops_at_the_page_the_range_or_its_bound() {
        let rows = trail(2_500);
        // A full page: where to go on from.
        let (seqs, next, scanned) = run(&rows, "limit=3", MAX_SCANNED).await;
        assert_eq!(
            (seqs, next, scanned),
            (vec![2_500, 2_499, 2_498], Some(2_498), 3)
        );
        // Across the store's pages, to the chain's start: nothing older.
        let (seqs, next, scanned) = run(&rows, "decision=deny&limit=1000", MAX_SCANNED).await;
        assert_eq!(seqs.len(), 250);
        assert_eq!(
            (seqs[0], seqs[249], next, scanned),
            (2_500, 10, None, 2_500)
        );
        // A narrow filter over a trail longer than the bound: what it found, and where to
        // go on from.
        let (seqs, next, scanned) = run(&rows, "decision=deny", 1_234).await;
        assert_eq!(
            (seqs.len(), next, scanned),
            (100, Some(1_510), 991),
            "the page fills first"
        );
        let (seqs, next, scanned) = run(&rows, "decision=deny&limit=1000", 1_234).await;
        assert_eq!((seqs.len(), next, scanned), (124, Some(1_267), 1_234));
        let (seqs, next, _) = run(&rows, "decision=deny&limit=1000&before=1267", 1_234).await;
        assert_eq!((seqs.len(), next), (123, Some(33)));
        let (seqs, next, _) = run(&rows, "decision=deny&limit=1000&before=33", 1_234).await;
        assert_eq!((seqs, next), (vec![30, 20, 10], None));
        // A range of numbers bounds the scan at both ends.
        let (seqs, next, scanned) = run(&rows, "from_seq=1995&to_seq=2004", MAX_SCANNED).await;
        assert_eq!(seqs, (1_995..=2_004).rev().collect::<Vec<_>>());
        assert_eq!((next, scanned), (None, 10));
        let (seqs, next, _) = run(&rows, "from_seq=1995&to_seq=2004&limit=10", MAX_SCANNED).await;
        assert_eq!(
            (seqs.len(), next),
            (10, None),
            "nothing older is in the range"
        );
        // Paging past the start, or an empty trail.
        assert_eq!(run(&rows, "before=1", MAX_SCANNED).await, (vec![], None, 0));
        assert_eq!(run(&[], "", MAX_SCANNED).await, (vec![], None, 0));
    }

    #[test]
    fn queries_are_read_strictly() {
        let now = 1_800_000_000_000;
        let page = parse_query(
            "since=2026-11-01&action=convox%3Aapps%3A*&action=*%3Adelete&decision=deny\
             &kind=request&actor=token&user=ann%40example.com&limit=5&before=90&to_seq=80",
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.limit, 5);
        assert_eq!(page.before, Some(90));
        assert_eq!(page.filter.to_seq, Some(80));
        assert_eq!(page.filter.actions, vec!["convox:apps:*", "*:delete"]);
        assert_eq!(page.filter.decisions, vec![Decision::Deny]);
        assert_eq!(page.filter.user.as_deref(), Some("ann@example.com"));
        assert_eq!(page.filter.since_ms, Some(1_793_491_200_000));
        for (bad, says) in [
            ("limit=0", "limit must be a whole number"),
            ("limit=1001", "limit must be at most 1000"),
            ("before=-3", "before must be a whole number"),
            ("kind=everything", "kind must be"),
            ("decision=maybe", "decision must be"),
            ("since=yesterday", "since: \"yesterday\" is not a time"),
            (
                "since=2026-11-02&until=2026-11-01",
                "since must be before until",
            ),
            (
                "acton=convox%3Aapps%3Adelete",
                "unknown parameter \"acton\"",
            ),
            ("action=", "action: an empty pattern"),
        ] {
            let e = parse_query(bad, now).err().unwrap_or_default();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(parse_query("", now).map(|p| p.limit), Ok(DEFAULT_LIMIT));
    }
}
