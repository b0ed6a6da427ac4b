//! The sign-in pages in headless Chromium (Debian's chromium + chromium-driver, installed by
//! scripts/test): web sign-in through dev-oidc's picker, the account page, sign-out, and the
//! browser half of the CLI sign-in.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fantoccini::{ClientBuilder, Locator};
use sha2::Digest;

use crate::both_backends;
use crate::dev::Dev;
use crate::kit::{client, scratch_dir};
use crate::signin::free_port;

struct Driver {
    child: Child,
    url: String,
    profile: std::path::PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Starts chromedriver, or returns `None` (skip) when it is not installed and not required.
async fn chromedriver() -> Option<Driver> {
    let installed = Command::new("chromedriver")
        .arg("--version")
        .output()
        .is_ok();
    if !installed {
        assert!(
            std::env::var("RGW_REQUIRE_BROWSER").is_err(),
            "RGW_REQUIRE_BROWSER is set but chromedriver is not installed"
        );
        eprintln!("skipping browser test: chromedriver not installed (scripts/test installs it)");
        return None;
    }
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("chromedriver: {e}"));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if client().get(format!("{url}/status")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(Driver {
        child,
        url,
        profile: scratch_dir(),
    })
}

async fn browser(driver: &Driver) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", driver.profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("webdriver session: {e}"))
}

/// The element `css` selects, once the page has it (15 s at most); else the test fails saying
/// which page the browser was on, and what it said.
async fn element(c: &fantoccini::Client, css: &str) -> fantoccini::elements::Element {
    let found = c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(css))
        .await;
    match found {
        Ok(element) => element,
        Err(e) => {
            let url = c.current_url().await.map(|u| u.to_string());
            let source = c.source().await.unwrap_or_default();
            let excerpt: String = source.chars().take(3000).collect();
            panic!("{css}: {e}\non {url:?}:\n{excerpt}")
        }
    }
}

async fn text(c: &fantoccini::Client, css: &str) -> String {
    element(c, css).await.text().await.unwrap_or_default()
}

