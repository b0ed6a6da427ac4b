//! Opening the rack's WebSockets (logs, exec) with the same credentials as HTTP calls.

use std::time::Duration;

use base64::Engine;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, header};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use super::error::{ClientError, error_from_body};
use super::{BASIC_USER, Client};

/// An open rack WebSocket.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long opening a socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    /// Opens the WebSocket at `path` with `headers` (the rack reads socket options from
    /// headers). A refusal before the upgrade (the gateway's 401/403) is a [`ClientError::Api`].
    pub(crate) async fn socket(
        &self,
        path: &str,
        headers: &[(&'static str, String)],
    ) -> Result<Socket, ClientError> {
        let url = self.url(path);
        let ws_url = match url.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some(("http", rest)) => format!("ws://{rest}"),
            _ => return Err(ClientError::Url(url)),
        };
        let mut request = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Url(format!("{url}: {e}")))?;
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{BASIC_USER}:{}", self.token));
        let h = request.headers_mut();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {credentials}"))
                .map_err(|_| ClientError::Url("the token is not a valid header value".into()))?,
        );
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| ClientError::Url(format!("{name}: not a valid header value")))?;
            h.insert(HeaderName::from_static(name), value);
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, connect_async(request)).await {
            Err(_) => Err(ClientError::Timeout { url }),
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(e)) => Err(connect_error(&url, e)),
        }
    }
}

/// Classifies a failure to open a socket.
fn connect_error(url: &str, e: tungstenite::Error) -> ClientError {
    match e {
        tungstenite::Error::Http(response) => {
            let body = response.body().clone().unwrap_or_default();
            error_from_body(response.status().as_u16(), &body)
        }
        tungstenite::Error::Io(io) => ClientError::Connect {
            url: url.to_string(),
            reason: io.to_string(),
        },
        tungstenite::Error::Tls(tls) => ClientError::Connect {
            url: url.to_string(),
            reason: tls.to_string(),
        },
        tungstenite::Error::Url(u) => ClientError::Url(format!("{url}: {u}")),
        other => ClientError::Socket(other.to_string()),
    }
}

/// Whether a read error just means the peer went away.
pub(crate) fn is_closed(e: &tungstenite::Error) -> bool {
    matches!(
        e,
        tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed
            | tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
            )
    )
}

/// What one message from the rack means.
pub(crate) enum Incoming {
    /// Data (text, or non-empty binary decoded lossily).
    Data(String),
    /// The end of the stream (an empty binary message or a normal close frame).
    End,
    /// The other side ended the session for a reason (a close frame with an error code: the
    /// gateway's "going away" at shutdown, "policy violation" when credentials were revoked,
    /// "message too big"): what it said.
    Ended(String),
    /// Nothing to act on (ping, pong).
    Skip,
}

/// Reads one message in the rack's socket protocol.
pub(crate) fn classify(message: Message) -> Incoming {
    match message {
        Message::Text(t) => Incoming::Data(t.as_str().to_string()),
        Message::Binary(b) if b.is_empty() => Incoming::End,
        Message::Binary(b) => Incoming::Data(String::from_utf8_lossy(&b).into_owned()),
        Message::Close(Some(frame)) if !is_normal(u16::from(frame.code)) => {
            let reason = frame.reason.trim();
            Incoming::Ended(if reason.is_empty() {
                format!("the session was closed (code {})", u16::from(frame.code))
            } else {
                format!("the session was closed: {reason}")
            })
        }
        Message::Close(_) => Incoming::End,
        _ => Incoming::Skip,
    }
}

/// Close codes that end a session without an error: normal closure, and no status given.
fn is_normal(code: u16) -> bool {
    matches!(code, 1000 | 1005)
}

/// The message of an in-band error (`ERROR: <message>\n`), if `text` is one.
pub(crate) fn in_band_error(text: &str) -> Option<String> {
    text.strip_prefix("ERROR: ")
        .map(|m| m.trim_end().to_string())
}
