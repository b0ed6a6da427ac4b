//! Security keys and passkeys (WebAuthn): a YubiKey, Touch ID, Windows Hello or a phone's
//! passkey, added beside a person's authenticator app. A tap (with the key's PIN or a
//! fingerprint: user verification is required) then stands in for the app's code at sign-in
//! and to confirm it's them (the step-up page). The app stays: the CLI, the "right now" tier
//! and changes to the second factor itself ask for its code, and removing the app removes the
//! keys.
//!
//! Every use is a ceremony: a page asks the gateway for a challenge, which is kept in the
//! database (so any gateway instance can check the answer) under the SHA-256 of an id the
//! page carries, bound to the person and the purpose; the browser's answer takes it, once,
//! right or wrong. Keys work when browsers reach the gateway by a name (`PUBLIC_URL`, or the
//! sign-in callback's address): WebAuthn refuses IP addresses. The relying party is that
//! name; a key added there answers only there.

use base64::Engine;
use serde::de::DeserializeOwned;
use webauthn_rs::prelude::{
    CredentialID, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

use super::MfaError;
use crate::store::{KeyNotAdded, NewSecurityKey, SecurityKeyRow, Store};

/// The second factor a sign-in or a step-up records when a security key confirmed it.
pub const FACTOR: &str = "security_key";

/// How long a page's challenge may be answered.
const CEREMONY_MS: i64 = 10 * 60 * 1000;

/// Longest name a key may be given.
pub const MAX_NAME_CHARS: usize = 60;

/// Longest answer from a browser taken for parsing: real ones are a few kilobytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What a ceremony is for: an answer is taken only for the purpose it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Adding a key on the account page.
    Register,
    /// The second step of a sign-in.
    SignIn,
    /// Confirming it's them before a privileged change (step-up).
    StepUp,
    /// A change of the "right now" tier (approving a deploy, minting a token), with the form.
    RightNow,
    /// Confirming a CLI command's request in the browser (`mfa::cli_key`).
    CliKey,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::SignIn => "sign_in",
            Purpose::StepUp => "step_up",
            Purpose::RightNow => "right_now",
            Purpose::CliKey => "cli_key",
        }
    }
}

/// The gateway as a WebAuthn relying party.
pub struct Keys {
    webauthn: Webauthn,
    rp_id: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("rp_id", &self.rp_id).finish()
    }
}

impl Keys {
    /// The relying party for browsers at `browser_url`; `None` when that has no name
    /// (an IP address), which WebAuthn does not take.
    pub fn for_url(browser_url: &Url) -> Option<Keys> {
        let rp_id = browser_url.domain()?.to_string();
        let mut origin = browser_url.clone();
        origin.set_path("/");
        origin.set_query(None);
        origin.set_fragment(None);
        let webauthn = WebauthnBuilder::new(&rp_id, &origin)
            .ok()?
            .rp_name("rack-gateway")
            .build()
            .ok()?;
        Some(Keys { webauthn, rp_id })
    }

    /// The name keys are bound to (the relying party id).
    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }
}

/// A challenge for a page: the ceremony's id (a hidden field) and the options to hand to
/// `navigator.credentials` (JSON).
#[derive(Debug, Clone)]
pub struct Challenge {
    /// Goes back with the answer; only its SHA-256 is stored.
    pub ceremony: String,
    /// `CredentialCreationOptions` or `CredentialRequestOptions`, JSON.
    pub options: String,
}

/// Why an answer from a browser confirmed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// No such challenge for this person and purpose: answered already, stale, or never
    /// handed out.
    Stale,
    /// Not a WebAuthn answer at all.
    Malformed,
    /// The key's signature, the challenge, the origin or user verification did not check
    /// out, or the key is not one of theirs.
    NotVerified,
    /// Adding: the key is registered already (to someone).
    Registered,
    /// Adding: they have [`crate::store::MAX_SECURITY_KEYS`] keys.
    TooMany,
    /// Adding: their authenticator app was removed meanwhile.
    NoApp,
}

impl KeyRefusal {
    /// The audit reason.
    pub fn reason(self) -> &'static str {
        match self {
            KeyRefusal::Stale => "key_challenge_stale",
            KeyRefusal::Malformed => "key_answer_malformed",
            KeyRefusal::NotVerified => "key_not_verified",
            KeyRefusal::Registered => "key_registered_already",
            KeyRefusal::TooMany => "too_many_keys",
            KeyRefusal::NoApp => "no_authenticator_app",
        }
    }

    /// What to tell the person.
    pub fn explain(self) -> &'static str {
        match self {
            KeyRefusal::Stale => {
                "That security key request expired or was used already. Try again with the \
                 page as it is now."
            }
            KeyRefusal::Malformed => "The browser's answer was not from a security key.",
            KeyRefusal::NotVerified => {
                "The security key's answer did not check out (a key that is not yours, another \
                 site's, or one without its PIN or fingerprint). Use one of your keys, or a \
                 code."
            }
            KeyRefusal::Registered => "That security key is added already.",
            KeyRefusal::TooMany => {
                "You have as many security keys as one person may: remove one first."
            }
            KeyRefusal::NoApp => {
                "Security keys go beside an authenticator app, and yours is not on."
            }
        }
    }
}

