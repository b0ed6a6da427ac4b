//! `/account/mfa`: a signed-in user sets up an authenticator app (TOTP) or removes it.
//!
//! Setting up shows a new secret as a QR code until its first code confirms it; from then on
//! each sign-in asks for a code. Removing needs a current code, so a session cookie alone (a
//! borrowed laptop) cannot switch the second factor off. Turning it on is recorded after the
//! change, best effort (it only adds protection); turning it off is recorded first, and not
//! done when it cannot be recorded.

use askama::Template;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{
    PageForm, message, page_event, render, signed_in_form, signed_in_page, stale_form, time,
};
use crate::app::{AppState, Peer};
use crate::audit::Decision;
use crate::identity::Principal;
use crate::mfa::{self, CodeCheck, Confirmed, MfaError, SetupBy, keys};
use crate::store::{UserRow, now_ms};

/// Audit action: an authenticator confirmed.
const ENABLE: &str = "gateway:mfa:enable";
/// Audit action: an authenticator removed.
const DISABLE: &str = "gateway:mfa:disable";
/// How recent a session's sign-in must be to turn an app on: a session cookie taken from
/// someone must not let the taker put their own phone on that person's account.
const SETUP_SIGN_IN_WINDOW_MS: i64 = 10 * 60 * 1000;

/// Audit action: a new set of backup codes made.
const BACKUP_CODES: &str = "gateway:mfa:backup_codes";

#[derive(Template)]
#[template(path = "mfa.html")]
struct MfaPage {
    csrf: String,
    /// `MFA_ENCRYPTION_KEY` is set.
    available: bool,
    /// Confirmed since (UTC), when on.
    on_since: Option<String>,
    /// The authenticator being set up.
    setup: Option<mfa::totp::Provisioning>,
    /// Unused backup codes, when on.
    backup_left: i64,
    /// Backup codes just made: shown this once.
    new_codes: Vec<String>,
    /// Browsers trusted to skip the code at sign-in, newest first.
    devices: Vec<DeviceView>,
    /// How long "trust this browser" lasts, in days (`None`: trust is off).
    trust_days: Option<u64>,
    /// Security keys beside the app, oldest first.
    keys: Vec<KeyView>,
    /// Where keys answer (`None`: keys are off on this gateway).
    keys_rp: Option<String>,
    /// YubiKeys for one-time passwords, oldest first.
    yubikeys: Vec<KeyView>,
    /// The gateway takes YubiKey OTPs (`YUBICO_*`).
    yubikeys_on: bool,
    error: Option<String>,
}

/// A security key or YubiKey as the page shows it.
struct KeyView {
    id: i64,
    name: String,
    added: String,
    last_used: String,
}

impl KeyView {
    fn of(id: i64, name: String, created_at: i64, last_used_at: Option<i64>) -> KeyView {
        KeyView {
            id,
            name,
            added: time(created_at),
            last_used: last_used_at.map(time).unwrap_or_else(|| "-".into()),
        }
    }
}

/// A trusted browser as the page shows it.
struct DeviceView {
    id: i64,
    user_agent: String,
    ip: String,
    trusted: String,
    last_used: String,
    until: String,
}

/// Audit action: a trusted browser forgotten (or all of them).
const FORGET_DEVICE: &str = crate::identity::manage::FORGET_BROWSERS;

#[derive(Template)]
#[template(path = "mfa_step_up.html")]
struct StepUpPage<'a> {
    csrf: String,
    /// Where to go back to once confirmed.
    back: &'a str,
    window_minutes: u64,
    /// A challenge for the person's security keys, when they have any.
    key: Option<crate::mfa::keys::Challenge>,
    error: Option<String>,
}

/// Audit action of a code given to step up (as over the API).
const STEP_UP: &str = crate::api::mfa::ACTION;

