//! WebSocket proxying (logs, exec, run, build logs): connect to the rack first, then accept the
//! client's upgrade and pump frames both ways. The session's end is audited with its duration.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as TCloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as TMessage};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::body::OutcomeGuard;
use super::relay_status;
use super::sessions::Slot;
use super::upstream::Upstream;
use crate::app::AppState;
use crate::config::Secret;
use crate::error::ApiError;
use crate::identity::{AuthError, recheck};
use crate::rbac;
use gateway_core::scrub::{MessageScrub, Scrubber};

type RackSocket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long the other direction may run on after one side has closed.
const DRAIN: Duration = Duration::from_secs(5);

/// Largest message (and frame) a client may send. A message is held whole before it is
/// relayed, so this bounds a session's memory; axum's default, 64 MiB, let a few sessions
/// take hundreds of MiB. The Convox CLI sends stdin and port-forward data in pieces of at
/// most 32 KiB.
pub const CLIENT_MAX_MESSAGE: usize = 4 << 20;

/// Largest message the rack may send (its pieces of logs and output are 32 KiB): relayed
/// whole, it must fit the client's write buffer below.
const RACK_MAX_MESSAGE: usize = 4 << 20;

/// Most bytes waiting to be written to either side. The WebSocket library answers every ping
/// itself, queueing the pong behind whatever the other side has not read: a client that
/// sends pings and never reads grew a session by 20 MB a second. Past this, writing fails and
/// the session ends, its outcome saying why. Room for one whole message and the library's
/// usual buffer.
const MAX_WRITE_BUFFER: usize = CLIENT_MAX_MESSAGE + (256 << 10);

/// Each side's read buffer, allocated whole when the session opens. The library's 128 KiB made
/// an idle session cost ~256 KiB (256 MiB at `MAX_WEBSOCKETS`); the rack's and the CLI's
/// pieces are at most 32 KiB, and a larger message still grows the buffer as it needs.
const READ_BUFFER: usize = 32 << 10;

/// How often an open session's credentials are read again.
const RECHECK_EVERY: Duration = Duration::from_secs(5);
/// Re-checks in a row the store may fail before the session is ended: a blip must not cut
/// every log stream, but credentials that cannot be checked for long are not trusted.
const RECHECK_STORE_FAILURES: u32 = 3;

/// What an open session's credentials are re-checked with: a revoked or expired token or
/// session, a locked user, or a role that lost the route's permission ends the session
/// within [`RECHECK_EVERY`], as it would refuse the next request; a session an approval let
/// through ends when the approval's window does, on the dot.
pub struct Recheck {
    /// The gateway's state (the store and session settings).
    pub state: AppState,
    /// The credential the session was opened with (kept for the session's life, never shown).
    pub token: Secret,
    /// The route's permission.
    pub permission: String,
    /// When the session ends whatever the credentials say (unix ms): the deploy window of
    /// the approval that let it through.
    pub ends_at: Option<i64>,
}

