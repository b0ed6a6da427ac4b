-- Sign-ins in progress are started by callers who are not signed in yet, so their number is
-- capped, per client address and in total; expired attempts are swept by `expires_at`.
ALTER TABLE login_attempts ADD COLUMN client_ip TEXT;
CREATE INDEX login_attempts_expires_at ON login_attempts (expires_at);
CREATE INDEX login_attempts_client_ip ON login_attempts (client_ip, expires_at);
