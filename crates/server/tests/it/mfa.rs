//! Two-step sign-in with an authenticator app (TOTP), over HTTP through the real dev OIDC
//! provider: set up on the account page, asked for at every web and CLI sign-in before any
//! session exists, replays and guesses refused, lockout, removal, the operator's reset, and a
//! gateway without its key failing closed.

use dev_oidc::browser::{Browser, Page};
use gateway::mfa::totp;

use crate::both_backends;
use crate::kit::{Db, admin, client, eventually, store, token};
use crate::signin::{CliStart, SignIn, start_cli_sign_in};

pub(crate) const KEY: &str = "8f2c1d9e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d";
pub(crate) const WHO: &str = "deployer@example.com";

/// Acts as the person's authenticator app: a code for a step newer than any used so far
/// (the gateway accepts each step once, and one step either side of now), waiting for the
/// clock when the steps within reach are used up.
pub struct App {
    secret: Vec<u8>,
    /// The secret as the setup page showed it.
    base32: String,
    last_step: u64,
    /// The backup codes shown when it was turned on on the account page.
    pub backup_codes: Vec<String>,
}

impl App {
    /// The app holding the secret the set-up page showed as `base32`.
    pub fn new(base32: &str) -> App {
        let secret = totp::secret_from_base32(base32).unwrap_or_else(|| panic!("{base32:?}"));
        App {
            secret,
            base32: base32.to_string(),
            last_step: 0,
            backup_codes: Vec::new(),
        }
    }

