-- Declared `seq BIGINT PRIMARY KEY`, the sequence number was not SQLite's rowid, so SQLite kept
-- a unique index on it beside the table's own b-tree, and every audit commit (which requests
-- wait on) wrote a page of that index too. Declared `INTEGER PRIMARY KEY`, seq is the rowid:
-- the same values and constraints, one b-tree fewer. The table is rebuilt once; the rows, their
-- order and their hashes do not change, and the append-only triggers are put back.
CREATE TABLE audit_events_rowid (
    seq           INTEGER PRIMARY KEY,
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
INSERT INTO audit_events_rowid (
    seq, ts, request_id, kind, actor_type, user_email, token_name, method, path, action,
    rbac_decision, status, latency_ms, client_ip, user_agent, details, prev_hash, hash
)
SELECT
    seq, ts, request_id, kind, actor_type, user_email, token_name, method, path, action,
    rbac_decision, status, latency_ms, client_ip, user_agent, details, prev_hash, hash
FROM audit_events
ORDER BY seq;
-- Dropping a table does not run its delete trigger; the triggers go with the old table.
DROP TABLE audit_events;
ALTER TABLE audit_events_rowid RENAME TO audit_events;
CREATE INDEX audit_events_request_id ON audit_events (request_id);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
