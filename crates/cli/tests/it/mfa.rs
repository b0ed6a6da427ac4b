//! `rack-gateway mfa verify`: a CLI session whose person has an authenticator app gives a code
//! before changes to people, roles and tokens, as the gateway asks; the hook says how.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dev_oidc::browser::{Browser, Page};
use dev_oidc::softkey::{SoftKey, key_form};
use totp_rs::{Algorithm, TOTP};

use crate::kit::{Dev, Home, Out};

const ADMIN: &str = "admin@example.com";

/// The person's authenticator app: each code for a newer step than the last one given.
struct App {
    totp: TOTP,
    last_step: u64,
}

impl App {
    async fn next_code(&mut self) -> String {
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() / 30)
                .unwrap_or(0);
            let step = (self.last_step + 1).max(now.saturating_sub(1));
            if step <= now + 1 {
                self.last_step = step;
                return self.totp.generate(step * 30);
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

fn between(text: &str, start: &str, end: &str) -> String {
    text.split(start)
        .nth(1)
        .and_then(|rest| rest.split(end).next())
        .unwrap_or_default()
        .to_string()
}

fn csrf(page: &Page) -> String {
    between(&page.body, "name=\"csrf\" value=\"", "\"")
}

/// A browser signed in to `dev`'s account page as `ADMIN`.
async fn signed_in(dev: &Dev) -> Browser {
    let mut b = Browser::new(ADMIN).unwrap_or_else(|e| panic!("{e}"));
    let login = format!("{}/api/v1/auth/web/login?return_to=/account", dev.gateway);
    let page = b.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(page.body.contains(ADMIN), "{}", page.body);
    b
}

/// A browser signed in as `ADMIN` that just set up an authenticator app: the browser and the
/// app.
async fn phone_with_an_app(dev: &Dev) -> (Browser, App) {
    let mut phone = signed_in(dev).await;
    let mfa = format!("{}/account/mfa", dev.gateway);
    let page = phone.visit(&mfa).await.unwrap_or_else(|e| panic!("{e}"));
    let setup = phone
        .submit(&format!("{mfa}/setup"), &[("csrf", &csrf(&page))])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let secret = totp_rs::Secret::Encoded(between(&setup.body, "id=\"secret\">", "<"))
        .to_bytes()
        .unwrap_or_else(|e| panic!("{e:?}: {}", setup.body));
    let totp = TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, secret, None, String::new());
    let mut app = App { totp, last_step: 0 };
    let code = app.next_code().await;
    let on = phone
        .submit(
            &format!("{mfa}/confirm"),
            &[("csrf", &csrf(&setup)), ("code", &code)],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(on.body.contains("is <strong>on</strong>"), "{}", on.body);
    (phone, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_gives_a_code_before_changing_people() {
    let dev = Dev::start();
    // The session the CLI will use, from before the app was set up: it has given no code.
    let laptop = signed_in(&dev).await;
    let session = laptop
        .cookies
        .get("rg_session")
        .cloned()
        .unwrap_or_default();
    assert!(session.starts_with("rgs_"), "{session}");

    // The app, set up in another browser.
    let (_phone, mut app) = phone_with_an_app(&dev).await;

    let home = Home::new();
    let login = home
        .run(&["login", "dev", &dev.gateway, "--token", &session])
        .ok();
    assert!(login.contains("role admin"), "{login}");
    // Reading is not guarded; defining a role is (a recent code), and the CLI says how to go
    // on.
    assert!(home.run(&["users"]).ok().contains("viewer@example.com"));
    let define = [
        "roles",
        "create",
        "readers",
        "--permissions",
        "convox:apps:list",
    ];
    let err = home.run(&define).failed();
    assert!(
        err.contains("recent code from your authenticator app")
            && err.contains("`rack-gateway --rack dev mfa verify`"),
        "{err}"
    );
    // A wrong code is refused; the app's code (typed when asked) lets the change through.
    let err = home.run(&["mfa", "verify", "000000"]).failed();
    assert!(err.contains("not right"), "{err}");
    let code = app.next_code().await;
    let out = home
        .run_input(&["mfa", "verify"], &format!("{code}\n"))
        .ok();
    assert!(out.starts_with("Verified: changes to people"), "{out}");
    assert!(home.run(&define).ok().contains("readers"));
    // Changing its permissions takes a code with the change itself: the CLI asks.
    let widen = [
        "roles",
        "update",
        "readers",
        "--permissions",
        "convox:apps:list,convox:logs:read",
    ];
    let err = home.run_input(&widen, "\n").failed();
    assert!(err.contains("no code given"), "{err}");
    let code = app.next_code().await;
    let out = home.run_input(&widen, &format!("{code}\n")).ok();
    assert!(out.contains("convox:logs:read"), "{out}");
    // Changing people takes a code with the change itself, even just after `mfa verify`: the
    // CLI asks for one (here typed on stdin).
    let lock = ["users", "lock", "viewer@example.com"];
    let err = home.run_input(&lock, "\n").failed();
    assert!(err.contains("no code given"), "{err}");
    let code = app.next_code().await;
    let out = home.run_input(&lock, &format!("{code}\n")).ok();
    assert!(out.starts_with("Locked"), "{out}");

    // Approving a deploy needs a code given with it, even just after `mfa verify`: the CLI
    // asks for one (here typed on stdin) and sends it with the approval.
    let ci = Home::new();
    ci.login(&dev, "ci", "cicd");
    let sha = "1f0e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6";
    let asked = ci
        .run(&[
            "deploy-approval",
            "request",
            "--app",
            "web",
            "--commit",
            sha,
        ])
        .ok();
    let id = between(&asked, "Deploy request ", " ");
    let err = home
        .run_input(&["deploy-approval", "approve", &id], "\n")
        .failed();
    assert!(err.contains("no code given"), "{err}");
    let code = app.next_code().await;
    let out = home
        .run_input(&["deploy-approval", "approve", &id], &format!("{code}\n"))
        .ok();
    assert!(out.contains("approved by admin@example.com"), "{out}");

    // With an API token there is nothing to verify.
    let robot = Home::new();
    robot.login(&dev, "dev", "admin");
    let err = robot.run(&["mfa", "verify", "123456"]).failed();
    assert!(err.contains("API token, which is never asked"), "{err}");
}

/// Runs the CLI in `home` with `args`, answering `key` when it asks for a code; when it prints
/// its confirmation link, `phone` (signed in as the same person) opens it and confirms with
/// `key`. The run's output.
async fn with_security_key(
    dev: &Dev,
    home: &Home,
    args: &[&str],
    phone: &mut Browser,
    key: &mut SoftKey,
) -> Out {
    let mut cmd = home.command(args);
    cmd.env("RACK_GATEWAY_NO_BROWSER", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"key\n");
    }
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut said = Vec::new();
    let link = loop {
        match rx.try_recv() {
            Ok(line) => {
                said.push(line.clone());
                if line.contains("/account/mfa/key?id=") {
                    break line.trim().to_string();
                }
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => panic!("the CLI printed no confirmation link: {said:?}"),
        }
    };
    let page = phone.visit(&link).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 200, "{}", page.body);
    // The page shows the code the terminal does.
    let code = between(&page.body, "id=\"code\">", "<");
    while !said.iter().any(|l| l.contains(&code)) {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => said.push(line),
            Err(_) => panic!("the terminal does not show {code}: {said:?}"),
        }
    }
    let (ceremony, options) = key_form(&page);
    let answer = key.assert(&options);
    let id = link.split("id=").nth(1).unwrap_or_default().to_string();
    let done = phone
        .submit(
            &format!("{}/account/mfa/key", dev.gateway),
            &[
                ("csrf", &csrf(&page)),
                ("id", &id),
                ("ceremony", &ceremony),
                ("answer", &answer),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.status, 200, "{}", done.body);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    said.extend(rx.try_iter());
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: said.join("\n"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_security_key_in_the_browser_stands_in_for_a_code() {
    let dev = Dev::start();
    let laptop = signed_in(&dev).await;
    let session = laptop
        .cookies
        .get("rg_session")
        .cloned()
        .unwrap_or_default();
    let (mut phone, mut app) = phone_with_an_app(&dev).await;
    let home = Home::new();
    home.run(&["login", "dev", &dev.gateway, "--token", &session])
        .ok();
    // Without a key yet, the CLI says what to do instead.
    let err = home.run(&["mfa", "verify", "--key"]).failed();
    assert!(err.contains("no security keys"), "{err}");
    // Asked for a code, the answer `key` says the same and the next line is taken as the code.
    let input = format!("key\n{}\n", app.next_code().await);
    let out = home.run_input(&["mfa", "verify"], &input);
    assert!(out.stderr.contains("no security keys"), "{out:?}");
    assert!(out.ok().starts_with("Verified:"));
    // With nothing after it, the command stops, saying how to give a code.
    let err = home.run_input(&["mfa", "verify"], "key\n").failed();
    assert!(err.contains("no security keys"), "{err}");
    assert!(err.contains("no code given"), "{err}");

    // A key added beside the app, in the browser (the app was confirmed just now).
    let mut key = SoftKey::new(&dev.gateway);
    let mfa = format!("{}/account/mfa", dev.gateway);
    let page = phone.visit(&mfa).await.unwrap_or_else(|e| panic!("{e}"));
    let asked = phone
        .submit(
            &format!("{mfa}/keys/new"),
            &[("csrf", &csrf(&page)), ("name", "Keyring")],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (ceremony, options) = key_form(&asked);
    let answer = key.register(&options);
    let added = phone
        .submit(
            &format!("{mfa}/keys/add"),
            &[
                ("csrf", &csrf(&asked)),
                ("name", "Keyring"),
                ("ceremony", &ceremony),
                ("answer", &answer),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(added.body.contains("<td>Keyring</td>"), "{}", added.body);
    let listed = home.run(&["users"]).ok();
    assert!(listed.contains("on (1 security key)"), "{listed}");

    // `mfa verify --key`: the link is printed (not opened, as asked), the browser confirms,
    // and the session may make privileged changes.
    let verify = ["mfa", "verify", "--key"];
    let out = with_security_key(&dev, &home, &verify, &mut phone, &mut key).await;
    assert!(out.stderr.contains("Open this URL"), "{out:?}");
    let stdout = out.ok();
    assert!(
        stdout.starts_with("Verified with your security key"),
        "{stdout}"
    );
    let define = [
        "roles",
        "create",
        "readers",
        "--permissions",
        "convox:apps:list",
    ];
    assert!(home.run(&define).ok().contains("readers"));

    // Minting a token asks for a code with it: the answer `key` confirms in the browser.
    let mint = ["tokens", "create", "--name", "laptop", "--role", "viewer"];
    let out = with_security_key(&dev, &home, &mint, &mut phone, &mut key).await;
    let stdout = out.ok();
    assert!(stdout.contains("rgw_"), "{stdout}");
}
