//! YubiKey one-time passwords against the real gateway and a fake Yubico validation service
//! (`fake_yubico`): added beside the app, an OTP signs in and confirms over the API (what the
//! CLI's prompt sends); a replayed, forged or someone else's OTP is refused and counted; an
//! answer that does not check out, or a service that is down, lets nothing through and
//! counts nothing.

use crate::both_backends;
use crate::fake_yubico::{FakeYubico, otp, otp_starting};
use crate::kit::{client, store, token};
use crate::mfa::{
    KEY, WHO, add_who, api_verify, asks_for_a_code, csrf, events, give, go, remove_app, set_up,
    submit, web_sign_in, who_id,
};
use crate::signin::SignIn;

const DESK: &str = "cccccbdefghi";

/// Adds the YubiKey that typed `otp` as `name` on `b`'s account page; the page after.
async fn add_yubikey(
    s: &SignIn,
    b: &mut dev_oidc::browser::Browser,
    name: &str,
    otp: String,
) -> dev_oidc::browser::Page {
    let page = go(b, &format!("{}/account/mfa", s.gw.url)).await;
    assert!(page.body.contains("id=\"add-yubikey\""), "{}", page.body);
    let url = format!("{}/account/mfa/yubikeys/add", s.gw.url);
    submit(
        b,
        &url,
        &[("csrf", &csrf(&page)), ("name", name), ("otp", &otp)],
    )
    .await
}
const STRANGER: &str = "cccccbtrnglr";

both_backends!(a_yubikey_otp_counts_once_for_its_person, |db| async move {
    add_who(&db);
    let yubico = FakeYubico::start().await;
    let mut env: Vec<(&str, String)> = yubico.env();
    env.push(("MFA_ENCRYPTION_KEY", KEY.into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = SignIn::start(&db, dev_oidc::Quirks::default(), &env).await;
    let (mut b, _) = web_sign_in(&s).await;
    let mut app = set_up(&s, &mut b).await;

    // Added with a touch (the app's code that turned it on is a recent confirmation).
    let typed = add_yubikey(&s, &mut b, "not a key", "123456".into()).await;
    assert_eq!(typed.status, 400, "{}", typed.body);
    let added = add_yubikey(&s, &mut b, "Desk", otp(DESK)).await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert!(added.body.contains("<td>Desk</td>"), "{}", added.body);
    let again = add_yubikey(&s, &mut b, "Desk again", otp(DESK)).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(again.body.contains("added already"), "{}", again.body);
    assert_eq!(
        events(&db, "gateway:mfa:add_key").await.len(),
        2,
        "one added, one refused"
    );
    // Admins see who has what.
    let listed: serde_json::Value = client()
        .get(format!("{}/api/v1/users", s.gw.url))
        .bearer_auth(token(&db, "auditor", &["--role", "admin"]))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let who = listed
        .as_array()
        .and_then(|users| users.iter().find(|u| u["email"] == WHO))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&who["mfa"], &who["yubikeys"], &who["security_keys"]),
        (
            &serde_json::json!(true),
            &serde_json::json!(1),
            &serde_json::json!(0)
        ),
        "{listed}"
    );

    // A touch signs in.
    let (mut b, page) = web_sign_in(&s).await;
    assert!(asks_for_a_code(&page), "{}", page.body);
    let first = otp(DESK);
    let signed_in = give(&s, &mut b, &page, &first).await;
    assert!(signed_in.url.ends_with("/account"), "{}", signed_in.body);
    let signins = events(&db, "gateway:auth:signin").await;
    assert!(
        signins.iter().any(|e| e.details["mfa"] == "yubikey"),
        "{signins:#?}"
    );

    // Refused and counted: the same OTP again, a forged one, and another key's (not asked of
    // Yubico at all).
    let st = store(&db).await;
    let user = who_id(&db).await;
    let failures = || async {
        store(&db)
            .await
            .totp(user)
            .await
            .ok()
            .flatten()
            .map(|t| t.failures)
    };
    let (mut b2, page) = web_sign_in(&s).await;
    let replayed = give(&s, &mut b2, &page, &first).await;
    assert_eq!(replayed.status, 401, "{}", replayed.body);
    let forged = give(&s, &mut b2, &replayed, &otp_starting(DESK, "vvvv")).await;
    assert_eq!(forged.status, 401, "{}", forged.body);
    let asked = yubico.asked();
    let strangers = give(&s, &mut b2, &forged, &otp(STRANGER)).await;
    assert_eq!(strangers.status, 401, "{}", strangers.body);
    assert_eq!(
        yubico.asked(),
        asked,
        "another key's OTP is not sent to Yubico"
    );
    assert_eq!(failures().await, Some(3));

    // Nothing through, nothing counted: an answer signed with another key, a service down.
    let bad_answer = give(&s, &mut b2, &strangers, &otp_starting(DESK, "tttt")).await;
    assert_eq!(bad_answer.status, 503, "{}", bad_answer.body);
    assert!(bad_answer.body.contains("YubiKey"), "{}", bad_answer.body);
    yubico.set_down(true);
    let page = go(&mut b2, &format!("{}/api/v1/auth/mfa", s.gw.url)).await;
    let down = give(&s, &mut b2, &page, &otp(DESK)).await;
    assert_eq!(down.status, 503, "{}", down.body);
    yubico.set_down(false);
    assert_eq!(failures().await, Some(3));
    let page = go(&mut b2, &format!("{}/api/v1/auth/mfa", s.gw.url)).await;
    let through = give(&s, &mut b2, &page, &otp(DESK)).await;
    assert!(through.url.ends_with("/account"), "{}", through.body);

    // Over the API, as the CLI's prompt sends it: a confirmation; a replay is refused.
    let session = b.cookies.get("rg_session").cloned().unwrap_or_default();
    let verify = |code: String| api_verify(&s, &session, code);
    let code = otp(DESK);
    let (status, body) = verify(code.clone()).await;
    assert_eq!(
        (status, body["factor"].as_str()),
        (200, Some("yubikey")),
        "{body}"
    );
    let (status, body) = verify(code).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("mfa_code_refused")),
        "{body}"
    );
    yubico.set_down(true);
    let (status, body) = verify(otp(DESK)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("yubico_unavailable")),
        "{body}"
    );
    yubico.set_down(false);

    // Removing the app removes the YubiKey with it.
    assert_eq!(st.yubikeys_of(user).await.map(|k| k.len()).ok(), Some(1));
    let off = remove_app(&s, &mut b, &mut app).await;
    assert_eq!(off.status, 200, "{}", off.body);
    assert_eq!(st.yubikeys_of(user).await.map(|k| k.len()).ok(), Some(0));
});

