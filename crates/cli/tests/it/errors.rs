//! Gateway-aware errors: denials, dead credentials, expiry warnings, and which side is down.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::kit::{Dev, Home, free_port, server_bin};

#[test]
fn a_denied_command_shows_the_gateway_message() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "ops");
    let out = home.run(&["apps", "delete", "web"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("ERROR: permission denied: convox:apps:delete is required (your role: ops)"),
        "{out:?}"
    );
    // The app is still there.
    assert!(home.run(&["apps"]).ok().contains("web"));
}

#[test]
fn dead_credentials_and_expiring_sessions_name_the_fix() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "viewer");
    let mut config = home.config();

    // A session the gateway no longer knows.
    config["racks"]["dev"]["token_type"] = "session".into();
    config["racks"]["dev"]["token"] = "rgs_revoked-or-expired".into();
    home.write_config(&config);
    let err = home.run(&["apps"]).failed();
    let fix = format!("run `rack-gateway login dev {}`", dev.gateway);
    assert!(
        err.contains("session expired or revoked") && err.contains(&fix),
        "{err}"
    );

    // An API token the gateway no longer knows.
    config["racks"]["dev"]["token_type"] = "api_token".into();
    home.write_config(&config);
    let err = home.run(&["ps", "-a", "web"]).failed();
    assert!(
        err.contains("API token expired or revoked") && err.contains("--token <new token>"),
        "{err}"
    );

    // A session that ends within two hours: a warning on stderr, and the command still runs.
    let in_an_hour = chrono_ms() + 3_600_000;
    config["racks"]["dev"]["token_type"] = "session".into();
    config["racks"]["dev"]["token"] = dev.token("viewer").into();
    config["racks"]["dev"]["expires_at"] = in_an_hour.into();
    home.write_config(&config);
    let out = home.run(&["apps"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("warning: your session for rack dev expires in")
            && out.stderr.contains(&fix),
        "{out:?}"
    );
    // Far from expiry, as right after signing in to a 24-hour session: no warning.
    config["racks"]["dev"]["expires_at"] = (in_an_hour + 12 * 3_600_000).into();
    home.write_config(&config);
    let out = home.run(&["apps"]);
    assert!(out.code == 0 && out.stderr.is_empty(), "{out:?}");
}

#[test]
fn an_unreachable_gateway_is_named() {
    let home = Home::new();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let err = home
        .run(&[
            "login",
            "gone",
            &url,
            "--token",
            "rgw_NotARealToken0123456789abcdef",
        ])
        .failed();
    assert!(
        err.contains(&format!("gateway unreachable at {url}")),
        "{err}"
    );
    let config = serde_json::json!({
        "current": "gone",
        "racks": { "gone": { "gateway_url": url, "token": "rgw_NotARealToken0123456789abcdef", "token_type": "api_token" } }
    });
    std::fs::create_dir_all(home.config_path().parent().unwrap_or(home.path()))
        .unwrap_or_else(|e| panic!("{e}"));
    home.write_config(&config);
    let err = home.run(&["apps"]).failed();
    assert!(
        err.contains(&format!("gateway unreachable at {url}")),
        "{err}"
    );
    let err = home.run(&["logs", "-a", "web"]).failed();
    assert!(
        err.contains(&format!("gateway unreachable at {url}")),
        "{err}"
    );
}

#[test]
fn a_server_that_is_not_a_gateway_is_named() {
    // Something answers, but not a rack-gateway (a wrong URL, a proxy's page): 404 in text.
    let url = answering(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
    );
    let home = Home::new();
    let err = home
        .run(&[
            "login",
            "elsewhere",
            &url,
            "--token",
            "rgw_NotARealToken0123456789abcdef",
        ])
        .failed();
    assert!(
        err.contains("is this a rack-gateway?") && err.contains("HTTP 404"),
        "{err}"
    );
    let err = home
        .run(&["login", "elsewhere", &url, "--no-browser"])
        .failed();
    assert!(err.contains("is this a rack-gateway?"), "{err}");
}

