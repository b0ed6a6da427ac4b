//! The second step of a sign-in for those with an authenticator app: after the identity
//! provider, the attempt waits (status `mfa`) for a code on `/api/v1/auth/mfa`, in the browser
//! that started it (its login cookie), and no session exists until the code is right. Web and
//! CLI sign-ins both pass here, since both sign in through a browser.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use super::callback::{Admitted, NotSignedIn, answer, complete};
use super::end_attempt;
use super::record::{audit_signin, signin_event};
use crate::app::{AppState, Peer};
use crate::mfa::{self, CodeCheck};
use crate::store::{LoginRow, NewTrustedDevice, TotpRow, UserRow, now_ms};
use crate::web::{self, PageForm, cookies};

/// Where the code is asked for.
pub const MFA_PATH: &str = "/api/v1/auth/mfa";

/// The audit action of a code given at sign-in (as to step up).
use crate::api::mfa::ACTION;

#[derive(askama::Template)]
#[template(path = "mfa_challenge.html")]
struct ChallengePage<'a> {
    email: &'a str,
    channel: &'a str,
    csrf: &'a str,
    error: Option<&'a str>,
    /// With `MFA_REQUIRED`, for someone without an app: the one to set up now.
    setup: Option<mfa::totp::Provisioning>,
    /// How many days "trust this browser" lasts (`None`: trust is off).
    trust_days: Option<u64>,
    /// A challenge for the person's security keys, when they have any.
    key: Option<mfa::keys::Challenge>,
}

/// What the second step of a sign-in is for its person.
enum SecondStep {
    /// A code from their app.
    Code(TotpRow),
    /// Setting up an app, which `MFA_REQUIRED` asks of everyone.
    SetUp,
    /// Nothing: no app, and none required.
    Nothing,
}

async fn second_step(state: &AppState, user_id: i64) -> Result<SecondStep, mfa::MfaError> {
    Ok(match mfa::required(&state.store, user_id).await? {
        Some(row) => SecondStep::Code(row),
        None if state.config.mfa_required => SecondStep::SetUp,
        None => SecondStep::Nothing,
    })
}

/// Moves a sign-in whose person has an authenticator (or must set one up: `MFA_REQUIRED`) to
/// wait for their code and sends the browser to the code page; `None` when there is nothing
/// to ask (the sign-in goes on) — no app, or a browser its person trusted (then `admitted`
/// records that as its second factor).
pub(super) async fn ask_if_required(
    state: &AppState,
    headers: &HeaderMap,
    attempt: &LoginRow,
    admitted: &mut Admitted,
) -> Result<Option<Response>, NotSignedIn> {
    let user = &admitted.user;
    match second_step(state, user.id).await {
        Ok(SecondStep::Nothing) => return Ok(None),
        Ok(SecondStep::Code(_)) => {
            if trusted_browser(state, headers, user.id).await {
                admitted.second_factor = Some(mfa::trusted::FACTOR);
                return Ok(None);
            }
        }
        Ok(SecondStep::SetUp) => {}
        Err(e) => {
            tracing::error!(error = %e, "could not tell whether a user has an authenticator");
            end_attempt(
                state,
                &attempt.id,
                "exchanging",
                "refused",
                None,
                Some("store_unavailable"),
            )
            .await;
            return Err(NotSignedIn::unavailable("You are not signed in."));
        }
    }
    let name = admitted.new_name.as_deref();
    match state
        .store
        .await_second_factor(&attempt.id, user.id, name)
        .await
    {
        Ok(true) => Ok(Some(Redirect::to(MFA_PATH).into_response())),
        Ok(false) => Err(NotSignedIn::unavailable(
            "You are not signed in; start again.",
        )),
        Err(e) => {
            tracing::error!(error = %e, "a sign-in could not be moved to its second factor");
            Err(NotSignedIn::unavailable("You are not signed in."))
        }
    }
}

/// Whether this browser is one `user_id` trusted (and trust is on). A store that cannot say
/// is a no: the code is asked for.
async fn trusted_browser(state: &AppState, headers: &HeaderMap, user_id: i64) -> bool {
    if state.config.mfa_trusted_device.is_none() {
        return false;
    }
    let Some(cookie) = cookies::device(state, headers) else {
        return false;
    };
    match mfa::trusted::recognised(&state.store, &cookie, user_id, now_ms()).await {
        Ok(found) => found.is_some(),
        Err(e) => {
            tracing::warn!(error = %e, "could not check a trusted browser: asking for the code");
            false
        }
    }
}