impl Recheck {
    /// Resolves, with the reason, once the credentials would no longer open this session.
    async fn refused(&self) -> String {
        let start = tokio::time::Instant::now() + RECHECK_EVERY;
        let mut every = tokio::time::interval_at(start, RECHECK_EVERY);
        // A slow store must not get the missed checks in a burst.
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ends = async {
            match self.ends_at {
                Some(end) => {
                    let left = end.saturating_sub(crate::store::now_ms());
                    let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
                    tokio::time::sleep(left).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(ends);
        let mut store_failures = 0;
        loop {
            tokio::select! {
                () = &mut ends => return "the deploy approval it ran under has expired".into(),
                _ = every.tick() => {}
            }
            let state = &self.state;
            match recheck(&state.store, &state.config.sessions, self.token.expose()).await {
                Ok(principal) => {
                    store_failures = 0;
                    if let rbac::Decision::Deny { missing } =
                        rbac::decide(&principal.permissions, &self.permission)
                    {
                        return format!(
                            "{missing} is no longer granted (role: {})",
                            principal.role_name()
                        );
                    }
                }
                Err(AuthError::Store(err)) => {
                    store_failures += 1;
                    tracing::warn!(error = %err, store_failures, "could not re-check a WebSocket session's credentials");
                    if store_failures >= RECHECK_STORE_FAILURES {
                        return "its credentials could not be checked again".into();
                    }
                }
                Err(refused) => return refused.to_string(),
            }
        }
    }
}

/// Connects to the rack at `url` with the `forwarded` headers
/// ([`super::headers::upstream_headers`]), then upgrades the client and relays frames.
pub async fn forward(
    state: &AppState,
    upgrade: WebSocketUpgrade,
    forwarded: HeaderMap,
    url: String,
    mut outcome: OutcomeGuard,
    recheck: Recheck,
    slot: Slot,
) -> Result<Response, ApiError> {
    let upstream = &state.upstream;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|_| ApiError::BadRequest("invalid WebSocket target".into()))?;
    for (name, value) in forwarded.iter() {
        request.headers_mut().append(name.clone(), value.clone());
    }

    let connect = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(
            WebSocketConfig::default()
                .max_message_size(Some(RACK_MAX_MESSAGE))
                .max_frame_size(Some(RACK_MAX_MESSAGE))
                .max_write_buffer_size(MAX_WRITE_BUFFER)
                .read_buffer_size(READ_BUFFER),
        ),
        false,
        Some(Connector::Rustls(upstream.tls.clone())),
    );
    let rack = match tokio::time::timeout(upstream.connect_timeout + upstream.read_timeout, connect)
        .await
    {
        Err(_) => {
            let note = "rack WebSocket handshake timed out";
            return Err(outcome.fails_noting(ApiError::RackTimeout, note));
        }
        Ok(Err(tungstenite::Error::Http(response)))
            if response.status() == http::StatusCode::UNAUTHORIZED =>
        {
            upstream.note_token_refused("401");
            return Err(outcome.fails_noting(
                ApiError::RackRefusedGateway,
                "the rack refused RACK_TOKEN (401)",
            ));
        }
        Ok(Err(tungstenite::Error::Http(response))) => {
            return relay_refusal(upstream, *response, &mut outcome);
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "rack WebSocket connect failed");
            let problem = "could not open a WebSocket to the rack";
            let err = ApiError::RackUnreachable(problem.into());
            return Err(outcome.fails_noting(err, problem));
        }
        Ok(Ok((socket, _response))) => socket,
    };
    outcome.status = Some(101);
    let upstream = upstream.clone();
    let sessions = state.sessions.clone();
    let ending = sessions.ending();
    Ok(upgrade
        .max_message_size(CLIENT_MAX_MESSAGE)
        .max_frame_size(CLIENT_MAX_MESSAGE)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |client| {
            sessions.track(async move {
                // The session's place is held until the relay has ended.
                let _slot = slot;
                relay(client, rack, upstream, ending, outcome, recheck).await;
            })
        }))
}

/// The rack refused the upgrade (unknown app, bad process…): its answer is relayed when it
/// can be checked for the rack token, else its status with a message of our own.
fn relay_refusal(
    upstream: &Upstream,
    response: http::Response<Option<Vec<u8>>>,
    outcome: &mut OutcomeGuard,
) -> Result<Response, ApiError> {
    let (parts, body) = response.into_parts();
    let status = parts.status;
    // A 1xx is not an answer (and hyper makes a bare 500 of one); 600 and up is not HTTP.
    if !(200..=599).contains(&status.as_u16()) {
        return Err(outcome.fails_with(ApiError::RackUnreachable(format!(
            "the rack answered the WebSocket upgrade with status {}",
            status.as_u16()
        ))));
    }
    outcome.status = Some(status.as_u16());
    // A 204 or 304 has no body to relay.
    if matches!(
        status,
        http::StatusCode::NO_CONTENT | http::StatusCode::NOT_MODIFIED
    ) {
        outcome.completed = true;
        return Ok(relay_status(status, None));
    }
    let readable = super::headers::unreadable_coding(&parts.headers).is_none();
    let Some(mut body) = whole_body(&parts.headers, body).filter(|_| readable) else {
        // The handshake reads only what came with the head, undecoded: chunk framing
        // could split the rack token past the mask, a compressed body would hide it,
        // and a short body would be relayed as whole. The rack's status goes back,
        // with a message of our own.
        outcome.error = Some(
            "the rack's answer to the upgrade had no body that could be read whole \
             (chunked, compressed, or shorter than its length): not relayed"
                .into(),
        );
        let message = json!({
            "error": format!(
                "the rack refused the WebSocket with status {} (its message could not \
                 be relayed)",
                status.as_u16()
            ),
            "code": "rack_refused_websocket",
        });
        let mut response = relay_status(status, Some(message.to_string().into_bytes()));
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        headers.insert(
            http::header::X_CONTENT_TYPE_OPTIONS,
            http::HeaderValue::from_static("nosniff"),
        );
        return Ok(response);
    };
    let masked = upstream.scrubber.mask(&mut body);
    if masked > 0 {
        outcome
            .extra
            .insert("rack_token_masked_count".into(), json!(masked));
    }
    outcome.completed = true;
    outcome.bytes_out = body.len() as u64;
    let mut response = relay_status(status, Some(body));
    super::headers::sandboxed(response.headers_mut());
    if let Some(kind) = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .filter(|v| !upstream.leaks_token(v.as_bytes()))
    {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, kind.clone());
    }
    Ok(response)
}

