//! Backup codes: ten one-time codes for when the authenticator app is not at hand, shown once
//! when made, stored only as HMACs (see [`MfaKey::backup_code_hash`]). A code is ten
//! characters from a 32-letter alphabet without look-alikes (50 bits), written `xxxxx-xxxxx`;
//! guessing is bounded by the same lockout as the app's codes.

use rand::Rng;

use super::{MfaError, MfaKey};
use crate::store::Store;

/// The second factor recorded when a backup code confirmed it.
pub const FACTOR: &str = "backup_code";

/// How many codes a set has.
pub const COUNT: usize = 10;
/// Characters in a code (without the dash).
const LENGTH: usize = 10;
/// No `i`, `l`, `o`, `u`: nothing to misread.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A new code, as shown: `xxxxx-xxxxx`.
fn new_code() -> String {
    let mut rng = rand::rng();
    let chars: String = (0..LENGTH)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("{}-{}", &chars[..LENGTH / 2], &chars[LENGTH / 2..])
}

/// `code` as typed, if it can be a backup code: spaces and dashes dropped, letters in any case.
pub fn normalise(code: &str) -> Option<String> {
    let chars: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (chars.len() == LENGTH && chars.bytes().all(|b| ALPHABET.contains(&b))).then_some(chars)
}

/// [`replace`] with the gateway's own key (`MFA_ENCRYPTION_KEY`), as the pages and the
/// sign-in make them.
pub async fn replace_for(
    state: &crate::app::AppState,
    user_id: i64,
) -> Result<Option<Vec<String>>, MfaError> {
    let key = super::key(&state.config)?;
    replace(&state.store, &key, user_id, crate::store::now_ms()).await
}

/// Makes user `user_id` a new set of codes, replacing any earlier set: the codes, to show once;
/// `None` when they have no confirmed authenticator.
pub async fn replace(
    store: &Store,
    key: &MfaKey,
    user_id: i64,
    now_ms: i64,
) -> Result<Option<Vec<String>>, MfaError> {
    let codes: Vec<String> = (0..COUNT).map(|_| new_code()).collect();
    let hashes: Vec<String> = codes
        .iter()
        .filter_map(|c| normalise(c))
        .map(|c| key.backup_code_hash(user_id, &c))
        .collect();
    Ok(store
        .replace_backup_codes(user_id, &hashes, now_ms)
        .await?
        .then_some(codes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_ten_unambiguous_characters_and_read_back() {
        let codes: Vec<String> = (0..200).map(|_| new_code()).collect();
        for code in &codes {
            assert_eq!(code.len(), 11, "{code}");
            assert_eq!(code.as_bytes()[5], b'-');
            let plain = normalise(code).unwrap_or_else(|| panic!("{code}"));
            assert_eq!(normalise(&code.to_ascii_uppercase()), Some(plain.clone()));
            assert_eq!(normalise(&format!(" {} ", plain)), Some(plain));
        }
        let distinct: std::collections::HashSet<&String> = codes.iter().collect();
        assert_eq!(distinct.len(), codes.len());
        for bad in ["", "12345-6789", "abcde-fghij-k", "abcde-fghil", "123456"] {
            assert_eq!(normalise(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_stored_hash_is_the_users_and_the_keys() {
        let key = MfaKey::from_hex(&"ab".repeat(32)).unwrap_or_else(|e| panic!("{e}"));
        let other = MfaKey::from_hex(&"cd".repeat(32)).unwrap_or_else(|e| panic!("{e}"));
        let h = key.backup_code_hash(1, "abcdefghjk");
        assert_eq!(h.len(), 64);
        assert_eq!(h, key.backup_code_hash(1, "abcdefghjk"));
        assert_ne!(h, key.backup_code_hash(2, "abcdefghjk"));
        assert_ne!(h, other.backup_code_hash(1, "abcdefghjk"));
    }
}
