-- `INSERT OR REPLACE` (and `REPLACE`) deletes the row it replaces without firing the DELETE
-- triggers that keep the audit tables append-only (recursive triggers are off). The chain
-- head's single row is never inserted again, so such an insert is refused. Audit events are
-- not guarded the same way: a trigger on their insert cost 6 % of the gateway's CPU per
-- request (every request writes two), and a replaced event breaks the hash chain, which
-- `rack-gateway-server audit verify` reports. (PostgreSQL needs nothing here: `ON CONFLICT DO
-- UPDATE` fires its UPDATE triggers.)
CREATE TRIGGER audit_chain_head_no_insert BEFORE INSERT ON audit_chain_head
BEGIN
    SELECT RAISE(ABORT, 'audit_chain_head has its one row');
END;
