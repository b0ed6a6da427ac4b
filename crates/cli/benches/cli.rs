//! CLI benchmark (not a test): wall time of `rack-gateway apps` and `rack-gateway ps -a web`
//! through the gateway of a `rack-gateway-server dev` stack, next to the same commands sent
//! straight to a fake rack (`RACK_GATEWAY_DIRECT_RACK_URL`), and the same requests as single
//! HTTP calls (curl-equivalent, one kept-alive client). Median and p90 of N runs.
//!
//!     cargo bench -p rack-gateway-cli --bench cli
//!
//! Environment: `BENCH_RUNS` (default 30). The fake rack for the direct runs is the same code
//! with the same seed as the one behind `dev`, so both answer the same data.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_rack-gateway");
const RACK_TOKEN: &str = "bench-rack-token";

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_bin() -> PathBuf {
    let bin = Path::new(CLI).with_file_name("rack-gateway-server");
    if !bin.exists() {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args([
            "build",
            "-p",
            "rack-gateway-server",
            "--bin",
            "rack-gateway-server",
        ]);
        if CLI.contains("/release/") {
            cmd.arg("--release");
        }
        let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "building rack-gateway-server failed");
    }
    bin
}

/// Starts `dev`; returns it with the gateway URL and the ops token.
fn start_dev(dir: &Path) -> (Dev, String, String) {
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
        .arg(dir)
        .env_remove("DATABASE_URL")
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn dev: {e}"));
    let out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let dev = Dev(child);
    let (mut gateway, mut token) = (String::new(), String::new());
    let mut lines = BufReader::new(out).lines();
    while let Some(Ok(line)) = lines.next() {
        let t = line.trim();
        if let Some(url) = t.strip_prefix("gateway") {
            gateway = url.trim().to_string();
        }
        if let Some(rest) = t.strip_prefix("ops") {
            token = rest
                .split_once("convox:")
                .and_then(|(_, r)| r.split_once('@'))
                .map(|(t, _)| t.to_string())
                .unwrap_or_default();
        }
        if !gateway.is_empty() && !token.is_empty() {
            break;
        }
    }
    // Keep draining the audit lines so dev never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    assert!(
        !gateway.is_empty() && !token.is_empty(),
        "dev printed no URL/token"
    );
    (dev, gateway, token)
}

/// A fake rack in this process (seed 1, like `dev`), on its own runtime thread.
fn start_rack() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
            let _ = tx.send(format!("http://127.0.0.1:{}", addr.port()));
            let config = mock_rack::MockRackConfig {
                token: RACK_TOKEN.into(),
                seed: 1,
            };
            let _ = mock_rack::serve(listener, config, std::future::pending()).await;
        });
    });
    rx.recv().unwrap_or_else(|e| panic!("{e}"))
}

#[derive(Clone, Copy)]
enum Via {
    Gateway,
    Direct,
}

fn cli(config: &Path, rack_url: &str, via: Via, args: &[&str]) -> Duration {
    let mut cmd = Command::new(CLI);
    cmd.args(args)
        .env("RACK_GATEWAY_CONFIG", config)
        .env_remove("RACK_GATEWAY_RACK")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match via {
        Via::Gateway => cmd.env_remove("RACK_GATEWAY_DIRECT_RACK_URL"),
        Via::Direct => cmd.env(
            "RACK_GATEWAY_DIRECT_RACK_URL",
            rack_url.replacen("http://", &format!("http://convox:{RACK_TOKEN}@"), 1),
        ),
    };
    let started = Instant::now();
    let status = cmd.status().unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed();
    assert!(status.success(), "rack-gateway {args:?} failed");
    took
}

fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(samples[samples.len() / 2]);
    let p90 = ms(samples[(samples.len() * 9 / 10).min(samples.len() - 1)]);
    (median, p90)
}

fn main() {
    convox_api::client::install_crypto_provider();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .max(1);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (_dev, gateway, token) = start_dev(&dir.path().join("dev"));
    let rack = start_rack();
    let config = dir.path().join("config.json");
    let login = Command::new(CLI)
        .args(["login", "bench", &gateway, "--token", &token])
        .env("RACK_GATEWAY_CONFIG", &config)
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(login.success(), "login failed");

    println!("rack-gateway CLI benchmark: {runs} runs each, wall time per command (ms)");
    println!(
        "{:<34}{:>10}{:>10}{:>12}{:>10}",
        "command", "gateway", "direct", "overhead", "ratio"
    );
    for args in [&["apps"][..], &["ps", "-a", "web"][..]] {
        // Warm up (page cache, connection setup on the server side).
        for via in [Via::Gateway, Via::Direct] {
            cli(&config, &rack, via, args);
        }
        let mut g = Vec::with_capacity(runs);
        let mut d = Vec::with_capacity(runs);
        for _ in 0..runs {
            g.push(cli(&config, &rack, Via::Gateway, args));
            d.push(cli(&config, &rack, Via::Direct, args));
        }
        let ((gm, gp), (dm, dp)) = (stats(g), stats(d));
        println!(
            "{:<34}{:>10.2}{:>10.2}{:>+12.2}{:>9.2}x   (p90 {gp:.2} / {dp:.2})",
            format!("rack-gateway {}", args.join(" ")),
            gm,
            dm,
            gm - dm,
            gm / dm
        );
    }

    // The same requests as single HTTP calls on a kept-alive connection.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        for path in ["/apps", "/apps/web/processes"] {
            let mut g = Vec::with_capacity(runs);
            let mut d = Vec::with_capacity(runs);
            let gw_url = format!("{gateway}/api/v1/rack-proxy{path}");
            let rack_url = format!("{rack}{path}");
            for i in 0..runs + 5 {
                for (url, pass, out) in [
                    (&gw_url, token.as_str(), &mut g),
                    (&rack_url, RACK_TOKEN, &mut d),
                ] {
                    let started = Instant::now();
                    let resp = http
                        .get(url)
                        .basic_auth("convox", Some(pass))
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    assert!(resp.status().is_success(), "{url}: {}", resp.status());
                    let _ = resp.bytes().await;
                    if i >= 5 {
                        out.push(started.elapsed());
                    }
                }
            }
            let ((gm, gp), (dm, dp)) = (stats(g), stats(d));
            println!(
                "{:<34}{:>10.2}{:>10.2}{:>+12.2}{:>9.2}x   (p90 {gp:.2} / {dp:.2})",
                format!("HTTP GET {path}"),
                gm,
                dm,
                gm - dm,
                gm / dm
            );
        }
    });
}