    fn now_step() -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        now / totp::STEP_SECS
    }

    pub async fn next_code(&mut self) -> String {
        loop {
            let now = App::now_step();
            let step = (self.last_step + 1).max(now.saturating_sub(1));
            if step <= now + 1 {
                self.last_step = step;
                return totp::code_at(&self.secret, step * totp::STEP_SECS)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// The code last given again (a replay).
    fn last_code(&self) -> String {
        totp::code_at(&self.secret, self.last_step * totp::STEP_SECS)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A code no step near now has.
    pub(crate) fn wrong_code(&self) -> String {
        let now = App::now_step();
        let near: Vec<String> = (now.saturating_sub(2)..=now + 2)
            .filter_map(|s| totp::code_at(&self.secret, s * totp::STEP_SECS).ok())
            .collect();
        (0..1000)
            .map(|n| format!("{:06}", 123_457 + n * 7))
            .find(|c| !near.contains(c))
            .unwrap_or_default()
    }
}

/// The value of `<input … name="csrf" value="…">` on `page`.
pub(crate) fn csrf(page: &Page) -> String {
    between(&page.body, "name=\"csrf\" value=\"", "\"")
}

pub(crate) fn between(text: &str, start: &str, end: &str) -> String {
    text.split(start)
        .nth(1)
        .and_then(|rest| rest.split(end).next())
        .unwrap_or_default()
        .to_string()
}

/// `b` goes to `url` (following redirects).
pub(crate) async fn go(b: &mut Browser, url: &str) -> Page {
    b.visit(url).await.unwrap_or_else(|e| panic!("{e}"))
}

/// `b` submits `fields` as a form to `url` (following redirects).
pub(crate) async fn submit(b: &mut Browser, url: &str, fields: &[(&str, &str)]) -> Page {
    b.submit(url, fields)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A browser of `WHO` through the provider, starting at the web sign-in: where it ends.
pub(crate) async fn web_sign_in(s: &SignIn) -> (Browser, Page) {
    web_sign_in_as(s, WHO).await
}

/// [`web_sign_in`] as `email`.
pub(crate) async fn web_sign_in_as(s: &SignIn, email: &str) -> (Browser, Page) {
    let mut b = Browser::new(email).unwrap_or_else(|e| panic!("{e}"));
    let login = format!("{}/api/v1/auth/web/login?return_to=/account", s.gw.url);
    let page = go(&mut b, &login).await;
    (b, page)
}

/// A CLI sign-in of `email` started, confirmed in its browser, and stopped at the code page:
/// the CLI's side, the browser, and the page.
async fn cli_code_page(s: &SignIn, email: &str) -> (CliStart, Browser, Page) {
    let cli = start_cli_sign_in(&client(), &s.gw.url).await;
    let mut browser = Browser::new(email).unwrap_or_else(|e| panic!("{e}"));
    let page = browser
        .visit_confirming(&cli.browser_url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(asks_for_a_code(&page), "{}", page.body);
    (cli, browser, page)
}

/// A CLI session of `WHO` (whose app is `app`): signed in through the browser with a code,
/// collected as the CLI collects it.
pub(crate) async fn cli_session(s: &SignIn, app: &mut App) -> String {
    let (cli, mut b, asked) = cli_code_page(s, WHO).await;
    let code = app.next_code().await;
    let done = give(s, &mut b, &asked, &code).await;
    assert_eq!(done.status, 200, "{}", done.body);
    collect_cli_session(s, &cli).await
}

/// The session the CLI sign-in `cli` collects, once its browser is through.
async fn collect_cli_session(s: &SignIn, cli: &CliStart) -> String {
    let body: serde_json::Value = client()
        .post(format!("{}/api/v1/auth/cli/poll", s.gw.url))
        .json(&serde_json::json!({ "login_id": cli.login_id, "code_verifier": cli.verifier }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let token = body["session_token"].as_str().unwrap_or_default();
    assert!(token.starts_with("rgs_"), "{body}");
    token.to_string()
}

/// Gives `code` on the code page `page` asked with.
pub(crate) async fn give(s: &SignIn, b: &mut Browser, page: &Page, code: &str) -> Page {
    let url = format!("{}/api/v1/auth/mfa", s.gw.url);
    submit(b, &url, &[("csrf", &csrf(page)), ("code", code)]).await
}

pub(crate) fn asks_for_a_code(page: &Page) -> bool {
    page.status == 200
        && page.url.ends_with("/api/v1/auth/mfa")
        && page.body.contains("id=\"code\"")
}

async fn sessions_of(db: &Db) -> usize {
    let st = store(db).await;
    let user = st.find_user(WHO).await.ok().flatten();
    let id = user.map(|u| u.id).unwrap_or_default();
    st.user_sessions(id, 0)
        .await
        .map(|s| s.len())
        .unwrap_or(usize::MAX)
}

pub(crate) async fn events(db: &Db, action: &str) -> Vec<gateway::audit::AuditEvent> {
    store(db)
        .await
        .audit_rows(0, 10_000)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.event)
        .filter(|e| e.action == action)
        .collect()
}

/// Sets up the app on the account page of a browser signed in without one.
pub(crate) async fn set_up(s: &SignIn, b: &mut Browser) -> App {
    let page = go(b, &format!("{}/account/mfa", s.gw.url)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("is <strong>off</strong>"),
        "{}",
        page.body
    );
    let setup = submit(
        b,
        &format!("{}/account/mfa/setup", s.gw.url),
        &[("csrf", &csrf(&page))],
    )
    .await;
    assert_eq!(setup.status, 200, "{}", setup.body);
    assert!(setup.body.contains("<svg"), "a QR code: {}", setup.body);
    let mut app = App::new(&between(&setup.body, "id=\"secret\">", "<"));
    let confirm = format!("{}/account/mfa/confirm", s.gw.url);
    // A wrong first code turns nothing on.
    let wrong = submit(
        b,
        &confirm,
        &[("csrf", &csrf(&setup)), ("code", &app.wrong_code())],
    )
    .await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    assert!(wrong.body.contains("id=\"error\""), "{}", wrong.body);
    let code = app.next_code().await;
    let on = submit(b, &confirm, &[("csrf", &csrf(&setup)), ("code", &code)]).await;
    assert_eq!(on.status, 200, "{}", on.body);
    assert!(on.body.contains("is <strong>on</strong>"), "{}", on.body);
    app.backup_codes = backup_codes_on(&on);
    assert_eq!(app.backup_codes.len(), 10, "{}", on.body);
    app
}

/// `POST /api/v1/auth/mfa/verify` with `code`, as the CLI's `mfa verify` sends it for
/// `session`: the status and the JSON answer.
pub(crate) async fn api_verify(
    s: &SignIn,
    session: &str,
    code: String,
) -> (u16, serde_json::Value) {
    let r = client()
        .post(format!("{}/api/v1/auth/mfa/verify", s.gw.url))
        .bearer_auth(session)
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// `WHO`'s user id.
pub(crate) async fn who_id(db: &Db) -> i64 {
    let user = store(db).await.find_user(WHO).await.ok().flatten();
    user.map(|u| u.id).unwrap_or_default()
}

/// Turns the app off on `b`'s account page with its next code: the page after.
pub(crate) async fn remove_app(s: &SignIn, b: &mut Browser, app: &mut App) -> Page {
    let account = go(b, &format!("{}/account/mfa", s.gw.url)).await;
    let code = app.next_code().await;
    let url = format!("{}/account/mfa/remove", s.gw.url);
    submit(b, &url, &[("csrf", &csrf(&account)), ("code", &code)]).await
}

/// The backup codes a page shows (once, when made).
fn backup_codes_on(page: &Page) -> Vec<String> {
    page.body
        .split("<li><code>")
        .skip(1)
        .filter_map(|rest| rest.split("</code>").next())
        .map(str::to_string)
        .collect()
}

/// A gateway with `MFA_ENCRYPTION_KEY` (or without: `key`).
async fn gateway_with_key(db: &Db, key: Option<&str>) -> SignIn {
    let env: Vec<(&str, &str)> = key.map(|k| ("MFA_ENCRYPTION_KEY", k)).into_iter().collect();
    SignIn::start(db, dev_oidc::Quirks::default(), &env).await
}

pub(crate) fn add_who(db: &Db) {
    let (ok, _, err) = admin(db, &["users", "add", WHO, "--role", "deployer"]);
    assert!(ok, "{err}");
}

both_backends!(
    an_authenticator_app_guards_every_sign_in_web_and_cli,
    |db| async move {
        add_who(&db);
        let s = gateway_with_key(&db, Some(KEY)).await;

        // Without an app, sign-in is one step; the account page offers the second.
        let (mut first, page) = web_sign_in(&s).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("id=\"mfa\">off"), "{}", page.body);
        let mut app = set_up(&s, &mut first).await;
        let enabled = events(&db, "gateway:mfa:enable").await;
        assert_eq!(enabled.len(), 1, "{enabled:?}");
        assert_eq!(enabled[0].user_email.as_deref(), Some(WHO));
        let stored = store(&db).await;
        let user = stored
            .find_user(WHO)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("user"));
        let row = stored
            .totp(user.id)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("row"));
        assert!(row.secret_sealed.starts_with("v1:"), "sealed at rest");
        let base32 = app.base32.clone();
        assert!(!row.secret_sealed.contains(&base32));
        assert_eq!(sessions_of(&db).await, 1);
        // Admins see who has an app: over the API and where the gateway runs.
        let admin_token = token(&db, "mfa-admin", &["--role", "admin"]);
        let listed: serde_json::Value = client()
            .get(format!("{}/api/v1/users", s.gw.url))
            .bearer_auth(&admin_token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default();
        let mfa_of = |listed: &serde_json::Value| -> Option<bool> {
            listed.as_array()?.iter().find(|u| u["email"] == WHO)?["mfa"].as_bool()
        };
        assert_eq!(mfa_of(&listed), Some(true), "{listed}");
        let (ok, out, err) = admin(&db, &["users", "list", "--json"]);
        assert!(ok, "{err}");
        let listed: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(mfa_of(&listed), Some(true), "{out}");

        // A new web sign-in stops at the code page, with no session and no way past it.
        let (mut b, asked) = web_sign_in(&s).await;
        assert!(asks_for_a_code(&asked), "{} {}", asked.url, asked.body);
        assert!(asked.body.contains(WHO), "{}", asked.body);
        assert!(!b.cookies.contains_key("rg_session"));
        assert_eq!(sessions_of(&db).await, 1, "no session before the code");
        let account = go(&mut b, &format!("{}/account", s.gw.url)).await;
        assert!(
            !account.body.contains("id=\"email\""),
            "not signed in: {}",
            account.body
        );

        // A form from elsewhere (no CSRF token) does nothing; a wrong code is refused and
        // audited; six letters are not a guess.
        let forged = submit(
            &mut b,
            &format!("{}/api/v1/auth/mfa", s.gw.url),
            &[("csrf", "x"), ("code", &app.last_code())],
        )
        .await;
        assert_eq!(forged.status, 403, "{}", forged.body);
        let wrong = give(&s, &mut b, &asked, &app.wrong_code()).await;
        assert_eq!(wrong.status, 401, "{}", wrong.body);
        assert!(wrong.body.contains("4 more wrong"), "{}", wrong.body);
        let letters = give(&s, &mut b, &asked, "abcdef").await;
        assert_eq!(letters.status, 400, "{}", letters.body);
        let refusals = events(&db, "gateway:auth:mfa").await;
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert_eq!(refusals[0].rbac_decision, gateway::audit::Decision::Deny);
        assert_eq!(refusals[0].details["reason"], "wrong_code");

        // The code the app shows now signs in, once.
        let code = app.next_code().await;
        let signed_in = give(&s, &mut b, &asked, &code).await;
        assert_eq!(signed_in.status, 200, "{}", signed_in.body);
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.url);
        assert!(
            signed_in.body.contains("id=\"mfa\">on"),
            "{}",
            signed_in.body
        );
        assert_eq!(sessions_of(&db).await, 2);
        let signins = events(&db, "gateway:auth:signin").await;
        let last = signins.last().unwrap_or_else(|| panic!("a sign-in event"));
        assert_eq!(last.details["mfa"], "totp", "{last:?}");
        // The page of a finished sign-in asks for nothing more.
        let again = give(&s, &mut b, &asked, &code).await;
        assert_eq!(again.status, 410, "{}", again.body);

        // The same code at the next sign-in is a replay.
        let (mut b2, asked2) = web_sign_in(&s).await;
        assert!(asks_for_a_code(&asked2));
        let replay = give(&s, &mut b2, &asked2, &app.last_code()).await;
        assert_eq!(replay.status, 401, "{}", replay.body);
        assert_eq!(sessions_of(&db).await, 2);

        // A CLI sign-in asks for the code in its browser, and the CLI gets its session after.
        let c = client();
        let (
            CliStart {
                login_id, verifier, ..
            },
            mut cli_browser,
            cli_asked,
        ) = cli_code_page(&s, WHO).await;
        assert!(cli_asked.body.contains("for the rack-gateway CLI"));
        let poll = || {
            c.post(format!("{}/api/v1/auth/cli/poll", s.gw.url))
                .json(&serde_json::json!({ "login_id": login_id, "code_verifier": verifier }))
                .send()
        };
        let pending = poll().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pending.status(), 202, "nothing to collect before the code");
        let code = app.next_code().await;
        let done = give(&s, &mut cli_browser, &cli_asked, &code).await;
        assert_eq!(done.status, 200, "{}", done.body);
        assert!(
            done.body.contains("signed in to the rack-gateway CLI"),
            "{}",
            done.body
        );
        let collected = poll().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(collected.status(), 200);
        let body: serde_json::Value = collected.json().await.unwrap_or_default();
        let token = body["session_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!token.is_empty(), "{body}");
        let apps = c
            .get(s.gw.proxy("/apps"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(apps.status(), 200);

        // Five wrong codes in a row end the sign-in and lock codes out, the right one too.
        let (mut b3, asked3) = web_sign_in(&s).await;
        for n in 1..=4 {
            let wrong = give(&s, &mut b3, &asked3, &app.wrong_code()).await;
            assert_eq!(wrong.status, 401, "wrong code {n}: {}", wrong.body);
        }
        let locked = give(&s, &mut b3, &asked3, &app.wrong_code()).await;
        assert_eq!(locked.status, 429, "{}", locked.body);
        assert!(locked.body.contains("15 more minute"), "{}", locked.body);
        let (mut b4, asked4) = web_sign_in(&s).await;
        let code = app.next_code().await;
        let still = give(&s, &mut b4, &asked4, &code).await;
        assert_eq!(still.status, 429, "{}", still.body);
        assert_eq!(sessions_of(&db).await, 3, "the CLI's, and none since");
        let lockouts = events(&db, "gateway:auth:mfa").await;
        let locked_out: Vec<_> = lockouts
            .iter()
            .filter(|e| e.details["reason"] == "locked_out")
            .collect();
        // The wrong code that started it says so (notifications tell of that one), the right
        // code refused during it does not.
        assert_eq!(locked_out.len(), 2, "{lockouts:?}");
        assert_eq!(
            locked_out[0].details["lockout_started"], true,
            "{lockouts:?}"
        );
        assert_eq!(
            locked_out[1].details["lockout_started"], false,
            "{lockouts:?}"
        );

        // The operator resets it (a lost phone): one step again, and audited.
        let (ok, out, err) = admin(&db, &["users", "reset-mfa", WHO]);
        assert!(ok, "{err}");
        assert!(out.contains("Removed the authenticator app"), "{out}");
        let (ok, _, err) = admin(&db, &["users", "reset-mfa", WHO]);
        assert!(!ok, "nothing left to reset");
        assert!(err.contains("not found"), "{err}");
        let results: Vec<String> = events(&db, "gateway:mfa:reset")
            .await
            .iter()
            .filter(|e| e.kind == gateway::audit::EventKind::Outcome)
            .map(|e| e.details["result"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(results, ["done", "refused"], "both tries recorded");
        let (_, page) = web_sign_in(&s).await;
        assert!(page.url.ends_with("/account"), "{} {}", page.url, page.body);
        assert!(page.body.contains("id=\"mfa\">off"), "{}", page.body);
        let (ok, out, err) = admin(&db, &["users", "list", "--json"]);
        assert!(ok, "{err}");
        let listed: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(mfa_of(&listed), Some(false), "{out}");

        // Nothing of the secret reached the gateway's output.
        let output = s.gw.all_output();
        assert!(!output.contains(&base32), "the secret in the output");
    }
);

both_backends!(
    an_authenticator_is_removed_only_with_a_code_and_codes_need_the_key,
    |db| async move {
        add_who(&db);
        let s = gateway_with_key(&db, Some(KEY)).await;
        let (mut b, _) = web_sign_in(&s).await;
        let mut app = set_up(&s, &mut b).await;

        // Removing needs a current code: a session cookie alone does not turn it off.
        let page = go(&mut b, &format!("{}/account/mfa", s.gw.url)).await;
        let remove = format!("{}/account/mfa/remove", s.gw.url);
        let refused = submit(
            &mut b,
            &remove,
            &[("csrf", &csrf(&page)), ("code", &app.wrong_code())],
        )
        .await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert!(
            refused.body.contains("is <strong>on</strong>"),
            "{}",
            refused.body
        );
        let disabled = events(&db, "gateway:mfa:disable").await;
        assert_eq!(disabled.len(), 1);
        assert_eq!(disabled[0].rbac_decision, gateway::audit::Decision::Deny);

        // A gateway started without the key cannot check codes: nobody with an app gets in.
        drop(s);
        let s = gateway_with_key(&db, None).await;
        let (mut b2, asked) = web_sign_in(&s).await;
        assert!(asks_for_a_code(&asked), "{}", asked.body);
        let code = app.next_code().await;
        let closed = give(&s, &mut b2, &asked, &code).await;
        assert_eq!(closed.status, 503, "{}", closed.body);
        assert!(!b2.cookies.contains_key("rg_session"));
        let gw = &s.gw;
        let said =
            eventually(|| async { gw.all_output().contains("MFA_ENCRYPTION_KEY is not set") });
        assert!(said.await, "the log says why");

        // Another key (a rotation done wrong) opens no secret: closed as well, and said.
        drop(s);
        let other = KEY.replace('8', "9");
        let s = gateway_with_key(&db, Some(&other)).await;
        let (mut b2, asked) = web_sign_in(&s).await;
        let code = app.next_code().await;
        let closed = give(&s, &mut b2, &asked, &code).await;
        assert_eq!(closed.status, 503, "{}", closed.body);
        assert!(!b2.cookies.contains_key("rg_session"));
        let gw = &s.gw;
        let said = eventually(|| async { gw.all_output().contains("does not open") });
        assert!(said.await, "the log says why");

        // With the key again: a right code removes it, and sign-in is one step.
        drop(s);
        let s = gateway_with_key(&db, Some(KEY)).await;
        let (mut b3, asked) = web_sign_in(&s).await;
        let code = app.next_code().await;
        let signed_in = give(&s, &mut b3, &asked, &code).await;
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.body);
        let page = go(&mut b3, &format!("{}/account/mfa", s.gw.url)).await;
        let code = app.next_code().await;
        let remove = format!("{}/account/mfa/remove", s.gw.url);
        let removed = submit(&mut b3, &remove, &[("csrf", &csrf(&page)), ("code", &code)]).await;
        let removed_url = removed.url.replace(&s.gw.url, "");
        assert_eq!(removed_url, "/account/mfa", "{}", removed.body);
        assert!(
            removed.body.contains("is <strong>off</strong>"),
            "{}",
            removed.body
        );
        let disabled = events(&db, "gateway:mfa:disable").await;
        assert_eq!(disabled.len(), 2);
        assert_eq!(disabled[1].rbac_decision, gateway::audit::Decision::Allow);
        let (_, page) = web_sign_in(&s).await;
        assert!(page.url.ends_with("/account"), "{} {}", page.url, page.body);
    }
);

both_backends!(
    the_authenticator_store_takes_each_step_once_and_counts_to_a_lockout,
    |db| async move {
        add_who(&db);
        let st = store(&db).await;
        let id = st
            .find_user(WHO)
            .await
            .ok()
            .flatten()
            .map(|u| u.id)
            .unwrap_or_default();
        let ok = |r: Result<bool, gateway::store::StoreError>| r.unwrap_or_else(|e| panic!("{e}"));
        let now = 1_000_000;
        // A set-up started twice keeps the second secret: the first can no longer be confirmed
        // (a code checked against a page opened in another tab).
        assert!(ok(st.start_totp(id, "v1:first", "session:1", now).await));
        assert!(ok(st.start_totp(id, "v1:second", "session:1", now).await));
        assert!(!ok(st.confirm_totp(id, "v1:first", 7, now).await));
        assert!(
            !ok(st.accept_totp_step(id, 8, now).await),
            "nothing confirmed yet"
        );
        assert!(ok(st.confirm_totp(id, "v1:second", 7, now).await));
        assert!(!ok(st.confirm_totp(id, "v1:second", 7, now).await), "once");
        assert!(
            !ok(st.start_totp(id, "v1:third", "session:1", now).await),
            "a confirmed one stays"
        );
        // Each step once, and only forwards.
        assert!(
            !ok(st.accept_totp_step(id, 7, now).await),
            "the confirming code's step"
        );
        assert!(ok(st.accept_totp_step(id, 9, now).await));
        assert!(!ok(st.accept_totp_step(id, 9, now).await));
        assert!(!ok(st.accept_totp_step(id, 8, now).await));
        // Wrong codes count to the lockout, which refuses even a right one until it ends.
        for n in 1..=4 {
            let f = st.record_totp_failure(id, now, 5, 60_000).await;
            let f = f.ok().flatten().unwrap_or_else(|| panic!("failure {n}"));
            assert_eq!((f.failures, f.locked_until), (n, 0));
        }
        let f = st.record_totp_failure(id, now, 5, 60_000).await;
        let f = f.ok().flatten().unwrap_or_else(|| panic!("the fifth"));
        assert_eq!((f.failures, f.locked_until), (0, now + 60_000));
        assert!(!ok(st.accept_totp_step(id, 10, now + 59_999).await));
        assert!(ok(st.accept_totp_step(id, 10, now + 60_000).await));
        let row = st
            .totp(id)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("row"));
        assert_eq!((row.last_step, row.failures, row.locked_until), (10, 0, 0));
        // Removed: nothing to count against.
        assert!(ok(st.remove_totp(id).await));
        assert!(!ok(st.remove_totp(id).await));
        assert!(matches!(
            st.record_totp_failure(id, now, 5, 60_000).await,
            Ok(None)
        ));
    }
);

both_backends!(
    with_mfa_required_a_person_without_an_app_sets_one_up_to_sign_in,
    |db| async move {
        add_who(&db);
        let env = [("MFA_ENCRYPTION_KEY", KEY), ("MFA_REQUIRED", "true")];
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &env).await;

        // The provider's step leads to setting up an app, not to a session.
        let (mut b, asked) = web_sign_in(&s).await;
        assert!(asks_for_a_code(&asked), "{} {}", asked.url, asked.body);
        assert!(
            asked.body.contains("Set up two-step sign-in"),
            "{}",
            asked.body
        );
        assert!(asked.body.contains("<svg"), "a QR code");
        let base32 = between(&asked.body, "id=\"secret\">", "<");
        assert_eq!(sessions_of(&db).await, 0);
        // Looking again shows the same key (no new secret per view).
        let again = go(&mut b, &format!("{}/api/v1/auth/mfa", s.gw.url)).await;
        assert_eq!(between(&again.body, "id=\"secret\">", "<"), base32);

        // A wrong code sets nothing up; the app's code does, and signs in.
        let mut app = App::new(&base32);
        let wrong = give(&s, &mut b, &asked, &app.wrong_code()).await;
        assert_eq!(wrong.status, 400, "{}", wrong.body);
        assert_eq!(between(&wrong.body, "id=\"secret\">", "<"), base32);
        assert_eq!(sessions_of(&db).await, 0);
        // Turned on, it shows its backup codes once (with the session's cookie already set),
        // then goes on to where the sign-in was going.
        let code = app.next_code().await;
        let codes_page = give(&s, &mut b, &asked, &code).await;
        assert_eq!(codes_page.status, 200, "{}", codes_page.body);
        let codes = backup_codes_on(&codes_page);
        assert_eq!(codes.len(), 10, "{}", codes_page.body);
        let next = between(&codes_page.body, "id=\"continue\" href=\"", "\"");
        assert_eq!(next, "/account");
        let signed_in = go(&mut b, &format!("{}{next}", s.gw.url)).await;
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.body);
        assert!(
            signed_in.body.contains("id=\"mfa\">on"),
            "{}",
            signed_in.body
        );
        let enabled = events(&db, "gateway:mfa:enable").await;
        assert_eq!(enabled.len(), 1, "{enabled:?}");
        assert_eq!(enabled[0].details["at"], "sign_in");
        assert_eq!(enabled[0].user_email.as_deref(), Some(WHO));
        let signins = events(&db, "gateway:auth:signin").await;
        let last = signins.last().unwrap_or_else(|| panic!("a sign-in event"));
        assert_eq!(last.details["mfa"], "totp", "{last:?}");

        // From then on, a code is asked for like anyone's.
        let (mut b2, asked2) = web_sign_in(&s).await;
        assert!(
            asked2.body.contains("Enter your authenticator code"),
            "{}",
            asked2.body
        );
        assert!(
            !asked2.body.contains("id=\"secret\""),
            "the key is not shown again"
        );
        let code = app.next_code().await;
        let signed_in = give(&s, &mut b2, &asked2, &code).await;
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.body);
        assert_eq!(sessions_of(&db).await, 2);
        // And a backup code shown at the set-up signs in instead of the app's.
        let (mut b3, asked3) = web_sign_in(&s).await;
        let signed_in = give(&s, &mut b3, &asked3, &codes[0]).await;
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.body);
        assert_eq!(sessions_of(&db).await, 3);
    }
);

both_backends!(
    backup_codes_sign_in_once_each_and_a_new_set_replaces_the_old,
    |db| async move {
        add_who(&db);
        let s = gateway_with_key(&db, Some(KEY)).await;
        let (mut first, _) = web_sign_in(&s).await;
        let mut app = set_up(&s, &mut first).await;
        let codes = app.backup_codes.clone();
        assert!(
            codes
                .iter()
                .all(|c| c.len() == 11 && c.as_bytes()[5] == b'-'),
            "{codes:?}"
        );
        let mfa_page = format!("{}/account/mfa", s.gw.url);
        let page = go(&mut first, &mfa_page).await;
        assert!(page.body.contains("10 unused backup code"), "{}", page.body);
        assert!(backup_codes_on(&page).is_empty(), "shown only when made");

        // A backup code signs in instead of the app's code, once.
        let (mut b, asked) = web_sign_in(&s).await;
        let signed_in = give(&s, &mut b, &asked, &codes[0]).await;
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.body);
        let signins = events(&db, "gateway:auth:signin").await;
        let last = signins.last().unwrap_or_else(|| panic!("a sign-in event"));
        assert_eq!(last.details["mfa"], "backup_code", "{last:?}");
        let page = go(&mut b, &mfa_page).await;
        assert!(page.body.contains("9 unused backup code"), "{}", page.body);
        let (mut b2, asked2) = web_sign_in(&s).await;
        let reused = give(&s, &mut b2, &asked2, &codes[0]).await;
        assert_eq!(reused.status, 401, "{}", reused.body);
        // Typed in capitals, with a space for the dash: the same code.
        let typed = codes[1].to_ascii_uppercase().replace('-', " ");
        let signed_in = give(&s, &mut b2, &asked2, &typed).await;
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.body);

        // A new set needs a code, is recorded, and ends the old set.
        let page = go(&mut b2, &mfa_page).await;
        let url = format!("{}/account/mfa/backup-codes", s.gw.url);
        let refused = submit(
            &mut b2,
            &url,
            &[("csrf", &csrf(&page)), ("code", &app.wrong_code())],
        )
        .await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert!(backup_codes_on(&refused).is_empty());
        let code = app.next_code().await;
        let made = submit(&mut b2, &url, &[("csrf", &csrf(&page)), ("code", &code)]).await;
        assert_eq!(made.status, 200, "{}", made.body);
        let fresh = backup_codes_on(&made);
        assert_eq!(fresh.len(), 10);
        assert!(fresh.iter().all(|c| !codes.contains(c)));
        let recorded = events(&db, "gateway:mfa:backup_codes").await;
        let decisions: Vec<_> = recorded.iter().map(|e| e.rbac_decision).collect();
        use gateway::audit::Decision;
        assert_eq!(decisions, [Decision::Deny, Decision::Allow]);
        let (mut b3, asked3) = web_sign_in(&s).await;
        let old = give(&s, &mut b3, &asked3, &codes[2]).await;
        assert_eq!(old.status, 401, "an old code no longer works: {}", old.body);
        let signed_in = give(&s, &mut b3, &asked3, &fresh[0]).await;
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.body);

        // A backup code also removes the app (a lost phone), and its codes go with it.
        let page = go(&mut b3, &mfa_page).await;
        let removed = submit(
            &mut b3,
            &format!("{}/account/mfa/remove", s.gw.url),
            &[("csrf", &csrf(&page)), ("code", &fresh[1])],
        )
        .await;
        assert!(
            removed.body.contains("is <strong>off</strong>"),
            "{}",
            removed.body
        );
        let user = store(&db).await.find_user(WHO).await.ok().flatten();
        let id = user.map(|u| u.id).unwrap_or_default();
        assert_eq!(store(&db).await.backup_codes_left(id).await.ok(), Some(0));
        let disabled = events(&db, "gateway:mfa:disable").await;
        let last = disabled
            .last()
            .unwrap_or_else(|| panic!("disable recorded"));
        assert_eq!(last.details["factor"], "backup_code");
    }
);

