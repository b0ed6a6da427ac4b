//! The client's one error type, and turning error answers into it.

/// Everything a rack API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the address (refused, DNS, TLS handshake…).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL that was tried.
        url: String,
        /// What went wrong, as the transport said it.
        reason: String,
    },
    /// The server accepted the connection but did not answer in time.
    #[error("{url} did not answer in time")]
    Timeout {
        /// The URL that was tried.
        url: String,
    },
    /// The server answered with an error status.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Machine-readable code from a gateway JSON body (`{"error","code"}`), if any.
        code: Option<String>,
        /// The message (gateway or rack text), never empty.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from {url}: {reason}")]
    Decode {
        /// The URL that answered.
        url: String,
        /// Why it could not be read.
        reason: String,
    },
    /// The rack reported an error inside a socket stream (`ERROR: <message>`).
    #[error("{0}")]
    Stream(String),
    /// A WebSocket failed after it was established, or in a way that is not an HTTP answer.
    #[error("websocket: {0}")]
    Socket(String),
    /// A bad URL was given.
    #[error("invalid URL: {0}")]
    Url(String),
    /// Any other transport failure.
    #[error("{0}")]
    Transport(String),
    /// Local I/O (reading input, writing output) failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ClientError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The gateway's machine-readable code of an error answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Classifies a reqwest failure for `url`.
    pub fn from_reqwest(url: &str, e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            ClientError::Timeout {
                url: url.to_string(),
            }
        } else if e.is_connect() {
            let mut reason = root_cause(e);
            // rustls reading a plain-HTTP answer to its hello: the server is not speaking TLS.
            if url.starts_with("https://") && reason.contains("InvalidContentType") {
                reason.push_str(": the server answered without TLS; if it serves plain http, use an http:// URL");
            }
            ClientError::Connect {
                url: url.to_string(),
                reason,
            }
        } else if e.is_decode() {
            ClientError::Decode {
                url: url.to_string(),
                reason: root_cause(e),
            }
        } else {
            ClientError::Transport(format!("{url}: {}", root_cause(e)))
        }
    }
}

/// The innermost error message (reqwest wraps hyper wraps io).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Builds [`ClientError::Api`] from a status and a body: the gateway's JSON
/// `{"error": "...", "code": "..."}`, the rack's JSON `{"error": "..."}`, or plain text.
pub fn error_from_body(status: u16, body: &[u8]) -> ClientError {
    let text = String::from_utf8_lossy(body);
    let (message, code) = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) if v.get("error").is_some() => (
            v["error"].as_str().unwrap_or_default().to_string(),
            v["code"].as_str().map(str::to_string),
        ),
        _ => (text.trim().to_string(), None),
    };
    let message = if message.is_empty() {
        match reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
        {
            Some(reason) => format!("{status} {reason}"),
            None => format!("HTTP {status}"),
        }
    } else {
        message
    };
    ClientError::Api {
        status,
        code,
        message,
    }
}

/// Reads an error answer (at most 64 KiB of its body) into [`ClientError::Api`].
pub async fn error_from_response(response: reqwest::Response) -> ClientError {
    const LIMIT: usize = 64 * 1024;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let mut response = response;
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= LIMIT {
            body.truncate(LIMIT);
            break;
        }
    }
    error_from_body(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_json_keeps_the_code() {
        let e = error_from_body(
            403,
            br#"{"error":"permission denied: convox:apps:delete is required (your role: ops)","code":"permission_denied"}"#,
        );
        assert_eq!(e.status(), Some(403));
        assert_eq!(e.code(), Some("permission_denied"));
        assert!(e.to_string().contains("convox:apps:delete"));
    }

    #[test]
    fn rack_text_is_the_message() {
        let e = error_from_body(404, b"app not found: nope\n");
        assert_eq!(e.to_string(), "app not found: nope");
        assert_eq!(e.code(), None);
    }

    #[test]
    fn empty_body_names_the_status() {
        assert_eq!(error_from_body(502, b"").to_string(), "502 Bad Gateway");
    }
}
