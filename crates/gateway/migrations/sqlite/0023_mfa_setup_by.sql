-- Who is setting up an authenticator app (`session:<id>`, or `sign_in:<hash of the login
-- attempt>`): only they are shown its secret and may confirm it, and only for 10 minutes, so an
-- older session of the same person (a stolen cookie) cannot read a secret being set up. Set-ups
-- in progress from before have none: they are shown to nobody and are started again.
ALTER TABLE mfa_totp ADD COLUMN setup_by TEXT;
