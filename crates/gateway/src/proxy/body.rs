//! HTTP forwarding with streamed bodies both ways, and the outcome event written when the
//! response body ends (or the client goes away).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::request::Parts;
use http_body::Body as _;
use hyper::body::Incoming;
use serde_json::json;

use super::elapsed_ms;
use super::flush_first::FlushBeforeFailing;
use super::headers::{response_headers, unreadable_coding};
use super::upstream::{RackError, UploadProgress, Upstream};
use crate::app::AppState;
use crate::audit::{AuditEvent, AuditLog, Decision};
use crate::error::ApiError;
use gateway_core::scrub::StreamScrub;

/// Records the outcome of a forwarded request when dropped: status, latency, bytes each way,
/// and whether the response body was delivered in full.
pub struct OutcomeGuard {
    audit: AuditLog,
    event: Option<AuditEvent>,
    started: Instant,
    /// Request body bytes sent to the rack.
    pub bytes_in: Arc<AtomicU64>,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    expected_out: Option<u64>,
    /// Status returned to the client.
    pub status: Option<u16>,
    /// The body (or session) finished normally.
    pub completed: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Extra details (WebSocket close reason…).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Set while the request's own event is being committed: dropped then, the client left
    /// before anything was forwarded.
    pub before_forwarding: bool,
    /// Cancelled when the gateway, shutting down, ends what is still running: dropped after
    /// that, the gateway cut the request off, not the client.
    cut_off: tokio_util::sync::CancellationToken,
    /// Set by a step that reads the rack's answer whole and then does not relay it.
    overrule: Option<Overrule>,
}

/// What the client got instead of the rack's answer, when a step that reads the answer whole
/// (to mask it, or to learn from it) does not relay it: set before that answer — which holds
/// the outcome — is dropped, it becomes the outcome's status and error, so the trail says
/// what the client got (a 502), not what the rack said (a 200).
#[derive(Debug, Clone, Default)]
pub struct Overrule(Arc<std::sync::OnceLock<(u16, String)>>);

impl Overrule {
    /// Records that the client is answered with `err` (the first call counts).
    pub fn set(&self, err: &ApiError) {
        let _ = self.0.set((err.status().as_u16(), err.message()));
    }
}

/// The rack's answer read whole by the gateway, with what still holds its outcome (dropped
/// when this is, after any [`Overrule`] was set) and its place in the bytes held at once.
pub struct ReadAnswer {
    /// The answer's bytes.
    pub bytes: Bytes,
    _held: super::held::Held<'static>,
    _outcome: Body,
}

/// How the rack's answer read whole is counted against the bytes the gateway holds at once
/// ([`super::held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// The answer to a read: refused (`503 gateway_busy`) when there is no room.
    Read,
    /// The answer to a change the rack has made: never refused for room (it is small, and
    /// refusing it would have the caller make the change again).
    Change,
}

/// Reads the rack's answer `body` whole, at most `limit` bytes. One longer, broken or cut
/// short is refused with `refusal()`, and the answer to a read with no room among the bytes
/// held at once with `503 gateway_busy`; `overrule` records either first.
pub async fn read_whole(
    mut body: Body,
    limit: usize,
    counted: Counted,
    overrule: &Overrule,
    refusal: impl FnOnce() -> ApiError,
) -> Result<ReadAnswer, ApiError> {
    let budget = match counted {
        Counted::Read => Some(&super::held::SHARED),
        Counted::Change => None,
    };
    match super::held::read(&mut body, limit, budget).await {
        Ok((bytes, held)) => Ok(ReadAnswer {
            bytes,
            _held: held,
            _outcome: body,
        }),
        Err(e) => {
            let err = match e {
                super::held::NotRead::Busy(busy) => ApiError::Busy(busy),
                _ => refusal(),
            };
            overrule.set(&err);
            Err(err)
        }
    }
}

impl OutcomeGuard {
    /// A guard that writes `event` (an outcome template) when dropped.
    /// `cut_off` is cancelled when a shutdown ends the requests still running.
    pub fn new(
        audit: AuditLog,
        event: AuditEvent,
        started: Instant,
        cut_off: tokio_util::sync::CancellationToken,
    ) -> OutcomeGuard {
        OutcomeGuard {
            audit,
            event: Some(event),
            started,
            bytes_in: Arc::new(AtomicU64::new(0)),
            bytes_out: 0,
            expected_out: None,
            status: None,
            completed: false,
            error: None,
            extra: serde_json::Map::new(),
            before_forwarding: false,
            cut_off,
            overrule: None,
        }
    }
}

