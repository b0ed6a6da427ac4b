//! WebSocket commands: followed logs, exec and run with their exit codes.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::kit::{Dev, Home, first_pid};

#[test]
fn logs_follow_streams_until_a_heartbeat() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "viewer");
    let mut child = home
        .command(&["logs", "-a", "web", "--follow", "--since", "1h"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = mpsc::channel::<String>();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    let mut heartbeat = false;
    while Instant::now() < deadline && !heartbeat {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            heartbeat = line.contains("heartbeat=");
            seen.push(line);
        }
    }
    let still_running = child.try_wait().ok().flatten().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        heartbeat,
        "no heartbeat line while following:\n{}",
        seen.join("\n")
    );
    assert!(still_running, "--follow must keep streaming");
    assert!(
        seen.iter().any(|l| l.contains(" service/web/")),
        "history first: {seen:?}"
    );
}

#[test]
fn exec_passes_output_and_exit_codes_through() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "ops");
    let pid = first_pid(&home, "web");

    let out = home.run(&["exec", &pid, "sh -c 'exit 3'", "-a", "web"]);
    assert_eq!(out.code, 3, "{out:?}");

    let out = home.run_input(&["exec", &pid, "sh", "-a", "web"], "echo hello\nexit 5\n");
    assert_eq!(out.code, 5, "{out:?}");
    assert!(out.stdout.contains("hello\n"), "{out:?}");

    // A command that reads to the end of stdin.
    let out = home.run_input(&["exec", &pid, "cat", "-a", "web"], "line one\nline two\n");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "line one\nline two\n", "{out:?}");

    let out = home.run(&["exec", &pid, "-a", "web", "--", "echo", "-n", "words"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("words"), "{out:?}");

    let err = home
        .run(&["exec", "web-nope", "echo", "-a", "web"])
        .failed();
    assert!(err.contains("not found"), "{err}");

    // Viewers may not exec: the gateway refuses the socket and says why.
    let viewer = Home::new();
    viewer.login(&dev, "dev", "viewer");
    let err = viewer
        .run(&["exec", &pid, "sh -c 'exit 3'", "-a", "web"])
        .failed();
    assert!(
        err.contains("permission denied") && err.contains("your role: viewer"),
        "{err}"
    );
}

#[test]
fn run_starts_execs_and_stops_a_process() {
    let dev = Dev::start();
    let home = Home::new();
    home.login(&dev, "dev", "ops");
    let before = home.run(&["ps", "-a", "web", "--json"]).json();

    let out = home.run(&["run", "web", "sh -c 'echo from-run; exit 4'", "-a", "web"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains("from-run"), "{out:?}");
    let after = home.run(&["ps", "-a", "web", "--json"]).json();
    assert_eq!(
        before.as_array().map(Vec::len),
        after.as_array().map(Vec::len),
        "the run process was stopped"
    );

    let out = home
        .run(&["run", "worker", "sleep 30", "--detach", "-a", "web"])
        .ok();
    let pid = out
        .trim()
        .rsplit(", ")
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(out.starts_with("Running detached process... OK, "), "{out}");
    let ps = home.run(&["ps", "-a", "web"]).ok();
    assert!(ps.contains(&pid), "{ps}");
}
