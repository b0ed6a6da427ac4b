//! Exporting audit events for an auditor or a SIEM: which events ([`ExportFilter`]) and in
//! what form ([`ExportFormat`]: JSON lines, the same lines the stdout sink prints, or CSV for a
//! spreadsheet). The events are read as stored: everything in them was redacted before it was
//! written.

use std::io::Write;

use super::{ActorType, Decision, EventKind};
use crate::store::AuditRow;

/// Which events an export keeps. Every condition given must hold; none given keeps them all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportFilter {
    /// Events at or after this time (unix ms).
    pub since_ms: Option<i64>,
    /// Events before this time (unix ms).
    pub until_ms: Option<i64>,
    /// Events numbered at least this.
    pub from_seq: Option<i64>,
    /// Events numbered at most this.
    pub to_seq: Option<i64>,
    /// Actions matching any of these patterns (`*` matches any run of characters).
    pub actions: Vec<String>,
    /// Events of this user (e-mail, any letter case): theirs, and their tokens'.
    pub user: Option<String>,
    /// Events made with this API token (its name).
    pub token: Option<String>,
    /// Events of these kinds.
    pub kinds: Vec<EventKind>,
    /// Events with these RBAC decisions.
    pub decisions: Vec<Decision>,
    /// Events of these actors.
    pub actor_types: Vec<ActorType>,
    /// The events of one request (its `X-Request-Id`).
    pub request_id: Option<String>,
}

impl ExportFilter {
    /// Whether `row` is kept.
    pub fn keeps(&self, row: &AuditRow) -> bool {
        let e = &row.event;
        self.since_ms.is_none_or(|t| e.ts >= t)
            && self.until_ms.is_none_or(|t| e.ts < t)
            && self.from_seq.is_none_or(|s| row.seq >= s)
            && self.to_seq.is_none_or(|s| row.seq <= s)
            && (self.actions.is_empty() || self.actions.iter().any(|p| glob(p, &e.action)))
            && self.user.as_ref().is_none_or(|u| {
                e.user_email
                    .as_ref()
                    .is_some_and(|email| email.eq_ignore_ascii_case(u))
            })
            && self
                .token
                .as_ref()
                .is_none_or(|t| e.token_name.as_deref() == Some(t.as_str()))
            && (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && (self.decisions.is_empty() || self.decisions.contains(&e.rbac_decision))
            && (self.actor_types.is_empty() || self.actor_types.contains(&e.actor_type))
            && self
                .request_id
                .as_ref()
                .is_none_or(|id| e.request_id == *id)
    }

    /// Whether no event numbered past `seq` can be kept: the scan can stop.
    pub fn done_after(&self, seq: i64) -> bool {
        self.to_seq.is_some_and(|to| seq >= to)
    }
}

/// A time as unix ms: RFC 3339 (`2026-11-01T09:30:00Z`), a date (`2026-11-01`, midnight UTC),
/// or a span ago from `now_ms` (`7d`, `12h`, `30m`). The error says which forms are taken.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>()
        && let Ok(zoned) = date.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(zoned.timestamp().as_millisecond());
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
        return Ok(now_ms.saturating_sub(ago));
    }
    Err(format!(
        "{:?} is not a time: give RFC 3339 (2026-11-01T09:30:00Z), a date (2026-11-01) or a \
         time ago (7d, 12h, 30m)",
        gateway_core::redact::clip(text.to_string(), 64)
    ))
}

/// `pattern` with `*` standing for any run of characters (none included) matches `text`.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*` at all: the whole text must be the pattern.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// `row` as the JSON object the stdout sink prints for it.
pub fn json_value(row: &AuditRow) -> serde_json::Value {
    serde_json::to_value(super::stdout::JsonLine::from(row)).unwrap_or_default()
}

/// The form of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line, as the stdout sink prints them (`"type": "audit"`).
    JsonLines,
    /// A header and one row per event; `details` as JSON text.
    Csv,
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 17] = [
    "seq",
    "ts",
    "kind",
    "request_id",
    "actor_type",
    "user_email",
    "token_name",
    "method",
    "path",
    "action",
    "rbac_decision",
    "status",
    "latency_ms",
    "client_ip",
    "user_agent",
    "details",
    "hash",
];

/// Writes events to `out` in one format.
pub enum ExportWriter<W: Write> {
    /// JSON lines.
    JsonLines(W),
    /// CSV, its header written.
    Csv(Box<csv::Writer<W>>),
}