impl OutcomeGuard {
    /// Records that the client is answered with `err`, its status and its message, and returns
    /// it.
    pub fn fails_with(&mut self, err: ApiError) -> ApiError {
        self.error = Some(err.message());
        self.status = Some(err.status().as_u16());
        err
    }

    /// [`fails_with`](Self::fails_with), with `note` in the outcome instead of the message the
    /// client reads.
    pub fn fails_noting(&mut self, err: ApiError, note: &str) -> ApiError {
        self.error = Some(note.to_string());
        self.status = Some(err.status().as_u16());
        err
    }

    /// Records nothing after all (the request's own event was not written).
    pub fn disarm(&mut self) {
        self.event = None;
    }

    /// A handle for a step that reads the rack's answer whole to say, if it then does not
    /// relay it, what the client got instead.
    pub fn overrule(&mut self) -> Overrule {
        self.overrule.get_or_insert_with(Overrule::default).clone()
    }
}

impl Drop for OutcomeGuard {
    fn drop(&mut self) {
        let Some(mut event) = self.event.take() else {
            return;
        };
        if let Some((status, message)) = self.overrule.as_ref().and_then(|o| o.0.get()) {
            self.status = Some(*status);
            self.error = Some(match self.error.take() {
                Some(cause) => format!("{message} ({cause})"),
                None => message.clone(),
            });
        }
        let completed = self.completed || self.expected_out.is_some_and(|n| n == self.bytes_out);
        // When the outcome happened (the template was made when the request began; its
        // latency says how long ago that was).
        event.ts = crate::store::now_ms();
        event.rbac_decision = Decision::Allow;
        event.status = self.status.map(i64::from);
        event.latency_ms = Some(elapsed_ms(self.started));
        let mut details = std::mem::take(&mut self.extra);
        details.insert(
            "bytes_in".into(),
            json!(self.bytes_in.load(Ordering::Relaxed)),
        );
        details.insert("bytes_out".into(), json!(self.bytes_out));
        details.insert("completed".into(), json!(completed));
        if let Some(err) = self.error.take() {
            details.insert("error".into(), json!(err));
        } else if !completed && self.cut_off.is_cancelled() {
            details.insert(
                "error".into(),
                json!("the gateway shut down before the end (SHUTDOWN_TIMEOUT_SECS)"),
            );
        } else if self.before_forwarding {
            details.insert(
                "error".into(),
                json!("client disconnected before the request was forwarded"),
            );
        } else if !completed {
            details.insert("error".into(), json!("client disconnected before the end"));
        }
        self.audit
            .record_later(event.with_details(serde_json::Value::Object(details)));
    }
}

/// A response body stream that masks the rack's credentials in it and counts what it
/// delivers into the guard.
struct Tracked {
    inner: Incoming,
    scrub: StreamScrub,
    /// The rack's body has ended; what the scrubber still holds goes out next.
    ended: bool,
    /// Body bytes read from the rack so far.
    received: u64,
    /// Longest silence from the rack while reading its body.
    read_timeout: Duration,
    /// Armed only while the rack keeps us waiting: a body that is already here sets no timer.
    silence: Option<Pin<Box<tokio::time::Sleep>>>,
    guard: OutcomeGuard,
    /// A chunk read before the response was returned (see [`forward`]), delivered first.
    first: Option<Bytes>,
}

