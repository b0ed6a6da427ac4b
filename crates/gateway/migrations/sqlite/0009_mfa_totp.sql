-- TOTP multi-factor authentication: one authenticator per user. The secret is sealed with
-- MFA_ENCRYPTION_KEY (AES-256-GCM, the user's id as associated data), never stored in clear.
-- An unconfirmed row is an enrolment in progress; it protects nothing until confirmed.
CREATE TABLE mfa_totp (
    user_id       INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret_sealed TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    confirmed_at  BIGINT,
    -- The newest 30-second step a code was accepted for: an older or equal one is a replay.
    last_step     BIGINT  NOT NULL DEFAULT 0,
    -- Wrong codes since the last right one, and until when codes are refused after too many.
    failures      BIGINT  NOT NULL DEFAULT 0,
    locked_until  BIGINT  NOT NULL DEFAULT 0
);

-- A sign-in waiting for its second factor (status 'mfa') keeps the provider's name for the
-- user until the code is given.
ALTER TABLE login_attempts ADD COLUMN provider_name TEXT;
