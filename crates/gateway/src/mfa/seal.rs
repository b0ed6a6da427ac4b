//! TOTP secrets at rest: sealed with AES-256-GCM under `MFA_ENCRYPTION_KEY`, with the user's
//! id as associated data, so a copy of the database alone reveals no secret and a sealed
//! secret moved to another user's row does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::MfaError;

/// What every sealed value starts with: the format, for a later change of algorithm.
const PREFIX: &str = "v1:";

/// The key TOTP secrets are sealed with, and backup codes' HMACs are made with; and the keys
/// it replaced (`MFA_ENCRYPTION_KEY_RETIRED`), which still open what they sealed and check the
/// backup codes made under them, until `mfa rotate-key` has moved everything to this one.
pub struct MfaKey {
    current: Keys,
    retired: Vec<Keys>,
}

/// One 32-byte key's two uses.
struct Keys {
    aead: LessSafeKey,
    mac: ring::hmac::Key,
}

impl Keys {
    fn from_hex(hex_key: &str) -> Result<Keys, MfaError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| MfaError::BadKey)?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| MfaError::BadKey)?;
        // One key, two uses kept apart: the MAC's key is the HMAC of a label under it.
        let derived = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
            b"rack-gateway backup code key",
        );
        Ok(Keys {
            aead: LessSafeKey::new(key),
            mac: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref()),
        })
    }

    fn open(&self, user_id: i64, sealed: &str) -> Option<Vec<u8>> {
        let encoded = sealed.strip_prefix(PREFIX)?;
        let mut bytes = STANDARD.decode(encoded).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let mut in_out = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).ok()?;
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(associated_data(user_id)), &mut in_out)
            .ok()?;
        Some(plain.to_vec())
    }

    fn backup_code_hash(&self, user_id: i64, code: &str) -> String {
        let tag = ring::hmac::sign(&self.mac, format!("{user_id}\0{code}").as_bytes());
        hex::encode(tag.as_ref())
    }
}

impl std::fmt::Debug for MfaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MfaKey([redacted])")
    }
}

impl MfaKey {
    /// The key from its 64 hexadecimal characters (as `MFA_ENCRYPTION_KEY` is checked to be).
    pub fn from_hex(hex_key: &str) -> Result<MfaKey, MfaError> {
        Ok(MfaKey {
            current: Keys::from_hex(hex_key)?,
            retired: Vec::new(),
        })
    }

    /// This key, still opening what the `retired` keys (hex) sealed.
    pub fn with_retired(mut self, retired: &[&str]) -> Result<MfaKey, MfaError> {
        for hex_key in retired {
            self.retired.push(Keys::from_hex(hex_key)?);
        }
        Ok(self)
    }

    /// `secret` sealed for user `user_id`: `v1:` and base64 of nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, user_id: i64, secret: &[u8]) -> Result<String, MfaError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = secret.to_vec();
        self.current
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(user_id)),
                &mut sealed,
            )
            .map_err(|_| MfaError::Unreadable)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// The secret [`MfaKey::seal`] sealed for `user_id`, with this key or a retired one;
    /// [`MfaError::Unreadable`] when it was sealed with another key, for another user, or
    /// changed.
    pub fn open(&self, user_id: i64, sealed: &str) -> Result<Vec<u8>, MfaError> {
        std::iter::once(&self.current)
            .chain(&self.retired)
            .find_map(|keys| keys.open(user_id, sealed))
            .ok_or(MfaError::Unreadable)
    }

    /// Whether `sealed` opens with this key itself (not a retired one).
    pub fn opens_with_current(&self, user_id: i64, sealed: &str) -> bool {
        self.current.open(user_id, sealed).is_some()
    }

    /// The HMAC (hex) stored for user `user_id`'s backup code `code` (normalised): without
    /// the key, the stored values say nothing about the codes.
    pub fn backup_code_hash(&self, user_id: i64, code: &str) -> String {
        self.current.backup_code_hash(user_id, code)
    }

    /// The HMACs `code` may be stored as: under this key, then under each retired one (codes
    /// made before a rotation).
    pub fn backup_code_hashes(&self, user_id: i64, code: &str) -> Vec<String> {
        std::iter::once(&self.current)
            .chain(&self.retired)
            .map(|keys| keys.backup_code_hash(user_id, code))
            .collect()
    }
}

fn associated_data(user_id: i64) -> Vec<u8> {
    format!("rack-gateway totp secret of user {user_id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_secret_opens_only_for_its_user_with_its_key() {
        let key = MfaKey::from_hex(KEY).unwrap_or_else(|e| panic!("{e}"));
        let sealed = key
            .seal(7, b"twenty bytes secret!")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("twenty"));
        assert_eq!(
            key.open(7, &sealed).ok().as_deref(),
            Some(&b"twenty bytes secret!"[..])
        );
        // Another user's row, another key, a changed byte, a truncation: none opens.
        assert!(matches!(key.open(8, &sealed), Err(MfaError::Unreadable)));
        let other = MfaKey::from_hex(&KEY.replace("00", "ff")).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(other.open(7, &sealed), Err(MfaError::Unreadable)));
        let mut bytes = STANDARD
            .decode(&sealed[3..])
            .unwrap_or_else(|e| panic!("{e}"));
        bytes[15] ^= 1;
        let changed = format!("v1:{}", STANDARD.encode(&bytes));
        assert!(matches!(key.open(7, &changed), Err(MfaError::Unreadable)));
        for bad in ["", "v1:", "v1:AAAA", "v2:AAAA", &sealed[..sealed.len() - 4]] {
            assert!(
                matches!(key.open(7, bad), Err(MfaError::Unreadable)),
                "{bad}"
            );
        }
        // Two seals of one secret differ (a fresh nonce each).
        let again = key
            .seal(7, b"twenty bytes secret!")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(sealed, again);
    }

    #[test]
    fn a_retired_key_still_opens_what_it_sealed_and_checks_its_codes() {
        let old = MfaKey::from_hex(KEY).unwrap_or_else(|e| panic!("{e}"));
        let sealed = old.seal(7, b"secret").unwrap_or_else(|e| panic!("{e}"));
        let code_hash = old.backup_code_hash(7, "abcdefghjk");
        let new_key = KEY.replace("00", "ee");
        let new = MfaKey::from_hex(&new_key).unwrap_or_else(|e| panic!("{e}"));
        assert!(new.open(7, &sealed).is_err());
        let both = MfaKey::from_hex(&new_key)
            .and_then(|k| k.with_retired(&[KEY]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(both.open(7, &sealed).ok().as_deref(), Some(&b"secret"[..]));
        assert!(!both.opens_with_current(7, &sealed));
        let resealed = both.seal(7, b"secret").unwrap_or_else(|e| panic!("{e}"));
        assert!(both.opens_with_current(7, &resealed) && new.open(7, &resealed).is_ok());
        let hashes = both.backup_code_hashes(7, "abcdefghjk");
        assert_eq!(hashes.len(), 2);
        assert_eq!(hashes[1], code_hash);
        assert_eq!(hashes[0], both.backup_code_hash(7, "abcdefghjk"));
        assert!(
            MfaKey::from_hex(KEY)
                .and_then(|k| k.with_retired(&["zz"]))
                .is_err()
        );
    }

    #[test]
    fn a_key_must_be_32_bytes_of_hex() {
        assert!(MfaKey::from_hex("abcd").is_err());
        assert!(MfaKey::from_hex(&KEY.replace('0', "x")).is_err());
        assert!(format!("{:?}", MfaKey::from_hex(KEY).ok()).contains("redacted"));
    }
}