/// Trusts this browser for `user`'s sign-ins (they ticked the box with a right code): the
/// event first, then the row, then the cookie; nothing is trusted when the trail cannot say
/// so.
async fn trust_browser(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    user: (i64, &str),
    response: &mut Response,
) {
    let Some(days) = state.config.mfa_trusted_device else {
        return;
    };
    let (user_id, email) = user;
    let (secret, hash) = mfa::trusted::issue();
    let expires_at = now_ms() + i64::try_from(days.as_millis()).unwrap_or(i64::MAX / 2);
    let details = json!({ "expires_at": web::time(expires_at) });
    let event = signin_event(&peer, headers, TRUST_ACTION, Some(email), true, details);
    if let Err(e) = state.audit.record(event).await {
        tracing::error!(error = %e, "a browser was not trusted: the trail cannot record it");
        return;
    }
    let user_agent = crate::audit::audited_user_agent(headers);
    let ip = peer.ip.to_string();
    let new = NewTrustedDevice {
        user_id,
        token_hash: &hash,
        user_agent: user_agent.as_deref(),
        ip: Some(&ip),
        expires_at,
    };
    match state.store.trust_device(&new).await {
        Ok(_) => cookies::set_device(state, response, &secret, days.as_secs()),
        Err(e) => tracing::error!(error = %e, "a browser could not be trusted"),
    }
}

/// The audit action of trusting a browser at sign-in.
pub const TRUST_ACTION: &str = "gateway:mfa:trust_device";

/// This browser's sign-in waiting for a code, or the page to show instead.
async fn waiting_attempt(state: &AppState, headers: &HeaderMap) -> Result<LoginRow, Response> {
    let gone = || {
        web::message(
            StatusCode::GONE,
            "No sign-in waiting",
            "This browser has no sign-in waiting for a code: it finished, expired or was \
             replaced. Sign in again.",
        )
    };
    let Some((id, _)) = cookies::login(state, headers) else {
        return Err(gone());
    };
    match state.store.login_by_id(&id).await {
        Ok(Some(a)) if a.status == "mfa" && super::browser_holds(state, headers, &a) => {
            if a.expires_at <= now_ms() {
                end_attempt(state, &a.id, "mfa", "refused", None, Some("expired")).await;
                return Err(web::message(
                    StatusCode::GONE,
                    "Sign-in expired",
                    "The sign-in took too long. Start again.",
                ));
            }
            Ok(a)
        }
        Ok(_) => Err(gone()),
        Err(e) => {
            tracing::error!(error = %e, "login lookup failed");
            Err(web::unavailable("You are not signed in."))
        }
    }
}

/// The person signing in with `attempt`, or the page to show instead.
async fn attempt_user(state: &AppState, attempt: &LoginRow) -> Result<UserRow, Response> {
    let found = match attempt.user_id {
        Some(id) => state.store.user_by_id(id).await,
        None => Ok(None),
    };
    match found {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(web::message(
            StatusCode::GONE,
            "Sign-in ended",
            "Sign in again.",
        )),
        Err(e) => {
            tracing::error!(error = %e, "user lookup failed");
            Err(web::unavailable("You are not signed in."))
        }
    }
}

/// The page asking `user` for a code (`error` says what was wrong with the last one), or with
/// `setup`, for the first code of the app to set up.
async fn challenge(
    state: &AppState,
    attempt: &LoginRow,
    user: &UserRow,
    setup: Option<mfa::totp::Provisioning>,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let csrf = cookies::csrf_token(super::browser_binding(attempt));
    let key = match setup {
        Some(_) => None,
        None => {
            let purpose = mfa::keys::Purpose::SignIn;
            match web::mfa::key_challenge(state, user.id, purpose).await {
                Ok(key) => key,
                Err(e) => return cannot_check(&e),
            }
        }
    };
    web::render(
        status,
        &ChallengePage {
            email: &user.email,
            channel: &attempt.channel,
            csrf: &csrf,
            error,
            setup,
            trust_days: state
                .config
                .mfa_trusted_device
                .map(|d| d.as_secs() / (24 * 3600)),
            key,
        },
    )
}

