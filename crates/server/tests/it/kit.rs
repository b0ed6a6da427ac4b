//! Test kit: a database per test (SQLite file or a fresh PostgreSQL database), the real
//! `rack-gateway-server` binary started on a free port, and helpers to drive it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::Executor;

pub const BIN: &str = env!("CARGO_BIN_EXE_rack-gateway-server");
pub const RACK_TOKEN: &str = "rack-secret-token-do-not-leak";
pub const AUDIT_KEY: &str = "test-audit-key-0123456789abcdef0123456789";

/// Which store backs a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database for one test; removed on drop.
pub struct Db {
    pub url: String,
    pub backend: Backend,
    dir: PathBuf,
}

impl Db {
    /// A database at `url` whose scratch directory is `dir`.
    pub fn at(url: String, backend: Backend, dir: PathBuf) -> Db {
        Db { url, backend, dir }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgw-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("scratch dir: {e}"));
    dir
}

/// A fresh database, or `None` when PostgreSQL is not configured (and not required).
pub async fn database(backend: Backend) -> Option<Db> {
    let dir = scratch_dir();
    match backend {
        Backend::Sqlite => Some(Db {
            url: format!("sqlite://{}/gateway.db", dir.display()),
            backend,
            dir,
        }),
        Backend::Postgres => {
            let Ok(admin_url) = std::env::var("RGW_TEST_POSTGRES_URL") else {
                if std::env::var("RGW_REQUIRE_POSTGRES").is_ok() {
                    panic!("RGW_REQUIRE_POSTGRES is set but RGW_TEST_POSTGRES_URL is not");
                }
                eprintln!(
                    "skipping PostgreSQL variant: RGW_TEST_POSTGRES_URL not set (scripts/test sets it)"
                );
                return None;
            };
            let name = format!("rgw_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("connect to test PostgreSQL: {e}"));
            conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await
                .unwrap_or_else(|e| panic!("create database: {e}"));
            let base = admin_url
                .rsplit_once('/')
                .map(|(b, _)| b)
                .unwrap_or(&admin_url);
            Some(Db {
                url: format!("{base}/{name}"),
                backend,
                dir,
            })
        }
    }
}

/// Runs `rack-gateway-server <args>` against `db`; returns (success, stdout, stderr).
pub fn admin(db: &Db, args: &[&str]) -> (bool, String, String) {
    admin_with(db, args, &[])
}

/// [`admin`] with more environment.
pub fn admin_with(db: &Db, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("AUDIT_HMAC_KEY", AUDIT_KEY)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run {BIN}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Creates a token with `args` appended to `tokens create`; returns the secret.
pub fn token(db: &Db, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["tokens", "create", "--name", name];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = admin(db, &args);
    assert!(ok, "tokens create failed: {stderr}");
    stdout.lines().last().unwrap_or_default().trim().to_string()
}

/// A token for a built-in role.
pub fn role_token(db: &Db, role: &str) -> String {
    token(db, &format!("{role}-token"), &["--role", role])
}

/// How a gateway is started: what reads its stdout and stderr, and what it may be made to face.
enum Launch {
    /// The test, line by line.
    Reads,
    /// Nobody: the pipe fills.
    Stopped,
    /// Nobody any more: the pipe's read end is closed.
    Exited,
    /// The test, but stderr's reader goes once the gateway is listening: its diagnostic log
    /// pipe then refuses every write, as when a log shipper exits.
    StderrExited,
    /// The test, with the gateway ignoring SIGXFSZ: a file-size limit set on it later
    /// (`prlimit --fsize`) makes its file writes fail as on a full disk, rather than kill it.
    FileSizeLimitable,
    /// As [`Launch::FileSizeLimitable`], with stdout written to this file (nobody else reads
    /// it): a limit then makes stdout fail while a PostgreSQL store goes on.
    StdoutToLimitableFile(PathBuf),
}

/// A running gateway process.
pub struct Gateway {
    pub child: Child,
    pub url: String,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// Its stdout when nobody reads it (see [`Gateway::start_unread`]).
    _unread: Option<std::process::ChildStdout>,
}

impl Gateway {
    /// Starts `serve` against `db` and the rack at `rack_url`.
    pub async fn start(db: &Db, rack_url: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_launched(db, rack_url, env, Launch::Reads).await
    }

    /// [`Gateway::start`] with a stdout pipe that nobody reads: a log shipper that stopped.
    pub async fn start_unread(db: &Db, rack_url: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_launched(db, rack_url, env, Launch::Stopped).await
    }

    /// [`Gateway::start`] with a stdout pipe whose reader is gone: a log shipper that exited.
    pub async fn start_stdout_closed(db: &Db, rack_url: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_launched(db, rack_url, env, Launch::Exited).await
    }

    /// [`Gateway::start`] with a stderr pipe whose reader goes once the gateway is listening:
    /// every diagnostic line after that fails to be written.
    pub async fn start_stderr_closed(db: &Db, rack_url: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_launched(db, rack_url, env, Launch::StderrExited).await
    }

    /// [`Gateway::start`], ready to have its file writes refused (see
    /// [`Gateway::limit_file_size`]).
    pub async fn start_file_size_limitable(
        db: &Db,
        rack_url: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        Gateway::start_launched(db, rack_url, env, Launch::FileSizeLimitable).await
    }

    /// Sets the gateway's file-size limit (`RLIMIT_FSIZE`, soft; `None`: none): with 0, every
    /// write to a file fails (`EFBIG`), as on a full disk. Pipes are not files: its stdout and
    /// stderr go on. Only for a gateway from [`Gateway::start_file_size_limitable`].
    pub fn limit_file_size(&self, bytes: Option<u64>) {
        let limit = bytes.map_or("unlimited".to_string(), |b| b.to_string());
        let out = Command::new("prlimit")
            .arg(format!("--pid={}", self.pid()))
            .arg(format!("--fsize={limit}:unlimited"))
            .output()
            .unwrap_or_else(|e| panic!("prlimit (util-linux) is needed: {e}"));
        assert!(
            out.status.success(),
            "prlimit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// [`Gateway::start_file_size_limitable`] with stdout written to the file at `path`.
    pub async fn start_stdout_to_limitable_file(
        db: &Db,
        rack_url: &str,
        env: &[(&str, &str)],
        path: &std::path::Path,
    ) -> Gateway {
        let launch = Launch::StdoutToLimitableFile(path.to_path_buf());
        Gateway::start_launched(db, rack_url, env, launch).await
    }

    async fn start_launched(
        db: &Db,
        rack_url: &str,
        env: &[(&str, &str)],
        launch: Launch,
    ) -> Gateway {
        let limitable = matches!(
            launch,
            Launch::FileSizeLimitable | Launch::StdoutToLimitableFile(_)
        );
        let mut cmd = if limitable {
            // An ignored signal stays ignored across exec; the pid stays the gateway's.
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\"", BIN]);
            cmd
        } else {
            Command::new(BIN)
        };
        cmd.arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("AUDIT_HMAC_KEY", AUDIT_KEY)
            .env("RACK_HOST", rack_url)
            .env("RACK_TOKEN", RACK_TOKEN)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .env("LOG_LEVEL", "info")
            .env("SHUTDOWN_TIMEOUT_SECS", "10")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Launch::StdoutToLimitableFile(path) = &launch {
            let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
            cmd.stdout(file);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn gateway: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
        let unread = match launch {
            Launch::Reads
            | Launch::StderrExited
            | Launch::FileSizeLimitable
            | Launch::StdoutToLimitableFile(_) => None,
            Launch::Stopped => child.stdout.take(),
            Launch::Exited => {
                drop(child.stdout.take());
                None
            }
        };
        if let Some(out) = child.stdout.take() {
            let lines = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let lines = stderr.clone();
            let leave_when_listening = matches!(launch, Launch::StderrExited);
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let parsed = serde_json::from_str::<serde_json::Value>(&line).ok();
                    let addr = parsed.as_ref().and_then(|v| v["fields"]["addr"].as_str());
                    if let Some(addr) = addr {
                        let _ = addr_tx.send(addr.to_string());
                    }
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                    if addr.is_some() && leave_when_listening {
                        // Returning drops the pipe's read end.
                        return;
                    }
                }
            });
        }
        let addr =
            tokio::task::spawn_blocking(move || addr_rx.recv_timeout(Duration::from_secs(30)))
                .await
                .unwrap_or_else(|e| panic!("join: {e}"));
        let Ok(addr) = addr else {
            let _ = child.kill();
            let status = child.wait();
            let logs = stderr.lock().map(|l| l.join("\n")).unwrap_or_default();
            panic!("gateway did not start ({status:?}):\n{logs}");
        };
        Gateway {
            child,
            url: format!("http://{addr}"),
            stdout,
            stderr,
            _unread: unread,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(0)
    }

    /// `/api/v1/rack-proxy` + `path`.
    pub fn proxy(&self, path: &str) -> String {
        format!("{}/api/v1/rack-proxy{path}", self.url)
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sends SIGTERM and waits (bounded) for exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// [`Gateway::terminate`] off the async runtime (it waits on the process): the exit
    /// status and the gateway, for its output.
    pub async fn stop(mut self) -> (Option<std::process::ExitStatus>, Gateway) {
        tokio::task::spawn_blocking(move || {
            let exit = self.terminate();
            (exit, self)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Audit JSON lines printed so far.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn all_output(&self) -> String {
        let out = self.stdout.lock().map(|l| l.join("\n")).unwrap_or_default();
        let err = self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default();
        format!("{out}\n{err}")
    }
}

/// Sends a signal with kill(1) (no unsafe code in tests either).
pub fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for tests.
pub fn client() -> reqwest::Client {
    client_builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"))
}

/// A client builder (no proxy settings) for tests that need other settings: it installs the
/// TLS crypto provider first, which a bare `reqwest::Client::builder()` found only when
/// another test in the process had built a client before (it failed when run alone).
pub fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy()
}

/// Opens the store directly (for inspecting audit rows).
pub async fn store(db: &Db) -> gateway::store::Store {
    gateway::store::Store::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("store: {e}"))
}

/// A PostgreSQL connection to `db` inside a transaction that `begin` starts (`BEGIN; …` taking
/// a lock), held until the test sends `COMMIT` or `ROLLBACK` on it.
pub async fn pg_holding(db: &Db, begin: &'static str) -> sqlx::PgConnection {
    use sqlx::{Connection, Executor};
    let mut holder = sqlx::PgConnection::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    holder
        .execute(begin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    holder
}

/// Waits until `f` returns true (bounded).
pub async fn eventually<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(
    mut f: F,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `GET /apps` through `gw` with `token`: the status.
pub async fn list_apps(gw: &Gateway, token: &str) -> Option<u16> {
    client()
        .get(gw.proxy("/apps"))
        .basic_auth("convox", Some(token))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
}

/// The request id the gateway put on a response (empty when missing).
pub fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Waits (bounded) until an audit row that `matches` is committed.
pub async fn audited(
    s: &gateway::store::Store,
    matches: impl Fn(&gateway::store::AuditRow) -> bool,
) -> bool {
    let matches = &matches;
    eventually(|| async move {
        s.audit_rows(0, 10_000)
            .await
            .unwrap_or_default()
            .iter()
            .any(matches)
    })
    .await
}

/// A database trigger refusing some writes, until lifted.
pub struct Refusal {
    conn: sqlx::AnyConnection,
    lift: Vec<String>,
}

/// Makes the database refuse audit inserts where `condition` holds (SQL over `NEW`, the same
/// on both backends), as a store that fails for a while would.
pub async fn refuse_audit_events(db: &Db, condition: &str) -> Refusal {
    refuse_writes(db, "test_refuse_audit", "INSERT", "audit_events", condition).await
}

/// Makes the database refuse `write` (`INSERT`, `UPDATE OF column`, …) on `table` where
/// `condition` holds (SQL over `NEW`, the same on both backends), through a trigger (and on
/// PostgreSQL a function) called `name`, as a database that takes no such writes would.
pub async fn refuse_writes(
    db: &Db,
    name: &str,
    write: &str,
    table: &str,
    condition: &str,
) -> Refusal {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (refuse, lift) = match db.backend {
        Backend::Sqlite => (
            vec![format!(
                "CREATE TRIGGER {name} BEFORE {write} ON {table} WHEN {condition} \
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )],
            vec![format!("DROP TRIGGER {name}")],
        ),
        Backend::Postgres => (
            vec![
                format!(
                    "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN IF {condition} THEN RAISE EXCEPTION 'refused by the test'; \
                     END IF; RETURN NEW; END $$"
                ),
                format!(
                    "CREATE TRIGGER {name} BEFORE {write} ON {table} \
                     FOR EACH ROW EXECUTE FUNCTION {name}()"
                ),
            ],
            vec![
                format!("DROP TRIGGER {name} ON {table}"),
                format!("DROP FUNCTION {name}()"),
            ],
        ),
    };
    for sql in refuse {
        sqlx::Executor::execute(&mut conn, sqlx::AssertSqlSafe(sql.clone()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    Refusal { conn, lift }
}

impl Refusal {
    /// Lets the refused writes in again.
    pub async fn lift(mut self) {
        for sql in std::mem::take(&mut self.lift) {
            sqlx::Executor::execute(&mut self.conn, sqlx::AssertSqlSafe(sql.clone()))
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}

/// Defines `<name>_sqlite` and `<name>_postgres` tests from one async body taking a `Db`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(db) = $crate::kit::database($crate::kit::Backend::Sqlite).await {
                    ($body)(db).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = $crate::kit::database($crate::kit::Backend::Postgres).await {
                    ($body)(db).await;
                }
            }
        }
    };
}

/// A fresh bucket on the local S3 server (moto, started by scripts/test), with Object Lock
/// enabled unless `object_lock` is false; `None` when no S3 server is configured (and none is
/// required).
pub async fn s3_bucket(object_lock: bool) -> Option<S3Bucket> {
    let Ok(endpoint) = std::env::var("RGW_TEST_S3_URL") else {
        if std::env::var("RGW_REQUIRE_S3").is_ok() {
            panic!("RGW_REQUIRE_S3 is set but RGW_TEST_S3_URL is not");
        }
        eprintln!("skipping: RGW_TEST_S3_URL not set (scripts/test starts a local S3 server)");
        return None;
    };
    let name = format!("anchors-{}", uuid::Uuid::new_v4().simple());
    let mut create = client().put(format!("{endpoint}/{name}"));
    if object_lock {
        create = create.header("x-amz-bucket-object-lock-enabled", "true");
    }
    let status = create
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or_else(|e| panic!("create bucket {name}: {e}"));
    assert!(status.is_success(), "create bucket {name}: {status}");
    Some(S3Bucket { endpoint, name })
}

/// The S3 secret the tests configure; it must never show in output.
pub const S3_SECRET: &str = "s3-secret-access-key-do-not-leak";
/// The S3 session token the tests configure; it must never show in output.
pub const S3_SESSION_TOKEN: &str = "s3-session-token-do-not-leak";

/// A bucket on the local S3 server.
pub struct S3Bucket {
    pub endpoint: String,
    pub name: String,
}

impl S3Bucket {
    /// The gateway's `AUDIT_ANCHOR_*` (and AWS credential) variables for this bucket.
    pub fn env(&self, interval_secs: u64) -> Vec<(&'static str, String)> {
        vec![
            ("AUDIT_ANCHOR_BUCKET", self.name.clone()),
            ("AUDIT_ANCHOR_ENDPOINT", self.endpoint.clone()),
            ("AUDIT_ANCHOR_PREFIX", "gateway/anchors".into()),
            ("AUDIT_ANCHOR_REGION", "us-east-1".into()),
            ("AUDIT_ANCHOR_INTERVAL_SECS", interval_secs.to_string()),
            ("AWS_ACCESS_KEY_ID", "AKIATESTANCHORS".into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET.into()),
            ("AWS_SESSION_TOKEN", S3_SESSION_TOKEN.into()),
        ]
    }

    /// A client for the anchors, configured as the gateway is.
    pub fn anchors(&self) -> gateway::audit::anchor::AnchorBucket {
        let env = self.env(1);
        let get = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
        let config = gateway::config::parse_anchors(&get)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("anchor configuration for {}", self.name));
        gateway::audit::anchor::AnchorBucket::new(&config)
            .unwrap_or_else(|e| panic!("anchor bucket: {e}"))
    }
}

/// `rack-gateway-server audit verify` against `db` with `env` added; (success, stdout, stderr).
pub fn verify_with(db: &Db, env: &[(&str, String)]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["audit", "verify"])
        .env("DATABASE_URL", &db.url)
        .env("AUDIT_HMAC_KEY", AUDIT_KEY)
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("run {BIN}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl S3Bucket {
    /// Deletes `key` as someone with the bucket's credentials would: without a version id, so
    /// S3 adds a delete marker (a locked version cannot go). Returns the HTTP status.
    pub async fn delete(&self, key: &str) -> u16 {
        use rusty_s3::S3Action;
        let endpoint = self
            .endpoint
            .parse()
            .unwrap_or_else(|e| panic!("endpoint: {e}"));
        let bucket = rusty_s3::Bucket::new(
            endpoint,
            rusty_s3::UrlStyle::Path,
            self.name.clone(),
            "us-east-1",
        )
        .unwrap_or_else(|e| panic!("bucket: {e}"));
        let credentials =
            rusty_s3::Credentials::new_with_token("AKIATESTANCHORS", S3_SECRET, S3_SESSION_TOKEN);
        let url = bucket
            .delete_object(Some(&credentials), key)
            .sign(Duration::from_secs(60));
        client()
            .delete(url)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|e| panic!("delete {key}: {}", e.without_url()))
    }
}