/// The handle WebAuthn gives the person (the user handle): stable, and nothing about them.
fn user_handle(user_id: i64) -> Uuid {
    Uuid::from_u64_pair(
        0x7261_636b_6777_6179,
        u64::from_ne_bytes(user_id.to_ne_bytes()),
    )
}

fn decode<T: DeserializeOwned>(json: &str) -> Option<T> {
    if json.len() > MAX_ANSWER_BYTES {
        return None;
    }
    serde_json::from_str(json).ok()
}

fn credentials(rows: &[SecurityKeyRow]) -> Vec<(i64, Passkey)> {
    rows.iter()
        .filter_map(|row| match serde_json::from_str::<Passkey>(&row.passkey) {
            Ok(passkey) => Some((row.id, passkey)),
            Err(e) => {
                // Not usable; the rest still are, and the person can remove it.
                tracing::error!(error = %e, key_id = row.id, "a stored security key is unreadable");
                None
            }
        })
        .collect()
}

async fn begin(
    store: &Store,
    user_id: i64,
    purpose: Purpose,
    state: &impl serde::Serialize,
    options: &impl serde::Serialize,
    now: i64,
) -> Result<Challenge, MfaError> {
    let state = serde_json::to_string(state).map_err(|e| MfaError::Keys(e.to_string()))?;
    let options = serde_json::to_string(options).map_err(|e| MfaError::Keys(e.to_string()))?;
    let ceremony = crate::oidc::random_token();
    let hash = crate::identity::hash_token(&ceremony);
    store
        .begin_ceremony(
            &hash,
            user_id,
            purpose.as_str(),
            &state,
            now + CEREMONY_MS,
            now,
        )
        .await?;
    Ok(Challenge { ceremony, options })
}

async fn take<T: DeserializeOwned>(
    store: &Store,
    user_id: i64,
    purpose: Purpose,
    ceremony: &str,
    now: i64,
) -> Result<Option<T>, MfaError> {
    if ceremony.is_empty() || ceremony.len() > 128 {
        return Ok(None);
    }
    let hash = crate::identity::hash_token(ceremony);
    let Some(state) = store
        .take_ceremony(&hash, user_id, purpose.as_str(), now)
        .await?
    else {
        return Ok(None);
    };
    // Ours, written by `begin`: unreadable only if the library's format changed under it.
    serde_json::from_str(&state)
        .map(Some)
        .map_err(|e| MfaError::Keys(format!("a stored ceremony is unreadable: {e}")))
}

impl Keys {
    /// A challenge for adding a key for `user_id` (`email` names them to the authenticator);
    /// their keys so far are excluded, so the same key is not added twice.
    pub async fn begin_register(
        &self,
        store: &Store,
        user_id: i64,
        email: &str,
        now: i64,
    ) -> Result<Challenge, MfaError> {
        let existing = store.security_keys_of(user_id).await?;
        let exclude: Vec<CredentialID> = credentials(&existing)
            .iter()
            .map(|(_, p)| p.cred_id().clone())
            .collect();
        let (options, state) = self
            .webauthn
            .start_passkey_registration(user_handle(user_id), email, email, Some(exclude))
            .map_err(|e| MfaError::Keys(e.to_string()))?;
        begin(store, user_id, Purpose::Register, &state, &options, now).await
    }

    /// Adds the key that answered `ceremony` (`answer`: the browser's JSON) as `name`.
    pub async fn finish_register(
        &self,
        store: &Store,
        user_id: i64,
        ceremony: &str,
        answer: &str,
        name: &str,
        now: i64,
    ) -> Result<Result<SecurityKeyRow, KeyRefusal>, MfaError> {
        let Some(state) =
            take::<PasskeyRegistration>(store, user_id, Purpose::Register, ceremony, now).await?
        else {
            return Ok(Err(KeyRefusal::Stale));
        };
        let Some(answer) = decode::<RegisterPublicKeyCredential>(answer) else {
            return Ok(Err(KeyRefusal::Malformed));
        };
        let passkey = match self.webauthn.finish_passkey_registration(&answer, &state) {
            Ok(passkey) => passkey,
            Err(e) => {
                tracing::info!(error = %e, user_id, "a security key was not added");
                // One of their keys already? The challenge excluded them (a browser does not
                // offer one; a script may send it): say so. The id the answer claims only
                // picks the message: the refusal stands either way.
                let theirs = store.security_keys_of(user_id).await?;
                let again = theirs.iter().any(|k| k.credential_id == answer.id);
                return Ok(Err(if again {
                    KeyRefusal::Registered
                } else {
                    KeyRefusal::NotVerified
                }));
            }
        };
        let credential_id =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(passkey.cred_id());
        let json = serde_json::to_string(&passkey).map_err(|e| MfaError::Keys(e.to_string()))?;
        let new = NewSecurityKey {
            user_id,
            name,
            credential_id: &credential_id,
            passkey: &json,
            now,
        };
        Ok(store.add_security_key(&new).await?.map_err(|e| match e {
            KeyNotAdded::NoApp => KeyRefusal::NoApp,
            KeyNotAdded::Registered => KeyRefusal::Registered,
            KeyNotAdded::TooMany => KeyRefusal::TooMany,
        }))
    }

