//! Closed-loop HTTP load with Debian's `wrk`: a Lua script sets the method and the
//! Authorization header and, in `done()`, prints one JSON line with the counts and latency
//! percentiles.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

/// One load phase.
pub struct Load<'a> {
    pub url: &'a str,
    pub method: &'a str,
    pub authorization: &'a str,
    pub concurrency: u32,
    pub duration: Duration,
}

/// What wrk measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadResult {
    pub requests: u64,
    /// Non-2xx/3xx answers (wrk counts status > 399) plus socket errors and timeouts.
    pub errors: u64,
    pub status_errors: u64,
    pub socket_errors: u64,
    pub secs: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
}

const DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\"requests\":%d,\"duration_us\":%d,\"connect\":%d,\"read\":%d,\"write\":%d,"
    .. "\"status\":%d,\"timeout\":%d,\"p50_us\":%d,\"p99_us\":%d,\"p999_us\":%d,"
    .. "\"mean_us\":%.1f,\"max_us\":%d}\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max))
end
"#;

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// Runs wrk once (`-t1` for one connection, `-t2` otherwise) and parses its `done()` line.
pub fn run(load: &Load<'_>, scratch: &Path) -> anyhow::Result<LoadResult> {
    let script = scratch.join(format!(
        "wrk-{}-{}.lua",
        load.method.to_lowercase(),
        load.concurrency
    ));
    let mut lua = format!(
        "wrk.method = {}\nwrk.headers[\"Authorization\"] = {}\n",
        lua_string(load.method),
        lua_string(load.authorization)
    );
    if load.method != "GET" {
        // An empty body: wrk then sends `Content-Length: 0`.
        lua.push_str("wrk.body = \"\"\n");
    }
    lua.push_str(DONE);
    std::fs::write(&script, lua).context("write the wrk script")?;
    let threads = if load.concurrency > 1 { 2 } else { 1 };
    let secs = load.duration.as_secs().max(1);
    let out = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{}", load.concurrency))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(&script)
        .arg(load.url)
        .output()
        .context("run wrk (Debian package wrk; scripts/bench installs it)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("WRK_JSON ")) else {
        bail!(
            "wrk printed no result for {} {}: {}\n{}",
            load.method,
            load.url,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let v: serde_json::Value = serde_json::from_str(line).context("wrk's result line")?;
    let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let secs = n("duration_us") / 1e6;
    let status_errors = n("status") as u64;
    let socket_errors = (n("connect") + n("read") + n("write") + n("timeout")) as u64;
    let requests = n("requests") as u64;
    Ok(LoadResult {
        requests,
        errors: status_errors + socket_errors,
        status_errors,
        socket_errors,
        secs,
        rps: if secs > 0.0 {
            requests as f64 / secs
        } else {
            0.0
        },
        p50_ms: n("p50_us") / 1000.0,
        p99_ms: n("p99_us") / 1000.0,
        p999_ms: n("p999_us") / 1000.0,
        mean_ms: n("mean_us") / 1000.0,
        max_ms: n("max_us") / 1000.0,
    })
}
