-- Browsers a person chose to trust at a sign-in that asked for their authenticator code: the
-- next sign-ins from that browser (holding the cookie whose SHA-256 is `token_hash`) skip the
-- code until `expires_at`. Ended (`revoked_at`) by the person, by removing or resetting their
-- app, and by a lock. A trusted browser never stands in for a code a change asks for.
CREATE TABLE trusted_devices (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      BIGINT  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   TEXT    NOT NULL UNIQUE,
    user_agent   TEXT,
    ip           TEXT,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX trusted_devices_by_user ON trusted_devices (user_id);
