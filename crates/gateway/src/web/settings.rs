//! `GET /settings`: the gateway's effective settings for admins and auditors
//! (`gateway:settings:read`), as [`crate::settings`] gives them — secrets only as set or not.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, StatusCode};

use super::{Nav, checked_page, render};
use crate::app::{AppState, Peer};
use crate::settings::{READ, Section};

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    csrf: String,
    nav: Nav,
    sections: Vec<Section>,
}

/// `GET /settings`
pub async fn page(State(state): State<AppState>, peer: Peer, headers: HeaderMap) -> Response {
    let (principal, token) = match checked_page(&state, peer, &headers, "/settings", READ).await {
        Ok(signed_in) => signed_in,
        Err(answer) => return answer,
    };
    let page = SettingsPage {
        csrf: super::cookies::csrf_token(&token),
        nav: Nav::of(&principal),
        sections: crate::settings::effective(&state),
    };
    render(StatusCode::OK, &page)
}