both_backends!(
    an_admin_resets_someones_app_over_http_but_not_their_own,
    |db| async move {
        add_who(&db);
        const ADMIN: &str = "admin@example.com";
        let (ok, _, err) = admin(&db, &["users", "add", ADMIN, "--role", "admin"]);
        assert!(ok, "{err}");
        let s = gateway_with_key(&db, Some(KEY)).await;
        let (mut who, _) = web_sign_in(&s).await;
        set_up(&s, &mut who).await;
        let (mut boss, _) = web_sign_in_as(&s, ADMIN).await;
        let mut boss_app = set_up(&s, &mut boss).await;
        let session = |b: &Browser| b.cookies.get("rg_session").cloned().unwrap_or_default();
        // With a code from the admin's app (right now), in X-MFA-Code.
        let mut codes = std::mem::take(&mut boss_app.backup_codes);
        let mut reset = |email: &str, credential: String| {
            let url = format!("{}/api/v1/users/{email}/mfa", s.gw.url);
            let code = codes.pop().unwrap_or_default();
            async move {
                let r = client()
                    .delete(url)
                    .bearer_auth(credential)
                    .header("x-mfa-code", code)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                (r.status().as_u16(), r.text().await.unwrap_or_default())
            }
        };

        // Not for a deployer, and not an admin's own (that needs a code, on /account/mfa).
        let (status, body) = reset(ADMIN, session(&who)).await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = reset(ADMIN, session(&boss)).await;
        assert!((400..500).contains(&status), "{status} {body}");
        assert!(body.contains("your own authenticator"), "{body}");

        // An admin resets someone else's: one step for them again, and on the trail.
        let (status, body) = reset(WHO, session(&boss)).await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = reset(WHO, session(&boss)).await;
        assert_eq!(status, 404, "nothing left to reset");
        let (_, page) = web_sign_in(&s).await;
        assert!(page.url.ends_with("/account"), "{} {}", page.url, page.body);
        let (_, asked) = web_sign_in_as(&s, ADMIN).await;
        assert!(asks_for_a_code(&asked), "the admin's own app stays");
        let recorded = events(&db, "gateway:mfa:reset").await;
        let refusals = recorded
            .iter()
            .filter(|e| e.rbac_decision == gateway::audit::Decision::Deny)
            .count();
        assert_eq!(refusals, 2, "{recorded:?}");
        assert!(
            recorded
                .iter()
                .any(|e| e.kind == gateway::audit::EventKind::Outcome
                    && e.details["result"] == "done"),
            "{recorded:?}"
        );
    }
);

