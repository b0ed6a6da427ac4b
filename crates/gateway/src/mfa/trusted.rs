//! Trusted browsers ("remember this browser"): at a sign-in that asked for their code, a
//! person may trust the browser for `MFA_TRUSTED_DEVICE_DAYS`; its later sign-ins — web, and
//! the CLI's, which sign in through a browser — skip the code. The browser holds a random
//! cookie (`rgd_`, 256 bits); the gateway stores its SHA-256, bound to the person. Trust never
//! stands in for a code a change asks for (the step-up and "right now" tiers), and it ends
//! when the person forgets the browser, removes their app, has it reset, or is locked.

use crate::secret_eq::secret_eq;
use crate::store::{Store, StoreError, TrustedDeviceRow};

/// The second factor a sign-in records when a trusted browser let it skip the code.
pub const FACTOR: &str = "trusted_device";
/// The cookie's prefix (masked wherever it appears, like the gateway's tokens).
pub const PREFIX: &str = "rgd_";

/// A new trusted-browser secret (for the cookie) and its hash (for the database).
pub fn issue() -> (String, String) {
    let secret = format!("{PREFIX}{}", crate::oidc::random_token());
    let hash = crate::identity::hash_token(&secret);
    (secret, hash)
}

/// The trusted browser behind `cookie` when it lets `user_id` skip the code at `now`: theirs,
/// not forgotten, not expired. Its use is recorded.
pub async fn recognised(
    store: &Store,
    cookie: &str,
    user_id: i64,
    now: i64,
) -> Result<Option<TrustedDeviceRow>, StoreError> {
    let hash = crate::identity::hash_token(cookie);
    let Some(row) = store.trusted_device(&hash).await? else {
        return Ok(None);
    };
    // Found by hash; compared again in constant time, as for every secret.
    let ok = secret_eq(row.token_hash.as_bytes(), hash.as_bytes())
        && row.user_id == user_id
        && row.revoked_at.is_none()
        && row.expires_at > now;
    if !ok {
        return Ok(None);
    }
    store.trusted_device_used(row.id).await?;
    Ok(Some(row))
}
