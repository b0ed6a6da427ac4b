-- `INSERT OR REPLACE` (and `REPLACE`) deletes the row it replaces without firing the DELETE
-- triggers that keep the audit tables append-only (recursive triggers are off), so a row could
-- be swapped for another in one statement. Inserts that would replace are refused instead:
-- an event's number is taken only once, and the chain head's single row is never inserted
-- again. (PostgreSQL needs nothing here: `ON CONFLICT DO UPDATE` fires its UPDATE triggers.)
CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events
WHEN EXISTS (SELECT 1 FROM audit_events WHERE seq = NEW.seq)
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_chain_head_no_insert BEFORE INSERT ON audit_chain_head
BEGIN
    SELECT RAISE(ABORT, 'audit_chain_head has its one row');
END;
