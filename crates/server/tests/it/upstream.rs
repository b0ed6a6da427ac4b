//! A small test rack: answers every route, records what reached it, streams bodies without
//! buffering, and speaks WebSocket (log lines, echo with an exit code).

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::StreamExt;

use crate::kit::RACK_TOKEN;

/// The marker the convox CLI reads as "the remote process exited with N".
pub const EXIT_MARKER: &str = "F1E49A85-0AD7-4AEF-A618-C249C6E6568D:";

/// One request as the rack saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body_bytes: u64,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    slow: Arc<AtomicBool>,
}

/// A running test rack.
pub struct TestRack {
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl TestRack {
    pub async fn start() -> TestRack {
        let shared = Shared::default();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestRack {
            url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// The same rack over TLS with `tls` (https:// URL).
    pub async fn start_tls(tls: std::sync::Arc<rustls::ServerConfig>) -> TestRack {
        let shared = Shared::default();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        TestRack {
            url: format!("https://{addr}"),
            shared,
            task,
        }
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    pub fn clear(&self) {
        if let Ok(mut s) = self.shared.seen.lock() {
            s.clear();
        }
    }

    /// Make every HTTP answer wait 3 s.
    pub fn set_slow(&self, slow: bool) {
        self.shared.slow.store(slow, Ordering::SeqCst);
    }

    /// Stop answering (connections refused from now on).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for TestRack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(shared): State<Shared>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("convox:{RACK_TOKEN}"))
    );
    let authorised = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    let mut seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_bytes: 0,
    };
    if !authorised {
        record(&shared, seen);
        return (http::StatusCode::UNAUTHORIZED, "invalid authentication").into_response();
    }
    if parts.headers.contains_key("upgrade") {
        record(&shared, seen.clone());
        let Ok(upgrade) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else {
            return (http::StatusCode::BAD_REQUEST, "bad upgrade").into_response();
        };
        if seen.path.contains("/nosuchapp/") {
            return (http::StatusCode::NOT_FOUND, "{\"error\":\"app not found\"}").into_response();
        }
        // A whole refusal, gzipped: the token inside bytes no scan reads.
        if seen.path.contains("/gzippedrefusal/") {
            let mut response = Response::new(Body::from(format!("denied: {RACK_TOKEN}")));
            *response.status_mut() = http::StatusCode::FORBIDDEN;
            let mut response = gzipped(response).await;
            if let Some(length) = axum::body::HttpBody::size_hint(response.body())
                .exact()
                .and_then(|n| http::HeaderValue::from_str(&n.to_string()).ok())
            {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_LENGTH, length);
            }
            return response;
        }
        // A refusal sent in chunks, the rack token split between two of them.
        if seen.path.contains("/chunkedrefusal/") {
            let half = RACK_TOKEN.len() / 2;
            let chunks = [
                format!("denied: {}", &RACK_TOKEN[..half]),
                RACK_TOKEN[half..].to_string(),
            ];
            let stream = futures_util::stream::iter(chunks.map(Ok::<_, std::io::Error>));
            let mut response = Response::new(Body::from_stream(stream));
            *response.status_mut() = http::StatusCode::FORBIDDEN;
            return response;
        }
        let path = seen.path.clone();
        return upgrade.on_upgrade(move |socket| websocket(socket, path));
    }
    if shared.slow.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // Count the body as it streams; never hold it.
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => seen.body_bytes += bytes.len() as u64,
            Err(_) => break,
        }
    }
    let download: Option<u64> = seen
        .query
        .as_deref()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("download=")))
        .and_then(|n| n.parse().ok());
    // `stall=1`: the head and a first chunk, then silence with the connection open.
    let stall = seen
        .query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "stall=1"));
    let echo_token = seen.header("x-test-echo-token").is_some();
    // `x-test-compress`: gzip the answer when the request accepts it (`when-asked`), or
    // whatever it accepts (`always`, a misbehaving rack).
    let gzip = match seen.header("x-test-compress") {
        Some("always") => true,
        Some("when-asked") => seen
            .header("accept-encoding")
            .is_some_and(|v| v.contains("gzip")),
        _ => false,
    };
    let summary = serde_json::json!({
        "method": seen.method, "path": seen.path, "query": seen.query, "bytes": seen.body_bytes,
    });
    record(&shared, seen);
    if stall {
        let first = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"apps\":["))
        });
        return Response::new(Body::from_stream(
            first.chain(futures_util::stream::pending()),
        ));
    }
    // `status=N`: answer with that status, whatever it is.
    if let Some(status) = seen_query_value(&summary, "status")
        .and_then(|n| n.parse::<u16>().ok())
        .and_then(|n| http::StatusCode::from_u16(n).ok())
    {
        let mut response = Response::new(Body::from("{}"));
        *response.status_mut() = status;
        return response;
    }
    // `bigheader=1`: 100 KiB of headers, more than any client takes.
    if seen_query_has(&summary, "bigheader=1") {
        let mut response = Response::new(Body::from("{}"));
        for n in 0..25 {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(format!("x-big-{n}").as_bytes()),
                http::HeaderValue::from_str(&"b".repeat(4096)),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        return response;
    }
    if let Some(size) = download {
        let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = size / chunk.len() as u64;
        let stream = futures_util::stream::iter(
            (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        );
        return Response::new(Body::from_stream(stream));
    }
    let mut response = if echo_token {
        // A misbehaving rack echoing its credentials in the body, the token split across two
        // chunks: the gateway masks every copy.
        let half = RACK_TOKEN.len() / 2;
        let chunks = [
            format!(
                "{{\"auth\":\"{expected}\",\"token\":\"{}",
                &RACK_TOKEN[..half]
            ),
            format!("{}\",\"again\":\"{RACK_TOKEN}\"}}", &RACK_TOKEN[half..]),
        ];
        let stream = futures_util::stream::iter(chunks.map(Ok::<_, std::io::Error>));
        Response::new(Body::from_stream(stream))
    } else {
        axum::Json(summary).into_response()
    };
    if gzip {
        response = gzipped(response).await;
    }
    if echo_token {
        // A misbehaving rack echoing its credentials: the gateway must not pass this on.
        if let Ok(v) = http::HeaderValue::from_str(&format!("token={RACK_TOKEN}")) {
            response.headers_mut().insert("x-echo", v);
        }
        if let Ok(v) = http::HeaderValue::from_str(&expected) {
            response.headers_mut().insert("x-echo-auth", v);
        }
    }
    response
        .headers_mut()
        .insert("set-cookie", http::HeaderValue::from_static("rack=1"));
    response
}

/// `response` with its body gzipped, as `Content-Encoding: gzip`.
async fn gzipped(response: Response) -> Response {
    use std::io::Write;
    let (mut parts, body) = response.into_parts();
    let plain = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let compressed = match encoder.write_all(&plain) {
        Ok(()) => encoder.finish().unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.insert(
        http::header::CONTENT_ENCODING,
        http::HeaderValue::from_static("gzip"),
    );
    Response::from_parts(parts, Body::from(compressed))
}

fn record(shared: &Shared, seen: Seen) {
    if let Ok(mut s) = shared.seen.lock() {
        s.push(seen);
    }
}

async fn websocket(mut socket: WebSocket, path: String) {
    if path.ends_with("/logs") {
        // Log lines until the client goes away (bounded); the app `burst` sends them without
        // a pause (a long history), as fast as the connection takes them.
        let pause = !path.starts_with("/apps/burst/");
        let lines = if pause { 2000 } else { 1_000_000 };
        // An app whose only log line reads like the rack refusing its credentials: the stream
        // ends after it, as the rack ends one after refusing.
        if path.starts_with("/apps/onlyrefusalline/") {
            let _ = socket
                .send(Message::Text("ERROR: invalid authentication\n".into()))
                .await;
            let _ = socket.send(Message::Binary(Default::default())).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
        // An app whose first log line reads like the rack refusing its credentials.
        if path.starts_with("/apps/refusalline/")
            && socket
                .send(Message::Text("ERROR: invalid authentication\n".into()))
                .await
                .is_err()
        {
            return;
        }
        for i in 0..lines {
            let line = format!("2026-11-23T00:00:00Z web/web-1 log line {i}\n");
            if socket.send(Message::Text(line.into())).await.is_err() {
                return;
            }
            if pause {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let _ = socket.send(Message::Close(None)).await;
        return;
    }
    // Exec-like: echo input; "exit N" ends with the exit-code marker.
    while let Some(Ok(message)) = socket.next().await {
        let text = match &message {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => String::from_utf8_lossy(b).into_owned(),
            Message::Close(_) => return,
            _ => continue,
        };
        // A rack quoting its credentials in control frames.
        match text.trim() {
            "ping-token" => {
                let _ = socket
                    .send(Message::Ping(RACK_TOKEN.as_bytes().to_vec().into()))
                    .await;
                continue;
            }
            // A message past what the gateway relays (4 MiB).
            "big" => {
                let _ = socket
                    .send(Message::Binary(vec![b'x'; 5 << 20].into()))
                    .await;
                continue;
            }
            "close-token" => {
                let reason = format!("bye {RACK_TOKEN}");
                let frame = axum::extract::ws::CloseFrame {
                    code: 1000,
                    reason: reason.into(),
                };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
            _ => {}
        }
        if let Some(code) = text.trim().strip_prefix("exit ") {
            let _ = socket
                .send(Message::Binary(
                    format!("{EXIT_MARKER}{}", code.trim()).into_bytes().into(),
                ))
                .await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
        if socket
            .send(Message::Binary(text.into_bytes().into()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Whether the recorded request's query has `part`.
fn seen_query_value(summary: &serde_json::Value, name: &str) -> Option<String> {
    summary["query"].as_str().and_then(|q| {
        q.split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
    })
}

fn seen_query_has(summary: &serde_json::Value, part: &str) -> bool {
    summary["query"]
        .as_str()
        .is_some_and(|q| q.split('&').any(|p| p == part))
}