both_backends!(
    hostile_input_at_the_code_page_is_refused_and_not_counted,
    |db| async move {
        add_who(&db);
        let s = gateway_with_key(&db, Some(KEY)).await;
        let (mut first, _) = web_sign_in(&s).await;
        let mut app = set_up(&s, &mut first).await;
        let (mut b, asked) = web_sign_in(&s).await;
        assert!(asks_for_a_code(&asked));
        let url = format!("{}/api/v1/auth/mfa", s.gw.url);
        let failures = || async {
            let st = store(&db).await;
            let user = st.find_user(WHO).await.ok().flatten();
            let id = user.map(|u| u.id).unwrap_or_default();
            st.totp(id).await.ok().flatten().map(|r| r.failures)
        };

        // Nothing that cannot be a code is a guess: no count, a 400 and the page again.
        let long = "1".repeat(60_000);
        for code in [
            "",
            "12345",
            "１２３４５６",
            "123456\u{0}",
            "<script>",
            long.as_str(),
        ] {
            let page = give(&s, &mut b, &asked, code).await;
            assert_eq!(page.status, 400, "{code:?}: {}", page.body);
            assert!(!page.body.contains("<script>"), "input is not echoed");
        }
        assert_eq!(failures().await, Some(0));
        // A body past the pages' limit, a form that is not one, a missing code.
        let cookie = b.cookie_header();
        let post = |body: Vec<u8>, kind: &'static str| {
            let (url, cookie) = (url.clone(), cookie.clone());
            async move {
                client()
                    .post(url)
                    .header("cookie", cookie)
                    .header("content-type", kind)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        };
        let form = "application/x-www-form-urlencoded";
        let big = format!("csrf={}&code={}", csrf(&asked), "9".repeat(70_000));
        assert_eq!(post(big.into_bytes(), form).await, 413);
        let bad_escape = format!("csrf={}&code=%ff%fe", csrf(&asked));
        assert_eq!(post(bad_escape.into_bytes(), form).await, 400);
        // Without the page's token (here: not even text), nothing is looked at.
        assert_eq!(post(vec![0xff, 0xfe, 0x00], form).await, 403);
        let no_code = format!("csrf={}", csrf(&asked));
        assert_eq!(post(no_code.into_bytes(), form).await, 400);
        assert_eq!(failures().await, Some(0));

        // And the sign-in still goes through with the app's code.
        let code = app.next_code().await;
        let signed_in = give(&s, &mut b, &asked, &code).await;
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.body);
    }
);

