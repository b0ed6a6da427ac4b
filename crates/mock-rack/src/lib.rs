//! A fake Convox rack: the rack's HTTP and WebSocket API, in memory, close
//! enough that the stock `convox` CLI works against it unchanged. Used by the
//! one-command dev stack and by the gateway's integration tests.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mock_rack::{MockRackConfig, serve};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! println!("RACK_URL=http://convox:secret@{}", listener.local_addr()?);
//! let config = MockRackConfig { token: "secret".into(), seed: 42 };
//! serve(listener, config, std::future::pending()).await
//! # }
//! ```
//!
//! # What it is like
//! * **Auth**: HTTP Basic, password = [`MockRackConfig::token`] (the user name
//!   is not checked, as on the rack, except that `jwt` is refused). Failures
//!   are `401` `invalid authentication` with `WWW-Authenticate: Basic
//!   realm="convox"`; on WebSocket routes (upgraded before the check, as on the
//!   rack) the failure arrives as a text message `ERROR: invalid authentication\n`.
//! * **Errors**: `text/plain` `"<message>\n"`, or `{"error": "<message>"}` as
//!   `application/json` when `Accept` asks for JSON. Unknown routes are 404
//!   (without an auth check, as on the rack); bad integers in forms or headers
//!   are 400 with Go's `strconv.Atoi` message.
//! * **Seed**: apps `web`, `api` and `worker` (see [`SEEDED_APPS`]), each with
//!   services, running processes, two builds, three releases (the newest
//!   promoted) whose env holds secret-looking values (`DATABASE_URL`,
//!   `SECRET_KEY_BASE`, `STRIPE_API_KEY`, ...) next to plain ones
//!   (`RAILS_ENV=production`), resources, three instances and log history.
//!   Ids (`RXXXXXXXXXX`, `BXXXXXXXXXX`, pod names) derive from
//!   [`MockRackConfig::seed`].
//! * **Sockets** (`/apps/{app}/logs`, `/apps/{app}/services/{service}/logs`,
//!   `/apps/{app}/processes/{pid}/logs`, `/apps/{app}/builds/{id}/logs`,
//!   `/system/logs`, `/apps/{app}/processes/{pid}/exec`): text messages carry
//!   data both ways; an empty binary message ends a stream (the server's
//!   output, or the client's stdin); errors are a text message
//!   `ERROR: <message>\n`. Log options are the headers `Follow` (default
//!   true), `Since` (Go duration, default `2m`), `Filter`, `Tail`, `Prefix`
//!   (lower-case query parameters work too); a follower gets new lines and a
//!   synthetic `heartbeat=<n>` line every 200 ms. Exec reads the `Command`,
//!   `Tty`, `Height`, `Width`, `Entrypoint` and `Disable-Stdin` headers, runs
//!   a small shell (`echo`, `exit N`, `sh -c '...'`, interactive `sh`/`bash`
//!   echoing each input line, `cat`, `sleep`, `env`, ...) and ends with the
//!   text message [`EXIT_MARKER`]`<code>\n`.
//! * **Objects**: uploads are streamed and only their size and SHA-256 kept;
//!   a fetch returns that many zero bytes with the digest in `X-Object-Sha256`.
//! * **Scaling** keeps one process per count in memory, so a service takes at
//!   most 1000 (`400 invalid count: … at most 1000 processes per service`
//!   beyond: a huge count once took the whole `dev` stack down with the
//!   machine's memory).
//! * **Builds** run in the background (~1.5 s): output line by line, then a
//!   release, then `complete` (`failed` when the `object://` source is missing).
//! * **Benchmarks**: [`serve_with`] takes [`BenchKnobs`]; with
//!   `log_firehose_bytes` every log socket streams that many bytes of log lines
//!   as fast as it can, then ends (used by `scripts/bench`).

mod auth;
mod env;
mod error;
mod http;
mod ids;
mod model;
mod params;
mod seed;
mod state;
mod tgz;
mod time;
mod ws;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{delete, get, post, put};
use tokio::sync::watch;

use crate::http::{apps, builds, objects, processes, releases, services, system};
use crate::state::Shared;
use crate::ws::{exec, logs};

/// The text message that ends an exec session: this prefix, the exit code,
/// and a newline (`F1E49A85-0AD7-4AEF-A618-C249C6E6568D:3\n`).
pub const EXIT_MARKER: &str = ws::EXIT_MARKER;

/// Names of the seeded apps.
pub const SEEDED_APPS: [&str; 3] = ["api", "web", "worker"];

