//! `deploy-approval`: CI asks for its commit and waits; a person approves it from their CLI
//! session; CI's `deploy` of that checkout then goes through once (the build carries the
//! checkout's commit as its git-sha), and not before or after.

use std::path::Path;
use std::process::Stdio;

use dev_oidc::browser::Browser;

use crate::kit::{Dev, Home};

/// A small app in `dir`, committed to a new git repository; its commit id.
fn committed_app(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("Dockerfile"), "FROM ruby:3.3-slim\nCOPY . /app\n")
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("convox.yml"), "services:\n  web:\n    build: .\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.email=ci@example.com", "-c", "user.name=CI"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("git: {e}"));
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "First"]);
    git(&["rev-parse", "HEAD"])
}

/// A CLI home signed in (a session, as a person deciding on deploys is) as admin@example.com.
async fn signed_in_person(dev: &Dev) -> Home {
    let mut b = Browser::new("admin@example.com").unwrap_or_else(|e| panic!("{e}"));
    let login = format!("{}/api/v1/auth/web/login?return_to=/account", dev.gateway);
    b.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
    let session = b.cookies.get("rg_session").cloned().unwrap_or_default();
    let boss = Home::new();
    boss.run(&["login", "dev", &dev.gateway, "--token", &session])
        .ok();
    boss
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_waits_for_a_person_then_deploys_that_commit_once() {
    let dev = Dev::start();
    let ci = Home::new();
    ci.login(&dev, "dev", "cicd");
    let src = ci.path().join("app");
    let sha = committed_app(&src);
    let dir = src.to_string_lossy().to_string();

    // Not approved: the upload is refused, and the message says what to do.
    let err = ci.run(&["deploy", &dir, "-a", "web"]).failed();
    assert!(
        err.contains("needs an approved deploy request")
            && err.contains("rack-gateway deploy-approval request --app web"),
        "{err}"
    );

    // CI asks (the commit read from the checkout) and waits, in the background.
    let mut waiting = ci.command(&[
        "deploy-approval",
        "request",
        "--app",
        "web",
        "--message",
        "First",
        "--wait",
        "--timeout",
        "60s",
    ]);
    waiting
        .current_dir(&src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let waiting = waiting.spawn().unwrap_or_else(|e| panic!("{e}"));

    // A person signs in and finds it.
    let boss = signed_in_person(&dev).await;
    let mut pending = serde_json::Value::Null;
    for _ in 0..100 {
        pending = boss
            .run(&["deploy-approval", "list", "--status", "pending", "--json"])
            .json();
        if pending.as_array().is_some_and(|p| !p.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(pending[0]["git_commit"], sha.as_str(), "{pending}");
    assert_eq!(pending[0]["requested_by"], "token:dev-cicd", "{pending}");
    let id = pending[0]["id"].as_i64().unwrap_or_default().to_string();
    let table = boss.run(&["deploy-approval", "list"]).ok();
    assert!(table.contains(&sha) && table.contains("pending"), "{table}");

    // CI's own token may not approve it.
    let err = ci.run(&["deploy-approval", "approve", &id]).failed();
    assert!(err.contains("permission denied"), "{err}");
    let out = boss
        .run(&["deploy-approval", "approve", &id, "--note", "checked"])
        .ok();
    assert!(
        out.contains("approved by admin@example.com: checked"),
        "{out}"
    );

    // The waiting CI run ends, approved.
    let waited = waiting.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&waited.stdout);
    assert!(waited.status.success(), "{waited:?}");
    assert!(
        stdout.contains(&format!("Deploy request {id} for web at {sha}"))
            && stdout.contains("approved"),
        "{stdout}"
    );

    // The deploy of that checkout goes through (its build carries the commit); once.
    let out = ci.run(&["deploy", &dir, "-a", "web"]).ok();
    assert!(out.contains("Promoting"), "{out}");
    let shown = ci.run(&["deploy-approval", "show", &id, "--json"]).json();
    assert_eq!(shown["status"], "deployed", "{shown}");
    let text = ci.run(&["deploy-approval", "show", &id]).ok();
    assert!(text.contains("deployed") && text.contains(&sha), "{text}");
    let err = ci.run(&["deploy", &dir, "-a", "web"]).failed();
    assert!(err.contains("needs an approved deploy request"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_attached_run_stops_its_holder_when_done() {
    let dev = Dev::start();
    let (ci, admin) = (Home::new(), Home::new());
    ci.login(&dev, "dev", "cicd");
    admin.login(&dev, "dev", "admin");
    admin
        .run(&[
            "app-rules",
            "set",
            "-a",
            "web",
            "--approved-command",
            "echo migrated",
        ])
        .ok();
    let sha = "1f0e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6";
    let asked = ci
        .run(&[
            "--json",
            "deploy-approval",
            "request",
            "--app",
            "web",
            "--commit",
            sha,
        ])
        .json();
    let id = asked["id"].as_i64().unwrap_or_default().to_string();
    let boss = signed_in_person(&dev).await;
    boss.run(&["deploy-approval", "approve", &id]).ok();

    // `run` attached: a holder process, the command in it, then the holder stopped — by the
    // CI token, which may stop no other process.
    let out = ci.run(&["run", "web", "echo", "migrated", "-a", "web"]);
    assert!(
        !out.stderr.contains("could not stop"),
        "the holder was left running: {out:?}"
    );
    assert!(out.ok().contains("migrated"));
    let processes = admin.run(&["--json", "ps", "-a", "web"]).json();
    let holders: Vec<_> = processes
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| {
                    p["command"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("sleep"))
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(holders.is_empty(), "{holders:?}");
    let pid = processes[0]["id"].as_str().unwrap_or_default().to_string();
    let err = ci.run(&["ps", "stop", &pid, "-a", "web"]).failed();
    assert!(err.contains("holder process"), "{err}");
}