both_backends!(
    privileged_changes_by_a_session_need_a_recent_code,
    |db| async move {
        const ADMIN: &str = "admin@example.com";
        let (ok, _, err) = admin(&db, &["users", "add", ADMIN, "--role", "admin"]);
        assert!(ok, "{err}");
        let env = [("MFA_ENCRYPTION_KEY", KEY), ("MFA_STEP_UP_SECS", "2")];
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &env).await;
        let (mut boss, _) = web_sign_in_as(&s, ADMIN).await;
        let mut app = set_up(&s, &mut boss).await;
        let session = boss.cookies.get("rg_session").cloned().unwrap_or_default();
        // `body` (and `code` in X-MFA-Code) to `path` with `credential`.
        let api = |path: &str, credential: &str, body: serde_json::Value, code: Option<&str>| {
            let url = format!("{}{path}", s.gw.url);
            let credential = credential.to_string();
            let code = code.map(str::to_string);
            async move {
                let mut r = client().post(url).bearer_auth(credential).json(&body);
                if let Some(code) = code {
                    r = r.header("x-mfa-code", code);
                }
                status_json(r).await
            }
        };
        let role =
            |name: &str| serde_json::json!({ "name": name, "permissions": ["convox:apps:list"] });
        let nobody = serde_json::json!({});

        // Step-up: just after the code (the one that turned the app on), a role may be defined.
        let (status, body) = api("/api/v1/roles", &session, role("readers-a"), None).await;
        assert_eq!(status, 201, "{body}");
        // Later: refused until a new code, and the refusal is on the trail.
        tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
        let (status, body) = api("/api/v1/roles", &session, role("readers-b"), None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("mfa_required")),
            "{body}"
        );
        let refused = events(&db, "gateway:roles:create").await;
        assert!(
            refused
                .iter()
                .any(|e| e.details["reason"] == "mfa_required"),
            "{refused:?}"
        );
        let verify = |code: String| api_verify(&s, &session, code);
        let (status, body) = verify(app.wrong_code()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("mfa_code_refused")),
            "{body}"
        );
        let (status, body) = verify(app.next_code().await).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["valid_for_secs"], 2);
        let (status, body) = api("/api/v1/roles", &session, role("readers-b"), None).await;
        assert_eq!(status, 201, "{body}");

        // Right now: changing a role's permissions changes what everyone holding it may do, as
        // changing their role would, so a recent code is not enough: one with the change.
        let change = |body: serde_json::Value| {
            let r = client()
                .put(format!("{}/api/v1/roles/readers-b", s.gw.url))
                .bearer_auth(&session)
                .json(&body);
            status_json(r)
        };
        let wider = serde_json::json!({ "permissions": ["convox:apps:list", "convox:logs:read"] });
        let (status, body) = change(wider.clone()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("mfa_code_required")),
            "{body}"
        );
        let mut with_code = wider.clone();
        with_code["code"] = app.next_code().await.into();
        let (status, body) = change(with_code).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["permissions"][1], "convox:logs:read", "{body}");
        assert!(
            events(&db, "gateway:roles:update")
                .await
                .iter()
                .any(|e| e.details["reason"] == "mfa_code_required"),
            "the refusal is on the trail"
        );
        // The roles page asks "Confirm it's you" and sends the same form again with the code.
        let roles = go(&mut boss, &format!("{}/roles", s.gw.url)).await;
        let update = format!("{}/roles/update", s.gw.url);
        let fields = [
            ("csrf", csrf(&roles)),
            ("name", "readers-b".to_string()),
            (
                "permissions",
                "convox:apps:list\nconvox:processes:list".to_string(),
            ),
            ("description", "Readers".to_string()),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let asked = submit(&mut boss, &update, &fields).await;
        assert_eq!(asked.status, 403, "{}", asked.body);
        assert!(
            asked
                .body
                .contains("Changing a role&#39;s permissions needs a code"),
            "{}",
            asked.body
        );
        let confirm_form = between(&asked.body, "id=\"confirm-form\">", "</form>");
        let again: Vec<(&str, String)> = confirm_form
            .split("<input type=\"hidden\" name=\"")
            .skip(1)
            .filter_map(|rest| {
                let name = rest.split('"').next()?;
                let value = rest.split("value=\"").nth(1)?.split('"').next()?;
                Some((name, value.replace("&#10;", "\n").replace("&#x0a;", "\n")))
            })
            .filter(|(name, _)| ["csrf", "name", "permissions", "description"].contains(name))
            .collect();
        let code = app.next_code().await;
        let mut resent: Vec<(&str, &str)> = again.iter().map(|(k, v)| (*k, v.as_str())).collect();
        resent.push(("code", &code));
        let done = submit(&mut boss, &update, &resent).await;
        assert_eq!(done.status, 200, "{}", done.body);
        assert!(done.url.ends_with("/roles"), "{}", done.url);
        let now = store(&db).await.list_roles().await.unwrap_or_default();
        let readers = now.iter().find(|r| r.name == "readers-b");
        assert_eq!(
            readers.map(|r| r.permissions.clone()),
            Some(vec![
                "convox:apps:list".to_string(),
                "convox:processes:list".to_string()
            ])
        );

        // Right now: changing people takes a code with the change itself, however recent the
        // last one (here: a moment ago), in the body or in X-MFA-Code.
        let person = serde_json::json!({ "email": "x@example.com", "role": "viewer" });
        let (status, body) = api("/api/v1/users", &session, person.clone(), None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("mfa_code_required")),
            "{body}"
        );
        assert!(
            events(&db, "gateway:users:create")
                .await
                .iter()
                .any(|e| e.details["reason"] == "mfa_code_required"),
            "the refusal is on the trail"
        );
        let mut with_code = person.clone();
        with_code["code"] = app.backup_codes.pop().unwrap_or_default().into();
        let (status, body) = api("/api/v1/users", &session, with_code, None).await;
        assert_eq!(status, 201, "{body}");
        let lock = "/api/v1/users/x@example.com/lock";
        let wrong = app.wrong_code();
        let (status, body) = api(lock, &session, nobody.clone(), Some(&wrong)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("mfa_code_refused")),
            "{body}"
        );
        let code = app.backup_codes.pop().unwrap_or_default();
        let (status, body) = api(lock, &session, nobody.clone(), Some(&code)).await;
        assert_eq!(status, 200, "{body}");

        // An API token is a robot's: never asked.
        let robot = token(&db, "robot-admin", &["--role", "admin"]);
        let unlock = "/api/v1/users/x@example.com/unlock";
        let (status, body) = api(unlock, &robot, nobody.clone(), None).await;
        assert_eq!(status, 200, "{body}");
        let robot_verifies = client()
            .post(format!("{}/api/v1/auth/mfa/verify", s.gw.url))
            .bearer_auth(&robot)
            .json(&serde_json::json!({ "code": "123456" }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(robot_verifies.status(), 400, "a token gives no codes");
        // Whatever it sends: the refusal is the token's, not its body's.
        let garbled = client()
            .post(format!("{}/api/v1/auth/mfa/verify", s.gw.url))
            .bearer_auth(&robot)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(garbled.status(), 400);
        let said: serde_json::Value = garbled.json().await.unwrap_or_default();
        let said = said["error"].as_str().unwrap_or_default();
        assert!(said.contains("only a signed-in session"), "{said}");

        // On the pages: the change asks "Confirm it's you" and goes through with a code given
        // there, sent with the same form.
        let users = go(&mut boss, &format!("{}/users", s.gw.url)).await;
        let lock_form = format!("{}/users/lock", s.gw.url);
        let fields = [
            ("csrf", csrf(&users)),
            ("email", "x@example.com".to_string()),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let asked = submit(&mut boss, &lock_form, &fields).await;
        assert_eq!(asked.status, 403, "{}", asked.body);
        assert!(asked.body.contains("Confirm it"), "{}", asked.body);
        assert!(asked.body.contains("Locking someone out"), "{}", asked.body);
        let code = app.backup_codes.pop().unwrap_or_default();
        let confirmed = [
            ("csrf", csrf(&asked)),
            (
                "email",
                between(&asked.body, "name=\"email\" value=\"", "\""),
            ),
            ("code", code),
        ];
        let confirmed: Vec<(&str, &str)> =
            confirmed.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let done = submit(&mut boss, &lock_form, &confirmed).await;
        assert!(done.url.ends_with("/users"), "{}", done.body);
        let listed = store(&db)
            .await
            .find_user("x@example.com")
            .await
            .ok()
            .flatten();
        assert!(listed.is_some_and(|u| u.locked), "locked from the page");

        // A CLI session signed in with a code in the browser starts fresh as well.
        let c = client();
        let (
            CliStart {
                login_id, verifier, ..
            },
            mut cli_browser,
            cli_asked,
        ) = cli_code_page(&s, ADMIN).await;
        let code = app.next_code().await;
        let done = give(&s, &mut cli_browser, &cli_asked, &code).await;
        assert_eq!(done.status, 200, "{}", done.body);
        let collected: serde_json::Value = c
            .post(format!("{}/api/v1/auth/cli/poll", s.gw.url))
            .json(&serde_json::json!({ "login_id": login_id, "code_verifier": verifier }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default();
        let cli_session = collected["session_token"].as_str().unwrap_or_default();
        let (status, body) = api("/api/v1/roles", cli_session, role("readers-c"), None).await;
        assert_eq!(status, 201, "{body}");
    }
);

both_backends!(turning_an_app_on_needs_a_recent_sign_in, |db| async move {
    add_who(&db);
    let s = gateway_with_key(&db, Some(KEY)).await;
    let (mut b, _) = web_sign_in(&s).await;
    // The same session, signed in 11 minutes ago (a cookie someone else may hold by now).
    let st = store(&db).await;
    let user = st.find_user(WHO).await.ok().flatten();
    let id = user.map(|u| u.id).unwrap_or_default();
    let eleven_minutes = 11 * 60 * 1000;
    crate::credentials::execute(
        &db,
        &format!(
            "UPDATE sessions SET created_at = created_at - {eleven_minutes} WHERE user_id = {id}"
        ),
    )
    .await;
    let mfa_page = format!("{}/account/mfa", s.gw.url);
    let page = go(&mut b, &mfa_page).await;
    let refused = submit(
        &mut b,
        &format!("{mfa_page}/setup"),
        &[("csrf", &csrf(&page))],
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("sign in again first"),
        "{}",
        refused.body
    );
    assert!(!refused.body.contains("id=\"secret\""), "no secret made");
    assert!(st.totp(id).await.ok().flatten().is_none());

    // Signed in again, a set-up starts; its secret shows only to the session that started
    // it: not to the old one (whose cookie someone may hold, polling the page while the
    // person scans the code), nor to another, and neither may confirm it.
    let (mut fresh, _) = web_sign_in(&s).await;
    let (mut other, _) = web_sign_in(&s).await;
    let page = go(&mut fresh, &mfa_page).await;
    let started = submit(
        &mut fresh,
        &format!("{mfa_page}/setup"),
        &[("csrf", &csrf(&page))],
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.body);
    let base32 = between(&started.body, "id=\"secret\">", "<");
    let mut app = App::new(&base32);
    let code = app.next_code().await;
    for (who, browser) in [("the old session", &mut b), ("another session", &mut other)] {
        let page = go(browser, &mfa_page).await;
        assert_eq!(page.status, 200, "{who}: {}", page.body);
        assert!(!page.body.contains(&base32), "{who} sees the secret");
        assert!(!page.body.contains("<svg"), "{who} sees the QR code");
        let confirm = format!("{mfa_page}/confirm");
        let confirmed = submit(
            browser,
            &confirm,
            &[("csrf", &csrf(&page)), ("code", &code)],
        )
        .await;
        assert!(
            matches!(confirmed.status, 403 | 409),
            "{who}: {} {}",
            confirmed.status,
            confirmed.body
        );
        assert!(!confirmed.body.contains(&base32), "{who} sees the secret");
    }
    let row = st.totp(id).await.ok().flatten();
    assert_eq!(row.map(|r| r.confirmed_at), Some(None), "nothing turned on");
    // Its own session sees it again; ten minutes on, not even that one: it starts again.
    let page = go(&mut fresh, &mfa_page).await;
    assert!(page.body.contains(&base32), "{}", page.body);
    crate::credentials::execute(
        &db,
        &format!(
            "UPDATE mfa_totp SET created_at = created_at - {eleven_minutes} WHERE user_id = {id}"
        ),
    )
    .await;
    let page = go(&mut fresh, &mfa_page).await;
    assert!(!page.body.contains(&base32), "{}", page.body);
    let late = submit(
        &mut fresh,
        &format!("{mfa_page}/confirm"),
        &[("csrf", &csrf(&page)), ("code", &code)],
    )
    .await;
    assert_eq!(late.status, 409, "{}", late.body);
    assert!(late.body.contains("Start again"), "{}", late.body);
    set_up(&s, &mut fresh).await;
});

/// An admin signed in through the provider on a new gateway started with `env`, with an
/// authenticator app set up (its code just given): the gateway, the browser, the app, and the
/// session's secret (for `Authorization: Bearer` or the proxy's Basic auth).
async fn admin_with_an_app(
    db: &Db,
    email: &str,
    env: &[(&str, &str)],
) -> (SignIn, Browser, App, String) {
    let (ok, _, err) = admin(db, &["users", "add", email, "--role", "admin"]);
    assert!(ok, "{err}");
    let s = SignIn::start(db, dev_oidc::Quirks::default(), env).await;
    let (mut b, _) = web_sign_in_as(&s, email).await;
    let app = set_up(&s, &mut b).await;
    let session = b.cookies.get("rg_session").cloned().unwrap_or_default();
    (s, b, app, session)
}

/// Sends `request`: its status and JSON body (null when it is not JSON).
async fn status_json(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let r = request.send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

both_backends!(
    minting_a_token_needs_a_code_given_with_it,
    |db| async move {
        const ADMIN: &str = "admin@example.com";
        let env = [("MFA_ENCRYPTION_KEY", KEY)];
        let (s, mut boss, mut app, session) = admin_with_an_app(&db, ADMIN, &env).await;
        let mint = |code: Option<String>| {
            let url = format!("{}/api/v1/tokens", s.gw.url);
            let mut body = serde_json::json!({ "name": "laptop", "role": "viewer" });
            if let Some(code) = code {
                body["code"] = code.into();
            }
            status_json(client().post(url).bearer_auth(&session).json(&body))
        };
        // A code given moments ago (turning the app on) is not enough: one with the request.
        let (status, body) = mint(None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("mfa_code_required")),
            "{body}"
        );
        let (status, body) = mint(Some(app.wrong_code())).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("mfa_code_refused")),
            "{body}"
        );
        let (status, body) = mint(Some(app.next_code().await)).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["token"]["role"], "viewer", "{body}");
        // Owned by its creator: locking them would stop it.
        let owner = store(&db)
            .await
            .find_user(ADMIN)
            .await
            .ok()
            .flatten()
            .map(|u| u.id);
        assert_eq!(body["token"]["owner_user_id"].as_i64(), owner, "{body}");

        // The page's form asks for the code too, and says so when it is missing.
        let page = go(&mut boss, &format!("{}/tokens", s.gw.url)).await;
        assert!(page.body.contains("id=\"new-code\""), "{}", page.body);
        let url = format!("{}/tokens/create", s.gw.url);
        let token_csrf = csrf(&page);
        let missing = submit(
            &mut boss,
            &url,
            &[
                ("csrf", &token_csrf),
                ("name", "from-the-page"),
                ("role", "viewer"),
                ("code", ""),
            ],
        )
        .await;
        assert_eq!(missing.status, 400, "{}", missing.body);
        assert!(
            missing.body.contains("id=\"create-error\""),
            "{}",
            missing.body
        );
        let code = app.next_code().await;
        let made = submit(
            &mut boss,
            &url,
            &[
                ("csrf", &token_csrf),
                ("name", "from-the-page"),
                ("role", "viewer"),
                ("code", &code),
            ],
        )
        .await;
        assert_eq!(made.status, 201, "{}", made.body);
        assert!(
            made.body.contains("id=\"new-secret\">rgw_"),
            "{}",
            made.body
        );

        let refused = events(&db, "gateway:tokens:create").await;
        let reasons: Vec<_> = refused
            .iter()
            .filter_map(|e| e.details["reason"].as_str())
            .collect();
        assert_eq!(
            reasons,
            ["mfa_code_required", "wrong_code", "mfa_code_required"],
            "{refused:#?}"
        );
    }
);

