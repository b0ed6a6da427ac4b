//! Multi-factor authentication with an authenticator app (TOTP).
//!
//! A user sets it up on `/account/mfa`: the gateway makes a secret, seals it with
//! `MFA_ENCRYPTION_KEY` ([`seal`]) and shows it as a QR code; the first right code confirms
//! it. From then on every sign-in of theirs, web or CLI, stops after the identity provider and
//! asks for a code (`api::auth::mfa`) before a session exists. Five wrong codes in a row lock
//! codes out for 15 minutes; a code is accepted once.

pub mod backup;
pub mod cli_key;
pub mod keys;
pub mod rotate;
pub mod seal;
pub mod step_up;
pub mod totp;
pub mod trusted;
pub mod yubico;

pub use seal::MfaKey;

use crate::store::{Store, StoreError, TotpRow};

/// Wrong codes in a row before codes are refused for [`LOCKOUT_MS`].
pub const MAX_FAILURES: i64 = 5;
/// How long codes are refused after [`MAX_FAILURES`] wrong ones.
pub const LOCKOUT_MS: i64 = 15 * 60 * 1000;

/// Why a second factor could not be checked or set up.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// `MFA_ENCRYPTION_KEY` is not set.
    #[error("MFA_ENCRYPTION_KEY is not set, so TOTP secrets cannot be sealed or read")]
    NotConfigured,
    /// `MFA_ENCRYPTION_KEY` is not a 32-byte key.
    #[error("MFA_ENCRYPTION_KEY is not 32 bytes of hexadecimal")]
    BadKey,
    /// A sealed secret does not open with this key (the key changed, or the row did).
    #[error("a TOTP secret does not open with MFA_ENCRYPTION_KEY (was the key changed?)")]
    Unreadable,
    /// The TOTP library refused (an account name it cannot put in a URI).
    #[error("TOTP: {0}")]
    Totp(String),
    /// The YubiKey validation service could not say whether an OTP is good.
    #[error(transparent)]
    Yubico(#[from] yubico::YubicoError),
    /// The WebAuthn library refused to make a challenge, or a stored ceremony is unreadable.
    #[error("security keys: {0}")]
    Keys(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key from the configuration's `MFA_ENCRYPTION_KEY`, with the retired ones
/// (`MFA_ENCRYPTION_KEY_RETIRED`).
pub fn key(config: &gateway_core::config::Config) -> Result<MfaKey, MfaError> {
    let hex_key = config
        .mfa_encryption_key
        .as_ref()
        .ok_or(MfaError::NotConfigured)?;
    let retired: Vec<&str> = config
        .mfa_encryption_key_retired
        .iter()
        .map(|k| k.expose())
        .collect();
    MfaKey::from_hex(hex_key.expose())?.with_retired(&retired)
}

/// Whether user `user_id` must give a code to sign in: a confirmed authenticator.
pub async fn required(store: &Store, user_id: i64) -> Result<Option<TotpRow>, MfaError> {
    Ok(store
        .totp(user_id)
        .await?
        .filter(|row| row.confirmed_at.is_some()))
}

/// Notes on session `session_id` that its person proved their second factor at `at`. Best
/// effort: a session left without the note is asked for a code again before a privileged
/// change (see [`step_up`]), which is the safe side.
pub async fn note_proof(store: &Store, session_id: i64, at: i64) {
    if let Err(e) = store.set_session_mfa(session_id, at).await {
        tracing::warn!(error = %e, session_id, "could not note a session's second factor");
    }
}

/// What checking a code found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    /// Right, and now used: the factor it was (`totp`, `backup_code`, `yubikey`).
    Accepted(&'static str),
    /// Neither six digits, a backup code nor a YubiKey OTP (where YubiKeys are taken): not
    /// counted as a guess.
    Malformed,
    /// Wrong (or already used); `locked_until` is set when this one started a lockout.
    Wrong {
        /// Wrong codes in a row so far (0 once locked).
        failures: i64,
        /// Codes are refused until then (unix ms), if this one locked them.
        locked_until: Option<i64>,
    },
    /// Codes are refused until then (unix ms), after too many wrong ones.
    Locked {
        /// Unix ms.
        until: i64,
    },
}

impl CodeCheck {
    /// True for the wrong code that started a lockout (not for those refused during one).
    pub fn started_lockout(self) -> bool {
        matches!(
            self,
            CodeCheck::Wrong {
                locked_until: Some(_),
                ..
            }
        )
    }
}

/// A code refused for being wrong, or for coming during a lockout: what the audit event of the
/// refusal records.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeRefusal {
    /// `wrong_code` or `locked_out`.
    pub reason: &'static str,
    /// Besides the reason: wrong codes in a row so far, or until when codes are refused and
    /// whether this one started the lockout.
    pub details: serde_json::Value,
    /// Codes are refused until then (unix ms), when they are.
    pub locked_until: Option<i64>,
}

impl CodeCheck {
    /// The refusal this check is, for a wrong code or one given during a lockout (`None` for
    /// a code accepted, or not a code at all).
    pub fn refusal(self) -> Option<CodeRefusal> {
        match self {
            CodeCheck::Wrong {
                failures,
                locked_until: None,
            } => Some(CodeRefusal {
                reason: "wrong_code",
                details: serde_json::json!({ "failures": failures }),
                locked_until: None,
            }),
            CodeCheck::Wrong {
                locked_until: Some(until),
                ..
            }
            | CodeCheck::Locked { until } => Some(CodeRefusal {
                reason: "locked_out",
                details: serde_json::json!({
                    "until": crate::web::time(until),
                    "lockout_started": self.started_lockout(),
                }),
                locked_until: Some(until),
            }),
            CodeCheck::Accepted(_) | CodeCheck::Malformed => None,
        }
    }
}

/// Checks `code` against `row`, user `row.user_id`'s confirmed authenticator, at `now_ms`:
/// a right code for a step not used before is accepted (and that step used up), as is one of
/// the user's unused backup codes (then used up), and an OTP from one of their YubiKeys that
/// `yubico` (when YubiKeys are taken) says is good; a wrong one of any is counted towards a
/// lockout.
pub async fn check_code(
    store: &Store,
    key: &MfaKey,
    yubico: Option<&yubico::Yubico>,
    row: &TotpRow,
    code: &str,
    now_ms: i64,
) -> Result<CodeCheck, MfaError> {
    if row.locked_until > now_ms {
        return Ok(CodeCheck::Locked {
            until: row.locked_until,
        });
    }
    if let Some(code) = totp::normalise(code) {
        let secret = key.open(row.user_id, &row.secret_sealed)?;
        let now_secs = u64::try_from(now_ms / 1000).unwrap_or(0);
        if let Some(step) = totp::matching_step(&secret, &code, now_secs) {
            let step = i64::try_from(step).unwrap_or(i64::MAX);
            if store.accept_totp_step(row.user_id, step, now_ms).await? {
                return Ok(CodeCheck::Accepted(totp::FACTOR));
            }
            // Used already, or locked meanwhile by wrong codes elsewhere: a replayed code is
            // counted as a guess like any other.
        }
    } else if let Some(code) = backup::normalise(code) {
        // Under this key, or a retired one for codes made before a rotation.
        for hash in key.backup_code_hashes(row.user_id, &code) {
            if store.use_backup_code(row.user_id, &hash, now_ms).await? {
                return Ok(CodeCheck::Accepted(backup::FACTOR));
            }
        }
    } else if let (Some(public_id), Some(client)) = (yubico::public_id(code), yubico) {
        // Asked of Yubico only for one of theirs; any other is a wrong code like any other.
        let theirs = store.yubikeys_of(row.user_id).await?;
        if let Some(found) = theirs.iter().find(|k| k.public_id == public_id) {
            let otp = code.trim().to_ascii_lowercase();
            if client.verify(&otp).await? == yubico::Verdict::Valid {
                store.yubikey_used(found.id, now_ms).await?;
                return Ok(CodeCheck::Accepted(yubico::FACTOR));
            }
        }
    } else {
        return Ok(CodeCheck::Malformed);
    }
    let failure = store
        .record_totp_failure(row.user_id, now_ms, MAX_FAILURES, LOCKOUT_MS)
        .await?;
    Ok(match failure {
        Some(f) if f.locked_until > now_ms => CodeCheck::Wrong {
            failures: f.failures,
            locked_until: Some(f.locked_until),
        },
        Some(f) => CodeCheck::Wrong {
            failures: f.failures,
            locked_until: None,
        },
        // Removed meanwhile: nothing to count against.
        None => CodeCheck::Wrong {
            failures: 0,
            locked_until: None,
        },
    })
}

/// Checks `code` from user `user_id` as [`check_code`] does, against their confirmed app (with
/// the gateway's key, and its YubiKey service when configured); `None` when they have no app.
pub async fn check_users_code(
    state: &crate::app::AppState,
    user_id: i64,
    code: &str,
) -> Result<Option<CodeCheck>, MfaError> {
    let Some(row) = required(&state.store, user_id).await? else {
        return Ok(None);
    };
    let key = key(&state.config)?;
    let yubico = state.yubico.as_deref();
    let now = crate::store::now_ms();
    check_code(&state.store, &key, yubico, &row, code, now)
        .await
        .map(Some)
}

/// How long a set-up in progress may be shown and confirmed after it was started.
pub const SETUP_MS: i64 = 10 * 60 * 1000;

/// Who is setting up an authenticator app: only they see its secret and confirm it, for
/// [`SETUP_MS`]. Another session of the same person — a cookie stolen long ago — must not read
/// a secret while its owner scans it.
#[derive(Debug, Clone, Copy)]
pub enum SetupBy<'a> {
    /// A signed-in session, on `/account/mfa`.
    Session(i64),
    /// A sign-in with `MFA_REQUIRED`: what binds its browser (the hash of the round trip's
    /// secret in that browser's login cookie).
    SignIn(&'a str),
}

impl SetupBy<'_> {
    /// As stored (`mfa_totp.setup_by`): a sign-in's binding only hashed (again).
    pub fn tag(&self) -> String {
        match self {
            SetupBy::Session(id) => format!("session:{id}"),
            SetupBy::SignIn(attempt) => {
                format!("sign_in:{}", crate::identity::hash_token(attempt))
            }
        }
    }

    /// `row`, when it is a set-up in progress that this one started less than [`SETUP_MS`]
    /// before `now_ms`.
    pub fn owns<'r>(&self, row: Option<&'r TotpRow>, now_ms: i64) -> Option<&'r TotpRow> {
        row.filter(|r| {
            r.confirmed_at.is_none()
                && r.setup_by.as_deref() == Some(self.tag().as_str())
                && now_ms.saturating_sub(r.created_at) < SETUP_MS
        })
    }
}

