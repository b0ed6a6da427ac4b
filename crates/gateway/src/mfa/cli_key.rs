//! A security key for the CLI, through the browser. The CLI cannot talk to a security key
//! (WebAuthn lives in browsers), so where the gateway asks a CLI session for a code its person
//! may confirm with a key instead:
//!
//! 1. the CLI asks for a confirmation ([`start`]) and gets an id, a link carrying it and a
//!    short code to show;
//! 2. the person opens the link in a browser signed in as them, checks the code is the one
//!    their terminal shows, and answers with one of their keys (`web::key_confirm`), which
//!    marks the confirmation confirmed;
//! 3. the CLI, polling with the id ([`collect`]), is handed a proof (`rgk_…`) once;
//! 4. the CLI gives the proof where it would give a code: it counts as one for that session
//!    alone, once, within [`PROOF_MS`] ([`take_proof`]).
//!
//! The id alone is worth nothing: only the session that asked may collect, and only the
//! person's own browser session may confirm. The store keeps only SHA-256 hashes of the id and
//! the proof; the proof is masked like the gateway's tokens wherever it might be written.

use crate::identity::{hash_token, short_code};
use crate::oidc::random_token;
use crate::store::{KeyConfirmationRow, NewKeyConfirmation, Store, StoreError};

/// How a proof starts: it reads as the gateway's, and the redactor masks it.
pub const PROOF_PREFIX: &str = "rgk_";

/// How long a confirmation may wait for its key and its CLI.
pub const REQUEST_MS: i64 = 5 * 60 * 1000;

/// How long a proof counts once handed out: long enough for the command to send it.
pub const PROOF_MS: i64 = 2 * 60 * 1000;

/// The purpose that keeps these codes apart from the CLI sign-in's.
const CODE_PURPOSE: &str = "rack-gateway key confirmation";

/// Longest id taken from outside (a real one has 43 characters).
const MAX_ID_CHARS: usize = 128;

/// A confirmation just asked for.
#[derive(Debug, Clone)]
pub struct Started {
    /// Its id, for the link and for collecting: only its SHA-256 is stored.
    pub id: String,
    /// The code the terminal and the page both show.
    pub code: String,
}

/// The code the terminal and the page show for confirmation `id`.
pub fn code(id: &str) -> String {
    short_code(CODE_PURPOSE, id)
}

/// Whether `code` (given where an authenticator code goes) is a proof rather than a code.
pub fn is_proof(code: &str) -> bool {
    code.trim().starts_with(PROOF_PREFIX)
}

fn hash_id(id: &str) -> Option<String> {
    let id = id.trim();
    (!id.is_empty() && id.len() <= MAX_ID_CHARS).then(|| hash_token(id))
}

/// Asks for a confirmation of session `session_id` by user `user_id`'s key.
pub async fn start(
    store: &Store,
    user_id: i64,
    session_id: i64,
    now: i64,
) -> Result<Started, StoreError> {
    let id = random_token();
    let new = NewKeyConfirmation {
        id_hash: &hash_token(&id),
        user_id,
        session_id,
        now,
        expires_at: now + REQUEST_MS,
    };
    store.start_key_confirmation(&new).await?;
    let code = code(&id);
    Ok(Started { id, code })
}

/// Why a confirmation cannot be confirmed or collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No such confirmation (or not this person's or session's: the same answer, so an id
    /// says nothing to someone it is not for).
    Unknown,
    /// Expired, or confirmed (or collected) already.
    Over,
}

/// Confirmation `id` while it waits for user `user_id`'s key at `now`.
pub async fn waiting(
    store: &Store,
    id: &str,
    user_id: i64,
    now: i64,
) -> Result<Result<KeyConfirmationRow, Unavailable>, StoreError> {
    let Some(hash) = hash_id(id) else {
        return Ok(Err(Unavailable::Unknown));
    };
    Ok(match store.key_confirmation(&hash).await? {
        Some(row) if row.user_id != user_id => Err(Unavailable::Unknown),
        Some(row) if row.confirmed_at.is_some() || row.expires_at <= now => Err(Unavailable::Over),
        Some(row) => Ok(row),
        None => Err(Unavailable::Unknown),
    })
}

/// Marks confirmation `id` confirmed by user `user_id`'s key `key_id`: whether it still
/// waited (the first answer wins).
pub async fn confirm(
    store: &Store,
    id: &str,
    user_id: i64,
    key_id: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let Some(hash) = hash_id(id) else {
        return Ok(false);
    };
    store
        .confirm_key_confirmation(&hash, user_id, key_id, now)
        .await
}

/// Where a confirmation stands for the CLI session collecting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collected {
    /// Waiting for the key.
    Pending,
    /// Confirmed: the proof, handed out now and never again.
    Proof(String),
    /// Expired, or its proof handed out already.
    Over,
}

/// Collects confirmation `id` for session `session_id` at `now`.
pub async fn collect(
    store: &Store,
    id: &str,
    session_id: i64,
    now: i64,
) -> Result<Result<Collected, Unavailable>, StoreError> {
    let Some(hash) = hash_id(id) else {
        return Ok(Err(Unavailable::Unknown));
    };
    let row = match store.key_confirmation(&hash).await? {
        Some(row) if row.session_id == session_id => row,
        _ => return Ok(Err(Unavailable::Unknown)),
    };
    if row.expires_at <= now || row.proof_expires_at.is_some() {
        return Ok(Ok(Collected::Over));
    }
    if row.confirmed_at.is_none() {
        return Ok(Ok(Collected::Pending));
    }
    let proof = format!("{PROOF_PREFIX}{}", random_token());
    let handed = store
        .hand_out_key_proof(&hash, session_id, &hash_token(&proof), now, now + PROOF_MS)
        .await?;
    Ok(Ok(if handed {
        Collected::Proof(proof)
    } else {
        // Another poll took it a moment ago.
        Collected::Over
    }))
}

/// Takes `proof` for session `session_id` at `now`: whether it counts (that session's, not
/// used, not expired). It is then used up.
pub async fn take_proof(
    store: &Store,
    proof: &str,
    session_id: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let proof = proof.trim();
    if !proof.starts_with(PROOF_PREFIX) || proof.len() > MAX_ID_CHARS {
        return Ok(false);
    }
    store
        .take_key_proof(&hash_token(proof), session_id, now)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_are_told_from_codes() {
        assert!(is_proof("rgk_abc"));
        assert!(is_proof("  rgk_abc\n"));
        assert!(!is_proof("123456"));
        assert!(!is_proof("abcd-efgh-ijkl"));
        assert!(!is_proof("RGK_abc"));
    }

    #[test]
    fn codes_differ_from_sign_in_codes_for_the_same_id() {
        let id = "x".repeat(43);
        assert_ne!(code(&id), crate::api::auth::cli_code(&id));
        assert_eq!(code(&id), code(&id));
        assert_eq!(code(&id).len(), 9);
    }

    #[test]
    fn ids_are_bounded_before_hashing() {
        assert!(hash_id("").is_none());
        assert!(hash_id("   ").is_none());
        assert!(hash_id(&"a".repeat(MAX_ID_CHARS + 1)).is_none());
        assert_eq!(hash_id(" abc "), Some(hash_token("abc")));
    }
}