/// The body of the rack's refusal of an upgrade when it is known to be whole: the rack said
/// its length, without `Transfer-Encoding`, and at least that much came with the head (any
/// more is cut). `None` otherwise.
fn whole_body(headers: &HeaderMap, body: Option<Vec<u8>>) -> Option<Vec<u8>> {
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let length: usize = lengths.next()?.to_str().ok()?.trim().parse().ok()?;
    if lengths.next().is_some() {
        return None;
    }
    let mut body = body.unwrap_or_default();
    if body.len() < length {
        return None;
    }
    body.truncate(length);
    Some(body)
}

/// Checks `Sec-WebSocket-Key` as RFC 6455 (4.2.1) asks: 16 bytes, base64-encoded. The
/// upgrade library only hashes whatever it is given.
pub fn check_key(headers: &http::HeaderMap) -> Result<(), String> {
    use base64::Engine;
    let Some(key) = headers.get(http::header::SEC_WEBSOCKET_KEY) else {
        // The library says it is missing.
        return Ok(());
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.as_bytes());
    match decoded {
        Ok(bytes) if bytes.len() == 16 => Ok(()),
        _ => Err("Sec-WebSocket-Key must be 16 bytes, base64-encoded".into()),
    }
}

/// Which side ended the session.
#[derive(Debug, Clone)]
enum Closer {
    Client,
    Rack,
    /// The gateway is shutting down.
    Gateway,
    /// The caller's credentials no longer allow the session (the reason).
    Refused(String),
}

