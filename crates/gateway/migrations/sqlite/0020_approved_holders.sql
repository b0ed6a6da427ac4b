-- The holder processes (`sleep <timeout>`) of attached `convox run`s let through by deploy
-- approvals: the rack's process id, remembered from its answer, so that the credential whose
-- approval started one may stop it when its command ends (it may not stop other processes).
-- Kept for two weeks, longer than any holder's sleep.
CREATE TABLE approved_holders (
    app         TEXT   NOT NULL,
    pid         TEXT   NOT NULL,
    approval_id BIGINT NOT NULL REFERENCES deploy_approvals (id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (app, pid)
);
CREATE INDEX approved_holders_by_created ON approved_holders (created_at);
