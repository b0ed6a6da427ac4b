-- Per-app rules an admin sets (secret and protected env vars, approved commands, service
-- images), as the JSON `gateway::app_rules::AppRules` reads. One row per app that has any.
CREATE TABLE app_rules (
    app        TEXT   PRIMARY KEY,
    rules      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT   NOT NULL
);
