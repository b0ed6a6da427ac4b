//! `rack-gateway-bench`: the benchmark suite behind `scripts/bench` (see docs/performance.md).
//!
//! It starts every server as its own process — the fake rack and the OIDC provider (hidden
//! subcommands of this binary), Debian's nginx as a plain reverse proxy to the fake rack, a
//! plain tokio/hyper reverse proxy (another hidden subcommand: the gateway's stack without the
//! gateway's work) and `rack-gateway-server serve` once per store — then drives each with `wrk` in the same run:
//! a small authenticated GET and a mutating POST at fixed concurrency levels, a large object
//! upload (with the gateway's peak RSS) and a WebSocket log stream. Results go to
//! `target/bench/` as JSON and markdown; the markdown is printed.
//!
//! Environment (all optional): `BENCH_SECS` (per phase, 5), `BENCH_WARMUP_SECS` (1),
//! `BENCH_CONCURRENCY` (`1,16,64`), `BENCH_ROUNDS` (1; more runs every load phase that many
//! times, interleaved, and reports medians), `BENCH_UPLOAD_MIB` (1024), `BENCH_WS_MIB` (256),
//! `BENCH_PG_URL` (an empty PostgreSQL database; without it only SQLite is measured),
//! `BENCH_PG_OPTS` (only described in the report: the PostgreSQL server's options),
//! `BENCH_PG_PID` (the PostgreSQL postmaster, whose CPU time then counts as the gateway's
//! database rather than as other load),
//! `BENCH_NGINX_WORKERS` (`auto`), `BENCH_SQLITE_SYNCHRONOUS` (`normal`; `full` makes the
//! SQLite gateway wait for an fsync on every commit), `BENCH_PHASES` (`http,upload,ws`), `BENCH_OUT`
//! (`target/bench`), `BENCH_SERVER_BIN` (default: `rack-gateway-server` next to this binary),
//! `BENCH_GATEWAY_ENV` (more settings for the gateways, `NAME=VALUE` separated by `;`: e.g.
//! `SLACK_WEBHOOK_URL=http://127.0.0.1:9/hook` to measure with the notifier running).

mod load;
mod plain;
mod procs;
mod report;
mod signin;
mod stream;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Parser, Subcommand};

use crate::load::Load;
use crate::procs::{Announce, Proc};
use crate::report::{Host, HttpRow, Report, Settings, StreamRow};

#[derive(Parser)]
#[command(
    name = "rack-gateway-bench",
    about = "rack-gateway's benchmark suite (see scripts/bench)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the whole suite (the default); settings come from BENCH_* variables.
    Run,
    /// Serves the fake rack on 127.0.0.1 until stdin closes; prints `listening ADDR`.
    #[command(hide = true)]
    MockRack {
        #[arg(long)]
        token: String,
        #[arg(long, default_value_t = 0)]
        log_firehose_bytes: u64,
    },
    /// Serves a plain tokio/hyper reverse proxy to `upstream` on 127.0.0.1 until stdin closes;
    /// prints `listening ADDR`.
    #[command(hide = true)]
    PlainProxy {
        #[arg(long)]
        upstream: std::net::SocketAddr,
    },
    /// Serves the dev OIDC provider on 127.0.0.1 until stdin closes; prints `listening ADDR`.
    #[command(hide = true)]
    Oidc {
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        client_secret: String,
        #[arg(long)]
        redirect_uri: Vec<String>,
    },
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Cmd::Run) {
        Cmd::Run => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(async {
                    tokio::select! {
                        r = run() => r,
                        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
                    }
                })
            }),
        helper => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(serve_helper(helper))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The fake rack, the plain proxy or the OIDC provider, in this process, until stdin closes (so they never
/// outlive the suite).
async fn serve_helper(cmd: Cmd) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("listening {addr}");
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    match cmd {
        Cmd::MockRack {
            token,
            log_firehose_bytes,
        } => {
            let config = mock_rack::MockRackConfig { token, seed: 1 };
            let knobs = mock_rack::BenchKnobs { log_firehose_bytes };
            mock_rack::serve_with(listener, config, knobs, std::future::pending()).await?;
        }
        Cmd::Oidc {
            client_id,
            client_secret,
            redirect_uri,
        } => {
            let config = dev_oidc::DevOidcConfig {
                issuer: format!("http://{addr}"),
                client_id,
                client_secret,
                redirect_uris: redirect_uri,
                users: dev_oidc::default_users(),
                quirks: dev_oidc::Quirks::default(),
            };
            dev_oidc::serve(listener, config, std::future::pending()).await?;
        }
        Cmd::PlainProxy { upstream } => plain::serve(listener, upstream).await?,
        Cmd::Run => bail!("not a helper"),
    }
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v}: not a valid value")),
        _ => Ok(default),
    }
}