/// For a privileged change (`permission`) from a page: `None` when it may go ahead; else the
/// page asking for a code, which then goes `back` (the refusal is audited).
pub(crate) async fn step_up_page(
    state: &AppState,
    principal: &Principal,
    peer: Peer,
    headers: &HeaderMap,
    token: &str,
    permission: &str,
    back: &str,
) -> Option<Response> {
    match mfa::step_up::check(state, principal).await {
        Ok(Ok(())) => None,
        Ok(Err(_)) => {
            let details = json!({ "reason": "mfa_required" });
            super::page_refusal(state, principal, peer, headers, permission, details).await;
            let user_id = principal.user_id().unwrap_or_default();
            // With `MFA_REQUIRED`, someone without an app is refused too: a code form would
            // ask for what they cannot give.
            match mfa::required(&state.store, user_id).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Some(message(
                        StatusCode::FORBIDDEN,
                        "Set up two-step sign-in first",
                        "This gateway requires two-step sign-in, and you have no authenticator \
                         app yet: set one up on your account's two-step sign-in page (sign in \
                         again first if you signed in more than 10 minutes ago), then do this \
                         again.",
                    ));
                }
                Err(e) => return Some(cannot(e)),
            }
            let status = StatusCode::FORBIDDEN;
            Some(step_up_form(state, user_id, token, back, status, None).await)
        }
        Err(e) => Some(cannot(e)),
    }
}

async fn step_up_form(
    state: &AppState,
    user_id: i64,
    token: &str,
    back: &str,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let key = match key_challenge(state, user_id, keys::Purpose::StepUp).await {
        Ok(key) => key,
        Err(e) => return cannot(e),
    };
    render(
        status,
        &StepUpPage {
            csrf: super::cookies::csrf_token(token),
            back,
            window_minutes: state.config.mfa_step_up.as_secs().div_ceil(60),
            key,
            error,
        },
    )
}

/// A challenge for `user_id`'s security keys, for `purpose`: `None` when keys are off here or
/// they have none.
pub(crate) async fn key_challenge(
    state: &AppState,
    user_id: i64,
    purpose: keys::Purpose,
) -> Result<Option<keys::Challenge>, MfaError> {
    match state.keys.as_deref() {
        Some(rp) => rp.begin_use(&state.store, user_id, purpose, now_ms()).await,
        None => Ok(None),
    }
}

/// A code, or a security key's answer, as a form gives it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Proof<'a> {
    /// Six digits from the app, or a backup code.
    Code(&'a str),
    /// A security key's answer (`answer`, JSON) to the challenge `ceremony`.
    Key {
        /// The challenge's id, from the page.
        ceremony: &'a str,
        /// The browser's answer.
        answer: &'a str,
    },
}

impl<'a> Proof<'a> {
    /// A key's answer when the form carries one, else its code.
    pub(crate) fn of(
        code: Option<&'a str>,
        ceremony: Option<&'a str>,
        answer: Option<&'a str>,
    ) -> Self {
        match answer.filter(|a| !a.is_empty()) {
            Some(answer) => Proof::Key {
                ceremony: ceremony.unwrap_or(""),
                answer,
            },
            None => Proof::Code(code.unwrap_or("")),
        }
    }
}

/// The step-up form: a code (or a security key's answer to `ceremony`), where to go back to,
/// and the CSRF token.
#[derive(Debug, Deserialize)]
pub struct StepUpForm {
    csrf: Option<String>,
    code: Option<String>,
    back: Option<String>,
    #[serde(default)]
    ceremony: Option<String>,
    #[serde(default)]
    answer: Option<String>,
}

/// `POST /account/mfa/verify`: a code from the app (or a backup code) lets this session make
/// privileged changes for `MFA_STEP_UP_SECS`; then back to the page the change came from.
pub async fn verify(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<StepUpForm>,
) -> Response {
    let (principal, token, user) = match form_user(&state, &headers, form.csrf.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let back = form
        .back
        .as_deref()
        .filter(|b| super::cookies::safe_return_to(b))
        .unwrap_or("/account");
    let Some(session_id) = principal.session_id() else {
        return Redirect::to("/account").into_response();
    };
    let asked = CodeAsked {
        state: &state,
        principal: &principal,
        peer,
        headers: &headers,
        action: STEP_UP,
    };
    let proof = Proof::of(
        form.code.as_deref(),
        form.ceremony.as_deref(),
        form.answer.as_deref(),
    );
    let factor = match asked.check_proof(&user, proof, keys::Purpose::StepUp).await {
        Ok(factor) => factor,
        Err(Refused::Show(error)) => {
            let status = StatusCode::BAD_REQUEST;
            return step_up_form(&state, user.id, &token, back, status, Some(error)).await;
        }
        Err(Refused::Page(page)) => return page,
    };
    let details = json!({ "stage": "step_up", "factor": factor, "session_id": session_id });
    if let Err(err) = state
        .audit
        .record(asked.event(Decision::Allow, details))
        .await
    {
        tracing::error!(error = %err, "a step-up could not be recorded");
        return super::unavailable("Nothing was changed.");
    }
    mfa::note_proof(&state.store, session_id, now_ms()).await;
    Redirect::to(back).into_response()
}

/// A code, and the page's CSRF token.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    csrf: Option<String>,
    code: Option<String>,
}

