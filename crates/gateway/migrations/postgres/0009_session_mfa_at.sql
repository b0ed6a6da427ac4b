-- When a session last proved its second factor (unix ms): at a sign-in that gave a code, and
-- at each step-up since. Privileged changes need it recent (MFA_STEP_UP_SECS). A CLI sign-in's
-- code is given in the browser before the CLI collects its session, so the attempt keeps it.
ALTER TABLE sessions ADD COLUMN mfa_at BIGINT;
ALTER TABLE login_attempts ADD COLUMN mfa_at BIGINT;
