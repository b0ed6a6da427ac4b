//! Security keys (WebAuthn) over HTTP against the real gateway, with a software authenticator
//! that speaks the protocol as a security key does (ES256, "none" attestation): forged,
//! replayed, foreign and cloned answers are refused and audited; a right one signs in.
//! Chromium with a virtual authenticator drives the pages themselves (`browser.rs`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use dev_oidc::browser::{Browser, Page};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::both_backends;
use crate::kit::store;
use crate::mfa::{
    KEY, add_who, asks_for_a_code, between, csrf, events, go, remove_app, set_up, submit,
    web_sign_in, who_id,
};
use crate::signin::SignIn;

/// A security key in software: one ES256 credential, its signature counter, and the origin
/// its browser reports.
struct SoftKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    id: Vec<u8>,
    counter: u32,
    origin: String,
    rp_id: String,
}

/// Minimal CBOR, enough for an attestation object and a COSE key.
enum Cbor {
    Int(i64),
    Bytes(Vec<u8>),
    Text(&'static str),
    Map(Vec<(Cbor, Cbor)>),
}

impl Cbor {
    fn head(out: &mut Vec<u8>, major: u8, n: u64) {
        let m = major << 5;
        match n {
            0..=23 => out.push(m | u8::try_from(n).unwrap_or(0)),
            24..=0xff => out.extend([m | 24, u8::try_from(n).unwrap_or(0)]),
            _ => {
                out.push(m | 25);
                out.extend(u16::try_from(n).unwrap_or(0).to_be_bytes());
            }
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Cbor::Int(n) if *n >= 0 => Cbor::head(out, 0, n.unsigned_abs()),
            Cbor::Int(n) => Cbor::head(out, 1, n.unsigned_abs() - 1),
            Cbor::Bytes(b) => {
                Cbor::head(out, 2, b.len() as u64);
                out.extend(b);
            }
            Cbor::Text(t) => {
                Cbor::head(out, 3, t.len() as u64);
                out.extend(t.as_bytes());
            }
            Cbor::Map(entries) => {
                Cbor::head(out, 5, entries.len() as u64);
                for (k, v) in entries {
                    k.encode(out);
                    v.encode(out);
                }
            }
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

impl SoftKey {
    fn new(origin: &str) -> SoftKey {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .unwrap_or_else(|e| panic!("{e}"))
                .as_ref()
                .to_vec();
        let id: Vec<u8> = Sha256::digest(&pkcs8).to_vec();
        SoftKey::from_parts(pkcs8, id, 0, origin)
    }

    fn from_parts(pkcs8: Vec<u8>, id: Vec<u8>, counter: u32, origin: &str) -> SoftKey {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let rp_id = url::Url::parse(origin)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        SoftKey {
            pair,
            pkcs8,
            id,
            counter,
            origin: origin.to_string(),
            rp_id,
        }
    }

    /// The same key (private key, id, counter) in a browser at `origin`.
    fn copy_at(&self, origin: &str) -> SoftKey {
        SoftKey::from_parts(self.pkcs8.clone(), self.id.clone(), self.counter, origin)
    }

    fn client_data(&self, kind: &str, options: &Value) -> Vec<u8> {
        let challenge = options["publicKey"]["challenge"]
            .as_str()
            .unwrap_or_default();
        json!({ "type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": false })
            .to_string()
            .into_bytes()
    }

    /// The authenticator data: the relying party's hash, flags (user present and verified,
    /// plus `extra`), the counter, then `rest`.
    fn auth_data(&self, extra_flags: u8, rest: &[u8]) -> Vec<u8> {
        let mut data = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        data.push(0x01 | 0x04 | extra_flags);
        data.extend(self.counter.to_be_bytes());
        data.extend(rest);
        data
    }

    /// The browser's answer to `navigator.credentials.create` with `options`.
    fn register(&mut self, options: &Value) -> String {
        let point = self.pair.public_key().as_ref();
        let cose = Cbor::Map(vec![
            (Cbor::Int(1), Cbor::Int(2)),
            (Cbor::Int(3), Cbor::Int(-7)),
            (Cbor::Int(-1), Cbor::Int(1)),
            (Cbor::Int(-2), Cbor::Bytes(point[1..33].to_vec())),
            (Cbor::Int(-3), Cbor::Bytes(point[33..65].to_vec())),
        ]);
        let mut attested = vec![0u8; 16];
        attested.extend(u16::try_from(self.id.len()).unwrap_or(0).to_be_bytes());
        attested.extend(&self.id);
        attested.extend(cose.bytes());
        let auth_data = self.auth_data(0x40, &attested);
        let object = Cbor::Map(vec![
            (Cbor::Text("fmt"), Cbor::Text("none")),
            (Cbor::Text("attStmt"), Cbor::Map(vec![])),
            (Cbor::Text("authData"), Cbor::Bytes(auth_data)),
        ]);
        let client_data = self.client_data("webauthn.create", options);
        json!({
            "id": B64.encode(&self.id), "rawId": B64.encode(&self.id), "type": "public-key",
            "extensions": {},
            "response": {
                "attestationObject": B64.encode(object.bytes()),
                "clientDataJSON": B64.encode(client_data),
            },
        })
        .to_string()
    }

    /// The browser's answer to `navigator.credentials.get` with `options` (the counter moves
    /// on first).
    fn assert(&mut self, options: &Value) -> String {
        self.counter += 1;
        let auth_data = self.auth_data(0, &[]);
        let client_data = self.client_data("webauthn.get", options);
        let mut signed = auth_data.clone();
        signed.extend(Sha256::digest(&client_data));
        let signature = self
            .pair
            .sign(&SystemRandom::new(), &signed)
            .unwrap_or_else(|e| panic!("{e}"));
        json!({
            "id": B64.encode(&self.id), "rawId": B64.encode(&self.id), "type": "public-key",
            "extensions": {},
            "response": {
                "authenticatorData": B64.encode(auth_data),
                "clientDataJSON": B64.encode(client_data),
                "signature": B64.encode(signature.as_ref()),
                "userHandle": null,
            },
        })
        .to_string()
    }
}

/// An HTML attribute's text as the browser reads it.
fn unescape(attr: &str) -> String {
    attr.replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#x22;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The security-key form on `page`: its ceremony and the options for the browser.
fn key_form(page: &Page) -> (String, Value) {
    let options = unescape(&between(&page.body, "data-options=\"", "\""));
    let options = serde_json::from_str(&options)
        .unwrap_or_else(|e| panic!("options {options:?}: {e}\n{}", page.body));
    let ceremony = between(&page.body, "name=\"ceremony\" value=\"", "\"");
    assert!(!ceremony.is_empty(), "{}", page.body);
    (ceremony, options)
}

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
        assert_eq!(events(&db, "gateway:mfa:add_key").await.len(), 3);

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