/// The signed-in user behind a page or form: their principal, session secret and row.
pub(super) async fn user_of(
    state: &AppState,
    signed_in: Result<(Principal, String), Response>,
) -> Result<(Principal, String, UserRow), Response> {
    let (principal, token) = signed_in?;
    let found = match principal.user_id() {
        Some(id) => state.store.user_by_id(id).await,
        None => Ok(None),
    };
    match found {
        Ok(Some(user)) => Ok((principal, token, user)),
        // An API token's holder has no account page.
        Ok(None) => Err(super::signin_page(state, "/account/mfa")),
        Err(e) => {
            tracing::error!(error = %e, "user lookup failed");
            Err(super::StoreDown.into_response())
        }
    }
}

/// The signed-in user behind a posted form whose CSRF token is `csrf`, or the page to answer
/// with (sign-in, 503, or the stale-form refusal).
pub(super) async fn form_user(
    state: &AppState,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> Result<(Principal, String, UserRow), Response> {
    let signed_in = signed_in_form(state, headers).await;
    let (principal, token, user) = user_of(state, signed_in).await?;
    if !super::cookies::csrf_ok(&token, csrf) {
        return Err(stale_form());
    }
    Ok((principal, token, user))
}

/// The page as it stands for `user` (signed in as `principal`, whose session secret is
/// `token`), with `error` about the last form.
pub(super) async fn show(
    state: &AppState,
    principal: &Principal,
    token: &str,
    user: &UserRow,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    show_with_codes(state, principal, token, user, status, error, Vec::new()).await
}

/// [`show`], with backup codes just made (`new_codes`) shown once.
async fn show_with_codes(
    state: &AppState,
    principal: &Principal,
    token: &str,
    user: &UserRow,
    status: StatusCode,
    error: Option<String>,
    new_codes: Vec<String>,
) -> Response {
    let key = mfa::key(&state.config);
    let row = match state.store.totp(user.id).await {
        Ok(row) => row,
        Err(e) => {
            tracing::error!(error = %e, "authenticator lookup failed");
            return super::StoreDown.into_response();
        }
    };
    let on_since = row.as_ref().and_then(|r| r.confirmed_at).map(time);
    let devices = match state.store.trusted_devices_of(user.id).await {
        Ok(rows) => rows
            .into_iter()
            .map(|d| DeviceView {
                id: d.id,
                user_agent: d.user_agent.unwrap_or_default(),
                ip: d.ip.unwrap_or_default(),
                trusted: time(d.created_at),
                last_used: d.last_used_at.map(time).unwrap_or_else(|| "-".into()),
                until: time(d.expires_at),
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "trusted browser list failed");
            return super::StoreDown.into_response();
        }
    };
    let keys = match state.store.security_keys_of(user.id).await {
        Ok(rows) => rows
            .into_iter()
            .map(|k| KeyView::of(k.id, k.name, k.created_at, k.last_used_at))
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "security key list failed");
            return super::StoreDown.into_response();
        }
    };
    let yubikeys = match state.store.yubikeys_of(user.id).await {
        Ok(rows) => rows
            .into_iter()
            .map(|k| KeyView::of(k.id, k.name, k.created_at, k.last_used_at))
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "YubiKey list failed");
            return super::StoreDown.into_response();
        }
    };
    let backup_left = match on_since {
        Some(_) => match state.store.backup_codes_left(user.id).await {
            Ok(left) => left,
            Err(e) => {
                tracing::error!(error = %e, "backup code count failed");
                return super::StoreDown.into_response();
            }
        },
        None => 0,
    };
    // The secret being set up, only to the session that started it, for 10 minutes.
    let setting_up = principal
        .session_id()
        .and_then(|id| SetupBy::Session(id).owns(row.as_ref(), now_ms()));
    let setup = match (&key, setting_up) {
        (Ok(key), Some(row)) => match key
            .open(user.id, &row.secret_sealed)
            .and_then(|secret| mfa::totp::provisioning(&secret, &user.email))
        {
            Ok(p) => Some(p),
            Err(e) => {
                // Start over makes a new one.
                tracing::warn!(error = %e, "an authenticator being set up cannot be shown");
                None
            }
        },
        _ => None,
    };
    render(
        status,
        &MfaPage {
            csrf: super::cookies::csrf_token(token),
            available: key.is_ok(),
            on_since,
            setup,
            backup_left,
            new_codes,
            devices,
            trust_days: state
                .config
                .mfa_trusted_device
                .map(|d| d.as_secs() / (24 * 3600)),
            keys,
            keys_rp: state.keys.as_ref().map(|k| k.rp_id().to_string()),
            yubikeys,
            yubikeys_on: state.yubico.is_some(),
            error,
        },
    )
}

