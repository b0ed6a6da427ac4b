//! Log sockets: app, service, process, system and build logs.
//!
//! Options come from headers, as the SDK sends them (`Follow`, `Since`,
//! `Filter`, `Tail`, `Prefix`), with lower-case query parameters as a
//! fallback. Defaults match the rack: follow, since `2m`, prefixed lines.
//! Each line is one text message `"<RFC3339 time> <stream> <message>\n"`.
//! Without follow the socket closes after the history; with follow new lines
//! (plus one synthetic `heartbeat=<n>` line) are sent every 200 ms until the
//! client goes away.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};

use super::{accept, fail, finish};
use crate::auth::AuthOutcome;
use crate::params::{Form, header, parse_int};
use crate::seed::heartbeat_message;
use crate::state::{LogLine, Rack, Shared};
use crate::time::{Timestamp, parse_go_duration};

/// How often a following socket gets new lines.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Parsed log options.
#[derive(Debug, Clone)]
pub struct LogsOptions {
    /// Keep streaming new lines.
    pub follow: bool,
    /// Only lines newer than this.
    pub since: Option<Duration>,
    /// Only lines containing this text.
    pub filter: Option<String>,
    /// Only the last N history lines.
    pub tail: Option<usize>,
    /// Prefix lines with time and stream.
    pub prefix: bool,
}

impl LogsOptions {
    /// Reads options from headers (preferred) or the query string.
    pub fn parse(headers: &HeaderMap, query: &Form) -> Result<Self, String> {
        let get = |h: &str, q: &str| -> Option<String> {
            header(headers, h)
                .map(str::to_string)
                .or_else(|| query.get(q).map(str::to_string))
        };
        let since = match get("Since", "since") {
            Some(s) => Some(parse_go_duration(&s)?).filter(|d| !d.is_zero()),
            None => Some(Duration::from_secs(120)),
        };
        let tail = match get("Tail", "tail") {
            Some(t) => Some(parse_int(&t).map_err(|e| e.message)?.max(0) as usize),
            None => None,
        };
        Ok(Self {
            follow: get("Follow", "follow").is_none_or(|v| v == "true"),
            since,
            filter: get("Filter", "filter").filter(|f| !f.is_empty()),
            tail,
            prefix: get("Prefix", "prefix").is_none_or(|v| v == "true"),
        })
    }
}

/// Which lines a socket shows.
#[derive(Debug, Clone)]
pub enum Scope {
    /// All lines of an app.
    App(String),
    /// Lines of one service of an app.
    Service(String, String),
    /// Lines of one process of an app.
    Process(String, String),
    /// The rack's own lines.
    System,
}

impl Scope {
    fn app(&self) -> Option<&str> {
        match self {
            Scope::App(a) | Scope::Service(a, _) | Scope::Process(a, _) => Some(a),
            Scope::System => None,
        }
    }

    fn matches(&self, line: &LogLine) -> bool {
        match self {
            Scope::App(_) | Scope::System => true,
            Scope::Service(_, s) => line.stream.starts_with(&format!("service/{s}/")),
            Scope::Process(_, pid) => line.stream.ends_with(&format!("/{pid}")),
        }
    }

    /// Lines newer than `after` (sequence number) in this scope, or `None`
    /// when the scope no longer exists.
    fn lines_after<'a>(&self, rack: &'a Rack, after: u64) -> Option<Vec<&'a LogLine>> {
        let buf = match self.app() {
            Some(app) => &rack.apps.get(app)?.logs,
            None => &rack.system_logs,
        };
        Some(
            buf.iter()
                .filter(|l| l.seq > after && self.matches(l))
                .collect(),
        )
    }

    /// A synthetic line for tick `n` of a follower.
    fn heartbeat(&self, rack: &Rack, n: u64) -> Option<LogLine> {
        let ts = Timestamp::now();
        let (stream, message) = match self {
            Scope::System => (
                "system/k8s/api".to_string(),
                format!("ns=api at=heartbeat heartbeat={n}"),
            ),
            _ => {
                let a = rack.apps.get(self.app()?)?;
                let procs: Vec<_> = a
                    .processes
                    .iter()
                    .map(|p| &p.process)
                    .filter(|p| p.status == "running")
                    .filter(|p| match self {
                        Scope::Service(_, s) => &p.name == s,
                        Scope::Process(_, pid) => &p.id == pid,
                        _ => true,
                    })
                    .collect();
                if procs.is_empty() {
                    return None;
                }
                let p = procs[(n as usize) % procs.len()];
                (
                    format!("service/{}/{}", p.name, p.id),
                    heartbeat_message(&p.name, !p.ports.is_empty(), n),
                )
            }
        };
        Some(LogLine {
            seq: 0,
            ts,
            stream,
            message,
        })
    }
}

