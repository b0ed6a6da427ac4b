//! Streaming phases: a large object upload (generated on the fly, never held in memory) and a
//! WebSocket log stream read to its end.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const CHUNK: usize = 1 << 20;

/// Uploads `total` bytes (whole MiB) as one request body to `url` (a Convox object upload,
/// as `convox deploy` sends its build tarball). The elapsed time.
pub async fn upload(url: &str, authorization: &str, total: u64) -> anyhow::Result<Duration> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(600))
        .build()?;
    // Not all zeros, in case anything on the way compresses; the same refcounted chunk each time.
    let chunk = Bytes::from(
        (0..CHUNK)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
            .collect::<Vec<u8>>(),
    );
    let chunks = total / CHUNK as u64;
    let body = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<Bytes, std::io::Error>(chunk.clone())),
    );
    let started = Instant::now();
    let response = client
        .post(url)
        .header("authorization", authorization)
        .header("content-type", "application/gzip")
        .header("content-length", chunks * CHUNK as u64)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .with_context(|| format!("upload to {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let elapsed = started.elapsed();
    if !status.is_success() || !text.contains("object://") {
        bail!("upload to {url}: {status}: {text}");
    }
    Ok(elapsed)
}

/// What reading a log socket to its end gave.
pub struct Received {
    pub bytes: u64,
    pub messages: u64,
    pub elapsed: Duration,
}

/// Opens the log socket at `url` (`ws://…`) and reads text messages until the end of the
/// stream (an empty binary message, or the close).
pub async fn read_logs(url: &str, authorization: &str) -> anyhow::Result<Received> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", authorization.parse()?);
    request.headers_mut().insert("follow", "false".parse()?);
    let started = Instant::now();
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("WebSocket {url}"))?;
    let mut bytes = 0u64;
    let mut messages = 0u64;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .with_context(|| format!("WebSocket {url}: 60 s without a message"))?;
        match next {
            Some(Ok(Message::Text(text))) => {
                if messages == 0 && text.starts_with("ERROR:") {
                    bail!("WebSocket {url}: {}", text.trim());
                }
                bytes += text.len() as u64;
                messages += 1;
            }
            Some(Ok(Message::Binary(b))) if b.is_empty() => break,
            Some(Ok(Message::Binary(b))) => {
                bytes += b.len() as u64;
                messages += 1;
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("WebSocket {url}: {e}"),
        }
    }
    let elapsed = started.elapsed();
    let _ = socket.close(None).await;
    Ok(Received {
        bytes,
        messages,
        elapsed,
    })
}