impl Tracked {
    /// Relays `body`, the rack's answer. hyper sends the head together with the body's first
    /// chunk, so a body that fails at once (a malformed first chunk, read with the head) ended
    /// the connection with no answer at all. What has already arrived is looked at now, while
    /// a 502 can still be given; a body still on its way is left to stream.
    fn start(
        body: Incoming,
        upstream: &Upstream,
        read_timeout: Duration,
        guard: OutcomeGuard,
    ) -> Result<Tracked, ApiError> {
        let mut stream = Tracked {
            inner: body,
            scrub: upstream.scrubber.stream(),
            ended: false,
            received: 0,
            read_timeout,
            silence: None,
            guard,
            first: None,
        };
        let waker = std::task::Waker::noop();
        match Pin::new(&mut stream).poll_next(&mut Context::from_waker(waker)) {
            Poll::Ready(Some(Ok(chunk))) => stream.first = Some(chunk),
            Poll::Ready(Some(Err(err))) => {
                let why = crate::error::with_causes(&err);
                let err =
                    ApiError::RackUnreachable(format!("the rack's answer was cut short: {why}"));
                return Err(stream.guard.fails_with(err));
            }
            Poll::Ready(None) | Poll::Pending => {}
        }
        Ok(stream)
    }

    fn deliver(&mut self, chunk: Vec<u8>) -> Poll<Option<io::Result<Bytes>>> {
        self.guard.bytes_out += chunk.len() as u64;
        Poll::Ready(Some(Ok(Bytes::from(chunk))))
    }

    /// The rack's next body chunk, `None` at the end; fails after `read_timeout` of silence.
    fn poll_rack(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.silence = None;
                    // Trailers carry nothing the client needs from a rack API call.
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    return Poll::Ready(Some(Err(io::Error::other(err))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    let limit = self.read_timeout;
                    let silence = self
                        .silence
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                    if silence.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let err = io::Error::new(io::ErrorKind::TimedOut, "the rack went silent");
                    return Poll::Ready(Some(Err(err)));
                }
            }
        }
    }

    fn note_masks(&mut self) {
        let masked = self.scrub.masked();
        if masked > 0 {
            tracing::warn!(masked, "rack credentials masked in a response body");
            self.guard
                .extra
                .insert("rack_token_masked_count".into(), json!(masked));
        }
    }
}

impl Drop for Tracked {
    // Before the guard writes the outcome: delivered in full or not, masking is recorded.
    fn drop(&mut self) {
        self.note_masks();
    }
}