/// `POST /account/mfa/devices/forget`: forgets one of the signed-in person's trusted browsers
/// (`device`), or all of them (no `device`); their sign-ins ask for the code again. Needs no
/// code: it only takes trust away.
pub async fn forget_devices(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<ForgetForm>,
) -> Response {
    let (principal, _, user) = match form_user(&state, &headers, form.csrf.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let which = form.device.as_deref().filter(|d| !d.is_empty());
    let device = match which.map(str::parse::<i64>).transpose() {
        Ok(device) => device,
        Err(_) => return message(StatusCode::BAD_REQUEST, "Not changed", "No such browser."),
    };
    let details = json!({ "device_id": device, "all": device.is_none() });
    let event = page_event(&principal, peer, &headers, FORGET_DEVICE, Decision::Allow);
    if let Err(e) = state.audit.record(event.with_details(details)).await {
        tracing::error!(error = %e, "forgetting a browser could not be recorded");
        return super::unavailable("Nothing was changed.");
    }
    match state.store.forget_trusted_devices(user.id, device).await {
        Ok(_) => Redirect::to("/account/mfa").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not forget a trusted browser");
            super::unavailable("Nothing was changed.")
        }
    }
}

/// The form of `POST /account/mfa/devices/forget`.
#[derive(Debug, Deserialize)]
pub struct ForgetForm {
    csrf: Option<String>,
    /// One browser's id; none for all.
    #[serde(default)]
    device: Option<String>,
}

/// `GET /account/mfa`
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed_in = signed_in_page(&state, &headers, "/account/mfa").await;
    match user_of(&state, signed_in).await {
        Ok((principal, token, user)) => {
            show(&state, &principal, &token, &user, StatusCode::OK, None).await
        }
        Err(page) => page,
    }
}

/// The page for a key that is missing or a store that failed while changing the factor.
pub(super) fn cannot(e: MfaError) -> Response {
    match e {
        MfaError::NotConfigured | MfaError::BadKey => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not available",
            "Authenticator apps are not set up on this gateway (its operator has not set \
             MFA_ENCRYPTION_KEY).",
        ),
        MfaError::Yubico(e) => {
            tracing::error!(error = %e, "a YubiKey OTP could not be checked");
            yubico_down()
        }
        e => {
            tracing::error!(error = %e, "an authenticator change failed");
            super::unavailable("Nothing was changed.")
        }
    }
}

/// `principal`'s session, when it was signed in within the last 10 minutes; else the page
/// saying to sign in again first.
async fn signed_in_recently(
    state: &AppState,
    principal: &Principal,
    token: &str,
    user: &UserRow,
) -> Result<i64, Response> {
    let created = match principal.session_id() {
        Some(id) => state.store.session_created_at(id).await,
        None => Ok(None),
    };
    match (created, principal.session_id()) {
        (Ok(Some(at)), Some(id)) if now_ms().saturating_sub(at) <= SETUP_SIGN_IN_WINDOW_MS => {
            Ok(id)
        }
        (Ok(_), _) => {
            let error = "To turn on an authenticator app, sign in again first (your sign-in \
                         is more than 10 minutes old): sign out, then sign in."
                .to_string();
            Err(show(
                state,
                principal,
                token,
                user,
                StatusCode::FORBIDDEN,
                Some(error),
            )
            .await)
        }
        (Err(e), _) => {
            tracing::error!(error = %e, "session lookup failed");
            Err(super::StoreDown.into_response())
        }
    }
}

