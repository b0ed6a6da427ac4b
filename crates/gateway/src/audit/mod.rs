//! The audit trail: the event model, redaction, the hash chain, the writer and verification.
//!
//! Events are redacted when they are built ([`redact`]), before any sink sees them. The
//! [`AuditLog`] writer persists them in batches (group commit), extending an HMAC chain, and
//! then prints them as JSON lines on stdout. [`anchor`] writes the chain's head to S3 under
//! Object Lock, so that even a rewrite by someone holding the key shows.

pub mod anchor;
mod chain;
mod commit;
mod event;
pub mod export;
mod foreign;
mod in_doubt;
mod mask;
mod refusals;
mod retained;
mod rotation;
mod stdout;
mod verify;
mod writer;

pub use gateway_core::redact;

pub use chain::{ChainKey, KeySource, LinkingKeys, ResolveKeyError, existing_key, resolve_key};
pub use event::{
    ActorType, AuditEvent, Decision, EventKind, MAX_AUDITED_METHOD, MAX_AUDITED_PATH,
    MAX_AUDITED_USER_AGENT, audited_path, audited_user_agent, new_request_id,
};
pub use foreign::{STDOUT_THROUGH_SETTING, STDOUT_UNPRINTED_SETTING, Unprinted};
pub use in_doubt::LATE_COMMIT_ERROR;
pub use refusals::{SUPPRESSED_ACTION, record_summaries, spawn_summaries};
pub use rotation::{
    KEY_ROTATED_ACTION, KeyRing, RotateKeyError, Rotated, key_ring, rotate_key, shown_id,
};
pub use stdout::format_time;
pub use verify::{VerifyError, VerifyReport, verify_chain, verify_chain_against};
pub use writer::{AuditError, AuditLog, Pending, RECOVERED_ACTION, WriteFailure};
