-- A CLI session asking its person to confirm with a security key (the CLI cannot talk to a key
-- itself): made by the CLI, confirmed by a key's answer on the page its link opens in that
-- person's browser, then handed back to the CLI once as a proof (`rgk_…`) that counts as a code
-- for that session alone, once, for a short while. Only SHA-256 hashes of the link's id and of
-- the proof are stored.
CREATE TABLE key_confirmations (
    id_hash          TEXT   PRIMARY KEY,
    user_id          BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id       BIGINT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    confirmed_at     BIGINT,
    key_id           BIGINT,
    proof_hash       TEXT   UNIQUE,
    proof_expires_at BIGINT,
    used_at          BIGINT
);
CREATE INDEX key_confirmations_by_session ON key_confirmations (session_id);
CREATE INDEX key_confirmations_by_expiry ON key_confirmations (expires_at);