/// A new secret for user `user_id`, sealed and stored as an authenticator being set up `by`;
/// `None` when a confirmed one exists.
pub async fn start_setup(
    store: &Store,
    key: &MfaKey,
    user_id: i64,
    by: SetupBy<'_>,
    now_ms: i64,
) -> Result<Option<Vec<u8>>, MfaError> {
    let secret = totp::new_secret();
    let sealed = key.seal(user_id, &secret)?;
    Ok(store
        .start_totp(user_id, &sealed, &by.tag(), now_ms)
        .await?
        .then_some(secret))
}

/// What confirming a setup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// Confirmed: sign-ins ask for codes from now on.
    Yes,
    /// The code is not the authenticator's.
    WrongCode,
    /// No setup in progress by this one (never started, confirmed already, replaced
    /// meanwhile, started by another session, or older than [`SETUP_MS`]).
    NothingToConfirm,
}

/// Confirms user `user_id`'s authenticator being set up `by` with its first `code`.
pub async fn confirm_setup(
    store: &Store,
    key: &MfaKey,
    user_id: i64,
    by: SetupBy<'_>,
    code: &str,
    now_ms: i64,
) -> Result<Confirmed, MfaError> {
    let found = store.totp(user_id).await?;
    let Some(row) = by.owns(found.as_ref(), now_ms) else {
        return Ok(Confirmed::NothingToConfirm);
    };
    let Some(code) = totp::normalise(code) else {
        return Ok(Confirmed::WrongCode);
    };
    let secret = key.open(user_id, &row.secret_sealed)?;
    let now_secs = u64::try_from(now_ms / 1000).unwrap_or(0);
    let Some(step) = totp::matching_step(&secret, &code, now_secs) else {
        return Ok(Confirmed::WrongCode);
    };
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    Ok(
        if store
            .confirm_totp(user_id, &row.secret_sealed, step, now_ms)
            .await?
        {
            Confirmed::Yes
        } else {
            Confirmed::NothingToConfirm
        },
    )
}