async fn relay(
    client: WebSocket,
    rack: RackSocket,
    upstream: Upstream,
    ending: CancellationToken,
    mut outcome: OutcomeGuard,
    recheck: Recheck,
) {
    let (mut client_tx, client_rx) = client.split();
    let mut client_rx = client_rx.peekable();
    let (mut rack_tx, rack_rx) = rack.split();
    let mut rack_rx = rack_rx.peekable();
    let bytes_in = outcome.bytes_in.clone();
    let live = Live::default();
    let mut from_client = FromClient::default();
    let mut from_rack = FromRack::default();

    // The directions borrow the sending halves, so that a shutdown can still say goodbye on
    // them once the directions are dropped.
    let closer = {
        let client_to_rack = client_to_rack(
            &mut client_rx,
            &mut rack_tx,
            &bytes_in,
            &live,
            &mut from_client,
        );
        let rack_to_client = rack_to_client(
            &mut rack_rx,
            &mut client_tx,
            &upstream,
            &live,
            &mut from_rack,
        );
        tokio::pin!(client_to_rack);
        tokio::pin!(rack_to_client);
        let closer = tokio::select! {
            biased;
            () = ending.cancelled() => Closer::Gateway,
            reason = recheck.refused() => Closer::Refused(reason),
            () = &mut client_to_rack => Closer::Client,
            () = &mut rack_to_client => Closer::Rack,
        };
        // Let the other direction deliver what is in flight (an exit code, a close frame).
        let _ = match closer {
            Closer::Client if live.client_failed.load(Ordering::Relaxed) => Ok(()),
            Closer::Client => tokio::time::timeout(DRAIN, &mut rack_to_client).await,
            Closer::Rack => tokio::time::timeout(DRAIN, &mut client_to_rack).await,
            Closer::Gateway | Closer::Refused(_) => Ok(()),
        };
        closer
    };
    let FromClient {
        error: client_error,
        to_rack_error,
    } = from_client;
    let FromRack {
        error: to_client_error,
        broke: rack_broke,
    } = from_rack;
    // The rack's direction ends first when writing to the client fails: the client went away
    // (a reset, a dropped network) and closed the session, not the rack.
    let client_gone = matches!(closer, Closer::Rack) && to_client_error.is_some() && !rack_broke;
    // The client is told why the gateway ended the session, with the code for it.
    let goodbye = match (&closer, client_error) {
        (Closer::Refused(reason), _) => {
            outcome.error = Some(format!("ended by the gateway: {reason}"));
            // 1008: policy violation. The reason goes to the credential's holder only.
            Some(close_frame(
                1008,
                close_reason(&format!("session ended: {reason}")),
            ))
        }
        (Closer::Gateway, _) => {
            outcome.error = Some("ended by the gateway shutting down".into());
            Some(close_frame(1001, "gateway shutting down"))
        }
        (Closer::Client, Some(error)) => {
            let frame = client_refused(&error, live.too_big.load(Ordering::Relaxed));
            // (After the rack has closed, how the client hangs up is not an error of the
            // session.)
            outcome.error = Some(format!("client WebSocket error: {error}"));
            Some(frame)
        }
        _ => None,
    };
    if let Some(frame) = goodbye {
        let goodbye = async {
            let _ = client_tx.send(ws::Message::Close(Some(frame))).await;
            let _ = rack_tx.close().await;
        };
        let _ = tokio::time::timeout(DRAIN, goodbye).await;
    } else if live.token_refused.load(Ordering::Relaxed) {
        upstream.note_token_refused("inside a WebSocket");
        outcome.error = Some("the rack refused RACK_TOKEN (in the WebSocket)".into());
    } else if let Some(error) = match closer {
        // The side that ended the session says why, if it failed.
        Closer::Client => to_rack_error,
        _ => to_client_error,
    } {
        outcome.error = Some(error);
    } else {
        outcome.completed = true;
    }
    outcome.bytes_out = live.bytes_out.load(Ordering::Relaxed);
    outcome.extra.insert(
        "closed_by".into(),
        json!(match closer {
            Closer::Client => "client",
            Closer::Rack if client_gone => "client",
            Closer::Rack => "rack",
            Closer::Gateway | Closer::Refused(_) => "gateway",
        }),
    );
    outcome.extra.insert("websocket".into(), json!(true));
    let masked = live.masked.load(Ordering::Relaxed);
    if masked > 0 {
        tracing::warn!(masked, "rack credentials masked in WebSocket messages");
        outcome
            .extra
            .insert("rack_token_masked_count".into(), json!(masked));
    }
}

/// What both directions of a session say while the other may still be running.
#[derive(Default)]
struct Live {
    bytes_out: AtomicU64,
    /// Rack credentials masked in the rack's messages.
    masked: AtomicUsize,
    /// The rack's first message said it refused the gateway's own credentials.
    token_refused: AtomicBool,
    /// The client sent a message over the limit: it is told so (1009), not left to guess from
    /// the rack's hang-up.
    too_big: AtomicBool,
    /// The client's side failed ([`FromClient::error`] is set): it is told why with a close
    /// code, which a drain would pre-empt with a close frame that has none.
    client_failed: AtomicBool,
}

/// What the client's direction left behind when it ended (or was dropped).
#[derive(Default)]
struct FromClient {
    /// Why the client's side failed, if it did (a message over the limit, a broken frame).
    error: Option<String>,
    /// Why writing to the rack failed, if it did (its write bound reached by a rack that
    /// does not read, a reset connection).
    to_rack_error: Option<String>,
}

/// What the rack's direction left behind when it ended (or was dropped).
#[derive(Default)]
struct FromRack {
    /// Why it failed, if it did: a write to the client, or the rack's side broken.
    error: Option<String>,
    /// The rack's side broke (a protocol error, a reset), as opposed to a failed write to
    /// the client: the rack ended the session, and the client is told so with 1011 (1014,
    /// "bad gateway", is refused by clients that predate it).
    broke: bool,
}

