//! `dev`: the whole product on one machine with no set-up — the fake Convox rack, the gateway
//! in front of it, SQLite under `./.rack-gateway/`, and one API token per role.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use gateway::Gateway;
use gateway::config::{Config, OIDC_CALLBACK_PATH, OidcConfig, RackTls, Secret, SessionConfig};
use gateway::identity::manage::{self, Actor, TokenRequest};
use gateway::store::Store;
use rand::RngCore;
use tokio_util::sync::CancellationToken;

/// `dev` flags.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Gateway port.
    #[arg(long, default_value_t = 8447)]
    pub port: u16,
    /// Fake rack port.
    #[arg(long, default_value_t = 5443)]
    pub rack_port: u16,
    /// Built-in OpenID Connect provider port (the dev sign-in page's test users).
    #[arg(long, default_value_t = 3345)]
    pub oidc_port: u16,
    /// Where the SQLite database lives (ignored when DATABASE_URL is set).
    #[arg(long, default_value = ".rack-gateway")]
    pub data_dir: PathBuf,
    /// Serve Prometheus metrics at http://127.0.0.1:PORT/metrics (as METRICS_LISTEN_ADDR
    /// does for `serve`); off unless given. 0 picks a free port.
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,
    /// Seed for the fake rack's deterministic ids.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

const ROLES: [&str; 5] = ["admin", "deployer", "ops", "viewer", "cicd"];

/// The settings `dev` reads from the environment; it sets every other one itself.
const DEV_SETTINGS: [&str; 24] = [
    "DATABASE_URL",
    "SLACK_WEBHOOK_URL",
    "SLACK_SIGNING_SECRET",
    "SLACK_BOT_TOKEN",
    "SLACK_API_URL",
    "SMTP_URL",
    "EMAIL_FROM",
    "EMAIL_ALERTS_TO",
    "NOTIFY_REFUSAL_BURST",
    "NOTIFY_OFF",
    "MFA_ENCRYPTION_KEY",
    "MFA_ENCRYPTION_KEY_RETIRED",
    "MFA_REQUIRED",
    "MFA_TRUSTED_DEVICE_DAYS",
    "MFA_STEP_UP_SECS",
    "YUBICO_CLIENT_ID",
    "YUBICO_SECRET_KEY",
    "YUBICO_API_URL",
    "AUDIT_HMAC_KEY",
    "AUDIT_HMAC_KEY_NEXT",
    "SQLITE_SYNCHRONOUS",
    "WORKER_THREADS",
    "LOG_LEVEL",
    "LOG_FORMAT",
];

/// Settings in `env` (name, value) that `serve` would use and `dev` ignores, sorted: someone
/// who exports `RACK_HOST` and runs `dev` expects their rack, and gets the fake one.
fn ignored_settings(env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut ignored: Vec<String> = env
        .into_iter()
        .filter(|(name, value)| {
            !value.trim().is_empty()
                && gateway::config::SETTINGS.contains(&name.as_str())
                && !DEV_SETTINGS.contains(&name.as_str())
        })
        .map(|(name, _)| name)
        .collect();
    ignored.sort();
    ignored
}

