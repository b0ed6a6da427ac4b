//! A security key in software, for tests: it speaks WebAuthn as a real key does (ES256, "none"
//! attestation) to the gateway's pages, so a test can add one, answer with it, and forge the
//! answers a real key never gives (another site's, a clone's, someone else's).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::browser::Page;

/// A security key in software: one ES256 credential, its signature counter, and the origin
/// its browser reports.
pub struct SoftKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    /// The credential's id.
    pub id: Vec<u8>,
    /// Its signature counter (a clone's lags).
    pub counter: u32,
    /// The origin its browser reports.
    pub origin: String,
    /// The relying party it signs for.
    pub rp_id: String,
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
    pub fn new(origin: &str) -> SoftKey {
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
    pub fn copy_at(&self, origin: &str) -> SoftKey {
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
    pub fn register(&mut self, options: &Value) -> String {
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
    pub fn assert(&mut self, options: &Value) -> String {
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
pub fn key_form(page: &Page) -> (String, Value) {
    let options = unescape(&between(&page.body, "data-options=\"", "\""));
    let options = serde_json::from_str(&options)
        .unwrap_or_else(|e| panic!("options {options:?}: {e}\n{}", page.body));
    let ceremony = between(&page.body, "name=\"ceremony\" value=\"", "\"");
    assert!(!ceremony.is_empty(), "{}", page.body);
    (ceremony, options)
}

fn between(text: &str, start: &str, end: &str) -> String {
    text.split(start)
        .nth(1)
        .and_then(|rest| rest.split(end).next())
        .unwrap_or_default()
        .to_string()
}
