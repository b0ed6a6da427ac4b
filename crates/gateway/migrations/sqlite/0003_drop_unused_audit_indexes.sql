-- Nothing queries audit events by time or by user (reads go by seq or request id), and every
-- index costs each audit insert, which requests wait on. Add them back with the query that
-- needs them.
DROP INDEX IF EXISTS audit_events_ts;
DROP INDEX IF EXISTS audit_events_user_email;
