//! `/account/mfa/keys/…` and `/account/mfa/yubikeys/…`: a person with an authenticator app
//! adds security keys and passkeys (see [`crate::mfa::keys`]) and YubiKeys for one-time
//! passwords (see [`crate::mfa::yubico`]) beside it, and removes them.
//!
//! Adding one adds a way to confirm it's them, so it takes a confirmation from the last
//! `MFA_STEP_UP_SECS` first (a stolen session cookie must not enrol the thief's key), and is
//! undone when the trail cannot record it. Removing one takes nothing away but a
//! convenience, so it needs no code; it is recorded first.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::mfa::{cannot, form_user, show, step_up_page};
use super::{PageForm, page_event, render};
use crate::app::{AppState, Peer};
use crate::audit::Decision;
use crate::mfa::{keys, yubico};
use crate::store::now_ms;

/// Audit action: a security key added.
pub const ADD_KEY: &str = "gateway:mfa:add_key";
/// Audit action: a security key removed.
pub const REMOVE_KEY: &str = "gateway:mfa:remove_key";

/// Which kind of key a form is about: both are added and removed the same way.
#[derive(Debug, Clone, Copy)]
enum KeyKind {
    /// A security key or passkey (WebAuthn).
    Security,
    /// A YubiKey's one-time passwords.
    Yubikey,
}

impl KeyKind {
    fn factor(self) -> &'static str {
        match self {
            KeyKind::Security => keys::FACTOR,
            KeyKind::Yubikey => yubico::FACTOR,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            KeyKind::Security => "security key",
            KeyKind::Yubikey => "YubiKey",
        }
    }

    /// The name of user `user_id`'s key `id` of this kind, if they have it.
    async fn name_of(
        self,
        store: &crate::store::Store,
        user_id: i64,
        id: i64,
    ) -> Result<Option<String>, crate::store::StoreError> {
        Ok(match self {
            KeyKind::Security => store
                .security_keys_of(user_id)
                .await?
                .into_iter()
                .find(|k| k.id == id)
                .map(|k| k.name),
            KeyKind::Yubikey => store
                .yubikeys_of(user_id)
                .await?
                .into_iter()
                .find(|k| k.id == id)
                .map(|k| k.name),
        })
    }

    async fn remove(
        self,
        store: &crate::store::Store,
        user_id: i64,
        id: i64,
    ) -> Result<bool, crate::store::StoreError> {
        match self {
            KeyKind::Security => store.remove_security_key(user_id, id).await,
            KeyKind::Yubikey => store.remove_yubikey(user_id, id).await,
        }
    }
}

/// Records a key just added (`event`, allowed, with `details`) and answers with the account
/// page; a key the trail does not show must not stay, so it is removed again when the record
/// fails.
async fn keep_if_recorded(
    state: &AppState,
    event: crate::audit::AuditEvent,
    kind: KeyKind,
    user_id: i64,
    key_id: i64,
) -> Response {
    if let Err(e) = state.audit.record(event).await {
        let noun = kind.noun();
        tracing::error!(error = %e, "a {noun} was added but not recorded: removing it");
        if let Err(e) = kind.remove(&state.store, user_id, key_id).await {
            tracing::error!(error = %e, key_id, "an unrecorded {noun} stays");
        }
        return super::unavailable(&format!("Your {noun} was not added."));
    }
    Redirect::to("/account/mfa").into_response()
}

/// Removes `user`'s key of `kind` named by `form`: recorded first, not removed when that
/// cannot be recorded.
async fn remove_key(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    form: RemoveKeyForm,
    kind: KeyKind,
) -> Response {
    let (principal, _, user) = match form_user(state, headers, form.csrf.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let noun = kind.noun();
    let missing = |status| super::message(status, "Not changed", &format!("No such {noun}."));
    let Some(id) = form.key.as_deref().and_then(|k| k.parse::<i64>().ok()) else {
        return missing(StatusCode::BAD_REQUEST);
    };
    let name = match kind.name_of(&state.store, user.id, id).await {
        Ok(Some(name)) => name,
        Ok(None) => return missing(StatusCode::NOT_FOUND),
        Err(e) => return cannot(e.into()),
    };
    let details = json!({ "factor": kind.factor(), "key_id": id, "name": name });
    let event = page_event(&principal, peer, headers, REMOVE_KEY, Decision::Allow);
    if let Err(e) = state.audit.record(event.with_details(details)).await {
        tracing::error!(error = %e, "removing a {noun} could not be recorded");
        return super::unavailable(&format!("Your {noun} was not removed."));
    }
    match kind.remove(&state.store, user.id, id).await {
        Ok(_) => Redirect::to("/account/mfa").into_response(),
        Err(e) => cannot(e.into()),
    }
}

#[derive(Template)]
#[template(path = "mfa_key_add.html")]
struct AddKeyPage<'a> {
    csrf: String,
    name: &'a str,
    ceremony: &'a str,
    options: &'a str,
    rp_id: &'a str,
}

