//! Sign-in through the real dev OIDC provider over HTTP (no shortcuts into the store): web and
//! CLI flows, sessions, and every refusal the issue lists.

use dev_oidc::browser::Browser;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::Digest;

use crate::both_backends;
use crate::kit::{Db, Gateway, admin, client, store};
use crate::upstream::TestRack;

/// A provider and a gateway wired to it.
pub struct SignIn {
    pub gw: Gateway,
    pub rack: TestRack,
    _oidc: tokio::task::JoinHandle<()>,
}

/// A port that is free now and stays free until the caller binds it: taken from below the
/// kernel's ephemeral range, so no `:0` listener or outgoing connection of a parallel test can
/// take it first (a port from `bind(:0)` could be reused by one in between: "Address already
/// in use"), and never handed out twice in one run.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (first, span) = (low.saturating_sub(12_000).max(1024), 10_000);
    // Start somewhere different in each run (several test binaries may run at once).
    let start = u16::try_from(std::process::id() % u32::from(span)).unwrap_or(0);
    let _ = NEXT.compare_exchange(0, start + 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = first + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

impl SignIn {
    pub async fn start(db: &Db, quirks: dev_oidc::Quirks, extra: &[(&str, &str)]) -> SignIn {
        SignIn::start_with_users(db, quirks, extra, dev_oidc::default_users()).await
    }

    /// [`SignIn::start`] with a provider offering `users`.
    pub async fn start_with_users(
        db: &Db,
        quirks: dev_oidc::Quirks,
        extra: &[(&str, &str)],
        users: Vec<dev_oidc::DevUser>,
    ) -> SignIn {
        SignIn::start_full(db, quirks, extra, users, None, "127.0.0.1").await
    }

    /// [`SignIn::start`] with browsers reaching the gateway by a name (`localhost`, its
    /// `PUBLIC_URL` and `gw.url`), as security keys need.
    pub async fn start_named(db: &Db, extra: &[(&str, &str)]) -> SignIn {
        let (quirks, users) = (dev_oidc::Quirks::default(), dev_oidc::default_users());
        SignIn::start_full(db, quirks, extra, users, None, "localhost").await
    }

    /// [`SignIn::start`] with the gateway in front of the rack at `rack_url` (a fake Convox
    /// rack, say) instead of the test rack.
    pub async fn start_on_rack(db: &Db, extra: &[(&str, &str)], rack_url: &str) -> SignIn {
        let users = dev_oidc::default_users();
        let quirks = dev_oidc::Quirks::default();
        SignIn::start_full(db, quirks, extra, users, Some(rack_url), "127.0.0.1").await
    }

    async fn start_full(
        db: &Db,
        quirks: dev_oidc::Quirks,
        extra: &[(&str, &str)],
        users: Vec<dev_oidc::DevUser>,
        rack_url: Option<&str>,
        host: &str,
    ) -> SignIn {
        let rack = TestRack::start().await;
        let port = free_port();
        let public = format!("http://{host}:{port}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let issuer = format!(
            "http://{}",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        let config = dev_oidc::DevOidcConfig {
            issuer: issuer.clone(),
            client_id: "gw-test".into(),
            client_secret: "gw-test-secret".into(),
            redirect_uris: vec![format!("{public}/api/v1/auth/callback")],
            users,
            quirks,
        };
        let oidc = tokio::spawn(async move {
            let _ = dev_oidc::serve(listener, config, std::future::pending()).await;
        });
        let listen = format!("127.0.0.1:{port}");
        let mut env = vec![
            ("LISTEN_ADDR", listen.as_str()),
            ("PUBLIC_URL", public.as_str()),
            ("OIDC_ISSUER", issuer.as_str()),
            ("OIDC_CLIENT_ID", "gw-test"),
            ("OIDC_CLIENT_SECRET", "gw-test-secret"),
            ("OIDC_ALLOWED_DOMAINS", "example.com"),
        ];
        // `{issuer}` in an extra value stands for the provider's issuer (known only here).
        let extra: Vec<(&str, String)> = extra
            .iter()
            .map(|(k, v)| (*k, v.replace("{issuer}", &issuer)))
            .collect();
        env.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        let mut gw = Gateway::start(db, rack_url.unwrap_or(&rack.url), &env).await;
        gw.url = public;
        SignIn {
            gw,
            rack,
            _oidc: oidc,
        }
    }
}

async fn signin_events(db: &Db) -> Vec<gateway::store::AuditRow> {
    store(db)
        .await
        .audit_rows(0, 10_000)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.event.action == "gateway:auth:signin")
        .collect()
}

both_backends!(web_sign_in_creates_a_fresh_session, |db| async move {
    let (ok, _, err) = admin(&db, &["users", "add", "ops@example.com", "--role", "ops"]);
    assert!(ok, "{err}");
    let (ok, _, err) = admin(
        &db,
        &["users", "add", "admin@example.com", "--role", "admin"],
    );
    assert!(ok, "{err}");
    let s = SignIn::start(&db, dev_oidc::Quirks::default(), &[]).await;
    let mut browser = Browser::new("ops@example.com").unwrap_or_else(|e| panic!("{e}"));
    // A planted session id must not survive sign-in (no fixation).
    browser
        .cookies
        .insert("rg_session".into(), "rgs_planted".into());
    let page = browser
        .visit(&format!(
            "{}/api/v1/auth/web/login?return_to=/account",
            s.gw.url
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.url.ends_with("/account"), "{}", page.url);
    assert!(page.body.contains("ops@example.com"), "{}", page.body);
    let first = browser
        .cookies
        .get("rg_session")
        .cloned()
        .unwrap_or_default();
    assert!(first.starts_with("rgs_") && first != "rgs_planted");
    // Signing in is being seen (access reviews read this).
    let user = store(&db)
        .await
        .find_user("ops@example.com")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no user"));
    assert!(
        user.last_seen_at.is_some(),
        "last seen not set by the sign-in"
    );
    // Added by e-mail alone, the user now has the provider's name, as the sign-in recorded.
    assert_eq!(user.name, "Otto Ops");
    let named = crate::kit::audited(&store(&db).await, |r| {
        r.event.action == "gateway:auth:signin" && r.event.details["name"] == "Otto Ops"
    })
    .await;
    assert!(named, "the sign-in records the name it brings");

    // The session works as the Basic-auth password for the stock convox CLI.
    let resp = client()
        .get(s.gw.proxy("/apps"))
        .basic_auth("convox", Some(&first))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let resp = client()
        .delete(s.gw.proxy("/apps/web"))
        .basic_auth("convox", Some(&first))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 403, "ops may not delete apps");

    // Signing in again rotates the session.
    let _ = browser
        .visit(&format!(
            "{}/api/v1/auth/web/login?return_to=/account",
            s.gw.url
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let second = browser
        .cookies
        .get("rg_session")
        .cloned()
        .unwrap_or_default();
    assert_ne!(first, second);
    // The session this browser held before is ended, not left to idle out.
    let resp = client()
        .get(format!("{}/api/v1/info", s.gw.url))
        .bearer_auth(&first)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["code"], "session_revoked");
    let replaced = crate::kit::audited(&store(&db).await, |r| {
        r.event.action == "gateway:auth:signout"
            && r.event.details["reason"] == "replaced"
            && r.event.user_email.as_deref() == Some("ops@example.com")
    })
    .await;
    assert!(replaced, "the replaced session's end is recorded");

    // A role change applies on the next request; a lock too.
    let (ok, _, _) = admin(&db, &["users", "set-role", "ops@example.com", "viewer"]);
    assert!(ok);
    let info: serde_json::Value = client()
        .get(format!("{}/api/v1/info", s.gw.url))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(info["role"], "viewer");
    assert_eq!(info["type"], "session");
    let (ok, _, _) = admin(&db, &["users", "lock", "ops@example.com"]);
    assert!(ok);
    let resp = client()
        .get(s.gw.proxy("/apps"))
        .basic_auth("convox", Some(&second))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 401);
    let events = signin_events(&db).await;
    assert!(
        events
            .iter()
            .filter(|e| e.event.rbac_decision.as_str() == "allow")
            .count()
            >= 2
    );
    let _ = &s.rack;
});

both_backends!(
    first_user_becomes_admin_then_strangers_are_refused,
    |db| async move {
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &[]).await;
        let mut first = Browser::new("deployer@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = first
            .visit(&format!("{}/api/v1/auth/web/login", s.gw.url))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(
            page.body.contains("id=\"role\">admin"),
            "first user is admin: {}",
            page.body
        );
        let mut stranger = Browser::new("stranger@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = stranger
            .visit(&format!("{}/api/v1/auth/web/login", s.gw.url))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 403);
        assert!(page.body.contains("has not been added"), "{}", page.body);
        assert!(!stranger.cookies.contains_key("rg_session"));
        let events = signin_events(&db).await;
        assert!(
            events
                .iter()
                .any(|e| e.event.rbac_decision.as_str() == "deny"
                    && e.event.user_email.as_deref() == Some("stranger@example.com"))
        );
    }
);

both_backends!(the_first_admin_is_only_a_bootstrap, |db| async move {
    // Users exist but none is an admin (e.g. the last one was demoted): the next person to
    // sign in must not become admin.
    let (ok, _, err) = admin(
        &db,
        &["users", "add", "admin@example.com", "--role", "viewer"],
    );
    assert!(ok, "{err}");
    let s = SignIn::start(&db, dev_oidc::Quirks::default(), &[]).await;
    let login = format!("{}/api/v1/auth/web/login", s.gw.url);
    let mut next = Browser::new("deployer@example.com").unwrap_or_else(|e| panic!("{e}"));
    let page = next.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("has not been added"), "{}", page.body);
    let mut known = Browser::new("admin@example.com").unwrap_or_else(|e| panic!("{e}"));
    let page = known.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"role\">viewer"), "{}", page.body);
});

