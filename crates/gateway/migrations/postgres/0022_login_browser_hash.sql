-- The browser a sign-in's provider round trip belongs to: the SHA-256 of a random secret made
-- for each round trip and kept only in that browser's login cookie (beside the attempt's id).
-- A CLI sign-in's link can be opened in more than one browser; each confirmation makes a new
-- secret, so only the browser that went to the provider last can come back from it and take
-- the second step. Attempts in progress from before have none, and are started again.
ALTER TABLE login_attempts ADD COLUMN browser_hash TEXT;