/// `POST /account/mfa/setup`: a new secret to add to an authenticator app (replacing one not
/// yet confirmed).
pub async fn setup(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(form): PageForm<super::CsrfForm>,
) -> Response {
    let (principal, token, user) = match form_user(&state, &headers, form.csrf.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let session_id = match signed_in_recently(&state, &principal, &token, &user).await {
        Ok(id) => id,
        Err(page) => return page,
    };
    let started = async {
        let key = mfa::key(&state.config)?;
        let by = SetupBy::Session(session_id);
        mfa::start_setup(&state.store, &key, user.id, by, now_ms()).await
    };
    match started.await {
        Ok(Some(_)) => Redirect::to("/account/mfa").into_response(),
        Ok(None) => {
            let error = "An authenticator is already on: remove it first.".to_string();
            show(
                &state,
                &principal,
                &token,
                &user,
                StatusCode::CONFLICT,
                Some(error),
            )
            .await
        }
        Err(e) => cannot(e),
    }
}

/// `POST /account/mfa/confirm`: the first code from the app turns it on.
pub async fn confirm(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<CodeForm>,
) -> Response {
    let (principal, token, user) = match form_user(&state, &headers, form.csrf.as_deref()).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let session_id = match signed_in_recently(&state, &principal, &token, &user).await {
        Ok(id) => id,
        Err(page) => return page,
    };
    let code = form.code.as_deref().unwrap_or("");
    let confirmed = async {
        let key = mfa::key(&state.config)?;
        let by = SetupBy::Session(session_id);
        mfa::confirm_setup(&state.store, &key, user.id, by, code, now_ms()).await
    };
    match confirmed.await {
        Ok(Confirmed::Yes) => {
            let e = page_event(&principal, peer, &headers, ENABLE, Decision::Allow)
                .with_details(json!({ "factor": "totp" }));
            if let Err(err) = state.audit.record(e).await {
                tracing::error!(error = %err, "an authenticator was turned on but not recorded");
            }
            // The code just given is this session's proof too.
            if let Some(session_id) = principal.session_id() {
                mfa::note_proof(&state.store, session_id, now_ms()).await;
            }
            // Its backup codes, shown this once (the app is on either way).
            new_codes_page(&state, &principal, &token, &user)
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "backup codes could not be made");
                    Redirect::to("/account/mfa").into_response()
                })
        }
        Ok(Confirmed::WrongCode) => {
            let error = "That code is not right. Check the app's clock and enter the code it \
                         shows now."
                .to_string();
            show(
                &state,
                &principal,
                &token,
                &user,
                StatusCode::BAD_REQUEST,
                Some(error),
            )
            .await
        }
        Ok(Confirmed::NothingToConfirm) => {
            let error = "There is no set-up of yours to confirm: a set-up lasts 10 minutes, \
                         on the page where it was started. Start again."
                .to_string();
            show(
                &state,
                &principal,
                &token,
                &user,
                StatusCode::CONFLICT,
                Some(error),
            )
            .await
        }
        Err(e) => cannot(e),
    }
}

/// A posted form's code checked for `action` (as at sign-in: counted, refusals audited): who
/// sent it, their session secret and row, and the factor it was; or the page to answer with.
async fn form_code(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    form: &CodeForm,
    action: &'static str,
) -> Result<(Principal, String, UserRow, &'static str), Response> {
    let (principal, token, user) = form_user(state, headers, form.csrf.as_deref()).await?;
    let asked = CodeAsked {
        state,
        principal: &principal,
        peer,
        headers,
        action,
    };
    let checked = asked.check(&user, form.code.as_deref().unwrap_or("")).await;
    match checked {
        Ok(factor) => Ok((principal, token, user, factor)),
        Err(Refused::Show(error)) => Err(show(
            state,
            &principal,
            &token,
            &user,
            StatusCode::BAD_REQUEST,
            Some(error),
        )
        .await),
        Err(Refused::Page(page)) => Err(page),
    }
}

