-- Security keys and passkeys (WebAuthn) a person added beside their authenticator app: a tap
-- stands in for the app's code at sign-in and to confirm it's them. `passkey` is the
-- credential as webauthn-rs keeps it (public key, counter; JSON): nothing secret.
CREATE TABLE security_keys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    credential_id TEXT    NOT NULL UNIQUE,
    passkey       TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    last_used_at  BIGINT
);
CREATE INDEX security_keys_by_user ON security_keys (user_id);

-- A WebAuthn ceremony under way: the challenge a page handed the browser, and what it was for.
-- Taken (deleted) by the answer, so each challenge is answered once; stale ones are swept.
CREATE TABLE webauthn_ceremonies (
    id_hash    TEXT   PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT   NOT NULL,
    state      TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies (expires_at);
