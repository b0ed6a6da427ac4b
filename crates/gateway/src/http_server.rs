//! The gateway's accept loop: HTTP/1.1 connections with the client timeouts `axum::serve`
//! leaves out, and a graceful stop.
//!
//! Without a timer hyper never enforces its header read timeout, so a client that sends half
//! a request line (or keeps an idle connection) held its socket for ever; enough of them and
//! the gateway runs out of file descriptors. Here a connection is closed when a request's
//! headers take longer than `client_timeout`, which also bounds how long a keep-alive
//! connection may sit idle between requests.
//!
//! HTTP/2 (h2c) is not offered: no client of the rack API needs it (TLS ends at the load
//! balancer, which speaks HTTP/1.1 to its targets), and an idle HTTP/2 connection has no
//! equivalent of the header timeout. An HTTP/2 preface is refused like any malformed request.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};

use crate::write_deadline::WriteDeadline;

/// Serves `router` on `listener` until `stop` resolves, then stops accepting. The returned
/// [`Drain`] finishes the connections still open. At most `max_connections` are served at
/// once; further clients wait in the listen queue until one closes, rather than the process
/// running out of file descriptors (which it needs for the rack and the database too).
///
/// Handlers see the peer as `ConnectInfo<SocketAddr>`, as with
/// `into_make_service_with_connect_info`. `open` counts the connections being served.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    client_timeout: Duration,
    max_connections: usize,
    open: Gauge,
    stop: impl Future<Output = ()>,
) -> Drain {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(client_timeout);
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    let cut = CancellationToken::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => break,
            },
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Small responses go out at once rather than waiting on Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        // A client gone without a word (a laptop asleep, a NAT that forgot the flow) is found
        // by the kernel's probes, not only when a write fails: a quiet `logs -f` or `exec`
        // would otherwise hold its session's place until restart.
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive());
        // And a client that reads nothing of its response is let go (see `write_deadline`).
        let stream = WriteDeadline::new(stream, client_timeout);
        let service = match make_service.call(peer).await {
            Ok(service) => service,
            Err(never) => match never {},
        };
        let service = TowerToHyperService::new(
            service.map_request(|request: Request<Incoming>| request.map(Body::new)),
        );
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let (closing, cut) = (closing.clone(), cut.clone());
        let counted = Counted::new(&open);
        connections.spawn(async move {
            // Held until the connection closes (or becomes a WebSocket session, which
            // `proxy::Sessions` counts instead).
            let _slot = slot;
            let _counted = counted;
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = closing.cancelled() => {
                    // Finish the request in progress, then close (idle ones close at once).
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        ended = connection.as_mut() => ended,
                        // Out of time: dropping the connection drops its request, whose
                        // outcome says the gateway cut it off.
                        () = cut.cancelled() => return,
                    }
                }
            };
            if let Err(e) = ended {
                // Timeouts, resets and malformed requests: the client's business, not an alarm.
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    Drain {
        connections,
        closing,
        cut,
    }
}

/// One open connection in the `open` gauge, for as long as it lives.
struct Counted(Gauge);

impl Counted {
    fn new(open: &Gauge) -> Counted {
        open.inc();
        Counted(open.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Probes after 60 s of silence, every 15 s, given up after 4 unanswered: a vanished client
/// is let go within two minutes.
fn keepalive() -> socket2::TcpKeepalive {
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    let keepalive = keepalive
        .with_interval(Duration::from_secs(15))
        .with_retries(4);
    keepalive
}

/// Connections still open when accepting stopped.
pub struct Drain {
    connections: TaskTracker,
    closing: CancellationToken,
    cut: CancellationToken,
}

impl Drain {
    /// Asks every open connection to finish its current request and close; resolves when all
    /// have. (WebSocket sessions, once upgraded, are no longer connections here: see
    /// `proxy::Sessions`.)
    pub async fn finish(&self) {
        self.closing.cancel();
        self.connections.close();
        self.connections.wait().await;
    }

    /// Closes every connection still open now, dropping the requests in progress on them;
    /// [`Drain::finish`] then resolves as soon as their tasks have ended.
    pub fn cut(&self) {
        self.cut.cancel();
    }

    /// How many connections are still open.
    pub fn open(&self) -> usize {
        self.connections.len()
    }
}

/// A failed accept: per-connection failures are skipped; anything else (most often running
/// out of file descriptors) is logged and the loop pauses so it does not spin.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Clients past `MAX_CONNECTIONS` wait in the kernel's queue of accepted connections; the
/// standard 128 turned clients away (into TCP's retry back-off, seconds late) while the
/// gateway was full. The kernel caps it at `net.core.somaxconn` (4096 on current Linux).
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with a listen queue of [`LISTEN_BACKLOG`].
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restart may bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