/// Runs the dev stack until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    warn_about_ignored_settings();
    // Every setting checked before anything is made (the data directory, the key file).
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let given_mfa_key = gateway::config::mfa_encryption_key(&env).context("configuration")?;
    let mfa_required = gateway::config::mfa_required(&env).context("configuration")?;
    let store_config = store_config(&args)?;
    if given_database().is_some() {
        refuse_a_database_not_devs(&store_config).await?;
    }
    let mfa_key = match given_mfa_key {
        Some(key) => key,
        None => kept_mfa_key(&args)?,
    };
    let listeners = Listeners::bind(&args).await?;
    let rack_token = random_hex();
    let client_secret = random_hex();
    let mut config = config(
        &listeners,
        store_config,
        rack_token.clone(),
        client_secret.clone(),
    )?;
    config.mfa_encryption_key = Some(mfa_key);
    config.mfa_required = mfa_required;

    let stop = CancellationToken::new();
    let rack_stop = stop.clone();
    let rack_task = tokio::spawn(mock_rack::serve(
        listeners.rack,
        mock_rack::MockRackConfig {
            token: rack_token,
            seed: args.seed,
        },
        async move { rack_stop.cancelled().await },
    ));
    let oidc_stop = stop.clone();
    let oidc_task = tokio::spawn(dev_oidc::serve(
        listeners.oidc,
        dev_oidc::DevOidcConfig {
            issuer: format!("http://{}", listeners.oidc_addr),
            client_id: DEV_CLIENT_ID.into(),
            client_secret,
            redirect_uris: config
                .oidc
                .iter()
                .map(|oidc| oidc.redirect_url.to_string())
                .collect(),
            users: dev_oidc::default_users(),
            quirks: dev_oidc::Quirks::default(),
        },
        async move { oidc_stop.cancelled().await },
    ));

    let database_url = config.database_url.clone();
    let metrics_addr = config.metrics_listen_addr;
    crate::limits::raise_open_files(&config);
    // Notifications start after the set-up below: its test users and tokens are not news.
    let notify = config.notify.clone();
    let mut gateway = Gateway::start_quietly(config).await?;
    gateway
        .state
        .store
        .put_setting(DEV_MARK, "1")
        .await
        .context("marking the database as dev's")?;
    add_test_users(&gateway).await?;
    let tokens = issue_dev_tokens(&gateway.state.store, &gateway).await?;
    // The set-up's audit lines come out on their own thread: let them all go before the
    // banner rather than one of them land above it.
    gateway.state.audit.flush().await;
    gateway.notify_from_now(&notify).await?;

    print_banner(&banner(
        listeners.gateway_addr,
        listeners.rack_addr,
        listeners.oidc_addr,
        metrics_addr,
        &database_url,
        &tokens,
    ));

    let signal = {
        let stop = stop.clone();
        async move {
            crate::serve::shutdown_signal().await;
            stop.cancel();
        }
    };
    let result =
        crate::serve::serve_until_signal(gateway, listeners.gateway, listeners.metrics, signal)
            .await;
    stop.cancel();
    let _ = rack_task.await;
    let _ = oidc_task.await;
    result
}

/// The dev provider's client id for the gateway.
const DEV_CLIENT_ID: &str = "rack-gateway-dev";

/// Names the settings exported for `serve` that `dev` does not use.
fn warn_about_ignored_settings() {
    let ignored = ignored_settings(
        std::env::vars_os()
            .filter_map(|(n, v)| Some((n.into_string().ok()?, v.into_string().ok()?))),
    );
    if !ignored.is_empty() {
        tracing::warn!(
            "dev runs its own fake rack and sign-in and ignores {}: only {} apply to it (use \
             `serve` for a real rack)",
            ignored.join(", "),
            DEV_SETTINGS.join(", ")
        );
    }
}

/// The setting that marks a database as one `dev` set up.
const DEV_MARK: &str = "dev.stack";

/// `DATABASE_URL`, when given (else `dev` keeps its own SQLite file under `--data-dir`).
fn given_database() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// Refuses a database `DATABASE_URL` names that holds gateway data `dev` did not set up:
/// `dev` adds test users, prints an admin token and revokes tokens named `dev-…`, which must
/// never happen to a real gateway's database (the admin commands' `DATABASE_URL`, still
/// exported in the shell, say).
async fn refuse_a_database_not_devs(config: &gateway::config::StoreConfig) -> anyhow::Result<()> {
    let store = Store::connect_synced(&config.database_url, config.sqlite_sync)
        .await
        .context("cannot open the database (DATABASE_URL)")?;
    let devs = async {
        if store.holds_no_gateway_data().await? {
            return Ok(true);
        }
        // Before the settings table existed, no database was dev's.
        if store.setting(DEV_MARK).await.ok().flatten().is_some() {
            return Ok(true);
        }
        store.holds_only_dev_people().await
    };
    let devs: Result<bool, gateway::store::StoreError> = devs.await;
    store.close().await;
    match devs {
        Ok(true) => Ok(()),
        Ok(false) => anyhow::bail!(
            "DATABASE_URL ({}) names a database with people or tokens that are not dev's (no \
             mark of a database dev set up, and someone besides dev's test users or a token not \
             named dev-…): dev adds test users, prints an admin token and revokes tokens named \
             dev-…, so it does not run there. Unset DATABASE_URL (dev keeps its own SQLite \
             under --data-dir) or point it at an empty database.",
            gateway::config::shown(&config.database_url)
        ),
        Err(e) => Err(e).context("cannot read the database (DATABASE_URL)"),
    }
}