/// The text of `css` once it contains `needle` (15 s at most; then whatever it is): a click
/// that navigates returns before the next page is there.
async fn text_soon(c: &fantoccini::Client, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = text(c, css).await;
        if now.contains(needle) || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(c: &fantoccini::Client, css: &str) {
    let el = element(c, css).await;
    el.click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Opens the account page and signs in as `who@example.com` in dev-oidc's picker.
/// Signs out, and waits for the signed-out page: a navigation started before it is there
/// (`goto`) races the sign-out's own, which may land after it.
async fn sign_out(c: &fantoccini::Client) {
    click(c, "#signout").await;
    let _ = element(c, "#signin").await;
}

async fn sign_in_as(c: &fantoccini::Client, gateway: &str, who: &str) {
    c.goto(&format!("{gateway}/account"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    click(c, "#signin").await;
    click(c, &format!("#user-{who}-example-com")).await;
}

both_backends!(web_sign_in_in_chromium, |db| async move {
    let Some(driver) = chromedriver().await else {
        return;
    };
    let dev = Dev::start(&db).await;
    let c = browser(&driver).await;
    // From the home page, signing in lands on the rack: its apps, and an app as a viewer may
    // see it.
    c.goto(&format!("{}/", dev.gateway))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    click(&c, "#signin").await;
    click(&c, "#user-viewer-example-com").await;
    wait_for_url(&c, "/rack").await;
    assert!(text(&c, "#apps").await.contains("web"));
    click(&c, "a[href='/apps/web']").await;
    wait_for_url(&c, "/apps/web").await;
    assert!(text(&c, "#processes").await.contains("running"));
    let releases = text(&c, "#releases-not-shown").await;
    assert!(releases.contains("convox:releases:list"), "{releases}");
    click(&c, "#account-link").await;
    assert_eq!(text(&c, "#email").await, "viewer@example.com");
    assert_eq!(text(&c, "#role").await, "viewer");
    let url = c.current_url().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(url.as_str().ends_with("/account"), "{url}");
    // The session cookie is HttpOnly: page script cannot read it.
    let cookies = c
        .execute("return document.cookie", vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !cookies.as_str().unwrap_or_default().contains("rg_session"),
        "{cookies}"
    );
    sign_out(&c).await;
    let _ = text(&c, "#signin").await;
    // Signed out: the account page shows sign-in again.
    c.goto(&format!("{}/account", dev.gateway))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = text(&c, "#signin").await;
    let _ = c.close().await;
});

both_backends!(cli_sign_in_browser_half_in_chromium, |db| async move {
    let Some(driver) = chromedriver().await else {
        return;
    };
    let dev = Dev::start(&db).await;
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let http = client();
    let start: serde_json::Value = http
        .post(format!("{}/api/v1/auth/cli/start", dev.gateway))
        .json(&serde_json::json!({ "code_challenge": challenge }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let c = browser(&driver).await;
    c.goto(start["browser_url"].as_str().unwrap_or_default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The gateway asks first, showing the code the CLI printed.
    assert_eq!(
        text(&c, "#code").await,
        start["code"].as_str().unwrap_or_default()
    );
    click(&c, "#approve").await;
    click(&c, "#user-deployer-example-com").await;
    assert_eq!(text(&c, "#title").await, "Signed in");
    let _ = c.close().await;
    let poll: serde_json::Value = http
        .post(format!("{}/api/v1/auth/cli/poll", dev.gateway))
        .json(&serde_json::json!({ "login_id": start["login_id"], "code_verifier": verifier }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(poll["status"], "complete", "{poll}");
    assert_eq!(poll["email"], "deployer@example.com");
    let token = poll["session_token"].as_str().unwrap_or_default();
    let resp = http
        .get(dev.url("/apps"))
        .basic_auth("convox", Some(token))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
});

/// Signs in as the viewer, checks that the account page has no `link` and that `page` is
/// refused for want of `permission`, then signs out again.
async fn viewer_is_refused(
    c: &fantoccini::Client,
    gateway: &str,
    link: &str,
    page: &str,
    permission: &str,
) {
    c.goto(&format!("{gateway}/account"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    click(c, "#signin").await;
    click(c, "#user-viewer-example-com").await;
    assert_eq!(text(c, "#role").await, "viewer");
    assert!(
        c.find(Locator::Css(link)).await.is_err(),
        "a viewer sees {link}"
    );
    c.goto(&format!("{gateway}{page}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = text(c, "main").await;
    assert!(refused.contains(permission), "{refused}");
    c.goto(&format!("{gateway}/account"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sign_out(c).await;
}

/// Waits (at most 15 s) until the browser's URL contains `needle`: a click that navigates
/// returns before the next page is there.
async fn wait_for_url(c: &fantoccini::Client, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let url = c.current_url().await.unwrap_or_else(|e| panic!("{e}"));
        if url.as_str().contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never reached a URL with {needle}: {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The rows of the audit page's table: each row's cells.
async fn audit_rows(c: &fantoccini::Client) -> Vec<Vec<String>> {
    let _ = text(c, "#events").await;
    let rows = c
        .find_all(Locator::Css("#events tbody tr"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut all = Vec::new();
    for row in rows {
        let cells = row
            .find_all(Locator::Css("td"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut texts = Vec::new();
        for cell in cells {
            texts.push(cell.text().await.unwrap_or_default());
        }
        all.push(texts);
    }
    all
}

both_backends!(
    the_audit_trail_in_chromium_for_admins_only,
    |db| async move {
        let Some(driver) = chromedriver().await else {
            return;
        };
        let dev = Dev::start(&db).await;
        let http = client();
        let denied = http
            .delete(dev.url("/apps/web"))
            .basic_auth("convox", Some(dev.token("viewer")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(denied.status(), 403);
        let c = browser(&driver).await;
        let go = |path: &str| format!("{}{path}", dev.gateway);

        // A viewer has no link, and is refused the page.
        viewer_is_refused(
            &c,
            &dev.gateway,
            "#audit-link",
            "/audit",
            "gateway:audit:read",
        )
        .await;

        // An admin reads it, filters it, and pages back through it.
        click(&c, "#signin").await;
        click(&c, "#user-admin-example-com").await;
        click(&c, "#audit-link").await;
        let rows = audit_rows(&c).await;
        assert!(rows.len() > 5, "{rows:?}");
        let seqs: Vec<i64> = rows.iter().filter_map(|r| r[0].parse().ok()).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] > w[1]),
            "newest first: {seqs:?}"
        );
        c.find(Locator::Css("select[name=decision]"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .select_by_value("deny")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        c.find(Locator::Css("input[name=action]"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .send_keys("convox:apps:*")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        click(&c, "#apply").await;
        // The next page, not this one: it has the filter chosen.
        let _ = text(&c, "select[name=decision] option[value=deny][selected]").await;
        let rows = audit_rows(&c).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0][3], "token:dev-viewer");
        assert_eq!(rows[0][4], "convox:apps:delete");
        assert_eq!(rows[0][5], "deny");
        assert_eq!(rows[0][7], "DELETE /apps/web");
        let url = c.current_url().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(url.as_str().contains("decision=deny"), "{url}");

        c.goto(&go("/audit?limit=2"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let first: Vec<i64> = audit_rows(&c)
            .await
            .iter()
            .filter_map(|r| r[0].parse().ok())
            .collect();
        click(&c, "#older").await;
        wait_for_url(&c, "before=").await;
        let older: Vec<i64> = audit_rows(&c)
            .await
            .iter()
            .filter_map(|r| r[0].parse().ok())
            .collect();
        assert_eq!(first.len(), 2);
        assert_eq!(
            older,
            vec![first[1] - 1, first[1] - 2],
            "{first:?} then {older:?}"
        );

        // A filter it cannot read is said on the page.
        c.goto(&go("/audit?since=yesterday"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(text(&c, "#error").await.contains("is not a time"));
        let _ = c.close().await;

        // Each look was recorded, who and with what filter.
        let (ok, out, err) = crate::kit::admin(
            &crate::kit::Db::at(dev.database_url(), db.backend, crate::kit::scratch_dir()),
            &["audit", "export", "--action", "gateway:audit:read"],
        );
        assert!(ok, "{err}");
        let reads: Vec<serde_json::Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert!(
            reads.iter().any(|r| r["user_email"] == "viewer@example.com"
                && r["rbac_decision"] == "deny"
                && r["status"] == 403),
            "{out}"
        );
        assert!(
            reads.iter().any(|r| r["user_email"] == "admin@example.com"
                && r["details"]["query"] == "action=convox%3Aapps%3A*&decision=deny"
                && r["details"]["returned"] == 1),
            "{out}"
        );
    }
);

both_backends!(api_tokens_in_chromium_for_admins_only, |db| async move {
    let Some(driver) = chromedriver().await else {
        return;
    };
    let dev = Dev::start(&db).await;
    let http = client();
    let viewer_apps = || async {
        http.get(dev.url("/apps"))
            .basic_auth("convox", Some(dev.token("viewer")))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(viewer_apps().await, 200);
    let c = browser(&driver).await;

    // A viewer has no link, and is refused the page.
    viewer_is_refused(
        &c,
        &dev.gateway,
        "#tokens-link",
        "/tokens",
        "gateway:tokens:list",
    )
    .await;

    // An admin sees every token (never a secret) and revokes the viewer's.
    click(&c, "#signin").await;
    click(&c, "#user-admin-example-com").await;
    click(&c, "#tokens-link").await;
    let table = text(&c, "#tokens").await;
    assert!(
        table.contains("dev-viewer") && table.contains("role viewer"),
        "{table}"
    );
    let source = c.source().await.unwrap_or_default();
    for role in ["admin", "viewer", "ops"] {
        assert!(!source.contains(dev.token(role)), "a secret on the page");
    }
    let rows = c
        .find_all(Locator::Css("#tokens tbody tr"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut viewer_id = String::new();
    for row in rows {
        if row.text().await.unwrap_or_default().contains("dev-viewer") {
            viewer_id = row
                .attr("id")
                .await
                .ok()
                .flatten()
                .unwrap_or_default()
                .trim_start_matches("token-")
                .to_string();
        }
    }
    assert!(!viewer_id.is_empty());
    click(&c, &format!("#revoke-{viewer_id}")).await;
    let _ = text(&c, &format!("#token-{viewer_id}.revoked")).await;
    let status = text(&c, &format!("#token-{viewer_id} td:nth-child(8)")).await;
    assert_eq!(status, "revoked");
    assert!(
        c.find(Locator::Css(&format!("#revoke-{viewer_id}")))
            .await
            .is_err(),
        "a revoked token has no button"
    );
    assert_eq!(viewer_apps().await, 401);

    // The admin mints a cicd token in the form; its secret is shown once and works at once.
    type_into(&c, "#new-name", "ci-from-browser").await;
    element(&c, "#new-role")
        .await
        .select_by_value("cicd")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    type_into(&c, "#new-expires", "30d").await;
    click(&c, "#create").await;
    let secret = text(&c, "#new-secret").await;
    assert!(secret.starts_with("rgw_"), "{secret}");
    let minted = http
        .get(dev.url("/apps"))
        .basic_auth("convox", Some(&secret))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(minted, 200);
    click(&c, "#back").await;
    let table = text(&c, "#tokens").await;
    assert!(
        table.contains("ci-from-browser") && table.contains("role cicd"),
        "{table}"
    );
    let source = c.source().await.unwrap_or_default();
    assert!(!source.contains(&secret), "the secret shown again");
    // A name in use is said on the page, not minted twice.
    type_into(&c, "#new-name", "ci-from-browser").await;
    click(&c, "#create").await;
    let said = text(&c, "#create-error").await;
    assert!(said.contains("already in use"), "{said}");
    let _ = c.close().await;
});

/// The id of the users page's row whose text contains `email`.
async fn user_row_id(c: &fantoccini::Client, email: &str) -> String {
    let _ = text(c, "#users").await;
    let rows = c
        .find_all(Locator::Css("#users tbody tr"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for row in rows {
        if row.text().await.unwrap_or_default().contains(email) {
            let id = row.attr("id").await.ok().flatten().unwrap_or_default();
            return id.trim_start_matches("user-").to_string();
        }
    }
    panic!("no row for {email}");
}

both_backends!(
    users_and_roles_in_chromium_for_admins_only,
    |db| async move {
        let Some(driver) = chromedriver().await else {
            return;
        };
        let dev = Dev::start(&db).await;
        let c = browser(&driver).await;
        let go = |path: &str| format!("{}{path}", dev.gateway);

        // A viewer has no link, and is refused the page.
        viewer_is_refused(
            &c,
            &dev.gateway,
            "#users-link",
            "/users",
            "gateway:users:list",
        )
        .await;

        // An admin changes the viewer's role, locks and unlocks the deployer, adds someone.
        click(&c, "#signin").await;
        click(&c, "#user-admin-example-com").await;
        click(&c, "#users-link").await;
        let me = user_row_id(&c, "admin@example.com").await;
        let mine = text(&c, &format!("#user-{me}")).await;
        assert!(mine.contains("admin (you)"), "{mine}");
        assert!(
            c.find(Locator::Css(&format!("#lock-{me}"))).await.is_err(),
            "no lock button on yourself"
        );
        let viewer = user_row_id(&c, "viewer@example.com").await;
        // Nobody has set up an authenticator app here: the column says so.
        assert_eq!(text(&c, &format!("#mfa-{viewer}")).await, "off");
        c.find(Locator::Css(&format!("#role-{viewer}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .select_by_value("ops")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        click(&c, &format!("#set-role-{viewer}")).await;
        // Waited for: the page after the change has the new role selected.
        let _ = text(&c, &format!("#role-{viewer} option[value=ops][selected]")).await;

        let deployer = user_row_id(&c, "deployer@example.com").await;
        // A form whose CSRF token is not the session's (as another site's page would post it)
        // changes nothing.
        c.execute(
            "document.querySelectorAll('input[name=csrf]').forEach(i => i.value = 'forged')",
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        click(&c, &format!("#lock-{deployer}")).await;
        assert_eq!(text(&c, "#title").await, "Refused");
        c.goto(&go("/users"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        click(&c, &format!("#lock-{deployer}")).await;
        let _ = text(&c, &format!("#unlock-{deployer}")).await;
        let row = text(&c, &format!("#user-{deployer}")).await;
        assert!(row.contains("locked"), "{row}");
        click(&c, &format!("#unlock-{deployer}")).await;
        let _ = text(&c, &format!("#lock-{deployer}")).await;
        let row = text(&c, &format!("#user-{deployer}")).await;
        assert!(row.contains("active"), "{row}");

        c.find(Locator::Css("#new-email"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .send_keys("newcomer@example.com")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        click(&c, "#add").await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !text(&c, "#users").await.contains("newcomer@example.com") {
            assert!(Instant::now() < deadline, "the new user never showed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // A bad address is said plainly, and nothing is added.
        c.find(Locator::Css("#new-email"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .send_keys("not an address")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        click(&c, "#add").await;
        assert_eq!(text(&c, "#title").await, "Not changed");
        let said = text(&c, "main").await;
        assert!(said.contains("is not an e-mail address"), "{said}");

        // A custom role, defined on /roles and given on /users.
        c.goto(&go("/users"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        click(&c, "#roles-link").await;
        type_into(&c, "#new-role-name", "log-readers").await;
        type_into(&c, "#new-role-description", "read logs").await;
        type_into(
            &c,
            "#new-role-permissions",
            "convox:apps:list\nconvox:logs:read",
        )
        .await;
        click(&c, "#create-role-button").await;
        let row = text_soon(&c, "#role-log-readers", "log-readers").await;
        assert!(row.contains("read logs"), "{row}");
        let listed = element(&c, "#permissions-log-readers")
            .await
            .prop("value")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        assert_eq!(listed, "convox:apps:list\nconvox:logs:read");
        // A typo is said above the table, and nothing is defined.
        type_into(&c, "#new-role-name", "typos").await;
        type_into(&c, "#new-role-permissions", "convox:app:list").await;
        click(&c, "#create-role-button").await;
        let said = text_soon(&c, "#role-error", "grants no rack route").await;
        assert!(said.contains("convox:app:list"), "{said}");
        assert!(c.find(Locator::Css("#role-typos")).await.is_err());
        c.goto(&go("/users"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        c.find(Locator::Css(&format!("#role-{viewer}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .select_by_value("log-readers")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        click(&c, &format!("#set-role-{viewer}")).await;
        let _ = text(
            &c,
            &format!("#role-{viewer} option[value=log-readers][selected]"),
        )
        .await;
        c.goto(&go("/roles"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let row = text(&c, "#role-log-readers").await;
        assert!(row.contains("1 user(s)"), "{row}");
        let _ = c.close().await;

        // The changes are the API's: on the trail, by the admin.
        let (ok, out, err) = crate::kit::admin(
            &crate::kit::Db::at(dev.database_url(), db.backend, crate::kit::scratch_dir()),
            &[
                "audit",
                "export",
                "--action",
                "gateway:users:*",
                "--user",
                "admin@example.com",
            ],
        );
        assert!(ok, "{err}");
        for action in [
            "gateway:users:update",
            "gateway:users:lock",
            "gateway:users:unlock",
            "gateway:users:create",
        ] {
            assert!(
                out.contains(&format!("\"action\":\"{action}\"")),
                "{action} not audited: {out}"
            );
        }
        let (ok, out, err) = crate::kit::admin(
            &crate::kit::Db::at(dev.database_url(), db.backend, crate::kit::scratch_dir()),
            &["audit", "export", "--action", "gateway:roles:create"],
        );
        assert!(ok, "{err}");
        assert!(out.contains("\"role\":\"log-readers\""), "{out}");
        assert!(
            out.contains("\"reason\":\"invalid\""),
            "the typo's refusal: {out}"
        );
    }
);

async fn type_into(c: &fantoccini::Client, css: &str, text: &str) {
    element(c, css)
        .await
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

both_backends!(two_step_sign_in_in_chromium, |db| async move {
    let Some(driver) = chromedriver().await else {
        return;
    };
    // dev seals secrets with the key it keeps in its data directory.
    let dev = Dev::start(&db).await;
    let c = browser(&driver).await;
    sign_in_as(&c, &dev.gateway, "ops").await;
    assert!(text(&c, "#mfa").await.starts_with("off"));

    // Set up: a QR code the browser draws, the key to type, and the first code turns it on.
    click(&c, "#mfa-link").await;
    click(&c, "#setup").await;
    let secret = text(&c, "#secret").await;
    let qr = element(&c, "#qr svg").await;
    let (_, _, width, height) = qr.rectangle().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        width >= 150.0 && height >= 150.0,
        "QR code drawn {width}x{height}"
    );
    let mut app = crate::mfa::App::new(&secret);
    let code = app.next_code().await;
    type_into(&c, "#code", &code).await;
    click(&c, "#confirm").await;
    // The click returns before the next page is there: the set-up page has a #status too.
    assert!(
        text_soon(&c, "#status", "is on").await.contains("is on"),
        "turned on"
    );

    // Signing in again stops at the code page; the app's next code lets the person in.
    sign_out(&c).await;
    click(&c, "#signin").await;
    click(&c, "#user-ops-example-com").await;
    assert_eq!(text(&c, "#title").await, "Enter your authenticator code");
    assert_eq!(text(&c, "#email").await, "ops@example.com");
    c.goto(&format!("{}/account", dev.gateway))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = text(&c, "#signin").await;
    c.goto(&format!("{}/api/v1/auth/mfa", dev.gateway))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    type_into(&c, "#code", "000000").await;
    click(&c, "#verify").await;
    assert!(text(&c, "#error").await.contains("not right"));
    let code = app.next_code().await;
    type_into(&c, "#code", &code).await;
    // Trusted, this browser's next sign-in skips the code.
    click(&c, "#trust").await;
    click(&c, "#verify").await;
    // Signed out, the sign-in starts at the home page, which lands on the rack.
    wait_for_url(&c, "/rack").await;
    click(&c, "#account-link").await;
    assert_eq!(text(&c, "#email").await, "ops@example.com");
    assert!(text(&c, "#mfa").await.starts_with("on"));
    sign_out(&c).await;
    click(&c, "#signin").await;
    click(&c, "#user-ops-example-com").await;
    wait_for_url(&c, "/rack").await;
    click(&c, "#account-link").await;
    assert_eq!(text(&c, "#email").await, "ops@example.com");
    click(&c, "#mfa-link").await;
    let row = text(&c, "#devices tbody tr").await;
    assert!(row.contains("127.0.0.1"), "{row}");

    // A lost phone: an admin resets it on the users page, and the next sign-in is one step.
    sign_out(&c).await;
    sign_in_as(&c, &dev.gateway, "admin").await;
    click(&c, "#users-link").await;
    let ops = user_row_id(&c, "ops@example.com").await;
    assert_eq!(text(&c, &format!("#mfa-{ops}")).await, "on");
    click(&c, &format!("#reset-mfa-{ops}")).await;
    let _ = c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::XPath(&format!(
            "//span[@id='mfa-{ops}' and text()='off']"
        )))
        .await
        .unwrap_or_else(|e| panic!("reset shown: {e}"));
    sign_out(&c).await;
    sign_in_as(&c, &dev.gateway, "ops").await;
    assert_eq!(text(&c, "#email").await, "ops@example.com");
    assert!(text(&c, "#mfa").await.starts_with("off"));
    let _ = c.close().await;
});

both_backends!(deploy_approvals_in_chromium, |db| async move {
    let Some(driver) = chromedriver().await else {
        return;
    };
    let dev = Dev::start(&db).await;
    let http = client();
    // CI asks for two commits of `web`.
    let mut ids = Vec::new();
    for (sha, message) in [
        ("1111111111111111111111111111111111111111", "Ship <b>it</b>"),
        ("2222222222222222222222222222222222222222", "Risky one"),
    ] {
        let asked: serde_json::Value = http
            .post(format!("{}/api/v1/deploy-approvals", dev.gateway))
            .bearer_auth(dev.token("cicd"))
            .json(&serde_json::json!({
                "app": "web", "git_commit": sha, "message": message,
                "ci_url": "https://ci.example.com/p/1"
            }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default();
        ids.push(asked["id"].as_i64().unwrap_or_default());
    }
    let c = browser(&driver).await;

    // An admin finds them from the account page and decides each, with a note.
    sign_in_as(&c, &dev.gateway, "admin").await;
    click(&c, "#deploys-link").await;
    let first = text(&c, &format!("#request-{}", ids[0])).await;
    assert!(
        first.contains("Ship <b>it</b>") && first.contains("token:dev-cicd"),
        "the message shown as text: {first}"
    );
    type_into(&c, &format!("#note-{}", ids[0]), "looks good").await;
    click(&c, &format!("#approve-{}", ids[0])).await;
    let approved = text(&c, &format!("#decided #request-{}", ids[0])).await;
    assert!(
        approved.contains("approved")
            && approved.contains("admin@example.com")
            && approved.contains("looks good"),
        "{approved}"
    );
    click(&c, &format!("#reject-{}", ids[1])).await;
    let rejected = text(&c, &format!("#decided #request-{}", ids[1])).await;
    assert!(rejected.contains("rejected"), "{rejected}");
    assert!(
        text(&c, "#none-pending")
            .await
            .contains("Nothing is waiting")
    );

    // The CI token sees the decisions.
    let seen: serde_json::Value = http
        .get(format!(
            "{}/api/v1/deploy-approvals/{}",
            dev.gateway, ids[0]
        ))
        .bearer_auth(dev.token("cicd"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(seen["status"], "approved", "{seen}");
    assert_eq!(seen["note"], "looks good", "{seen}");
    let _ = c.close().await;
});

/// A command of WebDriver's WebAuthn extension (`/session/{id}/webauthn/…`): a virtual
/// authenticator in Chromium that answers as a security key with a PIN would.
#[derive(Debug)]
struct WebAuthnCommand {
    path: String,
    method: http::Method,
    body: Option<serde_json::Value>,
}

impl fantoccini::wd::WebDriverCompatibleCommand for WebAuthnCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let base = base_url.as_str().trim_end_matches('/');
        let session = session_id.unwrap_or_default();
        url::Url::parse(&format!("{base}/session/{session}/webauthn/{}", self.path))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(|b| b.to_string()),
        )
    }
}

/// Plugs a virtual security key (CTAP2 over USB, with a PIN it always takes) into the
/// browser.
async fn plug_in_security_key(c: &fantoccini::Client) {
    c.issue_cmd(WebAuthnCommand {
        path: "authenticator".into(),
        method: http::Method::POST,
        body: Some(serde_json::json!({
            "protocol": "ctap2", "transport": "usb", "hasResidentKey": true,
            "hasUserVerification": true, "isUserConsenting": true, "isUserVerified": true,
        })),
    })
    .await
    .unwrap_or_else(|e| panic!("virtual authenticator: {e}"));
}

both_backends!(security_keys_in_chromium, |db| async move {
    let Some(driver) = chromedriver().await else {
        return;
    };
    // A short step-up window, so that confirming with the key can be seen.
    let dev = Dev::start_with_env(&db, &[], &[("MFA_STEP_UP_SECS", "2")]).await;
    assert!(
        dev.gateway.starts_with("http://localhost:"),
        "{}",
        dev.gateway
    );
    let c = browser(&driver).await;
    sign_in_as(&c, &dev.gateway, "admin").await;

    // Keys go beside an app: none is offered before one is on.
    click(&c, "#mfa-link").await;
    assert!(c.find(Locator::Css("#new-key")).await.is_err());
    click(&c, "#setup").await;
    let mut app = crate::mfa::App::new(&text(&c, "#secret").await);
    type_into(&c, "#code", &app.next_code().await).await;
    click(&c, "#confirm").await;
    assert!(text_soon(&c, "#status", "is on").await.contains("is on"));

    // Adding one needs a recent confirmation: the app's code, the window having passed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    plug_in_security_key(&c).await;
    type_into(&c, "#key-name", "Keyring <key>").await;
    click(&c, "#new-key").await;
    assert_eq!(text(&c, "#title").await, "Confirm it's you");
    assert!(
        c.find(Locator::Css("#use-key")).await.is_err(),
        "no key to use yet"
    );
    type_into(&c, "#code", &app.next_code().await).await;
    click(&c, "#verify").await;
    wait_for_url(&c, "/account/mfa").await;
    type_into(&c, "#key-name", "Keyring <key>").await;
    click(&c, "#new-key").await;
    assert_eq!(text(&c, "#title").await, "Add a security key");
    assert_eq!(text(&c, "#key-name").await, "Keyring <key>");
    click(&c, "#add-key").await;
    let row = text_soon(&c, "#keys tbody tr", "Keyring").await;
    assert!(
        row.contains("Keyring <key>"),
        "the name shown as text: {row}"
    );

    // The next sign-in takes a touch instead of the code.
    sign_out(&c).await;
    click(&c, "#signin").await;
    click(&c, "#user-admin-example-com").await;
    assert_eq!(text(&c, "#title").await, "Enter your authenticator code");
    click(&c, "#use-key").await;
    wait_for_url(&c, "/rack").await;
    click(&c, "#account-link").await;
    assert_eq!(text(&c, "#email").await, "admin@example.com");

    // The changes that need a code with them take a touch too: approving a deploy and
    // minting a token.
    let asked: serde_json::Value = client()
        .post(format!("{}/api/v1/deploy-approvals", dev.gateway))
        .bearer_auth(dev.token("cicd"))
        .json(&serde_json::json!({
            "app": "web", "git_commit": "3333333333333333333333333333333333333333",
        }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let id = asked["id"].as_i64().unwrap_or_default();
    click(&c, "#deploys-link").await;
    click(&c, &format!("#approve-key-{id}")).await;
    let approved = text_soon(&c, &format!("#decided #request-{id}"), "approved").await;
    assert!(approved.contains("approved"), "{approved}");
    c.goto(&format!("{}/tokens", dev.gateway))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    type_into(&c, "#new-name", "ci-by-key").await;
    click(&c, "#create-with-key").await;
    assert!(text(&c, "#new-secret").await.starts_with("rgw_"));
    c.goto(&format!("{}/account", dev.gateway))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // So does confirming it's them once the window has passed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    click(&c, "#mfa-link").await;
    type_into(&c, "#key-name", "Second").await;
    click(&c, "#new-key").await;
    assert_eq!(text(&c, "#title").await, "Confirm it's you");
    click(&c, "#use-key").await;
    wait_for_url(&c, "/account/mfa").await;
    let used = text(&c, "#keys tbody tr").await;
    assert!(!used.ends_with("- Remove"), "last use shown: {used}");

    // Changing people asks "Confirm it's you" right then: a touch will do.
    c.goto(&format!("{}/users", dev.gateway))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let viewer = user_row_id(&c, "viewer@example.com").await;
    click(&c, &format!("#lock-{viewer}")).await;
    assert_eq!(text(&c, "#title").await, "Confirm it's you");
    click(&c, "#confirm-with-key").await;
    wait_for_url(&c, "/users").await;
    let locked = text_soon(&c, &format!("#user-{viewer}"), "locked").await;
    assert!(locked.contains("locked"), "{locked}");

    // A command-line session's confirmation (here asked by this browser's own session, as
    // the CLI asks) takes a touch on the page its link opens.
    let session = c
        .get_named_cookie("rg_session")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .value()
        .to_string();
    let key_api = |path: &str, body: serde_json::Value| {
        client()
            .post(format!("{}/api/v1/auth/mfa/key/{path}", dev.gateway))
            .bearer_auth(&session)
            .json(&body)
            .send()
    };
    let started: serde_json::Value = key_api("start", serde_json::json!({}))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let link = started["browser_url"].as_str().unwrap_or_default();
    c.goto(link).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        text(&c, "#code").await,
        started["code"].as_str().unwrap_or("?")
    );
    click(&c, "#use-key").await;
    assert_eq!(text_soon(&c, "#title", "Confirmed").await, "Confirmed");
    let polled: serde_json::Value = key_api("poll", serde_json::json!({ "id": started["id"] }))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(polled["status"], "confirmed", "{polled}");
    c.goto(&format!("{}/users", dev.gateway))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // The users page says who has keys.
    let me = user_row_id(&c, "admin@example.com").await;
    assert_eq!(text(&c, &format!("#mfa-{me}")).await, "on");
    assert_eq!(
        text(&c, &format!("#factors-{me}")).await,
        "(1 security key)"
    );

    // Removed, it is gone from the list.
    c.goto(&format!("{}/account/mfa", dev.gateway))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let id = element(&c, "#keys tbody tr")
        .await
        .attr("id")
        .await
        .unwrap_or_default()
        .unwrap_or_default();
    click(&c, &format!("#remove-{id}")).await;
    assert!(text(&c, "#no-keys").await.contains("No security keys"));

    // It is all on the trail.
    c.goto(&format!("{}/audit?action=gateway%3Amfa%3A*", dev.gateway))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rows = audit_rows(&c).await;
    let flat: Vec<String> = rows.iter().map(|r| r.join(" ")).collect();
    for action in ["gateway:mfa:add_key", "gateway:mfa:remove_key"] {
        assert!(
            flat.iter().any(|r| r.contains(action)),
            "{action} on the trail: {flat:#?}"
        );
    }
    let _ = c.close().await;
});

both_backends!(app_rules_in_chromium, |db| async move {
    let Some(driver) = chromedriver().await else {
        return;
    };
    let dev = Dev::start(&db).await;
    let c = browser(&driver).await;
    let go = |path: &str| format!("{}{path}", dev.gateway);

    // An admin sets web's rules on /app-rules.
    c.goto(&go("/")).await.unwrap_or_else(|e| panic!("{e}"));
    click(&c, "#signin").await;
    click(&c, "#user-admin-example-com").await;
    click(&c, "#app-rules-link").await;
    assert_eq!(text(&c, "#no-rules").await, "No app has rules.");
    type_into(&c, "#new-app", "web").await;
    type_into(&c, "#new-secret", "DATABASE_URL\nSECRET_*").await;
    type_into(&c, "#new-protected", "RAILS_ENV").await;
    type_into(&c, "#new-commands", "bin/rails db:migrate").await;
    type_into(&c, "#new-images", "web-image").await;
    click(&c, "#new-rules-button").await;
    // A line that is not service=pattern is said, and nothing is set.
    let said = text_soon(&c, "#rules-error", "service=pattern").await;
    assert!(said.contains("web-image"), "{said}");
    assert!(c.find(Locator::Css("#app-web")).await.is_err());
    type_into(&c, "#new-app", "web").await;
    type_into(&c, "#new-secret", "DATABASE_URL\nSECRET_*").await;
    type_into(&c, "#new-protected", "RAILS_ENV").await;
    type_into(&c, "#new-commands", "bin/rails db:migrate").await;
    type_into(&c, "#new-images", "web=registry.example.com/web:{commit}").await;
    click(&c, "#new-rules-button").await;
    let _ = text_soon(&c, "#app-web", "web").await;
    let value = |css: &'static str| {
        let c = &c;
        async move {
            element(c, css)
                .await
                .prop("value")
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_default()
        }
    };
    assert_eq!(value("#secret-web").await, "DATABASE_URL\nSECRET_*");
    assert_eq!(value("#protected-web").await, "RAILS_ENV");
    assert_eq!(
        value("#images-web").await.trim(),
        "web=registry.example.com/web:{commit}"
    );

    // The rule holds at once: ops sees the names, not the secret values.
    let (status, releases) = dev.get_json("ops", "/apps/web/releases?limit=1").await;
    assert_eq!(status, 200, "{releases}");
    let env = releases[0]["env"].as_str().unwrap_or_default();
    assert!(
        env.contains("DATABASE_URL=[redacted]") && env.contains("RAILS_ENV=production"),
        "{env}"
    );

    // A deploy request for web says, to whoever decides, what else an approval lets through.
    let sha = "1f0e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6";
    let asked: serde_json::Value = crate::kit::client()
        .post(go("/api/v1/deploy-approvals"))
        .bearer_auth(dev.token("cicd"))
        .json(&serde_json::json!({ "app": "web", "git_commit": sha }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let id = asked["id"].as_i64().unwrap_or_default();
    c.goto(&go("/deploy-approvals"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        text(&c, &format!("#commands-{id}")).await,
        "bin/rails db:migrate"
    );
    assert_eq!(
        text(&c, &format!("#images-{id}")).await,
        format!("web=registry.example.com/web:{sha}")
    );

    // An ops person reads the rules, without forms.
    c.goto(&go("/account"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sign_out(&c).await;
    click(&c, "#signin").await;
    click(&c, "#user-ops-example-com").await;
    click(&c, "#app-rules-link").await;
    let shown = text(&c, "main").await;
    assert!(shown.contains("DATABASE_URL SECRET_*"), "{shown}");
    assert!(c.find(Locator::Css("#save-web")).await.is_err());
    c.goto(&go("/account"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sign_out(&c).await;

    // The admin clears them; ops sees the values again.
    click(&c, "#signin").await;
    click(&c, "#user-admin-example-com").await;
    c.goto(&go("/app-rules"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    click(&c, "#clear-web").await;
    let _ = text_soon(&c, "#no-rules", "No app has rules").await;
    let _ = c.close().await;
    let (_, releases) = dev.get_json("ops", "/apps/web/releases?limit=1").await;
    assert!(
        !releases[0]["env"]
            .as_str()
            .unwrap_or_default()
            .contains("[redacted]"),
        "{releases}"
    );
    let (ok, out, err) = crate::kit::admin(
        &crate::kit::Db::at(dev.database_url(), db.backend, crate::kit::scratch_dir()),
        &["audit", "export", "--action", "gateway:app-rules:*"],
    );
    assert!(ok, "{err}");
    for said in [
        "\"action\":\"gateway:app-rules:update\"",
        "\"action\":\"gateway:app-rules:delete\"",
        "\"reason\":\"invalid\"",
    ] {
        assert!(out.contains(said), "{said}: {out}");
    }
});
