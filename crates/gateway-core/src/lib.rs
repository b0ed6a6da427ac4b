//! rack-gateway's pure logic: everything here is a function of its input, with no I/O, no
//! clock and no async. That is what the fuzz targets (`fuzz/`) exercise, and why it is a
//! crate of its own: building it (and them) does not mean building the database, HTTP and
//! OIDC stacks. The `gateway` crate re-exports each module under its old path.

pub mod classify;
pub mod client_addr;
pub mod config;
pub mod credentials;
pub mod failure_budget;
pub mod path;
pub mod rbac;
pub mod redact;
pub mod scrub;
pub mod text;
