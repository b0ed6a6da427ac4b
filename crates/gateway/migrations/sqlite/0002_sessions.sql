-- Sign-in: sessions (only the SHA-256 of a session token is stored) and login attempts
-- (web and CLI), which bind a provider round trip to the browser or CLI that started it.

CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash   TEXT   NOT NULL UNIQUE,
    user_id      BIGINT NOT NULL REFERENCES users (id),
    channel      TEXT   NOT NULL,
    user_agent   TEXT,
    ip           TEXT,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX sessions_user_id ON sessions (user_id);

CREATE TABLE login_attempts (
    id             TEXT   PRIMARY KEY,
    channel        TEXT   NOT NULL,
    state_hash     TEXT   UNIQUE,
    nonce          TEXT,
    pkce_verifier  TEXT,
    return_to      TEXT,
    cli_challenge  TEXT,
    cli_login_hash TEXT   UNIQUE,
    status         TEXT   NOT NULL,
    user_id        BIGINT REFERENCES users (id),
    error          TEXT,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