/// The form naming a key to add.
#[derive(Debug, Deserialize)]
pub struct NewKeyForm {
    csrf: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// The form carrying the key's answer.
#[derive(Debug, Deserialize)]
pub struct AddKeyForm {
    csrf: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    ceremony: Option<String>,
    #[serde(default)]
    answer: Option<String>,
}

/// The form adding a YubiKey: a name, and an OTP the key typed.
#[derive(Debug, Deserialize)]
pub struct AddYubikeyForm {
    csrf: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    otp: Option<String>,
}

/// The form removing a key (a security key, or a YubiKey).
#[derive(Debug, Deserialize)]
pub struct RemoveKeyForm {
    csrf: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

/// The page saying keys are off here.
fn keys_off() -> Response {
    super::message(
        StatusCode::CONFLICT,
        "Security keys are off",
        "Security keys work when browsers reach this gateway by a name: its operator sets \
         PUBLIC_URL to it (WebAuthn takes no IP address).",
    )
}

/// `POST /account/mfa/keys/new`: after a recent confirmation, the page that asks the browser
/// for a new key (`name`: what to call it).
pub async fn begin(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<NewKeyForm>,
) -> Response {
    let (principal, token, user) = match form_user(&state, &headers, form.csrf.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let Some(rp) = state.keys.as_deref() else {
        return keys_off();
    };
    let Some(name) = keys::key_name(form.name.as_deref().unwrap_or("")) else {
        let error = format!(
            "Name the key (1 to {} characters, one line): \"YubiKey on my keyring\".",
            keys::MAX_NAME_CHARS
        );
        return show(
            &state,
            &principal,
            &token,
            &user,
            StatusCode::BAD_REQUEST,
            Some(error),
        )
        .await;
    };
    match crate::mfa::required(&state.store, user.id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            let error = "Set up an authenticator app first: security keys go beside it.";
            return show(
                &state,
                &principal,
                &token,
                &user,
                StatusCode::CONFLICT,
                Some(error.into()),
            )
            .await;
        }
        Err(e) => return cannot(e),
    }
    let back = "/account/mfa";
    if let Some(page) =
        step_up_page(&state, &principal, peer, &headers, &token, ADD_KEY, back).await
    {
        return page;
    }
    match rp
        .begin_register(&state.store, user.id, &user.email, now_ms())
        .await
    {
        Ok(challenge) => render(
            StatusCode::OK,
            &AddKeyPage {
                csrf: super::cookies::csrf_token(&token),
                name,
                ceremony: &challenge.ceremony,
                options: &challenge.options,
                rp_id: rp.rp_id(),
            },
        ),
        Err(e) => cannot(e),
    }
}

/// `POST /account/mfa/keys/add`: the browser's answer adds the key.
pub async fn add(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<AddKeyForm>,
) -> Response {
    let (principal, token, user) = match form_user(&state, &headers, form.csrf.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let Some(rp) = state.keys.as_deref() else {
        return keys_off();
    };
    let Some(name) = keys::key_name(form.name.as_deref().unwrap_or("")) else {
        let error = "Name the key.".to_string();
        return show(
            &state,
            &principal,
            &token,
            &user,
            StatusCode::BAD_REQUEST,
            Some(error),
        )
        .await;
    };
    // Again at the answer: the confirmation the page was asked with must still be recent,
    // so a step-up does not stretch to the window plus the ceremony's own 10 minutes.
    let back = "/account/mfa";
    if let Some(page) =
        step_up_page(&state, &principal, peer, &headers, &token, ADD_KEY, back).await
    {
        return page;
    }
    let added = rp
        .finish_register(
            &state.store,
            user.id,
            form.ceremony.as_deref().unwrap_or(""),
            form.answer.as_deref().unwrap_or(""),
            name,
            now_ms(),
        )
        .await;
    let event = |decision| page_event(&principal, peer, &headers, ADD_KEY, decision);
    let key = match added {
        Ok(Ok(key)) => key,
        Ok(Err(refusal)) => {
            let details = json!({ "reason": refusal.reason(), "name": name });
            let mut refused = event(Decision::Deny).with_details(details);
            refused.status = Some(400);
            if let Err(e) = state.audit.record(refused).await {
                tracing::error!(error = %e, "a refused security key could not be recorded");
            }
            let error = refusal.explain().to_string();
            return show(
                &state,
                &principal,
                &token,
                &user,
                StatusCode::BAD_REQUEST,
                Some(error),
            )
            .await;
        }
        Err(e) => return cannot(e),
    };
    let details = json!({ "factor": keys::FACTOR, "key_id": key.id, "name": key.name });
    let recorded = event(Decision::Allow).with_details(details);
    keep_if_recorded(&state, recorded, KeyKind::Security, user.id, key.id).await
}

/// `POST /account/mfa/keys/remove`: removes one of the signed-in person's security keys.
pub async fn remove(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<RemoveKeyForm>,
) -> Response {
    remove_key(&state, peer, &headers, form, KeyKind::Security).await
}

/// `POST /account/mfa/yubikeys/add`: after a recent confirmation, an OTP the validation
/// service accepts adds its YubiKey (by its public id) as `name`.
pub async fn add_yubikey(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<AddYubikeyForm>,
) -> Response {
    let (principal, token, user) = match form_user(&state, &headers, form.csrf.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let Some(client) = state.yubico.as_deref() else {
        return super::message(
            StatusCode::CONFLICT,
            "YubiKeys are off",
            "This gateway takes no YubiKey codes: its operator has not set YUBICO_CLIENT_ID and \
             YUBICO_SECRET_KEY.",
        );
    };
    let show_error = |error: &str| {
        let error = error.to_string();
        let (state, principal, token, user) = (&state, &principal, &token, &user);
        async move {
            show(
                state,
                principal,
                token,
                user,
                StatusCode::BAD_REQUEST,
                Some(error),
            )
            .await
        }
    };
    let Some(name) = keys::key_name(form.name.as_deref().unwrap_or("")) else {
        return show_error("Name the YubiKey (1 to 60 characters, one line).").await;
    };
    let otp = form
        .otp
        .as_deref()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some(public_id) = yubico::public_id(&otp) else {
        return show_error(
            "That is not a YubiKey's code: click in the field and touch the key (it types 44 \
             letters).",
        )
        .await;
    };
    match crate::mfa::required(&state.store, user.id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return show_error("Set up an authenticator app first: YubiKeys go beside it.").await;
        }
        Err(e) => return cannot(e),
    }
    if let Some(page) = step_up_page(
        &state,
        &principal,
        peer,
        &headers,
        &token,
        ADD_KEY,
        "/account/mfa",
    )
    .await
    {
        return page;
    }
    let event = |decision| page_event(&principal, peer, &headers, ADD_KEY, decision);
    let refuse = |reason: &str| {
        let details = json!({ "reason": reason, "factor": yubico::FACTOR, "name": name });
        let mut refused = event(Decision::Deny).with_details(details);
        refused.status = Some(400);
        let audit = &state.audit;
        async move {
            if let Err(e) = audit.record(refused).await {
                tracing::error!(error = %e, "a refused YubiKey could not be recorded");
            }
        }
    };
    match client.verify(&otp).await {
        Ok(yubico::Verdict::Valid) => {}
        Ok(yubico::Verdict::Rejected(status)) => {
            refuse("yubikey_otp_rejected").await;
            let error = format!(
                "Yubico did not accept that code ({status}): touch the key again for a new one."
            );
            return show_error(&error).await;
        }
        Err(e) => return cannot(e.into()),
    }
    let key = match state
        .store
        .add_yubikey(user.id, name, &public_id, now_ms())
        .await
    {
        Ok(Ok(key)) => key,
        Ok(Err(not_added)) => {
            let refusal = match not_added {
                crate::store::KeyNotAdded::NoApp => keys::KeyRefusal::NoApp,
                crate::store::KeyNotAdded::Registered => keys::KeyRefusal::Registered,
                crate::store::KeyNotAdded::TooMany => keys::KeyRefusal::TooMany,
            };
            refuse(refusal.reason()).await;
            return show_error(refusal.explain()).await;
        }
        Err(e) => return cannot(e.into()),
    };
    let details = json!({
        "factor": yubico::FACTOR, "key_id": key.id, "name": key.name, "public_id": key.public_id,
    });
    let recorded = event(Decision::Allow).with_details(details);
    keep_if_recorded(&state, recorded, KeyKind::Yubikey, user.id, key.id).await
}

/// `POST /account/mfa/yubikeys/remove`: removes one of the signed-in person's YubiKeys.
pub async fn remove_yubikey(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<RemoveKeyForm>,
) -> Response {
    remove_key(&state, peer, &headers, form, KeyKind::Yubikey).await
}
