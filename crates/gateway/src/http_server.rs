//! The gateway's accept loop: HTTP/1 and HTTP/2 connections with the client timeouts
//! `axum::serve` leaves out, and a graceful stop.
//!
//! Without a timer hyper never enforces its header read timeout, so a client that sends half
//! a request line (or keeps an idle connection) held its socket for ever; enough of them and
//! the gateway runs out of file descriptors. Here a connection is closed when a request's
//! headers take longer than `client_timeout`, which also bounds how long a keep-alive
//! connection may sit idle between requests.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

/// Serves `router` on `listener` until `stop` resolves, then stops accepting and waits for
/// open connections to finish their current request (HTTP/1) or streams (HTTP/2). The caller
/// bounds that wait.
///
/// Handlers see the peer as `ConnectInfo<SocketAddr>`, as with
/// `into_make_service_with_connect_info`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    client_timeout: Duration,
    stop: impl Future<Output = ()>,
) -> Drain {
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let mut http = Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout);
    // The CONNECT protocol carries WebSockets over HTTP/2, as axum::serve enables it.
    http.http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
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
        let service = match make_service.call(peer).await {
            Ok(service) => service,
            Err(never) => match never {},
        };
        let service = TowerToHyperService::new(
            service.map_request(|request: Request<Incoming>| request.map(Body::new)),
        );
        let connection = http
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts, resets and malformed requests: the client's business, not an alarm.
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    Drain { graceful }
}

/// Connections still open when accepting stopped.
pub struct Drain {
    graceful: GracefulShutdown,
}

impl Drain {
    /// Asks every open connection to finish what it is doing and close; resolves when all have.
    pub async fn finish(self) {
        self.graceful.shutdown().await;
    }

    /// How many connections are still open.
    pub fn open(&self) -> usize {
        self.graceful.count()
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