#[test]
fn a_gateway_url_given_wrongly_is_named() {
    let dev = Dev::start();
    let home = Home::new();
    let https = dev.gateway.replacen("http://", "https://", 1);
    let err = home
        .run(&["login", "q", &https, "--token", dev.token("ops")])
        .failed();
    assert!(
        err.contains("answered without TLS") && err.contains("use an http:// URL"),
        "{err}"
    );
    for url in [
        format!("{}/account", dev.gateway),
        format!("{}/some/prefix", dev.gateway),
    ] {
        let err = home
            .run(&["login", "q", &url, "--token", dev.token("ops")])
            .failed();
        assert!(
            err.contains("give its base URL, without a path") && err.contains(&url),
            "{err}"
        );
    }
}

#[test]
fn a_stream_the_gateway_ends_says_why() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "ops");
    let mut follow = home
        .command(&["logs", "-a", "web", "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(800));
    // The token is revoked while the stream is open: the gateway ends it (close 1008), and
    // the CLI says so and fails, rather than exiting 0 as if the stream had simply ended.
    let revoked = Command::new(server_bin())
        .args(["tokens", "revoke", "dev-ops"])
        .env("DATABASE_URL", dev.database_url())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(revoked.status.success(), "{revoked:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = follow.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = follow.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = follow.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(stderr.contains("token revoked"), "{stderr}");
}

/// A gateway (`serve`) in front of a rack address where nothing listens; its database lives
/// in `_dir`.
struct Serve {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_down_rack_behind_a_live_gateway_is_told_apart() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = format!("sqlite://{}/gateway.db", dir.path().display());
    let key = "cli-test-audit-key-0123456789abcdef0123456789";
    let out = Command::new(server_bin())
        .args(["tokens", "create", "--name", "cli-test", "--role", "viewer"])
        .env("DATABASE_URL", &db)
        .env("AUDIT_HMAC_KEY", key)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let port = free_port();
    let child = Command::new(server_bin())
        .arg("serve")
        .env("DATABASE_URL", &db)
        .env("AUDIT_HMAC_KEY", key)
        .env("RACK_HOST", format!("http://127.0.0.1:{}", free_port()))
        .env("RACK_TOKEN", "unused")
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let _serve = Serve { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}");
    let home = Home::new();
    let out = home.run(&["login", "dev", &url, "--token", &token]).ok();
    assert!(out.contains("role viewer"), "{out}");
    let err = home.run(&["apps"]).failed();
    assert!(
        err.contains(&format!("the gateway at {url} is up but the rack is down")),
        "{err}"
    );
    // `rack` still says who you are, and fails for the rack.
    let out = home.run(&["rack"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("Role") && out.stdout.contains("viewer"),
        "{out:?}"
    );
    assert!(out.stdout.contains("the rack is down"), "{out:?}");
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A server at 127.0.0.1 that answers every request with `response`; its URL.
fn answering(response: &'static [u8]) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "http://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(response);
        }
    });
    url
}

/// The gateway (or whatever answers at its URL) is not trusted: its redirects are not
/// followed (a 307 re-sends a form, such as `env set`'s values, to where it points), an answer
/// larger than the CLI will hold is refused before it is read, and its text cannot drive the
/// terminal.
#[test]
fn hostile_answers_are_refused_or_neutralised() {
    let home = Home::new();
    let token = "rgw_NotARealToken0123456789abcdef";
    let config = |url: &str| {
        serde_json::json!({
            "current": "t",
            "racks": { "t": { "gateway_url": url, "token": token, "token_type": "api_token" } }
        })
    };
    std::fs::create_dir_all(home.config_path().parent().unwrap_or(home.path()))
        .unwrap_or_else(|e| panic!("{e}"));

    let url = answering(
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:9/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    home.write_config(&config(&url));
    let err = home
        .run(&["env", "set", "SECRET=hunter2", "-a", "web"])
        .failed();
    assert!(
        err.contains("redirect") && err.contains("not followed"),
        "{err}"
    );

    let url = answering(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200000000\r\nConnection: close\r\n\r\n[",
    );
    home.write_config(&config(&url));
    let err = home.run(&["apps"]).failed();
    assert!(err.contains("larger than 64 MiB"), "{err}");

    // Small in bytes, huge in memory: a million empty arrays in a field the CLI keeps.
    let mut body = String::from(r#"[{"name":"web","junk":["#);
    body.push_str(&"[],".repeat(1_000_000));
    body.push_str("[]]}]");
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let url = answering(Box::leak(answer.into_bytes().into_boxed_slice()));
    home.write_config(&config(&url));
    let err = home.run(&["apps"]).failed();
    assert!(err.contains("more than 1000000 JSON values"), "{err}");

    let url = answering(
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 73\r\nConnection: close\r\n\r\n{\"error\":\"no app \\u001b]52;c;ZWNobyBwd25lZA==\\u0007\\u001b[2J\",\"code\":\"x\"}",
    );
    home.write_config(&config(&url));
    let out = home.run(&["apps", "info", "web"]);
    assert!(out.stderr.contains("no app"), "{out:?}");
    assert!(
        !out.stderr.contains('\u{1b}') && !out.stderr.contains('\u{7}'),
        "escape sequences reached the terminal: {:?}",
        out.stderr
    );
}

#[test]
fn names_that_are_not_one_path_segment_are_refused_before_any_request() {
    // URL parsing resolves `.` and `..` away: `ps info .. -a web` asked for the app's process
    // list, and `/` would split a name. No rack is configured here: the refusal comes first.
    let home = Home::new();
    for args in [
        &["ps", "info", "..", "-a", "web"][..],
        &["ps", "stop", ".", "-a", "web"],
        &["exec", "..", "ls", "-a", "web"],
        &["run", "..", "ls", "-a", "web"],
        &["scale", "a/b", "-a", "web"],
        &["logs", "-s", "..", "-a", "web"],
        &["logs", "-p", ".", "-a", "web"],
        &["builds", "info", "..", "-a", "web"],
        &["builds", "logs", "..", "-a", "web"],
        &["releases", "info", "..", "-a", "web"],
        &["releases", "rollback", "..", "-a", "web"],
        &["releases", "promote", "..", "-a", "web"],
        &["apps", "info", ".."],
        &["env", "get", "X", "--release", "..", "-a", "web"],
        &["apps", "create", ".."],
        &["apps", "delete", "a\\b"],
        &["ps", "-a", ".."],
    ] {
        let err = home.run(args).failed();
        assert!(
            err.contains("is not a valid"),
            "{args:?} was not refused as a name: {err}"
        );
    }
}

#[test]
fn json_is_refused_where_no_json_would_come() {
    // A script asking for JSON from a command that prints text (or streams) is told so, not
    // handed text to parse.
    let home = Home::new();
    for args in [
        &["logs", "-a", "web", "--json"][..],
        &["restart", "-a", "web", "--json"],
        &["env", "get", "K", "-a", "web", "--json"],
        &["deploy", "-a", "web", "--json"],
    ] {
        let out = home.run(args);
        assert_ne!(out.code, 0, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("--json is for listings and records"),
            "{args:?}: {out:?}"
        );
    }
    let out = home.run(&["--json", "certs", "-a", "web"]);
    assert!(out.stderr.contains("put it after the command"), "{out:?}");
}

#[test]
fn an_expiring_api_token_is_shown_and_warned_about() {
    let dev = Dev::start();
    let home = Home::new();
    let made = Command::new(server_bin())
        .args([
            "tokens",
            "create",
            "--name",
            "short",
            "--role",
            "viewer",
            "--expires-in",
            "1h",
        ])
        .env("DATABASE_URL", dev.database_url())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(made.status.success(), "{made:?}");
    let token = String::from_utf8_lossy(&made.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let out = home.run(&["login", "dev", &dev.gateway, "--token", &token]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = home.run(&["apps"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("warning: your API token for rack dev expires in")
            && out.stderr.contains("ask an admin for a new one"),
        "{out:?}"
    );
    let rack = home.run(&["rack"]).ok();
    assert!(rack.contains("API token (no session), expires "), "{rack}");
}
