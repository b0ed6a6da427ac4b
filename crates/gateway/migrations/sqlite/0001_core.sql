-- Core tables: users, API tokens, settings and the append-only audit log.
-- Times are unix milliseconds; flags are 0/1 integers (the same on both backends).

CREATE TABLE users (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    email        TEXT    NOT NULL UNIQUE,
    name         TEXT    NOT NULL DEFAULT '',
    role         TEXT    NOT NULL,
    locked       BIGINT  NOT NULL DEFAULT 0,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL,
    last_seen_at BIGINT
);

CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL,
    token_hash    TEXT    NOT NULL UNIQUE,
    role          TEXT,
    permissions   TEXT,
    owner_user_id BIGINT  REFERENCES users (id),
    created_by    TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE audit_events (
    seq           BIGINT  PRIMARY KEY,
    ts            BIGINT  NOT NULL,
    request_id    TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    actor_type    TEXT    NOT NULL,
    user_email    TEXT,
    token_name    TEXT,
    method        TEXT,
    path          TEXT,
    action        TEXT    NOT NULL,
    rbac_decision TEXT    NOT NULL,
    status        BIGINT,
    latency_ms    BIGINT,
    client_ip     TEXT,
    user_agent    TEXT,
    details       TEXT    NOT NULL,
    prev_hash     TEXT    NOT NULL,
    hash          TEXT    NOT NULL
);
CREATE INDEX audit_events_ts ON audit_events (ts);
CREATE INDEX audit_events_request_id ON audit_events (request_id);
CREATE INDEX audit_events_user_email ON audit_events (user_email);

CREATE TABLE audit_chain_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT   NOT NULL
);
INSERT INTO audit_chain_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- The audit log is append-only: the database itself refuses changes.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE ON audit_chain_head
BEGIN
    SELECT RAISE(ABORT, 'audit_chain_head cannot be deleted');
END;
-- The head only moves forward.
CREATE TRIGGER audit_chain_head_forward BEFORE UPDATE ON audit_chain_head
WHEN NEW.seq <= OLD.seq
BEGIN
    SELECT RAISE(ABORT, 'audit_chain_head only moves forward');
END;