/// `POST /account/mfa/remove`: a current code (or a backup code) turns the authenticator off.
/// Recorded first: not removed when that cannot be recorded.
pub async fn remove(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<CodeForm>,
) -> Response {
    let (principal, _, user, factor) = match form_code(&state, peer, &headers, &form, DISABLE).await
    {
        Ok(checked) => checked,
        Err(page) => return page,
    };
    let allowed = page_event(&principal, peer, &headers, DISABLE, Decision::Allow)
        .with_details(json!({ "factor": factor }));
    if let Err(err) = state.audit.record(allowed).await {
        tracing::error!(error = %err, "removing an authenticator could not be recorded");
        return super::unavailable("Your authenticator was not removed.");
    }
    match state.store.remove_totp(user.id).await {
        Ok(_) => Redirect::to("/account/mfa").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "an authenticator could not be removed");
            super::unavailable("Your authenticator was not removed.")
        }
    }
}

/// A new set of backup codes for `user`, on the page that shows them this once (without a
/// confirmed app, the page as it is).
async fn new_codes_page(
    state: &AppState,
    principal: &Principal,
    token: &str,
    user: &UserRow,
) -> Result<Response, MfaError> {
    Ok(match mfa::backup::replace_for(state, user.id).await? {
        Some(codes) => {
            show_with_codes(state, principal, token, user, StatusCode::OK, None, codes).await
        }
        None => Redirect::to("/account/mfa").into_response(),
    })
}

/// `POST /account/mfa/backup-codes`: a current code (or a backup code) makes a new set of
/// backup codes, shown once; the earlier ones stop working. Recorded first.
pub async fn backup_codes(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<CodeForm>,
) -> Response {
    let checked = form_code(&state, peer, &headers, &form, BACKUP_CODES).await;
    let (principal, token, user, factor) = match checked {
        Ok(checked) => checked,
        Err(page) => return page,
    };
    let details = json!({ "factor": factor, "count": mfa::backup::COUNT });
    let allowed =
        page_event(&principal, peer, &headers, BACKUP_CODES, Decision::Allow).with_details(details);
    if let Err(err) = state.audit.record(allowed).await {
        tracing::error!(error = %err, "new backup codes could not be recorded");
        return super::unavailable("No new backup codes were made.");
    }
    match new_codes_page(&state, &principal, &token, &user).await {
        Ok(page) => page,
        Err(e) => cannot(e),
    }
}

/// A change on the account page that needs a current code: who asks, for what `action`.
struct CodeAsked<'a> {
    state: &'a AppState,
    principal: &'a Principal,
    peer: Peer,
    headers: &'a HeaderMap,
    action: &'static str,
}

/// Checks `proof` from `user` for `action` in the "right now" tier of a page: a code against
/// their app (counted towards the lockout), or a security key's answer to the page's
/// challenge; refusals audited. The factor when right; what to say on the page, or the page to
/// answer with, when not.
pub(crate) async fn check_right_now(
    state: &AppState,
    principal: &Principal,
    peer: Peer,
    headers: &HeaderMap,
    action: &'static str,
    user: &UserRow,
    proof: Proof<'_>,
) -> Result<&'static str, Refused> {
    let asked = CodeAsked {
        state,
        principal,
        peer,
        headers,
        action,
    };
    asked
        .check_proof(user, proof, keys::Purpose::RightNow)
        .await
}

/// What a page of the "right now" tier offers its person: a code field (they have an app),
/// and a challenge for their security keys (they have some).
pub(crate) struct RightNow {
    /// They have an authenticator app: the change takes its code (or a key) with the form.
    pub needs_code: bool,
    /// A challenge for their keys, one per page (whichever form is sent takes it).
    pub key: Option<keys::Challenge>,
}

