-- Deploy approvals: CI asks for one commit of one app, a person approves or rejects it, and
-- an approval lets exactly that deploy through for the credential that asked, for a while.
CREATE TABLE deploy_approvals (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    app                   TEXT    NOT NULL,
    -- The full commit id (40 or 64 lower-case hex) CI asks to deploy; the build promoted must
    -- carry it as its git-sha.
    git_commit            TEXT    NOT NULL,
    message               TEXT    NOT NULL DEFAULT '',
    ci_url                TEXT,
    branch                TEXT,
    -- Who asked: an API token (then its owner, if any, as the user) or a signed-in user. The
    -- deploy steps are let through for exactly that credential.
    requested_by_token_id BIGINT  REFERENCES api_tokens (id),
    requested_by_user_id  BIGINT  REFERENCES users (id),
    requested_by          TEXT    NOT NULL,
    -- pending → approved | rejected; approved → deployed (its one promote went through).
    status                TEXT    NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'deployed')),
    created_at            BIGINT  NOT NULL,
    -- Pending: until when it can be decided. Approved: until when the deploy may run.
    expires_at            BIGINT  NOT NULL,
    decided_by            TEXT,
    decided_by_user_id    BIGINT  REFERENCES users (id),
    decided_at            BIGINT,
    note                  TEXT,
    deployed_at           BIGINT,
    release_id            TEXT
);

CREATE INDEX deploy_approvals_by_created ON deploy_approvals (created_at);
CREATE INDEX deploy_approvals_by_token ON deploy_approvals (requested_by_token_id, app, status);
CREATE INDEX deploy_approvals_by_user ON deploy_approvals (requested_by_user_id, app, status);
