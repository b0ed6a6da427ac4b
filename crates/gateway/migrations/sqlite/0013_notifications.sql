-- Notifications (Slack, e-mail) waiting to be sent, and those sent or given up on. Filled from
-- the audit trail, in the same transaction that moves the notifier's cursor past the events
-- they come from, so an event is turned into its notifications exactly once.
CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    channel         TEXT    NOT NULL CHECK (channel IN ('slack', 'email')),
    -- The e-mail address (empty for Slack: the webhook names its channel).
    recipient       TEXT    NOT NULL DEFAULT '',
    -- What it is about (`approval_requested`, `token_created`, …).
    topic           TEXT    NOT NULL,
    -- The rendered message, JSON: Slack's webhook payload, or an e-mail's subject and body.
    message         TEXT    NOT NULL,
    -- The audit event it comes from.
    audit_seq       BIGINT  NOT NULL,
    created_at      BIGINT  NOT NULL,
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    -- An instance sending it holds it until then (a crashed one's claim runs out).
    claimed_until   BIGINT,
    sent_at         BIGINT,
    -- Given up on: a permanent refusal, or too many attempts.
    failed_at       BIGINT,
    last_error      TEXT
);

CREATE INDEX notifications_due ON notifications (next_attempt_at)
    WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX notifications_by_created ON notifications (created_at);