/// The page setting up `user`'s app during their sign-in (`MFA_REQUIRED`): the set-up this
/// sign-in started (less than 10 minutes ago), or a new one — never one started elsewhere,
/// whose secret someone else may have seen.
async fn setup_page(
    state: &AppState,
    attempt: &LoginRow,
    user: &UserRow,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let provisioning = async {
        let key = mfa::key(&state.config)?;
        let by = mfa::SetupBy::SignIn(super::browser_binding(attempt));
        let found = state.store.totp(user.id).await?;
        let secret = match by.owns(found.as_ref(), now_ms()) {
            Some(row) => key.open(user.id, &row.secret_sealed)?,
            None => match mfa::start_setup(&state.store, &key, user.id, by, now_ms()).await? {
                Some(secret) => secret,
                None => return Ok(None),
            },
        };
        mfa::totp::provisioning(&secret, &user.email).map(Some)
    };
    match provisioning.await {
        Ok(Some(p)) => challenge(state, attempt, user, Some(p), status, error).await,
        // Confirmed meanwhile (another tab): a code is what is asked now.
        Ok(None) => challenge(state, attempt, user, None, status, error).await,
        Err(e) => cannot_check(&e),
    }
}

/// The page for a second step the gateway cannot take (no key, a store error, the YubiKey
/// service down).
fn cannot_check(e: &mfa::MfaError) -> Response {
    if let mfa::MfaError::Yubico(e) = e {
        tracing::error!(error = %e, "a YubiKey OTP could not be checked");
        return web::mfa::yubico_down();
    }
    tracing::error!(error = %e, "a sign-in code could not be checked");
    web::message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Cannot check codes",
        "The gateway cannot check authenticator codes right now. Try again shortly; if it \
         persists, tell an administrator (the gateway's log says why).",
    )
}

/// The page for a sign-in whose app was removed while it waited.
async fn removed_meanwhile(state: &AppState, attempt: &LoginRow) -> Response {
    // Nothing to ask for now, but this sign-in was not checked against the app it started
    // with; starting again costs a click.
    give_up(state, attempt, "mfa_removed").await;
    web::message(
        StatusCode::CONFLICT,
        "Sign in again",
        "Your authenticator was removed while you were signing in. Sign in again.",
    )
}

/// `GET /api/v1/auth/mfa`: asks for the code of this browser's sign-in (with `MFA_REQUIRED`,
/// sets up the app of someone who has none).
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let attempt = match waiting_attempt(&state, &headers).await {
        Ok(attempt) => attempt,
        Err(page) => return page,
    };
    let user = match attempt_user(&state, &attempt).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    match second_step(&state, user.id).await {
        Ok(SecondStep::Code(_)) => {
            challenge(&state, &attempt, &user, None, StatusCode::OK, None).await
        }
        Ok(SecondStep::SetUp) => setup_page(&state, &attempt, &user, StatusCode::OK, None).await,
        Ok(SecondStep::Nothing) => removed_meanwhile(&state, &attempt).await,
        Err(e) => cannot_check(&e),
    }
}

/// Body of `POST /api/v1/auth/mfa`.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    csrf: Option<String>,
    code: Option<String>,
    /// "Trust this browser": its next sign-ins skip the code (`MFA_TRUSTED_DEVICE_DAYS`).
    #[serde(default)]
    trust: Option<String>,
    /// The security-key challenge the page carried.
    #[serde(default)]
    ceremony: Option<String>,
    /// A security key's answer to it (JSON), given instead of a code.
    #[serde(default)]
    answer: Option<String>,
}

