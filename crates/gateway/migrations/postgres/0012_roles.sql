-- Custom roles an admin defines: a name and the permission patterns it grants (a JSON array,
-- as `api_tokens.permissions`). Users and tokens name a role in their `role` column, a
-- built-in one (whose permissions are in the code) or one of these, read with the
-- credentials on each fresh authentication. A built-in name cannot be taken.
CREATE TABLE roles (
    name        TEXT    PRIMARY KEY
                CHECK (name NOT IN ('viewer', 'ops', 'deployer', 'admin', 'cicd', 'custom')),
    description TEXT    NOT NULL DEFAULT '',
    permissions TEXT    NOT NULL,
    created_by  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

-- A role's permissions are part of every answer to "what may this caller do" for those who
-- hold it, so any change moves the credential generation — an insert too: a user may already
-- name a role that did not exist (and so granted nothing).
CREATE TRIGGER roles_generation_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON roles
    FOR EACH STATEMENT EXECUTE FUNCTION credential_generation_bump();