both_backends!(
    without_yubico_settings_an_otp_is_no_code_nor_a_key_added,
    |db| async move {
        add_who(&db);
        let s = SignIn::start(
            &db,
            dev_oidc::Quirks::default(),
            &[("MFA_ENCRYPTION_KEY", KEY)],
        )
        .await;
        let (mut b, _) = web_sign_in(&s).await;
        set_up(&s, &mut b).await;
        let account = go(&mut b, &format!("{}/account/mfa", s.gw.url)).await;
        assert!(!account.body.contains("YubiKeys"), "{}", account.body);
        // Reached by an IP address, the gateway takes no security keys either, and says why.
        assert!(account.body.contains("id=\"keys-off\""), "{}", account.body);
        let new_key = format!("{}/account/mfa/keys/new", s.gw.url);
        let fields = [("csrf", csrf(&account)), ("name", "Keyring".to_string())];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let off = submit(&mut b, &new_key, &fields).await;
        assert_eq!(off.status, 409, "{}", off.body);
        assert!(off.body.contains("PUBLIC_URL"), "{}", off.body);
        let add_yubikey = format!("{}/account/mfa/yubikeys/add", s.gw.url);
        let fields = [
            ("csrf", csrf(&account)),
            ("name", "Desk".to_string()),
            ("otp", otp(DESK)),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let off = submit(&mut b, &add_yubikey, &fields).await;
        assert_eq!(off.status, 409, "{}", off.body);
        assert!(off.body.contains("YUBICO_CLIENT_ID"), "{}", off.body);
        let (mut b, page) = web_sign_in(&s).await;
        let refused = give(&s, &mut b, &page, &otp(DESK)).await;
        assert_eq!(refused.status, 400, "not a code here: {}", refused.body);
        let st = store(&db).await;
        let user = who_id(&db).await;
        let failures = st.totp(user).await.ok().flatten().map(|t| t.failures);
        assert_eq!(failures, Some(0), "not counted as a guess");
    }
);
