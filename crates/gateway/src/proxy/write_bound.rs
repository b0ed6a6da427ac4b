//! A rack connection whose writes are bounded in time.
//!
//! The wait for the rack's answer is bounded in [`super::upstream::Upstream::send`], but once
//! the answer has come nothing there watches the request body still being sent. A rack that
//! answers an upload at once and then reads none of it (nor closes) would hold the connection
//! — and, through the body it is still taking from, the client's — for as long as it likes.
//! Here a write that the rack leaves waiting for longer than the bound fails, which ends the
//! connection and, with it, the request body.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tokio::time::Sleep;

/// `inner`, with every write that the peer leaves pending for `limit` failing as
/// [`io::ErrorKind::TimedOut`]. Reads are not bounded: a pooled connection waits idle.
pub struct WriteBound<T> {
    inner: T,
    limit: Duration,
    /// Armed by the first write left pending, disarmed by any write that goes through.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteBound<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, limit: Duration) -> WriteBound<T> {
        WriteBound {
            inner,
            limit,
            stalled: None,
        }
    }

    /// What a write the peer left pending returns: still pending, or the error once the peer
    /// has taken nothing for `limit`.
    fn waiting<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        tracing::warn!(
            secs = limit.as_secs(),
            "the rack took none of a request for too long (RACK_READ_TIMEOUT_SECS); \
             its connection is closed"
        );
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the rack stopped taking the request",
        )))
    }

    fn went_through<R>(&mut self, result: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        self.stalled = None;
        result
    }
}

impl<T: Write + Unpin> Write for WriteBound<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.waiting(cx),
            done => self.went_through(done),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.waiting(cx),
            done => self.went_through(done),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.waiting(cx),
            done => self.went_through(done),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: Read + Unpin> Read for WriteBound<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: Connection> Connection for WriteBound<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes to `io` until a write fails or `give_up` passes; the error, if any.
    async fn write_until_stuck(
        io: &mut WriteBound<TokioIo<tokio::io::DuplexStream>>,
        give_up: Duration,
    ) -> Option<io::Error> {
        let chunk = [0u8; 1024];
        let writing = async {
            loop {
                let wrote = std::future::poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, &chunk));
                if let Err(e) = wrote.await {
                    return e;
                }
            }
        };
        tokio::time::timeout(give_up, writing).await.ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_takes_nothing_fails_the_write_after_the_limit() {
        let (near, _far) = tokio::io::duplex(4096);
        let mut io = WriteBound::new(TokioIo::new(near), Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let err = write_until_stuck(&mut io, Duration::from_secs(60)).await;
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_peer_that_keeps_taking_is_not_cut_off() {
        let (near, mut far) = tokio::io::duplex(4096);
        // Takes 1 KiB every 4 s, under the 5 s limit each time, for a minute.
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            loop {
                tokio::time::sleep(Duration::from_secs(4)).await;
                if far.read_exact(&mut buf).await.is_err() {
                    return;
                }
            }
        });
        let mut io = WriteBound::new(TokioIo::new(near), Duration::from_secs(5));
        let err = write_until_stuck(&mut io, Duration::from_secs(60)).await;
        assert!(err.is_none(), "cut off: {err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_not_cut_off() {
        let (near, mut far) = tokio::io::duplex(4096);
        let mut io = WriteBound::new(TokioIo::new(near), Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(60)).await;
        // Nothing was pending meanwhile, so the next write goes through.
        let wrote = std::future::poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"ping")).await;
        assert_eq!(wrote.ok(), Some(4));
        let mut got = [0u8; 4];
        let read = far.read_exact(&mut got).await;
        assert!(read.is_ok());
        assert_eq!(&got, b"ping");
        let _ = far.shutdown().await;
    }
}