both_backends!(
    deleting_an_app_with_a_session_needs_a_recent_code,
    |db| async move {
        const ADMIN: &str = "admin@example.com";
        let robot = token(&db, "robot", &["--role", "admin"]);
        let env = [("MFA_ENCRYPTION_KEY", KEY), ("MFA_STEP_UP_SECS", "2")];
        let (s, _boss, mut app, session) = admin_with_an_app(&db, ADMIN, &env).await;
        let rack = |method: reqwest::Method, path: &str, credential: &str| {
            let request = client().request(method, s.gw.proxy(path));
            status_json(request.basic_auth("convox", Some(credential.to_string())))
        };
        let delete = reqwest::Method::DELETE;
        // Just after a code (the one that turned the app on): let through.
        let (status, body) = rack(delete.clone(), "/apps/web", &session).await;
        assert_ne!(status, 403, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
        // Later: refused before the rack, and audited; reading is not guarded, nor is a token.
        let (status, body) = rack(delete.clone(), "/apps/web", &session).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("mfa_required")),
            "{body}"
        );
        let (status, _) = rack(reqwest::Method::GET, "/apps", &session).await;
        assert_eq!(status, 200);
        let (status, body) = rack(delete.clone(), "/apps/web", &robot).await;
        assert_ne!(status, 403, "{body}");
        let refused = events(&db, "convox:apps:delete").await;
        assert!(
            refused
                .iter()
                .any(|e| e.details["reason"] == "mfa_required"
                    && e.user_email.as_deref() == Some(ADMIN)),
            "{refused:#?}"
        );
        // A code given: let through again.
        let r = client()
            .post(format!("{}/api/v1/auth/mfa/verify", s.gw.url))
            .bearer_auth(&session)
            .json(&serde_json::json!({ "code": app.next_code().await }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        let (status, body) = rack(delete, "/apps/web", &session).await;
        assert_ne!(status, 403, "{body}");
    }
);

// Approving a deploy is of the "right now" tier: a code with the approval itself, not one given
// minutes ago; a rejection takes a recent one. The API, the page's form, and the trail.
both_backends!(
    approving_a_deploy_needs_a_code_given_with_it,
    |db| async move {
        const ADMIN: &str = "admin@example.com";
        const SHA: &str = "1f0e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6";
        let ci = token(&db, "ci", &["--role", "cicd"]);
        let env = [("MFA_ENCRYPTION_KEY", KEY)];
        let (s, mut boss, mut app, session) = admin_with_an_app(&db, ADMIN, &env).await;
        let ask = |sha: &'static str| {
            let url = format!("{}/api/v1/deploy-approvals", s.gw.url);
            let body = serde_json::json!({ "app": "web", "git_commit": sha });
            let request = client().post(url).bearer_auth(&ci).json(&body);
            async move {
                let (status, body) = status_json(request).await;
                assert_eq!(status, 201, "{body}");
                body["id"].as_i64().unwrap_or_default()
            }
        };
        let decide = |id: i64, verb: &'static str, code: Option<String>| {
            let url = format!("{}/api/v1/deploy-approvals/{id}/{verb}", s.gw.url);
            let mut body = serde_json::json!({ "note": "checked" });
            if let Some(code) = code {
                body["code"] = code.into();
            }
            status_json(client().post(url).bearer_auth(&session).json(&body))
        };
        let first = ask(SHA).await;
        // Moments after a code (the one that turned the app on): still not enough.
        let (status, body) = decide(first, "approve", None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("mfa_code_required")),
            "{body}"
        );
        let said = body["error"].as_str().unwrap_or_default();
        assert!(said.contains("approving a deploy"), "{said}");
        let (status, body) = decide(first, "approve", Some(app.wrong_code())).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("mfa_code_refused")),
            "{body}"
        );
        let (status, body) = decide(first, "approve", Some(app.next_code().await)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "approved", "{body}");
        // A rejection within the step-up window needs no code with it.
        let second = ask("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").await;
        let (status, body) = decide(second, "reject", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "rejected", "{body}");

        // The page's form asks for the code beside Approve, and says so when it is missing.
        let third = ask("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb").await;
        let page = go(&mut boss, &format!("{}/deploy-approvals", s.gw.url)).await;
        assert!(
            page.body.contains(&format!("id=\"code-{third}\"")),
            "{}",
            page.body
        );
        let url = format!("{}/deploy-approvals/{third}/approve", s.gw.url);
        let form_csrf = csrf(&page);
        let missing = submit(&mut boss, &url, &[("csrf", &form_csrf), ("code", "")]).await;
        assert_eq!(missing.status, 403, "{}", missing.body);
        assert!(missing.body.contains("Code needed"), "{}", missing.body);
        let code = app.next_code().await;
        let made = submit(&mut boss, &url, &[("csrf", &form_csrf), ("code", &code)]).await;
        assert_eq!(made.status, 200, "{}", made.body);
        let state = store(&db)
            .await
            .list_approvals(None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let decided: Vec<(i64, String)> = state.iter().map(|r| (r.id, r.status.clone())).collect();
        assert!(
            decided.contains(&(third, "approved".to_string())),
            "{decided:?}"
        );

        let reasons: Vec<String> = events(&db, "gateway:deploy-approvals:approve")
            .await
            .iter()
            .filter_map(|e| e.details["reason"].as_str().map(str::to_string))
            .collect();
        assert_eq!(
            reasons,
            ["mfa_code_required", "wrong_code", "mfa_code_required"]
        );
    }
);

// `MFA_REQUIRED` turned on while someone without an app holds a session (from before, or after
// their app was reset): the "right now" changes do not skip the second factor for them, over
// the API or the pages; they are refused as any privileged change is, and audited.
both_backends!(
    with_mfa_required_a_session_without_an_app_mints_and_approves_nothing,
    |db| async move {
        const ADMIN: &str = "admin@example.com";
        const SHA: &str = "1f0e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6";
        let ci = token(&db, "ci", &["--role", "cicd"]);
        let (ok, _, err) = admin(&db, &["users", "add", ADMIN, "--role", "admin"]);
        assert!(ok, "{err}");
        let before = SignIn::start(
            &db,
            dev_oidc::Quirks::default(),
            &[("MFA_ENCRYPTION_KEY", KEY)],
        )
        .await;
        let (mut boss, signed_in) = web_sign_in_as(&before, ADMIN).await;
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.body);
        let session = boss.cookies.get("rg_session").cloned().unwrap_or_default();
        drop(before);
        let env = [("MFA_ENCRYPTION_KEY", KEY), ("MFA_REQUIRED", "true")];
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &env).await;

        let url = format!("{}/api/v1/tokens", s.gw.url);
        let body = serde_json::json!({ "name": "laptop", "role": "admin" });
        let (status, said) =
            status_json(client().post(url).bearer_auth(&session).json(&body)).await;
        assert_eq!(
            (status, said["code"].as_str()),
            (403, Some("mfa_required")),
            "{said}"
        );
        let url = format!("{}/api/v1/deploy-approvals", s.gw.url);
        let body = serde_json::json!({ "app": "web", "git_commit": SHA });
        let (status, asked) = status_json(client().post(url).bearer_auth(&ci).json(&body)).await;
        assert_eq!(status, 201, "{asked}");
        let id = asked["id"].as_i64().unwrap_or_default();
        for verb in ["approve", "reject"] {
            let url = format!("{}/api/v1/deploy-approvals/{id}/{verb}", s.gw.url);
            let body = serde_json::json!({ "note": "looks fine" });
            let (status, said) =
                status_json(client().post(url).bearer_auth(&session).json(&body)).await;
            assert_eq!(
                (status, said["code"].as_str()),
                (403, Some("mfa_required")),
                "{verb}: {said}"
            );
        }

        // The pages say to set up an app first (a code form would ask for what they cannot
        // give).
        let page = go(&mut boss, &format!("{}/tokens", s.gw.url)).await;
        let form = [
            ("csrf", csrf(&page)),
            ("name", "from-the-page".into()),
            ("role", "admin".into()),
        ];
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let minted = submit(&mut boss, &format!("{}/tokens/create", s.gw.url), &form).await;
        assert_eq!(minted.status, 403, "{}", minted.body);
        assert!(
            minted.body.contains("no authenticator app yet"),
            "{}",
            minted.body
        );
        let page = go(&mut boss, &format!("{}/deploy-approvals", s.gw.url)).await;
        let form_csrf = csrf(&page);
        for verb in ["approve", "reject"] {
            let url = format!("{}/deploy-approvals/{id}/{verb}", s.gw.url);
            let decided = submit(&mut boss, &url, &[("csrf", &form_csrf), ("code", "")]).await;
            assert_eq!(decided.status, 403, "{verb}: {}", decided.body);
            assert!(
                decided.body.contains("no authenticator app yet"),
                "{verb}: {}",
                decided.body
            );
        }

        // Nothing was made, and each refusal is on the trail with its reason.
        let st = store(&db).await;
        let tokens = st.list_tokens().await.unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["ci"], "no token minted");
        let pending = st
            .list_approvals(None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].status, "pending");
        let mut refused = Vec::new();
        for action in [
            "gateway:tokens:create",
            "gateway:deploy-approvals:approve",
            "gateway:deploy-approvals:reject",
        ] {
            let found = events(&db, action).await;
            refused.extend(
                found
                    .iter()
                    .filter(|e| e.details["reason"] == "mfa_required")
                    .map(|e| e.action.clone()),
            );
        }
        refused.sort();
        assert_eq!(
            refused,
            [
                "gateway:deploy-approvals:approve",
                "gateway:deploy-approvals:approve",
                "gateway:deploy-approvals:reject",
                "gateway:deploy-approvals:reject",
                "gateway:tokens:create",
                "gateway:tokens:create",
            ],
            "API and page, each"
        );
    }
);