/// `POST /api/v1/auth/mfa`: a right code completes the sign-in (a session, or the CLI's);
/// wrong ones are audited and counted, and the fifth in a row ends the sign-in and locks
/// codes out for 15 minutes.
pub async fn submit(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    PageForm(form): PageForm<CodeForm>,
) -> Response {
    let attempt = match waiting_attempt(&state, &headers).await {
        Ok(attempt) => attempt,
        Err(page) => return page,
    };
    if !cookies::csrf_ok(super::browser_binding(&attempt), form.csrf.as_deref()) {
        return web::stale_form();
    }
    let user = match attempt_user(&state, &attempt).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let email = Some(user.email.as_str());
    let refuse = |details: serde_json::Value| {
        let details = with_channel(details, &attempt.channel);
        audit_signin(&state, &peer, &headers, ACTION, email, false, details)
    };
    let code = form.code.as_deref().unwrap_or("");
    let trust = form.trust.as_deref().is_some_and(|t| !t.is_empty());
    let row = match second_step(&state, user.id).await {
        Ok(SecondStep::Code(row)) => row,
        Ok(SecondStep::SetUp) => {
            return set_up_at_sign_in(&state, peer, &headers, attempt, user, code, trust).await;
        }
        Ok(SecondStep::Nothing) => return removed_meanwhile(&state, &attempt).await,
        Err(e) => return cannot_check(&e),
    };
    let proof = web::mfa::Proof::of(
        form.code.as_deref(),
        form.ceremony.as_deref(),
        form.answer.as_deref(),
    );
    if let web::mfa::Proof::Key { ceremony, answer } = proof {
        let Some(rp) = state.keys.as_deref() else {
            let error = "Security keys are off on this gateway: enter a code.";
            let status = StatusCode::BAD_REQUEST;
            return challenge(&state, &attempt, &user, None, status, Some(error)).await;
        };
        let purpose = mfa::keys::Purpose::SignIn;
        return match rp
            .finish_use(&state.store, user.id, purpose, ceremony, answer, now_ms())
            .await
        {
            Ok(Ok(_)) => {
                go_on(
                    &state,
                    peer,
                    &headers,
                    attempt,
                    user,
                    mfa::keys::FACTOR,
                    trust,
                )
                .await
            }
            Ok(Err(refusal)) => {
                refuse(json!({ "reason": refusal.reason(), "factor": mfa::keys::FACTOR })).await;
                let status = StatusCode::UNAUTHORIZED;
                let error = refusal.explain();
                challenge(&state, &attempt, &user, None, status, Some(error)).await
            }
            Err(e) => cannot_check(&e),
        };
    }
    let checked = async {
        let key = mfa::key(&state.config)?;
        mfa::check_code(
            &state.store,
            &key,
            state.yubico.as_deref(),
            &row,
            code,
            now_ms(),
        )
        .await
    };
    let factor = match checked.await {
        Ok(CodeCheck::Accepted(factor)) => factor,
        Ok(CodeCheck::Malformed) => {
            let error = "Enter the six digits your authenticator app shows, or one of your \
                         backup codes.";
            return challenge(
                &state,
                &attempt,
                &user,
                None,
                StatusCode::BAD_REQUEST,
                Some(error),
            )
            .await;
        }
        Ok(CodeCheck::Wrong {
            failures,
            locked_until: None,
        }) => {
            refuse(json!({ "reason": "wrong_code", "failures": failures })).await;
            let left = mfa::MAX_FAILURES - failures;
            let error = format!(
                "That code is not right (or was used already). {left} more wrong in a row \
                 and codes are refused for 15 minutes."
            );
            return challenge(
                &state,
                &attempt,
                &user,
                None,
                StatusCode::UNAUTHORIZED,
                Some(&error),
            )
            .await;
        }
        Ok(
            check @ (CodeCheck::Wrong {
                locked_until: Some(until),
                ..
            }
            | CodeCheck::Locked { until }),
        ) => {
            refuse(json!({
                "reason": "locked_out", "until": web::time(until),
                "lockout_started": check.started_lockout(),
            }))
            .await;
            give_up(&state, &attempt, "mfa_locked").await;
            // To the nearest minute, at least one.
            let minutes = (((until - now_ms()).max(0) + 30_000) / 60_000).max(1);
            return web::message(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many wrong codes",
                &format!(
                    "Codes for {} are refused for {minutes} more minute(s) after too many wrong \
                     ones. Sign in again then, or ask an administrator.",
                    user.email
                ),
            );
        }
        Err(e) => return cannot_check(&e),
    };
    go_on(&state, peer, &headers, attempt, user, factor, trust).await
}