impl<W: Write> ExportWriter<W> {
    /// Starts an export to `out` (a CSV one with its header).
    pub fn new(out: W, format: ExportFormat) -> std::io::Result<ExportWriter<W>> {
        Ok(match format {
            ExportFormat::JsonLines => ExportWriter::JsonLines(out),
            ExportFormat::Csv => {
                let mut csv = csv::Writer::from_writer(out);
                csv.write_record(CSV_COLUMNS)?;
                ExportWriter::Csv(Box::new(csv))
            }
        })
    }

    /// Writes `row`.
    pub fn write(&mut self, row: &AuditRow) -> std::io::Result<()> {
        match self {
            ExportWriter::JsonLines(out) => {
                serde_json::to_writer(&mut *out, &super::stdout::JsonLine::from(row))?;
                out.write_all(b"\n")
            }
            ExportWriter::Csv(csv) => Ok(csv.write_record(csv_record(row))?),
        }
    }

    /// Flushes, and hands `out` back.
    pub fn finish(self) -> std::io::Result<W> {
        match self {
            ExportWriter::JsonLines(mut out) => {
                out.flush()?;
                Ok(out)
            }
            ExportWriter::Csv(mut csv) => {
                csv.flush()?;
                csv.into_inner().map_err(|e| e.into_error())
            }
        }
    }
}

/// `row` as CSV cells. A text cell a spreadsheet would read as a formula (one that starts with
/// `=`, `+`, `-`, `@`, a tab or a carriage return: a user agent, a path or a detail is the
/// caller's text) starts with `'` instead, so opening the file runs nothing.
fn csv_record(row: &AuditRow) -> Vec<String> {
    let e = &row.event;
    let text = |value: Option<&str>| value.map(inert).unwrap_or_default();
    let ts =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(e.ts).unwrap_or(0));
    vec![
        row.seq.to_string(),
        super::format_time(ts),
        e.kind.as_str().to_string(),
        text(Some(&e.request_id)),
        e.actor_type.as_str().to_string(),
        text(e.user_email.as_deref()),
        text(e.token_name.as_deref()),
        text(e.method.as_deref()),
        text(e.path.as_deref()),
        text(Some(&e.action)),
        e.rbac_decision.as_str().to_string(),
        e.status.map(|s| s.to_string()).unwrap_or_default(),
        e.latency_ms.map(|l| l.to_string()).unwrap_or_default(),
        text(e.client_ip.as_deref()),
        text(e.user_agent.as_deref()),
        inert(&e.details.to_string()),
        row.hash.clone(),
    ]
}

