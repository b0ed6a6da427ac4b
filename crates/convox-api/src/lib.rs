//! The Convox rack API as data.
//!
//! [`catalogue`] lists every rack API route the stock `convox` CLI uses, each with the
//! resource and action the gateway's RBAC maps to a permission. [`route`] holds the types
//! and the matcher.

pub mod catalogue;
#[cfg(feature = "client")]
pub mod client;
pub mod route;

pub use catalogue::ROUTES;
pub use route::{Method, Route, RouteIndex, RouteKind, RouteMatch, find_route, match_route};

/// [`ROUTES`], indexed for the lookup every proxied request makes.
pub static CATALOGUE: std::sync::LazyLock<RouteIndex> =
    std::sync::LazyLock::new(|| RouteIndex::new(ROUTES));