type ClientRx = futures_util::stream::Peekable<futures_util::stream::SplitStream<WebSocket>>;
type ClientTx = futures_util::stream::SplitSink<WebSocket, ws::Message>;
type RackRx = futures_util::stream::Peekable<futures_util::stream::SplitStream<RackSocket>>;
type RackTx = futures_util::stream::SplitSink<RackSocket, TMessage>;

/// Relays the client's messages to the rack until either side ends or fails.
async fn client_to_rack(
    client_rx: &mut ClientRx,
    rack_tx: &mut RackTx,
    bytes_in: &AtomicU64,
    live: &Live,
    report: &mut FromClient,
) {
    loop {
        let message = match client_rx.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                report.error = Some(e.to_string());
                live.client_failed.store(true, Ordering::Relaxed);
                if is_over_limit(e) {
                    live.too_big.store(true, Ordering::Relaxed);
                }
                break;
            }
            None => break,
        };
        bytes_in.fetch_add(message_len(&message) as u64, Ordering::Relaxed);
        let closing = matches!(message, ws::Message::Close(_));
        if let Err(e) = rack_tx.feed(to_rack(message)).await {
            report.to_rack_error = Some(format!("writing to the rack: {e}"));
            break;
        }
        if closing {
            break;
        }
        // Write out once nothing more is waiting: one flush for a burst, not one each.
        if !more_ready(client_rx)
            && let Err(e) = rack_tx.flush().await
        {
            report.to_rack_error = Some(format!("writing to the rack: {e}"));
            break;
        }
    }
    let _ = rack_tx.close().await;
}

/// Relays the rack's messages to the client, the rack token masked, until either side ends
/// or fails.
async fn rack_to_client(
    rack_rx: &mut RackRx,
    client_tx: &mut ClientTx,
    upstream: &Upstream,
    live: &Live,
    report: &mut FromRack,
) {
    let mut outgoing = Outgoing::new(upstream.scrubber.clone());
    let mut first = true;
    loop {
        let next = match outgoing.deadline {
            Some(at) => match tokio::time::timeout_at(at, rack_rx.next()).await {
                Ok(next) => next,
                Err(_) => {
                    // The rest of a possible secret did not come: what was held goes.
                    if let Some(held) = outgoing.release() {
                        live.bytes_out
                            .fetch_add(message_len(&held) as u64, Ordering::Relaxed);
                        if client_tx.send(held).await.is_err() {
                            break;
                        }
                    }
                    continue;
                }
            },
            None => rack_rx.next().await,
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                report.error = Some(format!("rack WebSocket error: {e}"));
                report.broke = true;
                break;
            }
            None => break,
        };
        let Some(mut message) = to_client(message) else {
            continue;
        };
        // The first data message only (a ping before it does not count), and only when
        // the rack then ends the session, as it does after refusing, and still refuses.
        if first && matches!(message, ws::Message::Text(_) | ws::Message::Binary(_)) {
            first = false;
            if refuses_the_gateway(&message)
                && rack_ends_next(rack_rx).await
                && still_refused(upstream).await
            {
                live.token_refused.store(true, Ordering::Relaxed);
                message = ws::Message::Text(TOKEN_REFUSED_MESSAGE.into());
            }
        }
        let (held, message, n) = outgoing.pass(message);
        if n > 0 {
            live.masked.fetch_add(n, Ordering::Relaxed);
        }
        if let Some(held) = held {
            live.bytes_out
                .fetch_add(message_len(&held) as u64, Ordering::Relaxed);
            if client_tx.feed(held).await.is_err() {
                break;
            }
        }
        let Some(message) = message else {
            continue;
        };
        live.bytes_out
            .fetch_add(message_len(&message) as u64, Ordering::Relaxed);
        let closing = matches!(message, ws::Message::Close(_));
        if let Err(e) = client_tx.feed(message).await {
            report.error = Some(format!("writing to the client: {e}"));
            break;
        }
        if closing {
            break;
        }
        if !more_ready(rack_rx)
            && let Err(e) = client_tx.flush().await
        {
            report.error = Some(format!("writing to the client: {e}"));
            break;
        }
    }
    // The rack is done: bytes held for a secret's rest cannot be one any more.
    if let Some(held) = outgoing.release() {
        live.bytes_out
            .fetch_add(message_len(&held) as u64, Ordering::Relaxed);
        let _ = client_tx.feed(held).await;
    }
    if report.broke {
        let broken = close_frame(1011, "the rack's WebSocket failed");
        let _ = client_tx.send(ws::Message::Close(Some(broken))).await;
    }
    let _ = client_tx.close().await;
}

