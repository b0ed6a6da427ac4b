//! `rack-gateway mfa verify`: a CLI session whose person has an authenticator app gives a code
//! before changes to people, roles and tokens, as the gateway asks; the hook says how.

use dev_oidc::browser::{Browser, Page};
use totp_rs::{Algorithm, TOTP};

use crate::kit::{Dev, Home};

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
    let mut phone = signed_in(&dev).await;
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
