//! Log sockets: app, service, process, build and rack logs.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;

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
        Ok(LogStream {
            socket,
            ready: VecDeque::new(),
            held: None,
            finished: false,
        })
    }
}

/// An open log socket. Each chunk is what the rack sent in one message (usually one line with
/// its newline). An `ERROR: …` message that ends the stream is returned as
/// [`ClientError::Stream`].
pub struct LogStream {
    socket: Socket,
    ready: VecDeque<String>,
    held: Option<String>,
    finished: bool,
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
            let text = match self.socket.next().await {
                None => {
                    self.finished = true;
                    continue;
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

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