/// Configuration of a fake rack.
#[derive(Clone)]
pub struct MockRackConfig {
    /// The rack API token: the HTTP Basic password clients must send.
    /// Empty disables authentication.
    pub token: String,
    /// Seed for every generated id (same seed and requests, same ids).
    pub seed: u64,
}

impl fmt::Debug for MockRackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockRackConfig")
            .field("token", &"<redacted>")
            .field("seed", &self.seed)
            .finish()
    }
}

/// Knobs for benchmarks, all off by default (see `rack-gateway-bench`).
#[derive(Debug, Clone, Default)]
pub struct BenchKnobs {
    /// When non-zero, every log socket ignores its options and sends this many bytes of log
    /// lines (one text message per line, as the rack does) as fast as it can, then ends the
    /// stream with an empty binary message and a close frame.
    pub log_firehose_bytes: u64,
}

/// The whole fake rack as a router (state is created, seeded, and owned by it).
pub fn router(config: MockRackConfig) -> Router {
    build(Arc::new(shared(config, BenchKnobs::default())))
}

/// Serves the fake rack on `listener` until `shutdown` completes. Following
/// log streams and exec sessions are ended when it does.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: MockRackConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, config, BenchKnobs::default(), shutdown).await
}

/// [`serve`] with benchmark knobs.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    config: MockRackConfig,
    knobs: BenchKnobs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Arc::new(shared(config, knobs));
    let app = build(shared.clone());
    let signal = async move {
        shutdown.await;
        let _ = shared.shutdown_tx.send(true);
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await
}

fn shared(config: MockRackConfig, knobs: BenchKnobs) -> Shared {
    let (shutdown_tx, shutdown) = watch::channel(false);
    Shared {
        rack: Mutex::new(seed::seeded(config.seed)),
        token: config.token,
        log_firehose_bytes: knobs.log_firehose_bytes,
        shutdown,
        shutdown_tx,
    }
}

fn build(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/auth", get(system::auth))
        .route("/apps", get(apps::list).post(apps::create))
        .route(
            "/apps/{app}",
            get(apps::get).put(apps::update).delete(apps::delete),
        )
        .route("/apps/{app}/balancers", get(system::balancers))
        .route("/apps/{app}/builds", get(builds::list).post(builds::create))
        .route(
            "/apps/{app}/builds/{id}",
            get(builds::get).put(builds::update),
        )
        .route("/apps/{app}/builds/{id}/logs", get(logs::build_logs))
        .route("/apps/{app}/logs", get(logs::app_logs))
        .route("/apps/{app}/objects", get(objects::list))
        .route("/apps/{app}/objects/", post(objects::store_generated))
        .route(
            "/apps/{app}/objects/{*key}",
            get(objects::fetch)
                .head(objects::exists)
                .post(objects::store)
                .delete(objects::delete),
        )
        .route("/apps/{app}/processes", get(processes::list))
        .route(
            "/apps/{app}/processes/{pid}",
            get(processes::get).delete(processes::stop),
        )
        .route("/apps/{app}/processes/{pid}/exec", get(exec::exec))
        .route("/apps/{app}/processes/{pid}/logs", get(logs::process_logs))
        .route(
            "/apps/{app}/releases",
            get(releases::list).post(releases::create),
        )
        .route("/apps/{app}/releases/{id}", get(releases::get))
        .route("/apps/{app}/releases/{id}/promote", post(releases::promote))
        .route("/apps/{app}/resources", get(system::app_resources))
        .route("/apps/{app}/resources/{name}", get(system::app_resource))
        .route("/apps/{app}/services", get(services::list))
        .route("/apps/{app}/services/{service}", put(services::update))
        .route(
            "/apps/{app}/services/{service}/logs",
            get(logs::service_logs),
        )
        .route(
            "/apps/{app}/services/{service}/processes",
            post(processes::run),
        )
        .route(
            "/apps/{app}/services/{service}/restart",
            post(services::restart),
        )
        .route("/certificates", get(system::empty_list))
        .route("/instances", get(system::instances))
        .route("/instances/{id}", delete(system::terminate_instance))
        .route("/registries", get(system::empty_list))
        .route("/resources", get(system::system_resources))
        .route("/resources/{name}", get(system::system_resource))
        .route("/system", get(system::get).put(system::update))
        .route("/system/capacity", get(system::capacity))
        .route("/system/logs", get(logs::system_logs))
        .route("/system/processes", get(system::processes))
        .route("/system/releases", get(system::releases))
        .route_layer(from_fn_with_state(shared.clone(), auth::require_token))
        .route("/check", get(system::check))
        .fallback(error::not_found)
        .layer(from_fn(error::negotiate_errors))
        .with_state(shared)
}