/// [`RightNow`] for `principal` (nothing for API tokens and people without an app).
pub(crate) async fn right_now(
    state: &AppState,
    principal: &Principal,
) -> Result<RightNow, Response> {
    let Some(user) = has_app(state, principal).await? else {
        return Ok(RightNow {
            needs_code: false,
            key: None,
        });
    };
    match key_challenge(state, user.id, keys::Purpose::RightNow).await {
        Ok(key) => Ok(RightNow {
            needs_code: true,
            key,
        }),
        Err(e) => Err(cannot(e)),
    }
}

#[derive(Template)]
#[template(path = "confirm_now.html")]
struct ConfirmNowPage<'a> {
    csrf: String,
    what: &'a str,
    action: &'a str,
    back: &'a str,
    fields: &'a [(&'a str, &'a str)],
    key: Option<keys::Challenge>,
    error: Option<String>,
}

/// A change of the "right now" tier asked from a page: what it is, where its form posts, the
/// form's fields (sent again with the code), and where "Cancel" goes.
pub(crate) struct NowAsked<'a> {
    /// "Changing someone's role".
    pub what: &'a str,
    /// The audit action (the permission).
    pub action: &'static str,
    /// The form's address.
    pub form_action: &'a str,
    /// The form's fields besides the CSRF token and the proof.
    pub fields: &'a [(&'a str, &'a str)],
    /// The page it came from.
    pub back: &'a str,
}

/// For a change of the "right now" tier from a page: `None` when it may go ahead — its person
/// has an authenticator app and the form carries a right code (or a security key's answer),
/// or they have none (then, as for any privileged change, `MFA_REQUIRED` still asks for the
/// step-up) — else the page to answer with: "Confirm it's you", sending the same form again
/// with a code (refusals audited, wrong codes counted).
pub(crate) async fn confirm_now(
    state: &AppState,
    principal: &Principal,
    peer: Peer,
    headers: &HeaderMap,
    token: &str,
    asked: &NowAsked<'_>,
    proof: Option<Proof<'_>>,
) -> Option<Response> {
    let user = match has_app(state, principal).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            let (action, back) = (asked.action, asked.back);
            return step_up_page(state, principal, peer, headers, token, action, back).await;
        }
        Err(page) => return Some(page),
    };
    let (status, error) = match proof {
        None => {
            let details = json!({ "reason": "mfa_code_required" });
            super::page_refusal(state, principal, peer, headers, asked.action, details).await;
            (StatusCode::FORBIDDEN, None)
        }
        Some(proof) => {
            let checked =
                check_right_now(state, principal, peer, headers, asked.action, &user, proof);
            match checked.await {
                Ok(_) => return None,
                Err(Refused::Show(error)) => (StatusCode::BAD_REQUEST, Some(error)),
                Err(Refused::Page(page)) => return Some(page),
            }
        }
    };
    let key = match key_challenge(state, user.id, keys::Purpose::RightNow).await {
        Ok(key) => key,
        Err(e) => return Some(cannot(e)),
    };
    Some(render(
        status,
        &ConfirmNowPage {
            csrf: super::cookies::csrf_token(token),
            what: asked.what,
            action: asked.form_action,
            back: asked.back,
            fields: asked.fields,
            key,
            error,
        },
    ))
}

/// The fields a "right now" form carries its proof in: a code from the person's app, or the
/// page's security-key challenge and a key's answer to it.
#[derive(Debug, Default, Deserialize)]
pub struct ProofFields {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    ceremony: Option<String>,
    #[serde(default)]
    answer: Option<String>,
}

impl ProofFields {
    /// The proof given, if any (see [`given`]).
    pub(crate) fn given(&self) -> Option<Proof<'_>> {
        given(
            self.code.as_deref(),
            self.ceremony.as_deref(),
            self.answer.as_deref(),
        )
    }
}

/// The proof a "right now" form carries: a security key's answer, else a code that is not
/// blank; `None` when it carries neither.
fn given<'a>(
    code: Option<&'a str>,
    ceremony: Option<&'a str>,
    answer: Option<&'a str>,
) -> Option<Proof<'a>> {
    match Proof::of(code.map(str::trim), ceremony, answer) {
        Proof::Code("") => None,
        proof => Some(proof),
    }
}

