//! Integration tests: the real `rack-gateway-server` binary over real sockets, against a test
//! rack, on SQLite and PostgreSQL. One test binary keeps link time down.

mod kit;
mod upstream;

mod admin;
mod anchors;
mod api_matrix;
mod app_rules;
mod approvals;
mod audit;
mod browser;
mod credentials;
mod dev;
mod export;
mod fake_notify;
mod fake_yubico;
mod faults;
mod hostile;
mod key_rotation;
mod lifecycle;
mod metrics;
mod mfa;
mod notify;
mod proxy;
mod rack_pages;
mod rbac_matrix;
mod roles;
mod security_keys;
mod settings_page;
mod signin;
mod slack_approvals;
mod streaming;
mod tls;
mod tokens_api;
mod yubikeys;