/// Settings from the environment.
struct Config {
    secs: u64,
    warmup: u64,
    concurrency: Vec<u32>,
    rounds: u32,
    upload_mib: u64,
    ws_mib: u64,
    pg_url: Option<String>,
    pg_pid: Option<u32>,
    nginx_workers: String,
    /// `BENCH_SQLITE_SYNCHRONOUS`: the SQLite gateway's `SQLITE_SYNCHRONOUS`.
    sqlite_sync: &'static str,
    phases: Vec<String>,
    out: PathBuf,
    server_bin: PathBuf,
    /// `BENCH_GATEWAY_ENV`: more settings for the gateways.
    gateway_env: Vec<(String, String)>,
    exe: PathBuf,
}

/// `NAME=VALUE;NAME=VALUE` as pairs.
fn gateway_env(list: &str) -> anyhow::Result<Vec<(String, String)>> {
    list.split(';')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((name.trim().to_string(), value.to_string()))
            }
            _ => bail!("BENCH_GATEWAY_ENV: {item:?} is not NAME=VALUE"),
        })
        .collect()
}

impl Config {
    fn from_env() -> anyhow::Result<Config> {
        let exe = std::env::current_exe().context("where is this binary")?;
        let bin_dir = exe.parent().context("binary directory")?.to_path_buf();
        let concurrency = env_or("BENCH_CONCURRENCY", "1,16,64".to_string())?
            .split(',')
            .map(|c| c.trim().parse::<u32>().ok().filter(|c| *c > 0))
            .collect::<Option<Vec<_>>>()
            .context("BENCH_CONCURRENCY: comma-separated client counts, e.g. 1,16,64")?;
        let phases = env_or("BENCH_PHASES", "http,upload,ws".to_string())?
            .split(',')
            .map(|p| p.trim().to_string())
            .collect::<Vec<_>>();
        for p in &phases {
            if !["http", "upload", "ws"].contains(&p.as_str()) {
                bail!("BENCH_PHASES: unknown phase {p:?} (http, upload, ws)");
            }
        }
        let out = match std::env::var("BENCH_OUT") {
            Ok(o) if !o.is_empty() => PathBuf::from(o),
            // target/release/rack-gateway-bench → target/bench
            _ => bin_dir.parent().unwrap_or(&bin_dir).join("bench"),
        };
        Ok(Config {
            secs: env_or("BENCH_SECS", 5)?,
            warmup: env_or("BENCH_WARMUP_SECS", 1)?,
            concurrency,
            rounds: env_or("BENCH_ROUNDS", 1u32)?.max(1),
            upload_mib: env_or("BENCH_UPLOAD_MIB", 1024)?,
            ws_mib: env_or("BENCH_WS_MIB", 256)?,
            pg_url: std::env::var("BENCH_PG_URL").ok().filter(|u| !u.is_empty()),
            pg_pid: std::env::var("BENCH_PG_PID")
                .ok()
                .and_then(|p| p.trim().parse().ok()),
            nginx_workers: env_or("BENCH_NGINX_WORKERS", "auto".to_string())?,
            sqlite_sync: match env_or("BENCH_SQLITE_SYNCHRONOUS", "normal".to_string())?
                .trim()
                .to_ascii_lowercase()
                .as_str()
            {
                "normal" => "normal",
                "full" => "full",
                other => anyhow::bail!("BENCH_SQLITE_SYNCHRONOUS={other}: `normal` or `full`"),
            },
            phases,
            out,
            gateway_env: gateway_env(&env_or("BENCH_GATEWAY_ENV", String::new())?)?,
            server_bin: std::env::var("BENCH_SERVER_BIN")
                .ok()
                .filter(|b| !b.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| bin_dir.join("rack-gateway-server")),
            exe,
        })
    }