/// With `MFA_REQUIRED`, for someone without an app: its first `code` confirms the app being
/// set up (recorded as `gateway:mfa:enable`) and the sign-in goes on.
async fn set_up_at_sign_in(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    attempt: LoginRow,
    user: UserRow,
    code: &str,
    trust: bool,
) -> Response {
    let confirmed = async {
        let key = mfa::key(&state.config)?;
        let by = mfa::SetupBy::SignIn(super::browser_binding(&attempt));
        mfa::confirm_setup(&state.store, &key, user.id, by, code, now_ms()).await
    };
    match confirmed.await {
        Ok(mfa::Confirmed::Yes) => {
            let details = json!({ "factor": "totp", "channel": attempt.channel, "at": "sign_in" });
            let (email, action) = (Some(user.email.as_str()), "gateway:mfa:enable");
            audit_signin(state, &peer, headers, action, email, true, details).await;
            let (user_id, channel) = (user.id, attempt.channel.clone());
            let signed_in = go_on(state, peer, headers, attempt, user, "totp", trust).await;
            with_backup_codes(state, user_id, &channel, signed_in).await
        }
        Ok(mfa::Confirmed::WrongCode) => {
            let error = "That code is not right. Check the app's clock and enter the code it \
                         shows now.";
            setup_page(state, &attempt, &user, StatusCode::BAD_REQUEST, Some(error)).await
        }
        Ok(mfa::Confirmed::NothingToConfirm) => {
            // Another set-up (another sign-in, the account page) replaced this one.
            let error = "This set-up was replaced by one started elsewhere: add the new key \
                         below to your app (remove the old entry), then enter the code it shows.";
            setup_page(state, &attempt, &user, StatusCode::CONFLICT, Some(error)).await
        }
        Err(e) => cannot_check(&e),
    }
}

#[derive(askama::Template)]
#[template(path = "mfa_codes_made.html")]
struct CodesMadePage {
    codes: Vec<String>,
    /// Where the browser goes on to (a web sign-in); none for a CLI's.
    next: Option<String>,
}

/// A sign-in that has just turned its person's app on (`MFA_REQUIRED`): its backup codes, made
/// now and shown this once before the browser goes on, as turning the app on at
/// `/account/mfa` shows them. A sign-in that did not get through is answered as it was (the
/// codes can be made later, with a code, on `/account/mfa`).
async fn with_backup_codes(
    state: &AppState,
    user_id: i64,
    channel: &str,
    signed_in: Response,
) -> Response {
    let next = match signed_in.status() {
        status if status.is_redirection() => signed_in
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        StatusCode::OK if channel == "cli" => None,
        _ => return signed_in,
    };
    let codes = match mfa::backup::replace_for(state, user_id).await {
        Ok(Some(codes)) => codes,
        Ok(None) => return signed_in,
        Err(e) => {
            tracing::error!(error = %e, "backup codes could not be made at a sign-in");
            return signed_in;
        }
    };
    let mut page = web::render(StatusCode::OK, &CodesMadePage { codes, next });
    // The session (and trusted-browser) cookies the sign-in set, on the page instead.
    for cookie in signed_in.headers().get_all(header::SET_COOKIE) {
        page.headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    page
}

/// After a right code (`factor`: `totp`, `backup_code`): on to the session, exactly as a
/// sign-in without a second factor; with `trust`, this browser is trusted once signed in.
async fn go_on(
    state: &AppState,
    peer: Peer,
    headers: &HeaderMap,
    attempt: LoginRow,
    user: UserRow,
    factor: &'static str,
    trust: bool,
) -> Response {
    match state.store.second_factor_given(&attempt.id, now_ms()).await {
        Ok(true) => {}
        Ok(false) => {
            return web::message(StatusCode::GONE, "Sign-in ended", "Sign in again.");
        }
        Err(e) => {
            tracing::error!(error = %e, "sign-in attempt could not be taken");
            return web::unavailable("You are not signed in.");
        }
    }
    let (user_id, email) = (user.id, user.email.clone());
    let admitted = Admitted {
        new_name: attempt.provider_name.clone(),
        user,
        second_factor: Some(factor),
    };
    let result = complete(state, peer, headers, attempt, admitted).await;
    let signed_in = result.is_ok();
    let mut response = answer(state, peer, headers, result).await;
    if trust && signed_in {
        trust_browser(state, peer, headers, (user_id, &email), &mut response).await;
    }
    response
}

/// Ends `attempt`, waiting for its code, as refused for `reason`.
async fn give_up(state: &AppState, attempt: &LoginRow, reason: &str) {
    end_attempt(state, &attempt.id, "mfa", "refused", None, Some(reason)).await;
}

fn with_channel(mut details: serde_json::Value, channel: &str) -> serde_json::Value {
    if let Some(map) = details.as_object_mut() {
        map.insert("channel".into(), channel.into());
    }
    details
}
