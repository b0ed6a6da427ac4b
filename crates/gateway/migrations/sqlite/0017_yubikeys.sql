-- YubiKeys (Yubico OTP) a person added beside their authenticator app: an OTP whose public id
-- is one of theirs, and which Yubico's validation service accepts, stands in for the app's
-- code. The public id is the key's name for itself, typed with every OTP: nothing secret.
CREATE TABLE yubikeys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    public_id    TEXT    NOT NULL UNIQUE,
    created_at   BIGINT  NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX yubikeys_by_user ON yubikeys (user_id);