    fn phase(&self, name: &str) -> bool {
        self.phases.iter().any(|p| p == name)
    }
}

/// Progress lines on stderr, with the time since the start.
struct Progress(Instant);

impl Progress {
    fn say(&self, msg: impl std::fmt::Display) {
        eprintln!("[{:>5.1}s] {msg}", self.0.elapsed().as_secs_f64());
    }
}

/// A scratch directory, removed at the end.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const AUDIT_KEY: &str = "bench-audit-key-0123456789abcdef0123456789abcdef";
const OIDC_CLIENT: &str = "rack-gateway-bench";
const USER: &str = "deployer@example.com";
const GET_APPS: &str = "GET /apps";
const RESTART: &str = "POST /apps/web/services/web/restart";
const WS_PATH: &str = "/apps/api/logs";
/// A phase during which other processes used this much of a core is flagged.
const NOISY_PCT: f64 = 15.0;

fn basic(password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("convox:{password}")))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A gateway process with its credentials.
struct Gateway {
    store: &'static str,
    proc: Proc,
    token: String,
    session: String,
}

/// Somewhere to send requests.
struct Endpoint {
    name: String,
    /// `http://host:port` plus the path prefix in front of rack paths.
    base: String,
    authorization: String,
    /// The proxy process whose CPU time is counted (none for direct).
    proxy_pid: Option<u32>,
    /// The database server behind it (PostgreSQL), when known.
    db_pid: Option<u32>,
}

fn admin(cfg: &Config, db: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(&cfg.server_bin)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db)
        .env("AUDIT_HMAC_KEY", AUDIT_KEY)
        .env("SQLITE_SYNCHRONOUS", cfg.sqlite_sync)
        .output()
        .with_context(|| format!("run {}", cfg.server_bin.display()))?;
    if !out.status.success() {
        bail!(
            "rack-gateway-server {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[allow(clippy::too_many_arguments)]
async fn start_gateway(
    cfg: &Config,
    scratch: &Path,
    store: &'static str,
    db: &str,
    port: u16,
    rack: &Proc,
    rack_token: &str,
    oidc: &Proc,
    oidc_secret: &str,
) -> anyhow::Result<Gateway> {
    let created = admin(
        cfg,
        db,
        &["tokens", "create", "--name", "bench", "--role", "deployer"],
    )?;
    let token = created
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    admin(cfg, db, &["users", "add", USER, "--role", "deployer"])?;
    let public = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(&cfg.server_bin);
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db)
        .env("SQLITE_SYNCHRONOUS", cfg.sqlite_sync)
        .env("AUDIT_HMAC_KEY", AUDIT_KEY)
        .env("RACK_HOST", format!("http://{}", rack.addr))
        .env("RACK_TOKEN", rack_token)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("PUBLIC_URL", &public)
        .env("OIDC_ISSUER", format!("http://{}", oidc.addr))
        .env("OIDC_CLIENT_ID", OIDC_CLIENT)
        .env("OIDC_CLIENT_SECRET", oidc_secret)
        .env("OIDC_ALLOWED_DOMAINS", "example.com")
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info")
        .envs(cfg.gateway_env.iter().map(|(k, v)| (k, v)));
    let proc = procs::spawn(
        &format!("gateway ({store})"),
        cmd,
        scratch.join(format!("gateway-{store}.log")),
        Announce::GatewayLog,
    )?;
    let session = signin::cli_session(&public, USER)
        .await
        .with_context(|| format!("CLI sign-in at the {store} gateway"))?;
    Ok(Gateway {
        store,
        proc,
        token,
        session,
    })
}

fn start_nginx(cfg: &Config, scratch: &Path, rack: &Proc) -> anyhow::Result<Proc> {
    let dir = scratch.join("nginx");
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream rack {{ server {rack}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://rack;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 600s;
            proxy_send_timeout 600s;
        }}
    }}
}}
"#,
        workers = cfg.nginx_workers,
        rack = rack.addr,
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.join("error.log"));
    procs::spawn(
        "nginx",
        cmd,
        scratch.join("nginx.log"),
        Announce::Fixed(format!("127.0.0.1:{port}")),
    )
}

fn first_line(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_default()
}

