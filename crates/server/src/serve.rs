//! `serve`: run the gateway until SIGTERM/SIGINT, then drain and flush the audit log.

use anyhow::Context;
use gateway::{Config, Gateway, http_server};

/// Runs the gateway with configuration from the environment.
pub async fn run() -> anyhow::Result<()> {
    let config = Config::from_env().context("configuration")?;
    crate::limits::raise_open_files(&config);
    let gateway = Gateway::start(config).await?;
    let listener = http_server::listen(gateway.state.config.listen_addr)
        .with_context(|| format!("cannot listen on {}", gateway.state.config.listen_addr))?;
    let metrics = listen_for_metrics(gateway.state.config.metrics_listen_addr)?;
    serve_until_signal(gateway, listener, metrics, shutdown_signal()).await
}

/// The metrics listener, when `addr` says where (`METRICS_LISTEN_ADDR`).
pub fn listen_for_metrics(
    addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    addr.map(|addr| {
        http_server::listen(addr)
            .with_context(|| format!("cannot listen on {addr} (METRICS_LISTEN_ADDR)"))
    })
    .transpose()
}

/// Most scrapes served at once on the metrics listener.
const METRICS_MAX_CONNECTIONS: usize = 64;

/// Serves the metrics endpoint on `listener` until `stop` is cancelled; the task ends once its
/// connections have (a scrape holds the gateway's state, which must be let go at shutdown).
fn serve_metrics(
    gateway: &Gateway,
    listener: tokio::net::TcpListener,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let addr = listener.local_addr()?;
    tracing::info!(metrics_addr = %addr, "metrics listening on http://{addr}/metrics");
    let router = gateway::metrics::endpoint::router(gateway.state.clone());
    let client_timeout = gateway.state.config.client_timeout;
    Ok(tokio::spawn(async move {
        let drain = http_server::serve(
            listener,
            router,
            client_timeout,
            METRICS_MAX_CONNECTIONS,
            Default::default(),
            stop.cancelled_owned(),
        )
        .await;
        drain.cut();
        drain.finish().await;
    }))
}

/// How long WebSocket sessions get to close and record their outcomes once the shutdown
/// timeout has passed.
const SESSION_GOODBYE: std::time::Duration = std::time::Duration::from_secs(6);

/// Serves `gateway` on `listener` until `signal` resolves; then stops accepting, gives
/// in-flight requests `SHUTDOWN_TIMEOUT_SECS` to finish, and flushes the audit log.
pub async fn serve_until_signal(
    gateway: Gateway,
    listener: tokio::net::TcpListener,
    metrics: Option<tokio::net::TcpListener>,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    let metrics = metrics
        .map(|listener| serve_metrics(&gateway, listener, metrics_stop.clone()))
        .transpose()?;
    let config = &gateway.state.config;
    let (timeout, client_timeout) = (config.shutdown_timeout, config.client_timeout);
    let max_connections = config.max_connections;
    // The database named, so that a misspelt DATABASE_URL (the default SQLite file then) shows.
    tracing::info!(
        %addr,
        rack = %config.rack_host,
        database = %gateway::config::shown(&config.database_url),
        "rack-gateway listening"
    );
    // A writer that stops while serving (a bug: it panicked) leaves every request refused
    // for good; ending the process lets its supervisor start a working one.
    let writer_stopped = gateway.state.audit.stopped();
    let signal = async move {
        tokio::select! {
            () = signal => {}
            () = writer_stopped => {
                tracing::error!(
                    "the audit writer stopped unexpectedly (a bug: please report it with this \
                     log); every request is refused, so the gateway is shutting down for its \
                     supervisor to restart it"
                );
            }
        }
    };
    let drain = http_server::serve(
        listener,
        gateway.router(),
        client_timeout,
        max_connections,
        gateway.state.metrics.connections_open.clone(),
        signal,
    )
    .await;
    let sessions = gateway.state.sessions.clone();
    tracing::info!(
        connections = drain.open(),
        websocket_sessions = sessions.open(),
        "shutting down: no new connections, finishing in-flight requests"
    );
    let in_flight = async {
        drain.finish().await;
        sessions.finished().await;
    };
    if tokio::time::timeout(timeout, in_flight).await.is_err() {
        tracing::warn!(
            ?timeout,
            connections = drain.open(),
            websocket_sessions = sessions.open(),
            "in-flight requests did not finish in time; closing them"
        );
        // Requests still running are dropped with their connections, and WebSocket sessions
        // told to close (1001); each records its outcome as cut off by the gateway.
        sessions.end_all();
        drain.cut();
        let ended = async {
            drain.finish().await;
            sessions.finished().await;
        };
        let _ = tokio::time::timeout(SESSION_GOODBYE, ended).await;
    }
    // Scrapes go on while requests finish; they end before the state is let go.
    metrics_stop.cancel();
    if let Some(mut task) = metrics
        && tokio::time::timeout(std::time::Duration::from_secs(1), &mut task)
            .await
            .is_err()
    {
        task.abort();
        let _ = task.await;
    }
    // Before `shutdown` lets go of the log, its writer ends only by a bug.
    let writer_died = gateway.state.audit.has_stopped();
    gateway.shutdown().await;
    if writer_died {
        anyhow::bail!("stopped because the audit writer stopped unexpectedly");
    }
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
