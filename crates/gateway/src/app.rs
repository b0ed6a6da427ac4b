//! Building the gateway: state, router, and the start-up sequence.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts};
use axum::routing::{any, delete, get, post, put};
use tokio::task::JoinHandle;

use crate::audit::{AuditLog, KeySource, ResolveKeyError, resolve_key};
use crate::config::{Config, NotifyConfig, SqliteSync};
use crate::oidc::{Oidc, OidcError};
use crate::proxy::{PROXY_PREFIX, Sessions, Upstream, UpstreamError};
use crate::store::{Backend, Store, StoreError};
use crate::{api, proxy, web};
use gateway_core::failure_budget::FailureBudget;

/// Everything a request handler needs. Handlers and middleware take it by value, several
/// times per request, so it is one shared allocation: a clone is one reference count.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Shares `parts` between every request.
    pub fn new(parts: Shared) -> AppState {
        AppState(Arc::new(parts))
    }

    /// Where browsers reach the gateway: its public URL, or else the sign-in callback
    /// registered with the identity provider (`None` when neither is configured).
    pub fn browser_url(&self) -> Option<&url::Url> {
        let redirect = self.oidc.as_ref().map(|o| &o.config().redirect_url);
        self.config.public_url.as_ref().or(redirect)
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug)]
pub struct Shared {
    /// Configuration.
    pub config: Arc<Config>,
    /// The store.
    pub store: Store,
    /// The audit writer.
    pub audit: AuditLog,
    /// The rack.
    pub upstream: Upstream,
    /// OpenID Connect sign-in, when configured.
    pub oidc: Option<Arc<Oidc>>,
    /// WebSocket sessions in flight.
    pub sessions: Sessions,
    /// How many refusals of unauthenticated callers are audited one by one.
    pub refusals: Arc<FailureBudget>,
    /// The shared readiness check.
    pub readiness: Arc<crate::api::Readiness>,
    /// Credentials remembered between proxied requests (see
    /// [`crate::identity::CredentialMemory`]).
    pub credentials: crate::identity::CredentialMemory,
    /// Prometheus metrics (served by [`crate::metrics::endpoint`]).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Security keys (WebAuthn), when browsers reach the gateway by a name.
    pub keys: Option<Arc<crate::mfa::keys::Keys>>,
    /// YubiKey OTPs' validation service (`YUBICO_*`), when configured.
    pub yubico: Option<Arc<crate::mfa::yubico::Yubico>>,
    /// Slack's Web API as the gateway's Slack app, when approving from Slack is on.
    pub slack: Option<Arc<crate::slack::SlackApi>>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened (said as the admin commands say it).
    #[error("cannot open the database (DATABASE_URL): {0}")]
    Connect(StoreError),
    /// The database, once open.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The audit key.
    #[error("audit key: {0}")]
    AuditKey(#[from] ResolveKeyError),
    /// The rack connection.
    #[error("rack connection: {0}")]
    Upstream(#[from] UpstreamError),
    /// The identity provider client.
    #[error("sign-in: {0}")]
    Oidc(#[from] OidcError),
    /// The notification channels (Slack, SMTP).
    #[error("notifications: {0}")]
    Notify(String),
    /// The audit anchor bucket.
    #[error("audit anchors: {0}")]
    Anchors(#[from] crate::audit::anchor::AnchorError),
    /// The YubiKey validation service's client.
    #[error("YubiKeys: {0}")]
    Yubico(#[from] crate::mfa::yubico::YubicoError),
}

/// A started gateway: its state and the audit writer task to await on shutdown.
#[derive(Debug)]
pub struct Gateway {
    /// Shared state.
    pub state: AppState,
    /// The audit writer; ends after [`Gateway::shutdown`].
    pub audit_task: JoinHandle<()>,
    /// SQLite's background WAL checkpointer.
    checkpointer: Option<JoinHandle<()>>,
    /// Writes the summaries of unaudited refusals.
    refusal_summaries: JoinHandle<()>,
    /// Anchors the audit chain's head in S3, when configured.
    anchoring: Option<crate::audit::anchor::Anchoring>,
    /// Sends Slack and e-mail notifications, when configured.
    notifier: Option<crate::notify::Notifier>,
}

/// How long a shutdown waits for the last audit lines to reach stdout.
const STDOUT_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How far this machine's clock may be from the database's before start-up warns.
const CLOCK_OFFSET_WARNING_MS: i64 = 5_000;

impl Gateway {
    /// Connects the store, applies migrations, sets up the audit chain and the rack client.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        Gateway::start_notifying(config, true).await
    }

    /// [`Gateway::start`], with no notifications sent until [`Gateway::notify_from_now`]
    /// (for `dev`, whose own set-up is not news); approving from Slack is on from the start
    /// all the same, when configured.
    pub async fn start_quietly(config: Config) -> Result<Gateway, StartError> {
        Gateway::start_notifying(config, false).await
    }

    async fn start_notifying(config: Config, notify: bool) -> Result<Gateway, StartError> {
        let store = Store::connect_synced(&config.database_url, config.sqlite_sync)
            .await
            .map_err(StartError::Connect)?;
        store.migrate().await?;
        if store.backend() == Backend::Sqlite {
            tracing::info!(
                synchronous = config.sqlite_sync.pragma(),
                "SQLite store: {}",
                match config.sqlite_sync {
                    SqliteSync::Normal => {
                        "a commit survives the gateway's crash, not the machine's \
                         (SQLITE_SYNCHRONOUS=full waits for an fsync on every commit)"
                    }
                    SqliteSync::Full => "every commit waits for an fsync of the write-ahead log",
                }
            );
        }
        for warning in config.start_up_warnings() {
            tracing::warn!("{warning}");
        }
        if let Some(warning) =
            gateway_core::config::unverified_database(&config.database_url, |name| {
                std::env::var(name).ok()
            })
        {
            tracing::warn!("{warning}");
        }
        match store.clock_offset_ms().await {
            Ok(Some(offset)) if offset.abs() > CLOCK_OFFSET_WARNING_MS => tracing::warn!(
                offset_ms = offset,
                "this machine's clock is {} s {} the database's: sessions and tokens expire, \
                 and sessions idle out, by each instance's own clock, and audit times come out \
                 of order; keep the clocks in sync (NTP)",
                offset.abs() / 1000,
                if offset > 0 { "ahead of" } else { "behind" }
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not compare the clock with the database's"),
        }
        let (key, source) = resolve_key(
            config.audit_hmac_key.as_ref(),
            config.audit_hmac_key_next.as_ref(),
            &store,
        )
        .await?;
        // The chain as it stands now: events removed from before this point while the gateway
        // runs are found by its writer, not only those it writes itself.
        match store.chain_head().await {
            Ok(head) => store.note_audit_head(&head),
            Err(e) => tracing::warn!(error = %e, "could not read the audit chain's head"),
        }
        if source == KeySource::Generated {
            tracing::warn!(
                "AUDIT_HMAC_KEY is not set: the audit chain uses a key generated and kept in the \
                 database; set AUDIT_HMAC_KEY so that a database writer cannot rebuild the chain"
            );
        }
        if let Some(oidc) = &config.oidc {
            if oidc.allowed_domains.is_empty() {
                tracing::warn!(
                    "OIDC_ALLOWED_DOMAINS is not set: an account from any domain the identity \
                     provider vouches for may sign in (as a user an admin added, or as the \
                     first admin of a new gateway); name your domains to restrict it"
                );
            }
            if oidc.admin_users.is_empty() && !store.users_exist().await.unwrap_or(true) {
                tracing::warn!(
                    "ADMIN_USERS is not set and this gateway has no users: the first account \
                     to sign in becomes its admin; set ADMIN_USERS to say who"
                );
            }
        }
        let upstream = Upstream::new(&config)?;
        let oidc = config
            .oidc
            .clone()
            .map(Oidc::new)
            .transpose()?
            .map(Arc::new);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let (audit, audit_task) =
            AuditLog::start(store.clone(), key, config.audit_stdout, metrics.clone());
        let audit = audit.masking(crate::proxy::audit_scrubber(config.rack_token.expose()));
        let checkpointer = store.spawn_checkpointer();
        let refusals = Arc::new(FailureBudget::standard());
        let refusal_summaries = crate::audit::spawn_summaries(refusals.clone(), audit.clone());
        let sessions = Sessions::new(config.websockets);
        let anchoring = match &config.audit_anchors {
            Some(anchors) => {
                let bucket = crate::audit::anchor::AnchorBucket::new(anchors)?;
                Some(crate::audit::anchor::spawn_anchoring(
                    store.clone(),
                    bucket,
                    anchors.interval,
                    metrics.clone(),
                ))
            }
            None => None,
        };
        let notifier = if notify {
            crate::notify::spawn(
                store.clone(),
                &config.notify,
                config.public_url.clone(),
                metrics.clone(),
            )
            .map_err(StartError::Notify)?
        } else {
            None
        };
        let keys = security_keys(&config, oidc.as_deref());
        let yubico = match &config.yubico {
            Some(c) => Some(Arc::new(crate::mfa::yubico::Yubico::new(c)?)),
            None => None,
        };
        let slack = match config.notify.slack.as_ref().and_then(|s| s.app.clone()) {
            Some(app) => Some(Arc::new(
                crate::slack::SlackApi::new(app).map_err(StartError::Notify)?,
            )),
            None => None,
        };
        Ok(Gateway {
            state: AppState::new(Shared {
                config: Arc::new(config),
                store,
                audit,
                upstream,
                oidc,
                sessions,
                refusals,
                readiness: Arc::default(),
                credentials: crate::identity::CredentialMemory::new(true),
                metrics,
                keys,
                yubico,
                slack,
            }),
            audit_task,
            checkpointer,
            refusal_summaries,
            anchoring,
            notifier,
        })
    }

    /// Starts notifying on `config`'s channels from the audit chain's head as it is now,
    /// unless a notifier already runs: for a caller whose own set-up (`dev`'s test users and
    /// tokens) is not news. [`Gateway::start`] already notifies on the configuration's
    /// channels, from where the cursor stands.
    pub async fn notify_from_now(&mut self, config: &NotifyConfig) -> Result<(), StartError> {
        if self.notifier.is_some() || config.is_off() {
            return Ok(());
        }
        let store = &self.state.store;
        let head = store.chain_head().await.map_err(StartError::Connect)?;
        store
            .skip_notifications_through(head.seq)
            .await
            .map_err(StartError::Connect)?;
        self.notifier = crate::notify::spawn(
            store.clone(),
            config,
            self.state.config.public_url.clone(),
            self.state.metrics.clone(),
        )
        .map_err(StartError::Notify)?;
        Ok(())
    }

    /// The router for this gateway.
    pub fn router(&self) -> Router {
        build_app(self.state.clone())
    }

    /// Writes out queued audit events and closes the store.
    pub async fn shutdown(self) {
        if let Some(notifier) = self.notifier {
            notifier.stop();
        }
        self.refusal_summaries.abort();
        crate::audit::record_summaries(&self.state.refusals, &self.state.audit);
        // Bounded: the flush also waits for the lines to reach stdout, and a log shipper that
        // stopped reading would hold the shutdown (and its anchor) for ever. (The commits do
        // not wait for stdout.)
        let flushed = tokio::time::timeout(STDOUT_FLUSH_LIMIT, self.state.audit.flush())
            .await
            .is_ok();
        // Not flushed in time, with committed events stdout has not carried: stdout is stuck
        // (otherwise the database is what is slow).
        let stdout_stuck = !flushed
            && self
                .state
                .store
                .audit_written()
                .is_some_and(|written| self.state.audit.stdout_behind(written.seq));
        // Stuck, or closed by its reader: the next start says what it did not carry.
        let stdout_lost = stdout_stuck || self.state.audit.stdout_failed();
        if stdout_stuck {
            tracing::warn!(
                "audit stdout is not being read: its last lines are not printed (the database \
                 has every event); stopping anyway"
            );
        } else if !flushed {
            tracing::warn!(
                "the audit log's last commits are taking longer than {} s (a slow database); \
                 waiting up to 5 s more",
                STDOUT_FLUSH_LIMIT.as_secs()
            );
        }
        // What stdout never carried, for the next start to say (see `foreign`).
        if stdout_lost && let Some(written) = self.state.store.audit_written() {
            let unprinted = crate::audit::Unprinted {
                from: self.state.audit.printed_through().map(|seq| seq + 1),
                to: written.seq,
            };
            if let Err(e) = self
                .state
                .store
                .put_setting(
                    crate::audit::STDOUT_UNPRINTED_SETTING,
                    &unprinted.to_setting(),
                )
                .await
            {
                tracing::warn!(error = %e, "could not note which audit events stdout never carried");
            }
        }
        // Where the next start's stdout takes up admin commands' events (see `foreign`).
        if let Some(seq) = self.state.audit.printed_through()
            && let Err(e) = self
                .state
                .store
                .put_setting(crate::audit::STDOUT_THROUGH_SETTING, &seq.to_string())
                .await
        {
            tracing::warn!(error = %e, "could not note where audit stdout stopped");
        }
        let store = self.state.store.clone();
        drop(self.state);
        // The writer ends once every handle is gone; don't wait forever on stragglers. With
        // stdout stuck, its last wait (for the printer) would only add the same 5 s again.
        let writer_limit = if stdout_stuck {
            std::time::Duration::from_millis(500)
        } else {
            std::time::Duration::from_secs(5)
        };
        let _ = tokio::time::timeout(writer_limit, self.audit_task).await;
        // After the last events are written: their anchor is the chain's final head.
        if let Some(anchoring) = self.anchoring {
            anchoring.finish().await;
        }
        if let Some(task) = self.checkpointer {
            task.abort();
        }
        // A last full checkpoint, so the database file is complete on its own.
        if store.backend() == crate::store::Backend::Sqlite {
            let _ = store.execute_raw("PRAGMA wal_checkpoint(TRUNCATE)").await;
        }
        store.close().await;
    }
}

/// The gateway's router.
pub fn build_app(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(api::health))
        .route("/api/v1/health/ready", get(api::ready))
        .route("/api/v1/info", get(api::info))
        .route("/api/v1/auth/web/login", get(api::auth::web_login))
        .route("/api/v1/auth/web/logout", post(api::auth::web_logout))
        .route(crate::config::OIDC_CALLBACK_PATH, get(api::auth::callback))
        .route("/api/v1/auth/logout", post(api::auth::logout))
        .route("/api/v1/auth/cli/start", post(api::auth::cli_start))
        .route("/api/v1/auth/cli/browser", get(api::auth::cli_browser))
        .route(
            "/api/v1/auth/cli/browser/confirm",
            get(api::auth::cli_browser_confirm),
        )
        .route("/api/v1/auth/cli/poll", post(api::auth::cli_poll))
        .route(
            api::auth::MFA_PATH,
            get(api::auth::mfa_page).post(api::auth::mfa_submit),
        )
        .route("/api/v1/auth/mfa/verify", post(api::mfa::verify))
        .route("/api/v1/auth/mfa/key/start", post(api::mfa::key_start))
        .route("/api/v1/auth/mfa/key/poll", post(api::mfa::key_poll))
        .route("/api/v1/sessions", get(api::sessions::list))
        .route(
            "/api/v1/sessions/revoke-all",
            post(api::sessions::revoke_all),
        )
        .route("/api/v1/sessions/{id}", delete(api::sessions::revoke))
        .route("/api/v1/users", get(api::users::list).post(api::users::add))
        .route("/api/v1/audit/events", get(api::audit::events))
        .route("/api/v1/settings", get(api::settings))
        .route(
            "/api/v1/tokens",
            get(api::tokens::list).post(api::tokens::create),
        )
        .route("/api/v1/tokens/{token}", delete(api::tokens::revoke))
        .route(
            "/api/v1/roles",
            get(api::roles::list).post(api::roles::create),
        )
        .route(
            "/api/v1/roles/{name}",
            put(api::roles::update).delete(api::roles::delete),
        )
        .route("/api/v1/app-rules", get(api::app_rules::list))
        .route(
            "/api/v1/app-rules/{app}",
            get(api::app_rules::show)
                .put(api::app_rules::set)
                .delete(api::app_rules::clear),
        )
        .route("/api/v1/users/{email}/role", put(api::users::set_role))
        .route("/api/v1/users/{email}/lock", post(api::users::lock))
        .route("/api/v1/users/{email}/unlock", post(api::users::unlock))
        .route("/api/v1/users/{email}/mfa", delete(api::users::reset_mfa))
        .route(
            "/api/v1/users/{email}/trusted-browsers",
            delete(api::users::forget_browsers),
        )
        .route(
            "/api/v1/deploy-approvals",
            get(api::approvals::list).post(api::approvals::request),
        )
        .route("/api/v1/deploy-approvals/{id}", get(api::approvals::show))
        .route(
            crate::slack::INTERACTIONS_PATH,
            post(crate::slack::interactions),
        )
        .route(
            "/api/v1/deploy-approvals/{id}/approve",
            post(api::approvals::approve),
        )
        .route(
            "/api/v1/deploy-approvals/{id}/reject",
            post(api::approvals::reject),
        )
        .route("/", get(web::home))
        .route("/login", get(web::login_page))
        .route("/account", get(web::account))
        .route("/audit", get(web::audit::page))
        .route("/settings", get(web::settings::page))
        .route("/rack", get(web::rack::page))
        .route("/apps/{app}", get(web::rack::app))
        .route("/tokens", get(web::tokens::page))
        .route("/tokens/{id}/revoke", post(web::tokens::revoke))
        .route("/tokens/create", post(web::tokens::create))
        .route("/deploy-approvals", get(web::approvals::page))
        .route(
            "/deploy-approvals/{id}/approve",
            post(web::approvals::approve),
        )
        .route(
            "/deploy-approvals/{id}/reject",
            post(web::approvals::reject),
        )
        .route("/app-rules", get(web::app_rules::page))
        .route("/app-rules/set", post(web::app_rules::set))
        .route("/app-rules/clear", post(web::app_rules::clear))
        .route("/roles", get(web::roles::page))
        .route("/roles/create", post(web::roles::create))
        .route("/roles/update", post(web::roles::update))
        .route("/roles/delete", post(web::roles::delete))
        .route("/users", get(web::users::page))
        .route("/users/role", post(web::users::set_role))
        .route("/users/lock", post(web::users::lock))
        .route("/users/unlock", post(web::users::unlock))
        .route("/users/add", post(web::users::add))
        .route("/users/reset-mfa", post(web::users::reset_mfa))
        .route("/users/forget-browsers", post(web::users::forget_browsers))
        .route("/account/mfa", get(web::mfa::page))
        .route("/account/mfa/setup", post(web::mfa::setup))
        .route("/account/mfa/confirm", post(web::mfa::confirm))
        .route("/account/mfa/remove", post(web::mfa::remove))
        .route("/account/mfa/backup-codes", post(web::mfa::backup_codes))
        .route("/account/mfa/verify", post(web::mfa::verify))
        .route(
            "/account/mfa/key",
            get(web::key_confirm::page).post(web::key_confirm::confirm),
        )
        .route("/account/mfa/keys/new", post(web::keys::begin))
        .route("/account/mfa/keys/add", post(web::keys::add))
        .route("/account/mfa/keys/remove", post(web::keys::remove))
        .route("/account/mfa/yubikeys/add", post(web::keys::add_yubikey))
        .route(
            "/account/mfa/yubikeys/remove",
            post(web::keys::remove_yubikey),
        )
        .route(
            "/account/mfa/devices/forget",
            post(web::mfa::forget_devices),
        )
        .route("/account/sessions/revoke-all", post(web::revoke_all))
        .route("/account/sessions/{id}/revoke", post(web::revoke_session))
        .route("/static/app.css", get(web::stylesheet))
        .route("/static/keys.js", get(web::keys_script))
        // Set last, so a route that says otherwise (the stylesheet) keeps its own.
        .layer(axum::middleware::map_response(no_store))
        .route(PROXY_PREFIX, any(proxy::handle))
        .route(&format!("{PROXY_PREFIX}/"), any(proxy::handle))
        .route(&format!("{PROXY_PREFIX}/{{*path}}"), any(proxy::handle))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn(crate::request_id::assign))
        .layer(crate::metrics::MeasureLayer::new(state.metrics.clone()))
        // Proxied bodies are streamed, never buffered; the limit only applies to extractors
        // that buffer (none on the proxy path).
        .layer(DefaultBodyLimit::max(api::BODY_LIMIT))
        .with_state(state)
}

/// The gateway's own answers (sessions, users, sign-in hand-outs, pages) are for one caller at
/// one moment: no browser or proxy cache may keep them. Proxied answers keep the rack's headers.
async fn no_store(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers
        .entry(http::header::CACHE_CONTROL)
        .or_insert(http::HeaderValue::from_static("no-store"));
    // Answers may quote the caller's input: read as what they say they are, never sniffed.
    headers
        .entry(http::header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(http::HeaderValue::from_static("nosniff"));
    response
}

/// Where a request comes from: the TCP peer, or, when the peer is a trusted proxy
/// (`TRUSTED_PROXIES`), the client that proxy names in `X-Forwarded-For`
/// ([`gateway_core::client_addr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The client's address, as audited.
    pub ip: IpAddr,
}

impl FromRequestParts<AppState> for Peer {
    type Rejection = crate::error::ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &AppState,
    ) -> Result<Peer, Self::Rejection> {
        // The listener always records the peer (`into_make_service_with_connect_info`).
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Err(crate::error::ApiError::Internal);
        };
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.as_bytes());
        Ok(Peer {
            ip: state.config.trusted_proxies.client(peer.ip(), forwarded),
        })
    }
}

/// The relying party for security keys: browsers' address (`PUBLIC_URL`, else the sign-in
/// callback's), when it is a name; WebAuthn takes no IP address.
fn security_keys(config: &Config, oidc: Option<&Oidc>) -> Option<Arc<crate::mfa::keys::Keys>> {
    let url = config
        .public_url
        .as_ref()
        .or(oidc.map(|o| &o.config().redirect_url))?;
    let keys = crate::mfa::keys::Keys::for_url(url);
    if keys.is_none() {
        tracing::info!(
            url = %url,
            "security keys are off: browsers reach the gateway by an IP address, which WebAuthn \
             does not take (set PUBLIC_URL to its name)"
        );
    }
    keys.map(Arc::new)
}
