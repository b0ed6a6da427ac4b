//! `serve`: run the gateway until SIGTERM/SIGINT, then drain and flush the audit log.

use std::net::SocketAddr;

use anyhow::Context;
use gateway::{Config, Gateway};
use tokio_util::sync::CancellationToken;

/// Runs the gateway with configuration from the environment.
pub async fn run() -> anyhow::Result<()> {
    let config = Config::from_env().context("configuration")?;
    let gateway = Gateway::start(config).await?;
    let listener = tokio::net::TcpListener::bind(gateway.state.config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", gateway.state.config.listen_addr))?;
    serve_until_signal(gateway, listener, shutdown_signal()).await
}

/// Serves `gateway` on `listener` until `signal` resolves; then stops accepting, gives
/// in-flight requests `SHUTDOWN_TIMEOUT_SECS` to finish, and flushes the audit log.
pub async fn serve_until_signal(
    gateway: Gateway,
    listener: tokio::net::TcpListener,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let timeout = gateway.state.config.shutdown_timeout;
    tracing::info!(%addr, rack = %gateway.state.config.rack_host, "rack-gateway listening");
    let app = gateway
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let stopping = CancellationToken::new();
    let stop = stopping.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        signal.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        stop.cancel();
    });
    tokio::select! {
        result = server => result.context("server failed")?,
        _ = async {
            stopping.cancelled().await;
            tokio::time::sleep(timeout).await;
        } => tracing::warn!(?timeout, "in-flight requests did not finish in time; closing them"),
    }
    gateway.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