// "Trust this browser": its person's later sign-ins skip the code, in that browser only, for
// that person only, and never for a change that needs a code; forgetting it, removing the
// app, a lock or the end of its days ends the trust. The cookie never reaches the trail.
both_backends!(
    a_trusted_browser_skips_the_code_for_its_person_only,
    |db| async move {
        const ADMIN: &str = "admin@example.com";
        let env = [("MFA_ENCRYPTION_KEY", KEY)];
        let (s, mut b, mut app, _) = admin_with_an_app(&db, ADMIN, &env).await;
        let login = format!("{}/api/v1/auth/web/login?return_to=/account", s.gw.url);
        let mfa_page = format!("{}/account/mfa", s.gw.url);
        let st = store(&db).await;
        let admin_id = crate::credentials::existing_user(&st, ADMIN).await.id;

        // Signing in again asks for a code; ticking the box trusts the browser.
        let page = go(&mut b, &login).await;
        assert!(asks_for_a_code(&page), "{}", page.body);
        assert!(page.body.contains("id=\"trust\""), "{}", page.body);
        let url = format!("{}/api/v1/auth/mfa", s.gw.url);
        let code = app.next_code().await;
        let signed_in = submit(
            &mut b,
            &url,
            &[("csrf", &csrf(&page)), ("code", &code), ("trust", "1")],
        )
        .await;
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.url);
        let cookie = b.cookies.get("rg_device").cloned().unwrap_or_default();
        assert!(cookie.starts_with("rgd_"), "{:?}", b.cookies);

        // The next sign-in in this browser skips the code…
        let page = go(&mut b, &login).await;
        assert!(
            page.url.ends_with("/account"),
            "{}: {}",
            page.url,
            page.body
        );
        // …but its session has given no code: a change that needs one still asks.
        let session = b.cookies.get("rg_session").cloned().unwrap_or_default();
        let (status, body) = status_json(
            client()
                .post(format!("{}/api/v1/roles", s.gw.url))
                .bearer_auth(&session)
                .json(
                    &serde_json::json!({ "name": "readers", "permissions": ["convox:apps:list"] }),
                ),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("mfa_required")),
            "{body}"
        );
        // Another browser of the same person is asked.
        let (_, elsewhere) = web_sign_in_as(&s, ADMIN).await;
        assert!(asks_for_a_code(&elsewhere), "{}", elsewhere.body);
        // The cookie in someone else's browser does nothing for them.
        let (ok, _, err) = admin(&db, &["users", "add", WHO, "--role", "deployer"]);
        assert!(ok, "{err}");
        let (mut other, _) = web_sign_in_as(&s, WHO).await;
        let _ = set_up(&s, &mut other).await;
        other.cookies.insert("rg_device".into(), cookie.clone());
        let page = go(&mut other, &login).await;
        assert!(asks_for_a_code(&page), "{}", page.body);

        // Listed on the account page; forgotten there, the code is asked again.
        let page = go(&mut b, &mfa_page).await;
        assert!(page.body.contains("id=\"devices\""), "{}", page.body);
        let forget = format!("{}/account/mfa/devices/forget", s.gw.url);
        let done = submit(&mut b, &forget, &[("csrf", &csrf(&page))]).await;
        assert!(done.body.contains("id=\"no-devices\""), "{}", done.body);
        let page = go(&mut b, &login).await;
        assert!(asks_for_a_code(&page), "{}", page.body);

        // Trusted again: a day count that ran out, a lock and a removed app each end it.
        let code = app.next_code().await;
        let signed_in = submit(
            &mut b,
            &url,
            &[("csrf", &csrf(&page)), ("code", &code), ("trust", "1")],
        )
        .await;
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.url);
        crate::credentials::execute(&db, "UPDATE trusted_devices SET expires_at = 1").await;
        let page = go(&mut b, &login).await;
        assert!(asks_for_a_code(&page), "expired: {}", page.body);
        let code = app.next_code().await;
        submit(
            &mut b,
            &url,
            &[("csrf", &csrf(&page)), ("code", &code), ("trust", "1")],
        )
        .await;
        let live = |st: gateway::store::Store| async move {
            st.trusted_devices_of(admin_id)
                .await
                .map(|d| d.len())
                .unwrap_or(usize::MAX)
        };
        assert_eq!(live(st.clone()).await, 1);
        let (ok, _, err) = admin(&db, &["users", "lock", ADMIN]);
        assert!(ok, "{err}");
        assert_eq!(live(st.clone()).await, 0, "a lock ends trust");
        let (ok, _, err) = admin(&db, &["users", "unlock", ADMIN]);
        assert!(ok, "{err}");
        let page = go(&mut b, &login).await;
        assert!(asks_for_a_code(&page), "after the lock: {}", page.body);
        let code = app.next_code().await;
        submit(
            &mut b,
            &url,
            &[("csrf", &csrf(&page)), ("code", &code), ("trust", "1")],
        )
        .await;
        assert_eq!(live(st.clone()).await, 1);
        let (ok, _, err) = admin(&db, &["users", "reset-mfa", ADMIN]);
        assert!(ok, "{err}");
        assert_eq!(live(st.clone()).await, 0, "a reset ends trust");

        // On the trail: the trust, the sign-in it let through; the cookie nowhere.
        let signins = events(&db, "gateway:auth:signin").await;
        assert!(
            signins.iter().any(|e| e.details["mfa"] == "trusted_device"),
            "{signins:#?}"
        );
        assert!(!events(&db, "gateway:mfa:trust_device").await.is_empty());
        let rows = st.audit_rows(0, 10_000).await.unwrap_or_default();
        let trail = serde_json::to_string(&rows.iter().map(|r| &r.event).collect::<Vec<_>>())
            .unwrap_or_default();
        assert!(
            !trail.contains("rgd_"),
            "a trusted browser's cookie on the trail"
        );
    }
);

/// The key a rotation moves to.
const NEW_KEY: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";

// `mfa rotate-key` moves the stored secrets to a new MFA_ENCRYPTION_KEY in one go: people's
// apps keep working under the new key alone, backup codes made before keep working while the
// old key is listed as retired, and after a leak they can all be dropped.
both_backends!(
    the_mfa_key_rotates_without_locking_anyone_out,
    |db| async move {
        add_who(&db);
        let s = gateway_with_key(&db, Some(KEY)).await;
        let (mut b, _) = web_sign_in(&s).await;
        let mut app = set_up(&s, &mut b).await;
        drop(s);
        let rotate = |env: &[(&str, &str)], extra: &[&str]| {
            let mut args = vec!["mfa", "rotate-key"];
            args.extend_from_slice(extra);
            crate::kit::admin_with(&db, &args, env)
        };

        // Without the key the secret was sealed with, nothing changes, and who is named.
        let (ok, _, err) = rotate(&[("MFA_ENCRYPTION_KEY", NEW_KEY)], &[]);
        assert!(!ok && err.contains(WHO), "{err}");
        assert!(err.contains("MFA_ENCRYPTION_KEY_RETIRED"), "{err}");
        let (ok, _, err) = rotate(&[], &[]);
        assert!(
            !ok && err.contains("MFA_ENCRYPTION_KEY is not set"),
            "{err}"
        );

        let both = [
            ("MFA_ENCRYPTION_KEY", NEW_KEY),
            ("MFA_ENCRYPTION_KEY_RETIRED", KEY),
        ];
        let (ok, out, err) = rotate(&both, &[]);
        assert!(ok, "{err}");
        assert!(
            out.contains(
                "sealed 1 authenticator secret(s) with MFA_ENCRYPTION_KEY (0 were already)"
            ),
            "{out}"
        );
        let (ok, out, _) = rotate(&both, &[]);
        assert!(
            ok && out.contains(
                "sealed 0 authenticator secret(s) with MFA_ENCRYPTION_KEY (1 were already)"
            ),
            "{out}"
        );

        // The new key alone: the app's code signs in; a backup code made under the old key
        // does not (it is not the new key's).
        let s = gateway_with_key(&db, Some(NEW_KEY)).await;
        let (mut b, asked) = web_sign_in(&s).await;
        assert!(asks_for_a_code(&asked), "{}", asked.body);
        let old_code = app.backup_codes[0].clone();
        let refused = give(&s, &mut b, &asked, &old_code).await;
        assert_eq!(refused.status, 401, "{}", refused.body);
        let code = app.next_code().await;
        let signed_in = give(&s, &mut b, &asked, &code).await;
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.body);
        drop(s);

        // With the old key retired, that backup code still signs in.
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &both).await;
        let (mut b, asked) = web_sign_in(&s).await;
        let signed_in = give(&s, &mut b, &asked, &old_code).await;
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.body);
        drop(s);

        // After a leak: the codes go too (nine were left), and the old key opens nothing.
        let (ok, out, err) = rotate(&both, &["--drop-backup-codes"]);
        assert!(ok, "{err}");
        assert!(
            out.contains("deleted every backup code (9 unused)"),
            "{out}"
        );
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &both).await;
        let (mut b, asked) = web_sign_in(&s).await;
        let refused = give(&s, &mut b, &asked, &app.backup_codes[1]).await;
        assert_eq!(refused.status, 401, "{}", refused.body);
        let rotations: Vec<_> = events(&db, gateway::mfa::rotate::ACTION)
            .await
            .into_iter()
            .filter(|e| e.kind == gateway::audit::EventKind::Gateway)
            .collect();
        assert_eq!(rotations.len(), 3, "{rotations:?}");
        assert!(
            rotations.iter().all(|e| e.details["operator"]
                .as_str()
                .is_some_and(|o| o.starts_with("cli:"))),
            "{rotations:?}"
        );
    }
);

