//! Log sockets: app, service, process, build and rack logs.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, Message};

use super::duration::go_duration;
use super::error::ClientError;
use super::socket::{Incoming, Socket, classify, in_band_error, is_closed};
use super::{Client, seg};

/// Whose logs to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// All of an app's processes.
    App(String),
    /// One service of an app.
    Service {
        /// App name.
        app: String,
        /// Service name.
        service: String,
    },
    /// One process of an app.
    Process {
        /// App name.
        app: String,
        /// Process id.
        pid: String,
    },
    /// A build's output.
    Build {
        /// App name.
        app: String,
        /// Build id.
        id: String,
    },
    /// The rack's own logs.
    System,
}

impl LogTarget {
    fn path(&self) -> String {
        match self {
            LogTarget::App(app) => format!("/apps/{}/logs", seg(app)),
            LogTarget::Service { app, service } => {
                format!("/apps/{}/services/{}/logs", seg(app), seg(service))
            }
            LogTarget::Process { app, pid } => {
                format!("/apps/{}/processes/{}/logs", seg(app), seg(pid))
            }
            LogTarget::Build { app, id } => format!("/apps/{}/builds/{}/logs", seg(app), seg(id)),
            LogTarget::System => "/system/logs".into(),
        }
    }
}

/// Log options (`structs.LogsOptions`), sent as headers. Unset fields take the rack's
/// defaults: follow, since 2m, prefixed lines.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    /// Keep streaming new lines.
    pub follow: Option<bool>,
    /// Only lines newer than this.
    pub since: Option<Duration>,
    /// Only lines containing this text.
    pub filter: Option<String>,
    /// Only the last N lines of history.
    pub tail: Option<u32>,
    /// Prefix each line with its time and stream.
    pub prefix: Option<bool>,
}

impl LogsOptions {
    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if let Some(f) = self.follow {
            h.push(("follow", f.to_string()));
        }
        if let Some(s) = self.since {
            h.push(("since", go_duration(s)));
        }
        if let Some(f) = &self.filter {
            h.push(("filter", f.clone()));
        }
        if let Some(t) = self.tail {
            h.push(("tail", t.to_string()));
        }
        if let Some(p) = self.prefix {
            h.push(("prefix", p.to_string()));
        }
        h
    }
}

impl Client {
    /// Opens a log socket.
    pub async fn logs(
        &self,
        target: &LogTarget,
        opts: &LogsOptions,
    ) -> Result<LogStream, ClientError> {
        let socket = self.socket(&target.path(), &opts.headers()).await?;
        Ok(LogStream::new(socket, KEEPALIVE))
    }
}

/// After this long without a message, a log stream pings the other side; when this long
/// passes again with nothing at all (not even the pong), the connection is taken as lost.
/// A quiet app's `logs -f` may be silent for hours, but the pong still comes back; a laptop
/// that slept or a connection a NAT dropped answers nothing, and waiting on it would be for
/// ever.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// An open log socket. Each chunk is what the rack sent in one message (usually one line with
/// its newline). An `ERROR: …` message that ends the stream is returned as
/// [`ClientError::Stream`].
pub struct LogStream {
    socket: Socket,
    ready: VecDeque<String>,
    held: Option<String>,
    finished: bool,
    keepalive: Duration,
}

impl std::fmt::Debug for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStream")
            .field("finished", &self.finished)
            .finish()
    }
}

