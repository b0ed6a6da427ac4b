//! The rack in the browser (`/rack`, `/apps/{app}`): what each role may read, read through the
//! proxy with the person's own session — the same checks, the same trail, the same masking —
//! and never a 500, whatever the rack does.

use crate::approvals::fake_rack;
use crate::both_backends;
use crate::kit::{admin, audited, client, store};
use crate::mfa::{go, web_sign_in_as};
use crate::signin::SignIn;

/// The fake rack's name.
const RACK_NAME: &str = "mock";
/// A value of app web's environment in the fake rack.
const DB_SECRET: &str = "s3cr3t-web-db-pass";

both_backends!(
    the_rack_and_its_apps_are_shown_as_each_role_allows,
    |db| async move {
        let (rack_url, stop) = fake_rack().await;
        for (email, role) in [("viewer@example.com", "viewer"), ("ops@example.com", "ops")] {
            let (ok, _, err) = admin(&db, &["users", "add", email, "--role", role]);
            assert!(ok, "{err}");
        }
        let s = SignIn::start_on_rack(&db, &[], &rack_url).await;
        let gw = &s.gw.url;

        // Not signed in: the sign-in page, and the rack is not asked.
        let page = client()
            .get(format!("{gw}/rack"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let body = page.text().await.unwrap_or_default();
        assert!(body.contains("Sign in"), "{body}");
        assert!(!body.contains("id=\"apps\""), "{body}");

        // A viewer: the rack's status and its apps, linked; the home page once signed in.
        let (mut viewer, _) = web_sign_in_as(&s, "viewer@example.com").await;
        let rack = go(&mut viewer, &format!("{gw}/")).await;
        assert_eq!(rack.status, 200, "{}", rack.body);
        assert!(rack.body.contains("id=\"system\""), "{}", rack.body);
        assert!(rack.body.contains(RACK_NAME), "{}", rack.body);
        assert!(rack.body.contains("href=\"/apps/web\""), "{}", rack.body);
        assert!(rack.body.contains("id=\"instances\""), "{}", rack.body);
        // Linked to what the viewer may use, and not to what it may not.
        assert!(rack.body.contains("id=\"deploys-link\""), "{}", rack.body);
        assert!(!rack.body.contains("id=\"users-link\""), "{}", rack.body);
        // An app: its processes and builds; its releases need a permission viewers lack, and
        // are not even asked for.
        let app = go(&mut viewer, &format!("{gw}/apps/web")).await;
        assert_eq!(app.status, 200, "{}", app.body);
        for table in [
            "id=\"summary\"",
            "id=\"services\"",
            "id=\"processes\"",
            "id=\"builds\"",
        ] {
            assert!(app.body.contains(table), "{table}: {}", app.body);
        }
        assert!(!app.body.contains("id=\"releases\""), "{}", app.body);
        assert!(
            app.body
                .contains("your role does not grant convox:releases:list"),
            "{}",
            app.body
        );
        // What the rack was asked, on the trail as the viewer's own reads; no refusal for
        // looking at a page.
        let st = store(&db).await;
        for action in ["convox:rack:read", "convox:apps:list", "convox:builds:list"] {
            assert!(
                audited(&st, |r| r.event.action == action
                    && r.event.kind.as_str() == "request"
                    && r.event.user_email.as_deref() == Some("viewer@example.com"))
                .await,
                "{action}"
            );
        }
        let rows = st.audit_rows(0, 10_000).await.unwrap_or_default();
        assert!(
            !rows.iter().any(|r| r.event.action == "convox:releases:list"
                && r.event.user_email.as_deref() == Some("viewer@example.com")),
            "a viewer's page asked for releases"
        );

        // ops may list releases: shown, and never with their environment.
        let (mut ops, _) = web_sign_in_as(&s, "ops@example.com").await;
        let app = go(&mut ops, &format!("{gw}/apps/web")).await;
        assert!(app.body.contains("id=\"releases\""), "{}", app.body);
        assert!(!app.body.contains(DB_SECRET), "an env value on the page");

        // No such app, or not an app's name: a 404 page.
        for path in ["/apps/nosuchapp", "/apps/Not%20An%20App"] {
            let page = go(&mut ops, &format!("{gw}{path}")).await;
            assert_eq!(page.status, 404, "{path}: {}", page.body);
            assert!(page.body.contains("No such app"), "{}", page.body);
        }
        // A name that is not even UTF-8: the gateway's own 400 page (axum's plain text would
        // quote it back, without the pages' headers).
        let page = go(&mut ops, &format!("{gw}/apps/%FF")).await;
        assert_eq!(page.status, 400, "{}", page.body);
        assert!(
            page.body.contains("This link or form is not valid"),
            "{}",
            page.body
        );

        // The rack gone: the page says what could not be read, and is no error of its own.
        let _ = stop.send(());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let rack = go(&mut ops, &format!("{gw}/rack")).await;
        assert_eq!(rack.status, 200, "{}", rack.body);
        assert!(
            rack.body.contains("id=\"apps-not-shown\"")
                && rack.body.contains("Could not be read: 502"),
            "{}",
            rack.body
        );
    }
);