impl Stream for Tracked {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(chunk) = self.first.take() {
            return Poll::Ready(Some(Ok(chunk)));
        }
        loop {
            if self.ended {
                let rest = self.scrub.finish();
                if rest.is_empty() {
                    self.guard.completed = true;
                    return Poll::Ready(None);
                }
                return self.deliver(rest);
            }
            match self.poll_rack(cx) {
                Poll::Ready(Some(Ok(chunk))) if self.scrub.is_passthrough() => {
                    // No token long enough to search for: no copy.
                    self.guard.bytes_out += chunk.len() as u64;
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    self.received += chunk.len() as u64;
                    let mut safe = self.scrub.push(&chunk);
                    if self.guard.expected_out == Some(self.received) {
                        // The declared length is reached: nothing can follow, so send what is
                        // held now rather than as one more chunk (one write, not two).
                        safe.extend(self.scrub.finish());
                    }
                    // Everything may be held back (a possible secret's start): read on rather
                    // than send an empty chunk.
                    if !safe.is_empty() {
                        return self.deliver(safe);
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    let why = crate::error::with_causes(&err);
                    self.guard.error = Some(format!("rack response body failed: {why}"));
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Forwards one HTTP request to `url` with the `forwarded` headers
/// ([`super::headers::upstream_headers`]: the rack's credentials, the caller as its actor),
/// streaming both bodies.
pub async fn forward(
    state: &AppState,
    parts: Parts,
    body: Body,
    forwarded: http::HeaderMap,
    url: String,
    mut outcome: OutcomeGuard,
) -> Result<Response, ApiError> {
    let upstream = &state.upstream;
    let Ok(uri) = http::Uri::try_from(url) else {
        let err = ApiError::BadRequest("the path cannot be sent to the rack".into());
        return Err(outcome.fails_with(err));
    };
    // What the client's framing says (HTTP/1.1: no Content-Length or Transfer-Encoding, or a
    // Content-Length of 0, is no body), not the method: a POST without a body goes on without
    // one, rather than as an empty chunked body.
    let has_body = !body.is_end_stream();
    let client_timeout = state.config.client_timeout;
    let (body, client) = if has_body {
        let (body, watch) = ClientBody::watch(body, client_timeout, outcome.bytes_in.clone());
        (body, Some(watch))
    } else {
        (Body::empty(), None)
    };
    // A GET or HEAD without a body may be sent again once if the rack closes a kept-alive
    // connection under it without answering (a server's idle close racing our reuse): the
    // request changes nothing, so the client gets the answer instead of a 502.
    let head = parts.method == http::Method::HEAD;
    let again = (!has_body && matches!(parts.method, http::Method::GET | http::Method::HEAD))
        .then(|| (parts.method.clone(), uri.clone(), forwarded.clone()));
    let mut request = http::Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = forwarded;

    let read_timeout = state.config.rack_read_timeout;
    let started = tokio::time::Instant::now();
    let upload = client.as_ref().map(|c| &*c.progress);
    let mut sent = upstream.send(request, read_timeout, upload).await;
    if let (Err(RackError::Closed), Some((method, uri, headers))) = (&sent, again) {
        let left = read_timeout.saturating_sub(started.elapsed());
        if !left.is_zero() {
            tracing::debug!("the rack closed a connection without answering; sending again");
            outcome.extra.insert("rack_attempts".into(), 2.into());
            let mut request = http::Request::new(Body::empty());
            *request.method_mut() = method;
            *request.uri_mut() = uri;
            *request.headers_mut() = headers;
            sent = upstream.send(request, left, None).await;
        }
    }
    let response = match sent {
        Ok(r) => r,
        Err(err) => {
            // The client's own failures are not the rack's: said as what they are, so that
            // nobody on call goes looking for a slow rack.
            if let Some(client_error) = client.as_ref().and_then(|c| c.failure(client_timeout)) {
                tracing::info!(error = %client_error.message(), "request body from the client failed");
                return Err(outcome.fails_with(client_error));
            }
            tracing::warn!(error = %err, "rack request failed");
            return Err(outcome.fails_with(upstream_error(&err)));
        }
    };
    let status = response.status();
    if let Some((err, note)) = unrelayable(upstream, &response, head) {
        return Err(match note {
            Some(note) => outcome.fails_noting(err, note),
            None => outcome.fails_with(err),
        });
    }
    let out_headers = response_headers(response.headers(), |v| upstream.leaks_token(v));
    // No client takes headers this large (curl stops at 100 KiB), and no rack answer needs
    // them: said as the rack's fault rather than relayed to fail in the client.
    let header_bytes: usize = out_headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_RESPONSE_HEADER_BYTES {
        return Err(outcome.fails_with(ApiError::RackUnreachable(format!(
            "the rack sent {} KiB of headers (at most {} KiB are relayed)",
            header_bytes >> 10,
            MAX_RESPONSE_HEADER_BYTES >> 10
        ))));
    }
    outcome.status = Some(status.as_u16());
    outcome.expected_out = response.body().size_hint().exact();
    let stream = Tracked::start(response.into_body(), upstream, read_timeout, outcome)?;
    // What the client was sent before a failure reaches it (see `flush_first`).
    let mut out = Response::new(Body::from_stream(FlushBeforeFailing::new(stream)));
    *out.status_mut() = status;
    *out.headers_mut() = out_headers;
    Ok(out)
}

/// Why the rack's answer is not relayed, if it is not (and what the outcome says instead of
/// the client's message, when that differs).
fn unrelayable(
    upstream: &Upstream,
    response: &http::Response<Incoming>,
    head: bool,
) -> Option<(ApiError, Option<&'static str>)> {
    let status = response.status();
    // Not an answer to a plain request: a 101 switches to a protocol the client did not ask
    // for (the upgrade was judged not to be one), and 600 and up is not HTTP.
    if status.is_informational() || status.as_u16() > 599 {
        let problem = format!("the rack answered with status {}", status.as_u16());
        return Some((ApiError::RackUnreachable(problem), None));
    }
    if status == http::StatusCode::UNAUTHORIZED {
        upstream.note_token_refused("401");
        let note = "the rack refused RACK_TOKEN (401)";
        return Some((ApiError::RackRefusedGateway, Some(note)));
    }
    // Asked for `identity` (see `upstream_headers`); a rack that compresses anyway sends bytes
    // the token check cannot read, so they are not relayed.
    let bodiless = head
        || matches!(
            status,
            http::StatusCode::NO_CONTENT | http::StatusCode::NOT_MODIFIED
        );
    let coding = unreadable_coding(response.headers()).filter(|_| !bodiless)?;
    let problem = format!(
        "the rack sent a body with `{coding}`, which the gateway cannot check for its token (it \
         asks the rack for the body as it is)"
    );
    Some((ApiError::RackUnreachable(problem), None))
}

/// The client's request body on its way to the rack: counted into the outcome, cut off when
/// the client goes silent, and its failure kept to be named.
struct ClientBody {
    /// Why the body failed, if it did: a connection that closed, or framing that does not
    /// parse (a chunk size that is not hexadecimal).
    broke_off: Arc<std::sync::OnceLock<String>>,
    /// Set when the body was cut off for the client's silence.
    stalled: Arc<AtomicBool>,
    progress: Arc<UploadProgress>,
}

impl ClientBody {
    /// `body` as the rack is sent it, and what watches it.
    fn watch(body: Body, client_timeout: Duration, bytes_in: Arc<AtomicU64>) -> (Body, ClientBody) {
        let watch = ClientBody {
            broke_off: Arc::default(),
            stalled: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(UploadProgress::new()),
        };
        let broke = watch.broke_off.clone();
        let stalls = Stalls::new(
            body.into_data_stream(),
            client_timeout,
            watch.stalled.clone(),
            watch.progress.clone(),
        );
        let counted = stalls.map(move |chunk| {
            match &chunk {
                Ok(bytes) => {
                    bytes_in.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Err(err) => {
                    let _ = broke.set(crate::error::with_causes(err));
                }
            }
            chunk
        });
        (Body::from_stream(counted), watch)
    }

    /// What the client is told when the request failed because of its body, if it did.
    fn failure(&self, client_timeout: Duration) -> Option<ApiError> {
        if self.stalled.load(Ordering::Relaxed) {
            return Some(ApiError::ClientTimeout(client_timeout.as_secs()));
        }
        let why = self.broke_off.get()?;
        Some(ApiError::BadRequest(format!(
            "the request body could not be read to its end (the client disconnected, or sent a \
             body that is not valid HTTP): {why}"
        )))
    }
}

/// Most response header bytes relayed from the rack.
const MAX_RESPONSE_HEADER_BYTES: usize = 64 * 1024;

/// A request body that fails once the client has sent nothing for `limit`, so a stalled upload
/// does not hold the gateway's connection to the rack open until the rack gives up.
struct Stalls<S> {
    inner: S,
    limit: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The deadline is running: we asked the client for more and it has not answered yet.
    /// Time in which we did not ask (connecting to the rack, a rack slow to read what it got)
    /// is not the client's silence.
    waiting: bool,
    /// Set when the body was cut off for silence.
    stalled: Arc<AtomicBool>,
    /// Told when the body moves and when it waits for the client (the rack's wait).
    progress: Arc<UploadProgress>,
}

impl<S> Stalls<S> {
    fn new(
        inner: S,
        limit: Duration,
        stalled: Arc<AtomicBool>,
        progress: Arc<UploadProgress>,
    ) -> Stalls<S> {
        Stalls {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
            waiting: false,
            stalled,
            progress,
        }
    }
}

impl<S> Stream for Stalls<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.stalled.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(item) => {
                self.waiting = false;
                self.progress.moved();
                Poll::Ready(item)
            }
            Poll::Pending => {
                if !self.waiting {
                    self.waiting = true;
                    self.progress.waiting_on_client();
                    let deadline = tokio::time::Instant::now() + self.limit;
                    self.deadline.as_mut().reset(deadline);
                }
                if self.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.stalled.store(true, Ordering::Relaxed);
                let silence = io::Error::new(io::ErrorKind::TimedOut, "request body stalled");
                Poll::Ready(Some(Err(axum::Error::new(silence))))
            }
        }
    }
}

/// Maps a failed request to the rack onto the answer we give.
fn upstream_error(err: &RackError) -> ApiError {
    match err {
        RackError::Timeout => ApiError::RackTimeout,
        RackError::Connect | RackError::Send | RackError::Closed | RackError::Malformed => {
            ApiError::RackUnreachable(err.to_string())
        }
    }
}
