//! Security keys (WebAuthn) over HTTP against the real gateway, with a software authenticator
//! that speaks the protocol as a security key does (ES256, "none" attestation): forged,
//! replayed, foreign and cloned answers are refused and audited; a right one signs in.
//! Chromium with a virtual authenticator drives the pages themselves (`browser.rs`).

use dev_oidc::browser::{Browser, Page};
use dev_oidc::softkey::{SoftKey, key_form};
use serde_json::{Value, json};

use crate::both_backends;
use crate::kit::store;
use crate::kit::{admin, client};
use crate::mfa::{
    KEY, WHO, add_who, api_verify, asks_for_a_code, cli_session, csrf, events, go, remove_app,
    set_up, submit, web_sign_in, web_sign_in_as, who_id,
};
use crate::signin::SignIn;

/// Answers the sign-in code page `page` with a key's `answer` to `ceremony`.
async fn answer_sign_in(
    s: &SignIn,
    b: &mut Browser,
    page: &Page,
    ceremony: &str,
    answer: &str,
) -> Page {
    let url = format!("{}/api/v1/auth/mfa", s.gw.url);
    let fields = [
        ("csrf", csrf(page)),
        ("ceremony", ceremony.into()),
        ("answer", answer.into()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    submit(b, &url, &fields).await
}

/// Adds `key` as `name` on the account page of `b` (its confirmation recent); the page after.
async fn add_key(s: &SignIn, b: &mut Browser, key: &mut SoftKey, name: &str) -> Page {
    let account = go(b, &format!("{}/account/mfa", s.gw.url)).await;
    let asked = submit(
        b,
        &format!("{}/account/mfa/keys/new", s.gw.url),
        &[("csrf", &csrf(&account)), ("name", name)],
    )
    .await;
    assert_eq!(asked.status, 200, "{}", asked.body);
    let (ceremony, options) = key_form(&asked);
    assert_eq!(options["publicKey"]["rp"]["id"], "localhost", "{options}");
    let answer = key.register(&options);
    let fields = [
        ("csrf", csrf(&asked)),
        ("name", name.to_string()),
        ("ceremony", ceremony),
        ("answer", answer),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    submit(b, &format!("{}/account/mfa/keys/add", s.gw.url), &fields).await
}

both_backends!(
    a_security_key_answers_once_for_its_person_and_site,
    |db| async move {
        add_who(&db);
        let s = SignIn::start_named(&db, &[("MFA_ENCRYPTION_KEY", KEY)]).await;
        let (mut b, _) = web_sign_in(&s).await;
        let mut app = set_up(&s, &mut b).await;

        // Added beside the app (the code that turned it on is a recent confirmation).
        let mut key = SoftKey::new(&s.gw.url);
        let added = add_key(&s, &mut b, &mut key, "Keyring").await;
        assert_eq!(added.status, 200, "{}", added.body);
        assert!(added.body.contains("<td>Keyring</td>"), "{}", added.body);
        // The same key again is excluded by the browser, and refused if sent anyway.
        let again = add_key(&s, &mut b, &mut key, "Twice").await;
        assert_eq!(again.status, 400, "{}", again.body);
        assert!(again.body.contains("added already"), "{}", again.body);
        // A key made for another site is not added.
        let mut phished = SoftKey::new("http://localhost.evil.example");
        phished.rp_id = "localhost".into();
        let foreign = add_key(&s, &mut b, &mut phished, "Foreign").await;
        assert_eq!(foreign.status, 400, "{}", foreign.body);
        // The confirmation must still be recent at the answer, not only when the key's page
        // was asked for: one that lapsed in between asks again, and adds nothing.
        let account = go(&mut b, &format!("{}/account/mfa", s.gw.url)).await;
        let late_url = format!("{}/account/mfa/keys/new", s.gw.url);
        let asked = submit(
            &mut b,
            &late_url,
            &[("csrf", &csrf(&account)), ("name", "Late")],
        )
        .await;
        assert_eq!(asked.status, 200, "{}", asked.body);
        let (ceremony, options) = key_form(&asked);
        let mut late_key = SoftKey::new(&s.gw.url);
        let answer = late_key.register(&options);
        let eleven_minutes = 11 * 60 * 1000;
        let id = crate::mfa::who_id(&db).await;
        crate::credentials::execute(
            &db,
            &format!("UPDATE sessions SET mfa_at = mfa_at - {eleven_minutes} WHERE user_id = {id}"),
        )
        .await;
        let fields = [
            ("csrf", csrf(&asked)),
            ("name", "Late".into()),
            ("ceremony", ceremony),
            ("answer", answer),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let late = submit(
            &mut b,
            &format!("{}/account/mfa/keys/add", s.gw.url),
            &fields,
        )
        .await;
        assert_eq!(late.status, 403, "{}", late.body);
        assert!(late.body.contains("Confirm it"), "{}", late.body);
        let account = go(&mut b, &format!("{}/account/mfa", s.gw.url)).await;
        assert!(!account.body.contains("<td>Late</td>"), "{}", account.body);

        // At the next sign-in, each wrong answer is refused and the page asks again.
        let (mut b, page) = web_sign_in(&s).await;
        assert!(asks_for_a_code(&page), "{}", page.body);
        let (ceremony, options) = key_form(&page);
        let garbage = answer_sign_in(&s, &mut b, &page, &ceremony, "{\"id\":1}").await;
        assert_eq!(garbage.status, 401, "{}", garbage.body);
        // That challenge is used up: even the right key's answer to it is refused.
        let stale = key.assert(&options);
        let used = answer_sign_in(&s, &mut b, &garbage, &ceremony, &stale).await;
        assert_eq!(used.status, 401, "{}", used.body);
        assert!(used.body.contains("expired or was used"), "{}", used.body);
        // Someone else's key, one claiming this key's id, this key relayed by a phishing
        // site, and a replay of an answer: each refused, and the page asks again.
        let mut page = used;
        let mut impostor = SoftKey::new(&s.gw.url);
        impostor.id = key.id.clone();
        let mut relay = key.copy_at("http://evil.example");
        relay.rp_id = "localhost".into();
        type Forge<'a> = Box<dyn FnMut(&Value) -> String + 'a>;
        let mut other = SoftKey::new(&s.gw.url);
        let forgeries: Vec<(&str, Forge)> = vec![
            ("someone else's key", Box::new(|o| other.assert(o))),
            (
                "a key claiming this one's id",
                Box::new(|o| impostor.assert(o)),
            ),
            ("a phishing relay", Box::new(|o| relay.assert(o))),
            ("a replayed answer", Box::new(|_| stale.clone())),
        ];
        for (what, mut forge) in forgeries {
            let (ceremony, options) = key_form(&page);
            let answer = forge(&options);
            page = answer_sign_in(&s, &mut b, &page, &ceremony, &answer).await;
            assert_eq!(page.status, 401, "{what}: {}", page.body);
            assert!(
                page.body.contains("did not check out"),
                "{what}: {}",
                page.body
            );
        }

        // The right answer signs in, with the key as the second factor.
        let (ceremony, options) = key_form(&page);
        let right = key.assert(&options);
        let signed_in = answer_sign_in(&s, &mut b, &page, &ceremony, &right).await;
        assert_eq!(signed_in.status, 200, "{}", signed_in.body);
        assert!(signed_in.url.ends_with("/account"), "{}", signed_in.url);
        let signins = events(&db, "gateway:auth:signin").await;
        assert!(
            signins.iter().any(|e| e.details["mfa"] == "security_key"),
            "{signins:#?}"
        );
        let verified = events(&db, "gateway:auth:mfa").await;
        let reasons: Vec<String> = verified
            .iter()
            .filter_map(|e| e.details["reason"].as_str().map(str::to_string))
            .collect();
        for reason in [
            "key_answer_malformed",
            "key_challenge_stale",
            "key_not_verified",
        ] {
            assert!(reasons.iter().any(|r| r == reason), "{reason}: {reasons:?}");
        }
        let adds = events(&db, "gateway:mfa:add_key").await;
        let reasons: Vec<&str> = adds
            .iter()
            .map(|e| e.details["reason"].as_str().unwrap_or("added"))
            .collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert_eq!(reasons.last(), Some(&"mfa_required"), "{reasons:?}");

        // A challenge is for one purpose and one person: a sign-in's, answered on the
        // step-up form, is refused there and left for its sign-in, which it then completes.
        let (mut b3, page3) = web_sign_in(&s).await;
        let (ceremony3, options3) = key_form(&page3);
        let answer3 = key.assert(&options3);
        let account = go(&mut b, &format!("{}/account/mfa", s.gw.url)).await;
        let wrong_purpose = submit(
            &mut b,
            &format!("{}/account/mfa/verify", s.gw.url),
            &[
                ("csrf", &csrf(&account)),
                ("back", "/account"),
                ("ceremony", &ceremony3),
                ("answer", &answer3),
            ],
        )
        .await;
        assert_eq!(wrong_purpose.status, 400, "{}", wrong_purpose.body);
        assert!(
            wrong_purpose.body.contains("expired or was used"),
            "{}",
            wrong_purpose.body
        );
        let completed = answer_sign_in(&s, &mut b3, &page3, &ceremony3, &answer3).await;
        assert!(completed.url.ends_with("/account"), "{}", completed.body);

        // Reloading the code page over and over keeps only the latest challenges, and the
        // latest still answers.
        let (mut b4, mut page4) = web_sign_in(&s).await;
        for _ in 0..25 {
            page4 = go(&mut b4, &format!("{}/api/v1/auth/mfa", s.gw.url)).await;
        }
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let kept: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webauthn_ceremonies WHERE user_id = $1")
                .bind(who_id(&db).await)
                .fetch_one(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kept, gateway::store::MAX_CEREMONIES_PER_USER);
        let (ceremony4, options4) = key_form(&page4);
        let answer4 = key.assert(&options4);
        let latest = answer_sign_in(&s, &mut b4, &page4, &ceremony4, &answer4).await;
        assert!(latest.url.ends_with("/account"), "{}", latest.body);

        // A clone (a copy of the key whose counter lags) is refused.
        let (mut b2, page) = web_sign_in(&s).await;
        let (ceremony, options) = key_form(&page);
        key.counter -= 1;
        let cloned = key.assert(&options);
        let refused = answer_sign_in(&s, &mut b2, &page, &ceremony, &cloned).await;
        assert_eq!(refused.status, 401, "{}", refused.body);

        // Removing the app removes the keys with it.
        let st = store(&db).await;
        let user = who_id(&db).await;
        assert_eq!(
            st.security_keys_of(user).await.map(|k| k.len()).ok(),
            Some(1)
        );
        let off = remove_app(&s, &mut b, &mut app).await;
        assert_eq!(off.status, 200, "{}", off.body);
        assert_eq!(
            st.security_keys_of(user).await.map(|k| k.len()).ok(),
            Some(0)
        );
    }
);

/// `POST path` on the gateway with bearer `credential` and JSON `body`: the status, the JSON
/// answer and its `Cache-Control`.
async fn post(s: &SignIn, credential: &str, path: &str, body: Value) -> (u16, Value, String) {
    let r = client()
        .post(format!("{}{path}", s.gw.url))
        .bearer_auth(credential)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, r.json().await.unwrap_or_default(), cache)
}

const KEY_START: &str = "/api/v1/auth/mfa/key/start";
const KEY_POLL: &str = "/api/v1/auth/mfa/key/poll";

/// Sends the key-confirmation form of `page` (for confirmation `id`) with `answer` made by
/// `sign` for the page's challenge.
async fn confirm_on(
    s: &SignIn,
    b: &mut Browser,
    page: &Page,
    id: &str,
    sign: impl FnOnce(&Value) -> String,
) -> Page {
    let (ceremony, options) = key_form(page);
    let answer = sign(&options);
    let fields = [
        ("csrf", csrf(page)),
        ("id", id.to_string()),
        ("ceremony", ceremony),
        ("answer", answer),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    submit(b, &format!("{}/account/mfa/key", s.gw.url), &fields).await
}

both_backends!(
    a_security_key_confirms_for_a_cli_session_in_its_browser,
    |db| async move {
        add_who(&db);
        let (ok, _, err) = admin(&db, &["users", "add", "ops@example.com", "--role", "ops"]);
        assert!(ok, "{err}");
        let (ok, out, err) = admin(
            &db,
            &["tokens", "create", "--name", "ci", "--role", "viewer"],
        );
        assert!(ok, "{err}");
        let api_token = out.lines().last().unwrap_or_default().to_string();
        let s = SignIn::start_named(&db, &[("MFA_ENCRYPTION_KEY", KEY)]).await;
        let (mut b, _) = web_sign_in(&s).await;
        let mut app = set_up(&s, &mut b).await;
        let cli = cli_session(&s, &mut app).await;

        // Nothing to confirm with before a key is added; an API token is asked for no codes.
        let (status, body, _) = post(&s, &cli, KEY_START, json!({})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("conflict")),
            "{body}"
        );
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("no security keys")
        );
        let mut key = SoftKey::new(&s.gw.url);
        let added = add_key(&s, &mut b, &mut key, "Keyring").await;
        assert_eq!(added.status, 200, "{}", added.body);
        let (status, body, _) = post(&s, &api_token, KEY_START, json!({})).await;
        assert_eq!(status, 400, "{body}");

        // The CLI asks: a link to the gateway's page, a code, and the id to poll with.
        let (status, started, _) = post(&s, &cli, KEY_START, json!({})).await;
        assert_eq!(status, 201, "{started}");
        let id = started["id"].as_str().unwrap_or_default().to_string();
        let code = started["code"].as_str().unwrap_or_default().to_string();
        let link = started["browser_url"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(link, format!("{}/account/mfa/key?id={id}", s.gw.url));
        assert_eq!(code.len(), 9, "{started}");
        let poll = |credential: String| {
            let s = &s;
            let id = id.clone();
            async move { post(s, &credential, KEY_POLL, json!({ "id": id })).await }
        };
        let (status, body, _) = poll(cli.clone()).await;
        assert_eq!((status, body["status"].as_str()), (202, Some("pending")));
        // For any other session, even the same person's, the id does not exist.
        let web_session = b.cookies.get("rg_session").cloned().unwrap_or_default();
        let (status, _, _) = poll(web_session.clone()).await;
        assert_eq!(status, 404);
        let (status, _, _) = post(&s, &cli, KEY_POLL, json!({ "id": "nope" })).await;
        assert_eq!(status, 404);
        for hostile in [
            json!({ "id": 5 }),
            json!({ "id": id, "proof": "rgk_x" }),
            json!({ "id": "a".repeat(100_000) }),
        ] {
            let (status, body, _) = post(&s, &cli, KEY_POLL, hostile).await;
            assert!(matches!(status, 404 | 413 | 422), "{status} {body}");
        }

        // Another person's browser sees no such confirmation; one not signed in is sent to
        // sign in first, and back here after.
        let (mut ops, _) = web_sign_in_as(&s, "ops@example.com").await;
        let theirs = go(&mut ops, &link).await;
        assert_eq!(theirs.status, 404, "{}", theirs.body);
        assert!(!theirs.body.contains(&code), "{}", theirs.body);
        // Nor can they answer it with a key of theirs: their form names no confirmation of
        // theirs.
        let ops_page = go(&mut ops, &format!("{}/account", s.gw.url)).await;
        let answered = submit(
            &mut ops,
            &format!("{}/account/mfa/key", s.gw.url),
            &[("csrf", &csrf(&ops_page)), ("id", &id), ("answer", "{}")],
        )
        .await;
        assert_eq!(answered.status, 404, "{}", answered.body);
        let mut stranger = Browser::new(WHO).unwrap_or_else(|e| panic!("{e}"));
        let to_sign_in = go(&mut stranger, &link).await;
        assert!(
            to_sign_in
                .body
                .contains("return_to=/account/mfa/key%3Fid%3D"),
            "{}",
            to_sign_in.body
        );
        let mangled = go(&mut b, &format!("{}/account/mfa/key?id=a%20b", s.gw.url)).await;
        assert_eq!(mangled.status, 404, "{}", mangled.body);

        // The person's page: the terminal's code, the asking session, a key form.
        let page = go(&mut b, &link).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(
            page.body.contains(&format!("id=\"code\">{code}<")),
            "{}",
            page.body
        );
        assert!(page.body.contains("id=\"device\""), "{}", page.body);
        // A form from elsewhere (no CSRF token) confirms nothing.
        let forged = submit(
            &mut b,
            &format!("{}/account/mfa/key", s.gw.url),
            &[("id", id.as_str()), ("answer", "{}")],
        )
        .await;
        assert_eq!(forged.status, 403, "{}", forged.body);
        // Someone else's key is refused, and the page asks again; the CLI still waits.
        let mut other = SoftKey::new(&s.gw.url);
        let refused = confirm_on(&s, &mut b, &page, &id, |o| other.assert(o)).await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert!(
            refused.body.contains("did not check out"),
            "{}",
            refused.body
        );
        let (status, _, _) = poll(cli.clone()).await;
        assert_eq!(status, 202);
        // Their own key confirms, once.
        let confirmed = confirm_on(&s, &mut b, &refused, &id, |o| key.assert(o)).await;
        assert_eq!(confirmed.status, 200, "{}", confirmed.body);
        assert!(
            confirmed.body.contains("Go back to your terminal"),
            "{}",
            confirmed.body
        );
        let again = go(&mut b, &link).await;
        assert_eq!(again.status, 410, "{}", again.body);

        // The CLI collects the proof once, and no cache may keep it.
        let (status, body, cache) = poll(cli.clone()).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("confirmed")),
            "{body}"
        );
        assert_eq!(cache, "no-store");
        let proof = body["proof"].as_str().unwrap_or_default().to_string();
        assert!(proof.starts_with("rgk_") && proof.len() > 40, "{body}");
        let (status, body, _) = poll(cli.clone()).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (410, Some("expired")),
            "{body}"
        );

        // It counts as a code for that session alone, once.
        let (status, body) = api_verify(&s, &web_session, proof.clone()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("mfa_code_refused")),
            "{body}"
        );
        let (status, body) = api_verify(&s, &cli, proof.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["factor"], "security_key", "{body}");
        let (status, body) = api_verify(&s, &cli, proof.clone()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("mfa_code_refused")),
            "{body}"
        );
        // Proofs cannot be guessed, so refused ones do not lock codes out.
        for n in 0..6 {
            let (status, _) = api_verify(&s, &cli, format!("rgk_forged{n}")).await;
            assert_eq!(status, 403);
        }
        let (status, body) = api_verify(&s, &cli, app.next_code().await).await;
        assert_eq!(status, 200, "{body}");

        // An unanswered confirmation expires: its page and its poll say so.
        let (_, late, _) = post(&s, &cli, KEY_START, json!({})).await;
        let late_id = late["id"].as_str().unwrap_or_default().to_string();
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sqlx::query("UPDATE key_confirmations SET expires_at = 1 WHERE confirmed_at IS NULL")
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let late_page = go(
            &mut b,
            &format!("{}/account/mfa/key?id={late_id}", s.gw.url),
        )
        .await;
        assert_eq!(late_page.status, 410, "{}", late_page.body);
        let (status, _, _) = post(&s, &cli, KEY_POLL, json!({ "id": late_id })).await;
        assert_eq!(status, 410);

        // The trail: the refused and the right answer (with the key and the CLI's session),
        // the step-up it made, the refused proofs; never the proof itself.
        let trail = events(&db, "gateway:auth:mfa").await;
        let cli_id = trail
            .iter()
            .find(|e| e.details["stage"] == "cli_key" && e.details["key_id"].is_i64())
            .map(|e| e.details["session_id"].clone())
            .unwrap_or_else(|| panic!("no confirmation recorded: {trail:#?}"));
        assert!(
            trail
                .iter()
                .any(|e| e.details["stage"] == "cli_key"
                    && e.details["reason"] == "key_not_verified"),
            "{trail:#?}"
        );
        assert!(
            trail.iter().any(|e| e.details["stage"] == "step_up"
                && e.details["factor"] == "security_key"
                && e.details["session_id"] == cli_id),
            "{trail:#?}"
        );
        // Each confirmation asked for, by the session that asked (the late one too), with the
        // code both places showed.
        let asked = trail
            .iter()
            .filter(|e| {
                e.details["stage"] == "cli_key_start"
                    && e.details["session_id"] == cli_id
                    && e.details["code"].as_str().is_some_and(|c| c.len() == 9)
            })
            .count();
        assert!(asked >= 2, "{trail:#?}");
        let refused_proofs = trail
            .iter()
            .filter(|e| e.details["reason"] == "key_proof_refused")
            .count();
        assert_eq!(refused_proofs, 8, "{trail:#?}");
        let rows = store(&db)
            .await
            .audit_rows(0, 10_000)
            .await
            .unwrap_or_default();
        let written = format!("{rows:?}");
        assert!(
            !written.contains(&proof[4..]),
            "the proof reached the trail"
        );
        assert!(!written.contains(&id), "the id reached the trail");
    }
);

both_backends!(
    without_security_keys_on_the_gateway_a_cli_confirmation_is_refused_clearly,
    |db| async move {
        add_who(&db);
        let (rack_url, _stop) = crate::approvals::fake_rack().await;
        // Browsers reach this gateway by an IP address: WebAuthn takes none, so keys are off.
        let env = [("MFA_ENCRYPTION_KEY", KEY)];
        let s = SignIn::start_on_rack(&db, &env, &rack_url).await;
        let session = crate::approvals::session_of(&s, WHO).await;
        let (status, body, _) = post(&s, &session, KEY_START, json!({})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("conflict")),
            "{body}"
        );
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("security keys are off"),
            "{body}"
        );
    }
);
