//! `GET /audit`: the audit trail in the browser, for those holding `gateway:audit:read` — the
//! same filters and pages as `GET /api/v1/audit/events`, and every read audited the same way.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use super::{StoreDown, cookies, not_allowed, page_event, page_refusal, render, signed_in_page};
use crate::api::audit::{READ, parse_query, scan};
use crate::app::{AppState, Peer};
use crate::audit::Decision;
use crate::identity::Principal;
use crate::store::AuditRow;

/// One event as a row of the page.
struct EventView {
    seq: i64,
    time: String,
    kind: &'static str,
    who: String,
    action: String,
    decision: &'static str,
    status: String,
    request: String,
    ip: String,
}

impl From<&AuditRow> for EventView {
    fn from(row: &AuditRow) -> EventView {
        let e = &row.event;
        let who = match (&e.user_email, &e.token_name) {
            (_, Some(token)) => format!("token:{token}"),
            (Some(email), None) => email.clone(),
            (None, None) => e.actor_type.as_str().to_string(),
        };
        let request = match (&e.method, &e.path) {
            (Some(m), Some(p)) => format!("{m} {p}"),
            _ => String::new(),
        };
        EventView {
            seq: row.seq,
            time: super::time(e.ts),
            kind: e.kind.as_str(),
            who,
            action: e.action.clone(),
            decision: e.rbac_decision.as_str(),
            status: e.status.map(|s| s.to_string()).unwrap_or_default(),
            request,
            ip: e.client_ip.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    csrf: String,
    form: Filled,
    error: Option<String>,
    events: Vec<EventView>,
    scanned: usize,
    older: Option<String>,
}

/// The form's fields as they were filled in, to show them again.
#[derive(Debug, Default, PartialEq, Eq)]
struct Filled {
    since: String,
    until: String,
    action: String,
    user: String,
    token: String,
    decision: String,
}

impl Filled {
    fn from_query(query: &str) -> Filled {
        let mut f = Filled::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let field = match name.as_ref() {
                "since" => &mut f.since,
                "until" => &mut f.until,
                "action" => &mut f.action,
                "user" => &mut f.user,
                "token" => &mut f.token,
                "decision" => &mut f.decision,
                _ => continue,
            };
            *field = value.into_owned();
        }
        f
    }
}

/// The query without its empty fields (the form sends every field), and without `before`
/// unless `keep_before`.
fn non_empty(query: &str, keep_before: bool) -> String {
    let pairs = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(name, value)| (keep_before || name != "before") && !value.trim().is_empty());
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// `GET /audit`
pub async fn page(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (principal, token) = match signed_in_page(&state, &headers, "/audit").await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    let raw = query.unwrap_or_default();
    let query = non_empty(&raw, true);
    // What the form and the "older" link carry on with.
    let filters = non_empty(&raw, false);
    if !may_read(&principal) {
        let details = json!({ "reason": "forbidden", "role": principal.role_name() });
        page_refusal(&state, &principal, peer, &headers, READ, details).await;
        return not_allowed(READ, &principal);
    }
    let mut view = AuditPage {
        csrf: cookies::csrf_token(&token),
        form: Filled::from_query(&filters),
        error: None,
        events: Vec::new(),
        scanned: 0,
        older: None,
    };
    let page = match parse_query(&query, crate::store::now_ms()) {
        Ok(page) => page,
        Err(e) => {
            view.error = Some(e);
            return render(StatusCode::BAD_REQUEST, &view);
        }
    };
    let (rows, next, scanned) = match scan(&state, &page).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let mut read = page_event(&principal, peer, &headers, READ, Decision::Allow);
    read.method = Some("GET".into());
    read.path = Some("/audit".into());
    let read = read.with_details(json!({
        "query": gateway_core::redact::clip(query.clone(), 512),
        "returned": rows.len(),
        "scanned": scanned,
    }));
    if state.audit.record(read).await.is_err() {
        // Not shown unless recorded: the trail cannot be read past its own record.
        return StoreDown.into_response();
    }
    view.events = rows.iter().map(EventView::from).collect();
    view.scanned = scanned;
    view.older = next.map(|before| {
        let sep = if filters.is_empty() { "" } else { "&" };
        format!("/audit?{filters}{sep}before={before}")
    });
    render(StatusCode::OK, &view)
}

/// Whether `principal` may read the trail (for links to it).
pub fn may_read(principal: &Principal) -> bool {
    principal.permissions.allows(READ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_go_and_before_only_where_asked() {
        let q = "since=&until=&action=convox%3Aapps%3A*&user=&decision=deny&before=40";
        assert_eq!(
            non_empty(q, true),
            "action=convox%3Aapps%3A*&decision=deny&before=40"
        );
        assert_eq!(
            non_empty(q, false),
            "action=convox%3Aapps%3A*&decision=deny"
        );
        assert_eq!(non_empty("", false), "");
    }

    #[test]
    fn the_form_shows_what_was_asked_for_a_token_too() {
        let f = Filled::from_query("token=ci-robot&decision=deny&user=a%40example.com&x=1");
        assert_eq!(
            f,
            Filled {
                user: "a@example.com".into(),
                token: "ci-robot".into(),
                decision: "deny".into(),
                ..Filled::default()
            }
        );
    }
}