both_backends!(
    with_admin_users_set_only_they_become_admins,
    |db| async move {
        // Nobody is admin yet, and ADMIN_USERS names someone else: the first person to sign in
        // must not take the first admin seat.
        let s = SignIn::start(
            &db,
            dev_oidc::Quirks::default(),
            &[("ADMIN_USERS", "admin@example.com")],
        )
        .await;
        let login = format!("{}/api/v1/auth/web/login", s.gw.url);
        let mut early = Browser::new("deployer@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = early.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 403, "{}", page.body);
        assert!(page.body.contains("has not been added"), "{}", page.body);
        assert!(!early.cookies.contains_key("rg_session"));
        let users = store(&db).await;
        assert!(
            users
                .find_user("deployer@example.com")
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );

        let mut listed = Browser::new("admin@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = listed.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("id=\"role\">admin"), "{}", page.body);
    }
);

both_backends!(
    control_characters_from_the_provider_are_dropped_or_refused,
    |db| async move {
        // The provider's name claim is stored (here: for the first admin). NUL cannot be
        // stored in PostgreSQL, and control characters have no place in a display name.
        let odd = dev_oidc::DevUser {
            email: "odd@example.com".into(),
            name: "Odd\u{0} \u{7}One".into(),
            email_verified: true,
        };
        // An e-mail claim with a control character names nobody: refused like a forged token.
        let bell = dev_oidc::DevUser {
            email: "bell\u{7}@example.com".into(),
            name: "Bell".into(),
            email_verified: true,
        };
        let s =
            SignIn::start_with_users(&db, dev_oidc::Quirks::default(), &[], vec![odd, bell]).await;
        let mut browser = Browser::new("bell%07@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = browser
            .visit(&format!("{}/api/v1/auth/web/login", s.gw.url))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 403, "{}", page.body);
        assert!(page.body.contains("ID token was rejected"), "{}", page.body);
        assert!(!browser.cookies.contains_key("rg_session"));

        let mut browser = Browser::new("odd@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = browser
            .visit(&format!("{}/api/v1/auth/web/login", s.gw.url))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 200, "{}", page.body);
        let user = store(&db)
            .await
            .find_user("odd@example.com")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the first user was not created"));
        assert_eq!(user.name, "Odd One");
    }
);

