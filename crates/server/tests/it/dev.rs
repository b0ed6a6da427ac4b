//! The one-command dev stack: the real `rack-gateway-server dev` binary (fake rack + gateway),
//! driven over HTTP and WebSocket with the tokens it prints.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::both_backends;
use crate::kit::{BIN, Db, admin, client, scratch_dir, signal};

const EXIT_MARKER: &str = "F1E49A85-0AD7-4AEF-A618-C249C6E6568D:";

/// A running `dev` stack.
pub struct Dev {
    pub child: Child,
    pub gateway: String,
    pub tokens: HashMap<String, String>,
    pub output: Arc<Mutex<Vec<String>>>,
    dir: std::path::PathBuf,
    database_url: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Dev {
    pub async fn start(db: &Db) -> Dev {
        Dev::start_with(db, &[]).await
    }

    /// [`Dev::start`] with `extra` flags.
    pub async fn start_with(db: &Db, extra: &[&str]) -> Dev {
        Dev::start_with_env(db, extra, &[]).await
    }

    /// [`Dev::start_with`] with more environment.
    pub async fn start_with_env(db: &Db, extra: &[&str], env: &[(&str, &str)]) -> Dev {
        let dir = scratch_dir();
        let mut cmd = Command::new(BIN);
        cmd.args([
            "dev",
            "--port",
            "0",
            "--rack-port",
            "0",
            "--oidc-port",
            "0",
            "--data-dir",
        ])
        .arg(&dir)
        .args(extra)
        .env("LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        // SQLite lives under --data-dir; the PostgreSQL variant goes through DATABASE_URL.
        if db.url.starts_with("postgres") {
            cmd.env("DATABASE_URL", &db.url);
        } else {
            cmd.env_remove("DATABASE_URL");
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn dev: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        if let Some(out) = child.stdout.take() {
            let lines = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line.clone());
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let (gateway, tokens) = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut gateway = String::new();
            let mut tokens = HashMap::new();
            while Instant::now() < deadline && tokens.len() < 5 {
                let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
                    continue;
                };
                let trimmed = line.trim();
                if let Some(url) = trimmed.strip_prefix("gateway") {
                    gateway = url.trim().to_string();
                }
                let entry = trimmed
                    .split_once(" export RACK_URL=http://convox:")
                    .and_then(|(role, rest)| Some((role, rest.split_once('@')?.0)));
                if let Some((role, token)) = entry {
                    tokens.insert(role.trim().to_string(), token.to_string());
                }
            }
            (gateway, tokens)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let database_url = if db.url.starts_with("postgres") {
            db.url.clone()
        } else {
            format!("sqlite://{}/gateway.db", dir.display())
        };
        let started = Dev {
            child,
            gateway,
            tokens,
            output,
            dir,
            database_url,
        };
        assert!(
            started.gateway.starts_with("http://localhost:") && started.tokens.len() == 5,
            "dev did not print its URLs and tokens:\n{}",
            started
                .output
                .lock()
                .map(|l| l.join("\n"))
                .unwrap_or_default()
        );
        started
    }

    /// Sends Ctrl-C (SIGINT) and waits (at most 15 s) for the stack to exit with status 0.
    pub async fn interrupt_and_expect_a_clean_stop(&mut self) {
        signal(i32::try_from(self.child.id()).unwrap_or(0), "INT");
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut exit = None;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                exit = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            exit.and_then(|s| s.code()),
            Some(0),
            "dev did not stop cleanly"
        );
    }

    /// The stack's database (`DATABASE_URL` for the admin commands).
    pub fn database_url(&self) -> String {
        self.database_url.clone()
    }

    pub fn token(&self, role: &str) -> &str {
        self.tokens
            .get(role)
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1/rack-proxy{path}", self.gateway)
    }

    fn ws(
        &self,
        path: &str,
        role: &str,
        headers: &[(&str, &str)],
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let url = self.url(path).replacen("http://", "ws://", 1);
        let mut request = url.into_client_request().unwrap_or_else(|e| panic!("{e}"));
        let auth = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("convox:{}", self.token(role)),
        );
        let h = request.headers_mut();
        h.insert(
            "authorization",
            format!("Basic {auth}")
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
                v.parse().unwrap_or_else(|e| panic!("{e}")),
            );
        }
        request
    }

    pub(crate) async fn get_json(&self, role: &str, path: &str) -> (u16, serde_json::Value) {
        let resp = client()
            .get(self.url(path))
            .basic_auth("convox", Some(self.token(role)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or_default())
    }
}

