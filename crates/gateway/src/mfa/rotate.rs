//! `mfa rotate-key`: moves every stored authenticator secret to `MFA_ENCRYPTION_KEY`, opening
//! it with the key it was sealed with (`MFA_ENCRYPTION_KEY_RETIRED`), in one transaction,
//! audited first. Backup codes are stored as HMACs and cannot be moved: they go on working
//! while their key is listed as retired, or are all deleted (`drop_backup_codes`, after a
//! leak) and people make new ones.

use serde_json::json;

use super::MfaKey;
use crate::audit::AuditLog;
use crate::identity::manage::{Actor, ManageError, audited};
use crate::store::Store;

/// The audit action of a rotation.
pub const ACTION: &str = "gateway:mfa:key_rotated";

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// Secrets sealed again with the new key.
    pub resealed: usize,
    /// Secrets that were sealed with it already.
    pub already: usize,
    /// Unused backup codes deleted (with `drop_backup_codes`).
    pub backup_codes_dropped: u64,
}

/// Why nothing was rotated.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// Secrets no key given opens (their people, by e-mail): their key was not given as
    /// retired, or is lost.
    #[error(
        "the authenticator secret of {0} opens with neither MFA_ENCRYPTION_KEY nor a key in \
         MFA_ENCRYPTION_KEY_RETIRED: nothing was changed. Add the key it was sealed with to \
         MFA_ENCRYPTION_KEY_RETIRED, or, if that key is lost, `rack-gateway-server users \
         reset-mfa EMAIL` for each (they set their app up again)"
    )]
    Unreadable(String),
    /// The change failed or could not be audited.
    #[error(transparent)]
    Manage(#[from] ManageError),
}

/// Seals every stored secret with `key`'s current key (opening it with `key` or a retired
/// one), and with `drop_backup_codes` deletes every backup code, recorded as [`ACTION`].
pub async fn rotate_key(
    store: &Store,
    audit: &AuditLog,
    actor: &Actor,
    key: &MfaKey,
    drop_backup_codes: bool,
) -> Result<Rotated, RotateError> {
    let rows = store.all_totp().await.map_err(ManageError::from)?;
    let (mut changes, mut already, mut unreadable) = (Vec::new(), 0, Vec::new());
    for row in rows {
        if key.opens_with_current(row.user_id, &row.secret_sealed) {
            already += 1;
            continue;
        }
        match key.open(row.user_id, &row.secret_sealed) {
            Ok(secret) => {
                let sealed = key
                    .seal(row.user_id, &secret)
                    .map_err(|e| ManageError::Invalid(e.to_string()))?;
                changes.push((row.user_id, row.secret_sealed, sealed));
            }
            Err(_) => unreadable.push(row.user_id),
        }
    }
    if !unreadable.is_empty() {
        let mut who = Vec::new();
        for id in unreadable {
            let user = store.user_by_id(id).await.map_err(ManageError::from)?;
            who.push(user.map_or_else(|| format!("user {id}"), |u| u.email));
        }
        return Err(RotateError::Unreadable(who.join(", ")));
    }
    let asked = json!({
        "reseal": changes.len(),
        "already_sealed_with_it": already,
        "drop_backup_codes": drop_backup_codes,
    });
    let store = store.clone();
    let (resealed, dropped) = audited(
        audit,
        actor,
        ACTION,
        asked,
        async move { store.reseal_totp(&changes, drop_backup_codes).await },
        |(resealed, dropped): &(usize, u64)| {
            json!({ "resealed": resealed, "backup_codes_dropped": dropped })
        },
    )
    .await?;
    Ok(Rotated {
        resealed,
        already,
        backup_codes_dropped: dropped,
    })
}