both_backends!(sign_in_refusals, |db| async move {
    for email in [
        "admin@example.com",
        "unverified@example.com",
        "outsider@elsewhere.test",
    ] {
        let (ok, _, err) = admin(&db, &["users", "add", email, "--role", "viewer"]);
        assert!(ok, "{err}");
    }
    let (ok, _, _) = admin(
        &db,
        &["users", "add", "viewer@example.com", "--role", "viewer"],
    );
    assert!(ok);
    let (ok, _, _) = admin(&db, &["users", "lock", "viewer@example.com"]);
    assert!(ok);
    let s = SignIn::start(&db, dev_oidc::Quirks::default(), &[]).await;
    let login = format!("{}/api/v1/auth/web/login", s.gw.url);
    for (user, words) in [
        ("unverified@example.com", "not verified"),
        (
            "outsider@elsewhere.test",
            "domain elsewhere.test is not allowed",
        ),
        ("viewer@example.com", "locked"),
    ] {
        let mut b = Browser::new(user).unwrap_or_else(|e| panic!("{e}"));
        let page = b.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 403, "{user}");
        assert!(page.body.contains(words), "{user}: {}", page.body);
        assert!(
            !b.cookies.contains_key("rg_session"),
            "{user} got a session"
        );
    }
    // An address the provider has not verified is nobody's: the refusal is not recorded as
    // that user's, only with the address claimed.
    let recorded = crate::kit::eventually(|| async {
        s.gw.audit_lines().iter().any(|l| {
            l["details"]
                .to_string()
                .contains("claimed: unverified@example.com")
        })
    })
    .await;
    assert!(recorded, "{:?}", s.gw.audit_lines());
    assert!(
        s.gw.audit_lines()
            .iter()
            .all(|l| l["user_email"] != "unverified@example.com"),
        "a refusal recorded as the unverified address's user"
    );
    // Open redirect.
    let mut b = Browser::new("admin@example.com").unwrap_or_else(|e| panic!("{e}"));
    let page = b
        .visit(&format!("{login}?return_to=https://evil.test/"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 400);
    let page = b
        .visit(&format!("{login}?return_to=//evil.test/"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 400);
    // A long path on the gateway is fine up to 2 KiB, as documented; past it, refused.
    let long = format!("/account?x={}", "a".repeat(1500));
    let (status, to) = b
        .hop(&format!("{login}?return_to={long}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!((300..400).contains(&status), "{status}: {to}");
    let too_long = format!("/account?x={}", "a".repeat(2100));
    let page = b
        .visit(&format!("{login}?return_to={too_long}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 400);
    assert!(page.body.contains("too long"), "{}", page.body);

    // Tampered state, replay, another browser, expired attempt.
    let mut b = Browser::new("admin@example.com").unwrap_or_else(|e| panic!("{e}"));
    let (_, idp) = b.hop(&login).await.unwrap_or_else(|e| panic!("{e}"));
    let (_, callback) = b
        .hop(&format!("{idp}&login_hint=admin@example.com"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tampered = callback.replace("state=", "state=x");
    let page = b.visit(&tampered).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 403, "tampered state");
    let mut other = Browser::new("admin@example.com").unwrap_or_else(|e| panic!("{e}"));
    let page = other
        .visit(&callback)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 403, "callback in another browser");
    assert!(page.body.contains("another browser"), "{}", page.body);
    let login_cookie = b.cookies.get("rg_login").cloned().unwrap_or_default();
    let page = b.visit(&callback).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 200, "the real browser signs in: {}", page.body);
    // Replaying the callback, even with the login cookie put back, is refused.
    b.cookies.insert("rg_login".into(), login_cookie);
    let page = b.visit(&callback).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 403, "replayed callback");
    assert!(page.body.contains("already used"), "{}", page.body);

    let mut late = Browser::new("admin@example.com").unwrap_or_else(|e| panic!("{e}"));
    let (_, idp) = late.hop(&login).await.unwrap_or_else(|e| panic!("{e}"));
    let (_, callback) = late
        .hop(&format!("{idp}&login_hint=admin@example.com"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Time passes: the attempt's ten minutes are up.
    store(&db)
        .await
        .execute_raw("UPDATE login_attempts SET expires_at = 0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let page = late
        .visit(&callback)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 403);
    assert!(page.body.contains("took too long"), "{}", page.body);

    let reasons: Vec<String> = signin_events(&db)
        .await
        .into_iter()
        .filter(|e| e.event.rbac_decision.as_str() == "deny")
        .filter_map(|e| e.event.details["reason"].as_str().map(str::to_string))
        .collect();
    for reason in [
        "not_allowed",
        "not_admitted",
        "open_redirect",
        "unknown_state",
        "browser_mismatch",
        "replayed",
        "expired",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} not audited: {reasons:?}"
        );
    }
});

both_backends!(forged_id_tokens_are_rejected, |db| async move {
    let (ok, _, _) = admin(
        &db,
        &["users", "add", "admin@example.com", "--role", "admin"],
    );
    assert!(ok);
    for quirks in [
        dev_oidc::Quirks {
            wrong_audience: true,
            ..Default::default()
        },
        dev_oidc::Quirks {
            wrong_issuer: true,
            ..Default::default()
        },
        dev_oidc::Quirks {
            wrong_nonce: true,
            ..Default::default()
        },
        dev_oidc::Quirks {
            other_party: true,
            ..Default::default()
        },
        dev_oidc::Quirks {
            issued_in_future: true,
            ..Default::default()
        },
    ] {
        let s = SignIn::start(&db, quirks, &[]).await;
        let mut b = Browser::new("admin@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = b
            .visit(&format!("{}/api/v1/auth/web/login", s.gw.url))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 403, "{quirks:?}: {}", page.body);
        assert!(
            page.body.contains("ID token was rejected"),
            "{quirks:?}: {}",
            page.body
        );
        assert!(!b.cookies.contains_key("rg_session"));
    }
});

both_backends!(
    a_provider_that_rotated_its_key_is_trusted_with_the_new_one,
    |db| async move {
        // Providers rotate signing keys; one that signs with a new key before the gateway's
        // cached key set lists it (cached for an hour) must not break sign-in until then.
        let (ok, _, _) = admin(&db, &["users", "add", "ops@example.com", "--role", "ops"]);
        assert!(ok);
        let quirks = dev_oidc::Quirks {
            rotates_key: true,
            ..Default::default()
        };
        let s = SignIn::start(&db, quirks, &[]).await;
        for round in 0..2 {
            let mut b = Browser::new("ops@example.com").unwrap_or_else(|e| panic!("{e}"));
            let page = b
                .visit(&format!("{}/api/v1/auth/web/login", s.gw.url))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(page.status, 200, "round {round}: {}", page.body);
            assert!(b.cookies.contains_key("rg_session"), "round {round}");
        }
        let output = s.gw.all_output();
        assert_eq!(
            output.matches("fetching the provider's keys again").count(),
            1,
            "the new key is kept once fetched: {output}"
        );
    }
);

fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// A CLI sign-in started as `rack-gateway login` starts one (S256).
pub struct CliStart {
    /// The gateway's answer.
    pub json: serde_json::Value,
    pub login_id: String,
    pub browser_url: String,
    /// What only this "CLI" holds.
    pub verifier: String,
}

pub async fn start_cli_sign_in(c: &reqwest::Client, gw: &str) -> CliStart {
    let (verifier, challenge) = pkce();
    let json: serde_json::Value = c
        .post(format!("{gw}/api/v1/auth/cli/start"))
        .json(&serde_json::json!({ "code_challenge": challenge, "code_challenge_method": "S256" }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let text = |key: &str| json[key].as_str().unwrap_or_default().to_string();
    CliStart {
        login_id: text("login_id"),
        browser_url: text("browser_url"),
        json,
        verifier,
    }
}

both_backends!(cli_sign_in_is_bound_to_the_cli_verifier, |db| async move {
    let (ok, _, _) = admin(
        &db,
        &["users", "add", "deployer@example.com", "--role", "deployer"],
    );
    assert!(ok);
    let s = SignIn::start(
        &db,
        dev_oidc::Quirks::default(),
        &[("SESSION_IDLE_TIMEOUT_SECS", "3")],
    )
    .await;
    let c = client();
    let CliStart {
        json: start,
        login_id,
        browser_url,
        verifier,
    } = start_cli_sign_in(&c, &s.gw.url).await;
    assert!(browser_url.starts_with(&s.gw.url), "{start}");
    let poll = |verifier: String| {
        let c = c.clone();
        let url = format!("{}/api/v1/auth/cli/poll", s.gw.url);
        let login_id = login_id.clone();
        async move {
            let r = c
                .post(url)
                .json(&serde_json::json!({ "login_id": login_id, "code_verifier": verifier }))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    assert_eq!(
        poll(verifier.clone()).await.0,
        202,
        "pending before the browser"
    );
    let mut b = Browser::new("deployer@example.com").unwrap_or_else(|e| panic!("{e}"));
    // The link alone signs nobody in: it asks for a confirmation, showing the CLI's code.
    let asked = b
        .visit(&browser_url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(asked.status, 200, "{}", asked.body);
    let code = start["code"].as_str().unwrap_or_default();
    assert_eq!(code.len(), 9, "{start}");
    assert!(
        asked.body.contains(&format!("id=\"code\">{code}<")),
        "{}",
        asked.body
    );
    // And where and when it was asked for: here, from this browser's own address.
    assert!(
        asked
            .body
            .contains("started from <strong>127.0.0.1</strong>")
            && asked
                .body
                .contains("the address this browser comes from too (people on one"),
        "{}",
        asked.body
    );
    assert_eq!(
        poll(verifier.clone()).await.0,
        202,
        "pending until confirmed"
    );
    // The confirmation link followed from elsewhere (no SameSite=Strict cookie) is refused.
    let approve =
        dev_oidc::browser::approve_link(&asked).unwrap_or_else(|| panic!("{}", asked.body));
    let mut other = Browser::new("deployer@example.com").unwrap_or_else(|e| panic!("{e}"));
    let forged = other
        .visit(&approve)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert_eq!(poll(verifier.clone()).await.0, 202, "still pending");
    let page = b.visit(&approve).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("You can close this window"),
        "{}",
        page.body
    );
    assert!(
        !b.cookies.contains_key("rg_session"),
        "the browser gets no session in the CLI flow"
    );
    // Another local process that saw the login id but not the verifier gets nothing.
    let (status, _) = poll(pkce().0).await;
    assert_eq!(status, 400);
    let (status, body) = poll(verifier.clone()).await;
    assert_eq!(status, 200, "{body}");
    let token = body["session_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(token.starts_with("rgs_"));
    assert_eq!(body["role"], "deployer");
    assert_eq!(poll(verifier.clone()).await.0, 410, "handed out once");
    // Both refused collections are in the trail.
    let recorded = crate::kit::eventually(|| async {
        let lines = s.gw.audit_lines();
        let refused = |reason: &str| {
            lines.iter().any(|l| {
                l["action"] == "gateway:auth:signin"
                    && l["details"]["channel"] == "cli"
                    && l["details"]["reason"] == reason
            })
        };
        refused("wrong_verifier") && refused("already_collected")
    })
    .await;
    assert!(recorded, "{:?}", s.gw.audit_lines());

    let resp = c
        .get(s.gw.proxy("/apps"))
        .basic_auth("convox", Some(&token))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    // Sessions API: list own.
    let list: serde_json::Value = c
        .get(format!("{}/api/v1/sessions", s.gw.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(list[0]["channel"], "cli");
    assert_eq!(list[0]["current"], true);
    // Use keeps the session alive past the idle timeout…
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let resp = c
            .get(s.gw.proxy("/apps"))
            .basic_auth("convox", Some(&token))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200, "an active session stays alive");
    }
    // …idleness ends it.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let resp = c
        .get(s.gw.proxy("/apps"))
        .basic_auth("convox", Some(&token))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["code"], "session_expired");
});

both_backends!(logout_and_admin_session_management, |db| async move {
    let (ok, _, _) = admin(
        &db,
        &["users", "add", "admin@example.com", "--role", "admin"],
    );
    assert!(ok);
    let (ok, _, _) = admin(&db, &["users", "add", "ops@example.com", "--role", "ops"]);
    assert!(ok);
    let s = SignIn::start(&db, dev_oidc::Quirks::default(), &[]).await;
    let c = client();
    let mut ops = Browser::new("ops@example.com").unwrap_or_else(|e| panic!("{e}"));
    let _ = ops
        .visit(&format!("{}/api/v1/auth/web/login", s.gw.url))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ops_token = ops.cookies.get("rg_session").cloned().unwrap_or_default();
    let mut adm = Browser::new("admin@example.com").unwrap_or_else(|e| panic!("{e}"));
    let _ = adm
        .visit(&format!("{}/api/v1/auth/web/login", s.gw.url))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let admin_token = adm.cookies.get("rg_session").cloned().unwrap_or_default();

    // Ops may not manage others; admin may.
    let resp = c
        .get(format!(
            "{}/api/v1/sessions?email=admin@example.com",
            s.gw.url
        ))
        .bearer_auth(&ops_token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 403);
    let resp = c
        .get(format!("{}/api/v1/users", s.gw.url))
        .bearer_auth(&ops_token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 403);
    // Their own e-mail in another case is their own.
    let resp = c
        .get(format!(
            "{}/api/v1/sessions?email=OPS@Example.com",
            s.gw.url
        ))
        .bearer_auth(&ops_token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    // Someone else's session and no session look alike to a non-admin: ids cannot be probed.
    let admin_sessions: serde_json::Value = c
        .get(format!("{}/api/v1/sessions", s.gw.url))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let admin_session_id = admin_sessions[0]["id"].as_i64().unwrap_or_default();
    assert!(admin_session_id > 0, "{admin_sessions}");
    for id in [admin_session_id, admin_session_id + 10_000] {
        let resp = c
            .delete(format!("{}/api/v1/sessions/{id}", s.gw.url))
            .bearer_auth(&ops_token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 404, "session {id}");
        // Someone else's session and none at all read the same, so ids cannot be probed.
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_eq!(body["error"], format!("session {id} not found"), "{body}");
        assert_eq!(body["code"], "not_found", "{body}");
    }
    // The trail records the answer given (404), the session asked for and why.
    let refusals = crate::kit::eventually(|| async {
        let rows = store(&db)
            .await
            .audit_rows(0, 10_000)
            .await
            .unwrap_or_default();
        let refused = |id: i64, reason: &str| {
            rows.iter().any(|r| {
                r.event.action == "gateway:sessions:revoke"
                    && r.event.status == Some(404)
                    && r.event.details["session_id"] == id
                    && r.event.details["reason"] == reason
            })
        };
        refused(admin_session_id, "not_your_session")
            && refused(admin_session_id + 10_000, "not_found")
    })
    .await;
    assert!(refusals, "the refused revokes are not recorded as answered");
    // A cookie-authenticated change without the CSRF header is refused.
    let resp = c
        .post(format!(
            "{}/api/v1/sessions/revoke-all?email=ops@example.com",
            s.gw.url
        ))
        .header("cookie", format!("rg_session={admin_token}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["code"], "csrf_rejected", "{body}");
    // Audited as the session's user, whose browser was used.
    let events = store(&db)
        .await
        .audit_rows(0, 10_000)
        .await
        .unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|e| e.event.action == "gateway:api:authenticate"
                && e.event.details["reason"] == "csrf_rejected"
                && e.event.user_email.as_deref() == Some("admin@example.com")),
        "the CSRF refusal is not attributed to the session's user"
    );
    let resp = c
        .post(format!(
            "{}/api/v1/sessions/revoke-all?email=ops@example.com",
            s.gw.url
        ))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let resp = c
        .get(s.gw.proxy("/apps"))
        .basic_auth("convox", Some(&ops_token))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["code"], "session_revoked");

    // Admin JSON user management.
    let resp = c
        .post(format!("{}/api/v1/users", s.gw.url))
        .bearer_auth(&admin_token)
        .header("user-agent", "ops-console/1")
        .json(&serde_json::json!({ "email": "new@example.com", "role": "deployer" }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 201);
    // The change is audited as allowed, with the caller's user agent (as proxied calls are).
    let created = store(&db)
        .await
        .audit_rows(0, 10_000)
        .await
        .unwrap_or_default()
        .into_iter()
        .find(|r| {
            r.event.action == "gateway:users:create"
                && r.event.details["email"] == "new@example.com"
        })
        .unwrap_or_else(|| panic!("no audit event for the new user"));
    assert_eq!(created.event.rbac_decision.as_str(), "allow");
    assert_eq!(created.event.user_agent.as_deref(), Some("ops-console/1"));
    let resp = c
        .put(format!("{}/api/v1/users/new@example.com/role", s.gw.url))
        .bearer_auth(&admin_token)
        .json(&serde_json::json!({ "role": "wizard" }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 400);

    // Logout ends the session.
    let resp = c
        .post(format!("{}/api/v1/auth/logout", s.gw.url))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let resp = c
        .get(format!("{}/api/v1/info", s.gw.url))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 401);

    // Gateway actions made over HTTP carry the caller's address, as proxied calls do.
    let st = store(&db).await;
    let from_here =
        |r: &gateway::store::AuditRow| r.event.client_ip.as_deref() == Some("127.0.0.1");
    assert!(
        crate::kit::audited(&st, |r| r.event.action == "gateway:users:create"
            && r.event.details["email"] == "new@example.com"
            && from_here(r))
        .await,
        "user created over the API without the client address"
    );
    assert!(
        crate::kit::audited(&st, |r| r.event.action == "gateway:sessions:revoke"
            && from_here(r))
        .await,
        "session revocation without the client address"
    );
});

both_backends!(sign_ins_in_progress_are_capped, |db| async move {
    let s = SignIn::start(&db, dev_oidc::Quirks::default(), &[]).await;
    let c = client();
    let start = || {
        let c = c.clone();
        let url = format!("{}/api/v1/auth/cli/start", s.gw.url);
        async move {
            let (_, challenge) = pkce();
            let r = c
                .post(url)
                .json(&serde_json::json!({ "code_challenge": challenge }))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    // Fifty sign-ins from one address may be in progress at once; the next is refused,
    // from the CLI and from the browser alike.
    for n in 0..50 {
        assert_eq!(start().await.0, 200, "sign-in {n}");
    }
    let (status, body) = start().await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "too_many_sign_ins");
    let web = c
        .get(format!("{}/api/v1/auth/web/login", s.gw.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(web.status(), 429);
    // Both refusals are in the trail.
    let refused = signin_events(&db)
        .await
        .into_iter()
        .filter(|e| e.event.details["reason"] == "too_many_sign_ins")
        .count();
    assert_eq!(refused, 2, "the 429s are not audited");

    // The store's rules, with small limits: per address, in total, and only unexpired
    // attempts count.
    let st = store(&db).await;
    let now = gateway::store::now_ms();
    let limits = gateway::store::LoginLimits {
        per_address: 2,
        total: 60,
    };
    let attempt = |id: &'static str, ip: &'static str, expires_at: i64| gateway::store::NewLogin {
        id,
        channel: "cli",
        return_to: None,
        cli_challenge: None,
        cli_login_hash: None,
        expires_at,
        client_ip: ip,
    };
    let create = |login: gateway::store::NewLogin<'static>| {
        let st = st.clone();
        async move {
            st.create_login(&login, limits)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    assert!(create(attempt("x-old", "192.0.2.9", now - 1000)).await);
    assert!(create(attempt("x-1", "192.0.2.9", now + 60_000)).await);
    assert!(
        create(attempt("x-2", "192.0.2.9", now + 60_000)).await,
        "the expired one does not count"
    );
    assert!(!create(attempt("x-3", "192.0.2.9", now + 60_000)).await);
    // 52 attempts are live in total now (50 from 127.0.0.1); the 60th is the last allowed.
    for (i, id) in ["y-1", "y-2", "y-3", "y-4", "y-5", "y-6"]
        .into_iter()
        .enumerate()
    {
        let ip = ["198.51.100.1", "198.51.100.2", "198.51.100.3"][i / 2];
        assert!(create(attempt(id, ip, now + 60_000)).await, "{id}");
    }
    assert!(create(attempt("y-7", "198.51.100.4", now + 60_000)).await);
    assert!(create(attempt("y-8", "198.51.100.4", now + 60_000)).await);
    // At the total, a newcomer gets the place of the oldest pending attempt of the address
    // holding the most (127.0.0.1, with 50): a flood from a few hundred addresses must not
    // keep everyone else from signing in.
    let live = |ip: &'static str| {
        let db_url = db.url.clone();
        async move {
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db_url)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM login_attempts WHERE client_ip = $1 AND expires_at > $2",
            )
            .bind(ip)
            .bind(gateway::store::now_ms())
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    assert_eq!(live("127.0.0.1").await, 50);
    assert!(
        create(attempt("y-9", "198.51.100.5", now + 60_000)).await,
        "a newcomer at the total"
    );
    assert_eq!(
        live("127.0.0.1").await,
        49,
        "the busiest address gave up its oldest"
    );
    // Again for its second; its third is over its own cap, whatever the others hold.
    assert!(create(attempt("y-10", "198.51.100.5", now + 60_000)).await);
    assert!(
        !create(attempt("y-11", "198.51.100.5", now + 60_000)).await,
        "its own cap still holds"
    );
});

/// `email` signed in through the web on `s`: their browser, the account page's CSRF token,
/// and their session's secret and id.
async fn account_page(s: &SignIn, email: &str) -> (Browser, String, String, i64) {
    let login = format!("{}/api/v1/auth/web/login?return_to=/account", s.gw.url);
    let mut browser = Browser::new(email).unwrap_or_else(|e| panic!("{e}"));
    let page = browser
        .visit(&login)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_string();
    assert!(!csrf.is_empty(), "{}", page.body);
    let session = browser
        .cookies
        .get("rg_session")
        .cloned()
        .unwrap_or_default();
    let sessions: serde_json::Value = client()
        .get(format!("{}/api/v1/sessions", s.gw.url))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let id = sessions[0]["id"].as_i64().unwrap_or_default();
    assert!(id > 0, "{sessions}");
    (browser, csrf, session, id)
}

both_backends!(
    refused_session_changes_on_the_account_page_are_audited,
    |db| async move {
        for (email, role) in [("ops@example.com", "ops"), ("admin@example.com", "admin")] {
            let (ok, _, err) = admin(&db, &["users", "add", email, "--role", role]);
            assert!(ok, "{err}");
        }
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &[]).await;
        let (ops, csrf, _, ops_session_id) = account_page(&s, "ops@example.com").await;
        let (_, _, admin_session, admin_session_id) = account_page(&s, "admin@example.com").await;
        let c = client();
        let post = |path: String, csrf: String| {
            let c = c.clone();
            let cookie = ops.cookie_header();
            async move {
                c.post(path)
                    .header("cookie", cookie)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!("csrf={csrf}"))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .status()
                    .as_u16()
            }
        };
        // ops tries to end the admin's session from its own account page.
        let status = post(
            format!("{}/account/sessions/{admin_session_id}/revoke", s.gw.url),
            csrf.clone(),
        )
        .await;
        assert_eq!(status, 404);
        let still = c
            .get(format!("{}/api/v1/info", s.gw.url))
            .bearer_auth(&admin_session)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(still.status(), 200, "the admin's session was ended");
        // A form without the right CSRF token.
        let status = post(
            format!("{}/account/sessions/revoke-all", s.gw.url),
            "forged".into(),
        )
        .await;
        assert_eq!(status, 403);
        let refusals: Vec<_> = store(&db)
            .await
            .audit_rows(0, 10_000)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| {
                r.event.action == "gateway:sessions:revoke"
                    && r.event.rbac_decision.as_str() == "deny"
                    && r.event.user_email.as_deref() == Some("ops@example.com")
            })
            .map(|r| {
                r.event.details["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(
            refusals,
            ["not_your_session", "csrf_rejected"],
            "{refusals:?}"
        );
        // Ending this browser's own session from the list signs it out: the cookie is
        // cleared, not left holding a session that no longer works.
        let no_redirects = crate::kit::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let resp = no_redirects
            .post(format!(
                "{}/account/sessions/{ops_session_id}/revoke",
                s.gw.url
            ))
            .header("cookie", ops.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 303);
        let cleared = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("rg_session=") && v.contains("Max-Age=0"));
        assert!(cleared, "{:?}", resp.headers());
    }
);

both_backends!(
    two_cli_sign_ins_in_one_browser_are_confirmed_apart,
    |db| async move {
        let (ok, _, err) = admin(&db, &["users", "add", "ops@example.com", "--role", "ops"]);
        assert!(ok, "{err}");
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &[]).await;
        let c = client();
        let CliStart {
            json: first,
            verifier,
            ..
        } = start_cli_sign_in(&c, &s.gw.url).await;
        let second = start_cli_sign_in(&c, &s.gw.url).await.json;
        let mut b = Browser::new("ops@example.com").unwrap_or_else(|e| panic!("{e}"));
        let url = |v: &serde_json::Value| v["browser_url"].as_str().unwrap_or_default().to_string();
        let first_page = b
            .visit(&url(&first))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The second page's cookie must not replace the first's.
        let second_page = b
            .visit(&url(&second))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(second_page.status, 200, "{}", second_page.body);
        let approve = dev_oidc::browser::approve_link(&first_page)
            .unwrap_or_else(|| panic!("{}", first_page.body));
        let done = b.visit(&approve).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(done.status, 200, "{}", done.body);
        let poll = c
            .post(format!("{}/api/v1/auth/cli/poll", s.gw.url))
            .json(&serde_json::json!({ "login_id": first["login_id"], "code_verifier": verifier }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(poll.status(), 200);
    }
);

both_backends!(look_alike_e_mails_cannot_pose_as_a_user, |db| async move {
    // The Kelvin sign lower-cases to an ASCII `k` in Unicode: `Kate@…` (U+212A) signed in
    // as kate@example.com, an admin, and the users API changed kate's role through it.
    let (ok, _, err) = admin(
        &db,
        &["users", "add", "kate@example.com", "--role", "admin"],
    );
    assert!(ok, "{err}");
    let kelvin = dev_oidc::DevUser {
        email: "\u{212A}ate@example.com".into(),
        name: "Not Kate".into(),
        email_verified: true,
    };
    let s = SignIn::start_with_users(&db, dev_oidc::Quirks::default(), &[], vec![kelvin]).await;
    let mut browser = Browser::new("%E2%84%AAate@example.com").unwrap_or_else(|e| panic!("{e}"));
    let page = browser
        .visit(&format!("{}/api/v1/auth/web/login", s.gw.url))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("outside ASCII"), "{}", page.body);
    assert!(!browser.cookies.contains_key("rg_session"));

    let admin_token = crate::kit::role_token(&db, "admin");
    let c = client();
    let resp = c
        .post(format!("{}/api/v1/users", s.gw.url))
        .bearer_auth(&admin_token)
        .json(&serde_json::json!({ "email": "\u{212A}ate@example.com", "role": "viewer" }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap_or_default();
    assert!(body.contains("outside ASCII"), "{body}");
    for look_alike in ["ad\u{0430}min@example.com", "admin@example.com."] {
        let (ok, _, err) = admin(&db, &["users", "add", look_alike, "--role", "viewer"]);
        assert!(
            !ok && err.contains("is not an e-mail address"),
            "{look_alike}: {err}"
        );
    }
    let resp = c
        .put(format!(
            "{}/api/v1/users/%E2%84%AAate@example.com/role",
            s.gw.url
        ))
        .bearer_auth(&admin_token)
        .json(&serde_json::json!({ "role": "viewer" }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // No such user (as for lock and unlock): the look-alike is not kate.
    assert_eq!(resp.status(), 404);
    let body = resp.text().await.unwrap_or_default();
    assert!(body.contains("not_found"), "{body}");
    let kate = store(&db)
        .await
        .find_user("kate@example.com")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("kate is gone"));
    assert_eq!(kate.role, "admin");
});

both_backends!(
    sessions_that_could_not_be_ended_are_not_reported_ended,
    |db| async move {
        // "Sign out everywhere" that silently did nothing would leave a stolen session running
        // while its owner believes it ended.
        let (ok, _, err) = admin(&db, &["users", "add", "ops@example.com", "--role", "ops"]);
        assert!(ok, "{err}");
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &[]).await;
        let (ops, csrf, session, id) = account_page(&s, "ops@example.com").await;
        let c = client();
        let post = |path: String| {
            let (c, cookie, csrf) = (c.clone(), ops.cookie_header(), csrf.clone());
            async move {
                let resp = c
                    .post(path)
                    .header("cookie", cookie)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!("csrf={csrf}"))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let clears = resp
                    .headers()
                    .get_all("set-cookie")
                    .iter()
                    .any(|v| v.to_str().unwrap_or_default().contains("Max-Age=0"));
                let status = resp.status().as_u16();
                (status, clears, resp.text().await.unwrap_or_default())
            }
        };
        let alive = || {
            let (c, url, session) = (
                c.clone(),
                format!("{}/api/v1/info", s.gw.url),
                session.clone(),
            );
            async move {
                c.get(url)
                    .bearer_auth(session)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        };

        // Any write of `sessions.revoked_at` fails, as a failing database's would, while
        // everything else keeps working.
        let refusal = crate::kit::refuse_writes(
            &db,
            "test_refuse_revoke",
            "UPDATE OF revoked_at",
            "sessions",
            "1 = 1",
        )
        .await;
        let (status, clears, body) =
            post(format!("{}/account/sessions/revoke-all", s.gw.url)).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("Your sessions were not ended"), "{body}");
        assert!(!clears, "the cookie was cleared as if signed out");
        let (status, _, body) = post(format!("{}/account/sessions/{id}/revoke", s.gw.url)).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("The session was not ended"), "{body}");
        // Signing out: this browser forgets the cookie, and is told the session lives on.
        let (status, clears, body) = post(format!("{}/api/v1/auth/web/logout", s.gw.url)).await;
        assert_eq!(status, 503, "{body}");
        assert!(clears, "the browser kept its cookie");
        assert!(body.contains("could not be ended"), "{body}");
        assert_eq!(
            alive().await,
            200,
            "the page told the truth: the session is alive"
        );
        // The JSON API says the same, with its code.
        for resp in [
            c.delete(format!("{}/api/v1/sessions/{id}", s.gw.url))
                .bearer_auth(&session)
                .send()
                .await,
            c.post(format!("{}/api/v1/sessions/revoke-all", s.gw.url))
                .bearer_auth(&session)
                .send()
                .await,
            c.post(format!("{}/api/v1/auth/logout", s.gw.url))
                .bearer_auth(&session)
                .send()
                .await,
        ] {
            let resp = resp.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status(), 503);
            let body = resp.text().await.unwrap_or_default();
            assert!(body.contains("store_unavailable"), "{body}");
            assert!(
                !body.contains("refused by the test"),
                "store detail leaked: {body}"
            );
        }
        let failed = store(&db)
            .await
            .audit_rows(0, 10_000)
            .await
            .unwrap_or_default()
            .into_iter()
            .any(|r| {
                r.event.action == "gateway:auth:signout"
                    && r.event.rbac_decision.as_str() == "deny"
                    && r.event.details["reason"] == "store_unavailable"
            });
        assert!(failed, "the failed sign-out is not in the trail");

        refusal.lift().await;
        // (The client follows the redirect to the sign-in page.)
        let (status, _, body) = post(format!("{}/account/sessions/revoke-all", s.gw.url)).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("Sign in"), "{body}");
        assert_eq!(alive().await, 401, "revoke-all left the session alive");
    }
);

both_backends!(
    a_sign_in_the_trail_cannot_record_hands_out_no_session,
    |db| async move {
        // Like a proxied request, a sign-in is not completed without its audit event.
        let (ok, _, err) = admin(&db, &["users", "add", "ops@example.com", "--role", "ops"]);
        assert!(ok, "{err}");
        let s = SignIn::start(
            &db,
            dev_oidc::Quirks::default(),
            &[("MAX_SESSIONS_PER_USER", "1")],
        )
        .await;
        let login = format!("{}/api/v1/auth/web/login?return_to=/account", s.gw.url);
        // A session signed in before: at the cap, a new sign-in would end it.
        let mut before = Browser::new("ops@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = before.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 200, "{}", page.body);
        let earlier = before
            .cookies
            .get("rg_session")
            .cloned()
            .unwrap_or_default();
        let refusal = crate::kit::refuse_audit_events(
            &db,
            "NEW.action = 'gateway:auth:signin' AND NEW.rbac_decision = 'allow'",
        )
        .await;
        let mut ops = Browser::new("ops@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = ops.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 503, "{}", page.body);
        assert!(page.body.contains("not signed in"), "{}", page.body);
        assert!(
            !ops.cookies.contains_key("rg_session"),
            "a session was handed out"
        );
        let st = store(&db).await;
        let user = st
            .find_user("ops@example.com")
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no user"));
        let open = st
            .user_sessions(user.id, 0)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            open.iter().map(|s| s.id).collect::<Vec<_>>(),
            [1],
            "the unrecorded session is still usable, or the earlier one was ended"
        );
        // Nothing the trail does not show: the earlier session still works.
        let resp = client()
            .get(s.gw.proxy("/apps"))
            .basic_auth("convox", Some(&earlier))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status(), 200, "an unrecorded sign-in ended a session");

        refusal.lift().await;
        let mut ops = Browser::new("ops@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = ops.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(ops.cookies.contains_key("rg_session"));
    }
);

/// Signs in as admin@example.com at `login`, and checks that this creates the admin and
/// records its creation.
async fn signs_in_as_a_recorded_admin(st: &gateway::store::Store, login: &str) {
    let mut again = Browser::new("admin@example.com").unwrap_or_else(|e| panic!("{e}"));
    let page = again.visit(login).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status, 200, "{}", page.body);
    let created = crate::kit::audited(st, |r| {
        r.event.action == "gateway:users:create" && r.event.details["email"] == "admin@example.com"
    })
    .await;
    assert!(created, "the admin's creation is not in the trail");
}

both_backends!(
    a_first_admin_the_trail_cannot_record_is_not_created,
    |db| async move {
        // The first admin is created by signing in; an account whose creation the trail does
        // not show must not be left behind (the next sign-in would find it and never audit it).
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &[]).await;
        let refusal =
            crate::kit::refuse_audit_events(&db, "NEW.action = 'gateway:users:create'").await;
        let login = format!("{}/api/v1/auth/web/login?return_to=/account", s.gw.url);
        let mut first = Browser::new("admin@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = first.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 503, "{}", page.body);
        let st = store(&db).await;
        let found = st.find_user("admin@example.com").await;
        assert!(
            matches!(found, Ok(None)),
            "the unaudited admin stays: {found:?}"
        );

        refusal.lift().await;
        signs_in_as_a_recorded_admin(&st, &login).await;
    }
);

both_backends!(
    a_first_admin_whose_browser_went_away_is_not_left_unrecorded,
    |db: Db| async move {
        // Creating the first admin and recording it are one step: a browser that gives up
        // between the two (its request, and so the handler, dropped) must not leave an
        // account the trail does not show. Only PostgreSQL can hold back the event and not
        // the creation (SQLite has one write lock for the whole file).
        use sqlx::Executor;
        if db.backend != crate::kit::Backend::Postgres {
            return;
        }
        let s = SignIn::start(&db, dev_oidc::Quirks::default(), &[]).await;
        // The event will be refused, once it gets past the chain head held here meanwhile.
        let refusal =
            crate::kit::refuse_audit_events(&db, "NEW.action = 'gateway:users:create'").await;
        let mut holder = crate::kit::pg_holding(
            &db,
            "BEGIN; SELECT seq FROM audit_chain_head WHERE id = 1 FOR UPDATE",
        )
        .await;
        let login = format!("{}/api/v1/auth/web/login?return_to=/account", s.gw.url);
        let mut first = Browser::new("admin@example.com").unwrap_or_else(|e| panic!("{e}"));
        let st = store(&db).await;
        // Boxed, so that dropping it below ends the request (a pinned local would live on).
        let mut visit = Box::pin(first.visit(&login));
        // The browser waits until the admin is created (its event is held back), then goes
        // away: the visit, and with it the connection, is dropped.
        let created = tokio::select! {
            page = &mut visit => panic!("the sign-in was not held back: {page:?}"),
            created = crate::kit::eventually(|| {
                let st = st.clone();
                async move { matches!(st.find_user("admin@example.com").await, Ok(Some(_))) }
            }) => created,
        };
        assert!(
            created,
            "the sign-in did not get as far as creating the admin"
        );
        drop(visit);
        // Let the creation's event through to its refusal (within the writer's 3 s lock wait).
        holder
            .execute("ROLLBACK")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let withdrawn = crate::kit::eventually(|| {
            let st = st.clone();
            async move { matches!(st.find_user("admin@example.com").await, Ok(None)) }
        })
        .await;
        assert!(
            withdrawn,
            "an admin whose creation the trail refused stays: {:?}",
            st.find_user("admin@example.com").await
        );

        refusal.lift().await;
        signs_in_as_a_recorded_admin(&st, &login).await;
    }
);

both_backends!(
    sign_ins_in_progress_count_an_ipv6_host_by_its_64,
    |db| async move {
        // One host usually has a whole /64: counted address by address, it could hold every
        // sign-in place there is.
        let s = SignIn::start(
            &db,
            dev_oidc::Quirks::default(),
            &[("TRUSTED_PROXIES", "127.0.0.0/8")],
        )
        .await;
        let c = client();
        let start = |from: String| {
            let c = c.clone();
            let url = format!("{}/api/v1/auth/cli/start", s.gw.url);
            async move {
                let (_, challenge) = pkce();
                c.post(url)
                    .header("x-forwarded-for", from)
                    .json(&serde_json::json!({ "code_challenge": challenge }))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .status()
                    .as_u16()
            }
        };
        for n in 0..50 {
            assert_eq!(
                start(format!("2001:db8:1:2::{n:x}")).await,
                200,
                "sign-in {n}"
            );
        }
        assert_eq!(start("2001:db8:1:2:ffff::1".into()).await, 429, "same /64");
        assert_eq!(start("2001:db8:1:3::1".into()).await, 200, "another /64");
    }
);

both_backends!(
    an_issuer_configured_with_a_final_slash_still_signs_in,
    |db| async move {
        // Discovery compares the issuer exactly; earlier versions dropped a final `/`, so
        // deployments configured with one keep working, told which form to set.
        let (ok, _, err) = admin(&db, &["users", "add", "ops@example.com", "--role", "ops"]);
        assert!(ok, "{err}");
        let s = SignIn::start(
            &db,
            dev_oidc::Quirks::default(),
            &[("OIDC_ISSUER", "{issuer}/")],
        )
        .await;
        let login = format!("{}/api/v1/auth/web/login?return_to=/account", s.gw.url);
        let mut ops = Browser::new("ops@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = ops.visit(&login).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(ops.cookies.contains_key("rg_session"));
        assert!(
            s.gw.all_output()
                .contains("differs from the provider's issuer by a final /"),
            "no warning"
        );
    }
);

both_backends!(
    a_cli_sign_in_whose_browser_went_away_during_the_exchange_is_finished,
    |db| async move {
        // The browser confirmed; the provider is slow to exchange the code and the browser
        // gives up meanwhile. The attempt is already consumed: the sign-in must still finish,
        // or the CLI would wait until it expires.
        let (ok, _, err) = admin(&db, &["users", "add", "ops@example.com", "--role", "ops"]);
        assert!(ok, "{err}");
        let quirks = dev_oidc::Quirks {
            token_delay_ms: 2000,
            ..Default::default()
        };
        let s = SignIn::start(&db, quirks, &[]).await;
        let c = client();
        let CliStart {
            login_id,
            browser_url,
            verifier,
            ..
        } = start_cli_sign_in(&c, &s.gw.url).await;
        let mut b = Browser::new("ops@example.com").unwrap_or_else(|e| panic!("{e}"));
        let asked = b
            .visit(&browser_url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let approve =
            dev_oidc::browser::approve_link(&asked).unwrap_or_else(|| panic!("{}", asked.body));
        let st = store(&db).await;
        let cli_hash = gateway::identity::hash_token(&login_id);
        {
            // Boxed, so that dropping it below ends the request.
            let mut visit = Box::pin(b.visit(&approve));
            let exchanging = tokio::select! {
                page = &mut visit => panic!("the exchange was not slow: {page:?}"),
                seen = crate::kit::eventually(|| {
                    let (st, cli_hash) = (st.clone(), cli_hash.clone());
                    async move {
                        matches!(
                            st.login_by_cli_hash(&cli_hash).await,
                            Ok(Some(row)) if row.status == "exchanging"
                        )
                    }
                }) => seen,
            };
            assert!(exchanging, "the sign-in never reached the code exchange");
        }
        // The browser is gone; the CLI, polling, gets its session once the provider answers.
        let collected = crate::kit::eventually(|| {
            let c = c.clone();
            let url = format!("{}/api/v1/auth/cli/poll", s.gw.url);
            let body = serde_json::json!({ "login_id": login_id, "code_verifier": verifier });
            async move {
                let r = c.post(url).json(&body).send().await;
                r.is_ok_and(|r| r.status() == 200)
            }
        })
        .await;
        assert!(collected, "the CLI was left waiting");
        let recorded = crate::kit::audited(&st, |r| {
            r.event.action == "gateway:auth:signin"
                && r.event.details["channel"] == "cli"
                && r.event.details["stage"] == "browser"
        })
        .await;
        assert!(recorded, "the browser stage is recorded");
    }
);

both_backends!(
    a_provider_that_answers_too_much_is_cut_off_and_retries_stay_allowed,
    |db| async move {
        // A hostile (or broken) provider's discovery document of over 2 MiB: read no further
        // than 1 MiB, and refused. Each refused start is recorded and no longer counts as a
        // sign-in in progress: more retries than the 50 in progress an address may have all
        // get the provider's error, never "too many sign-ins".
        let quirks = dev_oidc::Quirks {
            huge_discovery: true,
            ..Default::default()
        };
        let s = SignIn::start(&db, quirks, &[]).await;
        let http = crate::kit::client();
        for attempt in 0..55 {
            let resp = http
                .get(format!("{}/api/v1/auth/web/login", s.gw.url))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(resp.status(), 502, "attempt {attempt}");
        }
        assert!(
            s.gw.all_output().contains("larger than 1024 KiB"),
            "{}",
            s.gw.all_output()
        );
        let refused = crate::kit::eventually(|| async {
            s.gw.audit_lines().iter().any(|l| {
                l["action"] == "gateway:auth:signin"
                    && l["details"]["reason"] == "provider_unavailable"
            })
        })
        .await;
        assert!(refused, "the provider's outage is not in the trail");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_sending_the_code_exchange_over_plain_http_is_refused() {
    // An https issuer whose metadata sends the code exchange (with the client secret) over
    // plain http to another host would undo what https on the issuer protects.
    let Some(db) = crate::kit::database(crate::kit::Backend::Sqlite).await else {
        return;
    };
    let quirks = dev_oidc::Quirks {
        plain_token_endpoint: true,
        ..Default::default()
    };
    let s = SignIn::start(&db, quirks, &[]).await;
    let resp = crate::kit::client()
        .get(format!("{}/api/v1/auth/web/login", s.gw.url))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 502);
    let logged = crate::kit::eventually(|| async {
        s.gw.all_output()
            .contains("token_endpoint is not https (http://token.example.invalid/token)")
    })
    .await;
    assert!(logged, "{}", s.gw.all_output());
}

both_backends!(
    a_rotated_client_secret_is_the_operators_to_know,
    |db| async move {
        // The provider refuses the gateway's own client credentials (`invalid_client`): every
        // sign-in fails, so the log says it is the gateway's configuration, not the person.
        let (ok, _, err) = admin(&db, &["users", "add", "ops@example.com", "--role", "ops"]);
        assert!(ok, "{err}");
        let s = SignIn::start(
            &db,
            dev_oidc::Quirks::default(),
            &[("OIDC_CLIENT_SECRET", "an-old-client-secret")],
        )
        .await;
        let mut browser = Browser::new("ops@example.com").unwrap_or_else(|e| panic!("{e}"));
        let page = browser
            .visit(&format!("{}/api/v1/auth/web/login", s.gw.url))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status, 403, "{}", page.body);
        let said = crate::kit::eventually(|| async {
            s.gw.all_output()
                .contains("refused the gateway's client credentials")
        })
        .await;
        let output = s.gw.all_output();
        assert!(said, "{output}");
        assert!(!output.contains("an-old-client-secret"), "{output}");
    }
);

both_backends!(
    a_place_made_for_a_newcomer_at_the_cap_is_not_taken_by_the_flood,
    |db| async move {
        // The room a newcomer makes at the total cap (ending the busiest address's oldest
        // attempt) went, as often as not, to a flooding address's next attempt racing it.
        let (ok, _, err) = admin(&db, &["migrate"]);
        assert!(ok, "{err}");
        let st = store(&db).await;
        let now = gateway::store::now_ms();
        let limits = gateway::store::LoginLimits {
            per_address: 3,
            total: 30,
        };
        let create = |id: String, ip: String| {
            let st = st.clone();
            async move {
                let login = gateway::store::NewLogin {
                    id: &id,
                    channel: "cli",
                    return_to: None,
                    cli_challenge: None,
                    cli_login_hash: None,
                    expires_at: now + 60_000,
                    client_ip: &ip,
                };
                st.create_login(&login, limits)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        for flood in 0..10 {
            for n in 0..3 {
                assert!(create(format!("f-{flood}-{n}"), format!("203.0.113.{flood}")).await);
            }
        }
        let mut tasks = Vec::new();
        // Newcomers side by side (each must make room), and the flood trying again.
        for n in 0..20 {
            tasks.push((
                true,
                tokio::spawn(create(format!("new-{n}"), format!("198.51.100.{}", 10 + n))),
            ));
            tasks.push((
                false,
                tokio::spawn(create(format!("g-{n}"), format!("203.0.113.{}", n % 10))),
            ));
        }
        let mut newcomers = Vec::new();
        for (newcomer, task) in tasks {
            let created = task.await.unwrap_or_else(|e| panic!("{e}"));
            if newcomer {
                newcomers.push(created);
            }
        }
        assert!(
            newcomers.len() == 20 && newcomers.iter().all(|created| *created),
            "a newcomer was refused at the cap: {newcomers:?}"
        );
    }
);

both_backends!(
    sessions_beyond_the_per_user_cap_end_least_recently_used_first,
    |db| async move {
        let (ok, _, err) = admin(&db, &["users", "add", "ops@example.com", "--role", "ops"]);
        assert!(ok, "{err}");
        let s = SignIn::start(
            &db,
            dev_oidc::Quirks::default(),
            // Use is recorded every quarter of the idle timeout: every second here.
            &[
                ("MAX_SESSIONS_PER_USER", "2"),
                ("SESSION_IDLE_TIMEOUT_SECS", "4"),
            ],
        )
        .await;
        let sign_in = || async {
            let mut b = Browser::new("ops@example.com").unwrap_or_else(|e| panic!("{e}"));
            let page = b
                .visit(&format!("{}/api/v1/auth/web/login", s.gw.url))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(page.status, 200, "{}", page.body);
            b.cookies.get("rg_session").cloned().unwrap_or_default()
        };
        let status = |token: String| {
            let url = s.gw.proxy("/apps");
            async move {
                client()
                    .get(url)
                    .basic_auth("convox", Some(&token))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or_else(|e| panic!("{e}"))
            }
        };
        let first = sign_in().await;
        let second = sign_in().await;
        // The first is used after the second was made: the second is now the least recent.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let _ = client()
            .get(format!("{}/api/v1/info", s.gw.url))
            .bearer_auth(&first)
            .send()
            .await;
        let third = sign_in().await;
        assert_eq!(status(first.clone()).await, 200, "recently used: kept");
        assert_eq!(status(third.clone()).await, 200);
        assert_eq!(
            status(second.clone()).await,
            401,
            "least recently used: ended"
        );
        let list: serde_json::Value = client()
            .get(format!("{}/api/v1/sessions", s.gw.url))
            .bearer_auth(&third)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default();
        assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
        // A session that idled out is no longer listed as open (it would be refused).
        let list = |token: String| {
            let url = format!("{}/api/v1/sessions", s.gw.url);
            async move {
                client()
                    .get(url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .json::<serde_json::Value>()
                    .await
                    .unwrap_or_default()
            }
        };
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert_eq!(list(third.clone()).await.as_array().map(Vec::len), Some(2));
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let open = list(third.clone()).await;
        assert_eq!(open.as_array().map(Vec::len), Some(1), "{open}");
        assert_eq!(open[0]["current"], true, "{open}");
        assert_eq!(status(first.clone()).await, 401, "idled out");
        // The sign-in that ended it says so in its own event.
        let events = signin_events(&db).await;
        let ended: Vec<_> = events
            .iter()
            .filter(|r| {
                r.event.rbac_decision == gateway::audit::Decision::Allow
                    && r.event.details.get("evicted").is_some()
            })
            .collect();
        assert_eq!(ended.len(), 1, "{events:?}");
        let second_id = events
            .iter()
            .filter(|r| r.event.rbac_decision == gateway::audit::Decision::Allow)
            .nth(1)
            .and_then(|r| r.event.details["session_id"].as_i64());
        assert_eq!(
            ended[0].event.details["evicted"],
            serde_json::json!([{ "session_id": second_id }]),
            "{events:?}"
        );
    }
);

both_backends!(
    concurrent_sign_ins_stay_within_the_session_cap_and_name_every_session_they_end,
    |db| async move {
        let (ok, _, err) = admin(&db, &["users", "add", "ops@example.com", "--role", "ops"]);
        assert!(ok, "{err}");
        let s = SignIn::start(
            &db,
            dev_oidc::Quirks::default(),
            &[("MAX_SESSIONS_PER_USER", "2")],
        )
        .await;
        let login = format!("{}/api/v1/auth/web/login", s.gw.url);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let login = login.clone();
                tokio::spawn(async move {
                    let mut b = Browser::new("ops@example.com").unwrap_or_else(|e| panic!("{e}"));
                    b.visit(&login).await.map(|p| p.status).unwrap_or_default()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap_or_default(), 200);
        }
        let st = store(&db).await;
        let user = crate::credentials::existing_user(&st, "ops@example.com").await;
        let open = st
            .user_sessions(user.id, 0)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(open.len(), 2, "{open:?}");
        // Every session ended is named by an event: a sign-in's, or one of its own (sign-ins
        // at the same moment may each name the same one).
        let named = crate::kit::eventually(|| async {
            let rows = st.audit_rows(0, 10_000).await.unwrap_or_default();
            let mut named: Vec<i64> = rows
                .iter()
                .filter_map(|r| r.event.details["evicted"].as_array())
                .flatten()
                .filter_map(|e| e["session_id"].as_i64())
                .collect();
            named.sort_unstable();
            named.dedup();
            named
                == (1..=20)
                    .filter(|id| !open.iter().any(|s| s.id == *id))
                    .collect::<Vec<_>>()
        })
        .await;
        let all = st.audit_rows(0, 10_000).await.unwrap_or_default();
        assert!(named, "{open:?} {all:?}");
        // Ending them took the user's row first: no deadlock left sessions for later.
        let out = s.gw.all_output();
        assert!(!out.contains("could not end sessions"), "{out}");
    }
);
