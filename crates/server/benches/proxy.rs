//! Proxy overhead benchmark (not a test): the same small authenticated GET sent straight to an
//! upstream and through the real `rack-gateway-server` binary, in one run, with their ratio.
//!
//!     cargo bench -p rack-gateway-server --bench proxy
//!
//! Environment: `BENCH_SECS` (per phase, default 5), `BENCH_CONCURRENCY` (default 16),
//! `BENCH_DATABASE_URL` (default: a fresh SQLite file).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;

const BIN: &str = env!("CARGO_BIN_EXE_rack-gateway-server");
const RACK_TOKEN: &str = "bench-rack-token";

#[derive(Debug)]
struct Stats {
    requests: usize,
    errors: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn drive(url: String, auth: String, concurrency: usize, secs: u64) -> Stats {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"));
    // Warm up connections and caches.
    for _ in 0..50 {
        let _ = client.get(&url).header("authorization", &auth).send().await;
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.clone();
        let auth = auth.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.get(&url).header("authorization", &auth).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    Stats {
        requests: all.len(),
        errors,
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(async move {
        // The upstream: a tiny JSON answer, like `GET /apps` on a small rack.
        let app = Router::new().route(
            "/apps",
            get(|| async { axum::Json(serde_json::json!([{"name": "web", "status": "running"}])) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let upstream = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let dir = std::env::temp_dir().join(format!("rgw-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let db = std::env::var("BENCH_DATABASE_URL")
            .unwrap_or_else(|_| format!("sqlite://{}/bench.db", dir.display()));
        let key = "bench-audit-key-0123456789abcdef0123456789";
        let out = Command::new(BIN)
            .args(["tokens", "create", "--name", "bench", "--role", "viewer"])
            .env("DATABASE_URL", &db)
            .env("AUDIT_HMAC_KEY", key)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let token = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
        let mut child = Command::new(BIN)
            .arg("serve")
            .env("DATABASE_URL", &db)
            .env("AUDIT_HMAC_KEY", key)
            .env("RACK_HOST", format!("http://{upstream}"))
            .env("RACK_TOKEN", RACK_TOKEN)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .env("AUDIT_STDOUT", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let mut addr = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let parsed = serde_json::from_str::<serde_json::Value>(&line).ok();
            if let Some(a) = parsed.as_ref().and_then(|v| v["fields"]["addr"].as_str()) {
                addr = a.to_string();
                break;
            }
        }
        let basic = |t: &str| {
            format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("convox:{t}")))
        };
        let direct = drive(format!("http://{upstream}/apps"), basic(RACK_TOKEN), concurrency, secs).await;
        // Where the overhead goes: the HTTP stack alone, then authentication alone.
        let health = drive(format!("http://{addr}/api/v1/health"), String::new(), concurrency, secs).await;
        let auth_only = drive(format!("http://{addr}/api/v1/info"), basic(&token), concurrency, secs).await;
        let gateway = drive(
            format!("http://{addr}/api/v1/rack-proxy/apps"),
            basic(&token),
            concurrency,
            secs,
        )
        .await;
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        let backend = if db.starts_with("postgres") { "PostgreSQL" } else { "SQLite" };
        println!("\nGET /apps, {concurrency} concurrent clients, {secs} s per phase, store: {backend}\n");
        println!("| path | requests | errors | req/s | p50 ms | p99 ms |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for (name, s) in [
            ("direct to upstream", &direct),
            ("gateway: /api/v1/health (no auth, no store)", &health),
            ("gateway: /api/v1/info (token lookup only)", &auth_only),
            ("through rack-gateway (auth + audit + forward)", &gateway),
        ] {
            println!(
                "| {name} | {} | {} | {:.0} | {:.3} | {:.3} |",
                s.requests, s.errors, s.rps, s.p50_ms, s.p99_ms
            );
        }
        println!(
            "\nratio gateway/direct: throughput {:.2}, p50 latency {:.2}x, p99 latency {:.2}x; added p99 {:.3} ms",
            gateway.rps / direct.rps,
            gateway.p50_ms / direct.p50_ms,
            gateway.p99_ms / direct.p99_ms,
            gateway.p99_ms - direct.p99_ms
        );
    });
}
