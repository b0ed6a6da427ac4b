//! A client connection whose writes fail once the client has taken nothing for a while.
//!
//! hyper bounds how long a client may take to send a request's headers, not how long it may
//! leave a response unread. A client that asks for a build's logs or a tarball and never reads
//! held its connection — and the gateway's connection to the rack behind it — for as long as
//! it liked. Here a write that makes no progress for the limit fails with `TimedOut`, which
//! ends the connection (and the request's outcome says the client left). Only time spent
//! waiting on the client counts: an idle keep-alive connection or a quiet WebSocket writes
//! nothing and waits on nothing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection that can be told, when the deadline has passed, to drop what it still holds
/// for the client when it closes.
pub trait Abandon {
    /// Makes the coming close a reset: the kernel frees the unsent bytes at once (megabytes
    /// for an unread download) instead of retrying them for minutes.
    fn abandon(&self);
}

impl Abandon for tokio::net::TcpStream {
    fn abandon(&self) {
        let _ = self.set_zero_linger();
    }
}

impl Abandon for tokio::io::DuplexStream {
    fn abandon(&self) {}
}

/// `inner`, its writes bounded by `limit` of no progress.
pub struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    /// Armed while a write waits on the client; cleared by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, limit: Duration) -> WriteDeadline<T> {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    /// `poll` is an attempt to write: ready clears the deadline, pending arms it (once) and
    /// fails when it has passed.
    fn bounded<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>>
    where
        T: Unpin + Abandon,
    {
        match poll(Pin::new(&mut self.inner), cx) {
            Poll::Ready(done) => {
                self.stalled = None;
                Poll::Ready(done)
            }
            Poll::Pending => {
                let limit = self.limit;
                let deadline = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.inner.abandon();
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the client read nothing for {} s", limit.as_secs()),
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin + Abandon> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.bounded(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.bounded(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.bounded(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.bounded(cx, |inner, cx| inner.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_peer_that_reads_nothing_fails_the_write_and_one_that_reads_does_not() {
        // A pipe with a small buffer: once full, writes wait on the reader.
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut ours = WriteDeadline::new(ours, Duration::from_millis(200));
        let chunk = vec![b'x'; 4096];
        let started = std::time::Instant::now();
        let failed = ours.write_all(&chunk).await;
        let e = failed.err().map(|e| e.kind());
        assert_eq!(e, Some(io::ErrorKind::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(200));

        // A slow reader keeps the writes going: each read is progress.
        let (ours, mut theirs2) = tokio::io::duplex(1024);
        let mut ours = WriteDeadline::new(ours, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 512];
            let mut total = 0;
            while total < 8192 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                match theirs2.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        });
        assert!(ours.write_all(&vec![b'y'; 8192]).await.is_ok());
        assert_eq!(reader.await.ok(), Some(8192));
        let _ = theirs.shutdown().await;
    }
}
