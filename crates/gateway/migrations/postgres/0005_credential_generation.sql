-- A counter that moves with every change that can alter the answer to "who is this token or
-- session, and what may it do": any change to a token, a session or a user other than the
-- "last used" times, and any deletion. Triggers move it, whichever process or tool makes the
-- change. (The SQLite gateway answers repeat requests from credentials it read earlier only if
-- this counter has not moved since; kept on PostgreSQL too so both schemas say the same.)
-- Inserts do not move it: a new row cannot change an answer already given for another.
CREATE TABLE credential_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  BIGINT  NOT NULL
);
INSERT INTO credential_generation (id, n) VALUES (1, 0);

CREATE FUNCTION credential_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE credential_generation SET n = n + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_tokens_generation_update
    AFTER UPDATE OF id, name, token_hash, role, permissions, owner_user_id, created_by,
        created_at, expires_at, revoked_at ON api_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION credential_generation_bump();
CREATE TRIGGER api_tokens_generation_delete AFTER DELETE OR TRUNCATE ON api_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION credential_generation_bump();

CREATE TRIGGER users_generation_update
    AFTER UPDATE OF id, email, name, role, locked, created_at, updated_at ON users
    FOR EACH STATEMENT EXECUTE FUNCTION credential_generation_bump();
CREATE TRIGGER users_generation_delete AFTER DELETE OR TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION credential_generation_bump();

CREATE TRIGGER sessions_generation_update
    AFTER UPDATE OF id, token_hash, user_id, channel, user_agent, ip, created_at, expires_at,
        revoked_at ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION credential_generation_bump();
CREATE TRIGGER sessions_generation_delete AFTER DELETE OR TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION credential_generation_bump();

CREATE FUNCTION credential_generation_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credential_generation cannot be deleted';
END;
$$;
CREATE TRIGGER credential_generation_no_delete BEFORE DELETE OR TRUNCATE ON credential_generation
    FOR EACH STATEMENT EXECUTE FUNCTION credential_generation_refuse_delete();
