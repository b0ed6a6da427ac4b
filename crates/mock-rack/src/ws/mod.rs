//! WebSocket endpoints, speaking the rack's socket protocol:
//!
//! * every payload is a **text** message (server output, client stdin);
//! * an **empty binary** message means end of stream (the server sends one
//!   when it is done; the client sends one when its stdin ends);
//! * errors arrive as a text message `ERROR: <message>\n`;
//! * exec sessions end with a text message
//!   `F1E49A85-0AD7-4AEF-A618-C249C6E6568D:<exit code>\n` ([`EXIT_MARKER`]).
//!
//! As in the rack, the upgrade happens before authentication, so a bad token
//! is reported in-band (`ERROR: invalid authentication`).

pub mod exec;
pub mod logs;
pub mod shell;

use std::future::Future;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;

use crate::auth::AuthOutcome;
use crate::error::ApiError;

/// Prefix of the exit-code message that ends an exec session.
pub const EXIT_MARKER: &str = "F1E49A85-0AD7-4AEF-A618-C249C6E6568D:";

/// Upgrades the connection and runs `session`, or reports a failed
/// authentication in-band. A plain (non-upgrade) request gets a 404, as the
/// rack only routes these paths for WebSocket upgrades.
pub fn accept<F, Fut>(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    auth: Option<AuthOutcome>,
    session: F,
) -> Response
where
    F: FnOnce(WebSocket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Ok(ws) = ws else {
        return ApiError::not_found("not found").into_response();
    };
    match auth {
        Some(AuthOutcome::Denied(msg)) => ws.on_upgrade(move |mut socket| async move {
            fail(&mut socket, &msg).await;
        }),
        _ => ws.on_upgrade(session),
    }
}

/// Sends `ERROR: <msg>\n` and ends the stream.
pub async fn fail<S>(sink: &mut S, msg: &str)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let _ = sink
        .send(Message::Text(format!("ERROR: {msg}\n").into()))
        .await;
    finish(sink).await;
}

/// Ends the stream: an empty binary message, then a close frame.
pub async fn finish<S>(sink: &mut S)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let _ = sink.send(Message::Binary(Default::default())).await;
    let _ = sink.send(Message::Close(None)).await;
    let _ = sink.close().await;
}
