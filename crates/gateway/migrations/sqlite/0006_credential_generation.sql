-- A counter that moves with every change that can alter the answer to "who is this token or
-- session, and what may it do": any change to a token, a session or a user other than the
-- "last used" times, and any deletion. Triggers move it, so it moves whichever process or tool
-- makes the change. A gateway may answer a request from credentials it read earlier only if
-- this counter has not moved since: the audit writer compares it inside the transaction that
-- records the request, before the request is forwarded (see docs/security-model.md).
-- Inserts do not move it: a new row cannot change an answer already given for another.
CREATE TABLE credential_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO credential_generation (id, n) VALUES (1, 0);

CREATE TRIGGER api_tokens_generation_update
AFTER UPDATE OF id, name, token_hash, role, permissions, owner_user_id, created_by, created_at,
    expires_at, revoked_at ON api_tokens
BEGIN
    UPDATE credential_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER api_tokens_generation_delete AFTER DELETE ON api_tokens
BEGIN
    UPDATE credential_generation SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER users_generation_update
AFTER UPDATE OF id, email, name, role, locked, created_at, updated_at ON users
BEGIN
    UPDATE credential_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER users_generation_delete AFTER DELETE ON users
BEGIN
    UPDATE credential_generation SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER sessions_generation_update
AFTER UPDATE OF id, token_hash, user_id, channel, user_agent, ip, created_at, expires_at,
    revoked_at ON sessions
BEGIN
    UPDATE credential_generation SET n = n + 1 WHERE id = 1;
END;
CREATE TRIGGER sessions_generation_delete AFTER DELETE ON sessions
BEGIN
    UPDATE credential_generation SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER credential_generation_no_delete BEFORE DELETE ON credential_generation
BEGIN
    SELECT RAISE(ABORT, 'credential_generation cannot be deleted');
END;
