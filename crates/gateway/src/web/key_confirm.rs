//! `/account/mfa/key?id=…`: the browser half of a CLI command's security-key confirmation
//! (see [`crate::mfa::cli_key`]). The person, signed in here as themselves, sees which of
//! their sessions asks and the code its terminal shows, and answers with one of their keys.
//!
//! Only the person the confirmation is for sees it: anyone else (or a wrong id) gets the same
//! "no such confirmation". A key's answer is taken once, for this purpose only, and the
//! confirmation is recorded before the CLI can collect it.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::mfa::{cannot, form_user, key_challenge, user_of};
use super::{PageForm, PageQuery, message, page_event, render, signed_in_page, time};
use crate::app::{AppState, Peer};
use crate::audit::Decision;
use crate::mfa::cli_key::{self, Unavailable};
use crate::mfa::keys;
use crate::store::{KeyConfirmationRow, UserRow, now_ms};

/// Audit action of the confirmation (a second factor given, as a step-up is).
const ACTION: &str = crate::api::mfa::ACTION;

#[derive(Template)]
#[template(path = "mfa_cli_key.html")]
struct KeyConfirmPage<'a> {
    csrf: String,
    id: &'a str,
    code: String,
    device: String,
    address: String,
    signed_in_at: String,
    proof_minutes: i64,
    key: keys::Challenge,
    error: Option<String>,
}

/// The link's query.
#[derive(Debug, Deserialize)]
pub struct KeyConfirmQuery {
    #[serde(default)]
    id: Option<String>,
}

/// The form carrying the key's answer.
#[derive(Debug, Deserialize)]
pub struct KeyConfirmForm {
    csrf: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    ceremony: Option<String>,
    #[serde(default)]
    answer: Option<String>,
}

/// An id as links carry it: base64url, bounded. Anything else is no confirmation's.
fn link_id(id: Option<&str>) -> Option<&str> {
    id.filter(|id| {
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    })
}

fn unavailable_page(why: Unavailable) -> Response {
    match why {
        Unavailable::Unknown => message(
            StatusCode::NOT_FOUND,
            "No such confirmation",
            "This link is not a confirmation for the person signed in here. Open the link your \
             own terminal shows, signed in as yourself.",
        ),
        Unavailable::Over => message(
            StatusCode::GONE,
            "Confirmation over",
            "This confirmation expired or was answered already. Run the command again for a \
             new one.",
        ),
    }
}

/// The page for confirmation `id` (`row`), with a new challenge for `user`'s keys.
async fn show(
    state: &AppState,
    token: &str,
    user: &UserRow,
    id: &str,
    row: &KeyConfirmationRow,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let key = match key_challenge(state, user.id, keys::Purpose::CliKey).await {
        Ok(Some(key)) => key,
        Ok(None) => {
            return message(
                StatusCode::CONFLICT,
                "No security key here",
                "Security keys are off on this gateway, or you have none: give the command a \
                 code from your authenticator app instead.",
            );
        }
        Err(e) => return cannot(e),
    };
    let session = match state.store.session_by_id(row.session_id).await {
        Ok(session) => session,
        Err(e) => return cannot(e.into()),
    };
    let (device, address, signed_in_at) = match session {
        Some(s) => (
            s.user_agent.unwrap_or_else(|| "(not given)".into()),
            s.ip.unwrap_or_else(|| "(not known)".into()),
            time(s.created_at),
        ),
        None => ("(gone)".into(), "(not known)".into(), String::new()),
    };
    render(
        status,
        &KeyConfirmPage {
            csrf: super::cookies::csrf_token(token),
            id,
            code: cli_key::code(id),
            device,
            address,
            signed_in_at,
            proof_minutes: cli_key::PROOF_MS / 60_000,
            key,
            error,
        },
    )
}

/// `GET /account/mfa/key?id=…`: the confirmation page (sign-in first when needed).
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageQuery(q): PageQuery<KeyConfirmQuery>,
) -> Response {
    let Some(id) = link_id(q.id.as_deref()) else {
        return unavailable_page(Unavailable::Unknown);
    };
    let back = format!("/account/mfa/key?id={id}");
    let signed_in = signed_in_page(&state, &headers, &back).await;
    let (_, token, user) = match user_of(&state, signed_in).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    match cli_key::waiting(&state.store, id, user.id, now_ms()).await {
        Ok(Ok(row)) => show(&state, &token, &user, id, &row, StatusCode::OK, None).await,
        Ok(Err(why)) => unavailable_page(why),
        Err(e) => cannot(e.into()),
    }
}

/// `POST /account/mfa/key`: a key's answer confirms the CLI's request.
pub async fn confirm(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<KeyConfirmForm>,
) -> Response {
    let (principal, token, user) = match form_user(&state, &headers, form.csrf.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let Some(id) = link_id(form.id.as_deref()) else {
        return unavailable_page(Unavailable::Unknown);
    };
    let store = &state.store;
    let row = match cli_key::waiting(store, id, user.id, now_ms()).await {
        Ok(Ok(row)) => row,
        Ok(Err(why)) => return unavailable_page(why),
        Err(e) => return cannot(e.into()),
    };
    let Some(rp) = state.keys.as_deref() else {
        return unavailable_page(Unavailable::Unknown);
    };
    let event = |decision| page_event(&principal, peer, &headers, ACTION, decision);
    let (ceremony, answer) = (
        form.ceremony.as_deref().unwrap_or(""),
        form.answer.as_deref().unwrap_or(""),
    );
    let used = rp
        .finish_use(
            store,
            user.id,
            keys::Purpose::CliKey,
            ceremony,
            answer,
            now_ms(),
        )
        .await;
    let key = match used {
        Ok(Ok(key)) => key,
        Ok(Err(refusal)) => {
            let details = json!({
                "stage": "cli_key", "reason": refusal.reason(), "factor": keys::FACTOR,
                "session_id": row.session_id,
            });
            let mut refused = event(Decision::Deny).with_details(details);
            refused.status = Some(403);
            if let Err(e) = state.audit.record(refused).await {
                tracing::error!(error = %e, "a refused key confirmation could not be recorded");
            }
            let error = Some(refusal.explain().to_string());
            let status = StatusCode::BAD_REQUEST;
            return show(&state, &token, &user, id, &row, status, error).await;
        }
        Err(e) => return cannot(e),
    };
    // Recorded before the CLI can collect it: a confirmation the trail cannot show is none.
    let details = json!({
        "stage": "cli_key", "factor": keys::FACTOR, "key_id": key.id,
        "session_id": row.session_id,
    });
    if let Err(e) = state
        .audit
        .record(event(Decision::Allow).with_details(details))
        .await
    {
        tracing::error!(error = %e, "a key confirmation could not be recorded");
        return super::unavailable("Nothing was confirmed.");
    }
    match cli_key::confirm(store, id, user.id, key.id, now_ms()).await {
        Ok(true) => message(
            StatusCode::OK,
            "Confirmed",
            "Go back to your terminal: the command goes on by itself.",
        ),
        Ok(false) => unavailable_page(Unavailable::Over),
        Err(e) => cannot(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_ids_are_base64url_and_bounded() {
        let real = "Zq9S3cretValue-0123456789_abcdefghijklmnopq";
        assert_eq!(link_id(Some(real)), Some(real));
        assert_eq!(link_id(Some("")), None);
        assert_eq!(link_id(None), None);
        assert_eq!(link_id(Some("a b")), None);
        assert_eq!(link_id(Some("a&b=c")), None);
        assert_eq!(link_id(Some(&"a".repeat(65))), None);
    }
}