/// Reads a socket until `stop` says so, the stream ends, or 20 s pass; returns the text.
async fn read_socket<S>(socket: &mut S, stop: impl Fn(&str) -> bool) -> String
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Text(t) => text.push_str(&t),
                Message::Binary(b) if b.is_empty() => break,
                Message::Binary(b) => text.push_str(&String::from_utf8_lossy(&b)),
                Message::Close(_) => break,
                _ => {}
            }
            if stop(&text) {
                break;
            }
        }
    })
    .await;
    text
}

both_backends!(dev_lists_apps_for_every_role, |db| async move {
    let dev = Dev::start(&db).await;
    for role in ["admin", "deployer", "ops", "viewer", "cicd"] {
        let (status, apps) = dev.get_json(role, "/apps").await;
        assert_eq!(status, 200, "{role}");
        let names: Vec<&str> = apps
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(names.contains(&"web"), "{role}: {apps}");
    }
    // A denied command names the permission.
    let resp = client()
        .delete(dev.url("/apps/web"))
        .basic_auth("convox", Some(dev.token("deployer")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("convox:apps:delete")
    );
});

both_backends!(dev_streams_logs_until_a_known_line, |db| async move {
    let dev = Dev::start(&db).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(dev.ws(
        "/apps/web/logs",
        "viewer",
        &[("follow", "true"), ("since", "1h")],
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let text = read_socket(&mut socket, |t| t.contains("heartbeat=2")).await;
    assert!(text.contains("heartbeat=2"), "followed logs: {text}");
    assert!(
        text.lines().any(|l| l.contains(" service/web/")),
        "seeded lines: {text}"
    );
});

both_backends!(dev_exec_round_trip_passes_the_exit_code, |db| async move {
    let dev = Dev::start(&db).await;
    let (status, processes) = dev.get_json("ops", "/apps/web/processes").await;
    assert_eq!(status, 200);
    let pid = processes[0]["id"].as_str().unwrap_or_default().to_string();
    assert!(!pid.is_empty(), "{processes}");
    let (mut socket, _) = tokio_tungstenite::connect_async(dev.ws(
        &format!("/apps/web/processes/{pid}/exec"),
        "ops",
        &[("command", "sh"), ("tty", "false")],
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    socket
        .send(Message::Text("echo hello\n".into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    socket
        .send(Message::Text("exit 7\n".into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = read_socket(&mut socket, |t| t.contains(EXIT_MARKER)).await;
    assert!(text.contains("hello\n"), "{text}");
    assert!(text.contains(&format!("{EXIT_MARKER}7")), "{text}");
    // A viewer cannot.
    let refused = tokio_tungstenite::connect_async(dev.ws(
        &format!("/apps/web/processes/{pid}/exec"),
        "viewer",
        &[],
    ))
    .await;
    assert!(
        matches!(refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403)
    );
});

both_backends!(dev_deploys_a_50_mib_tarball, |db| async move {
    let dev = Dev::start(&db).await;
    let c = client();
    let deployer = dev.token("deployer");
    let size: u64 = 50 * 1024 * 1024;
    let chunk = bytes::Bytes::from(vec![1u8; 1024 * 1024]);
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..size / chunk.len() as u64).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    ));
    let resp = c
        .post(dev.url("/apps/web/objects/tmp/deploy-test.tgz"))
        .basic_auth("convox", Some(deployer))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let object: serde_json::Value = resp.json().await.unwrap_or_default();
    let url = object["url"]
        .as_str()
        .or(object["Url"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(url.starts_with("object://"), "{object}");

    let resp = c
        .post(dev.url("/apps/web/builds"))
        .basic_auth("convox", Some(deployer))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "url={}&description=test",
            url.replace('/', "%2F").replace(':', "%3A")
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let build: serde_json::Value = resp.json().await.unwrap_or_default();
    let build_id = build["id"].as_str().unwrap_or_default().to_string();
    assert!(build_id.starts_with('B'), "{build}");

    let (mut socket, _) = tokio_tungstenite::connect_async(dev.ws(
        &format!("/apps/web/builds/{build_id}/logs"),
        "deployer",
        &[],
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let logs = read_socket(&mut socket, |t| t.contains("Release: R")).await;
    assert!(logs.contains(&format!("Build: {build_id}")), "{logs}");
    let release = logs
        .lines()
        .find_map(|l| l.trim().strip_prefix("Release: "))
        .unwrap_or_default()
        .to_string();

    let resp = c
        .post(dev.url(&format!("/apps/web/releases/{release}/promote")))
        .basic_auth("convox", Some(deployer))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200, "promote {release}");
    let (_, app) = dev.get_json("viewer", "/apps/web").await;
    assert_eq!(app["release"], release.as_str());
    // A viewer may not upload.
    let resp = c
        .post(dev.url("/apps/web/objects/tmp/x.tgz"))
        .basic_auth("convox", Some(dev.token("viewer")))
        .body("x")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 403);
});

both_backends!(dev_env_set_then_read, |db| async move {
    let dev = Dev::start(&db).await;
    let (_, app) = dev.get_json("deployer", "/apps/web").await;
    let current = app["release"].as_str().unwrap_or_default().to_string();
    let (status, release) = dev
        .get_json("deployer", &format!("/apps/web/releases/{current}"))
        .await;
    assert_eq!(status, 200);
    let env = release["env"].as_str().unwrap_or_default().to_string();
    assert!(env.contains("RAILS_ENV=production"), "{release}");
    let new_env = format!("{env}\nFEATURE_FLAG=on");
    let resp = client()
        .post(dev.url("/apps/web/releases"))
        .basic_auth("convox", Some(dev.token("deployer")))
        .form(&[("env", new_env.as_str())])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let created: serde_json::Value = resp.json().await.unwrap_or_default();
    let id = created["id"].as_str().unwrap_or_default().to_string();
    let (_, read) = dev
        .get_json("ops", &format!("/apps/web/releases/{id}"))
        .await;
    assert!(
        read["env"]
            .as_str()
            .unwrap_or_default()
            .contains("FEATURE_FLAG=on"),
        "{read}"
    );
    // Viewers may not read releases (they carry the environment).
    let (status, _) = dev
        .get_json("viewer", &format!("/apps/web/releases/{id}"))
        .await;
    assert_eq!(status, 403);
    // And the secret values never reach the audit lines.
    let output = dev.output.lock().map(|l| l.join("\n")).unwrap_or_default();
    assert!(!output.contains("s3cr3t"), "env value in audit output");
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_stops_cleanly_on_ctrl_c() {
    let Some(db) = crate::kit::database(crate::kit::Backend::Sqlite).await else {
        return;
    };
    let mut dev = Dev::start(&db).await;
    let (status, _) = dev.get_json("viewer", "/apps").await;
    assert_eq!(status, 200);
    dev.interrupt_and_expect_a_clean_stop().await;
    // dev's set-up events (written as the command line writes) were printed twice at times:
    // as this process's own and as admin commands' fetched from the database.
    let lines = dev.output.lock().map(|l| l.clone()).unwrap_or_default();
    let mut seqs: Vec<i64> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "audit")
        .filter_map(|v| v["seq"].as_i64())
        .collect();
    assert!(!seqs.is_empty(), "{lines:?}");
    let printed = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), printed, "an event printed twice: {lines:?}");
}

/// `dev --metrics-port 0`: the banner says where the metrics are, they count what the stack
/// serves, and Ctrl-C still stops everything (a scrape's hold on the gateway is let go).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_metrics_when_asked_and_still_stops_cleanly() {
    let Some(db) = crate::kit::database(crate::kit::Backend::Sqlite).await else {
        return;
    };
    let mut dev = Dev::start_with(&db, &["--metrics-port", "0"]).await;
    let metrics = dev
        .output
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default()
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("metrics")
                .map(|u| u.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no metrics line in the banner"));
    assert!(
        metrics.starts_with("http://127.0.0.1:") && metrics.ends_with("/metrics"),
        "{metrics}"
    );
    let (status, _) = dev.get_json("viewer", "/apps").await;
    assert_eq!(status, 200);
    let counted = "rack_gateway_http_requests_total{area=\"proxy\",code=\"200\"} 1";
    let text = crate::kit::client()
        .get(&metrics)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains(counted), "{text}");
    assert!(!text.contains(dev.token("viewer")));
    dev.interrupt_and_expect_a_clean_stop().await;
}

/// `dev | head -3`: stdout closed before the banner. The banner was printed with `println!`,
/// which panicked on the closed pipe and took the whole stack down (exit 101); now the stack
/// says so on stderr and keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_keeps_serving_when_its_stdout_is_closed() {
    let dir = scratch_dir();
    let mut child = Command::new(BIN)
        .args(["dev", "--port", "0", "--rack-port", "0", "--oidc-port", "0"])
        .arg("--data-dir")
        .arg(&dir)
        .env("LOG_FORMAT", "json")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn dev: {e}"));
    drop(child.stdout.take());
    let stderr = child.stderr.take();
    let (lines, addr) = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        let mut addr = None;
        for line in stderr
            .map(BufReader::new)
            .into_iter()
            .flat_map(|r| r.lines())
        {
            let Ok(line) = line else { break };
            let parsed = serde_json::from_str::<serde_json::Value>(&line).ok();
            addr = parsed
                .as_ref()
                .and_then(|v| v["fields"]["addr"].as_str())
                .map(str::to_string);
            lines.push(line);
            if addr.is_some() {
                break;
            }
        }
        (lines, addr)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let status = child.try_wait().ok().flatten();
    let Some(addr) = addr else {
        let _ = child.kill();
        panic!("dev did not get to listening ({status:?}): {lines:#?}");
    };
    assert!(
        lines
            .iter()
            .any(|l| l.contains("API tokens were not printed")),
        "{lines:#?}"
    );
    let health = client()
        .get(format!("http://{addr}/api/v1/health"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(health.ok(), Some(200));
    signal(i32::try_from(child.id()).unwrap_or(0), "INT");
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(exit.ok().and_then(|s| s.code()), Some(0));
}

/// Runs `dev` with `env`, its data under `dir`, on port 1 for all three servers: it ends at
/// the second bind at the latest, after whatever it checks and says before starting.
fn dev_on_port_one(dir: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(["dev", "--port", "1", "--rack-port", "1", "--oidc-port", "1"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn dev_refuses_a_bad_setting_before_it_starts_anything() {
    // Had dev made its data directory or bound its ports first (port 1, and the same one
    // three times), the error would be about a port, not the setting.
    let dir = scratch_dir();
    let out = dev_on_port_one(&dir, &[("SQLITE_SYNCHRONOUS", "sometimes")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SQLITE_SYNCHRONOUS is invalid"), "{err}");
    assert!(
        !dir.join("data").exists(),
        "dev created its data directory first"
    );
}

#[test]
fn dev_names_the_settings_it_ignores() {
    // `RACK_HOST` exported for `serve`, then `dev` run in the same shell: the fake rack is
    // what answers, so dev says so, and names a misspelt setting as `serve` does. (It stops
    // on port 1 given three times; the warnings come first.)
    let dir = scratch_dir();
    let out = dev_on_port_one(
        &dir,
        &[
            ("RACK_HOST", "https://rack.example.com"),
            ("OIDC_ISSUER", "https://accounts.google.com"),
            ("DATABSE_URL", "postgres://gateway@db.internal/gateway"),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dev runs its own fake rack and sign-in and ignores OIDC_ISSUER, RACK_HOST"),
        "{err}"
    );
    assert!(
        err.contains("DATABSE_URL is not a setting (did you mean DATABASE_URL?)"),
        "{err}"
    );
}

#[test]
fn dev_keeps_one_mfa_key_in_its_data_directory_and_checks_it() {
    use std::os::unix::fs::PermissionsExt;
    // A misspelt key is named before anything is made.
    let dir = scratch_dir();
    let out = dev_on_port_one(&dir, &[("MFA_ENCRYPTION_KEY", "not-hex")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MFA_ENCRYPTION_KEY is invalid"), "{err}");
    assert!(!dir.join("data").exists(), "made before the check");
    let out = dev_on_port_one(&dir, &[("MFA_REQUIRED", "sometimes")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MFA_REQUIRED is invalid"), "{err}");
    assert!(!dir.join("data").exists(), "made before the check");

    // Without one, dev makes a key of its own (owner-only) and keeps it for the next start.
    let _ = dev_on_port_one(&dir, &[]);
    let path = dir.join("data").join("mfa-encryption.key");
    let key = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(key.trim().len(), 64, "{key}");
    assert!(key.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode.ok(), Some(0o600));
    let _ = dev_on_port_one(&dir, &[]);
    let again = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, key, "kept, not made again");

    // A damaged file is named, not replaced (the apps sealed with it would stop opening).
    std::fs::write(&path, "garbage\n").unwrap_or_else(|e| panic!("{e}"));
    let out = dev_on_port_one(&dir, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mfa-encryption.key holds no key"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).ok().as_deref(),
        Some("garbage\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

both_backends!(
    dev_announces_later_changes_but_not_its_own_set_up,
    |db| async move {
        let smtp = crate::fake_notify::FakeSmtp::start().await;
        let slack = crate::fake_notify::FakeSlack::start().await;
        let env = [
            ("SMTP_URL", smtp.url.as_str()),
            ("EMAIL_FROM", "gw@example.com"),
            ("EMAIL_ALERTS_TO", "security@example.com"),
            ("SLACK_WEBHOOK_URL", slack.url.as_str()),
            ("SLACK_SIGNING_SECRET", crate::fake_notify::SIGNING_SECRET),
            ("SLACK_BOT_TOKEN", crate::fake_notify::BOT_TOKEN),
            ("SLACK_API_URL", slack.api_url.as_str()),
        ];
        let dev = Dev::start_with_env(&db, &[], &env).await;
        // Approving from Slack is on from the start (an unsigned press is refused as such),
        // while notifications wait for the set-up to end.
        let unsigned = client()
            .post(format!("{}/api/v1/slack/interactions", dev.gateway))
            .body("payload=%7B%7D")
            .send()
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(unsigned.ok(), Some(401));
        let admin = dev.tokens.get("admin").cloned().unwrap_or_default();
        let locked = client()
            .post(format!(
                "{}/api/v1/users/viewer@example.com/lock",
                dev.gateway
            ))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(locked.status(), 200);
        let told = crate::kit::eventually(|| async {
            smtp.mails()
                .iter()
                .any(|m| m.to == ["viewer@example.com"] && m.data.contains("was locked by"))
        })
        .await;
        let mails = smtp.mails();
        assert!(told, "{mails:#?}");
        // The test users it added and the tokens it issued were set-up, not news.
        assert!(
            !mails.iter().any(|m| m.data.contains("was added by")
                || (m.data.contains("API token dev-") && m.data.contains(" created by "))),
            "{mails:#?}"
        );
        let heard = crate::kit::eventually(|| async {
            slack
                .texts()
                .iter()
                .any(|t| t.contains("viewer@example.com was locked"))
        })
        .await;
        let texts = slack.texts();
        assert!(heard, "{texts:#?}");
        assert!(
            !texts.iter().any(|t| t.contains("was added by")),
            "{texts:#?}"
        );
    }
);

// `DATABASE_URL` still exported for the admin commands, then `dev` run in the same shell: a
// real gateway's database must not get dev's test users, a printed admin token, or its own
// tokens named dev-… revoked. A database dev set up itself is dev's to start on again.
both_backends!(
    dev_does_not_run_on_a_database_it_did_not_set_up,
    |db| async move {
        let (ok, _, err) = admin(&db, &["users", "add", "ann@example.com", "--role", "admin"]);
        assert!(ok, "{err}");
        let _ci = crate::kit::token(&db, "dev-deploy", &["--role", "cicd"]);
        let dir = scratch_dir();
        let out = dev_on_port_one(&dir, &[("DATABASE_URL", db.url.as_str())]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("that are not dev's"), "{err}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("rgw_"),
            "a token printed"
        );
        let st = crate::kit::store(&db).await;
        let added = st.find_user("admin@example.com").await.ok().flatten();
        assert!(added.is_none(), "dev added its test users");
        let tokens = st.list_tokens().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            tokens.iter().all(|t| t.revoked_at.is_none()),
            "dev revoked a token of the gateway's"
        );
    }
);

// A database dev set up itself (marked so) is dev's to start on again.
both_backends!(
    dev_starts_again_on_the_database_it_set_up,
    |db| async move {
        for run in 0..2 {
            let dev = Dev::start(&db).await;
            assert!(dev.token("admin").starts_with("rgw_"), "run {run}");
            drop(dev);
        }
    }
);

// Nor does it refuse one that holds nothing yet but the schema (set up, then stopped), or only
// its own test admin and dev-admin token (set up by a dev from before databases were marked).
// (Port 1 stops it after the database check.)
both_backends!(
    dev_takes_a_database_with_nothing_of_anyone_elses,
    |db: Db| async move {
        let dir = scratch_dir();
        let dev_on = |dir: &std::path::Path| {
            let out = dev_on_port_one(dir, &[("DATABASE_URL", db.url.as_str())]);
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        let (ok, _, err) = admin(&db, &["migrate"]);
        assert!(ok, "{err}");
        let err = dev_on(&dir);
        assert!(!err.contains("that are not dev's"), "{err}");
        let (ok, _, err) = admin(
            &db,
            &["users", "add", "admin@example.com", "--role", "admin"],
        );
        assert!(ok, "{err}");
        let _ = crate::kit::token(&db, "dev-admin", &["--role", "admin"]);
        let err = dev_on(&dir);
        assert!(!err.contains("that are not dev's"), "{err}");
        // Someone else beside them: not dev's.
        let (ok, _, err) = admin(&db, &["users", "add", "ann@example.com", "--role", "admin"]);
        assert!(ok, "{err}");
        let err = dev_on(&dir);
        assert!(err.contains("that are not dev's"), "{err}");
    }
);
