//! Test kit: the real `rack-gateway-server dev` stack (fake rack + gateway + dev OIDC) on free
//! ports, one per test, and the real `rack-gateway` binary run with its own config file.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The CLI under test.
pub const CLI: &str = env!("CARGO_BIN_EXE_rack-gateway");

/// Longest a single CLI invocation may take before the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The server binary: next to the CLI in the same target directory, or
/// `RACK_GATEWAY_SERVER_BIN`. It is built when missing, or when its sources changed after it
/// was built: `cargo test -p rack-gateway-cli` alone does not build it (another package's
/// binary), and a stale one would test the CLI against yesterday's gateway and fake rack.
pub fn server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("RACK_GATEWAY_SERVER_BIN") {
            return PathBuf::from(p);
        }
        let bin = Path::new(CLI).with_file_name(format!(
            "rack-gateway-server{}",
            std::env::consts::EXE_SUFFIX
        ));
        let why = match std::fs::metadata(&bin).and_then(|m| m.modified()) {
            Ok(built) => newer_server_source(built)
                .map(|changed| format!("{} changed after it was built", changed.display())),
            Err(_) => Some("there is none yet".to_string()),
        };
        if let Some(why) = why {
            eprintln!("building {}: {why}", bin.display());
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "-p",
                    "rack-gateway-server",
                    "--bin",
                    "rack-gateway-server",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .unwrap_or_else(|e| panic!("cargo build -p rack-gateway-server: {e}"));
            assert!(status.success(), "building rack-gateway-server failed");
        }
        assert!(bin.exists(), "no server binary at {}", bin.display());
        bin
    })
    .clone()
}

/// A file the server binary is built from that changed after `built`, if there is one.
fn newer_server_source(built: std::time::SystemTime) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let crates = [
        "server",
        "gateway",
        "gateway-core",
        "convox-api",
        "dev-oidc",
        "mock-rack",
    ];
    let mut todo: Vec<PathBuf> = crates.iter().map(|c| root.join("crates").join(c)).collect();
    todo.extend([root.join("Cargo.toml"), root.join("Cargo.lock")]);
    while let Some(path) = todo.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            let entries = std::fs::read_dir(&path).into_iter().flatten().flatten();
            // Tests, benches and the cases proptest saves are not in the binary.
            let outside = ["tests", "benches", "proptest-regressions", "target"];
            todo.extend(
                entries
                    .map(|e| e.path())
                    .filter(|p| !outside.iter().any(|o| p.ends_with(o))),
            );
        } else if meta.modified().is_ok_and(|m| m > built) {
            return Some(path);
        }
    }
    None
}

/// A running `dev` stack; stopped when dropped.
pub struct Dev {
    child: Child,
    /// Gateway base URL.
    pub gateway: String,
    /// The fake rack's URL (its token stays inside the gateway).
    pub rack: String,
    tokens: HashMap<String, String>,
    /// Everything `dev` printed (audit lines included).
    pub output: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    /// Starts `rack-gateway-server dev` on free ports with SQLite in a temporary directory.
    pub fn start() -> Dev {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new(server_bin())
            .args([
                "dev",
                "--port",
                "0",
                "--rack-port",
                "0",
                "--oidc-port",
                "0",
                "--data-dir",
            ])
            .arg(dir.path())
            .env_remove("DATABASE_URL")
            .env("LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn dev: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        if let Some(out) = child.stdout.take() {
            let lines = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line.clone());
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut gateway, mut rack) = (String::new(), String::new());
        let mut tokens = HashMap::new();
        while Instant::now() < deadline && tokens.len() < 5 {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            let t = line.trim();
            if let Some(url) = t.strip_prefix("gateway") {
                gateway = url.trim().to_string();
            }
            if let Some(rest) = t.strip_prefix("fake rack") {
                rack = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
            let entry = t
                .split_once(" export RACK_URL=http://convox:")
                .and_then(|(role, rest)| Some((role.trim().to_string(), rest.split_once('@')?.0)));
            if let Some((role, token)) = entry {
                tokens.insert(role, token.to_string());
            }
        }
        let dev = Dev {
            child,
            gateway,
            rack,
            tokens,
            output,
            _dir: dir,
        };
        assert!(
            dev.gateway.starts_with("http://localhost:") && dev.tokens.len() == 5,
            "dev did not print its URLs and tokens:\n{}",
            dev.output.lock().map(|l| l.join("\n")).unwrap_or_default()
        );
        dev
    }

    /// The dev stack's database, for admin subcommands.
    pub fn database_url(&self) -> String {
        format!("sqlite://{}/gateway.db", self._dir.path().display())
    }

    /// The API token `dev` issued for `role`.
    pub fn token(&self, role: &str) -> &str {
        self.tokens
            .get(role)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no token for {role}"))
    }
}

/// What a CLI run produced.
#[derive(Debug)]
pub struct Out {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Out {
    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "expected success:\n{self:?}");
        self.stdout
    }

    /// Asserts failure and returns stderr.
    pub fn failed(self) -> String {
        assert_ne!(self.code, 0, "expected failure:\n{self:?}");
        self.stderr
    }

    /// stdout as JSON.
    pub fn json(self) -> serde_json::Value {
        let text = self.ok();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
    }
}

/// A user of the CLI: their own config file and working directory.
pub struct Home {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Home {
    /// A fresh home.
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
            env: Vec::new(),
        }
    }

    /// The home's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The config file the CLI uses.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config").join("config.json")
    }

    /// The config file as JSON.
    pub fn config(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.config_path()).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Replaces the config file.
    pub fn write_config(&self, config: &serde_json::Value) {
        std::fs::write(self.config_path(), config.to_string()).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Sets an environment variable for every later run.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.into(), value.into()));
    }

    /// The CLI command, isolated from the caller's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(CLI);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("RACK_GATEWAY_CONFIG", self.config_path())
            .env_remove("RACK_GATEWAY_RACK")
            .env_remove("RACK_GATEWAY_DIRECT_RACK_URL")
            .env_remove("RACK_URL")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs the CLI with no stdin.
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_with(self.command(args), None)
    }

    /// Runs the CLI with `input` on stdin.
    pub fn run_input(&self, args: &[&str], input: &str) -> Out {
        self.run_with(self.command(args), Some(input))
    }

    /// Runs `cmd` (stdin: `input`, or nothing), failing the test after a minute.
    pub fn run_with(&self, mut cmd: Command, input: Option<&str>) -> Out {
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {CLI}: {e}"));
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            let text = text.to_string();
            std::thread::spawn(move || {
                let _ = stdin.write_all(text.as_bytes());
            });
        }
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(RUN_TIMEOUT) {
            Ok(Ok(out)) => Out {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Ok(Err(e)) => panic!("waiting for the CLI: {e}"),
            Err(_) => {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                panic!("the CLI did not finish within {RUN_TIMEOUT:?}: {cmd:?}");
            }
        }
    }

    /// `login <rack> <gateway> --token <role's token>`, asserting success.
    pub fn login(&self, dev: &Dev, rack: &str, role: &str) {
        let out = self.run(&["login", rack, &dev.gateway, "--token", dev.token(role)]);
        let text = out.ok();
        assert!(text.contains(&format!("role {role}")), "{text}");
    }
}

/// A free TCP port on 127.0.0.1 (nothing listens there once this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The first process id of `app` (via the CLI's JSON output).
pub fn first_pid(home: &Home, app: &str) -> String {
    let ps = home.run(&["ps", "-a", app, "--json"]).json();
    ps[0]["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no process in {ps}"))
}