fn passes(opts: &LogsOptions, line: &LogLine) -> bool {
    opts.filter
        .as_ref()
        .is_none_or(|f| line.message.contains(f.as_str()) || line.stream.contains(f.as_str()))
}

/// A line for the firehose when the scope has no history.
const FIREHOSE_FALLBACK: &str = "2026-01-01T00:00:00Z service/web/web-0 ns=web at=info method=GET path=/ status=200 bytes=512\n";

/// Benchmark mode ([`crate::BenchKnobs::log_firehose_bytes`]): the scope's log lines, over and
/// over, one text message each, until `total` bytes are sent, as fast as the socket takes them
/// (flushed every 64 KiB rather than every message); then the end of the stream.
async fn firehose<S>(sink: &mut S, lines: Vec<Utf8Bytes>, total: u64)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let lines = if lines.is_empty() {
        vec![Utf8Bytes::from_static(FIREHOSE_FALLBACK)]
    } else {
        lines
    };
    let mut sent: u64 = 0;
    let mut unflushed = 0usize;
    for line in lines.iter().cycle() {
        if sent >= total {
            break;
        }
        sent += line.len() as u64;
        unflushed += line.len();
        if sink.feed(Message::Text(line.clone())).await.is_err() {
            return;
        }
        if unflushed >= 64 * 1024 {
            if sink.flush().await.is_err() {
                return;
            }
            unflushed = 0;
        }
    }
    finish(sink).await;
}

/// Streams `scope`'s logs over `socket` according to `opts`.
pub async fn stream(shared: Arc<Shared>, socket: WebSocket, scope: Scope, opts: LogsOptions) {
    let (mut sink, mut incoming) = socket.split();
    if shared.log_firehose_bytes > 0 {
        let lines: Vec<Utf8Bytes> = {
            let rack = shared.lock();
            scope
                .lines_after(&rack, 0)
                .unwrap_or_default()
                .into_iter()
                .map(|l| Utf8Bytes::from(l.render(true)))
                .collect()
        };
        return firehose(&mut sink, lines, shared.log_firehose_bytes).await;
    }
    let history = {
        let rack = shared.lock();
        match scope.lines_after(&rack, 0) {
            None => Err(format!(
                "app not found: {}",
                scope.app().unwrap_or_default()
            )),
            Some(lines) => {
                let cutoff = opts.since.map(|d| Timestamp::now().minus(d));
                let mut out: Vec<String> = lines
                    .into_iter()
                    .filter(|l| cutoff.is_none_or(|c| l.ts >= c))
                    .filter(|l| passes(&opts, l))
                    .map(|l| l.render(opts.prefix))
                    .collect();
                if let Some(t) = opts.tail {
                    let skip = out.len().saturating_sub(t);
                    out.drain(..skip);
                }
                Ok((out, rack.log_seq()))
            }
        }
    };
    let (lines, mut last_seq) = match history {
        Ok(h) => h,
        Err(msg) => return fail(&mut sink, &msg).await,
    };
    for line in lines {
        if sink.send(Message::Text(line.into())).await.is_err() {
            return;
        }
    }
    if !opts.follow {
        return finish(&mut sink).await;
    }
    let mut shutdown = shared.shutdown.clone();
    let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
    tick.tick().await;
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                n += 1;
                let batch = {
                    let rack = shared.lock();
                    let Some(lines) = scope.lines_after(&rack, last_seq) else { break };
                    let mut out: Vec<String> =
                        lines.into_iter().filter(|l| passes(&opts, l)).map(|l| l.render(opts.prefix)).collect();
                    last_seq = rack.log_seq();
                    if let Some(hb) = scope.heartbeat(&rack, n).filter(|l| passes(&opts, l)) {
                        out.push(hb.render(opts.prefix));
                    }
                    out
                };
                for line in batch {
                    if sink.send(Message::Text(line.into())).await.is_err() {
                        return;
                    }
                }
            }
            msg = incoming.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
            _ = shutdown.changed() => break,
        }
    }
    finish(&mut sink).await;
}