/// A close frame for the client.
fn close_frame(code: u16, reason: impl Into<String>) -> ws::CloseFrame {
    ws::CloseFrame {
        code,
        reason: reason.into().into(),
    }
}

/// How a client whose side failed is told why: 1009 for a message over the limit, 1007 for
/// text that is not UTF-8, 1002 for any other broken frame.
fn client_refused(error: &str, too_big: bool) -> ws::CloseFrame {
    if too_big {
        close_frame(
            1009,
            format!("message over {} MiB", CLIENT_MAX_MESSAGE >> 20),
        )
    } else if error.to_ascii_lowercase().contains("utf-8") {
        close_frame(1007, "text message is not UTF-8")
    } else {
        close_frame(1002, "protocol error")
    }
}

/// What the client reads instead of the rack's in-band refusal of the gateway's credentials.
const TOKEN_REFUSED_MESSAGE: &str = "ERROR: the rack refuses the gateway's own credentials (its \
     RACK_TOKEN): your sign-in is fine; tell the gateway's operator\n";

/// Whether `message` (the rack's first) is its refusal of the gateway's credentials. The rack
/// upgrades a WebSocket before it authenticates, so a wrong `RACK_TOKEN` shows as this text
/// message rather than a 401; callers' own credentials never reach the rack, so it can only
/// mean the gateway's, and relayed as it is it tells the caller their sign-in is bad.
/// Only that one line, whole, and only when the rack ends the session right after it
/// ([`rack_ends_next`]) and, asked over HTTP, refuses the token too ([`still_refused`]): a
/// process whose output begins with the words (an exec's first write) is relayed as it is.
fn refuses_the_gateway(message: &ws::Message) -> bool {
    let ws::Message::Text(t) = message else {
        return false;
    };
    let line = t.as_str().strip_suffix('\n').unwrap_or(t.as_str());
    line == "ERROR: invalid authentication"
        || line
            .strip_prefix("ERROR: invalid authentication: ")
            .is_some_and(|why| why.len() <= 200 && !why.contains('\n'))
}

/// How long the rack gets to end the session after what looks like its refusal.
const REFUSAL_END_WAIT: Duration = Duration::from_secs(2);

/// Whether the rack's next frame ends the session (a close, an error, the end of the
/// stream, or the empty binary message a rack stream ends with), looked at without taking it.
async fn rack_ends_next<S>(rack_rx: &mut futures_util::stream::Peekable<S>) -> bool
where
    S: futures_util::Stream<Item = Result<TMessage, tungstenite::Error>> + Unpin,
{
    match tokio::time::timeout(REFUSAL_END_WAIT, std::pin::Pin::new(rack_rx).peek()).await {
        Ok(None | Some(Err(_) | Ok(TMessage::Close(_)))) => true,
        Ok(Some(Ok(TMessage::Binary(b)))) if b.is_empty() => true,
        Ok(Some(Ok(_))) | Err(_) => false,
    }
}

/// Whether the rack, asked over HTTP, does not take the gateway's credentials either. What
/// looks like its refusal inside a WebSocket may be an app's own log: `logs --no-follow` over
/// a window whose only line is the words ends just as the rack's refusal does (an exec's
/// output is followed by its exit code, so it does not). Rewritten, that line would be hidden
/// and the operator told `RACK_TOKEN` is wrong. Only an answer that the token works clears
/// it; a rack that cannot say is taken at its word.
async fn still_refused(upstream: &Upstream) -> bool {
    !matches!(
        upstream.check_token(REFUSAL_CHECK_WAIT).await,
        super::TokenCheck::Accepted
    )
}

/// How long the rack gets to answer [`still_refused`]'s question.
const REFUSAL_CHECK_WAIT: Duration = Duration::from_secs(5);