fn host() -> Host {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    Host {
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        memory_gib: mem_kib / 1024.0 / 1024.0,
        nginx: first_line("nginx", "-v").replace("nginx version: ", ""),
        wrk: first_line("wrk", "-v")
            .split(" [")
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// The servers under test.
struct Servers {
    rack: Proc,
    rack_token: String,
    nginx: Proc,
    plain: Proc,
    oidc: Proc,
    gateways: Vec<Gateway>,
    /// The PostgreSQL server (postmaster; its backends are its children), when known.
    pg_pid: Option<u32>,
}

impl Servers {
    /// The benchmark's own process trees: this process (its servers and wrk are its
    /// children) and the PostgreSQL server.
    fn roots(&self) -> Vec<u32> {
        let mut roots = vec![std::process::id()];
        roots.extend(self.pg_pid);
        roots
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        self.rack.check_alive()?;
        self.nginx.check_alive()?;
        self.plain.check_alive()?;
        self.oidc.check_alive()?;
        for gw in &mut self.gateways {
            gw.proc.check_alive()?;
        }
        Ok(())
    }
}

async fn start_servers(cfg: &Config, dir: &Path, p: &Progress) -> anyhow::Result<Servers> {
    let rack_token = random_hex(24);
    let mut cmd = Command::new(&cfg.exe);
    cmd.args(["mock-rack", "--token", &rack_token, "--log-firehose-bytes"])
        .arg((cfg.ws_mib << 20).to_string());
    let rack = procs::spawn("fake rack", cmd, dir.join("rack.log"), Announce::StdoutLine)?;
    p.say(format!("fake rack on {}", rack.addr));
    let nginx = start_nginx(cfg, dir, &rack)?;
    p.say(format!(
        "nginx on {} (worker_processes {})",
        nginx.addr, cfg.nginx_workers
    ));
    let mut cmd = Command::new(&cfg.exe);
    cmd.args(["plain-proxy", "--upstream", &rack.addr]);
    let plain = procs::spawn(
        "plain proxy",
        cmd,
        dir.join("plain.log"),
        Announce::StdoutLine,
    )?;
    p.say(format!("plain tokio/hyper proxy on {}", plain.addr));

    let mut stores: Vec<(&'static str, String)> =
        vec![("sqlite", format!("sqlite://{}/gateway.db", dir.display()))];
    if let Some(pg) = &cfg.pg_url {
        stores.push(("pg", pg.clone()));
    }
    let ports = stores
        .iter()
        .map(|_| free_port())
        .collect::<anyhow::Result<Vec<u16>>>()?;
    let oidc_secret = random_hex(24);
    let mut cmd = Command::new(&cfg.exe);
    cmd.args([
        "oidc",
        "--client-id",
        OIDC_CLIENT,
        "--client-secret",
        &oidc_secret,
    ]);
    for port in &ports {
        cmd.arg("--redirect-uri")
            .arg(format!("http://127.0.0.1:{port}/api/v1/auth/callback"));
    }
    let oidc = procs::spawn(
        "OIDC provider",
        cmd,
        dir.join("oidc.log"),
        Announce::StdoutLine,
    )?;
    p.say(format!("OIDC provider on {}", oidc.addr));

    let mut gateways = Vec::new();
    for ((store, db), port) in stores.iter().zip(&ports) {
        let gw = start_gateway(
            cfg,
            dir,
            store,
            db,
            *port,
            &rack,
            &rack_token,
            &oidc,
            &oidc_secret,
        )
        .await?;
        p.say(format!(
            "gateway ({store}) on {}: API token and CLI session for {USER} ready",
            gw.proc.addr
        ));
        gateways.push(gw);
    }
    Ok(Servers {
        rack,
        rack_token,
        nginx,
        plain,
        oidc,
        gateways,
        pg_pid: cfg.pg_pid,
    })
}

/// The plain tokio/hyper proxy's name in the report.
const PLAIN: &str = report::PLAIN;

fn endpoints(s: &Servers) -> Vec<Endpoint> {
    let mut endpoints = vec![
        Endpoint {
            name: "direct".into(),
            base: format!("http://{}", s.rack.addr),
            authorization: basic(&s.rack_token),
            proxy_pid: None,
            db_pid: None,
        },
        Endpoint {
            name: "nginx".into(),
            base: format!("http://{}", s.nginx.addr),
            authorization: basic(&s.rack_token),
            proxy_pid: Some(s.nginx.pid()),
            db_pid: None,
        },
        Endpoint {
            name: PLAIN.into(),
            base: format!("http://{}", s.plain.addr),
            authorization: basic(&s.rack_token),
            proxy_pid: Some(s.plain.pid()),
            db_pid: None,
        },
    ];
    for gw in &s.gateways {
        for (kind, secret) in [("token", &gw.token), ("session", &gw.session)] {
            endpoints.push(Endpoint {
                name: format!("gateway-{kind}-{}", gw.store),
                base: format!("http://{}/api/v1/rack-proxy", gw.proc.addr),
                authorization: basic(secret),
                proxy_pid: Some(gw.proc.pid()),
                db_pid: (gw.store == "pg").then_some(s.pg_pid).flatten(),
            });
        }
    }
    endpoints
}

/// The same endpoints for the streaming phases: direct, nginx, and each gateway with its API
/// token (the plain proxy forwards neither WebSocket upgrades nor anything worth a minute of
/// uploading: it is the HTTP phases' yardstick).
fn stream_endpoints(s: &Servers) -> Vec<Endpoint> {
    endpoints(s)
        .into_iter()
        .filter(|e| !e.name.starts_with("gateway-session") && e.name != PLAIN)
        .map(|mut e| {
            e.name = e.name.replace("gateway-token-", "gateway-");
            e
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Rounds of the same phase into one row: medians of the rates and percentiles, sums of the
/// counts, the worst of the foreign load.
fn combine(rounds: &[HttpRow]) -> Option<HttpRow> {
    let first = rounds.first()?;
    let m = |f: &dyn Fn(&HttpRow) -> f64| median(rounds.iter().map(f).collect());
    let mut row = first.clone();
    let r = &mut row.result;
    r.requests = rounds.iter().map(|x| x.result.requests).sum();
    r.errors = rounds.iter().map(|x| x.result.errors).sum();
    r.status_errors = rounds.iter().map(|x| x.result.status_errors).sum();
    r.socket_errors = rounds.iter().map(|x| x.result.socket_errors).sum();
    r.secs = rounds.iter().map(|x| x.result.secs).sum();
    r.rps = m(&|x| x.result.rps);
    r.p50_ms = m(&|x| x.result.p50_ms);
    r.p99_ms = m(&|x| x.result.p99_ms);
    r.p999_ms = m(&|x| x.result.p999_ms);
    r.mean_ms = m(&|x| x.result.mean_ms);
    r.max_ms = rounds.iter().map(|x| x.result.max_ms).fold(0.0, f64::max);
    row.proxy_cpu_us_per_req = first
        .proxy_cpu_us_per_req
        .map(|_| m(&|x| x.proxy_cpu_us_per_req.unwrap_or(0.0)));
    row.db_cpu_us_per_req = first
        .db_cpu_us_per_req
        .map(|_| m(&|x| x.db_cpu_us_per_req.unwrap_or(0.0)));
    row.rack_cpu_us_per_req = m(&|x| x.rack_cpu_us_per_req);
    row.other_cpu_pct = rounds.iter().map(|x| x.other_cpu_pct).fold(0.0, f64::max);
    Some(row)
}

async fn http_phases(
    cfg: &Config,
    dir: &Path,
    p: &Progress,
    s: &mut Servers,
) -> anyhow::Result<Vec<HttpRow>> {
    let endpoints = endpoints(s);
    // Every endpoint answers before any load.
    let http = reqwest::Client::builder().no_proxy().build()?;
    for e in &endpoints {
        let r = http
            .get(format!("{}/apps", e.base))
            .header("authorization", &e.authorization)
            .send()
            .await
            .with_context(|| format!("{}: GET /apps", e.name))?;
        let status = r.status();
        if !status.is_success() {
            bail!("{}: GET /apps: {status}: {}", e.name, r.text().await?);
        }
    }
    let roots = s.roots();
    let mut rounds: Vec<Vec<HttpRow>> = Vec::new();
    for round in 1..=cfg.rounds {
        let mut rows = Vec::new();
        for (method, path, request) in [
            ("GET", "/apps", GET_APPS),
            ("POST", "/apps/web/services/web/restart", RESTART),
        ] {
            for &c in &cfg.concurrency {
                for e in &endpoints {
                    let url = format!("{}{path}", e.base);
                    let mut load = Load {
                        url: &url,
                        method,
                        authorization: &e.authorization,
                        concurrency: c,
                        duration: Duration::from_secs(cfg.warmup),
                    };
                    if cfg.warmup > 0 {
                        load::run(&load, dir)?;
                    }
                    load.duration = Duration::from_secs(cfg.secs);
                    let proxy_cpu = e.proxy_pid.map(procs::tree_cpu);
                    let db_cpu = e.db_pid.map(procs::tree_cpu);
                    let rack_cpu = s.rack.cpu();
                    let before = procs::CpuReading::take();
                    let measured = load::run(&load, dir)?;
                    let after = procs::CpuReading::take();
                    let per_req =
                        |d: Duration| d.as_secs_f64() * 1e6 / (measured.requests.max(1) as f64);
                    let proxy_us = e
                        .proxy_pid
                        .zip(proxy_cpu)
                        .map(|(pid, before)| per_req(procs::tree_cpu(pid).saturating_sub(before)));
                    let db_us = e
                        .db_pid
                        .zip(db_cpu)
                        .map(|(pid, before)| per_req(procs::tree_cpu(pid).saturating_sub(before)));
                    let rack_us = per_req(s.rack.cpu().saturating_sub(rack_cpu));
                    let other = before.foreign_pct_until(&after, &roots);
                    p.say(format!(
                        "{}{request} c={c} {}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms{}{}",
                        if cfg.rounds > 1 {
                            format!("round {round}/{}: ", cfg.rounds)
                        } else {
                            String::new()
                        },
                        e.name,
                        measured.rps,
                        measured.p50_ms,
                        measured.p99_ms,
                        measured.p999_ms,
                        if measured.errors > 0 {
                            format!(", {} ERRORS", measured.errors)
                        } else {
                            String::new()
                        },
                        if other >= NOISY_PCT {
                            format!(" (other processes and steal took {other:.0}% of a core)")
                        } else {
                            String::new()
                        }
                    ));
                    rows.push(HttpRow {
                        request: request.to_string(),
                        target: e.name.clone(),
                        concurrency: c,
                        result: measured,
                        proxy_cpu_us_per_req: proxy_us,
                        db_cpu_us_per_req: db_us,
                        rack_cpu_us_per_req: rack_us,
                        other_cpu_pct: other,
                    });
                    s.check_alive()?;
                }
            }
        }
        rounds.push(rows);
    }
    let n = rounds.first().map(Vec::len).unwrap_or(0);
    Ok((0..n)
        .filter_map(|i| {
            let same: Vec<HttpRow> = rounds.iter().filter_map(|r| r.get(i).cloned()).collect();
            combine(&same)
        })
        .collect())
}

/// Fills in the ÷ direct and ÷ nginx columns.
fn stream_ratios(rows: &mut [StreamRow]) {
    let direct = rows
        .iter()
        .find(|r| r.target == "direct")
        .map(|r| r.mb_per_s);
    let via_nginx = rows
        .iter()
        .find(|r| r.target == "nginx")
        .map(|r| r.mb_per_s);
    for r in rows.iter_mut().filter(|r| r.target != "direct") {
        r.vs_direct = direct.map(|d| r.mb_per_s / d);
        if r.target != "nginx" {
            r.vs_nginx = via_nginx.map(|n| r.mb_per_s / n);
        }
    }
}

async fn upload_phases(cfg: &Config, p: &Progress, s: &Servers) -> anyhow::Result<Vec<StreamRow>> {
    let total = cfg.upload_mib << 20;
    let roots = s.roots();
    let mut rows = Vec::new();
    for e in stream_endpoints(s) {
        let url = format!("{}/apps/web/objects/tmp/bench-{}.tgz", e.base, e.name);
        let gateway_pid = e.proxy_pid.filter(|_| e.name.starts_with("gateway"));
        let rss_before = gateway_pid.and_then(procs::rss_kib);
        let reset = gateway_pid.map(procs::reset_peak_rss);
        let sampler = gateway_pid.map(procs::RssSampler::start);
        let cpu_before = e.proxy_pid.map(procs::tree_cpu);
        let before = procs::CpuReading::take();
        let elapsed = stream::upload(&url, &e.authorization, total).await?;
        let after = procs::CpuReading::take();
        let cpu = e
            .proxy_pid
            .zip(cpu_before)
            .map(|(pid, b)| procs::tree_cpu(pid).saturating_sub(b).as_secs_f64());
        let sampled = sampler.map(procs::RssSampler::finish);
        let (peak, method) = match (reset, sampled, gateway_pid) {
            (Some(true), Some(sampled), Some(pid)) => (
                Some(procs::peak_rss_kib(pid).unwrap_or(0).max(sampled)),
                Some("VmHWM reset with clear_refs before the upload".to_string()),
            ),
            (Some(false), Some(sampled), _) => {
                (Some(sampled), Some("VmRSS sampled every 10 ms".to_string()))
            }
            _ => (None, None),
        };
        let secs = elapsed.as_secs_f64();
        let row = StreamRow {
            target: e.name.clone(),
            bytes: total,
            secs,
            mb_per_s: total as f64 / 1e6 / secs,
            vs_direct: None,
            vs_nginx: None,
            rss_before_mib: rss_before.map(|k| k as f64 / 1024.0),
            peak_rss_mib: peak.map(|k| k as f64 / 1024.0),
            peak_rss_method: method,
            proxy_cpu_secs: cpu,
            avg_message_bytes: None,
            other_cpu_pct: before.foreign_pct_until(&after, &roots),
        };
        p.say(format!(
            "upload {} MiB via {}: {:.0} MB/s{}",
            cfg.upload_mib,
            e.name,
            row.mb_per_s,
            row.peak_rss_mib
                .map(|m| format!(", peak RSS {m:.1} MiB"))
                .unwrap_or_default()
        ));
        rows.push(row);
    }
    stream_ratios(&mut rows);
    Ok(rows)
}

async fn websocket_phases(
    cfg: &Config,
    p: &Progress,
    s: &Servers,
) -> anyhow::Result<Vec<StreamRow>> {
    let roots = s.roots();
    let mut rows = Vec::new();
    for e in stream_endpoints(s) {
        // `api`: its log history (what the firehose repeats) is not changed by the restarts.
        let url = format!("{}{}", e.base.replacen("http://", "ws://", 1), WS_PATH);
        let cpu_before = e.proxy_pid.map(procs::tree_cpu);
        let before = procs::CpuReading::take();
        let got = stream::read_logs(&url, &e.authorization).await?;
        let after = procs::CpuReading::take();
        let cpu = e
            .proxy_pid
            .zip(cpu_before)
            .map(|(pid, b)| procs::tree_cpu(pid).saturating_sub(b).as_secs_f64());
        if got.bytes < cfg.ws_mib << 20 {
            bail!(
                "log stream via {} ended after {} of {} bytes",
                e.name,
                got.bytes,
                cfg.ws_mib << 20
            );
        }
        let secs = got.elapsed.as_secs_f64();
        let row = StreamRow {
            target: e.name.clone(),
            bytes: got.bytes,
            secs,
            mb_per_s: got.bytes as f64 / 1e6 / secs,
            vs_direct: None,
            vs_nginx: None,
            rss_before_mib: None,
            peak_rss_mib: None,
            peak_rss_method: None,
            proxy_cpu_secs: cpu,
            avg_message_bytes: Some(got.bytes as f64 / got.messages.max(1) as f64),
            other_cpu_pct: before.foreign_pct_until(&after, &roots),
        };
        p.say(format!(
            "log stream {} MiB ({} messages) via {}: {:.0} MB/s",
            cfg.ws_mib, got.messages, e.name, row.mb_per_s
        ));
        rows.push(row);
    }
    stream_ratios(&mut rows);
    Ok(rows)
}

/// The lines a gateway logged at WARN or ERROR (its log is JSON lines), if any.
fn gateway_warnings(scratch: &Path, store: &str) -> Option<report::GatewayWarnings> {
    let log = std::fs::read_to_string(scratch.join(format!("gateway-{store}.log"))).ok()?;
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .collect();
    (!warnings.is_empty()).then(|| report::GatewayWarnings {
        store: store.to_string(),
        count: warnings.len(),
        first: warnings.iter().take(20).map(|l| l.to_string()).collect(),
    })
}

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let p = Progress(started);
    let cfg = Config::from_env()?;
    if !cfg.server_bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p rack-gateway-server)",
            cfg.server_bin.display()
        );
    }
    let scratch = Scratch(std::env::temp_dir().join(format!("rgw-bench-{}", random_hex(6))));
    std::fs::create_dir_all(&scratch.0)?;
    let dir = scratch.0.as_path();
    let mut servers = start_servers(&cfg, dir, &p).await?;

    let http = if cfg.phase("http") {
        http_phases(&cfg, dir, &p, &mut servers).await?
    } else {
        Vec::new()
    };
    let upload = if cfg.phase("upload") && cfg.upload_mib > 0 {
        upload_phases(&cfg, &p, &servers).await?
    } else {
        Vec::new()
    };
    let websocket = if cfg.phase("ws") && cfg.ws_mib > 0 {
        websocket_phases(&cfg, &p, &servers).await?
    } else {
        Vec::new()
    };
    servers.check_alive()?;

    let (ratios, checks) = report::compare(&http, &upload);
    let pg_options = std::env::var("BENCH_PG_OPTS").unwrap_or_default();
    let stores = servers
        .gateways
        .iter()
        .map(|g| match g.store {
            "sqlite" if cfg.sqlite_sync == "full" => {
                "sqlite (WAL, SQLITE_SYNCHRONOUS=full: a commit waits for the log's fsync)".into()
            }
            "sqlite" => "sqlite (WAL, synchronous=NORMAL: a commit does not wait for fsync)".into(),
            _ if pg_options.trim().is_empty() => {
                "pg (server defaults: a commit waits for the WAL fsync)".into()
            }
            _ => format!("pg (server options: {})", pg_options.trim()),
        })
        // Names only: the values may be credentials (a webhook's address).
        .map(|store: String| match cfg.gateway_env.is_empty() {
            true => store,
            false => {
                let names: Vec<&str> = cfg.gateway_env.iter().map(|(k, _)| k.as_str()).collect();
                format!("{store}; also set: {}", names.join(", "))
            }
        })
        .collect();
    let report = Report {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        host: host(),
        settings: Settings {
            secs_per_phase: cfg.secs,
            warmup_secs: cfg.warmup,
            rounds: cfg.rounds,
            concurrency: cfg.concurrency.clone(),
            upload_mib: cfg.upload_mib,
            websocket_mib: cfg.ws_mib,
            websocket_path: WS_PATH.into(),
            stores,
            nginx_workers: cfg.nginx_workers.clone(),
            wrk_threads: "1 for c=1, else 2".into(),
        },
        http,
        ratios,
        upload,
        websocket,
        checks,
        gateway_warnings: servers
            .gateways
            .iter()
            .filter_map(|g| gateway_warnings(dir, g.store))
            .collect(),
        wall_secs: started.elapsed().as_secs_f64(),
    };
    let md = report::markdown(&report);
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("create {}", cfg.out.display()))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    for (name, text) in [
        ("latest.json".to_string(), &json),
        ("latest.md".to_string(), &md),
        (format!("{stamp}.json"), &json),
        (format!("{stamp}.md"), &md),
    ] {
        std::fs::write(cfg.out.join(&name), text)
            .with_context(|| format!("write {}", cfg.out.join(&name).display()))?;
    }
    drop(servers);
    p.say(format!(
        "wrote {}/latest.json and latest.md (and {stamp}.*)",
        cfg.out.display()
    ));
    println!("{md}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_warnings_are_the_warn_and_error_lines_of_its_log() {
        let dir = std::env::temp_dir().join(format!("rgw-bench-test-{}", random_hex(6)));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let lines = [
            r#"{"level":"INFO","fields":{"message":"rack-gateway listening"}}"#,
            r#"{"level":"WARN","fields":{"message":"audit commit was slow","took_ms":230}}"#,
            r#"{"level":"ERROR","fields":{"message":"audit write failed"}}"#,
        ];
        std::fs::write(dir.join("gateway-sqlite.log"), lines.join("\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let found = gateway_warnings(&dir, "sqlite");
        assert!(
            gateway_warnings(&dir, "pg").is_none(),
            "no log, no warnings"
        );
        let _ = std::fs::remove_dir_all(&dir);
        let found = found.unwrap_or_else(|| panic!("the warnings were missed"));
        assert_eq!(found.count, 2);
        assert_eq!(found.first, lines[1..]);
    }
}
