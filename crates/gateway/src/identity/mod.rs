//! Who is making a request: credentials, API tokens and the resulting [`Principal`].

pub mod manage;
mod memory;
pub mod minting;
mod principal;
pub mod roles;
pub mod sessions;
mod tokens;

pub use gateway_core::credentials::{CredentialError, extract_token};
pub use memory::CredentialMemory;
pub use principal::{
    AuthError, Authenticated, Principal, PrincipalKind, Reads, authenticate, authenticate_with,
    recheck,
};
pub use tokens::{
    IssuedToken, TOKEN_PREFIX, TokenError, hash_token, issue_token, parse_expiry, short_code,
};
