//! Integration tests: the real `rack-gateway` binary against the real
//! `rack-gateway-server dev` stack (fake rack + gateway), with tokens of each role.
//! One test binary keeps link time down; each test starts its own stack (~0.2 s).

mod kit;

mod account;
mod app_rules;
mod approvals;
mod audit;
mod commands;
mod deploy;
mod direct;
mod errors;
mod mfa;
mod racks;
mod roles;
mod sessions;
mod signin;
mod tokens;
mod users;
