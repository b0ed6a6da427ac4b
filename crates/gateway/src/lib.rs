//! rack-gateway as a library: [`app::Gateway::start`] connects everything and
//! [`app::build_app`] returns the router. Binaries live in the `rack-gateway-server` crate.

pub mod api;
pub mod app;
pub mod app_rules;
pub mod approvals;
pub mod audit;
pub mod error;
pub mod http_server;
pub mod identity;
pub mod log_throttle;
pub mod metrics;
pub mod mfa;
pub mod notify;
pub mod oidc;
pub mod proxy;
pub mod request_id;
pub mod secret_eq;
pub mod settings;
pub mod slack;
pub mod store;
pub mod web;
pub mod write_deadline;

pub use app::{AppState, Gateway, build_app};
pub use config::Config;
pub use gateway_core::{config, rbac};