/// Signs `b` in again with `code`, ticking "Trust this browser".
async fn trust(s: &SignIn, b: &mut Browser, code: String) {
    let login = format!("{}/api/v1/auth/web/login?return_to=/account", s.gw.url);
    let page = go(b, &login).await;
    assert!(asks_for_a_code(&page), "{}", page.body);
    let url = format!("{}/api/v1/auth/mfa", s.gw.url);
    let token = csrf(&page);
    let fields = [("csrf", token.as_str()), ("code", &code), ("trust", "1")];
    let done = submit(b, &url, &fields).await;
    assert!(done.url.ends_with("/account"), "{}", done.url);
}

both_backends!(
    an_admin_forgets_someones_trusted_browsers,
    |db| async move {
        add_who(&db);
        let (ok, _, err) = admin(
            &db,
            &["users", "add", "admin@example.com", "--role", "admin"],
        );
        assert!(ok, "{err}");
        let ops = token(&db, "ops-robot", &["--role", "ops"]);
        let s = gateway_with_key(&db, Some(KEY)).await;
        let (mut b, _) = web_sign_in(&s).await;
        let mut app = set_up(&s, &mut b).await;
        let login = format!("{}/api/v1/auth/web/login?return_to=/account", s.gw.url);
        // Trust two browsers at sign-ins with the code.
        trust(&s, &mut b, app.next_code().await).await;
        let mut laptop = Browser::new(WHO).unwrap_or_else(|e| panic!("{e}"));
        trust(&s, &mut laptop, app.next_code().await).await;
        let skipped = go(&mut laptop, &login).await;
        assert!(
            skipped.url.ends_with("/account"),
            "trusted: {}",
            skipped.url
        );

        // Admins see who has trusted browsers.
        let (mut boss, _) = web_sign_in_as(&s, "admin@example.com").await;
        let users = go(&mut boss, &format!("{}/users", s.gw.url)).await;
        assert!(users.body.contains("2 trusted browsers"), "{}", users.body);
        let listed: serde_json::Value = client()
            .get(format!("{}/api/v1/users", s.gw.url))
            .bearer_auth(boss.cookies.get("rg_session").cloned().unwrap_or_default())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default();
        let who = listed
            .as_array()
            .and_then(|all| all.iter().find(|u| u["email"] == WHO))
            .cloned()
            .unwrap_or_default();
        assert_eq!(who["trusted_browsers"], 2, "{listed}");

        // Only those who may end someone's sessions may forget their browsers.
        let forget = |credential: String, email: &str| {
            let url = format!("{}/api/v1/users/{email}/trusted-browsers", s.gw.url);
            status_json(client().delete(url).bearer_auth(credential))
        };
        let (status, body) = forget(ops.clone(), WHO).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("permission_denied"))
        );
        let boss_session = boss.cookies.get("rg_session").cloned().unwrap_or_default();
        let (status, body) = forget(boss_session.clone(), "nobody@example.com").await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = forget(boss_session.clone(), WHO).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["forgotten"], 2, "{body}");
        assert_eq!(body["user"]["email"], WHO, "{body}");

        // Their next sign-in in that browser asks for the code again; their sessions stay.
        let asked = go(&mut laptop, &login).await;
        assert!(asks_for_a_code(&asked), "forgotten: {}", asked.body);
        let account = go(&mut b, &format!("{}/account", s.gw.url)).await;
        assert!(account.body.contains(WHO), "{}", account.body);

        // The page's button does the same.
        trust(&s, &mut laptop, app.next_code().await).await;
        let users = go(&mut boss, &format!("{}/users", s.gw.url)).await;
        assert!(users.body.contains("1 trusted browser"), "{}", users.body);
        let id = who["id"].as_i64().unwrap_or_default();
        assert!(users.body.contains(&format!("id=\"forget-browsers-{id}\"")));
        let done = submit(
            &mut boss,
            &format!("{}/users/forget-browsers", s.gw.url),
            &[("csrf", &csrf(&users)), ("email", WHO)],
        )
        .await;
        assert!(done.url.ends_with("/users"), "{}", done.url);
        assert!(!done.body.contains("trusted browser"), "{}", done.body);
        let users = go(&mut boss, &format!("{}/users", s.gw.url)).await;
        let nobody = submit(
            &mut boss,
            &format!("{}/users/forget-browsers", s.gw.url),
            &[("csrf", &csrf(&users)), ("email", "nobody@example.com")],
        )
        .await;
        assert_eq!(nobody.status, 404, "{}", nobody.body);
        let asked = go(&mut laptop, &login).await;
        assert!(asks_for_a_code(&asked), "forgotten: {}", asked.body);

        // On the trail, before and after: who, for whom, how many.
        let trail = events(&db, "gateway:mfa:forget_device").await;
        assert!(
            trail.iter().any(|e| e.details["forgotten"] == 2),
            "{trail:#?}"
        );
        assert!(
            trail
                .iter()
                .any(|e| e.details["email"] == WHO && e.details["all"] == true),
            "{trail:#?}"
        );
    }
);

// A CLI sign-in's link opened in another browser too (seen over a shoulder, on a shared
// screen, or in another local user's process list) gives that browser no part in the sign-in:
// each confirmation is a round trip with a secret of its browser's own, so only the browser
// that went to the provider last comes back and takes the second step — not one holding the
// attempt's id in its cookie from an earlier confirmation.
both_backends!(
    a_cli_sign_in_link_opened_in_another_browser_takes_no_part_in_its_second_step,
    |db| async move {
        add_who(&db);
        let s = gateway_with_key(&db, Some(KEY)).await;
        let (mut web, _) = web_sign_in(&s).await;
        let mut app = set_up(&s, &mut web).await;
        let cli = start_cli_sign_in(&client(), &s.gw.url).await;

        // Someone else opens the link and confirms first (and goes no further).
        let mut other = Browser::new("nobody@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = go(&mut other, &cli.browser_url).await;
        let link = dev_oidc::browser::approve_link(&page)
            .unwrap_or_else(|| panic!("no confirm link: {}", page.body));
        let (status, _) = other.hop(&link).await.unwrap_or_else(|e| panic!("{e}"));
        assert!((300..400).contains(&status), "{status}");
        assert!(
            other.cookies.contains_key("rg_login"),
            "{:?}",
            other.cookies
        );

        // Then the person confirms, signs in at the provider, and is asked for a code.
        let mut person = Browser::new(WHO).unwrap_or_else(|e| panic!("{e}"));
        let asked = person
            .visit_confirming(&cli.browser_url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(asks_for_a_code(&asked), "{}", asked.body);

        // The other browser sees nothing of it, and what it sends counts for nothing.
        let mfa_url = format!("{}/api/v1/auth/mfa", s.gw.url);
        let seen = go(&mut other, &mfa_url).await;
        assert_eq!(seen.status, 410, "{}", seen.body);
        assert!(!seen.body.contains(WHO), "{}", seen.body);
        for _ in 0..5 {
            let fields = [("csrf", csrf(&asked)), ("code", app.wrong_code())];
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let sent = submit(&mut other, &mfa_url, &fields).await;
            assert_eq!(sent.status, 410, "{}", sent.body);
        }
        let row = store(&db)
            .await
            .totp(who_id(&db).await)
            .await
            .ok()
            .flatten();
        assert_eq!(
            row.map(|r| (r.failures, r.locked_until)),
            Some((0, 0)),
            "nothing counted"
        );
        // The person's code signs their CLI in.
        let code = app.next_code().await;
        let done = give(&s, &mut person, &asked, &code).await;
        assert_eq!(done.status, 200, "{}", done.body);
        collect_cli_session(&s, &cli).await;
    }
);

// With `MFA_REQUIRED`, a sign-in's set-up replaced by another one (a second sign-in in another
// browser) says so, and shows the key to add now, rather than blaming the app's clock.
both_backends!(
    a_sign_in_set_up_replaced_elsewhere_says_so,
    |db| async move {
        add_who(&db);
        let env = [("MFA_ENCRYPTION_KEY", KEY), ("MFA_REQUIRED", "true")];
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &env).await;
        let (mut first, asked) = web_sign_in(&s).await;
        let first_key = between(&asked.body, "id=\"secret\">", "<");
        let (_second, other) = web_sign_in(&s).await;
        let second_key = between(&other.body, "id=\"secret\">", "<");
        assert_ne!(first_key, second_key, "each sign-in its own secret");
        let mut app = App::new(&first_key);
        let code = app.next_code().await;
        let replaced = give(&s, &mut first, &asked, &code).await;
        assert_eq!(replaced.status, 409, "{}", replaced.body);
        assert!(
            replaced.body.contains("replaced by one started elsewhere"),
            "{}",
            replaced.body
        );
        let new_key = between(&replaced.body, "id=\"secret\">", "<");
        assert!(
            !new_key.is_empty() && new_key != first_key,
            "{}",
            replaced.body
        );
        // The new key's code turns the app on and signs in.
        let mut app = App::new(&new_key);
        let code = app.next_code().await;
        let done = give(&s, &mut first, &replaced, &code).await;
        assert_eq!(done.status, 200, "{}", done.body);
        assert!(done.body.contains("id=\"backup-codes\""), "{}", done.body);
    }
);