/// Streams a build's output: what exists, then (while the build runs and
/// follow is on) new lines until it ends.
pub async fn stream_build(
    shared: Arc<Shared>,
    socket: WebSocket,
    app: String,
    id: String,
    follow: bool,
) {
    let (mut sink, mut incoming) = socket.split();
    let mut sent = 0usize;
    let mut shutdown = shared.shutdown.clone();
    loop {
        let found = {
            let rack = shared.lock();
            rack.app(&app).and_then(|a| a.build(&id)).map(|b| {
                (
                    b.log_lines.get(sent..).unwrap_or_default().to_vec(),
                    b.build.status == "running",
                )
            })
        };
        let (lines, running) = match found {
            Ok(found) => found,
            Err(e) => return fail(&mut sink, &e.message).await,
        };
        sent += lines.len();
        for line in lines {
            if sink
                .send(Message::Text(format!("{line}\n").into()))
                .await
                .is_err()
            {
                return;
            }
        }
        if !running || !follow {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            msg = incoming.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
            _ = shutdown.changed() => break,
        }
    }
    finish(&mut sink).await;
}

type Upgrade = Result<WebSocketUpgrade, WebSocketUpgradeRejection>;
type Auth = Option<Extension<AuthOutcome>>;

fn start(
    shared: Arc<Shared>,
    ws: Upgrade,
    auth: Auth,
    headers: &HeaderMap,
    query: &Form,
    scope: Scope,
) -> Response {
    let opts = LogsOptions::parse(headers, query);
    accept(ws, auth.map(|a| a.0), move |mut socket| async move {
        match opts {
            Ok(opts) => stream(shared, socket, scope, opts).await,
            Err(msg) => fail(&mut socket, &msg).await,
        }
    })
}

/// `SOCKET /apps/{app}/logs`.
pub async fn app_logs(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    auth: Auth,
    ws: Upgrade,
    query: Form,
) -> Response {
    start(shared, ws, auth, &headers, &query, Scope::App(app))
}

/// `SOCKET /apps/{app}/services/{service}/logs`.
pub async fn service_logs(
    State(shared): State<Arc<Shared>>,
    Path((app, service)): Path<(String, String)>,
    headers: HeaderMap,
    auth: Auth,
    ws: Upgrade,
    query: Form,
) -> Response {
    start(
        shared,
        ws,
        auth,
        &headers,
        &query,
        Scope::Service(app, service),
    )
}

/// `SOCKET /apps/{app}/processes/{pid}/logs`.
pub async fn process_logs(
    State(shared): State<Arc<Shared>>,
    Path((app, pid)): Path<(String, String)>,
    headers: HeaderMap,
    auth: Auth,
    ws: Upgrade,
    query: Form,
) -> Response {
    start(shared, ws, auth, &headers, &query, Scope::Process(app, pid))
}

/// `SOCKET /system/logs`.
pub async fn system_logs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    auth: Auth,
    ws: Upgrade,
    query: Form,
) -> Response {
    start(shared, ws, auth, &headers, &query, Scope::System)
}

/// `SOCKET /apps/{app}/builds/{id}/logs`.
pub async fn build_logs(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    auth: Auth,
    ws: Upgrade,
    query: Form,
) -> Response {
    let follow = LogsOptions::parse(&headers, &query).map(|o| o.follow);
    accept(ws, auth.map(|a| a.0), move |mut socket| async move {
        match follow {
            Ok(follow) => stream_build(shared, socket, app, id, follow).await,
            Err(msg) => fail(&mut socket, &msg).await,
        }
    })
}