/// The signed-in person, when they have an authenticator app (whose code the changes of the
/// "right now" tier need with the form); `None` for everyone else (API tokens included).
pub(crate) async fn has_app(
    state: &AppState,
    principal: &Principal,
) -> Result<Option<UserRow>, Response> {
    let Some(user_id) = principal.user_id() else {
        return Ok(None);
    };
    let found = async {
        match mfa::required(&state.store, user_id).await? {
            Some(_) => Ok(state.store.user_by_id(user_id).await?),
            None => Ok(None),
        }
    };
    found.await.map_err(|e: mfa::MfaError| {
        tracing::error!(error = %e, "could not read whether a person has an authenticator app");
        super::StoreDown.into_response()
    })
}

/// Why a code on the account page let nothing through.
pub(crate) enum Refused {
    /// Say this on the page.
    Show(String),
    /// Answer with this page.
    Page(Response),
}

impl CodeAsked<'_> {
    fn event(&self, decision: Decision, details: serde_json::Value) -> crate::audit::AuditEvent {
        page_event(
            self.principal,
            self.peer,
            self.headers,
            self.action,
            decision,
        )
        .with_details(details)
    }

    /// Checks `proof` from `user`: a code as [`CodeAsked::check`] does, or a security key's
    /// answer to a challenge for `purpose` (not counted towards the lockout: a signature is
    /// not guessed; refusals audited). The factor it was when right.
    async fn check_proof(
        &self,
        user: &UserRow,
        proof: Proof<'_>,
        purpose: keys::Purpose,
    ) -> Result<&'static str, Refused> {
        let (ceremony, answer) = match proof {
            Proof::Code(code) => return self.check(user, code).await,
            Proof::Key { ceremony, answer } => (ceremony, answer),
        };
        let Some(rp) = self.state.keys.as_deref() else {
            return Err(Refused::Show(
                "Security keys are off on this gateway.".into(),
            ));
        };
        let store = &self.state.store;
        match rp
            .finish_use(store, user.id, purpose, ceremony, answer, now_ms())
            .await
        {
            Ok(Ok(_)) => Ok(keys::FACTOR),
            Ok(Err(refusal)) => {
                let details = json!({ "reason": refusal.reason(), "factor": keys::FACTOR });
                record_refusal(self.state, self.event(Decision::Deny, details)).await;
                Err(Refused::Show(refusal.explain().into()))
            }
            Err(e) => Err(Refused::Page(cannot(e))),
        }
    }

    /// Checks `code` against `user`'s app (or backup codes), as at sign-in: counted towards
    /// the lockout, refusals audited. The factor it was (`totp`, `backup_code`) when right.
    async fn check(&self, user: &UserRow, code: &str) -> Result<&'static str, Refused> {
        let state = self.state;
        let checked = mfa::check_users_code(state, user.id, code);
        let refusal = match checked.await {
            // Nothing on: nothing to change.
            Ok(None) => {
                return Err(Refused::Page(Redirect::to("/account/mfa").into_response()));
            }
            Ok(Some(CodeCheck::Accepted(factor))) => return Ok(factor),
            Ok(Some(check)) => match check.refusal() {
                Some(refusal) => refusal,
                None => {
                    let error =
                        "Enter the six digits your authenticator app shows, or a backup code.";
                    return Err(Refused::Show(error.into()));
                }
            },
            Err(e) => return Err(Refused::Page(cannot(e))),
        };
        let error = match refusal.locked_until {
            Some(until) => format!(
                "Too many wrong codes: codes are refused until {} UTC.",
                time(until)
            ),
            None => "That code is not right (or was used already).".to_string(),
        };
        let mut details = refusal.details;
        if let Some(map) = details.as_object_mut() {
            map.insert("reason".into(), refusal.reason.into());
        }
        record_refusal(state, self.event(Decision::Deny, details)).await;
        Err(Refused::Show(error))
    }
}

async fn record_refusal(state: &AppState, mut e: crate::audit::AuditEvent) {
    e.status = Some(403);
    if let Err(err) = state.audit.record(e).await {
        tracing::error!(error = %err, "could not audit a refused authenticator change");
    }
}

/// The page for an OTP the YubiKey validation service could not judge.
pub(crate) fn yubico_down() -> Response {
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Cannot check YubiKeys",
        "The YubiKey validation service cannot be reached (or its answer did not check out), \
         so nothing was let through. Try again, or use a code from your authenticator app.",
    )
}