/// `value`, with a `'` in front when a spreadsheet would take it for a formula.
fn inert(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditEvent;

    fn row(seq: i64, event: AuditEvent) -> AuditRow {
        AuditRow {
            seq,
            event,
            prev_hash: "0".repeat(64),
            hash: format!("{seq:064x}"),
        }
    }

    #[test]
    fn times_come_in_three_forms() {
        let now = 1_800_000_000_000;
        let at = |w: &str| parse_time(w, now).ok();
        assert_eq!(at("2026-11-01T09:30:00Z"), Some(1_793_525_400_000));
        assert_eq!(at("2026-11-01T10:30:00+01:00"), Some(1_793_525_400_000));
        assert_eq!(at("2026-11-01"), Some(1_793_491_200_000));
        assert_eq!(at(" 7d "), Some(now - 7 * 86_400_000));
        assert_eq!(at("30m"), Some(now - 1_800_000));
        for bad in ["yesterday", "2026-13-01", "", "-5"] {
            let e = parse_time(bad, now).err();
            assert!(
                e.as_deref().is_some_and(|e| e.contains("is not a time")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn globs_match_as_people_expect() {
        for (pattern, text, expected) in [
            ("convox:apps:list", "convox:apps:list", true),
            ("convox:apps:list", "convox:apps:listing", false),
            ("convox:apps:*", "convox:apps:delete", true),
            ("convox:apps:*", "convox:builds:create", false),
            ("*:delete", "convox:apps:delete", true),
            ("*", "anything", true),
            ("gateway:*:create", "gateway:tokens:create", true),
            ("gateway:*:create", "gateway:tokens:revoke", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("*a*", "xyz", false),
            ("", "", true),
            ("", "x", false),
        ] {
            assert_eq!(glob(pattern, text), expected, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn every_condition_given_must_hold() {
        let mut e = AuditEvent::new(EventKind::Request, "req-1", "convox:apps:delete");
        e.ts = 1_000;
        e.user_email = Some("Ann@Example.com".into());
        e.token_name = Some("ci".into());
        e.rbac_decision = Decision::Deny;
        e.actor_type = ActorType::Token;
        let r = row(7, e);
        assert!(ExportFilter::default().keeps(&r));
        let keeps = |f: ExportFilter| f.keeps(&r);
        assert!(keeps(ExportFilter {
            since_ms: Some(1_000),
            until_ms: Some(1_001),
            from_seq: Some(7),
            to_seq: Some(7),
            actions: vec!["convox:builds:*".into(), "*:delete".into()],
            user: Some("ann@example.com".into()),
            token: Some("ci".into()),
            kinds: vec![EventKind::Request],
            decisions: vec![Decision::Deny],
            actor_types: vec![ActorType::Token],
            request_id: Some("req-1".into()),
        }));
        for miss in [
            ExportFilter {
                since_ms: Some(1_001),
                ..Default::default()
            },
            ExportFilter {
                until_ms: Some(1_000),
                ..Default::default()
            },
            ExportFilter {
                from_seq: Some(8),
                ..Default::default()
            },
            ExportFilter {
                to_seq: Some(6),
                ..Default::default()
            },
            ExportFilter {
                actions: vec!["convox:apps:list".into()],
                ..Default::default()
            },
            ExportFilter {
                user: Some("bob@example.com".into()),
                ..Default::default()
            },
            ExportFilter {
                token: Some("CI".into()),
                ..Default::default()
            },
            ExportFilter {
                kinds: vec![EventKind::Outcome],
                ..Default::default()
            },
            ExportFilter {
                decisions: vec![Decision::Allow],
                ..Default::default()
            },
            ExportFilter {
                actor_types: vec![ActorType::User],
                ..Default::default()
            },
            ExportFilter {
                request_id: Some("req-2".into()),
                ..Default::default()
            },
        ] {
            assert!(!miss.keeps(&r), "{miss:?}");
        }
    }

    #[test]
    fn csv_quotes_and_defuses_what_a_spreadsheet_would_run() {
        let mut e = AuditEvent::new(EventKind::Request, "r", "convox:apps:list")
            .with_details(serde_json::json!({"note": "a, \"b\"\nc"}));
        e.user_agent = Some("=HYPERLINK(\"http://x\")".into());
        e.path = Some("/apps".into());
        e.status = Some(200);
        let mut w =
            ExportWriter::new(Vec::new(), ExportFormat::Csv).unwrap_or_else(|e| panic!("{e}"));
        w.write(&row(1, e)).unwrap_or_else(|err| panic!("{err}"));
        let out = w.finish().unwrap_or_else(|err| panic!("{err}"));
        let mut reader = csv::Reader::from_reader(out.as_slice());
        let headers = reader.headers().cloned().unwrap_or_default();
        assert_eq!(headers.iter().collect::<Vec<_>>(), CSV_COLUMNS);
        let records: Vec<csv::StringRecord> = reader.records().map_while(Result::ok).collect();
        assert_eq!(records.len(), 1);
        let cell = |name: &str| {
            let at = CSV_COLUMNS.iter().position(|c| *c == name).unwrap_or(0);
            records[0].get(at).unwrap_or_default().to_string()
        };
        assert_eq!(cell("user_agent"), "'=HYPERLINK(\"http://x\")");
        assert_eq!(cell("path"), "/apps");
        assert_eq!(cell("status"), "200");
        assert_eq!(cell("details"), r#"{"note":"a, \"b\"\nc"}"#);
        assert_eq!(cell("seq"), "1");
    }

    #[test]
    fn an_empty_csv_export_still_has_its_header_and_json_lines_match_stdout() {
        let w = ExportWriter::new(Vec::new(), ExportFormat::Csv).unwrap_or_else(|e| panic!("{e}"));
        let out = w.finish().unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(String::from_utf8_lossy(&out), CSV_COLUMNS.join(",") + "\n");

        let e = AuditEvent::new(EventKind::Gateway, "r", "gateway:tokens:create");
        let mut w = ExportWriter::new(Vec::new(), ExportFormat::JsonLines)
            .unwrap_or_else(|e| panic!("{e}"));
        w.write(&row(3, e)).unwrap_or_else(|err| panic!("{err}"));
        let out = w.finish().unwrap_or_else(|err| panic!("{err}"));
        let text = String::from_utf8_lossy(&out);
        assert!(text.ends_with("}\n") && text.lines().count() == 1, "{text}");
        let line: serde_json::Value =
            serde_json::from_str(text.trim()).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(line["type"], "audit");
        assert_eq!(line["seq"], 3);
        assert_eq!(line["action"], "gateway:tokens:create");
        assert_eq!(line["hash"], format!("{:064x}", 3));
    }
}
