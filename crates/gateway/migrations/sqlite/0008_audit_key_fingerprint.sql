-- The fingerprint of the key the chain's newest events are linked with, once the key has been
-- rotated (`rack-gateway-server audit rotate-key`); '' while the chain keeps the key it was
-- started with. Every append checks it inside its own transaction or statement, so a gateway
-- still running with a retired key writes nothing (its requests get 503) instead of extending
-- the chain under that key.
ALTER TABLE audit_chain_head ADD COLUMN key_fingerprint TEXT NOT NULL DEFAULT '';