    /// A challenge for `user_id` to answer with one of their keys for `purpose`; `None` when
    /// they have none.
    pub async fn begin_use(
        &self,
        store: &Store,
        user_id: i64,
        purpose: Purpose,
        now: i64,
    ) -> Result<Option<Challenge>, MfaError> {
        let keys = credentials(&store.security_keys_of(user_id).await?);
        if keys.is_empty() {
            return Ok(None);
        }
        let passkeys: Vec<Passkey> = keys.into_iter().map(|(_, p)| p).collect();
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| MfaError::Keys(e.to_string()))?;
        begin(store, user_id, purpose, &state, &options, now)
            .await
            .map(Some)
    }

    /// Checks the browser's `answer` to `ceremony`: the key that confirmed `user_id` (its
    /// use, and the counter it reported, recorded), or why not.
    pub async fn finish_use(
        &self,
        store: &Store,
        user_id: i64,
        purpose: Purpose,
        ceremony: &str,
        answer: &str,
        now: i64,
    ) -> Result<Result<SecurityKeyRow, KeyRefusal>, MfaError> {
        let Some(state) =
            take::<PasskeyAuthentication>(store, user_id, purpose, ceremony, now).await?
        else {
            return Ok(Err(KeyRefusal::Stale));
        };
        let Some(answer) = decode::<PublicKeyCredential>(answer) else {
            return Ok(Err(KeyRefusal::Malformed));
        };
        // The challenge allowed only this person's keys; the library checks the answer is
        // from one of them, signed over this challenge and origin, with user verification.
        let result = match self.webauthn.finish_passkey_authentication(&answer, &state) {
            Ok(result) => result,
            Err(e) => {
                tracing::info!(error = %e, user_id, "a security key answer did not check out");
                return Ok(Err(KeyRefusal::NotVerified));
            }
        };
        let rows = store.security_keys_of(user_id).await?;
        let found = credentials(&rows)
            .into_iter()
            .find(|(_, p)| p.cred_id() == result.cred_id());
        // Removed between the challenge and the answer.
        let Some((id, mut passkey)) = found else {
            return Ok(Err(KeyRefusal::NotVerified));
        };
        passkey.update_credential(&result);
        let json = serde_json::to_string(&passkey).map_err(|e| MfaError::Keys(e.to_string()))?;
        store.security_key_used(id, &json, now).await?;
        let row = rows.into_iter().find(|r| r.id == id);
        row.map(Ok)
            .ok_or(MfaError::Keys("a key vanished while read".into()))
    }
}

/// A key's name as given on the page: trimmed; `None` when empty, too long or holding
/// control characters.
pub fn key_name(given: &str) -> Option<&str> {
    let name = given.trim();
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && !name.chars().any(char::is_control);
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_need_a_name_not_an_address() {
        let url = |s: &str| Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let keys = Keys::for_url(&url("https://gw.example.com:8447/anything?x=1"));
        assert_eq!(keys.map(|k| k.rp_id), Some("gw.example.com".into()));
        assert!(Keys::for_url(&url("http://localhost:8447")).is_some());
        assert!(Keys::for_url(&url("http://127.0.0.1:8447")).is_none());
        assert!(Keys::for_url(&url("http://[::1]:8447")).is_none());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(key_name("  YubiKey 5C  "), Some("YubiKey 5C"));
        assert_eq!(key_name("   "), None);
        assert_eq!(key_name("a\nb"), None);
        assert!(key_name(&"x".repeat(MAX_NAME_CHARS)).is_some());
        assert!(key_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_none());
    }

    #[test]
    fn handles_differ_per_person_and_stay_put() {
        assert_eq!(user_handle(7), user_handle(7));
        assert_ne!(user_handle(7), user_handle(8));
    }

    #[test]
    fn oversized_or_foreign_answers_are_not_parsed() {
        assert!(decode::<PublicKeyCredential>("{}").is_none());
        assert!(decode::<PublicKeyCredential>("not json").is_none());
        let huge = format!("\"{}\"", "a".repeat(MAX_ANSWER_BYTES));
        assert!(decode::<serde_json::Value>(&huge).is_none());
    }
}
