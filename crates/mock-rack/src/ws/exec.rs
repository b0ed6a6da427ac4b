//! `SOCKET /apps/{app}/processes/{pid}/exec`.
//!
//! Headers in: `Command` (the command line), `Tty` (default `true`),
//! `Height`, `Width`, `Entrypoint`, `Disable-Stdin`. Client text messages
//! are stdin; an empty binary message ends stdin. Output goes out as text
//! messages; then the exit code as its own text message
//! `F1E49A85-0AD7-4AEF-A618-C249C6E6568D:<code>\n`, then an empty binary
//! message and a close frame. An unknown process gives the marker with code 0
//! followed by `ERROR: process not found: <pid>\n`, exactly as the rack does.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::shell::{Session, StdinEvent};
use super::{EXIT_MARKER, accept, fail, finish};
use crate::auth::AuthOutcome;
use crate::error::ApiError;
use crate::params::{header, header_bool, header_int};
use crate::state::Shared;

/// Exec options from the request headers.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The command line.
    pub command: String,
    /// Whether a TTY was requested (default true). Accepted, not emulated.
    pub tty: bool,
    /// Ignore the client's stdin.
    pub disable_stdin: bool,
}

impl ExecOptions {
    /// Reads the options; bad integers fail like the rack's option parsing.
    pub fn parse(headers: &HeaderMap) -> Result<Self, ApiError> {
        header_int(headers, "Height")?;
        header_int(headers, "Width")?;
        Ok(Self {
            command: header(headers, "Command").unwrap_or_default().to_string(),
            tty: header_bool(headers, "Tty").unwrap_or(true),
            disable_stdin: header_bool(headers, "Disable-Stdin").unwrap_or(false),
        })
    }
}

/// `SOCKET /apps/{app}/processes/{pid}/exec`.
pub async fn exec(
    State(shared): State<Arc<Shared>>,
    Path((app, pid)): Path<(String, String)>,
    headers: HeaderMap,
    auth: Option<Extension<AuthOutcome>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let opts = ExecOptions::parse(&headers);
    accept(ws, auth.map(|a| a.0), move |mut socket| async move {
        match opts {
            Ok(opts) => session(shared, socket, app, pid, opts).await,
            Err(e) => fail(&mut socket, &e.message).await,
        }
    })
}

/// Runs one exec session over `socket`.
pub async fn session(
    shared: Arc<Shared>,
    socket: WebSocket,
    app: String,
    pid: String,
    opts: ExecOptions,
) {
    let (mut sink, mut incoming) = socket.split();
    let target = shared.lock().exec_target(&app, &pid);
    let (process, env) = match target {
        Ok(t) => t,
        Err(e) => {
            let _ = sink
                .send(Message::Text(format!("{EXIT_MARKER}0\n").into()))
                .await;
            return fail(&mut sink, &e.message).await;
        }
    };
    tracing::debug!(
        app,
        pid = process.id,
        command = opts.command,
        tty = opts.tty,
        "exec"
    );

    let (in_tx, in_rx) = mpsc::channel::<StdinEvent>(64);
    let disable_stdin = opts.disable_stdin;
    let reader = tokio::spawn(async move {
        while let Some(msg) = incoming.next().await {
            let ev = match msg {
                Ok(Message::Text(t)) if !disable_stdin => StdinEvent::Data(t.as_bytes().to_vec()),
                Ok(Message::Binary(_)) => StdinEvent::Eof,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            // Once the shell is done nobody listens, but keep reading: closing a socket with
            // unread input makes the kernel reset the connection, which would throw away the
            // exit code still on its way to the client.
            let _ = in_tx.send(ev).await;
        }
    });
    let (out_tx, mut out_rx) = mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        while let Some(chunk) = out_rx.recv().await {
            if sink.send(Message::Text(chunk.into())).await.is_err() {
                return None;
            }
        }
        Some(sink)
    });

    let env = env.into_iter().collect();
    let mut shell = Session::new(
        in_rx,
        out_tx,
        shared.shutdown.clone(),
        env,
        process.id.clone(),
    );
    if disable_stdin {
        shell = shell.with_stdin_closed();
    }
    let code = shell.run(&opts.command).await;
    drop(shell);
    let sink = writer.await.ok().flatten();
    if let (Ok(code), Some(mut sink)) = (code, sink) {
        let _ = sink
            .send(Message::Text(format!("{EXIT_MARKER}{code}\n").into()))
            .await;
        finish(&mut sink).await;
    }
    // Drain until the client closes (bounded), then let go.
    let reader_abort = reader.abort_handle();
    if tokio::time::timeout(std::time::Duration::from_secs(2), reader)
        .await
        .is_err()
    {
        reader_abort.abort();
    }
}