/// `text` cut to what a close frame can carry (123 bytes), on a character boundary.
fn close_reason(text: &str) -> String {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// How long the tail of a rack message that could begin one of the rack's credentials waits
/// for the next message before it is sent anyway. A rack that splits one write into several
/// frames sends them back to back; a shell waiting for input sends nothing more, and its
/// prompt must not hang.
const SPLIT_SECRET_WAIT: Duration = Duration::from_millis(20);

/// Rack-to-client messages with the rack's credentials masked, also where one is split
/// across messages ([`MessageScrub`]: only a tail that could begin a secret is held back).
/// A message ending in a newline is never cut (no credential holds one): log lines, and the
/// exit-code line (`F1E49A85-…:N\n`) that the Convox CLI expects whole within one read.
struct Outgoing {
    scrub: MessageScrub,
    /// For control frames, which are masked whole.
    scrubber: Arc<Scrubber>,
    /// Whether the held bytes came from a text message (else binary).
    held_text: bool,
    /// When the held bytes are sent anyway; `None` while nothing is held.
    deadline: Option<tokio::time::Instant>,
}

impl Outgoing {
    fn new(scrubber: Arc<Scrubber>) -> Outgoing {
        Outgoing {
            scrub: MessageScrub::new(scrubber.clone()),
            scrubber,
            held_text: false,
            deadline: None,
        }
    }

    /// What to send for `message`: the bytes held from an earlier message when they cannot
    /// continue into this one (another kind, or a close), then this message as masked (none
    /// when all of it is held), and how many secrets were masked.
    fn pass(&mut self, message: ws::Message) -> (Option<ws::Message>, Option<ws::Message>, usize) {
        let (held, message, masked) = match message {
            // An empty message carries nothing to hold or mask, but it is a message of its own
            // (a stream's end, to some clients): what is held goes first, then it, as it was.
            ws::Message::Text(ref t) if t.is_empty() => (self.release(), Some(message), 0),
            ws::Message::Binary(ref b) if b.is_empty() => (self.release(), Some(message), 0),
            ws::Message::Text(text) => {
                let held = if self.held_text { None } else { self.release() };
                let (out, masked) = self.scrub.push(text.as_bytes());
                let out = match out {
                    Cow::Borrowed(_) => Some(ws::Message::Text(text)),
                    Cow::Owned(bytes) => (!bytes.is_empty()).then(|| text_message(bytes)),
                };
                self.held_text = true;
                self.wait_for_rest();
                (held, out, masked)
            }
            ws::Message::Binary(data) => {
                let held = if self.held_text { self.release() } else { None };
                let (out, masked) = self.scrub.push(&data);
                let out = match out {
                    Cow::Borrowed(_) => Some(ws::Message::Binary(data)),
                    Cow::Owned(bytes) => {
                        (!bytes.is_empty()).then(|| ws::Message::Binary(bytes.into()))
                    }
                };
                self.held_text = false;
                self.wait_for_rest();
                (held, out, masked)
            }
            // Control frames are whole by definition (at most 125 bytes, never fragmented):
            // masked on their own, and a close first lets out what is held.
            ws::Message::Close(Some(mut frame)) => {
                let masked = match self.mask_whole(frame.reason.as_bytes()) {
                    Some((reason, n)) => {
                        frame.reason = utf8_lossy(reason).into();
                        n
                    }
                    None => 0,
                };
                (
                    self.release(),
                    Some(ws::Message::Close(Some(frame))),
                    masked,
                )
            }
            close @ ws::Message::Close(None) => (self.release(), Some(close), 0),
            ws::Message::Ping(data) => match self.mask_whole(&data) {
                Some((data, n)) => (None, Some(ws::Message::Ping(data.into())), n),
                None => (None, Some(ws::Message::Ping(data)), 0),
            },
            ws::Message::Pong(data) => match self.mask_whole(&data) {
                Some((data, n)) => (None, Some(ws::Message::Pong(data.into())), n),
                None => (None, Some(ws::Message::Pong(data)), 0),
            },
        };
        (held, message, masked)
    }

    /// `bytes` masked, with the count, when they hold a whole secret.
    fn mask_whole(&self, bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
        if !self.scrubber.contains(bytes) {
            return None;
        }
        let mut masked = bytes.to_vec();
        let n = self.scrubber.mask(&mut masked);
        Some((masked, n))
    }

    /// After a data message: wait a little for the rest of what is held, if anything is.
    fn wait_for_rest(&mut self) {
        self.deadline = self
            .scrub
            .is_holding()
            .then(|| tokio::time::Instant::now() + SPLIT_SECRET_WAIT);
    }

    /// The held bytes as a message of the kind they came from, to send now.
    fn release(&mut self) -> Option<ws::Message> {
        self.deadline = None;
        if !self.scrub.is_holding() {
            return None;
        }
        let held = self.scrub.release();
        Some(if self.held_text {
            text_message(held)
        } else {
            ws::Message::Binary(held.into())
        })
    }
}

/// A text message from bytes that were valid UTF-8 before masking or holding: whole secrets
/// masked with ASCII, and cuts only before a secret's first byte, keep them valid.
fn text_message(bytes: Vec<u8>) -> ws::Message {
    ws::Message::Text(utf8_lossy(bytes).into())
}

/// `bytes` as text; valid UTF-8 stays as it is (see [`text_message`]).
fn utf8_lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// True when `stream` has another item ready (or has ended) without waiting. Peeking polls
/// the stream once with a no-op waker, so a pending stream costs nothing.
fn more_ready<S: futures_util::Stream + Unpin>(
    stream: &mut futures_util::stream::Peekable<S>,
) -> bool {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    std::pin::Pin::new(stream).poll_peek(&mut cx).is_ready()
}

fn message_len(message: &ws::Message) -> usize {
    match message {
        ws::Message::Text(t) => t.len(),
        ws::Message::Binary(b) | ws::Message::Ping(b) | ws::Message::Pong(b) => b.len(),
        ws::Message::Close(_) => 0,
    }
}

fn to_rack(message: ws::Message) -> TMessage {
    match message {
        ws::Message::Text(t) => TMessage::Text(t.as_str().into()),
        ws::Message::Binary(b) => TMessage::Binary(b),
        ws::Message::Ping(b) => TMessage::Ping(b),
        ws::Message::Pong(b) => TMessage::Pong(b),
        ws::Message::Close(frame) => TMessage::Close(frame.map(|f| TCloseFrame {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
    }
}

fn to_client(message: TMessage) -> Option<ws::Message> {
    Some(match message {
        TMessage::Text(t) => ws::Message::Text(t.as_str().into()),
        TMessage::Binary(b) => ws::Message::Binary(b),
        TMessage::Ping(b) => ws::Message::Ping(b),
        TMessage::Pong(b) => ws::Message::Pong(b),
        TMessage::Close(frame) => ws::Message::Close(frame.map(|f| ws::CloseFrame {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
        TMessage::Frame(_) => return None,
    })
}

/// True when the client's side failed for a message or frame over [`CLIENT_MAX_MESSAGE`].
fn is_over_limit(err: axum::Error) -> bool {
    matches!(
        err.into_inner()
            .downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
    )
}

#[cfg(test)]
mod tests {
    use super::{close_reason, refuses_the_gateway, ws};

    #[test]
    fn only_the_racks_whole_refusal_line_is_taken_for_one() {
        let text = |t: &str| ws::Message::Text(t.into());
        for refusal in [
            "ERROR: invalid authentication\n",
            "ERROR: invalid authentication",
            "ERROR: invalid authentication: token is malformed\n",
        ] {
            assert!(refuses_the_gateway(&text(refusal)), "{refusal:?}");
        }
        for output in [
            "ERROR: invalid authentication for user bob\n",
            "ERROR: invalid authentication\nsecond line\n",
            "ERROR: invalid authentication: a\nb\n",
            "error: invalid authentication\n",
            "",
        ] {
            assert!(!refuses_the_gateway(&text(output)), "{output:?}");
        }
        let binary = ws::Message::Binary(b"ERROR: invalid authentication\n".to_vec().into());
        assert!(!refuses_the_gateway(&binary));
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        assert_eq!(close_reason("token revoked"), "token revoked");
        let long = "é".repeat(100);
        let cut = close_reason(&long);
        assert!(cut.len() <= 123 && long.starts_with(&cut), "{}", cut.len());
    }
}