/// The database and audit key: `DATABASE_URL` when given, else a SQLite file under
/// `--data-dir` (created). Checked before anything starts, and as `serve` checks them
/// (`DATABASE_URL`, `AUDIT_HMAC_KEY`, `SQLITE_SYNCHRONOUS`), so a typo is the one error shown.
fn store_config(args: &DevArgs) -> anyhow::Result<gateway::config::StoreConfig> {
    let given_database = given_database();
    let dev_database = format!("sqlite://{}/gateway.db", args.data_dir.display());
    let store_config = gateway::config::StoreConfig::from_lookup(|name: &str| match name {
        "DATABASE_URL" => given_database
            .clone()
            .or_else(|| Some(dev_database.clone())),
        _ => std::env::var(name).ok(),
    })
    .context("configuration")?;
    if given_database.is_none() {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    }
    Ok(store_config)
}

/// The key TOTP secrets are sealed with when `MFA_ENCRYPTION_KEY` is not given: one kept in
/// `--data-dir` (made on first use, mode 0600), so that an authenticator set up in one run
/// still opens in the next.
fn kept_mfa_key(args: &DevArgs) -> anyhow::Result<Secret> {
    let path = args.data_dir.join("mfa-encryption.key");
    let read = |path: &std::path::Path| -> anyhow::Result<Option<Secret>> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let key = gateway::config::mfa_encryption_key(&|_: &str| Some(text.clone()))
                    .with_context(|| format!("{} holds no key", path.display()))?;
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    };
    if let Some(key) = read(&path)? {
        return Ok(key);
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = hex::encode(bytes);
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    match file.open(&path) {
        Ok(mut f) => {
            use std::io::Write as _;
            f.write_all(format!("{key}\n").as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(Secret::new(key))
        }
        // Another dev start made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(&path)?.ok_or_else(|| anyhow::anyhow!("{} holds no key", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// The dev stack's three listeners, on 127.0.0.1, and where they ended up (port 0 picks one).
struct Listeners {
    rack: tokio::net::TcpListener,
    rack_addr: SocketAddr,
    gateway: tokio::net::TcpListener,
    gateway_addr: SocketAddr,
    oidc: tokio::net::TcpListener,
    oidc_addr: SocketAddr,
    /// With `--metrics-port`.
    metrics: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Binds all three before anything starts, so that a port in use is the one error shown.
    async fn bind(args: &DevArgs) -> anyhow::Result<Listeners> {
        let rack_addr = SocketAddr::from(([127, 0, 0, 1], args.rack_port));
        let rack = tokio::net::TcpListener::bind(rack_addr)
            .await
            .with_context(|| {
                format!("fake rack: cannot listen on {rack_addr} (use --rack-port)")
            })?;
        let gateway_addr = SocketAddr::from(([127, 0, 0, 1], args.port));
        let gateway = gateway::http_server::listen(gateway_addr)
            .with_context(|| format!("gateway: cannot listen on {gateway_addr} (use --port)"))?;
        let oidc_addr = SocketAddr::from(([127, 0, 0, 1], args.oidc_port));
        let oidc = tokio::net::TcpListener::bind(oidc_addr)
            .await
            .with_context(|| {
                format!("OIDC provider: cannot listen on {oidc_addr} (use --oidc-port)")
            })?;
        let metrics = args
            .metrics_port
            .map(|port| {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                gateway::http_server::listen(addr).with_context(|| {
                    format!("metrics: cannot listen on {addr} (use --metrics-port)")
                })
            })
            .transpose()?;
        Ok(Listeners {
            metrics,
            rack_addr: rack.local_addr()?,
            gateway_addr: gateway.local_addr()?,
            oidc_addr: oidc.local_addr()?,
            rack,
            gateway,
            oidc,
        })
    }
}

/// 24 random bytes in hex: the fake rack's token, the dev provider's client secret.
fn random_hex() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The gateway's configuration for the dev stack: the fake rack and the dev provider on this
/// machine, the settings `serve` would take from the environment fixed.
fn config(
    listeners: &Listeners,
    store_config: gateway::config::StoreConfig,
    rack_token: String,
    client_secret: String,
) -> anyhow::Result<Config> {
    let public_url: url::Url = gateway_url(listeners.gateway_addr)
        .parse()
        .context("gateway URL")?;
    let redirect_url = public_url
        .join(OIDC_CALLBACK_PATH)
        .context("callback URL")?;
    let issuer = format!("http://{}", listeners.oidc_addr);
    Ok(Config {
        rack_host: format!("http://{}", listeners.rack_addr)
            .parse()
            .context("fake rack URL")?,
        rack_token: Secret::new(rack_token),
        listen_addr: listeners.gateway_addr,
        metrics_listen_addr: listeners.metrics.as_ref().and_then(|l| l.local_addr().ok()),
        database_url: store_config.database_url,
        audit_hmac_key: store_config.audit_hmac_key,
        audit_hmac_key_next: store_config.audit_hmac_key_next,
        sqlite_sync: store_config.sqlite_sync,
        // The dev stack keeps everything local; anchors need a real bucket.
        audit_anchors: None,
        rack_tls: RackTls::WebPki,
        public_url: Some(public_url),
        rack_connect_timeout: std::time::Duration::from_secs(5),
        rack_read_timeout: std::time::Duration::from_secs(300),
        shutdown_timeout: std::time::Duration::from_secs(5),
        client_timeout: std::time::Duration::from_secs(75),
        // The runtime was built from the same variable in main.
        worker_threads: gateway::config::worker_threads(&|name| std::env::var(name).ok())
            .ok()
            .flatten(),
        max_connections: 4096,
        websockets: Default::default(),
        audit_stdout: true,
        trusted_proxies: Default::default(),
        oidc: Some(OidcConfig {
            issuer: issuer.parse().context("OIDC issuer URL")?,
            issuer_id: issuer,
            client_id: DEV_CLIENT_ID.into(),
            client_secret: Secret::new(client_secret),
            allowed_domains: vec!["example.com".into()],
            // As `add_test_users` makes it: said, so that start-up does not warn that the
            // first account to sign in would become admin.
            admin_users: vec!["admin@example.com".into()],
            redirect_url,
        }),
        sessions: SessionConfig::default(),
        // Set by `run` (from the environment or the data directory).
        mfa_encryption_key: None,
        mfa_encryption_key_retired: gateway::config::mfa_encryption_key_retired(&|name| {
            std::env::var(name).ok()
        })
        .context("MFA_ENCRYPTION_KEY_RETIRED")?,
        mfa_required: false,
        mfa_step_up: gateway::config::mfa_step_up(&|name| std::env::var(name).ok())
            .context("MFA_STEP_UP_SECS")?,
        yubico: gateway::config::yubico(&|name| std::env::var(name).ok()).context("YUBICO_*")?,
        mfa_trusted_device: gateway::config::mfa_trusted_device(&|name| std::env::var(name).ok())
            .context("MFA_TRUSTED_DEVICE_DAYS")?,
        deploy_approval_window: std::time::Duration::from_secs(
            gateway::config::DEFAULT_DEPLOY_APPROVAL_WINDOW_SECS,
        ),
        deploy_approval_request_ttl: std::time::Duration::from_secs(
            gateway::config::DEFAULT_DEPLOY_APPROVAL_REQUEST_TTL_SECS,
        ),
        // Off unless set, as for `serve`: to try them, point SLACK_WEBHOOK_URL or SMTP_URL at
        // a local catcher.
        notify: gateway::config::NotifyConfig::from_lookup(|name| std::env::var(name).ok())
            .context("notifications")?,
    })
}

/// Where browsers and clients reach the dev gateway: `localhost` rather than its address,
/// because security keys (WebAuthn) need a name; it listens on 127.0.0.1 all the same.
fn gateway_url(addr: std::net::SocketAddr) -> String {
    format!("http://localhost:{}", addr.port())
}

/// What `dev` prints once it is up: where everything is, and a token per role.
fn banner(
    gateway_addr: std::net::SocketAddr,
    rack_addr: std::net::SocketAddr,
    oidc_addr: std::net::SocketAddr,
    metrics_addr: Option<std::net::SocketAddr>,
    database_url: &str,
    tokens: &[(String, String)],
) -> String {
    let gateway = gateway_url(gateway_addr);
    let mut text = format!(
        "\nrack-gateway dev stack\n\
         \x20 gateway     {gateway}\n\
         \x20 fake rack   http://{rack_addr}  (its token stays inside the gateway)\n\
         \x20 sign-in     http://{oidc_addr}  (dev OIDC: admin@, deployer@, ops@, viewer@example.com)\n\
         \x20 database    {}\n\
         {metrics}\
         \nBrowser: {gateway}/ · CLI: rack-gateway login dev {gateway}\n\
         \nAPI tokens, one per role (new ones each start; the previous start's are revoked):\n",
        gateway::config::shown(database_url),
        metrics = metrics_addr
            .map(|addr| format!("  metrics     http://{addr}/metrics\n"))
            .unwrap_or_default(),
    );
    for (role, secret) in tokens {
        text.push_str(&format!(
            "  {role:<9} export RACK_URL=http://convox:{secret}@localhost:{}/api/v1/rack-proxy\n",
            gateway_addr.port()
        ));
    }
    text.push_str(
        "\nThen: convox apps · convox ps -a web · convox logs -a web · convox env -a web\n\
         Audit events follow as JSON lines. Ctrl-C stops everything.\n\n",
    );
    text
}

/// Prints `banner` on stdout. A closed stdout (`dev | head`) must not end the stack, as
/// `println!` would by panicking: the audit lines after it are skipped the same way.
fn print_banner(banner: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(banner.as_bytes()).and_then(|()| out.flush()) {
        tracing::warn!(
            error = %e,
            "stdout is closed or failing: the dev stack's URLs and API tokens were not printed"
        );
    }
}

/// The dev OIDC provider's test users, with the matching roles (kept if they exist).
async fn add_test_users(gateway: &Gateway) -> anyhow::Result<()> {
    let store = &gateway.state.store;
    let actor = Actor::cli();
    for role in ["admin", "deployer", "ops", "viewer"] {
        let email = format!("{role}@example.com");
        if store.find_user(&email).await?.is_none() {
            manage::add_user(store, &gateway.state.audit, &actor, &email, "", role).await?;
        }
    }
    Ok(())
}

/// Revokes the previous run's dev tokens and issues a fresh one per role.
async fn issue_dev_tokens(
    store: &Store,
    gateway: &Gateway,
) -> anyhow::Result<Vec<(String, String)>> {
    let actor = Actor::cli();
    let audit = &gateway.state.audit;
    for old in store.list_tokens().await? {
        if old.revoked_at.is_none() && old.name.starts_with("dev-") {
            manage::revoke_token(store, audit, &actor, &old.id.to_string()).await?;
        }
    }
    let mut tokens = Vec::new();
    for role in ROLES {
        let request = TokenRequest {
            name: format!("dev-{role}"),
            role: Some(role.to_string()),
            ..TokenRequest::default()
        };
        let (_, secret) = manage::create_token(store, audit, &actor, &request).await?;
        tokens.push((role.to_string(), secret));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::{DEV_SETTINGS, ignored_settings};

    #[test]
    fn every_notification_setting_is_one_dev_reads() {
        // `dev` reads the notification settings as `serve` does: none may be named as ignored.
        let asked = std::cell::RefCell::new(Vec::new());
        let _ = gateway::config::NotifyConfig::from_lookup(|name| {
            asked.borrow_mut().push(name.to_string());
            None
        });
        let asked = asked.into_inner();
        assert!(asked.len() >= 7, "{asked:?}");
        for name in asked {
            assert!(DEV_SETTINGS.contains(&name.as_str()), "{name}");
        }
    }

    #[test]
    fn settings_dev_sets_itself_are_named_when_given() {
        let env = [
            ("RACK_HOST", "https://rack.example.com"),
            ("DATABASE_URL", "sqlite://x.db"),
            ("LISTEN_ADDR", "0.0.0.0:8447"),
            ("OIDC_ISSUER", "  "),
            ("HOME", "/root"),
            ("LOG_LEVEL", "debug"),
            ("AUDIT_HMAC_KEY_NEXT", "n"),
            // `audit verify`'s, not the gateway's.
            ("AUDIT_HMAC_KEY_RETIRED", "r"),
        ]
        .map(|(n, v)| (n.to_string(), v.to_string()));
        assert_eq!(
            ignored_settings(env),
            ["AUDIT_HMAC_KEY_RETIRED", "LISTEN_ADDR", "RACK_HOST"]
        );
    }
}
