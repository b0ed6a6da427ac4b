//! A response body whose failure waits one turn, so that what came before it reaches the
//! client.
//!
//! hyper's HTTP/1 server writes a response's head and body chunks into its buffer and flushes
//! them only when the body has nothing more to give at once. If the body fails in the same
//! turn as the chunks before it were taken, hyper closes the connection and drops the buffer:
//! the client sees no status, no headers, nothing — although the rack did answer, and the
//! audit outcome says it did. That happens whenever the rack's connection ends (a rack
//! process killed mid-answer) between two reads of its body.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// `inner`, with a failure held back for one poll: the stream says `Pending` (and wakes itself
/// at once), hyper flushes what it has, and the failure comes on the next poll.
pub struct FlushBeforeFailing<S> {
    inner: S,
    failed: Option<io::Error>,
}

impl<S> FlushBeforeFailing<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> FlushBeforeFailing<S> {
        FlushBeforeFailing {
            inner,
            failed: None,
        }
    }
}

impl<S> Stream for FlushBeforeFailing<S>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(err) = self.failed.take() {
            return Poll::Ready(Some(Err(err)));
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Err(err))) => {
                self.failed = Some(err);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A body that has its first bytes and its failure ready at once: what a rack connection
    /// that ended between two reads looks like to the relay.
    fn cut_short() -> impl Stream<Item = io::Result<Bytes>> + Unpin + Send + 'static {
        futures_util::stream::iter([
            Ok(Bytes::from_static(b"{\"name\":\"web\"")),
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "rack connection ended",
            )),
        ])
    }

    /// Everything a client reads of a response whose body is `body`, served by hyper's HTTP/1
    /// server as the gateway serves its responses.
    async fn served<S>(body: S) -> io::Result<String>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
    {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let body = std::sync::Mutex::new(Some(body));
        let service = hyper::service::service_fn(move |_request| {
            let body = body.lock().ok().and_then(|mut b| b.take());
            let body = match body {
                Some(body) => Body::from_stream(body),
                None => Body::empty(),
            };
            async move { Ok::<_, Infallible>(http::Response::new(body)) }
        });
        let serving =
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(server), service));
        client
            .write_all(b"GET /apps/web HTTP/1.1\r\nHost: gateway\r\n\r\n")
            .await?;
        let mut read = Vec::new();
        client.read_to_end(&mut read).await?;
        // The connection ends with the body's error; that is the point.
        let ended = serving.await.map_err(io::Error::other)?;
        assert!(
            ended.is_err(),
            "the body's failure did not end the connection"
        );
        Ok(String::from_utf8_lossy(&read).into_owned())
    }

    #[tokio::test]
    async fn a_body_failing_right_after_its_first_bytes_still_sends_them_with_the_head()
    -> io::Result<()> {
        let read = served(FlushBeforeFailing::new(cut_short())).await?;
        assert!(read.starts_with("HTTP/1.1 200 OK\r\n"), "{read:?}");
        assert!(read.contains("{\"name\":\"web\""), "{read:?}");
        // Chunked, and never terminated: the client can tell the body is incomplete.
        assert!(read.contains("transfer-encoding: chunked"), "{read:?}");
        assert!(!read.ends_with("0\r\n\r\n"), "{read:?}");
        Ok(())
    }

    #[tokio::test]
    async fn without_the_wait_hyper_drops_the_head_and_the_bytes() -> io::Result<()> {
        // Why the wrapper exists: if this starts to fail, hyper no longer needs it.
        assert_eq!(served(cut_short()).await?, "");
        Ok(())
    }

    struct Woken(AtomicUsize);

    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_failure_comes_on_the_poll_after_it_was_seen_and_nothing_is_lost() {
        let mut stream = FlushBeforeFailing::new(cut_short());
        let woken = Arc::new(Woken(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let first = stream.poll_next_unpin(&mut cx);
        assert!(matches!(first, Poll::Ready(Some(Ok(ref b))) if b.starts_with(b"{")));
        assert!(stream.poll_next_unpin(&mut cx).is_pending());
        // Pending without a wake-up would hang the response for ever.
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        let failed = stream.poll_next_unpin(&mut cx);
        assert!(
            matches!(failed, Poll::Ready(Some(Err(ref e))) if e.kind() == io::ErrorKind::UnexpectedEof)
        );
        assert!(matches!(stream.poll_next_unpin(&mut cx), Poll::Ready(None)));
    }
}
