-- One-time backup codes for when the authenticator app is not at hand. Only an HMAC of each
-- code is stored (keyed with MFA_ENCRYPTION_KEY and bound to the user), and a code is used by
-- setting used_at once. They go with the authenticator they back up.
CREATE TABLE mfa_backup_codes (
    user_id    INTEGER NOT NULL REFERENCES mfa_totp (user_id) ON DELETE CASCADE,
    code_hash  TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash)
);