impl LogStream {
    /// The next chunk, or `None` at the end of the stream.
    pub async fn next_chunk(&mut self) -> Option<Result<String, ClientError>> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Some(Ok(chunk));
            }
            if self.finished {
                let held = self.held.take()?;
                let message = in_band_error(&held).unwrap_or(held);
                return Some(Err(ClientError::Stream(message)));
            }
            let text = match self.next_message().await {
                None => {
                    self.finished = true;
                    continue;
                }
                // Dropped without a close frame: the stream did not end, it was cut off (a
                // network that failed, a gateway killed). Not a normal end (exit status 0).
                Some(Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ))) => {
                    self.finished = true;
                    self.held = None;
                    return Some(Err(ClientError::Stream(
                        "the connection was lost before the stream ended".into(),
                    )));
                }
                Some(Err(e)) if is_closed(&e) => {
                    self.finished = true;
                    continue;
                }
                Some(Err(e)) => {
                    self.finished = true;
                    self.held = None;
                    return Some(Err(ClientError::Socket(e.to_string())));
                }
                Some(Ok(message)) => match classify(message) {
                    Incoming::Data(text) => text,
                    Incoming::End => {
                        self.finished = true;
                        continue;
                    }
                    Incoming::Ended(reason) => {
                        self.finished = true;
                        self.held = None;
                        return Some(Err(ClientError::Stream(reason)));
                    }
                    Incoming::Skip => continue,
                },
            };
            // An error line only counts as an error when the stream ends right after it.
            if let Some(previous) = self.held.take() {
                self.ready.push_back(previous);
            }
            if in_band_error(&text).is_some() {
                self.held = Some(text);
            } else {
                self.ready.push_back(text);
            }
        }
    }

    fn new(socket: Socket, keepalive: Duration) -> LogStream {
        LogStream {
            socket,
            ready: VecDeque::new(),
            held: None,
            finished: false,
            keepalive,
        }
    }

    /// The next message, pinging the other side when it has been silent for
    /// [`KEEPALIVE`], and an error when it then stays silent as long again.
    async fn next_message(
        &mut self,
    ) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        let mut pinged = false;
        loop {
            match tokio::time::timeout(self.keepalive, self.socket.next()).await {
                Ok(message) => return message,
                Err(_) if pinged => {
                    let secs = (self.keepalive * 2).as_secs();
                    return Some(Err(tokio_tungstenite::tungstenite::Error::Io(
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "no answer for {secs} s, not even to a ping: the connection is lost"
                            ),
                        ),
                    )));
                }
                Err(_) => {
                    // A failed send shows up as the next read's error.
                    let _ = self.socket.send(Message::Ping(Vec::new().into())).await;
                    pinged = true;
                }
            }
        }
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WebSocket server on 127.0.0.1 that runs `serve` on its one connection; its URL.
    async fn server<F, Fut>(serve: F) -> String
    where
        F: FnOnce(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Fut
            + Send
            + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!(
            "ws://{}/",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        tokio::spawn(async move {
            if let Ok((stream, _)) = listener.accept().await
                && let Ok(socket) = tokio_tungstenite::accept_async(stream).await
            {
                serve(socket).await;
            }
        });
        url
    }

    async fn stream(url: &str, keepalive: Duration) -> LogStream {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        LogStream::new(socket, keepalive)
    }

    #[tokio::test]
    async fn a_silent_dead_connection_is_reported_lost() {
        // Holds the connection open but never reads: no pong comes back, as when a NAT has
        // dropped the connection or the laptop slept.
        let url = server(|socket| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        })
        .await;
        let mut logs = stream(&url, Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let next = tokio::time::timeout(Duration::from_secs(5), logs.next_chunk()).await;
        match next {
            Ok(Some(Err(ClientError::Socket(message)))) => {
                assert!(message.contains("connection is lost"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_stream_cut_without_a_close_is_an_error_and_a_closed_one_is_not() {
        // One line, then the connection drops without a close frame (a killed gateway, a
        // network that failed): `logs` used to end with status 0 as if the stream had ended.
        let url = server(|mut socket| async move {
            let _ = socket.send(Message::text("web-1 last words\n")).await;
            let _ = socket.flush().await;
            drop(socket);
        })
        .await;
        let mut logs = stream(&url, Duration::from_secs(30)).await;
        assert!(matches!(logs.next_chunk().await, Some(Ok(line)) if line == "web-1 last words\n"));
        match logs.next_chunk().await {
            Some(Err(ClientError::Stream(message))) => {
                assert!(message.contains("connection was lost"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Closed properly: the end of the stream.
        let url = server(|mut socket| async move {
            let _ = socket.send(Message::text("web-1 bye\n")).await;
            let _ = socket.close(None).await;
        })
        .await;
        let mut logs = stream(&url, Duration::from_secs(30)).await;
        assert!(matches!(logs.next_chunk().await, Some(Ok(_))));
        assert!(logs.next_chunk().await.is_none());
    }

    #[tokio::test]
    async fn a_quiet_live_stream_is_kept() {
        // Silent for many keepalive periods, but it answers pings (tungstenite replies while
        // reading): the line that finally comes is read.
        let url = server(|mut socket| async move {
            let quiet = tokio::time::sleep(Duration::from_millis(800));
            tokio::pin!(quiet);
            loop {
                tokio::select! {
                    () = &mut quiet => break,
                    message = socket.next() => if message.is_none() { return },
                }
            }
            let _ = socket.send(Message::text("web-1 hello\n")).await;
            let _ = socket.send(Message::binary(Vec::new())).await;
            while socket.next().await.is_some() {}
        })
        .await;
        let mut logs = stream(&url, Duration::from_millis(100)).await;
        match logs.next_chunk().await {
            Some(Ok(line)) => assert_eq!(line, "web-1 hello\n"),
            other => panic!("{other:?}"),
        }
        assert!(logs.next_chunk().await.is_none());
    }
}
