//! Exec sessions: a command in a running process over `/apps/{app}/processes/{pid}/exec`.
//!
//! The protocol: options in headers (`Command`, `Tty`, `Height`, `Width`, `Entrypoint`,
//! `Disable-Stdin`); stdin as text messages, its end as an empty binary message; output as text
//! messages; the exit code as the text message [`EXIT_MARKER`]`<code>\n`; the end of output as
//! an empty binary message, then a close frame.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::error::ClientError;
use super::socket::{Incoming, classify, in_band_error, is_closed};
use super::{Client, seg};

/// Prefix of the text message that carries a session's exit code.
pub const EXIT_MARKER: &str = "F1E49A85-0AD7-4AEF-A618-C249C6E6568D:";

/// How long to wait for the end of the stream once the exit code arrived.
const AFTER_EXIT_GRACE: Duration = Duration::from_secs(5);

/// How long the end of stdin is held back. A command that already has all it needs (`sh`
/// fed `exit 5`) usually finishes within this, and then no end-of-input frame is sent at all:
/// a server that closes the connection right after the command ends, with that frame unread,
/// makes the kernel reset the connection, which can discard the exit code still in flight.
const EOF_HOLD: Duration = Duration::from_millis(100);

/// Exec options.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Ask for a TTY (the rack's default is true).
    pub tty: bool,
    /// Terminal height.
    pub height: Option<u16>,
    /// Terminal width.
    pub width: Option<u16>,
    /// Run through the image's entrypoint.
    pub entrypoint: Option<bool>,
    /// Do not send stdin.
    pub disable_stdin: bool,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            tty: true,
            height: None,
            width: None,
            entrypoint: None,
            disable_stdin: false,
        }
    }
}

impl Client {
    /// Runs `command` in process `pid` of `app`: sends what arrives on `input` (its closing is
    /// the end of stdin), writes the output to `output`, and returns the exit code.
    pub async fn exec<W: AsyncWrite + Unpin>(
        &self,
        app: &str,
        pid: &str,
        command: &str,
        opts: &ExecOptions,
        mut input: mpsc::Receiver<Vec<u8>>,
        output: &mut W,
    ) -> Result<i32, ClientError> {
        let mut headers = vec![
            ("command", command.to_string()),
            ("tty", opts.tty.to_string()),
        ];
        if let Some(h) = opts.height {
            headers.push(("height", h.to_string()));
        }
        if let Some(w) = opts.width {
            headers.push(("width", w.to_string()));
        }
        if let Some(e) = opts.entrypoint {
            headers.push(("entrypoint", e.to_string()));
        }
        if opts.disable_stdin {
            headers.push(("disable-stdin", "true".into()));
        }
        let path = format!("/apps/{}/processes/{}/exec", seg(app), seg(pid));
        let socket = self.socket(&path, &headers).await?;
        let (mut sink, mut stream) = socket.split();

        let mut input_open = !opts.disable_stdin;
        // When stdin ended: send the end-of-input frame at this instant.
        let mut eof_at: Option<tokio::time::Instant> =
            (!input_open).then(|| tokio::time::Instant::now() + EOF_HOLD);
        let mut carry: Vec<u8> = Vec::new();
        let mut code: Option<i32> = None;
        let mut held_error: Option<String> = None;
        loop {
            let next = async {
                if code.is_some() {
                    tokio::time::timeout(AFTER_EXIT_GRACE, stream.next())
                        .await
                        .unwrap_or(None)
                } else {
                    stream.next().await
                }
            };
            tokio::select! {
                chunk = input.recv(), if input_open => match chunk {
                    Some(bytes) => {
                        carry.extend_from_slice(&bytes);
                        let text = take_utf8(&mut carry, false);
                        if !text.is_empty() && sink.send(Message::Text(text.into())).await.is_err() {
                            input_open = false;
                        }
                    }
                    None => {
                        input_open = false;
                        let rest = take_utf8(&mut carry, true);
                        if !rest.is_empty() {
                            let _ = sink.send(Message::Text(rest.into())).await;
                        }
                        eof_at = Some(tokio::time::Instant::now() + EOF_HOLD);
                    }
                },
                () = sleep_until(eof_at), if eof_at.is_some() && code.is_none() => {
                    eof_at = None;
                    let _ = sink.send(Message::Binary(Vec::new().into())).await;
                },
                message = next => {
                    let text = match message {
                        None => break,
                        Some(Err(e)) if is_closed(&e) || code.is_some() => break,
                        Some(Err(e)) => return Err(ClientError::Socket(e.to_string())),
                        Some(Ok(message)) => match classify(message) {
                            Incoming::Data(text) => text,
                            Incoming::End => break,
                            // After the exit code the session is over whatever the close says.
                            Incoming::Ended(_) if code.is_some() => break,
                            Incoming::Ended(reason) => return Err(ClientError::Stream(reason)),
                            Incoming::Skip => continue,
                        },
                    };
                    if let Some(previous) = held_error.take() {
                        output.write_all(previous.as_bytes()).await?;
                    }
                    if let Some(at) = text.find(EXIT_MARKER) {
                        output.write_all(&text.as_bytes()[..at]).await?;
                        let rest = &text[at + EXIT_MARKER.len()..];
                        let (number, after) = rest.split_once('\n').unwrap_or((rest, ""));
                        code = Some(number.trim().parse().map_err(|_| ClientError::Decode {
                            url: path.clone(),
                            reason: format!("unreadable exit code {number:?}"),
                        })?);
                        output.write_all(after.as_bytes()).await?;
                    } else if in_band_error(&text).is_some() {
                        held_error = Some(text);
                    } else {
                        output.write_all(text.as_bytes()).await?;
                    }
                    output.flush().await?;
                }
            }
        }
        output.flush().await?;
        let _ = sink.close().await;
        if let Some(error) = held_error {
            return Err(ClientError::Stream(in_band_error(&error).unwrap_or(error)));
        }
        code.ok_or_else(|| ClientError::Socket("the session ended without an exit code".into()))
    }
}

/// Sleeps until `at` (forever when unset).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Takes the longest valid UTF-8 prefix of `buf` (invalid bytes become U+FFFD); an incomplete
/// character at the end stays in `buf` unless `eof`.
fn take_utf8(buf: &mut Vec<u8>, eof: bool) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(buf) {
            Ok(s) => {
                out.push_str(s);
                buf.clear();
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(std::str::from_utf8(&buf[..valid]).unwrap_or_default());
                match e.error_len() {
                    Some(bad) => {
                        out.push('\u{FFFD}');
                        buf.drain(..valid + bad);
                    }
                    None => {
                        buf.drain(..valid);
                        if eof {
                            out.push('\u{FFFD}');
                            buf.clear();
                        }
                        return out;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_wait_for_their_rest() {
        let euro = "€".as_bytes();
        let mut buf = vec![b'a', euro[0], euro[1]];
        assert_eq!(take_utf8(&mut buf, false), "a");
        assert_eq!(buf.len(), 2);
        buf.push(euro[2]);
        assert_eq!(take_utf8(&mut buf, false), "€");
        assert!(buf.is_empty());
    }

    #[test]
    fn invalid_bytes_are_replaced() {
        let mut buf = vec![b'a', 0xff, b'b'];
        assert_eq!(take_utf8(&mut buf, false), "a\u{FFFD}b");
        let mut buf = vec![0xe2, 0x82];
        assert_eq!(take_utf8(&mut buf, true), "\u{FFFD}");
    }
}
